//! `run --env-file`: dotenv files read into variables for the run's `${env.NAME}` values,
//! without touching this process's environment.
//!
//! The format is the common dotenv subset: one `KEY=VALUE` a line, an optional `export `
//! before the key, blank lines and `#` comments; a value is bare (a ` #` starts a comment,
//! surrounding spaces go), in single quotes (taken as written) or in double quotes (`\n`,
//! `\t`, `\"`, `\\` escapes). A line that is none of these is an error naming `file:line`.

use std::collections::BTreeMap;
use std::path::Path;

/// A variable read from an env file, and where it was written (`file:line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EnvValue {
    pub value: String,
    pub origin: String,
}

/// Read every file in order into one map; a later file (or line) wins over an earlier one.
/// The error is the whole message: `file:line: what is wrong; what to do`.
pub(super) fn read_all(files: &[impl AsRef<Path>]) -> Result<BTreeMap<String, EnvValue>, String> {
    let mut variables = BTreeMap::new();
    for file in files {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file).map_err(|error| {
            format!(
                "--env-file {}: cannot read it: {error}; check the path",
                file.display()
            )
        })?;
        for (name, value, line) in parse(&text)
            .map_err(|(line, problem)| format!("{}:{line}: {problem}", file.display()))?
        {
            let origin = format!("{}:{line}", file.display());
            variables.insert(name, EnvValue { value, origin });
        }
    }
    Ok(variables)
}

/// One `KEY=VALUE` line: the name, the value and the line number.
type Assignment = (String, String, usize);

/// Every assignment in `text`, or `(line, problem)` of the first bad line.
fn parse(text: &str) -> Result<Vec<Assignment>, (usize, String)> {
    let mut found = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let statement = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, value)) = statement.split_once('=') else {
            return Err((
                line,
                "expected `KEY=VALUE` (or a `# comment`); this line has no `=`".into(),
            ));
        };
        let name = name.trim();
        if !crate::pipeline::names::is_env_name(name) {
            return Err((
                line,
                format!(
                    "`{name}` is not a variable name: use letters, digits and `_`, not starting with a digit"
                ),
            ));
        }
        let value = unquote(value.trim_start()).map_err(|problem| (line, problem))?;
        found.push((name.to_owned(), value, line));
    }
    Ok(found)
}

/// The value of a `KEY=` right-hand side (leading spaces already gone).
fn unquote(written: &str) -> Result<String, String> {
    let mut chars = written.chars();
    match chars.next() {
        Some('\'') => {
            let rest = chars.as_str();
            let end = rest.find('\'').ok_or("the single quote is never closed")?;
            trailing_comment_only(&rest[end + 1..])?;
            Ok(rest[..end].to_owned())
        }
        Some('"') => {
            let mut value = String::new();
            let mut escaped = false;
            for (offset, c) in chars.by_ref().enumerate() {
                match (escaped, c) {
                    (true, 'n') => value.push('\n'),
                    (true, 't') => value.push('\t'),
                    (true, other) => value.push(other),
                    (false, '\\') => {}
                    (false, '"') => {
                        let rest = &written[1..].chars().skip(offset + 1).collect::<String>();
                        trailing_comment_only(rest)?;
                        return Ok(value);
                    }
                    (false, other) => value.push(other),
                }
                escaped = !escaped && c == '\\';
            }
            Err("the double quote is never closed (values span one line)".into())
        }
        _ => {
            let value = match written.find(" #") {
                Some(comment) => &written[..comment],
                None => written,
            };
            Ok(value.trim_end().to_owned())
        }
    }
}

/// After a quoted value only spaces and a `# comment` may follow.
fn trailing_comment_only(rest: &str) -> Result<(), String> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!(
            "unexpected `{rest}` after the quoted value; quote the whole value"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|(name, value, _)| (name, value))
            .collect()
    }

    #[test]
    fn reads_the_common_dotenv_forms() {
        let text = "# settings\n\nGREETING=hello world\nexport STAGE = prod # the stage\nSINGLE='a \"b\" # c'\nDOUBLE=\"line\\none \\\"q\\\"\" # note\nEMPTY=\nHASH=a#b\n";
        assert_eq!(
            values(text),
            [
                ("GREETING", "hello world"),
                ("STAGE", "prod"),
                ("SINGLE", "a \"b\" # c"),
                ("DOUBLE", "line\none \"q\""),
                ("EMPTY", ""),
                ("HASH", "a#b"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        for (text, line, problem) in [
            ("A=1\nnot an assignment\n", 2, "has no `=`"),
            ("# c\n1ABC=x\n", 2, "`1ABC` is not a variable name"),
            ("A='open\n", 1, "single quote is never closed"),
            ("\n\nA=\"open\n", 3, "double quote is never closed"),
            ("A=\"x\" y\n", 1, "unexpected `y` after the quoted value"),
        ] {
            let (at, message) = parse(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(message.contains(problem), "{text:?}: {message}");
        }
    }

    #[test]
    fn files_are_read_in_order_and_errors_say_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("base.env");
        let second = dir.path().join("local.env");
        std::fs::write(&first, "A=1\nB=2\n").unwrap();
        std::fs::write(&second, "B=3\n").unwrap();
        let read = read_all(&[&first, &second]).unwrap();
        assert_eq!(read["A"].value, "1");
        assert_eq!(read["B"].value, "3");
        assert_eq!(read["B"].origin, format!("{}:1", second.display()));

        std::fs::write(&second, "B=3\noops\n").unwrap();
        let error = read_all(&[&first, &second]).unwrap_err();
        assert!(
            error.starts_with(&format!("{}:2: ", second.display())),
            "{error}"
        );
        let missing = dir.path().join("missing.env");
        let error = read_all(&[&missing]).unwrap_err();
        assert!(error.contains("cannot read it"), "{error}");
    }
}
