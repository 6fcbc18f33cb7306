//! References: what a request's branch, tag, ref or sha means, and resolving it to a commit
//! (and its tag or branch) in a mirror.

use git2::{Oid, Repository};

use super::SourceError;
use super::url::RemoteUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reference {
    Commit(Oid),
    /// `refs/...`
    Full(String),
    /// A tag or branch name.
    Name(String),
}

impl Reference {
    pub(super) fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.len() == 40
            && text.bytes().all(|byte| byte.is_ascii_hexdigit())
            && let Ok(oid) = Oid::from_str(text)
        {
            return Reference::Commit(oid);
        }
        if text.starts_with("refs/") {
            Reference::Full(text.to_string())
        } else {
            Reference::Name(text.to_string())
        }
    }

    /// The full ref names this reference may mean, most preferred first. Invalid names (spaces,
    /// `*`, `..`) mean nothing, which also keeps them out of refspecs.
    pub(super) fn candidates(&self) -> Vec<String> {
        let names = match self {
            Reference::Commit(_) => vec![],
            Reference::Full(name) => vec![name.clone()],
            Reference::Name(name) => {
                vec![format!("refs/tags/{name}"), format!("refs/heads/{name}")]
            }
        };
        names
            .into_iter()
            .filter(|name| git2::Reference::is_valid_name(name))
            .collect()
    }

    pub(super) fn not_found(&self, url: &RemoteUrl) -> SourceError {
        let (reference, hint) = match self {
            Reference::Commit(oid) => (
                oid.to_string(),
                "check that the commit was pushed to a branch or tag of this repository",
            ),
            Reference::Full(name) => (name.clone(), "check the ref name"),
            Reference::Name(name) => (name.clone(), "check the release tag or branch name"),
        };
        SourceError::ReferenceNotFound {
            url: url.redacted.clone(),
            reference,
            hint,
        }
    }
}

/// A reference resolved in a mirror.
#[derive(Debug)]
pub(super) struct Resolved {
    pub(super) commit: Oid,
    pub(super) tag: Option<String>,
    pub(super) branch: Option<String>,
}

pub(super) fn resolve(repo: &Repository, reference: &Reference) -> Option<Resolved> {
    if let Reference::Commit(oid) = reference {
        let commit = repo.find_commit(*oid).ok()?.id();
        return Some(Resolved {
            commit,
            tag: tag_pointing_at(repo, commit),
            branch: None,
        });
    }
    let (name, commit) = reference.candidates().into_iter().find_map(|name| {
        let commit = repo.find_reference(&name).ok()?.peel_to_commit().ok()?;
        Some((name, commit.id()))
    })?;
    Some(Resolved {
        commit,
        tag: name.strip_prefix("refs/tags/").map(str::to_string),
        branch: name.strip_prefix("refs/heads/").map(str::to_string),
    })
}

/// The first tag (by name) whose commit is `commit`, so a sha-triggered run still knows its
/// release tag.
fn tag_pointing_at(repo: &Repository, commit: Oid) -> Option<String> {
    let mut names: Vec<String> = repo
        .references_glob("refs/tags/*")
        .ok()?
        .filter_map(Result::ok)
        .filter(|reference| {
            reference
                .peel_to_commit()
                .is_ok_and(|tagged| tagged.id() == commit)
        })
        .filter_map(|reference| {
            Some(
                reference
                    .name()
                    .ok()?
                    .strip_prefix("refs/tags/")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_by_shape() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            Reference::parse(sha),
            Reference::Commit(Oid::from_str(sha).unwrap())
        );
        assert_eq!(
            Reference::parse("refs/pull/7/head"),
            Reference::Full("refs/pull/7/head".into())
        );
        assert_eq!(Reference::parse("v1.2.3"), Reference::Name("v1.2.3".into()));
        assert_eq!(
            Reference::parse("v1.2.3").candidates(),
            ["refs/tags/v1.2.3", "refs/heads/v1.2.3"]
        );
        // Refspec syntax never reaches libgit2 through a reference.
        assert!(Reference::parse("main:evil").candidates().is_empty());
        assert!(Reference::parse("*").candidates().is_empty());
    }
}
