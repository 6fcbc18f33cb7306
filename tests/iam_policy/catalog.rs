//! Every operation of the AWS SDK crates `envelope-runner` and `envelope-agent` depend on, read
//! from those crates' own sources (`cargo metadata` says where they are): the method a client
//! offers (`describe_services`, `wait_until_services_stable`) and the operation it sends
//! (`DescribeServices`), which is the IAM action's name after the service's prefix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace packages whose calls are checked.
const CALLERS: &[&str] = &["envelope-runner", "envelope-agent"];

/// The IAM prefix of each SDK crate's service. A crate missing here fails the test: its
/// actions could not be named.
const IAM_PREFIXES: &[(&str, &str)] = &[
    ("aws-sdk-cloudwatch", "cloudwatch"),
    ("aws-sdk-cloudwatchlogs", "logs"),
    ("aws-sdk-dynamodb", "dynamodb"),
    ("aws-sdk-ecr", "ecr"),
    ("aws-sdk-ecs", "ecs"),
    ("aws-sdk-elasticloadbalancingv2", "elasticloadbalancing"),
    ("aws-sdk-secretsmanager", "secretsmanager"),
    ("aws-sdk-sns", "sns"),
    ("aws-sdk-sqs", "sqs"),
    ("aws-sdk-ssm", "ssm"),
    ("aws-sdk-sts", "sts"),
];

/// One operation a client method sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The crate as code names it: `aws_sdk_ecs`.
    pub krate: String,
    /// The operation: `DescribeServices`.
    pub name: String,
    /// The service's IAM prefix: `ecs`.
    pub prefix: String,
}

impl Operation {
    /// `ecs:DescribeServices`.
    pub fn action(&self) -> String {
        format!("{}:{}", self.prefix, self.name)
    }
}

#[derive(Default)]
pub struct Catalog {
    by_method: BTreeMap<String, Vec<Operation>>,
}

impl Catalog {
    /// The operations of every SDK crate the callers depend on.
    pub fn load(workspace: &Path) -> Result<Catalog, String> {
        let mut catalog = Catalog::default();
        for (krate, package, dir) in sdk_crates(workspace)? {
            let prefix = IAM_PREFIXES
                .iter()
                .find(|(name, _)| *name == package)
                .map(|(_, prefix)| (*prefix).to_owned())
                .ok_or_else(|| {
                    format!("{package} has no IAM prefix in tests/iam_policy/catalog.rs: add it to IAM_PREFIXES")
                })?;
            let methods = client_methods(&dir)?;
            if methods.len() < 3 {
                return Err(format!(
                    "found only {} operations in {}: the SDK's source layout changed; update tests/iam_policy/catalog.rs",
                    methods.len(),
                    dir.display()
                ));
            }
            for (method, name) in methods {
                catalog
                    .by_method
                    .entry(method)
                    .or_default()
                    .push(Operation {
                        krate: krate.clone(),
                        name,
                        prefix: prefix.clone(),
                    });
            }
        }
        Ok(catalog)
    }

    /// The operations a method of this name sends, one per SDK crate that has it.
    pub fn operations(&self, method: &str) -> &[Operation] {
        self.by_method.get(method).map_or(&[], Vec::as_slice)
    }
}

/// `(crate name in code, package name, source folder)` of every SDK crate the callers use.
fn sdk_crates(workspace: &Path) -> Result<Vec<(String, String, PathBuf)>, String> {
    let metadata = cargo_metadata(workspace)?;
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|package| Some((package["id"].as_str()?, package)))
        .collect();
    let mut crates = BTreeMap::new();
    for node in metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let caller = node["id"]
            .as_str()
            .and_then(|id| packages.get(id))
            .and_then(|package| package["name"].as_str());
        if !caller.is_some_and(|name| CALLERS.contains(&name)) {
            continue;
        }
        for dependency in node["deps"].as_array().into_iter().flatten() {
            let normal = dependency["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind["kind"].is_null());
            let (Some(krate), Some(package)) = (
                dependency["name"].as_str(),
                dependency["pkg"].as_str().and_then(|id| packages.get(id)),
            ) else {
                continue;
            };
            let name = package["name"].as_str().unwrap_or_default();
            if !normal || !name.starts_with("aws-sdk-") {
                continue;
            }
            let manifest = package["manifest_path"].as_str().unwrap_or_default();
            let dir = Path::new(manifest)
                .parent()
                .map(|dir| dir.join("src"))
                .unwrap_or_default();
            crates.insert(krate.to_owned(), (name.to_owned(), dir));
        }
    }
    if crates.is_empty() {
        return Err(
            "cargo metadata lists no aws-sdk-* dependency of envelope-runner or envelope-agent"
                .into(),
        );
    }
    Ok(crates
        .into_iter()
        .map(|(krate, (package, dir))| (krate, package, dir))
        .collect())
}

/// `cargo metadata` for this machine's platform, offline: the SDK crates were built for this
/// test, so their sources are here.
fn cargo_metadata(workspace: &Path) -> Result<Value, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(Command::new(&rustc).arg("-vV"))?;
    let host = version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .ok_or_else(|| format!("`{rustc} -vV` names no host"))?
        .trim()
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = run(Command::new(&cargo)
        .current_dir(workspace)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(&host))?;
    serde_json::from_str(&output).map_err(|error| format!("cargo metadata: {error}"))
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|error| format!("{command:?}: {error}"))
}

/// `(method, operation)` of every client method in an SDK crate's `src`: the fluent builders
/// of `src/client/*.rs` and the waiters `src/client.rs` declares.
fn client_methods(src: &Path) -> Result<Vec<(String, String)>, String> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
    };
    let mut methods = Vec::new();
    let entries = std::fs::read_dir(src.join("client"))
        .map_err(|error| format!("{}: {error}", src.join("client").display()))?;
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|ext| ext == "rs") {
            methods.extend(fluent_builders(&read(&entry.path())?));
        }
    }
    let client = read(&src.join("client.rs"))?;
    for waiter in waiter_names(&client) {
        let path = src.join("waiters").join(format!("{waiter}.rs"));
        let operation = waited_operation(&read(&path)?)
            .ok_or_else(|| format!("{} names no operation it polls", path.display()))?;
        methods.push((format!("wait_until_{waiter}"), operation));
    }
    Ok(methods)
}

/// `pub fn describe_services(&self) -> crate::operation::describe_services::builders::DescribeServicesFluentBuilder`
/// gives `("describe_services", "DescribeServices")`.
fn fluent_builders(text: &str) -> Vec<(String, String)> {
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.split("pub fn ")
        .skip(1)
        .filter_map(|rest| {
            let (method, rest) = rest.split_once("(&self) -> crate::operation::")?;
            let (_, rest) = rest.split_once("::builders::")?;
            let (operation, _) = rest.split_once("FluentBuilder")?;
            Some((method.to_owned(), operation.to_owned()))
        })
        .collect()
}

/// `fn wait_until_services_stable(&self)` gives `services_stable`.
fn waiter_names(client: &str) -> Vec<String> {
    let mut names: Vec<String> = client
        .split("fn wait_until_")
        .skip(1)
        .filter_map(|rest| Some(rest.split_once("(&self)")?.0.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The operation a waiter polls: `crate::operation::describe_services::DescribeServices::orchestrate`.
fn waited_operation(waiter: &str) -> Option<String> {
    waiter.split("crate::operation::").skip(1).find_map(|rest| {
        let (path, _) = rest.split_once("::orchestrate")?;
        let (_, operation) = path.split_once("::")?;
        Some(operation.to_owned())
    })
}
