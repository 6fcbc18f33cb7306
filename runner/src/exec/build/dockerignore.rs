//! `.dockerignore` rules, applied exactly the way Docker applies them.
//!
//! No maintained crate implements Docker's rules (checked November 2026: `use-dockerignore` only
//! classifies lines, `buildkit-rs-ignore` is a single 2023 release, and `ignore`/`globset`
//! follow gitignore, which differs: in a .dockerignore `*` does not cross `/`, `abc` matches
//! only at the context root, and `!` can re-include a file under an excluded directory). This
//! is a port of the semantics of moby's `patternmatcher` and its `ignorefile` reader, which the
//! Docker CLI and BuildKit share:
//!
//! - each line is trimmed; lines starting with `#` and blank lines are skipped; a UTF-8 byte
//!   order mark on the first line is dropped;
//! - `!` makes an exception (re-includes); a bare `!` is an error;
//! - the pattern is cleaned like Go's `filepath.Clean` and a leading `/` is dropped, so `/foo`,
//!   `./foo` and `foo/` all mean `foo`;
//! - the glob is Go's `filepath.Match` plus `**`: `*` and `?` never match `/`, `[...]` is a
//!   character class negated by `^`, `\` escapes the next character, `**` matches any number
//!   of directories (including none);
//! - a pattern matches a path when it matches the path itself or any of its parent
//!   directories; the last matching line decides.

use std::fmt;

/// The parsed rules of one ignore file.
#[derive(Debug, Default)]
pub(crate) struct IgnoreRules {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
}

/// A line Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{text}`: {reason}")]
pub(crate) struct InvalidPattern {
    /// 1-based line number in the ignore file.
    pub(crate) line: usize,
    /// The line as written (trimmed).
    pub(crate) text: String,
    pub(crate) reason: &'static str,
}

#[derive(Debug)]
struct Pattern {
    exclusion: bool,
    cleaned: String,
    matcher: Matcher,
}

/// The same four strategies moby's patternmatcher picks between; they decide edge cases (for
/// example `**/foo` matching `foo`), so they are kept rather than compiling everything to a regex.
#[derive(Debug)]
enum Matcher {
    Exact,
    /// `dir/**`: everything starting with `dir/`.
    Prefix(String),
    /// `**/name` or `**name`: everything ending with the rest.
    Suffix(String),
    Regex(regex::Regex),
}

impl IgnoreRules {
    /// Parses the text of a `.dockerignore` file.
    pub(crate) fn parse(text: &str) -> Result<Self, InvalidPattern> {
        let mut rules = IgnoreRules::default();
        for (index, raw) in text.lines().enumerate() {
            let raw = if index == 0 {
                raw.strip_prefix('\u{feff}').unwrap_or(raw)
            } else {
                raw
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason| InvalidPattern {
                line: index + 1,
                text: line.to_owned(),
                reason,
            };
            let (exclusion, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if rest.is_empty() {
                return Err(invalid(
                    "a `!` needs a pattern after it (a bare `!` is not allowed)",
                ));
            }
            let mut cleaned = clean(rest);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            validate_glob(&cleaned).map_err(invalid)?;
            let matcher = compile(&cleaned).map_err(invalid)?;
            rules.has_exceptions |= exclusion;
            rules.patterns.push(Pattern {
                exclusion,
                cleaned,
                matcher,
            });
        }
        Ok(rules)
    }

    /// Whether any rule is an exception (`!pattern`). Without one, an excluded directory can be
    /// skipped whole.
    pub(crate) fn has_exceptions(&self) -> bool {
        self.has_exceptions
    }

    /// Whether `path` (relative to the context root, `/`-separated, no leading `./`) is left out
    /// of the build context. This is patternmatcher's `MatchesOrParentMatches`.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(end) => path[..end].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an exception a kept one.
            if pattern.exclusion != excluded {
                continue;
            }
            let mut matched = pattern.matches(path);
            if !matched && !parents.is_empty() {
                let mut prefix = String::with_capacity(path.len());
                for dir in &parents {
                    if !prefix.is_empty() {
                        prefix.push('/');
                    }
                    prefix.push_str(dir);
                    if pattern.matches(&prefix) {
                        matched = true;
                        break;
                    }
                }
            }
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.cleaned)
    }
}

/// Go's `path/filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The syntax checks Go's `filepath.Match` makes (Docker refuses such a file), plus a backwards
/// class range, which patternmatcher's regex compiler refuses when it first matches.
fn validate_glob(pattern: &str) -> Result<(), &'static str> {
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            // The guard consumes the escaped character.
            '\\' if chars.next().is_none() => {
                return Err("a `\\` at the end escapes nothing");
            }
            '[' => {
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
                let mut ranges = 0;
                loop {
                    if chars.peek() == Some(&']') && ranges > 0 {
                        chars.next();
                        break;
                    }
                    let low = class_char(&mut chars)?;
                    let mut high = low;
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        high = class_char(&mut chars)?;
                    }
                    if high < low {
                        return Err("a character class range runs backwards");
                    }
                    ranges += 1;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// One (possibly escaped) character of a class, as Go's `getEsc` reads it.
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, &'static str> {
    const MALFORMED: &str = "malformed character class (`[...]`)";
    let ch = match chars.next() {
        None | Some('-') | Some(']') => return Err(MALFORMED),
        Some('\\') => chars.next().ok_or(MALFORMED)?,
        Some(ch) => ch,
    };
    // A class must be closed: something has to follow.
    if chars.peek().is_none() {
        return Err(MALFORMED);
    }
    Ok(ch)
}

/// patternmatcher's translation of a glob to a matcher (`Pattern.compile` with `/` separators).
fn compile(pattern: &str) -> Result<Matcher, &'static str> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut in_class = false;
    let mut chars = pattern.chars().peekable();
    let mut first = true;
    while let Some(ch) = chars.next() {
        if in_class {
            // Rust's regex classes know nesting and set operators; Go's do not.
            match ch {
                ']' => {
                    in_class = false;
                    regex.push(']');
                }
                '\\' => {
                    regex.push('\\');
                    if let Some(next) = chars.next() {
                        regex.push(next);
                    }
                }
                '[' | '&' | '~' => {
                    regex.push('\\');
                    regex.push(ch);
                }
                other => regex.push(other),
            }
            first = false;
            continue;
        }
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` means the same as `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // A trailing `**` accepts everything, as in .gitignore.
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    regex.push('\\');
                    regex.push(next);
                    kind = Kind::Regex;
                }
                None => regex.push_str("\\\\"),
            },
            '[' => {
                in_class = true;
                regex.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    regex.push('^');
                }
                kind = Kind::Regex;
            }
            ']' => {
                regex.push_str("\\]");
                kind = Kind::Regex;
            }
            other => regex.push(other),
        }
        first = false;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_owned()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_owned()),
        Kind::Regex => {
            regex.push('$');
            Matcher::Regex(
                regex::Regex::new(&regex)
                    .map_err(|_| "not a valid pattern (bad escape or class)")?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> IgnoreRules {
        IgnoreRules::parse(&patterns.join("\n")).expect("valid patterns")
    }

    /// Single patterns, from moby/patternmatcher's `TestMatches` table. `exact` is whether the
    /// pattern matches the path itself; `with_parents` whether it excludes it (the path or a
    /// parent directory matches).
    #[test]
    fn single_patterns_match_like_moby() {
        #[rustfmt::skip]
        let table: &[(&str, &str, bool, bool)] = &[
            // pattern, path, exact, with_parents
            ("**", "file", true, true),
            ("**", "file/", true, true),
            ("**/", "file", true, true),
            ("**/", "file/", true, true),
            ("**", "/", true, true),
            ("**/", "/", true, true),
            ("**", "dir/file", true, true),
            ("**/", "dir/file", true, true),
            ("**", "dir/file/", true, true),
            ("**/", "dir/file/", true, true),
            ("**/**", "dir/file", true, true),
            ("**/**", "dir/file/", true, true),
            ("dir/**", "dir/file", true, true),
            ("dir/**", "dir/file/", true, true),
            ("dir/**", "dir/dir2/file", true, true),
            ("dir/**", "dir/dir2/file/", true, true),
            ("**/dir", "dir", true, true),
            ("**/dir", "dir/file", false, true),
            ("**/dir2/*", "dir/dir2/file", true, true),
            ("**/dir2/*", "dir/dir2/file/", false, true),
            ("**/dir2/**", "dir/dir2/dir3/file", true, true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true, true),
            ("**file", "file", true, true),
            ("**file", "dir/file", true, true),
            ("**/file", "dir/file", true, true),
            ("**file", "dir/dir/file", true, true),
            ("**/file", "dir/dir/file", true, true),
            ("**/file*", "dir/dir/file", true, true),
            ("**/file*", "dir/dir/file.txt", true, true),
            ("**/file*txt", "dir/dir/file.txt", true, true),
            ("**/file*.txt", "dir/dir/file.txt", true, true),
            ("**/file*.txt*", "dir/dir/file.txt", true, true),
            ("**/**/*.txt", "dir/dir/file.txt", true, true),
            ("**/**/*.txt2", "dir/dir/file.txt", false, false),
            ("**/*.txt", "file.txt", true, true),
            ("**/**/*.txt", "file.txt", true, true),
            ("a**/*.txt", "a/file.txt", true, true),
            ("a**/*.txt", "a/dir/file.txt", true, true),
            ("a**/*.txt", "a/dir/dir/file.txt", true, true),
            ("a/*.txt", "a/dir/file.txt", false, false),
            ("a/*.txt", "a/file.txt", true, true),
            ("a/*.txt**", "a/file.txt", true, true),
            ("a[b-d]e", "ae", false, false),
            ("a[b-d]e", "ace", true, true),
            ("a[b-d]e", "aae", false, false),
            ("a[^b-d]e", "aze", true, true),
            (".*", ".foo", true, true),
            (".*", "foo", false, false),
            ("abc.def", "abcdef", false, false),
            ("abc.def", "abc.def", true, true),
            ("abc.def", "abcZdef", false, false),
            ("abc?def", "abcZdef", true, true),
            ("abc?def", "abcdef", false, false),
            ("**/foo/bar", "foo/bar", true, true),
            ("**/foo/bar", "dir/foo/bar", true, true),
            ("**/foo/bar", "dir/dir2/foo/bar", true, true),
            ("abc/**", "abc", false, false),
            ("abc/**", "abc/def", true, true),
            ("abc/**", "abc/def/ghi", true, true),
            ("**/.foo", ".foo", true, true),
            ("**/.foo", "bar.foo", false, false),
            ("a(b)c/def", "a(b)c/def", true, true),
            ("a(b)c/def", "a(b)c/xyz", false, false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true, true),
            ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true, true),
            ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true, true),
            ("a\\\\", "a\\", true, true),
            ("a\\*b", "a*b", true, true),
            // Docker's documented examples.
            ("*/temp*", "somedir/temporary.txt", true, true),
            ("*/temp*", "somedir/temp", true, true),
            ("*/temp*", "temp", false, false),
            ("*/*/temp*", "somedir/subdir/temporary.txt", true, true),
            ("temp?", "tempa", true, true),
            ("temp?", "tempab", false, false),
            ("/foo/bar", "foo/bar", true, true),
            ("./foo/", "foo/x", false, true),
            ("node_modules", "node_modules/left-pad/index.js", false, true),
            ("node_modules", "src/node_modules", false, false),
            ("*.md", "docs/README.md", false, false),
            ("*", "docs/README.md", false, true),
            // [] with characters Rust's regex treats specially inside a class.
            ("a[&~]b", "a&b", true, true),
            ("a[[]b", "a[b", true, true),
            ("a]b", "a]b", true, true),
        ];
        for &(pattern, path, exact, with_parents) in table {
            let single = rules(&[pattern]);
            assert_eq!(
                single.patterns[0].matches(path),
                exact,
                "pattern {pattern:?} against {path:?} (the path itself)"
            );
            assert_eq!(
                single.excludes(path),
                with_parents,
                "pattern {pattern:?} against {path:?} (with parent directories)"
            );
        }
    }

    #[test]
    fn later_lines_decide_and_exceptions_re_include() {
        #[rustfmt::skip]
        let table: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true),
            (&["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false),
            (&["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs/other.md", true),
            (&["*.md", "!README*.md", "README-secret.md"], "README-secret.md", true),
            (&["*.md", "!README*.md", "README-secret.md"], "README.md", false),
            (&["*.md", "!README*.md", "README-secret.md"], "CHANGES.md", true),
            (&["*", "!src"], "src/main.rs", false),
            (&["*", "!src", "src/**/*.snap"], "src/a/b.snap", true),
        ];
        for &(patterns, path, excluded) in table {
            assert_eq!(
                rules(patterns).excludes(path),
                excluded,
                "patterns {patterns:?} against {path:?}"
            );
        }
    }

    /// Go's `filepath.Match` table as moby's patternmatcher tests run it.
    #[test]
    fn go_filepath_match_table() {
        #[rustfmt::skip]
        let table: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(true)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[x-]", "-", Err(())),
            ("[x-]", "z", Err(())),
            ("[-x]", "x", Err(())),
            ("[-x]", "-", Err(())),
            ("[-x]", "a", Err(())),
            ("\\", "a", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("*x", "xxx", Ok(true)),
            ("[z-a]", "q", Err(())),
        ];
        for &(pattern, path, expected) in table {
            let got = IgnoreRules::parse(pattern).map(|rules| rules.excludes(path));
            assert_eq!(
                got.map_err(|_| ()),
                expected,
                "pattern {pattern:?} against {path:?}"
            );
        }
    }

    #[test]
    fn reads_lines_like_dockers_ignorefile() {
        let text = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n  spaced  \n./dot/./slash/../x/\n";
        let parsed = IgnoreRules::parse(text).expect("valid");
        let shown: Vec<String> = parsed.patterns.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "spaced",
                "dot/x"
            ]
        );
        assert!(parsed.has_exceptions());
        assert!(!rules(&["a", "b"]).has_exceptions());
    }

    #[test]
    fn refuses_what_docker_refuses_with_the_line_number() {
        let error = IgnoreRules::parse("ok\n# fine\n!\n").expect_err("bare ! is refused");
        assert_eq!(error.line, 3);
        assert_eq!(error.text, "!");
        let error = IgnoreRules::parse("node_modules\nsrc/[a-\n").expect_err("bad class");
        assert_eq!(error.line, 2);
        assert_eq!(
            error.to_string(),
            "line 2: `src/[a-`: malformed character class (`[...]`)"
        );
    }

    #[test]
    fn cleans_paths_like_go() {
        for (input, cleaned) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a", "a"),
            ("a//b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
            ("a/..", "."),
        ] {
            assert_eq!(clean(input), cleaned, "clean({input:?})");
        }
    }
}
