//! Where the shipped policies differ from "exactly one action per SDK call", each with its
//! reason: privileges used through another path than an SDK call, operations left out on
//! purpose (with a check that the reason still holds), method calls that only share an SDK
//! operation's name, and the actions that cannot be limited to a resource. An entry that no
//! longer applies fails the check, so this list cannot rot either.

use std::path::Path;

use crate::sources::Sources;

/// A policy action that no SDK call names, and why a run needs it.
pub struct GrantedWithoutCall {
    pub action: &'static str,
    pub reason: &'static str,
}

const REGISTRY_PUSH: &str = "the Docker daemon pushes the image through ECR's registry API with the GetAuthorizationToken token; ECR authorizes each registry request as this action";
const REGISTRY_PULL: &str = "BuildKit pulls the `cache_from` images, the daemon mounts layers across repositories and the push is verified by reading the manifest back, all through ECR's registry API, authorized as this action";

pub const GRANTED_WITHOUT_A_CALL: &[GrantedWithoutCall] = &[
    GrantedWithoutCall {
        action: "ecr:BatchCheckLayerAvailability",
        reason: REGISTRY_PUSH,
    },
    GrantedWithoutCall {
        action: "ecr:InitiateLayerUpload",
        reason: REGISTRY_PUSH,
    },
    GrantedWithoutCall {
        action: "ecr:UploadLayerPart",
        reason: REGISTRY_PUSH,
    },
    GrantedWithoutCall {
        action: "ecr:CompleteLayerUpload",
        reason: REGISTRY_PUSH,
    },
    GrantedWithoutCall {
        action: "ecr:PutImage",
        reason: REGISTRY_PUSH,
    },
    GrantedWithoutCall {
        action: "ecr:BatchGetImage",
        reason: REGISTRY_PULL,
    },
    GrantedWithoutCall {
        action: "ecr:GetDownloadUrlForLayer",
        reason: REGISTRY_PULL,
    },
    GrantedWithoutCall {
        action: "ecs:TagResource",
        reason: "RegisterTaskDefinition and RunTask carry the envelope:run and envelope:stage tags; ECS authorizes tags given on creation as ecs:TagResource (the policy limits it to those two creations)",
    },
    GrantedWithoutCall {
        action: "iam:PassRole",
        reason: "RegisterTaskDefinition and RunTask hand the task definition's task role and execution role to ECS (the policy limits it to ecs-tasks.amazonaws.com)",
    },
];

/// An operation the code can call that the policies leave out, why, and a check that the
/// reason still holds.
pub struct Withheld {
    pub action: &'static str,
    pub reason: &'static str,
    /// Given the workspace root and the scanned sources.
    pub still_holds: fn(&Path, &Sources) -> Result<(), String>,
}

pub const WITHHELD: &[Withheld] = &[
    Withheld {
        action: "dynamodb:CreateTable",
        reason: "only `DynamoDbStore::create_table_if_missing` creates the table, and neither program calls it (tests and the store benchmark do); a missing table is reported with the `aws dynamodb create-table` command to run once",
        still_holds: create_table_is_not_called,
    },
    Withheld {
        action: "ecr:CreateRepository",
        reason: "a build stage creates its repository only with `create_repository: true`, which no shipped pipeline sets; the repositories exist already",
        still_holds: no_pipeline_creates_repositories,
    },
];

/// `create_table_if_missing` is named nowhere in the programs' code but where it is defined.
fn create_table_is_not_called(_root: &Path, sources: &Sources) -> Result<(), String> {
    const DEFINED_IN: &str = "runner/src/store/dynamodb/table.rs";
    let callers: Vec<&str> = sources
        .files
        .iter()
        .filter(|file| {
            file.path != DEFINED_IN && file.code.text.contains("create_table_if_missing")
        })
        .map(|file| file.path.as_str())
        .collect();
    if callers.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} call create_table_if_missing, so the programs create tables: grant dynamodb:CreateTable",
            callers.join(", ")
        ))
    }
}

/// No pipeline in `pipelines/` says `create_repository: true`.
fn no_pipeline_creates_repositories(root: &Path, _sources: &Sources) -> Result<(), String> {
    let dir = root.join("pipelines");
    let entries = std::fs::read_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let creates = text.lines().any(|line| {
            let line = line.split('#').next().unwrap_or_default();
            line.contains("create_repository") && line.contains("true")
        });
        if creates {
            return Err(format!(
                "{} sets create_repository: true: grant ecr:CreateRepository on the repository prefix",
                entry.path().display()
            ));
        }
    }
    Ok(())
}

/// A method call that shares an SDK operation's name but is not an AWS call.
pub struct NotAwsCall {
    pub file: &'static str,
    pub method: &'static str,
    pub what: &'static str,
}

pub const NOT_AWS_CALLS: &[NotAwsCall] = &[NotAwsCall {
    file: "runner/src/exec/build/options.rs",
    method: "query",
    what: "`http::Uri::query`: the query string of the daemon's `/build` request",
}];

/// Actions that take no resource (or none narrower than the account), so their statement
/// says `"Resource": "*"`. Any other action under `*` is a privilege wider than it needs to be.
pub const ACCOUNT_WIDE: &[&str] = &[
    "sts:GetCallerIdentity",
    "ecr:GetAuthorizationToken",
    "ecs:DescribeTaskDefinition",
    "ecs:ListTaskDefinitions",
    "ecs:RegisterTaskDefinition",
    "ecs:ListTasks",
    // Elastic Load Balancing's Describe actions support no resource-level permissions.
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
];
