//! The IAM policies shipped in `iam/` against the code: every AWS SDK operation
//! `envelope-runner` and `envelope-agent` call is allowed, and every action the policies
//! allow is called or listed in `exceptions.rs` with the reason a run needs it. A new SDK call
//! whose action the policies lack, or a privilege nothing uses any more, fails here.
//!
//! The operations come from the SDK crates' own sources (`catalog`), the calls from the
//! programs' compiled files (`sources`, `rust_text`, `calls`), the grants from `iam/*.json`
//! (`policy`); `check` compares them.
// Test code: a failed `unwrap` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod calls;
mod catalog;
mod check;
mod exceptions;
mod policy;
mod rust_text;
mod sources;

use std::path::{Path, PathBuf};

use catalog::Catalog;
use check::compare;
use sources::Sources;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn load(root: &Path) -> (Sources, Catalog) {
    let sources = Sources::load(root).unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    let catalog = Catalog::load(root).unwrap_or_else(|problem| panic!("{problem}"));
    (sources, catalog)
}

#[test]
fn iam_policies_allow_every_aws_call_and_nothing_more() {
    let root = workspace();
    let (sources, catalog) = load(&root);
    let outcome = compare(&root, &sources, &catalog);
    println!("actions the code needs, and where:");
    for (action, sites) in &outcome.needs {
        println!("  {action}: {}", sites.join(", "));
    }
    println!("differences with a reason:");
    for note in &outcome.notes {
        println!("  {note}");
    }
    assert!(
        outcome.problems.is_empty(),
        "the IAM policies in iam/ and the code disagree:\n- {}",
        outcome.problems.join("\n- ")
    );
    // The scan sees the calls every part of a run makes; an empty scan would agree with
    // any policy.
    for action in [
        "sts:GetCallerIdentity",
        "ecr:GetAuthorizationToken",
        "ecs:RegisterTaskDefinition",
        "ecs:RunTask",
        "ecs:UpdateService",
        "logs:GetLogEvents",
        "sns:Publish",
        "secretsmanager:GetSecretValue",
        "ssm:GetParameter",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ] {
        assert!(
            outcome.needs.contains_key(action),
            "the scan did not find the call behind {action}: {:?}",
            outcome.needs.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn iam_check_fails_when_a_copy_of_a_source_file_gains_a_call() {
    let root = workspace();
    let (sources, catalog) = load(&root);
    let sample = "runner/src/exec/ecs/deploy/update.rs";
    let original = std::fs::read_to_string(root.join(sample)).unwrap();
    let fresh = || sources.clone();

    let added = format!(
        "{original}\nasync fn remove(aws: &EcsAws, cluster: &str, name: &str) {{\n    let _ = aws\n        .ecs()\n        .delete_service()\n        .cluster(cluster)\n        .service(name)\n        .send()\n        .await;\n}}\n"
    );
    let line = original.lines().count() + 5;
    let outcome = compare(&root, &fresh().with_file(sample, &added), &catalog);
    assert!(
        outcome.problems.iter().any(|problem| problem
            .starts_with("ecs:DeleteService is called at")
            && problem.contains(&format!("{sample}:{line}"))),
        "adding DeleteService to {sample} was not reported: {:#?}",
        outcome.problems
    );

    // The same call where the program never makes it: a test module, a comment, a string.
    for (place, snippet) in [
        (
            "a test module",
            "#[cfg(test)]\nmod removal {\n    async fn f(aws: &EcsAws) {\n        aws.ecs().delete_service();\n    }\n}\n",
        ),
        ("a comment", "// aws.ecs().delete_service()\n"),
        (
            "a string",
            "const NOTE: &str = \"aws.ecs().delete_service()\";\n",
        ),
    ] {
        let copy = format!("{original}\n{snippet}");
        let outcome = compare(&root, &fresh().with_file(sample, &copy), &catalog);
        assert!(
            outcome.problems.is_empty(),
            "a call in {place} was taken for a call of the program: {:#?}",
            outcome.problems
        );
    }

    // A client that arrives from elsewhere: the file names no SDK crate, the call is still
    // reported rather than skipped.
    let stray = "runner/src/exec/stray.rs";
    let outcome = compare(
        &root,
        &fresh().with_file(
            stray,
            "pub async fn f(store: &Store) {\n    store.client.delete_table();\n}\n",
        ),
        &catalog,
    );
    assert!(
        outcome
            .problems
            .iter()
            .any(|problem| problem.starts_with(&format!("{stray}:2: `.delete_table()`"))),
        "a call on a client of unknown type was skipped: {:#?}",
        outcome.problems
    );

    // A privilege whose only call goes away is reported as unused.
    let logs = "runner/src/exec/ecs/logs.rs";
    let without_logs = std::fs::read_to_string(root.join(logs))
        .unwrap()
        .replace(".get_log_events()", ".log_events_of_nobody()");
    let outcome = compare(&root, &fresh().with_file(logs, &without_logs), &catalog);
    assert!(
        outcome
            .problems
            .iter()
            .any(|problem| problem.contains("grants `logs:GetLogEvents`, which no code calls")),
        "an unused privilege was not reported: {:#?}",
        outcome.problems
    );
}

#[test]
fn iam_placeholders_are_documented_and_distinct() {
    let root = workspace();
    let docs = std::fs::read_to_string(root.join("docs/agent.md")).unwrap();
    let placeholders =
        policy::placeholders(&root).unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    assert!(placeholders.contains_key("ACCOUNT_ID"), "{placeholders:?}");
    for (word, files) in &placeholders {
        assert!(
            docs.contains(&format!("`{word}`")),
            "{} use the placeholder {word}, which docs/agent.md does not explain",
            files.join(", ")
        );
        for other in placeholders.keys() {
            assert!(
                other == word || !other.contains(word.as_str()),
                "the placeholder {word} is part of {other}: replacing one would change the other"
            );
        }
    }
}
