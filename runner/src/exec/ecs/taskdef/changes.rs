//! What changes between two task definition revisions: the [`TaskDefinitionDiff`] of images
//! per container and every other setting, and how it reads.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};

use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
use aws_sdk_ecs::types::{ContainerDefinition, Tag};
use serde::{Deserialize, Serialize};

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
