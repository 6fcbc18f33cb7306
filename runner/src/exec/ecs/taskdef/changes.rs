//! What changes between two task definition revisions: the [`TaskDefinitionDiff`] of images
//! per container and every other setting, and how it reads.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};

use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair, Secret, Tag};
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
    let mut fields = Comparison::new(old, new);
    fields.field("family", |t| &t.family, text);
    fields.field("taskRoleArn", |t| &t.task_role_arn, text);
    fields.field("executionRoleArn", |t| &t.execution_role_arn, text);
    fields.field("networkMode", |t| &t.network_mode, debug);
    fields.field("cpu", |t| &t.cpu, text);
    fields.field("memory", |t| &t.memory, text);
    fields.field(
        "requiresCompatibilities",
        |t| &t.requires_compatibilities,
        debug,
    );
    fields.field("volumes", |t| &t.volumes, debug);
    fields.field("placementConstraints", |t| &t.placement_constraints, debug);
    fields.field("pidMode", |t| &t.pid_mode, debug);
    fields.field("ipcMode", |t| &t.ipc_mode, debug);
    fields.field("proxyConfiguration", |t| &t.proxy_configuration, debug);
    fields.field("ephemeralStorage", |t| &t.ephemeral_storage, debug);
    fields.field("runtimePlatform", |t| &t.runtime_platform, debug);
    fields.field("enableFaultInjection", |t| &t.enable_fault_injection, debug);
    fields.field("tags", |t| &t.tags, render_tags);
    let mut out = TaskDefinitionDiff {
        family: new
            .family
            .clone()
            .or_else(|| old.family.clone())
            .unwrap_or_default(),
        other: fields.changes,
        ..TaskDefinitionDiff::default()
    };

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
    let mut fields = Comparison::new(before, after);
    fields.field("command", |c| &c.command, debug);
    fields.field("entryPoint", |c| &c.entry_point, debug);
    fields.field("environment", |c| &c.environment, render_environment);
    fields.field("secrets", |c| &c.secrets, render_secrets);
    fields.field("cpu", |c| &c.cpu, ToString::to_string);
    fields.field("memory", |c| &c.memory, debug);
    fields.field("memoryReservation", |c| &c.memory_reservation, debug);
    fields.field("essential", |c| &c.essential, debug);
    fields.field("portMappings", |c| &c.port_mappings, debug);
    fields.field("logConfiguration", |c| &c.log_configuration, debug);
    fields.field("healthCheck", |c| &c.health_check, debug);
    fields.field("user", |c| &c.user, text);
    fields.field("workingDirectory", |c| &c.working_directory, text);
    let mut changes = fields.changes;
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

/// Two versions of one thing (a task definition, a container) compared setting by setting:
/// each [`Comparison::field`] that differs adds a [`FieldChange`].
struct Comparison<'a, T> {
    before: &'a T,
    after: &'a T,
    changes: Vec<FieldChange>,
}

impl<'a, T> Comparison<'a, T> {
    fn new(before: &'a T, after: &'a T) -> Self {
        Comparison {
            before,
            after,
            changes: Vec::new(),
        }
    }

    /// Compares the setting `get` reads; a change is named `name` and shown by `render`.
    fn field<F: PartialEq>(
        &mut self,
        name: &str,
        get: impl Fn(&T) -> &F,
        render: impl Fn(&F) -> String,
    ) {
        let (before, after) = (get(self.before), get(self.after));
        if before != after {
            self.changes.push(FieldChange {
                field: name.to_owned(),
                before: render(before),
                after: render(after),
            });
        }
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

fn render_tags(tags: &Option<Vec<Tag>>) -> String {
    sorted_list(tags, " ", |tag| {
        pair(tag.key.as_deref(), tag.value.as_deref())
    })
}

fn render_environment(environment: &Option<Vec<KeyValuePair>>) -> String {
    sorted_list(environment, " ", |kv| {
        pair(kv.name.as_deref(), kv.value.as_deref())
    })
}

fn render_secrets(secrets: &Option<Vec<Secret>>) -> String {
    sorted_list(secrets, ", ", |s| {
        format!("{} from {}", s.name, s.value_from)
    })
}

/// `name=value`, either side possibly missing.
fn pair(name: Option<&str>, value: Option<&str>) -> String {
    format!("{}={}", name.unwrap_or(""), value.unwrap_or(""))
}

/// The items, each rendered by `render`, sorted and joined with `separator`, or `(none)`: an
/// order-free rendering, so a reordered list is no change.
fn sorted_list<T>(
    items: &Option<Vec<T>>,
    separator: &str,
    render: impl Fn(&T) -> String,
) -> String {
    let mut rendered: Vec<String> = items.iter().flatten().map(render).collect();
    rendered.sort();
    if rendered.is_empty() {
        "(none)".to_owned()
    } else {
        rendered.join(separator)
    }
}
