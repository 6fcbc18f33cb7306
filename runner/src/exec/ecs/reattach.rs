//! Every ECS change a run makes can be found again after a crash: each task definition
//! revision it registers carries the tags `envelope:run` and `envelope:stage` (RunTask tasks
//! carry them too and are started by `envelope-<run>`, see `migrate`). A run killed between
//! AWS's answer and its checkpoint in the store looks here before registering again, and
//! adopts the revision its earlier attempt registered instead of making a second one.

use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
use aws_sdk_ecs::types::{Tag, TaskDefinitionStatus};

use super::{Call, EcsAws, EcsError};

/// The tag naming the run that registered a revision or started a task.
pub const RUN_TAG: &str = "envelope:run";
/// The tag naming the stage (by its name in the pipeline) that did it.
pub const STAGE_TAG: &str = "envelope:stage";

/// How many revisions newer than the service's are examined at most: a crashed run registered
/// one per stage, and other runs of the pipeline are kept out by the deploy lease.
const NEWER_REVISIONS_EXAMINED: usize = 20;

/// Replaces any `envelope:run` / `envelope:stage` tags (copied from the revision the new one
/// is based on) with this run's.
pub(crate) fn stamp(input: &mut RegisterTaskDefinitionInput, run_id: &str, stage: &str) {
    let mut tags: Vec<Tag> = input
        .tags
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|tag| !matches!(tag.key.as_deref(), Some(RUN_TAG | STAGE_TAG)))
        .collect();
    tags.push(Tag::builder().key(RUN_TAG).value(run_id).build());
    tags.push(Tag::builder().key(STAGE_TAG).value(stage).build());
    input.tags = Some(tags);
}

/// `family` and revision of a task definition ARN (`…:task-definition/family:7`) or of
/// `family:7`.
fn family_and_revision(task_definition: &str) -> Option<(&str, i64)> {
    let name = task_definition.rsplit('/').next()?;
    let (family, revision) = name.rsplit_once(':')?;
    Some((family, revision.parse().ok()?))
}

/// The revision of `based_on`'s family, newer than `based_on`, that this run's `stage`
/// registered, if an earlier attempt of the run did.
pub(crate) async fn find_registered(
    aws: &EcsAws,
    based_on: &str,
    run_id: &str,
    stage: &str,
) -> Result<Option<String>, EcsError> {
    let Some((family, current)) = family_and_revision(based_on) else {
        return Ok(None);
    };
    let listed = aws
        .call(
            Call::new(
                "look for a revision this run registered before",
                "ecs:ListTaskDefinitions",
                family,
            )
            .idempotent(),
            || {
                aws.ecs()
                    .list_task_definitions()
                    .family_prefix(family)
                    .status(TaskDefinitionStatus::Active)
                    .sort(aws_sdk_ecs::types::SortOrder::Desc)
                    .max_results(100)
                    .send()
            },
        )
        .await?;
    let mut newer: Vec<(i64, String)> = listed
        .task_definition_arns
        .unwrap_or_default()
        .into_iter()
        .filter_map(|arn| {
            let (found_family, revision) = family_and_revision(&arn)?;
            (found_family == family && revision > current).then_some((revision, arn.clone()))
        })
        .collect();
    newer.sort_by_key(|(revision, _)| std::cmp::Reverse(*revision));
    for (_, arn) in newer.into_iter().take(NEWER_REVISIONS_EXAMINED) {
        let described = aws.describe_task_definition(&arn).await?;
        let tags = described.tags.unwrap_or_default();
        let has = |key: &str, value: &str| {
            tags.iter()
                .any(|t| t.key.as_deref() == Some(key) && t.value.as_deref() == Some(value))
        };
        if has(RUN_TAG, run_id) && has(STAGE_TAG, stage) {
            return Ok(Some(arn));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_read_from_arns_and_names() {
        assert_eq!(
            family_and_revision("arn:aws:ecs:eu-west-2:1:task-definition/envelope-prod-api:12"),
            Some(("envelope-prod-api", 12))
        );
        assert_eq!(family_and_revision("api:3"), Some(("api", 3)));
        assert_eq!(family_and_revision("api"), None);
    }

    #[test]
    fn stamping_replaces_the_tags_of_the_run_the_revision_came_from() {
        let mut input = RegisterTaskDefinitionInput::builder()
            .family("api")
            .tags(Tag::builder().key("Environment").value("prod").build())
            .tags(Tag::builder().key(RUN_TAG).value("older-run").build())
            .tags(Tag::builder().key(STAGE_TAG).value("deploy").build())
            .build()
            .unwrap();
        stamp(&mut input, "this-run", "migrate");
        let tags: Vec<(String, String)> = input
            .tags
            .unwrap()
            .into_iter()
            .map(|t| (t.key.unwrap(), t.value.unwrap()))
            .collect();
        assert_eq!(
            tags,
            [
                ("Environment".to_owned(), "prod".to_owned()),
                (RUN_TAG.to_owned(), "this-run".to_owned()),
                (STAGE_TAG.to_owned(), "migrate".to_owned()),
            ]
        );
    }
}
