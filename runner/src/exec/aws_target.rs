//! Which AWS region and account a run acts on, settled once before anything reaches Docker,
//! a registry, ECS or SNS.
//!
//! Region, first found wins: `--region`, the region a resumed run recorded, the pipeline's
//! `aws.region`, `envelope.yaml`'s `aws.region`, then the AWS SDK's own chain (`AWS_REGION`,
//! `AWS_DEFAULT_REGION`, the profile, the instance metadata on EC2).
//! Account: the pipeline's or `envelope.yaml`'s `aws.account`, the one a resumed run recorded,
//! else STS `GetCallerIdentity` with the run's credentials, asked only when a step that will
//! run names the account (an ECR registry host, an SNS topic, `${aws.account}`).

use crate::plan::{Plan, Step};

/// The placeholders `plan` leaves where the region or account is unknown.
pub const ACCOUNT_PLACEHOLDER: &str = "<aws.account>";
pub const REGION_PLACEHOLDER: &str = "<aws.region>";

/// Why the run's AWS region or account could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum AwsTargetError {
    #[error(
        "no AWS region for pipeline `{pipeline}`: give --region, set `aws: {{ region: … }}` in the \
         pipeline or envelope.yaml, or set AWS_REGION"
    )]
    NoRegion { pipeline: String },
    #[error(
        "cannot learn the AWS account (STS GetCallerIdentity): {detail}; set `aws: {{ account: \
         \"123456789012\" }}` in the pipeline or envelope.yaml, or give the run working AWS \
         credentials"
    )]
    Identity { detail: String },
}

impl AwsTargetError {
    /// A missing region is the input's fault; an unanswered STS call is the environment's.
    pub fn is_environment(&self) -> bool {
        matches!(self, AwsTargetError::Identity { .. })
    }
}

/// The region a run uses, by the precedence above; `None` when nothing names one.
pub async fn resolve_region(
    flag: Option<&str>,
    recorded: Option<&str>,
    configured: Option<&str>,
) -> Option<String> {
    if let Some(region) = flag.or(recorded).or(configured) {
        return Some(region.to_owned());
    }
    aws_config::meta::region::RegionProviderChain::default_provider()
        .region()
        .await
        .map(|region| region.to_string())
}

/// Whether any step this run will execute (or its end-of-run notification) still names the
/// unknown account: the steps that need AWS in a cloud run; in a `--local` run nothing (images
/// are tagged locally or for the `--registry` given, nothing is notified, and no gate, task or
/// service is touched).
pub fn steps_naming(plan: &Plan, placeholder: &str, local: bool) -> Vec<String> {
    if local {
        return Vec::new();
    }
    let mut naming: Vec<String> = plan
        .steps
        .iter()
        .filter(|step| !matches!(step, Step::Source(_)))
        .filter(|step| serde_json::to_string(step).is_ok_and(|text| text.contains(placeholder)))
        .map(|step| step.name().to_owned())
        .collect();
    // The end-of-run SNS topic (`arn:aws:sns:${aws.region}:${aws.account}:…`) needs it too.
    if plan
        .notify
        .as_ref()
        .and_then(|notify| notify.sns.as_deref())
        .is_some_and(|topic| topic.contains(placeholder))
    {
        naming.push("notify".to_owned());
    }
    naming
}

/// The account of the credentials `config` carries, from STS `GetCallerIdentity`.
pub async fn caller_account(config: &aws_config::SdkConfig) -> Result<String, AwsTargetError> {
    let identity = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|error| AwsTargetError::Identity {
            detail: crate::aws_error::AwsFailure::during(&error, "STS GetCallerIdentity")
                .to_string(),
        })?;
    identity
        .account()
        .filter(|account| !account.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| AwsTargetError::Identity {
            detail: "the answer named no account".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline;
    use crate::plan::{PlanContext, plan};

    fn compiled(aws: &str, stages: &str) -> pipeline::CompiledPipeline {
        let text = format!(
            "source:\n  repository: acme/app\n  tags: [\"v*\"]\n{aws}stages:\n  - build:\n      image: app\n{stages}"
        );
        pipeline::compile_text(text)
    }

    fn context() -> PlanContext {
        PlanContext {
            git_ref: "v1.2.3".into(),
            ..PlanContext::default()
        }
    }

    #[tokio::test]
    async fn the_flag_beats_the_record_which_beats_the_files() {
        let all = resolve_region(Some("us-east-1"), Some("eu-west-1"), Some("eu-west-2")).await;
        assert_eq!(all.as_deref(), Some("us-east-1"));
        let recorded = resolve_region(None, Some("eu-west-1"), Some("eu-west-2")).await;
        assert_eq!(recorded.as_deref(), Some("eu-west-1"));
        let configured = resolve_region(None, None, Some("eu-west-2")).await;
        assert_eq!(configured.as_deref(), Some("eu-west-2"));
    }

    #[test]
    fn an_unknown_account_is_found_in_the_registry_host_and_the_topic() {
        let compiled = compiled(
            "aws:\n  region: eu-west-2\n",
            "  - approval:\n      notify:\n        sns: arn:aws:sns:${aws.region}:${aws.account}:deploys\n",
        );
        let plan = plan(&compiled, &context()).unwrap();
        assert_eq!(
            steps_naming(&plan, ACCOUNT_PLACEHOLDER, false),
            ["build", "push", "approval"]
        );
        assert!(steps_naming(&plan, ACCOUNT_PLACEHOLDER, true).is_empty());
        let known = PlanContext {
            account: Some("123456789012".into()),
            ..context()
        };
        let plan = crate::plan::plan(&compiled, &known).unwrap();
        assert!(steps_naming(&plan, ACCOUNT_PLACEHOLDER, false).is_empty());
    }

    #[test]
    fn a_registry_of_its_own_needs_no_account() {
        let compiled = compiled("aws:\n  registry: registry.example.com\n", "");
        let plan = plan(&compiled, &context()).unwrap();
        assert!(steps_naming(&plan, ACCOUNT_PLACEHOLDER, false).is_empty());
        assert!(steps_naming(&plan, REGION_PLACEHOLDER, false).is_empty());
    }
}
