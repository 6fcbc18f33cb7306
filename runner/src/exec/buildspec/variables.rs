//! The shell's variables: the `CODEBUILD_*` set made from the run's facts, the starting
//! environment in CodeBuild's order of precedence, and which names are shell variable names.

use super::BuildspecContext;
use crate::buildspec::Buildspec;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// The facts the `CODEBUILD_*` variables are made from.
#[derive(Debug, Clone, Copy)]
pub struct CodebuildFacts<'a> {
    pub source_dir: &'a Path,
    /// The full commit sha being built.
    pub resolved_source_version: &'a str,
    /// Counts builds of this pipeline: 1, 2, 3…
    pub build_number: u64,
    /// Names the build in `CODEBUILD_BUILD_ID` (`project:run-id`), as a CodeBuild project does.
    pub project: &'a str,
    pub run_id: &'a str,
    /// Milliseconds since the Unix epoch.
    pub start_time_ms: i64,
    /// Who started the build (a user, `github-actions`, `envelope-agent`…).
    pub initiator: &'a str,
    /// What triggered it, in CodeBuild's webhook form: `tag/v1.2.3`, `branch/main`, `pr/42`.
    pub webhook_trigger: Option<&'a str>,
}

/// The `CODEBUILD_*` variables buildspecs commonly read.
pub fn codebuild_variables(facts: &CodebuildFacts<'_>) -> BTreeMap<String, String> {
    let mut variables = BTreeMap::new();
    let mut set = |name: &str, value: String| {
        variables.insert(name.to_string(), value);
    };
    set("CODEBUILD_CI", "true".into());
    set(
        "CODEBUILD_SRC_DIR",
        facts.source_dir.to_string_lossy().into_owned(),
    );
    set(
        "CODEBUILD_RESOLVED_SOURCE_VERSION",
        facts.resolved_source_version.into(),
    );
    set(
        "CODEBUILD_SOURCE_VERSION",
        facts.resolved_source_version.into(),
    );
    set("CODEBUILD_BUILD_NUMBER", facts.build_number.to_string());
    set(
        "CODEBUILD_BUILD_ID",
        format!("{}:{}", facts.project, facts.run_id),
    );
    set("CODEBUILD_START_TIME", facts.start_time_ms.to_string());
    set("CODEBUILD_INITIATOR", facts.initiator.into());
    set("CODEBUILD_BUILD_SUCCEEDING", "1".into());
    if let Some(trigger) = facts.webhook_trigger {
        set("CODEBUILD_WEBHOOK_TRIGGER", trigger.into());
        let head_ref = if let Some(tag) = trigger.strip_prefix("tag/") {
            Some(format!("refs/tags/{tag}"))
        } else {
            trigger
                .strip_prefix("branch/")
                .map(|branch| format!("refs/heads/{branch}"))
        };
        if let Some(head_ref) = head_ref {
            set("CODEBUILD_WEBHOOK_HEAD_REF", head_ref);
        }
    }
    variables
}

pub(super) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The shell's starting environment, lowest precedence first: this process's environment,
/// the buildspec's `env.variables`, the caller's variables, the secrets, then the variables we
/// own (CodeBuild lets a project's variables override the buildspec's).
pub(super) fn initial_env(
    spec: &Buildspec,
    context: &BuildspecContext,
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    if let Some(section) = &spec.env {
        for (name, value) in &section.variables {
            env.insert(name.into(), value.0.clone().into());
        }
    }
    for (name, value) in &context.env {
        env.insert(name.into(), value.into());
    }
    for (name, value) in &context.secret_env {
        env.insert(name.into(), value.expose().into());
    }
    env.entry("CODEBUILD_SRC_DIR".into())
        .or_insert_with(|| context.source_dir.clone().into_os_string());
    env.insert("CODEBUILD_BUILD_SUCCEEDING".into(), "1".into());
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_codebuild_variables() {
        let variables = codebuild_variables(&CodebuildFacts {
            source_dir: Path::new("/work/src"),
            resolved_source_version: "0123abcd",
            build_number: 42,
            project: "api",
            run_id: "01JRUN",
            start_time_ms: 1_700_000_000_000,
            initiator: "github-actions",
            webhook_trigger: Some("tag/v1.2.3"),
        });
        let expected = [
            ("CODEBUILD_BUILD_ID", "api:01JRUN"),
            ("CODEBUILD_BUILD_NUMBER", "42"),
            ("CODEBUILD_BUILD_SUCCEEDING", "1"),
            ("CODEBUILD_CI", "true"),
            ("CODEBUILD_INITIATOR", "github-actions"),
            ("CODEBUILD_RESOLVED_SOURCE_VERSION", "0123abcd"),
            ("CODEBUILD_SOURCE_VERSION", "0123abcd"),
            ("CODEBUILD_SRC_DIR", "/work/src"),
            ("CODEBUILD_START_TIME", "1700000000000"),
            ("CODEBUILD_WEBHOOK_HEAD_REF", "refs/tags/v1.2.3"),
            ("CODEBUILD_WEBHOOK_TRIGGER", "tag/v1.2.3"),
        ];
        let actual: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(actual, expected);
    }
}
