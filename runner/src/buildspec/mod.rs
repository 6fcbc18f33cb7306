//! CodeBuild buildspec version 0.2: the model and its checks.
//!
//! Teams moving off CodeBuild keep their buildspecs. We run the phases (install, pre_build,
//! build, post_build) around the BuildKit build with CodeBuild's semantics. Sections we do not
//! run yet (artifacts, cache, reports, batch) are errors, never silently ignored.

use crate::pipeline::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use crate::pipeline::structure;
use crate::pipeline::yaml::{self, Node, PathSegment};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// A buildspec file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "CodeBuild buildspec (version 0.2)")]
pub struct Buildspec {
    /// Buildspec version; only 0.2 is supported.
    pub version: ScalarString,
    /// Run commands as this Linux user.
    #[serde(default, rename = "run-as", skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BuildspecEnv>,
    /// Proxy settings (accepted for compatibility; the runner uses the machine's network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<serde_json::Value>,
    #[serde(default)]
    pub phases: Phases,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<serde_json::Value>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<serde_json::Value>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<serde_json::Value>,
    /// Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<serde_json::Value>,
}

/// The `env` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildspecEnv {
    /// Shell for commands: `bash` (default) or `/bin/sh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Plain environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, ScalarString>,
    /// Variables read from SSM Parameter Store (name → parameter).
    #[serde(
        default,
        rename = "parameter-store",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub parameter_store: BTreeMap<String, String>,
    /// Variables read from Secrets Manager (name → `secret-id:json-key:version-stage:version-id`).
    #[serde(
        default,
        rename = "secrets-manager",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub secrets_manager: BTreeMap<String, String>,
    /// Variables whose final values are captured into the run for later stages.
    #[serde(
        default,
        rename = "exported-variables",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exported_variables: Vec<String>,
    /// Accepted for compatibility: the source stage already authenticates git.
    #[serde(
        default,
        rename = "git-credential-helper",
        skip_serializing_if = "Option::is_none"
    )]
    pub git_credential_helper: Option<serde_json::Value>,
}

/// The four phases, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_build: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<Phase>,
}

/// One phase: commands, an always-run `finally` block, and what a failure does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Language runtimes (install phase); accepted and reported as not applicable.
    #[serde(
        default,
        rename = "runtime-versions",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub runtime_versions: BTreeMap<String, ScalarString>,
    /// Run as this user in this phase.
    #[serde(default, rename = "run-as", skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// `ABORT` (default) stops the build when a command fails; `CONTINUE` goes on to the next
    /// phase and marks the build failed.
    #[serde(
        default,
        rename = "on-failure",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_failure: Option<OnFailure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Commands that run after `commands`, whether they succeeded or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OnFailure {
    #[serde(rename = "ABORT")]
    Abort,
    #[serde(rename = "CONTINUE")]
    Continue,
}

/// Phase names in run order.
pub const PHASE_NAMES: [&str; 4] = ["install", "pre_build", "build", "post_build"];

impl Phases {
    /// The phases that are present, in run order.
    pub fn in_order(&self) -> Vec<(&'static str, &Phase)> {
        [
            &self.install,
            &self.pre_build,
            &self.build,
            &self.post_build,
        ]
        .into_iter()
        .zip(PHASE_NAMES)
        .filter_map(|(phase, name)| phase.as_ref().map(|phase| (name, phase)))
        .collect()
    }
}

/// A scalar written as a string, number or boolean, kept as text (CodeBuild accepts
/// `PORT: 8080` and `version: 0.2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ScalarString(pub String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(ScalarString(text)),
            serde_json::Value::Number(number) => Ok(ScalarString(number.to_string())),
            serde_json::Value::Bool(flag) => Ok(ScalarString(flag.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, number or boolean, found {other}"
            ))),
        }
    }
}

impl JsonSchema for ScalarString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScalarString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// The JSON Schema of buildspec files.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Buildspec)).expect("schema serializes")
}

/// Parse and check a buildspec; all problems at once.
pub fn compile(source: &SourceFile) -> Result<Buildspec, Diagnostics> {
    let tree = yaml::parse(&source.text).map_err(|error| {
        let mut diagnostics = Diagnostics::default();
        diagnostics.push(
            Diagnostic::error(source, error.position, error.message)
                .with_help("fix the YAML syntax; a buildspec is a YAML mapping"),
        );
        diagnostics
    })?;
    let mut diagnostics = structure::check(&tree, &schema(), source, "the buildspec");
    check_semantics(&tree, source, &mut diagnostics);
    if diagnostics.has_errors() {
        diagnostics.sort();
        return Err(diagnostics);
    }
    serde_json::from_value(tree.to_json()).map_err(|error| {
        let mut diagnostics = Diagnostics::default();
        diagnostics.push(Diagnostic::error(source, tree.position, error.to_string()));
        diagnostics
    })
}

fn check_semantics(tree: &Node, source: &SourceFile, diagnostics: &mut Diagnostics) {
    if let Some(version) = tree.get("version") {
        let text = match &version.value {
            yaml::Value::Float(number) => number.to_string(),
            yaml::Value::String(text) => text.clone(),
            yaml::Value::Integer(number) => number.to_string(),
            _ => String::new(),
        };
        if text != "0.2" {
            diagnostics.push(
                Diagnostic::error(
                    source,
                    version.position,
                    format!("buildspec version `{text}` is not supported"),
                )
                .with_label("only version 0.2 is supported")
                .with_help("set `version: 0.2`"),
            );
        }
    }
    for section in ["artifacts", "cache", "reports", "batch"] {
        if let Some(key) = tree.key_at_path(&[PathSegment::Key(section.into())]) {
            diagnostics.push(
                Diagnostic::error(
                    source,
                    key.position,
                    format!("buildspec section `{section}` is not supported yet"),
                )
                .with_length(section.len())
                .with_label("envelope-runner would not honour this section")
                .with_help(match section {
                    "artifacts" => {
                        "remove it: images are pushed by the build stage; copy other \
                                    files out in a post_build command"
                    }
                    "cache" => {
                        "remove it: BuildKit reuses layers from the registry image \
                                (`cache_from` in the pipeline)"
                    }
                    "reports" => "remove it: test reports are not collected yet",
                    _ => {
                        "remove it: batch builds are not supported yet; use one pipeline \
                          stage per build"
                    }
                }),
            );
        }
    }
    if let Some(env) = tree.get("env")
        && let Some(shell) = env.get("shell")
        && let yaml::Value::String(name) = &shell.value
        && !["bash", "/bin/sh", "sh", "/bin/bash"].contains(&name.as_str())
    {
        diagnostics.push(
            Diagnostic::error(
                source,
                shell.position,
                format!("shell `{name}` is not supported"),
            )
            .with_help("use `bash` or `/bin/sh`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> Result<Buildspec, String> {
        compile(&SourceFile::new("buildspec.yml", text)).map_err(|d| d.render(false))
    }

    #[test]
    fn accepts_a_typical_buildspec() {
        let spec = compile_text(
            "version: 0.2\nenv:\n  variables:\n    PORT: 8080\n  exported-variables: [IMAGE_TAG]\n\
             phases:\n  install:\n    runtime-versions:\n      php: 8.3\n    commands: [echo hi]\n\
             \x20 build:\n    on-failure: CONTINUE\n    commands:\n      - make\n    finally:\n      - echo done\n",
        )
        .unwrap();
        assert_eq!(spec.version.0, "0.2");
        let env = spec.env.unwrap();
        assert_eq!(env.variables["PORT"].0, "8080");
        let phases = spec.phases.in_order();
        assert_eq!(
            phases.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["install", "build"]
        );
        assert_eq!(phases[1].1.on_failure, Some(OnFailure::Continue));
    }

    #[test]
    fn rejects_unsupported_sections_and_versions() {
        let error =
            compile_text("version: 0.1\nphases: {}\nartifacts:\n  files: ['**/*']\n").unwrap_err();
        assert!(
            error.contains("buildspec version `0.1` is not supported"),
            "{error}"
        );
        assert!(
            error.contains("section `artifacts` is not supported yet"),
            "{error}"
        );
    }

    #[test]
    fn rejects_bad_on_failure() {
        let error =
            compile_text("version: 0.2\nphases:\n  build:\n    on-failure: RETRY\n").unwrap_err();
        assert!(error.contains("`RETRY` is not a valid value"), "{error}");
    }
}
