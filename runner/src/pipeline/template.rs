//! `${...}` variables inside pipeline strings.
//!
//! A template is parsed once; each variable is checked against the catalogue at validate
//! time (unknown names and variables used before they exist are errors then, not at run
//! time) and substituted at plan or run time. `$${` writes a literal `${`.

use std::fmt;

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// A variable and the byte offset of its `${` in the original string.
    Variable {
        name: String,
        offset: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// Split a string into literals and variables.
pub fn parse(text: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(index) = rest.find('$') {
        literal.push_str(&rest[..index]);
        let after = &rest[index..];
        if let Some(escaped) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = escaped;
            consumed += index + 3;
        } else if let Some(inner) = after.strip_prefix("${") {
            let offset = consumed + index;
            let Some(end) = inner.find('}') else {
                return Err(TemplateError {
                    offset,
                    message: "`${` is never closed: add `}` after the variable name".into(),
                });
            };
            let name = inner[..end].trim();
            if name.is_empty() || !name.chars().all(is_name_char) {
                return Err(TemplateError {
                    offset,
                    message: format!(
                        "`${{{}}}` is not a variable name: names are letters, digits, `_` and `.`, \
                         like `${{git.sha}}`",
                        &inner[..end]
                    ),
                });
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Variable {
                name: name.to_owned(),
                offset,
            });
            rest = &inner[end + 1..];
            consumed = offset + 2 + end + 1;
        } else {
            literal.push('$');
            rest = &after[1..];
            consumed += index + 1;
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

/// When a variable gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Known before any stage runs (trigger, run, pipeline, AWS settings, environment).
    Always,
    /// Known once the named build stage has pushed its image.
    AfterBuild(String),
}

/// A variable the catalogue knows, or why it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Availability),
    UnknownEnv(String),
    Unknown { suggestion: Option<String> },
}

/// Variables that exist whatever the pipeline says.
pub const FIXED: &[(&str, &str)] = &[
    (
        "release.tag",
        "the release tag that triggered the run (for example v1.2.3)",
    ),
    (
        "release.version",
        "the release tag, or the short commit sha when the run builds a branch or a commit",
    ),
    (
        "git.ref",
        "the branch, tag or sha the run was asked to build",
    ),
    ("git.sha", "the full 40-character commit sha"),
    ("git.short_sha", "the first 7 characters of the commit sha"),
    ("git.branch", "the branch, when the run builds a branch"),
    ("run.id", "the run id"),
    ("pipeline.name", "the pipeline's name"),
    ("aws.region", "the AWS region"),
    ("aws.account", "the AWS account id"),
    ("aws.registry", "the image registry host"),
];

/// Build outputs: `${build.digest}` (the one build stage) or `${<stage>.digest}` by name.
pub const BUILD_OUTPUTS: &[&str] = &["digest", "image", "repository"];

/// Classify a variable name, given the pipeline's declared environment variables and the
/// names of its build stages.
pub fn lookup(name: &str, env: &[String], build_stages: &[String]) -> Lookup {
    if FIXED.iter().any(|(known, _)| *known == name) {
        return Lookup::Known(Availability::Always);
    }
    if let Some(variable) = name.strip_prefix("env.") {
        return if env.iter().any(|declared| declared == variable) {
            Lookup::Known(Availability::Always)
        } else {
            Lookup::UnknownEnv(variable.to_owned())
        };
    }
    if let Some((stage, output)) = name.rsplit_once('.')
        && BUILD_OUTPUTS.contains(&output)
        && build_stages.iter().any(|build| build == stage)
    {
        return Lookup::Known(Availability::AfterBuild(stage.to_owned()));
    }
    let mut candidates: Vec<String> = FIXED.iter().map(|(n, _)| n.to_string()).collect();
    for build in build_stages {
        for output in BUILD_OUTPUTS {
            candidates.push(format!("{build}.{output}"));
        }
    }
    for declared in env {
        candidates.push(format!("env.{declared}"));
    }
    let suggestion =
        crate::pipeline::diagnostic::suggest(name, candidates.iter().map(|c| c.as_str()))
            .map(str::to_owned);
    Lookup::Unknown { suggestion }
}

/// Substitute variables; `resolve` returns `None` for a variable with no value yet, which is
/// kept as a visible placeholder such as `<git.sha>`.
/// Whether `text` reads the variable `name` (a text that does not parse reads nothing).
pub fn uses(text: &str, name: &str) -> bool {
    parse(text).is_ok_and(|parts| {
        parts
            .iter()
            .any(|part| matches!(part, Part::Variable { name: used, .. } if used == name))
    })
}

pub fn render(parts: &[Part], resolve: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Literal(text) => out.push_str(text),
            Part::Variable { name, .. } => match resolve(name) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push('<');
                    out.push_str(name);
                    out.push('>');
                }
            },
        }
    }
    out
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Literal(text) => f.write_str(text),
            Part::Variable { name, .. } => write!(f, "${{{name}}}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, offset: usize) -> Part {
        Part::Variable {
            name: name.into(),
            offset,
        }
    }

    #[test]
    fn parses_literals_variables_and_escapes() {
        let cases: &[(&str, Vec<Part>)] = &[
            ("plain", vec![Part::Literal("plain".into())]),
            ("${git.sha}", vec![var("git.sha", 0)]),
            (
                "v-${release.tag}-x",
                vec![
                    Part::Literal("v-".into()),
                    var("release.tag", 2),
                    Part::Literal("-x".into()),
                ],
            ),
            (
                "$${HOME} costs $5",
                vec![Part::Literal("${HOME} costs $5".into())],
            ),
            ("${a.b}${c}", vec![var("a.b", 0), var("c", 6)]),
        ];
        for (input, expected) in cases {
            assert_eq!(&parse(input).unwrap(), expected, "input {input:?}");
        }
    }

    #[test]
    fn rejects_unclosed_and_empty_variables() {
        assert_eq!(parse("x ${git.sha").unwrap_err().offset, 2);
        assert!(parse("${}").is_err());
        assert!(parse("${a b}").is_err());
    }

    #[test]
    fn classifies_variables() {
        let env = vec!["DEPLOY_NOTE".to_string()];
        let builds = vec!["build".to_string()];
        assert_eq!(
            lookup("git.sha", &env, &builds),
            Lookup::Known(Availability::Always)
        );
        assert_eq!(
            lookup("build.digest", &env, &builds),
            Lookup::Known(Availability::AfterBuild("build".into()))
        );
        assert_eq!(
            lookup("env.DEPLOY_NOTE", &env, &builds),
            Lookup::Known(Availability::Always)
        );
        assert_eq!(
            lookup("env.HOME", &env, &builds),
            Lookup::UnknownEnv("HOME".into())
        );
        assert_eq!(
            lookup("git.shaa", &env, &builds),
            Lookup::Unknown {
                suggestion: Some("git.sha".into())
            }
        );
    }

    #[test]
    fn renders_with_placeholders_for_unknown_values() {
        let parts = parse("${image}:${git.sha}").unwrap();
        let out = render(&parts, &|name| (name == "image").then(|| "api".to_string()));
        assert_eq!(out, "api:<git.sha>");
    }
}
