//! Tests of the task definition functions: repositories compared, the next revision made
//! (and refused), the round trip of a described revision, and the diff.

use aws_sdk_ecs::types::ContainerDefinition;

use super::*;
use aws_sdk_ecs::types::{
    Attribute, Compatibility, KeyValuePair, LogConfiguration, LogDriver, NetworkMode, PidMode,
    TaskDefinitionStatus,
};

const API: &str = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api";
const NEW: &str = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api@sha256:00000000000000000000000000000000000000000000000000000000000000aa";

fn container(name: &str, image: &str) -> ContainerDefinition {
    ContainerDefinition::builder()
        .name(name)
        .image(image)
        .essential(true)
        .command("php-fpm")
        .environment(
            KeyValuePair::builder()
                .name("APP_ENV")
                .value("production")
                .build(),
        )
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", "/ecs/envelope-prod-api")
                .build()
                .unwrap(),
        )
        .build()
}

/// What DescribeTaskDefinition (include TAGS) returns, read-only fields and all.
fn described(containers: Vec<ContainerDefinition>) -> DescribeTaskDefinitionOutput {
    let td = TaskDefinition::builder()
        .task_definition_arn(
            "arn:aws:ecs:eu-west-2:123456789012:task-definition/envelope-prod-api:41",
        )
        .family("envelope-prod-api")
        .revision(41)
        .status(TaskDefinitionStatus::Active)
        .requires_attributes(
            Attribute::builder()
                .name("com.amazonaws.ecs.capability.logging-driver.awslogs")
                .build()
                .unwrap(),
        )
        .compatibilities(Compatibility::Ec2)
        .compatibilities(Compatibility::Fargate)
        .requires_compatibilities(Compatibility::Fargate)
        .registered_at(aws_smithy_types::DateTime::from_secs(1_700_000_000))
        .registered_by("arn:aws:iam::123456789012:role/terraform")
        .network_mode(NetworkMode::Awsvpc)
        .cpu("512")
        .memory("1024")
        .execution_role_arn("arn:aws:iam::123456789012:role/envelope-prod-ecs-execution")
        .task_role_arn("")
        .pid_mode(PidMode::from(""))
        .set_container_definitions(Some(containers))
        .build();
    DescribeTaskDefinitionOutput::builder()
        .task_definition(td)
        .tags(Tag::builder().key("Environment").value("prod").build())
        .build()
}

#[test]
fn repositories_are_compared_without_tag_or_digest_and_with_the_host() {
    let cases = [
        (format!("{API}:latest"), API.to_owned()),
        (format!("{API}:v1.2.3"), API.to_owned()),
        (NEW.to_owned(), API.to_owned()),
        (format!("{API}:v1@sha256:abc"), API.to_owned()),
        (
            "127.0.0.1:5000/envelope/api:1".to_owned(),
            "127.0.0.1:5000/envelope/api".to_owned(),
        ),
        (
            "127.0.0.1:5000/envelope/api".to_owned(),
            "127.0.0.1:5000/envelope/api".to_owned(),
        ),
        (
            "Registry.Example.COM/Team/App:1".to_owned(),
            "registry.example.com/Team/App".to_owned(),
        ),
        ("nginx:1.27".to_owned(), "nginx".to_owned()),
        ("library/nginx".to_owned(), "library/nginx".to_owned()),
        ("localhost/app:dev".to_owned(), "localhost/app".to_owned()),
    ];
    for (image, repository) in cases {
        assert_eq!(repository_of(&image), repository, "{image}");
    }
    // Same path, other registry: not the same repository.
    assert_ne!(
        repository_of("other.example.com/envelope-api:1"),
        repository_of(API)
    );
}

#[test]
fn the_built_repository_gets_the_digest_and_sidecars_keep_their_image() {
    // (containers' images before, containers' images expected after)
    let cases: [(&[&str], &[&str]); 4] = [
        (&[&format!("{API}:latest")], &[NEW]),
        (&[&format!("{API}@sha256:1111")], &[NEW]),
        (
            &[
                &format!("{API}:v1"),
                "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
            ],
            &[
                NEW,
                "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
            ],
        ),
        (
            // Same name, another registry: a sidecar, untouched.
            &[&format!("{API}:v1"), "docker.io/library/envelope-api:v1"],
            &[NEW, "docker.io/library/envelope-api:v1"],
        ),
    ];
    for (before, expected) in cases {
        let containers = before
            .iter()
            .enumerate()
            .map(|(i, image)| container(&format!("c{i}"), image))
            .collect();
        let next = next_revision(&described(containers), &[NEW.to_owned()]).unwrap();
        let after: Vec<_> = next
            .input
            .container_definitions
            .iter()
            .flatten()
            .map(|c| c.image.clone().unwrap())
            .collect();
        assert_eq!(after, expected, "{before:?}");
        assert_eq!(
            next.diff.images.len(),
            before.iter().filter(|i| i.starts_with(API)).count()
        );
        assert!(next.diff.other.is_empty(), "{:?}", next.diff.other);
    }
}

#[test]
fn the_round_trip_drops_read_only_fields_and_empty_strings_and_keeps_the_rest() {
    let described = described(vec![container("api", &format!("{API}:v1"))]);
    let input = round_trip(
        described.task_definition.as_ref().unwrap(),
        described.tags.as_deref().unwrap(),
    );
    assert_eq!(input.family.as_deref(), Some("envelope-prod-api"));
    assert_eq!(input.cpu.as_deref(), Some("512"));
    assert_eq!(input.memory.as_deref(), Some("1024"));
    assert_eq!(input.network_mode, Some(NetworkMode::Awsvpc));
    assert_eq!(
        input.requires_compatibilities,
        Some(vec![Compatibility::Fargate])
    );
    assert_eq!(
        input.execution_role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/envelope-prod-ecs-execution")
    );
    assert_eq!(
        input.task_role_arn, None,
        "an empty role is unset, not \"\""
    );
    assert_eq!(input.pid_mode, None, "an empty pidMode is unset");
    assert_eq!(
        input.tags,
        Some(vec![
            Tag::builder().key("Environment").value("prod").build()
        ])
    );
    // The input type has no place for ARN, revision, status, requiresAttributes,
    // compatibilities or registeredAt/By; its Debug output proves none leaked elsewhere.
    let shown = format!("{input:?}");
    for read_only in [
        "envelope-prod-api:41",
        "logging-driver.awslogs",
        "terraform",
        "ACTIVE",
    ] {
        assert!(!shown.contains(read_only), "{read_only} in {shown}");
    }
    assert_eq!(
        input.container_definitions,
        described.task_definition.unwrap().container_definitions
    );
}

#[test]
fn no_matching_container_and_unpinned_images_are_errors() {
    let described = described(vec![container("nginx", "nginx:1.27")]);
    let error = next_revision(&described, &[NEW.to_owned()]).unwrap_err();
    assert!(
        matches!(error, TaskDefinitionError::NoContainerUsesImages { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("nginx = nginx:1.27"), "{error}");
    let error = next_revision(&described, &[format!("{API}:latest")]).unwrap_err();
    assert!(
        matches!(error, TaskDefinitionError::NotPinned { .. }),
        "{error}"
    );
}

#[test]
fn the_diff_names_image_changes_and_every_other_change() {
    let old = round_trip(
        described(vec![
            container("api", &format!("{API}:v1")),
            container("fluent-bit", "fluent-bit:2"),
        ])
        .task_definition
        .as_ref()
        .unwrap(),
        &[],
    );
    let mut new = old.clone();
    new.cpu = Some("1024".to_owned());
    let containers = new.container_definitions.as_mut().unwrap();
    containers[0].image = Some(NEW.to_owned());
    containers[0].command = Some(vec!["php".into(), "artisan".into(), "horizon".into()]);
    containers[0].environment = Some(vec![
        KeyValuePair::builder()
            .name("APP_ENV")
            .value("production")
            .build(),
        KeyValuePair::builder().name("QUEUE").value("high").build(),
    ]);
    containers.remove(1);
    containers.push(container("xray", "amazon/aws-xray-daemon:3"));

    let diff = diff(&old, &new);
    assert_eq!(
        diff.images,
        vec![ImageChange {
            container: "api".into(),
            before: format!("{API}:v1"),
            after: NEW.into()
        }]
    );
    let fields: Vec<(&str, &str, &str)> = diff
        .other
        .iter()
        .map(|c| (c.field.as_str(), c.before.as_str(), c.after.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("cpu", "512", "1024"),
            (
                "container api: command",
                "[\"php-fpm\"]",
                "[\"php\", \"artisan\", \"horizon\"]"
            ),
            (
                "container api: environment",
                "APP_ENV=production",
                "APP_ENV=production QUEUE=high"
            ),
            ("container fluent-bit", "fluent-bit:2", "(removed)"),
            ("container xray", "(none)", "amazon/aws-xray-daemon:3"),
        ]
    );
    let shown = diff.to_string();
    assert!(
        shown.contains(&format!("container api: image {API}:v1 → {NEW}")),
        "{shown}"
    );
    assert!(shown.contains("cpu: 512 → 1024"), "{shown}");
}
