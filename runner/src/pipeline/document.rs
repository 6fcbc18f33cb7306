//! The front end shared by the YAML documents that are checked against a JSON Schema: a
//! pipeline file, the project defaults file and the agent's configuration file.
//!
//! [`DocumentKind::check`] parses the text into a located tree ([`yaml::parse`]; an
//! `invalid YAML` diagnostic on failure), requires the top level to be a mapping (a diagnostic
//! naming what it found, with a "start with ..." help) and runs [`structure::check`] against
//! the kind's schema. [`DocumentKind::read`] then deserializes the tree into the typed model.
//! What differs between kinds (what the document is called, the help line, the schema, whether
//! an empty document means the defaults) is a [`DocumentKind`].

use super::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use super::structure;
use super::yaml::{self, Node};
use serde::de::DeserializeOwned;

/// The help of every `invalid YAML` diagnostic.
pub const YAML_SYNTAX_HELP: &str =
    "fix the YAML syntax first; check indentation and unclosed brackets or quotes";

/// A kind of YAML document whose top level is a mapping checked against a JSON Schema.
#[derive(Debug, Clone, Copy)]
pub struct DocumentKind {
    /// What the not-a-mapping message calls a document: "`{called}` must be a mapping, found
    /// ..." (for example `a pipeline file`).
    pub called: &'static str,
    /// What the deserialization message calls it: "cannot read `{read_as}`: ..." (for example
    /// `the pipeline`).
    pub read_as: &'static str,
    /// The help when the top level is not a mapping (for example "start with `stages:`").
    pub start_with: &'static str,
    /// The JSON Schema the tree is checked against.
    pub schema: fn() -> serde_json::Value,
    /// Whether a document without content (empty, or only comments) is read as the model's
    /// defaults instead of being refused as not a mapping.
    pub empty_is_default: bool,
}

impl DocumentKind {
    /// Parse `source`, require a mapping at the top level and check it against the schema.
    ///
    /// `Err` holds the one diagnostic that stops everything (invalid YAML, or not a mapping);
    /// `Ok` holds the tree and the schema's diagnostics, which may include errors: the caller
    /// decides whether to go on checking before it calls [`DocumentKind::read`].
    pub fn check(&self, source: &SourceFile) -> Result<(Node, Diagnostics), Diagnostics> {
        let mut diagnostics = Diagnostics::default();
        let tree = match yaml::parse(&source.text) {
            Ok(tree) => tree,
            Err(error) => {
                diagnostics.push(
                    Diagnostic::error(
                        source,
                        error.position,
                        format!("invalid YAML: {}", error.message),
                    )
                    .with_help(YAML_SYNTAX_HELP),
                );
                return Err(diagnostics);
            }
        };
        if self.empty_is_default && matches!(tree.value, yaml::Value::Null) {
            return Ok((tree, diagnostics));
        }
        if !matches!(tree.value, yaml::Value::Mapping(_)) {
            diagnostics.push(
                Diagnostic::error(
                    source,
                    tree.position,
                    format!(
                        "{} must be a mapping, found {}",
                        self.called,
                        tree.kind_name()
                    ),
                )
                .with_help(self.start_with),
            );
            return Err(diagnostics);
        }
        diagnostics.extend(structure::check(
            &tree,
            &(self.schema)(),
            source,
            self.read_as,
        ));
        Ok((tree, diagnostics))
    }

    /// Deserialize a tree [`DocumentKind::check`] returned into the typed model (an empty one
    /// as an empty mapping, where `empty_is_default`); a failure is one diagnostic at the top
    /// of the document.
    pub fn read<T: DeserializeOwned>(
        &self,
        tree: &Node,
        source: &SourceFile,
    ) -> Result<T, Diagnostics> {
        let json = match tree.value {
            yaml::Value::Null if self.empty_is_default => serde_json::json!({}),
            _ => tree.to_json(),
        };
        serde_json::from_value(json).map_err(|error| {
            let mut diagnostics = Diagnostics::default();
            diagnostics.push(Diagnostic::error(
                source,
                tree.position,
                format!("cannot read {}: {error}", self.read_as),
            ));
            diagnostics
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
    }

    const SAMPLE: DocumentKind = DocumentKind {
        called: "a sample file",
        read_as: "the sample",
        start_with: "start with `name:`",
        schema: || serde_json::to_value(schemars::schema_for!(Sample)).expect("schema serializes"),
        empty_is_default: false,
    };

    fn check(text: &str) -> Result<(Node, Diagnostics), String> {
        SAMPLE
            .check(&SourceFile::new("sample.yaml", text))
            .map_err(|diagnostics| diagnostics.render(false))
    }

    #[test]
    fn a_valid_document_is_read_into_the_model() {
        let source = SourceFile::new("sample.yaml", "name: api\n");
        let (tree, diagnostics) = SAMPLE.check(&source).unwrap();
        assert!(diagnostics.is_empty(), "{}", diagnostics.render(false));
        let sample: Sample = SAMPLE.read(&tree, &source).unwrap();
        assert_eq!(sample.name, "api");
    }

    #[test]
    fn invalid_yaml_is_one_error_with_the_syntax_help() {
        let error = check("name: [api\n").unwrap_err();
        assert!(error.contains("invalid YAML"), "{error}");
        assert!(error.contains(YAML_SYNTAX_HELP), "{error}");
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_is_named() {
        let error = check("- api\n").unwrap_err();
        assert!(
            error.contains("a sample file must be a mapping, found a list"),
            "{error}"
        );
        assert!(error.contains("start with `name:`"), "{error}");
    }

    #[test]
    fn an_empty_document_is_not_a_mapping_unless_it_stands_for_the_defaults() {
        for text in ["", "# nothing yet\n"] {
            let error = check(text).unwrap_err();
            assert!(
                error.contains("a sample file must be a mapping, found nothing"),
                "{error}"
            );
        }

        #[derive(Debug, Default, PartialEq, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Optional {
            name: Option<String>,
        }
        let optional = DocumentKind {
            empty_is_default: true,
            schema: || {
                serde_json::to_value(schemars::schema_for!(Optional)).expect("schema serializes")
            },
            ..SAMPLE
        };
        for text in ["", "# nothing yet\n"] {
            let source = SourceFile::new("sample.yaml", text);
            let (tree, diagnostics) = optional.check(&source).unwrap();
            assert!(diagnostics.is_empty(), "{}", diagnostics.render(false));
            let read: Optional = optional.read(&tree, &source).unwrap();
            assert_eq!(read, Optional::default());
        }
    }

    #[test]
    fn schema_errors_come_back_with_the_tree() {
        let (_, diagnostics) = check("nmae: api\n").unwrap();
        assert!(diagnostics.has_errors());
        assert!(diagnostics.render(false).contains("sample.yaml:1:1"));
    }

    #[test]
    fn a_model_that_cannot_be_read_is_one_error_naming_the_document() {
        let source = SourceFile::new("sample.yaml", "other: 1\n");
        let tree = yaml::parse(&source.text).unwrap();
        let error = SAMPLE.read::<Sample>(&tree, &source).unwrap_err();
        assert_eq!(error.len(), 1);
        assert!(
            error.render(false).contains("cannot read the sample: "),
            "{error}"
        );
    }
}
