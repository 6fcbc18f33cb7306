//! YAML text to a tree of nodes that remember where they came from.
//!
//! Every later check (structure, semantics) reports against these locations, so one parse
//! gives `file:line:col` for any value without wrapping the typed model in span types.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};
use std::fmt;

/// A position in a source file, 1-based line and column, plus the byte offset when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn from_location(location: serde_saphyr::Location) -> Self {
        Position {
            line: location.line() as usize,
            column: location.column() as usize,
        }
    }

    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// A YAML node: its value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub position: Position,
    pub value: Value,
}

/// A mapping key with its own position, so "unknown key" errors point at the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    String(String),
    Sequence(Vec<Node>),
    Mapping(Vec<(Key, Node)>),
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub position: Position,
}

/// Limits that keep a hostile file (alias bombs, deep nesting) from exhausting memory.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_nodes: 200_000,
            max_total_scalar_bytes: 8 * 1024 * 1024,
        },
    }
}

/// Parse one YAML document into a located tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let spanned: Spanned<Value> =
        serde_saphyr::from_str_with_options(text, options()).map_err(|error| {
            let position = error
                .location()
                .map(Position::from_location)
                .unwrap_or_default();
            SyntaxError {
                message: UserMessageFormatter.format_message(&error).into_owned(),
                position,
            }
        })?;
    let mut tree = node_from(spanned);
    keep_key_spellings(&mut tree, text);
    Ok(tree)
}

/// YAML 1.1 reads the plain words `on`, `off`, `yes` and `no` as booleans, keys too (so
/// `notify: { on: [...] }` would have a key `true`); a mapping key is a name, so one read as a
/// boolean gets back the word written at its position.
fn keep_key_spellings(node: &mut Node, text: &str) {
    match &mut node.value {
        Value::Mapping(entries) => {
            for (key, value) in entries.iter_mut() {
                if key.name == "true" || key.name == "false" {
                    let written: String = text
                        .lines()
                        .nth(key.position.line.saturating_sub(1))
                        .unwrap_or_default()
                        .chars()
                        .skip(key.position.column.saturating_sub(1))
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    if !written.is_empty() {
                        key.name = written;
                    }
                }
                keep_key_spellings(value, text);
            }
        }
        Value::Sequence(items) => items
            .iter_mut()
            .for_each(|item| keep_key_spellings(item, text)),
        _ => {}
    }
}

fn node_from(spanned: Spanned<Value>) -> Node {
    Node {
        position: Position::from_location(spanned.referenced),
        value: spanned.value,
    }
}

impl Node {
    /// The node at a JSON-pointer-like path of keys and indexes, if it exists.
    pub fn at_path<'a>(&'a self, path: &[PathSegment]) -> Option<&'a Node> {
        let mut node = self;
        for segment in path {
            node = match (&node.value, segment) {
                (Value::Mapping(entries), PathSegment::Key(name)) => {
                    &entries.iter().find(|(key, _)| &key.name == name)?.1
                }
                (Value::Sequence(items), PathSegment::Index(index)) => items.get(*index)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The key node of the last path segment, when it is a mapping key.
    pub fn key_at_path<'a>(&'a self, path: &[PathSegment]) -> Option<&'a Key> {
        let (last, parent) = path.split_last()?;
        let PathSegment::Key(name) = last else {
            return None;
        };
        match &self.at_path(parent)?.value {
            Value::Mapping(entries) => entries
                .iter()
                .map(|(key, _)| key)
                .find(|key| &key.name == name),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Mapping(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The JSON value of this tree, for schema validation and typed decoding.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Integer(value) => Json::from(*value),
            Value::Float(value) => serde_json::Number::from_f64(*value)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::String(value) => Json::String(value.clone()),
            Value::Sequence(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Mapping(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(key, value)| (key.name.clone(), value.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Key(key) => write!(f, "{key}"),
            PathSegment::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// Render a path the way users write it: `stages[2].deploy.services`.
pub fn display_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        i64::try_from(value)
            .map(Value::Integer)
            .or(Ok(Value::Float(value as f64)))
    }
    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Value, E> {
        i64::try_from(value)
            .map(Value::Integer)
            .or(Ok(Value::Float(value as f64)))
    }
    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Value, E> {
        i64::try_from(value)
            .map(Value::Integer)
            .or(Ok(Value::Float(value as f64)))
    }
    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Float(value))
    }
    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }
    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }
    fn visit_bytes<E>(self, value: &[u8]) -> Result<Value, E> {
        Ok(Value::String(String::from_utf8_lossy(value).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(node_from(item));
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Value>>()? {
            let position = Position::from_location(key.referenced);
            let boolean = matches!(key.value, Value::Bool(_));
            let name = match key.value {
                Value::String(name) => name,
                Value::Integer(number) => number.to_string(),
                Value::Float(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Null => "null".to_owned(),
                Value::Sequence(_) | Value::Mapping(_) => {
                    return Err(de::Error::custom(
                        "a mapping key must be a plain value, not a list or mapping",
                    ));
                }
            };
            if entries.iter().any(|(existing, _)| existing.name == name) {
                let hint = if boolean {
                    " (YAML reads `on`, `off`, `yes` and `no` as true or false: quote such a key)"
                } else {
                    ""
                };
                return Err(de::Error::custom(format!(
                    "duplicate key `{name}`: each key may appear once in a mapping{hint}"
                )));
            }
            let value = node_from(map.next_value::<Spanned<Value>>()?);
            entries.push((Key { name, position }, value));
        }
        Ok(Value::Mapping(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let tree = parse("name: api\nstages:\n  - build:\n      image: envelope-api\n").unwrap();
        let path = [
            PathSegment::Key("stages".into()),
            PathSegment::Index(0),
            PathSegment::Key("build".into()),
            PathSegment::Key("image".into()),
        ];
        let image = tree.at_path(&path).unwrap();
        assert_eq!(image.value, Value::String("envelope-api".into()));
        assert_eq!(
            image.position,
            Position {
                line: 4,
                column: 14
            }
        );
        let key = tree.key_at_path(&path).unwrap();
        assert_eq!(key.position, Position { line: 4, column: 7 });
    }

    #[test]
    fn syntax_error_has_a_position() {
        let error = parse("name: api\nstages: [\n").unwrap_err();
        assert!(error.position.line >= 2, "{error:?}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let error = parse("name: a\nname: b\n").unwrap_err();
        assert!(
            error.message.contains("duplicate mapping key `name`"),
            "{error:?}"
        );
        assert_eq!(error.position.line, 2);
    }

    #[test]
    fn a_key_read_as_a_boolean_keeps_its_spelling() {
        let tree = parse("notify:\n  on: [failure]\n  sns: x\nyes: 1\n").unwrap();
        assert_eq!(
            tree.to_json(),
            serde_json::json!({"notify": {"on": ["failure"], "sns": "x"}, "yes": 1})
        );
        let both = parse("on: 1\nyes: 2\n").unwrap_err();
        assert!(both.message.contains("quote such a key"), "{both:?}");
        let value = parse("a: on\n").unwrap();
        assert_eq!(
            value.to_json(),
            serde_json::json!({"a": true}),
            "values are unchanged"
        );
    }

    #[test]
    fn scalars_keep_their_yaml_types() {
        let tree = parse("a: 1\nb: true\nc: ~\nd: '7'\ne: 1.5\n").unwrap();
        assert_eq!(
            tree.to_json(),
            serde_json::json!({"a": 1, "b": true, "c": null, "d": "7", "e": 1.5})
        );
    }
}
