//! The shipped IAM policies in `iam/`: what each permission policy allows and on which
//! resources, and the placeholders (`ACCOUNT_ID`, `CLUSTER` …) every policy file uses.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// The permission policies a role that runs pipelines attaches (all three for the agent).
pub const PERMISSION_POLICIES: &[&str] = &[
    "iam/runner-build-policy.json",
    "iam/runner-deploy-policy.json",
    "iam/runner-store-policy.json",
];

/// One action one statement allows.
pub struct Grant {
    pub action: String,
    /// `file#Sid`, for messages.
    pub statement: String,
    pub resources: Vec<String>,
}

/// Every action the permission policies allow, or what is wrong with them: only `Allow`
/// statements with a `Sid`, named actions (no wildcards, no `NotAction`) and resources.
pub fn grants(root: &Path) -> Result<Vec<Grant>, Vec<String>> {
    let mut grants = Vec::new();
    let mut problems = Vec::new();
    for file in PERMISSION_POLICIES {
        let policy = match read(root, file) {
            Ok(policy) => policy,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for (index, statement) in statements(&policy).iter().enumerate() {
            let sid = statement["Sid"].as_str().unwrap_or_default();
            let at = format!(
                "{file}#{}",
                if sid.is_empty() {
                    index.to_string()
                } else {
                    sid.to_owned()
                }
            );
            if sid.is_empty() {
                problems.push(format!(
                    "{at}: give the statement a Sid saying what it is for"
                ));
            }
            if statement["Effect"] != "Allow"
                || statement.get("NotAction").is_some()
                || statement.get("NotResource").is_some()
            {
                problems.push(format!(
                    "{at}: only Allow statements with Action and Resource belong in these policies"
                ));
            }
            let resources = strings(&statement["Resource"]);
            if resources.is_empty() {
                problems.push(format!("{at}: no Resource"));
            }
            for action in strings(&statement["Action"]) {
                if action.contains('*') || action.contains('?') {
                    problems.push(format!("{at}: `{action}`: name each action, no wildcards"));
                }
                grants.push(Grant {
                    action,
                    statement: at.clone(),
                    resources: resources.clone(),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(grants)
    } else {
        Err(problems)
    }
}

/// Every file in `iam/` and the placeholders its values use: words in capitals
/// (`ACCOUNT_ID`, `REPOSITORY_PREFIX`), outside `Action` and `Sid`.
pub fn placeholders(root: &Path) -> Result<BTreeMap<String, Vec<String>>, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let entries =
        std::fs::read_dir(root.join("iam")).map_err(|error| vec![format!("iam/: {error}")])?;
    let mut files: Vec<String> = entries
        .flatten()
        .map(|entry| format!("iam/{}", entry.file_name().to_string_lossy()))
        .filter(|file| file.ends_with(".json"))
        .collect();
    files.sort();
    for file in files {
        match read(root, &file) {
            Ok(policy) => {
                if policy["Version"] != "2012-10-17" || statements(&policy).is_empty() {
                    problems.push(format!(
                        "{file}: not a policy (Version 2012-10-17 and a Statement)"
                    ));
                }
                let mut values = Vec::new();
                collect_values(&policy, &mut values);
                for value in values {
                    for word in value.split(|c: char| c != '_' && !c.is_ascii_alphanumeric()) {
                        let capitals = word.len() >= 3
                            && word
                                .chars()
                                .all(|c| c == '_' || c.is_ascii_uppercase() || c.is_ascii_digit())
                            && word.chars().any(|c| c.is_ascii_uppercase());
                        if capitals && !found.get(word).is_some_and(|files| files.contains(&file)) {
                            found.entry(word.to_owned()).or_default().push(file.clone());
                        }
                    }
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

fn read(root: &Path, file: &str) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(root.join(file)).map_err(|error| format!("{file}: {error}"))?;
    serde_json::from_str(&text).map_err(|error| format!("{file}: not JSON: {error}"))
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(statements) => statements.clone(),
        Value::Object(_) => vec![policy["Statement"].clone()],
        _ => Vec::new(),
    }
}

/// A string or a list of strings.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Every string value (and condition key) except actions, Sids and the version.
fn collect_values(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_values(item, out)),
        Value::Object(map) => {
            for (key, item) in map {
                if !matches!(key.as_str(), "Action" | "Sid" | "Version" | "Effect") {
                    out.push(key.clone());
                    collect_values(item, out);
                }
            }
        }
        _ => {}
    }
}
