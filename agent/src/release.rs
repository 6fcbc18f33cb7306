//! GitHub releases as the agent sees them, and which of them start a run.
//!
//! Pure: the filter is a function of the release, the repository's settings and the time the
//! agent began watching the repository.

use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// The fields of a GitHub release (REST `GET /repos/{owner}/{repo}/releases`, or the
/// `release` of a webhook) that decide whether it starts a run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Release {
    pub id: u64,
    pub tag_name: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target_commitish: Option<String>,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    /// `None` for drafts.
    #[serde(default)]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub html_url: Option<String>,
    /// Who published the release.
    #[serde(default)]
    pub author: Option<ReleaseAuthor>,
}

/// A release's `author`: the GitHub user who published it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ReleaseAuthor {
    pub login: String,
}

/// Why a release does not start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Draft,
    Prerelease,
    /// The tag matches none of the patterns.
    Tag,
    /// Published before the agent began watching the repository: it existed already.
    Old,
}

/// Which releases of one repository start its pipeline.
#[derive(Debug, Clone)]
pub struct ReleaseFilter {
    tags: Option<GlobSet>,
    include_prereleases: bool,
}

impl ReleaseFilter {
    /// `patterns` empty: every tag. Patterns were checked with the configuration; one that
    /// still fails to compile matches nothing.
    pub fn new(patterns: &[String], include_prereleases: bool) -> Self {
        let tags = (!patterns.is_empty()).then(|| {
            let mut builder = GlobSetBuilder::new();
            for pattern in patterns {
                if let Ok(glob) = Glob::new(pattern) {
                    builder.add(glob);
                }
            }
            builder.build().unwrap_or_else(|_| GlobSet::empty())
        });
        ReleaseFilter {
            tags,
            include_prereleases,
        }
    }

    /// `Ok` when `release` starts a run; `watching_since` is when the agent began watching
    /// (releases published before it are history, not news).
    pub fn check(
        &self,
        release: &Release,
        watching_since: Option<DateTime<Utc>>,
    ) -> Result<(), Skip> {
        if release.draft {
            return Err(Skip::Draft);
        }
        if release.prerelease && !self.include_prereleases {
            return Err(Skip::Prerelease);
        }
        if let Some(tags) = &self.tags
            && !tags.is_match(&release.tag_name)
        {
            return Err(Skip::Tag);
        }
        // GitHub's times have whole seconds: a release of the same second as the first watch
        // counts as new.
        if let (Some(since), Some(published)) = (watching_since, release.published_at)
            && published.timestamp() < since.timestamp()
        {
            return Err(Skip::Old);
        }
        Ok(())
    }
}

/// The store key that makes one release start one run, across restarts and agents.
/// GitHub names are case-insensitive, so the key is lowercase.
pub fn claim_key(repository: &str, release_id: u64) -> String {
    format!("release:{}:{release_id}", repository.to_ascii_lowercase())
}

/// The store key whose first claim records when agents began watching a repository.
pub fn watch_key(repository: &str) -> String {
    format!("watch:{}", repository.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(tag: &str, draft: bool, prerelease: bool, published: Option<&str>) -> Release {
        Release {
            id: 1,
            tag_name: tag.into(),
            name: None,
            target_commitish: Some("main".into()),
            draft,
            prerelease,
            published_at: published.map(|t| t.parse().unwrap()),
            html_url: None,
            author: None,
        }
    }

    #[test]
    fn which_releases_start_a_run() {
        let since: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        let after = Some("2026-11-02T00:00:00Z");
        let before = Some("2026-10-01T00:00:00Z");
        let v_only = ReleaseFilter::new(&["v*".into()], false);
        let with_pre = ReleaseFilter::new(&[], true);
        let cases = [
            (&v_only, release("v1.2.0", false, false, after), Ok(())),
            (
                &v_only,
                release("v1.2.0", true, false, None),
                Err(Skip::Draft),
            ),
            (
                &v_only,
                release("v1.2.0-rc1", false, true, after),
                Err(Skip::Prerelease),
            ),
            (&with_pre, release("v1.2.0-rc1", false, true, after), Ok(())),
            (
                &v_only,
                release("nightly", false, false, after),
                Err(Skip::Tag),
            ),
            (&with_pre, release("nightly", false, false, after), Ok(())),
            (
                &v_only,
                release("v1.1.0", false, false, before),
                Err(Skip::Old),
            ),
        ];
        for (filter, release, expected) in cases {
            assert_eq!(filter.check(&release, Some(since)), expected, "{release:?}");
        }
    }

    #[test]
    fn keys_ignore_the_case_of_repository_names() {
        assert_eq!(claim_key("EpactLtd/API", 42), "release:epactltd/api:42");
        assert_eq!(watch_key("EpactLtd/API"), "watch:epactltd/api");
    }

    #[test]
    fn reads_the_shape_github_sends() {
        let json = r#"{"url":"https://api.github.com/repos/o/r/releases/1","id":1,
            "node_id":"RE_1","tag_name":"v1.0.0","target_commitish":"main","name":"v1.0.0",
            "draft":false,"prerelease":false,"created_at":"2026-11-26T09:00:00Z",
            "published_at":"2026-11-26T09:01:00Z","author":{"login":"octocat","id":1},
            "assets":[],"body":"notes","html_url":"https://github.com/o/r/releases/tag/v1.0.0"}"#;
        let release: Release = serde_json::from_str(json).unwrap();
        assert_eq!(release.tag_name, "v1.0.0");
        assert_eq!(release.author.unwrap().login, "octocat");
        assert_eq!(
            release.published_at.unwrap().to_rfc3339(),
            "2026-11-26T09:01:00+00:00"
        );
    }
}
