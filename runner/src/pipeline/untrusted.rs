//! Values that come from outside the project: the release tag, git ref and branch a run is
//! asked to build. Whoever can publish a release or push a branch chooses them, and they end
//! up in image tags, build arguments, labels, migration commands and the buildspec's
//! environment, so before a run plans anything they must be made of a small set of characters
//! no shell, argument parser or image reference treats specially.

use std::fmt;

/// The characters a release tag, git ref or branch may hold, for messages and docs.
pub const ALLOWED: &str = "ASCII letters, digits, `.`, `_`, `-`, `/` and `+`, not starting with `-`, `.` or `/`, \
     at most 255 characters";

/// The longest value accepted (git's own limit on a ref name component is 255 bytes).
pub const MAX_LEN: usize = 255;

/// A value from outside that may not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {what} {shown} ({variable}) cannot be used: {problem}; release tags, refs and branches \
     may hold only {allowed}. Nothing was run: publish the release (or push the branch) under a \
     name made of these characters",
    allowed = ALLOWED
)]
pub struct UnsafeValue {
    /// `release tag`, `git ref`, `branch`.
    pub what: &'static str,
    /// `${release.tag}`…
    pub variable: &'static str,
    /// The value as it came, with control characters escaped, in backquotes.
    pub shown: String,
    pub problem: String,
}

/// Check one value.
pub fn check(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".into());
    }
    if value.len() > MAX_LEN {
        return Err(format!("it is {} characters long", value.chars().count()));
    }
    if let Some((index, bad)) = value.chars().enumerate().find(|(_, c)| !is_allowed(*c)) {
        return Err(format!(
            "character {} is {}",
            index + 1,
            Shown(&bad.to_string())
        ));
    }
    if let Some(first) = value.chars().next()
        && matches!(first, '-' | '.' | '/')
    {
        return Err(format!("it starts with `{first}`"));
    }
    Ok(())
}

/// Check the trigger's values: the ref itself, and the tag or branch taken from it.
pub fn check_trigger(
    git_ref: &str,
    tag: Option<&str>,
    branch: Option<&str>,
) -> Result<(), UnsafeValue> {
    let fail = |what, variable, value: &str, problem| UnsafeValue {
        what,
        variable,
        shown: Shown(value).to_string(),
        problem,
    };
    if let Some(tag) = tag {
        check(tag).map_err(|problem| fail("release tag", "${release.tag}", tag, problem))?;
    }
    if let Some(branch) = branch {
        check(branch).map_err(|problem| fail("branch", "${git.branch}", branch, problem))?;
    }
    check(git_ref).map_err(|problem| fail("git ref", "${git.ref}", git_ref, problem))
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+')
}

/// A value for a message: in backquotes, control and non-ASCII characters escaped, so that a
/// hostile value cannot rewrite the terminal or forge log lines.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`")?;
        for c in self.0.chars() {
            if c.is_ascii_graphic() || c == ' ' {
                write!(f, "{c}")?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        f.write_str("`")
    }
}

/// A command as approvers read it: the arguments exactly as they will be passed, each quoted
/// the way a POSIX shell would need, so that `[sh, -c, "a b"]` reads `sh -c 'a b'`.
pub fn command_line(arguments: &[String]) -> String {
    arguments
        .iter()
        .map(|argument| match shlex::try_quote(argument) {
            Ok(quoted) => quoted.into_owned(),
            // A NUL byte cannot be quoted for a shell; show it escaped.
            Err(_) => Shown(argument).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_refs_and_refuses_the_rest() {
        let good = [
            "v1.2.3",
            "v1.2.3-rc.1",
            "v1.2.3+build.7",
            "main",
            "feature/login_form",
            "refs/tags/v1.0.0",
            "refs/heads/release/2026-11",
            "refs/pull/42/merge",
            "HEAD",
            "0123456789abcdef0123456789abcdef01234567",
        ];
        for value in good {
            assert_eq!(check(value), Ok(()), "{value}");
        }
        let bad = [
            ("v1$(touch${IFS}/tmp/pwned)", "character 3 is `$`"),
            ("v1`id`", "character 3 is ```"),
            ("v1;rm -rf /", "character 3 is `;`"),
            ("v1 2", "character 3 is ` `"),
            ("v1\n2", "character 3 is `\\n`"),
            ("v1\u{1b}[31m", "character 3 is `\\u{1b}`"),
            ("v1'x'", "character 3 is `'`"),
            ("v1\"x", "character 3 is `\"`"),
            ("v1|x", "character 3 is `|`"),
            ("v1&x", "character 3 is `&`"),
            ("v1>x", "character 3 is `>`"),
            ("v1*", "character 3 is `*`"),
            ("v1é", "character 3 is `\\u{e9}`"),
            ("--upload-pack", "it starts with `-`"),
            ("/etc", "it starts with `/`"),
            (".hidden", "it starts with `.`"),
            ("", "it is empty"),
        ];
        for (value, expected) in bad {
            assert_eq!(check(value), Err(expected.to_string()), "{value:?}");
        }
        assert!(check(&"a".repeat(MAX_LEN)).is_ok());
        assert!(check(&"a".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn names_the_variable_the_value_and_the_allowed_set() {
        let tag = "v1$(touch${IFS}/tmp/pwned)";
        let error = check_trigger(tag, Some(tag), None).unwrap_err();
        let message = error.to_string();
        for expected in [
            "the release tag `v1$(touch${IFS}/tmp/pwned)` (${release.tag}) cannot be used",
            "character 3 is `$`",
            ALLOWED,
            "Nothing was run",
        ] {
            assert!(message.contains(expected), "{expected} in {message}");
        }
        let error = check_trigger("main;x", None, Some("main;x")).unwrap_err();
        assert_eq!(error.variable, "${git.branch}");
        let error = check_trigger("a\u{1b}b", None, None).unwrap_err();
        assert_eq!(error.shown, "`a\\u{1b}b`");
        assert!(check_trigger("refs/tags/v1.0.0", Some("v1.0.0"), None).is_ok());
    }

    #[test]
    fn shows_commands_argument_by_argument() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&args(&["php", "artisan", "migrate", "--force"])),
            "php artisan migrate --force"
        );
        assert_eq!(
            command_line(&args(&["sh", "-c", "migrate --tag=v1.2.3 && echo done"])),
            "sh -c 'migrate --tag=v1.2.3 && echo done'"
        );
        assert_eq!(command_line(&args(&["echo", "it's"])), r#"echo "it's""#);
    }
}
