//! Task definitions, pure: the next revision of a described task definition with the built
//! images swapped in (a clean round trip of everything else), and what changes between the two.
//!
//! A container gets a new image when its current image is in one of the built repositories:
//! the repository is compared with its tag and digest removed and the registry host included,
//! so `…/envelope-api:latest`, `…/envelope-api:v1` and `…/envelope-api@sha256:…` all match a
//! build of `…/envelope-api`, while a sidecar from another repository keeps its image.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};

use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
use aws_sdk_ecs::types::{ContainerDefinition, Tag, TaskDefinition};
use serde::{Deserialize, Serialize};

/// A task definition that cannot be turned into the next revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskDefinitionError {
    #[error("ECS returned no task definition for `{0}`")]
    Missing(String),
    #[error(
        "`{image}` is not pinned to a digest; deploys use `repository@sha256:…` so that what \
         was approved is what runs"
    )]
    NotPinned { image: String },
    #[error(
        "no container of task definition `{family}` uses {repositories} (its containers use {in_use}); \
         check that the stage deploys the image this service runs"
    )]
    NoContainerUsesImages {
        family: String,
        repositories: String,
        in_use: String,
    },
}

/// The next revision of a task definition, ready to register, and how it differs from the
/// revision it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct NextRevision {
    pub input: RegisterTaskDefinitionInput,
    pub diff: TaskDefinitionDiff,
}

/// What changes between two task definition revisions, for an approval page or a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDefinitionDiff {
    pub family: String,
    /// The revision the new one is made from (its ARN).
    pub from: String,
    /// Containers whose image changes.
    pub images: Vec<ImageChange>,
    /// Every other setting that changes, by name (`cpu`, `container api: command`, …).
    pub other: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageChange {
    pub container: String,
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl TaskDefinitionDiff {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.other.is_empty()
    }
}

impl fmt::Display for TaskDefinitionDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.family, self.from)?;
        if self.is_empty() {
            return write!(f, ": no change");
        }
        for change in &self.images {
            write!(
                f,
                "\n  container {}: image {} → {}",
                change.container, change.before, change.after
            )?;
        }
        for change in &self.other {
            write!(
                f,
                "\n  {}: {} → {}",
                change.field, change.before, change.after
            )?;
        }
        Ok(())
    }
}

/// `registry/path/name` of an image reference, without tag or digest, with the registry host
/// in lower case (host names are case-insensitive, repository paths are not).
pub fn repository_of(image: &str) -> String {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let (head, last) = match without_digest.rsplit_once('/') {
        Some((head, last)) => (Some(head), last),
        None => (None, without_digest),
    };
    let last = last.split_once(':').map_or(last, |(name, _)| name);
    match head {
        None => last.to_owned(),
        Some(head) => {
            let (first, rest) = head
                .split_once('/')
                .map_or((head, None), |(f, r)| (f, Some(r)));
            let is_host = first.contains('.') || first.contains(':') || first == "localhost";
            let first = if is_host {
                first.to_ascii_lowercase()
            } else {
                first.to_owned()
            };
            match rest {
                Some(rest) => format!("{first}/{rest}/{last}"),
                None => format!("{first}/{last}"),
            }
        }
    }
}

/// The RegisterTaskDefinition input that registers `task_definition` again as it is: the
/// read-only fields DescribeTaskDefinition adds are dropped (ARN, revision, status,
/// requiresAttributes, compatibilities, registeredAt/By, deregisteredAt, deleteRequestedAt),
/// empty strings some endpoints return for unset fields are treated as unset, Elastic
/// Inference accelerators (retired by AWS) are left out, and the tags (from
/// `include: [TAGS]`) are kept.
pub fn round_trip(task_definition: &TaskDefinition, tags: &[Tag]) -> RegisterTaskDefinitionInput {
    let td = task_definition;
    RegisterTaskDefinitionInput::builder()
        .set_family(td.family.clone())
        .set_task_role_arn(non_empty(&td.task_role_arn))
        .set_execution_role_arn(non_empty(&td.execution_role_arn))
        .set_network_mode(td.network_mode.clone().filter(|m| !m.as_str().is_empty()))
        .set_container_definitions(td.container_definitions.clone())
        .set_volumes(td.volumes.clone())
        .set_placement_constraints(td.placement_constraints.clone())
        .set_requires_compatibilities(td.requires_compatibilities.clone())
        .set_cpu(non_empty(&td.cpu))
        .set_memory(non_empty(&td.memory))
        .set_tags((!tags.is_empty()).then(|| tags.to_vec()))
        .set_pid_mode(td.pid_mode.clone().filter(|m| !m.as_str().is_empty()))
        .set_ipc_mode(td.ipc_mode.clone().filter(|m| !m.as_str().is_empty()))
        .set_proxy_configuration(td.proxy_configuration.clone())
        .set_ephemeral_storage(td.ephemeral_storage.clone())
        .set_runtime_platform(td.runtime_platform.clone())
        .set_enable_fault_injection(td.enable_fault_injection)
        .build()
        .expect("RegisterTaskDefinitionInput has no required members to check at build time")
}

/// The next revision of the described task definition with every container that runs one of
/// `images`' repositories switched to that image (`repository@sha256:…`).
pub fn next_revision(
    described: &DescribeTaskDefinitionOutput,
    images: &[String],
) -> Result<NextRevision, TaskDefinitionError> {
    let td = described
        .task_definition
        .as_ref()
        .ok_or_else(|| TaskDefinitionError::Missing(String::new()))?;
    let tags = described.tags.as_deref().unwrap_or_default();
    let mut by_repository = BTreeMap::new();
    for image in images {
        if !image.contains("@sha256:") {
            return Err(TaskDefinitionError::NotPinned {
                image: image.clone(),
            });
        }
        by_repository.insert(repository_of(image), image.clone());
    }

    let old = round_trip(td, tags);
    let mut new = old.clone();
    let mut swapped = 0;
    for container in new.container_definitions.iter_mut().flatten() {
        let Some(current) = container.image.as_deref() else {
            continue;
        };
        if let Some(image) = by_repository.get(&repository_of(current)) {
            container.image = Some(image.clone());
            swapped += 1;
        }
    }
    if swapped == 0 {
        let in_use: Vec<String> = td
            .container_definitions
            .iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} = {}",
                    c.name.as_deref().unwrap_or("?"),
                    c.image.as_deref().unwrap_or("?")
                )
            })
            .collect();
        return Err(TaskDefinitionError::NoContainerUsesImages {
            family: td.family.clone().unwrap_or_default(),
            repositories: by_repository.keys().cloned().collect::<Vec<_>>().join(", "),
            in_use: in_use.join(", "),
        });
    }
    let mut diff = diff(&old, &new);
    diff.from = td.task_definition_arn.clone().unwrap_or_default();
    Ok(NextRevision { input: new, diff })
}

/// What changes from `old` to `new`: images per container, then every other setting.
pub fn diff(
    old: &RegisterTaskDefinitionInput,
    new: &RegisterTaskDefinitionInput,
) -> TaskDefinitionDiff {
    let mut out = TaskDefinitionDiff {
        family: new
            .family
            .clone()
            .or_else(|| old.family.clone())
            .unwrap_or_default(),
        ..TaskDefinitionDiff::default()
    };
    let other = &mut out.other;
    compare(other, "family", &old.family, &new.family, text);
    compare(
        other,
        "taskRoleArn",
        &old.task_role_arn,
        &new.task_role_arn,
        text,
    );
    compare(
        other,
        "executionRoleArn",
        &old.execution_role_arn,
        &new.execution_role_arn,
        text,
    );
    compare(
        other,
        "networkMode",
        &old.network_mode,
        &new.network_mode,
        debug,
    );
    compare(other, "cpu", &old.cpu, &new.cpu, text);
    compare(other, "memory", &old.memory, &new.memory, text);
    compare(
        other,
        "requiresCompatibilities",
        &old.requires_compatibilities,
        &new.requires_compatibilities,
        debug,
    );
    compare(other, "volumes", &old.volumes, &new.volumes, debug);
    compare(
        other,
        "placementConstraints",
        &old.placement_constraints,
        &new.placement_constraints,
        debug,
    );
    compare(other, "pidMode", &old.pid_mode, &new.pid_mode, debug);
    compare(other, "ipcMode", &old.ipc_mode, &new.ipc_mode, debug);
    compare(
        other,
        "proxyConfiguration",
        &old.proxy_configuration,
        &new.proxy_configuration,
        debug,
    );
    compare(
        other,
        "ephemeralStorage",
        &old.ephemeral_storage,
        &new.ephemeral_storage,
        debug,
    );
    compare(
        other,
        "runtimePlatform",
        &old.runtime_platform,
        &new.runtime_platform,
        debug,
    );
    compare(
        other,
        "enableFaultInjection",
        &old.enable_fault_injection,
        &new.enable_fault_injection,
        debug,
    );
    compare(other, "tags", &old.tags, &new.tags, |tags| {
        render_tags(tags.as_deref())
    });

    let old_containers = containers_by_name(old);
    let new_containers = containers_by_name(new);
    for (name, before) in &old_containers {
        match new_containers.get(name) {
            None => out.other.push(FieldChange {
                field: format!("container {name}"),
                before: before.image.clone().unwrap_or_default(),
                after: "(removed)".to_owned(),
            }),
            Some(after) => diff_container(&mut out, name, before, after),
        }
    }
    for (name, after) in &new_containers {
        if !old_containers.contains_key(name) {
            out.other.push(FieldChange {
                field: format!("container {name}"),
                before: "(none)".to_owned(),
                after: after.image.clone().unwrap_or_default(),
            });
        }
    }
    out
}

fn diff_container(
    out: &mut TaskDefinitionDiff,
    name: &str,
    before: &ContainerDefinition,
    after: &ContainerDefinition,
) {
    if before.image != after.image {
        out.images.push(ImageChange {
            container: name.to_owned(),
            before: before.image.clone().unwrap_or_default(),
            after: after.image.clone().unwrap_or_default(),
        });
    }
    let mut before_rest = before.clone();
    let mut after_rest = after.clone();
    before_rest.image = None;
    after_rest.image = None;
    if before_rest == after_rest {
        return;
    }
    let (b, a) = (before, after);
    let mut changes = Vec::new();
    let c = &mut changes;
    compare(c, "command", &b.command, &a.command, words);
    compare(c, "entryPoint", &b.entry_point, &a.entry_point, words);
    compare(c, "environment", &b.environment, &a.environment, |env| {
        sorted_list(
            env.iter()
                .flatten()
                .map(|kv| pair(kv.name.as_deref(), kv.value.as_deref())),
            " ",
        )
    });
    compare(c, "secrets", &b.secrets, &a.secrets, |secrets| {
        sorted_list(
            secrets
                .iter()
                .flatten()
                .map(|s| format!("{} from {}", s.name, s.value_from)),
            ", ",
        )
    });
    compare(c, "cpu", &Some(b.cpu), &Some(a.cpu), debug);
    compare(c, "memory", &b.memory, &a.memory, debug);
    compare(
        c,
        "memoryReservation",
        &b.memory_reservation,
        &a.memory_reservation,
        debug,
    );
    compare(c, "essential", &b.essential, &a.essential, debug);
    compare(c, "portMappings", &b.port_mappings, &a.port_mappings, debug);
    compare(
        c,
        "logConfiguration",
        &b.log_configuration,
        &a.log_configuration,
        debug,
    );
    compare(c, "healthCheck", &b.health_check, &a.health_check, debug);
    compare(c, "user", &b.user, &a.user, text);
    compare(
        c,
        "workingDirectory",
        &b.working_directory,
        &a.working_directory,
        text,
    );
    if changes.is_empty() {
        changes.push(FieldChange {
            field: "settings".to_owned(),
            before: "…".to_owned(),
            after: "changed (see the task definition JSON)".to_owned(),
        });
    }
    for mut change in changes {
        change.field = format!("container {name}: {}", change.field);
        out.other.push(change);
    }
}

fn containers_by_name(
    input: &RegisterTaskDefinitionInput,
) -> BTreeMap<String, &ContainerDefinition> {
    input
        .container_definitions
        .iter()
        .flatten()
        .map(|c| (c.name.clone().unwrap_or_default(), c))
        .collect()
}

fn compare<T: PartialEq>(
    changes: &mut Vec<FieldChange>,
    field: &str,
    before: &T,
    after: &T,
    render: impl Fn(&T) -> String,
) {
    if before != after {
        changes.push(FieldChange {
            field: field.to_owned(),
            before: render(before),
            after: render(after),
        });
    }
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "(none)".to_owned())
}

fn debug<T: Debug>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"))
}

fn words(value: &Option<Vec<String>>) -> String {
    value
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), |words| format!("{words:?}"))
}

fn render_tags(tags: Option<&[Tag]>) -> String {
    sorted_list(
        tags.unwrap_or_default()
            .iter()
            .map(|t| pair(t.key.as_deref(), t.value.as_deref())),
        " ",
    )
}

/// `name=value`, either side possibly missing.
fn pair(name: Option<&str>, value: Option<&str>) -> String {
    format!("{}={}", name.unwrap_or(""), value.unwrap_or(""))
}

/// The items sorted and joined with `separator`, or `(none)`: an order-free rendering, so a
/// reordered list is no change.
fn sorted_list(items: impl Iterator<Item = String>, separator: &str) -> String {
    let mut items: Vec<String> = items.collect();
    items.sort();
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(separator)
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
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
}
