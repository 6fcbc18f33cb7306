//! What a GitHub Actions job's environment says: whether the process runs in a job at all, the
//! release or ref it builds, who started it, its page and where its output files are. Pure: the
//! variables and the event file's text are handed in (the command line reads them once), so
//! tests pass them instead of setting the process environment.

use crate::run::TriggerKind;
use std::path::{Path, PathBuf};

/// What the GitHub Actions environment says about the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionsEnvironment {
    /// `GITHUB_RUN_ID`.
    pub run_id: String,
    /// `GITHUB_ACTOR`: who triggered the workflow.
    pub actor: String,
    /// `GITHUB_SERVER_URL` (default `https://github.com`).
    pub server_url: String,
    /// `GITHUB_REPOSITORY`: `owner/repo` of the workflow.
    pub repository: Option<String>,
    /// `GITHUB_WORKSPACE`: where the repository is checked out; annotations are relative to it.
    pub workspace: Option<PathBuf>,
    /// `GITHUB_EVENT_NAME`.
    pub event_name: Option<String>,
    /// `GITHUB_REF`: the full ref (`refs/tags/v1.2.3`, `refs/heads/main`, `refs/pull/7/merge`).
    pub git_ref: Option<String>,
    /// `GITHUB_REF_NAME`: its short name.
    pub ref_name: Option<String>,
    /// `GITHUB_SHA`: the commit.
    pub sha: Option<String>,
    /// `release.tag_name` of a release event.
    pub release_tag: Option<String>,
    /// `GITHUB_OUTPUT`: the step outputs file.
    pub output_file: Option<PathBuf>,
    /// `GITHUB_STEP_SUMMARY`: the job summary file.
    pub summary_file: Option<PathBuf>,
}

/// The ref a job builds, as the Actions environment gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsTrigger {
    /// A full ref: `refs/tags/<tag>` for releases and tag pushes (so that the tag is a tag
    /// whatever the pipeline's tag patterns say), `refs/heads/<branch>` for branch pushes.
    pub git_ref: String,
    pub sha: Option<String>,
    pub tag: Option<String>,
}

impl ActionsEnvironment {
    /// The job's environment, or `None` outside GitHub Actions (`GITHUB_ACTIONS` is not
    /// `true`). `lookup` gives a variable's value; `read_event` the text of the event file
    /// `GITHUB_EVENT_PATH` names (`None` when it cannot be read).
    pub fn detect(
        lookup: &dyn Fn(&str) -> Option<String>,
        read_event: &dyn Fn(&Path) -> Option<String>,
    ) -> Option<Self> {
        if lookup("GITHUB_ACTIONS").is_none_or(|value| value != "true") {
            return None;
        }
        let event = lookup("GITHUB_EVENT_PATH")
            .filter(|path| !path.is_empty())
            .and_then(|path| read_event(Path::new(&path)));
        Some(Self::from_lookup(lookup, event.as_deref()))
    }

    /// The environment from variables (`lookup`) and the event file's text.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>, event: Option<&str>) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let event: Option<serde_json::Value> =
            event.and_then(|text| serde_json::from_str(text).ok());
        let release_tag = event
            .as_ref()
            .and_then(|event| event.pointer("/release/tag_name"))
            .and_then(|tag| tag.as_str())
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned);
        ActionsEnvironment {
            run_id: get("GITHUB_RUN_ID").unwrap_or_default(),
            actor: get("GITHUB_ACTOR").unwrap_or_default(),
            server_url: get("GITHUB_SERVER_URL")
                .unwrap_or_else(|| "https://github.com".into())
                .trim_end_matches('/')
                .to_owned(),
            repository: get("GITHUB_REPOSITORY"),
            workspace: get("GITHUB_WORKSPACE").map(PathBuf::from),
            event_name: get("GITHUB_EVENT_NAME"),
            git_ref: get("GITHUB_REF"),
            ref_name: get("GITHUB_REF_NAME"),
            sha: get("GITHUB_SHA"),
            release_tag,
            output_file: get("GITHUB_OUTPUT").map(PathBuf::from),
            summary_file: get("GITHUB_STEP_SUMMARY").map(PathBuf::from),
        }
    }

    /// The ref and commit to build: a release event's tag with `GITHUB_SHA`; otherwise
    /// `GITHUB_REF` (or `GITHUB_REF_NAME`) with `GITHUB_SHA`. `None` when the job names no ref.
    pub fn trigger(&self) -> Option<ActionsTrigger> {
        let sha = self
            .sha
            .clone()
            .filter(|sha| sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()));
        let tag_trigger = |tag: &str| ActionsTrigger {
            git_ref: format!("refs/tags/{tag}"),
            sha: sha.clone(),
            tag: Some(tag.to_owned()),
        };
        if let Some(tag) = &self.release_tag {
            return Some(tag_trigger(tag));
        }
        if let Some(git_ref) = &self.git_ref {
            return Some(match git_ref.strip_prefix("refs/tags/") {
                Some(tag) => tag_trigger(tag),
                None => ActionsTrigger {
                    git_ref: git_ref.clone(),
                    sha,
                    tag: None,
                },
            });
        }
        self.ref_name.as_ref().map(|name| ActionsTrigger {
            git_ref: name.clone(),
            sha,
            tag: None,
        })
    }

    /// The trigger a run records.
    pub fn trigger_kind(&self) -> TriggerKind {
        TriggerKind::GithubActions {
            run_id: self.run_id.clone(),
            actor: self.actor.clone(),
        }
    }

    /// The page of this workflow run.
    pub fn run_url(&self) -> Option<String> {
        let repository = self.repository.as_ref()?;
        (!self.run_id.is_empty()).then(|| {
            format!(
                "{}/{repository}/actions/runs/{}",
                self.server_url, self.run_id
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn environment(variables: &[(&str, &str)], event: Option<&str>) -> ActionsEnvironment {
        let variables = variables_of(variables);
        ActionsEnvironment::from_lookup(&|name| variables.get(name).cloned(), event)
    }

    fn variables_of(variables: &[(&str, &str)]) -> BTreeMap<String, String> {
        variables
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn only_github_actions_true_is_a_job_and_the_event_file_is_read_from_its_path() {
        let event = r#"{"release":{"tag_name":"v3"}}"#;
        let read_event = |path: &Path| (path == Path::new("/job/event.json")).then(|| event.into());
        let detect = |variables: &[(&str, &str)]| {
            let variables = variables_of(variables);
            ActionsEnvironment::detect(&|name| variables.get(name).cloned(), &read_event)
        };
        assert_eq!(detect(&[]), None);
        assert_eq!(detect(&[("GITHUB_ACTIONS", "false")]), None);
        assert_eq!(detect(&[("GITHUB_ACTIONS", "1")]), None);
        let job = detect(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_PATH", "/job/event.json"),
        ])
        .expect("a job");
        assert_eq!(job.release_tag.as_deref(), Some("v3"));
        assert_eq!(job.server_url, "https://github.com");
        let unreadable = detect(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_PATH", "/elsewhere.json"),
        ])
        .expect("a job");
        assert_eq!(unreadable.release_tag, None);
    }

    #[test]
    fn a_release_event_builds_its_tag_at_github_sha() {
        let environment = environment(
            &[
                ("GITHUB_EVENT_NAME", "release"),
                ("GITHUB_REF", "refs/tags/v1.2.3"),
                ("GITHUB_SHA", SHA),
            ],
            Some(r#"{"action":"published","release":{"tag_name":"v1.2.3-rc"}}"#),
        );
        assert_eq!(
            environment.trigger(),
            Some(ActionsTrigger {
                git_ref: "refs/tags/v1.2.3-rc".into(),
                sha: Some(SHA.into()),
                tag: Some("v1.2.3-rc".into()),
            })
        );
    }

    #[test]
    fn pushes_build_the_pushed_ref() {
        let cases = [
            ("refs/tags/v2", "refs/tags/v2", Some("v2")),
            ("refs/heads/main", "refs/heads/main", None),
            ("refs/pull/7/merge", "refs/pull/7/merge", None),
        ];
        for (github_ref, git_ref, tag) in cases {
            let environment = environment(
                &[
                    ("GITHUB_EVENT_NAME", "push"),
                    ("GITHUB_REF", github_ref),
                    ("GITHUB_SHA", SHA),
                ],
                Some(r#"{"ref":"x"}"#),
            );
            let trigger = environment.trigger().unwrap();
            assert_eq!(trigger.git_ref, git_ref);
            assert_eq!(trigger.tag.as_deref(), tag);
            assert_eq!(trigger.sha.as_deref(), Some(SHA));
        }
        let named = environment(&[("GITHUB_REF_NAME", "main")], None);
        assert_eq!(named.trigger().unwrap().git_ref, "main");
        assert_eq!(environment(&[], None).trigger(), None);
    }

    #[test]
    fn a_malformed_sha_is_not_used() {
        let environment = environment(
            &[("GITHUB_REF", "refs/heads/x"), ("GITHUB_SHA", "abc")],
            None,
        );
        assert_eq!(environment.trigger().unwrap().sha, None);
    }

    #[test]
    fn the_workflow_run_page() {
        let environment = environment(
            &[
                ("GITHUB_SERVER_URL", "https://github.example.com/"),
                ("GITHUB_REPOSITORY", "acme/deploy"),
                ("GITHUB_RUN_ID", "42"),
            ],
            None,
        );
        assert_eq!(
            environment.run_url().as_deref(),
            Some("https://github.example.com/acme/deploy/actions/runs/42")
        );
        let no_run = self::environment(&[("GITHUB_REPOSITORY", "acme/deploy")], None);
        assert_eq!(no_run.run_url(), None);
    }
}
