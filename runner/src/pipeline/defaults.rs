//! The project defaults file (`envelope.yaml` next to `pipelines/`), checked by the same front
//! end as a pipeline file ([`document`](super::document)); an empty file sets no defaults.

use super::defaults_schema;
use super::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use super::document::DocumentKind;
use super::model::ProjectDefaults;
use super::names;
use super::yaml::{Node, PathSegment};

const DEFAULTS_FILE: DocumentKind = DocumentKind {
    called: "the project defaults file",
    read_as: "the project defaults",
    start_with: "start with `aws:` or `env:`",
    schema: defaults_schema,
    empty_is_default: true,
};

/// Parse and check the defaults file. Pure.
pub(super) fn compile(source: &SourceFile) -> Result<ProjectDefaults, Diagnostics> {
    let (tree, mut diagnostics) = DEFAULTS_FILE.check(source)?;
    if diagnostics.has_errors() {
        return Err(diagnostics);
    }
    let defaults: ProjectDefaults = DEFAULTS_FILE.read(&tree, source)?;
    for name in defaults.env.keys() {
        if let Some(problem) = env_name_problem(name, &tree, source) {
            diagnostics.push(problem);
        }
    }
    if diagnostics.has_errors() {
        return Err(diagnostics);
    }
    Ok(defaults)
}

/// What is wrong with `name` as a key of the defaults' `env:`, if anything.
fn env_name_problem(name: &str, tree: &Node, source: &SourceFile) -> Option<Diagnostic> {
    let path = [
        PathSegment::Key("env".into()),
        PathSegment::Key(name.into()),
    ];
    let position = tree
        .at_path(&path)
        .map_or(tree.position, |node| node.position);
    if !names::is_env_name(name) {
        return Some(
            Diagnostic::error(
                source,
                position,
                format!("`{name}` is not an environment variable name"),
            )
            .with_help("use letters, digits and `_`, not starting with a digit"),
        );
    }
    if names::looks_secret(name) {
        return Some(
            Diagnostic::error(
                source,
                position,
                format!("`{name}` looks like a secret, and this file is committed with the project"),
            )
            .with_help(
                "pass secrets as a build's `secrets:` or a buildspec's `secrets-manager:`; defaults here are for plain values such as host names",
            ),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::document::YAML_SYNTAX_HELP;
    use crate::pipeline::model::Aws;

    fn compile_text(text: &str) -> Result<ProjectDefaults, String> {
        compile(&SourceFile::new("envelope.yaml", text)).map_err(|errors| errors.render(false))
    }

    #[test]
    fn an_empty_file_sets_no_defaults() {
        for text in ["", "\n", "# defaults come later\n"] {
            assert_eq!(
                compile_text(text),
                Ok(ProjectDefaults::default()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn aws_settings_are_read() {
        let defaults = compile_text("aws:\n  region: eu-west-2\n  account: \"123456789012\"\n");
        assert_eq!(
            defaults,
            Ok(ProjectDefaults {
                aws: Some(Aws {
                    region: Some("eu-west-2".into()),
                    account: Some("123456789012".into()),
                    registry: None,
                }),
                env: Default::default(),
            })
        );
    }

    #[test]
    fn env_defaults_are_read() {
        let defaults = compile_text("env:\n  API_HOST: api.envelope.host\n").unwrap();
        assert_eq!(defaults.env["API_HOST"], "api.envelope.host");
    }

    #[test]
    fn errors_are_located_and_say_what_to_do() {
        let cases = [
            (
                "env:\n  API_HOST: api.envelope.host\n  DB_PASSWORD: hunter2\n",
                vec!["envelope.yaml:3:16", "`DB_PASSWORD` looks like a secret"],
            ),
            (
                "env:\n  api-host: api.envelope.host\n",
                vec!["`api-host` is not an environment variable name"],
            ),
            ("aws: [eu-west-2\n", vec!["invalid YAML", YAML_SYNTAX_HELP]),
            (
                "- aws\n",
                vec![
                    "the project defaults file must be a mapping, found a list",
                    "start with `aws:`",
                ],
            ),
            (
                "aws:\n  regoin: eu-west-2\n",
                vec!["envelope.yaml:2:3", "did you mean `region`?"],
            ),
            ("aws: eu-west-2\n", vec!["`aws` must be a mapping"]),
        ];
        for (text, expected) in cases {
            let error = compile_text(text).expect_err(text);
            for part in expected {
                assert!(error.contains(part), "{part:?} in {error}");
            }
        }
    }
}
