//! Shapes of names users write: pipelines, stages, environment variables, image repositories
//! and tags, git repositories, AWS regions.

use regex::Regex;
use std::sync::LazyLock;

/// A pattern written below; a unit test matches each, so none fails to compile at run time.
fn pattern(text: &str) -> Regex {
    Regex::new(text).expect("the name patterns are valid regular expressions")
}

static PIPELINE_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-z][a-z0-9-]{0,62}$"));
static STAGE_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-z][a-z0-9-]{0,62}$"));
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"));
static REGION: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$"));
static TAG: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"));
/// Docker's repository path component grammar.
static REPOSITORY_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$"));
static GITHUB_REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$"));

pub fn is_pipeline_name(name: &str) -> bool {
    PIPELINE_NAME.is_match(name)
}

pub fn is_stage_name(name: &str) -> bool {
    STAGE_NAME.is_match(name)
}

pub fn is_env_name(name: &str) -> bool {
    ENV_NAME.is_match(name)
}

/// True when an environment variable's name says it holds a secret: one of its `_`-separated
/// words contains TOKEN, SECRET, PASSWORD or PASSWD, or is KEY or ends in APIKEY
/// (`KEYCLOAK_URL` and `MONKEY` are not secrets).
pub fn looks_secret(name: &str) -> bool {
    name.to_ascii_uppercase().split('_').any(|word| {
        word == "KEY"
            || word.ends_with("APIKEY")
            || ["TOKEN", "SECRET", "PASSWORD", "PASSWD"]
                .iter()
                .any(|secret| word.contains(secret))
    })
}

pub fn is_region(name: &str) -> bool {
    REGION.is_match(name)
}

/// An image tag, as the registry accepts it.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("it is empty".into());
    }
    if tag.len() > 128 {
        return Err("it is longer than 128 characters".into());
    }
    if let Some(bad) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        return Err(format!("`{bad}` is not allowed in a tag"));
    }
    if !TAG.is_match(tag) {
        return Err("a tag cannot start with `.` or `-`".into());
    }
    Ok(())
}

/// An image repository name without registry host (`envelope-api`, `team/app`).
pub fn check_repository_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.contains('@') || name.contains(':') {
        return Err("give the repository name only, without a tag, digest or registry".into());
    }
    if name.len() > 255 {
        return Err("it is longer than 255 characters".into());
    }
    for component in name.split('/') {
        if !REPOSITORY_COMPONENT.is_match(component) {
            return Err(format!(
                "`{component}` has characters a repository name cannot have"
            ));
        }
    }
    Ok(())
}

/// A git source: GitHub `owner/repo`, an http(s) or file URL, or an absolute path.
pub fn check_repository(text: &str) -> Result<(), String> {
    if GITHUB_REPOSITORY.is_match(text) {
        return Ok(());
    }
    for scheme in ["https://", "http://", "file://"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            return if rest.is_empty() || rest.contains(char::is_whitespace) {
                Err(format!("`{text}` is not a valid git URL"))
            } else {
                Ok(())
            };
        }
    }
    if text.starts_with('/') {
        return Ok(());
    }
    if text.starts_with("git@") || text.starts_with("ssh://") {
        return Err(format!(
            "`{text}` is an SSH URL; only HTTPS (with a token) and file URLs are supported"
        ));
    }
    Err(format!(
        "`{text}` is neither GitHub `owner/repo` nor a git URL"
    ))
}

/// The clone URL of a repository setting.
pub fn clone_url(repository: &str) -> String {
    if GITHUB_REPOSITORY.is_match(repository) {
        format!("https://github.com/{repository}.git")
    } else {
        repository.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_looking_variable_names() {
        for name in [
            "GITHUB_TOKEN",
            "DB_PASSWORD",
            "API_KEY",
            "stripe_apikey",
            "APP_SECRETS",
            "ADMIN_PASSWD",
        ] {
            assert!(super::looks_secret(name), "{name}");
        }
        for name in [
            "KEYCLOAK_URL",
            "MONKEY",
            "DEPLOY_ENV",
            "API_URL",
            "TOKENIZER_MODEL_PATH_X",
        ] {
            let expected = name.contains("TOKEN");
            assert_eq!(super::looks_secret(name), expected, "{name}");
        }
    }

    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for pattern in [
            &PIPELINE_NAME,
            &STAGE_NAME,
            &ENV_NAME,
            &REGION,
            &TAG,
            &REPOSITORY_COMPONENT,
            &GITHUB_REPOSITORY,
        ] {
            LazyLock::force(pattern);
        }
    }

    #[test]
    fn tags() {
        for good in ["v1.2.3", "latest", "abc1234", "_x", "1.0"] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "v1:2", "has space", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_names() {
        for good in ["envelope-api", "team/app", "a.b_c", "a__b"] {
            assert!(check_repository_name(good).is_ok(), "{good}");
        }
        for bad in ["Envelope", "api:latest", "-api", "a//b", ""] {
            assert!(check_repository_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn git_repositories() {
        assert!(check_repository("epactltd/api").is_ok());
        assert!(check_repository("https://git.example.com/a/b.git").is_ok());
        assert!(check_repository("file:///srv/git/api.git").is_ok());
        assert!(check_repository("git@github.com:a/b.git").is_err());
        assert!(check_repository("not a repo").is_err());
        assert_eq!(
            clone_url("epactltd/api"),
            "https://github.com/epactltd/api.git"
        );
    }

    #[test]
    fn regions() {
        assert!(is_region("eu-west-2"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("europe"));
    }
}
