//! The structural check: does a YAML tree have the shape the JSON Schema describes?
//!
//! It walks the tree beside the schema that `schemars` derives from the model types, so the
//! schema users get from `envelope-runner schema` and the check are one and the same. It
//! reports every problem in the file at once: unknown keys (with the nearest known key as a
//! suggestion), missing keys, wrong types, unknown enum values and unknown stage kinds.
//!
//! A general JSON Schema validator reports failures of `oneOf` as "not valid under any of
//! the given schemas" with a JSON pointer; users of a pipeline file need "unknown stage kind
//! `biuld`, did you mean `build`?" at the line of the key. That is why this walker exists; it
//! understands the subset of JSON Schema that `schemars` emits for our model, and the
//! test suite checks the same schema with the `jsonschema` crate independently.

use crate::pipeline::diagnostic::{Diagnostic, Diagnostics, SourceFile, suggest};
use crate::pipeline::yaml::{Node, PathSegment, Value, display_path};
use serde_json::Value as Json;

/// Check `tree` against `schema` (a schemars root with `$defs`). `document` names the whole
/// document in messages about its top level (for example `the agent configuration`).
pub fn check(tree: &Node, schema: &Json, source: &SourceFile, document: &str) -> Diagnostics {
    check_part(tree, schema, schema, &[], source, document)
}

/// [`check`] of one part of a document: `node`, found at `path`, against `schema`, a part of
/// the schemars root `root` (whose `$defs` its references name).
pub fn check_part(
    node: &Node,
    root: &Json,
    schema: &Json,
    path: &[PathSegment],
    source: &SourceFile,
    document: &str,
) -> Diagnostics {
    let mut walker = Walker {
        root,
        source,
        document,
        diagnostics: Diagnostics::default(),
    };
    let mut path = path.to_vec();
    walker.walk(schema, node, &mut path);
    walker.diagnostics
}

/// `schema` with its `$ref`s followed inside `root`.
pub fn resolve<'a>(root: &'a Json, schema: &'a Json) -> &'a Json {
    let mut schema = schema;
    for _ in 0..32 {
        let Some(reference) = schema.get("$ref").and_then(Json::as_str) else {
            break;
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

struct Walker<'a> {
    root: &'a Json,
    source: &'a SourceFile,
    document: &'a str,
    diagnostics: Diagnostics,
}

impl<'a> Walker<'a> {
    fn resolve(&self, schema: &'a Json) -> &'a Json {
        resolve(self.root, schema)
    }

    fn walk(&mut self, schema: &'a Json, node: &Node, path: &mut Vec<PathSegment>) {
        let schema = self.resolve(schema);
        if let Some(alternatives) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Json::as_array)
        {
            self.walk_alternatives(alternatives, node, path);
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Json::as_array) {
            let names: Vec<&str> = values.iter().filter_map(Json::as_str).collect();
            self.check_choice(&names, node, path, "value");
            return;
        }
        let types = types_of(schema);
        if types.is_empty() {
            return;
        }
        if matches!(node.value, Value::Null) && types.contains(&"null") {
            return;
        }
        let Some(expected) = types.iter().copied().find(|t| matches_type(t, node)) else {
            let expected = types
                .iter()
                .copied()
                .find(|t| *t != "null")
                .unwrap_or("null");
            self.type_error(expected, schema, node, path);
            return;
        };
        match (&node.value, expected) {
            (Value::Mapping(entries), "object") => self.walk_object(schema, node, entries, path),
            (Value::Sequence(items), "array") => {
                if let Some(min) = schema.get("minItems").and_then(Json::as_u64)
                    && (items.len() as u64) < min
                {
                    self.push(
                        Diagnostic::error(
                            self.source,
                            node.position,
                            format!("`{}` is empty", display_path(path)),
                        )
                        .with_label("needs at least one entry"),
                    );
                }
                if let Some(item_schema) = schema.get("items") {
                    for (index, item) in items.iter().enumerate() {
                        path.push(PathSegment::Index(index));
                        self.walk(item_schema, item, path);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }

    fn walk_object(
        &mut self,
        schema: &'a Json,
        node: &Node,
        entries: &[(crate::pipeline::yaml::Key, Node)],
        path: &mut Vec<PathSegment>,
    ) {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        // A misspelt required key is reported once, as the misspelling.
        let mut suggested: Vec<&str> = Vec::new();
        for (key, value) in entries {
            path.push(PathSegment::Key(key.name.clone()));
            if let Some(property) = properties.and_then(|p| p.get(&key.name)) {
                self.walk(property, value, path);
            } else if let Some(additional @ Json::Object(_)) = additional {
                self.walk(additional, value, path);
            } else {
                let known: Vec<&str> = properties
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let place = match path.len() {
                    1 => format!("at the top level of {}", self.document),
                    _ => format!("in `{}`", display_path(&path[..path.len() - 1])),
                };
                let mut diagnostic = Diagnostic::error(
                    self.source,
                    key.position,
                    format!("unknown key `{}` {place}", key.name),
                )
                .with_length(key.name.chars().count());
                let candidate = suggest(&key.name, known.iter().copied());
                suggested.extend(candidate);
                diagnostic = match candidate {
                    Some(candidate) => diagnostic
                        .with_label(format!("did you mean `{candidate}`?"))
                        .with_help(format!("rename `{}` to `{candidate}`", key.name)),
                    None => diagnostic
                        .with_label("not a known setting here")
                        .with_help(format!("known keys here: {}", list(&known))),
                };
                self.push(diagnostic);
            }
            path.pop();
        }
        if let Some(required) = schema.get("required").and_then(Json::as_array) {
            for name in required.iter().filter_map(Json::as_str) {
                if !entries.iter().any(|(key, _)| key.name == name) && !suggested.contains(&name) {
                    let what = if path.is_empty() {
                        self.document.to_string()
                    } else {
                        format!("`{}`", display_path(path))
                    };
                    let description = properties
                        .and_then(|p| p.get(name))
                        .map(|p| self.resolve(p))
                        .and_then(|p| p.get("description"))
                        .and_then(Json::as_str)
                        .map(|d| format!("add `{name}:` ({})", first_sentence(d)))
                        .unwrap_or_else(|| format!("add `{name}:`"));
                    self.push(
                        Diagnostic::error(
                            self.source,
                            node.position,
                            format!("missing key `{name}` in {what}"),
                        )
                        .with_label(format!("`{name}` is required here"))
                        .with_help(description),
                    );
                }
            }
        }
    }

    fn walk_alternatives(
        &mut self,
        alternatives: &'a [Json],
        node: &Node,
        path: &mut Vec<PathSegment>,
    ) {
        let resolved: Vec<&'a Json> = alternatives.iter().map(|a| self.resolve(a)).collect();
        // `Option<T>`: T or null.
        if resolved.iter().any(|a| types_of(a) == ["null"]) {
            if matches!(node.value, Value::Null) {
                return;
            }
            if let Some(other) = resolved.iter().find(|a| types_of(a) != ["null"]) {
                self.walk(other, node, path);
            }
            return;
        }
        // Unit enum variants with descriptions: `oneOf: [{const: "a"}, ...]`.
        let constants: Vec<&str> = resolved
            .iter()
            .filter_map(|a| a.get("const").and_then(Json::as_str))
            .collect();
        if constants.len() == resolved.len() {
            self.check_choice(&constants, node, path, "value");
            return;
        }
        // Externally tagged variants: `{required: [tag], properties: {tag: ...}}`.
        let tags: Vec<&str> = resolved.iter().filter_map(|a| single_tag(a)).collect();
        if tags.len() == resolved.len() {
            let Value::Mapping(entries) = &node.value else {
                self.push(
                    Diagnostic::error(
                        self.source,
                        node.position,
                        format!(
                            "`{}` must be a mapping with one of: {}",
                            display_path(path),
                            list(&tags)
                        ),
                    )
                    .with_label(format!("found {}", node.kind_name()))
                    .with_help(format!(
                        "write it as `- {}:` followed by its settings",
                        tags[0]
                    )),
                );
                return;
            };
            if entries.len() != 1 {
                let found: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
                self.push(
                    Diagnostic::error(
                        self.source,
                        node.position,
                        format!(
                            "`{}` must have exactly one kind, found {}",
                            display_path(path),
                            if found.is_empty() {
                                "none".to_string()
                            } else {
                                list(&found)
                            }
                        ),
                    )
                    .with_label("one of: ".to_string() + &list(&tags))
                    .with_help(
                        "indent the settings under the kind, or start a new list item with `-`",
                    ),
                );
                return;
            }
            let (key, value) = &entries[0];
            match tags.iter().position(|tag| *tag == key.name) {
                Some(index) => {
                    path.push(PathSegment::Key(key.name.clone()));
                    let variant = resolved[index]
                        .get("properties")
                        .and_then(|p| p.get(&key.name))
                        .unwrap_or(&Json::Null);
                    self.walk(variant, value, path);
                    path.pop();
                }
                None => {
                    let mut diagnostic = Diagnostic::error(
                        self.source,
                        key.position,
                        format!("unknown stage kind `{}`", key.name),
                    )
                    .with_length(key.name.chars().count());
                    diagnostic = match suggest(&key.name, tags.iter().copied()) {
                        Some(candidate) => diagnostic
                            .with_label(format!("did you mean `{candidate}`?"))
                            .with_help(format!("the stage kinds are {}", list(&tags))),
                        None => diagnostic
                            .with_label("not a stage kind")
                            .with_help(format!("the stage kinds are {}", list(&tags))),
                    };
                    self.push(diagnostic);
                }
            }
            return;
        }
        // Anything else (not emitted for our model today): check the first alternative.
        if let Some(first) = resolved.first() {
            self.walk(first, node, path);
        }
    }

    fn check_choice(&mut self, names: &[&str], node: &Node, path: &[PathSegment], what: &str) {
        match &node.value {
            Value::String(value) if names.contains(&value.as_str()) => {}
            Value::String(value) => {
                let mut diagnostic = Diagnostic::error(
                    self.source,
                    node.position,
                    format!(
                        "`{value}` is not a valid {what} for `{}`",
                        display_path(path)
                    ),
                );
                diagnostic = match suggest(value, names.iter().copied()) {
                    Some(candidate) => {
                        diagnostic.with_label(format!("did you mean `{candidate}`?"))
                    }
                    None => diagnostic.with_label(format!("expected {}", list(names))),
                };
                self.push(diagnostic.with_help(format!("use one of {}", list(names))));
            }
            _ => self.push(
                Diagnostic::error(
                    self.source,
                    node.position,
                    format!("`{}` must be one of {}", display_path(path), list(names)),
                )
                .with_label(format!("found {}", node.kind_name())),
            ),
        }
    }

    fn type_error(&mut self, expected: &str, schema: &Json, node: &Node, path: &[PathSegment]) {
        let wanted = match expected {
            "object" => "a mapping".to_string(),
            "array" => match schema.get("items").map(|s| self.resolve(s)).map(types_of) {
                Some(t) if t.first() == Some(&"string") => "a list of strings".to_string(),
                _ => "a list".to_string(),
            },
            "string" => "a string".to_string(),
            "integer" => "a whole number".to_string(),
            "number" => "a number".to_string(),
            "boolean" => "true or false".to_string(),
            other => other.to_string(),
        };
        let mut diagnostic = Diagnostic::error(
            self.source,
            node.position,
            format!("`{}` must be {wanted}", display_path(path)),
        )
        .with_label(format!("found {}", node.kind_name()));
        let help = match (&node.value, expected) {
            (Value::Integer(_) | Value::Float(_) | Value::Bool(_), "string") => {
                Some("put the value in quotes to make it a string".to_string())
            }
            (Value::String(_), "array") => Some(format!(
                "write a list: `[{}]` or one `- item` per line",
                match &node.value {
                    Value::String(s) => s.as_str(),
                    _ => "",
                }
            )),
            _ => None,
        };
        if let Some(help) = help {
            diagnostic = diagnostic.with_help(help);
        }
        self.push(diagnostic);
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }
}

pub(crate) fn types_of(schema: &Json) -> Vec<&str> {
    match schema.get("type") {
        Some(Json::String(t)) => vec![t.as_str()],
        Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    }
}

fn matches_type(expected: &str, node: &Node) -> bool {
    matches!(
        (expected, &node.value),
        ("object", Value::Mapping(_))
            | ("array", Value::Sequence(_))
            | ("string", Value::String(_))
            | ("integer", Value::Integer(_))
            | ("number", Value::Integer(_) | Value::Float(_))
            | ("boolean", Value::Bool(_))
            | ("null", Value::Null)
    )
}

/// The tag of an externally tagged variant schema: an object with one required property.
fn single_tag(schema: &Json) -> Option<&str> {
    let required = schema.get("required")?.as_array()?;
    let properties = schema.get("properties")?.as_object()?;
    match (required.as_slice(), properties.len()) {
        ([Json::String(tag)], 1) => Some(tag.as_str()),
        _ => None,
    }
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_sentence(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text);
    line.split(". ")
        .next()
        .unwrap_or(line)
        .trim_end_matches('.')
        .to_lowercase()
}
