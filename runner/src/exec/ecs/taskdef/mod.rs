//! Task definitions, pure: the next revision of a described task definition with the built
//! images swapped in (a clean round trip of everything else), and what changes between the two.
//!
//! A container gets a new image when its current image is in one of the built repositories:
//! the repository is compared with its tag and digest removed and the registry host included,
//! so `…/envelope-api:latest`, `…/envelope-api:v1` and `…/envelope-api@sha256:…` all match a
//! build of `…/envelope-api`, while a sidecar from another repository keeps its image.

mod changes;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
use aws_sdk_ecs::types::{Tag, TaskDefinition};

pub use changes::{FieldChange, ImageChange, TaskDefinitionDiff, diff};

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

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}
