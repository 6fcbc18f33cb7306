//! One pass for both kinds of error: when a pipeline file has structural errors, the part
//! that still has the model's shape is read and given to the meaning checks, so `validate`
//! reports unknown keys and wrong types together with bad durations, stage order, unknown
//! variables and the rest.
//!
//! [`readable`] builds that part from the located tree, keeping every node's position (so
//! meaning errors point into the file as written):
//! - unknown top-level keys are left out;
//! - every stage keeps its place (stage order, duplicate names and build outputs are judged as
//!   written). A stage with structural errors keeps its settings that are right on their own;
//!   each required setting it lacks gets a neutral stand-in value that no meaning check
//!   objects to (a string `stand-in`, a list of one). A misspelt stage kind with a clear
//!   suggestion (`biuld`) is read as that kind.
//!
//! Where a guess could make the meaning checks report something that is not wrong, there is
//! no readable part (`None`) and only the structural errors are reported: a top-level setting
//! other than `stages` with a structural error (`source`, `env`, ... which other checks read),
//! a stage that is not a one-kind mapping or whose kind has no suggestion, or a stage whose
//! `name` is wrong (duplicate names would be judged on a guess).

use super::diagnostic::{SourceFile, suggest};
use super::structure::{check_part, resolve, types_of};
use super::yaml::{Key, Node, PathSegment, Value};
use serde_json::Value as Json;

/// The value a required setting gets when the written one cannot be read.
const STAND_IN: &str = "stand-in";

/// The part of `tree` (a pipeline file with structural errors) that the meaning checks can
/// read, or `None` when a guess would be needed; `schema` is the pipeline's JSON Schema.
pub(super) fn readable(tree: &Node, schema: &Json, source: &SourceFile) -> Option<Node> {
    let Value::Mapping(entries) = &tree.value else {
        return None;
    };
    let properties = schema.get("properties")?.as_object()?;
    let mut kept = Vec::new();
    for (key, value) in entries {
        let Some(property) = properties.get(&key.name) else {
            continue;
        };
        let path = [PathSegment::Key(key.name.clone())];
        let value = if key.name == "stages" {
            stages(value, schema, resolve(schema, property), source)?
        } else if is_sound(value, schema, property, &path, source) {
            value.clone()
        } else {
            return None;
        };
        kept.push((key.clone(), value));
    }
    Some(Node {
        position: tree.position,
        value: Value::Mapping(kept),
    })
}

/// Whether `node` has no structural error against `schema`.
fn is_sound(
    node: &Node,
    root: &Json,
    schema: &Json,
    path: &[PathSegment],
    source: &SourceFile,
) -> bool {
    !check_part(node, root, schema, path, source, "the pipeline").has_errors()
}

/// The `stages:` list with each stage readable, or `None`.
fn stages(node: &Node, root: &Json, schema: &Json, source: &SourceFile) -> Option<Node> {
    let Value::Sequence(items) = &node.value else {
        return None;
    };
    let item_schema = schema.get("items")?;
    let mut stages = Vec::new();
    for (index, stage) in items.iter().enumerate() {
        let path = [PathSegment::Key("stages".into()), PathSegment::Index(index)];
        if is_sound(stage, root, item_schema, &path, source) {
            stages.push(stage.clone());
        } else {
            stages.push(stand_in_stage(
                stage,
                root,
                resolve(root, item_schema),
                &path,
                source,
            )?);
        }
    }
    Some(Node {
        position: node.position,
        value: Value::Sequence(stages),
    })
}

/// A stage with structural errors, read as far as it can be (see the module comment).
fn stand_in_stage(
    stage: &Node,
    root: &Json,
    schema: &Json,
    path: &[PathSegment],
    source: &SourceFile,
) -> Option<Node> {
    let Value::Mapping(entries) = &stage.value else {
        return None;
    };
    let [(kind_key, body)] = entries.as_slice() else {
        return None;
    };
    // The stage kinds: the externally tagged variants `{kind: settings}`.
    let variants: Vec<(&str, &Json)> = schema
        .get("oneOf")?
        .as_array()?
        .iter()
        .filter_map(|variant| {
            let (kind, settings) = resolve(root, variant)
                .get("properties")?
                .as_object()?
                .iter()
                .next()?;
            Some((kind.as_str(), resolve(root, settings)))
        })
        .collect();
    let kind = suggest(&kind_key.name, variants.iter().map(|(kind, _)| *kind))?;
    let (_, settings) = variants.iter().find(|(known, _)| *known == kind)?;
    let properties = settings.get("properties")?.as_object()?;
    let body_path = [path.to_vec(), vec![PathSegment::Key(kind_key.name.clone())]].concat();
    let written: &[(Key, Node)] = match &body.value {
        Value::Mapping(written) => written,
        _ => &[],
    };
    let mut kept = Vec::new();
    for (key, value) in written {
        let Some(property) = properties.get(&key.name) else {
            continue;
        };
        let path = [body_path.clone(), vec![PathSegment::Key(key.name.clone())]].concat();
        if is_sound(value, root, property, &path, source) {
            kept.push((key.clone(), value.clone()));
        } else if key.name == "name" {
            return None;
        }
    }
    let required = settings.get("required").and_then(Json::as_array);
    for name in required.into_iter().flatten().filter_map(Json::as_str) {
        if kept.iter().any(|(key, _)| key.name == name) {
            continue;
        }
        let property = resolve(root, properties.get(name)?);
        let value = match types_of(property).first().copied() {
            Some("array") => Value::Sequence(vec![Node {
                position: body.position,
                value: Value::String(STAND_IN.into()),
            }]),
            Some("object") => Value::Mapping(Vec::new()),
            Some("boolean") => Value::Bool(false),
            Some("integer" | "number") => Value::Integer(1),
            _ => Value::String(STAND_IN.into()),
        };
        kept.push((
            Key {
                name: name.to_owned(),
                position: body.position,
            },
            Node {
                position: body.position,
                value,
            },
        ));
    }
    Some(Node {
        position: stage.position,
        value: Value::Mapping(vec![(
            Key {
                name: kind.to_owned(),
                position: kind_key.position,
            },
            Node {
                position: body.position,
                value: Value::Mapping(kept),
            },
        )]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::yaml;

    fn salvage(text: &str) -> Option<serde_json::Value> {
        let source = SourceFile::new("pipelines/app.yaml", text);
        let tree = yaml::parse(text).unwrap();
        readable(&tree, &crate::pipeline::schema(), &source).map(|node| node.to_json())
    }

    const SOURCE: &str = "source:\n  repository: acme/app\n";

    #[test]
    fn a_broken_stage_keeps_its_place_and_its_sound_settings() {
        let text = format!(
            "{SOURCE}descripton: typo\nstages:\n  - build:\n      imgae: app\n      timeout: soon\n  - deploy:\n      cluster: [c]\n      services: [s]\n  - biuld:\n      image: worker\n"
        );
        let read = salvage(&text).unwrap();
        assert!(read.get("descripton").is_none(), "{read}");
        assert_eq!(
            read["stages"],
            serde_json::json!([
                {"build": {"timeout": "soon", "image": STAND_IN}},
                {"deploy": {"services": ["s"], "cluster": STAND_IN}},
                {"build": {"image": "worker"}},
            ])
        );
        // What is read has the model's shape.
        let tree = yaml::parse(&text).unwrap();
        let source = SourceFile::new("pipelines/app.yaml", text.as_str());
        let node = readable(&tree, &crate::pipeline::schema(), &source).unwrap();
        let structural = crate::pipeline::structure::check(
            &node,
            &crate::pipeline::schema(),
            &source,
            "the pipeline",
        );
        assert!(!structural.has_errors(), "{}", structural.render(false));
    }

    #[test]
    fn nothing_is_read_where_a_guess_would_be_needed() {
        for text in [
            "source: 5\nstages:\n  - build:\n      image: app\n".to_owned(),
            format!("{SOURCE}env: NAME\nstages:\n  - build:\n      image: app\n"),
            format!("{SOURCE}stages:\n  - zzz:\n      image: app\n"),
            format!("{SOURCE}stages:\n  - build:\n      image: app\n    approval: {{}}\n"),
            format!("{SOURCE}stages:\n  - build:\n      name: [a]\n      image: app\n"),
            format!("{SOURCE}stages: build\n"),
        ] {
            assert_eq!(salvage(&text), None, "{text}");
        }
    }
}
