//! The AWS calls in the compiled sources and the IAM actions they need.
//!
//! An SDK client starts every call with a method that takes no argument and is named after
//! the operation (`.describe_services()`, `.get_item()`), so every `.name()` whose name is an
//! operation of an SDK crate is a candidate. It is that crate's call when the file names the
//! crate (`aws_sdk_ecs::…`, `use aws_sdk_dynamodb::Client`), or the file is a submodule whose
//! directory's `mod.rs` names it (the module's client type, used as `self.client` in its
//! submodules), and no other named crate has the operation. A candidate the file's crates do not explain is reported unless it is listed as
//! not an AWS call, so a call on a client that arrived from elsewhere is never skipped.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Catalog, Operation};
use crate::exceptions::NOT_AWS_CALLS;
use crate::sources::Sources;

/// Where a call is: `file:line`.
pub type Site = String;

/// The actions the sources need, each with the calls that need it, what could not be
/// decided, and the calls set aside as not AWS calls (with what they are).
#[derive(Default)]
pub struct Needs {
    pub actions: BTreeMap<String, Vec<Site>>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// The IAM actions every SDK call in `sources` needs.
pub fn needed_actions(sources: &Sources, catalog: &Catalog) -> Needs {
    let mut needs = Needs::default();
    let mut explained: BTreeSet<(&str, &str)> = BTreeSet::new();
    for file in &sources.files {
        let crates = crates_of(file, sources);
        for (offset, method) in method_calls(&file.code.text) {
            let candidates = catalog.operations(&method);
            if candidates.is_empty() {
                continue;
            }
            let site = format!("{}:{}", file.path, line_of(&file.code.text, offset));
            let named: Vec<&Operation> = candidates
                .iter()
                .filter(|operation| crates.contains(&operation.krate))
                .collect();
            match named.as_slice() {
                [operation] => {
                    for action in actions_of(operation, sources) {
                        needs.actions.entry(action).or_default().push(site.clone());
                    }
                }
                [] => {
                    let listed = NOT_AWS_CALLS
                        .iter()
                        .find(|call| call.file == file.path && call.method == method);
                    match listed {
                        Some(call) => {
                            if explained.insert((call.file, call.method)) {
                                needs.notes.push(format!(
                                    "{site}: `.{method}()` is not an AWS call: {}",
                                    call.what
                                ));
                            }
                        }
                        None => needs.problems.push(format!(
                            "{site}: `.{method}()` is the {} operation of {}, but the file names none of those crates: if it is an AWS call, name the client's crate in the file (`use {}::Client`); if it is not, list it in NOT_AWS_CALLS in tests/iam_policy/exceptions.rs with what it is",
                            candidates[0].name,
                            crate_list(candidates),
                            candidates[0].krate,
                        )),
                    }
                }
                several => needs.problems.push(format!(
                    "{site}: `.{method}()` could be {} (the file names all of them): move the call to a file that names only its client's crate",
                    several
                        .iter()
                        .map(|operation| operation.action())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )),
            }
        }
    }
    for call in NOT_AWS_CALLS {
        if !explained.contains(&(call.file, call.method)) {
            needs.problems.push(format!(
                "NOT_AWS_CALLS lists `.{}()` in {}, which the file no longer calls: remove the entry",
                call.method, call.file
            ));
        }
    }
    needs
}

fn crate_list(operations: &[Operation]) -> String {
    operations
        .iter()
        .map(|operation| operation.krate.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The IAM actions an operation needs. DynamoDB's transactions are not IAM actions of their
/// own: each item is authorized as the single-item action it performs.
fn actions_of(operation: &Operation, sources: &Sources) -> Vec<String> {
    match (operation.prefix.as_str(), operation.name.as_str()) {
        ("dynamodb", "TransactWriteItems") => transaction_items(sources)
            .into_iter()
            .map(|action| format!("dynamodb:{action}"))
            .collect(),
        ("dynamodb", "TransactGetItems") => vec!["dynamodb:GetItem".to_owned()],
        _ => vec![operation.action()],
    }
}

/// The single-item actions of the transaction items the DynamoDB code builds
/// (`Put::builder()` is a `Put` item, and so on).
fn transaction_items(sources: &Sources) -> BTreeSet<&'static str> {
    const ITEMS: &[(&str, &str)] = &[
        ("Put", "PutItem"),
        ("Update", "UpdateItem"),
        ("Delete", "DeleteItem"),
        ("ConditionCheck", "ConditionCheckItem"),
    ];
    let mut found = BTreeSet::new();
    for file in &sources.files {
        let text = &file.code.text;
        if !crates_named(text).contains("aws_sdk_dynamodb") {
            continue;
        }
        for (item, action) in ITEMS {
            let pattern = format!("{item}::builder()");
            let built = text.match_indices(&pattern).any(|(at, _)| {
                !text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
            });
            if built {
                found.insert(*action);
            }
        }
    }
    found
}

/// The `aws_sdk_*` crates a file's code names, with those its module's `mod.rs` names when
/// it is another file of that module's directory.
fn crates_of(file: &crate::sources::SourceFile, sources: &Sources) -> BTreeSet<String> {
    let mut crates = crates_named(&file.code.text);
    if let Some((dir, name)) = file.path.rsplit_once('/')
        && name != "mod.rs"
    {
        let module = format!("{dir}/mod.rs");
        if let Some(parent) = sources.files.iter().find(|other| other.path == module) {
            crates.extend(crates_named(&parent.code.text));
        }
    }
    crates
}

/// The `aws_sdk_*` crates a file's code names.
pub fn crates_named(code: &str) -> BTreeSet<String> {
    identifiers(code)
        .filter(|(_, word)| word.starts_with("aws_sdk_"))
        .map(|(_, word)| word.to_owned())
        .collect()
}

/// The line (from 1) of a byte offset.
fn line_of(code: &str, offset: usize) -> usize {
    1 + code.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Every `.name()` call without arguments, with the byte offset of its name.
pub fn method_calls(code: &str) -> Vec<(usize, String)> {
    let mut calls = Vec::new();
    for (start, word) in identifiers(code) {
        let before = code[..start].trim_end();
        if !before.ends_with('.') || before.ends_with("..") {
            continue;
        }
        let after = code[start + word.len()..].trim_start();
        let Some(arguments) = after.strip_prefix('(') else {
            continue;
        };
        if !arguments.trim_start().starts_with(')') {
            continue;
        }
        calls.push((start, word.to_owned()));
    }
    calls
}

/// Identifiers with their byte offsets.
fn identifiers(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_ident = |c: char| c == '_' || c.is_ascii_alphanumeric();
    code.char_indices()
        .filter(move |&(at, c)| {
            (c == '_' || c.is_ascii_alphabetic())
                && !code[..at].chars().next_back().is_some_and(is_ident)
        })
        .map(move |(at, _)| {
            let end = code[at..]
                .find(|c: char| !is_ident(c))
                .map_or(code.len(), |len| at + len);
            (at, &code[at..end])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_without_arguments_are_found_across_lines() {
        let code = "let a = self.aws\n    .ecs()\n    .describe_services()\n    .cluster(c);\nx.len(1); 0..max(); y . query ( );";
        let calls: Vec<(usize, String)> = method_calls(code)
            .into_iter()
            .map(|(offset, method)| (line_of(code, offset), method))
            .collect();
        assert_eq!(
            calls,
            vec![
                (2, "ecs".to_owned()),
                (3, "describe_services".to_owned()),
                (5, "query".to_owned()),
            ]
        );
    }

    #[test]
    fn crates_are_named_by_paths_and_uses() {
        let code = "use aws_sdk_dynamodb::Client;\nlet c = aws_sdk_ecs::Client::new(&config); my_aws_sdk_x();";
        assert_eq!(
            crates_named(code),
            BTreeSet::from(["aws_sdk_dynamodb".to_owned(), "aws_sdk_ecs".to_owned()])
        );
    }

    #[test]
    fn a_submodule_has_the_crates_its_mod_rs_names() {
        let sources = Sources { files: Vec::new() }
            .with_file("src/store/mod.rs", "use aws_sdk_dynamodb::Client;")
            .with_file("src/store/items.rs", "self.client.put_item()")
            .with_file("src/other.rs", "self.client.put_item()")
            .with_file("src/store/deeper/mod.rs", "self.client.put_item()");
        let crates = |path: &str| {
            let file = sources.files.iter().find(|f| f.path == path).unwrap();
            crates_of(file, &sources)
        };
        let dynamodb = BTreeSet::from(["aws_sdk_dynamodb".to_owned()]);
        assert_eq!(crates("src/store/items.rs"), dynamodb);
        assert_eq!(crates("src/other.rs"), BTreeSet::new());
        assert_eq!(crates("src/store/deeper/mod.rs"), BTreeSet::new());
    }
}
