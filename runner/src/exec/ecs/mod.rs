//! ECS: the AWS side of the migrate and deploy stages.
//!
//! - [`taskdef`]: the next task definition revision with the built image swapped in, and the
//!   diff an approval page shows (pure).
//! - [`migrate`]: a one-off task (`php artisan migrate --force`) on the service's network,
//!   judged by its container's exit code and the task's stop code, its log lines streamed.
//! - [`release_diff`]: what a release would change per service, read with Describe calls
//!   only (`diff`, the approval gate).
//! - [`deploy`]: every service of a release rolled to the new revision, judged by the
//!   deployment this run created, rolled back together on failure.
//!
//! Every change is fenced ([`fence`]: the run must still hold its pipeline's deploy lease) and
//! findable after a crash ([`reattach`]: revisions and tasks carry the run and stage in tags).
//!
//! Every AWS call goes through [`EcsAws`], which retries throttling with exponential backoff
//! and full jitter (matching error *codes*: ECS does not model ThrottlingException as a type)
//! and holds RegisterTaskDefinition to one call per second across all services.

pub mod deploy;
mod error;
pub mod fence;
mod logs;
pub mod migrate;
pub mod poll;
mod reattach;
pub mod release_diff;
pub mod retry;
pub mod taskdef;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionInput;
use aws_sdk_ecs::types::TaskDefinition;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

pub use error::EcsError;
pub use poll::PollSchedule;
pub use retry::Backoff;

use retry::{Failure, RateLimiter, classify};

/// RegisterTaskDefinition's sustained rate limit is one call per second per account and
/// region; registrations are spaced this far apart.
pub const REGISTER_INTERVAL: Duration = Duration::from_secs(1);

/// The AWS clients the ECS stages use, with the retry policy and the registration limiter
/// they share. Make one per process (or per run) and share it: the limiter only spaces the
/// registrations that go through the same `EcsAws`.
pub struct EcsAws {
    sdk_config: aws_types::SdkConfig,
    ecs: aws_sdk_ecs::Client,
    elbv2: aws_sdk_elasticloadbalancingv2::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    logs: Mutex<HashMap<String, aws_sdk_cloudwatchlogs::Client>>,
    backoff: Backoff,
    register_limiter: RateLimiter,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl EcsAws {
    /// Clients from a loaded AWS configuration (the standard credential chain: environment,
    /// profile, SSO, web identity for GitHub OIDC, instance role; `AWS_ENDPOINT_URL` and
    /// `AWS_ENDPOINT_URL_ECS` / `_CLOUDWATCH_LOGS` / `_ELASTIC_LOAD_BALANCING_V2` /
    /// `_CLOUDWATCH` point them elsewhere).
    ///
    /// The SDK's own retries are turned off: [`EcsAws`] retries itself, so that every attempt
    /// is counted, throttling is matched by code and RunTask is never blindly repeated.
    pub fn new(sdk_config: &aws_types::SdkConfig) -> Self {
        let ecs = aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(sdk_config)
                .retry_config(RetryConfig::disabled())
                .timeout_config(timeouts())
                .build(),
        );
        let elbv2 = aws_sdk_elasticloadbalancingv2::Client::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk_config)
                .retry_config(RetryConfig::disabled())
                .timeout_config(timeouts())
                .build(),
        );
        let cloudwatch = aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(sdk_config)
                .retry_config(RetryConfig::disabled())
                .timeout_config(timeouts())
                .build(),
        );
        EcsAws {
            sdk_config: sdk_config.clone(),
            ecs,
            elbv2,
            cloudwatch,
            logs: Mutex::new(HashMap::new()),
            backoff: retry::ECS_BACKOFF,
            register_limiter: RateLimiter::new(REGISTER_INTERVAL),
            calls: Mutex::new(BTreeMap::new()),
        }
    }

    /// Loads the AWS configuration from the environment (see [`EcsAws::new`]); `region`
    /// overrides the configured region.
    pub async fn from_environment(region: Option<String>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(crate::timeouts::aws_config());
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        EcsAws::new(&loader.load().await)
    }

    /// Uses `backoff` between attempts of a throttled or transiently failed call.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The ECS client, for callers that need a call this module does not make.
    pub fn ecs(&self) -> &aws_sdk_ecs::Client {
        &self.ecs
    }

    /// The Elastic Load Balancing (v2) client: the target groups a `verify:` check asks.
    pub(crate) fn elbv2(&self) -> &aws_sdk_elasticloadbalancingv2::Client {
        &self.elbv2
    }

    /// The CloudWatch client: the alarms a `verify:` check watches.
    pub(crate) fn cloudwatch(&self) -> &aws_sdk_cloudwatch::Client {
        &self.cloudwatch
    }

    /// The region the clients use, if one is configured.
    pub fn region(&self) -> Option<&str> {
        self.sdk_config.region().map(|r| r.as_ref())
    }

    /// How many attempts of each operation (`ecs:DescribeServices`, …) went out so far,
    /// retries included.
    pub fn call_counts(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().expect("call counter lock").clone()
    }

    /// A CloudWatch Logs client for `region` (awslogs-region may differ from the task's).
    pub(crate) fn logs(&self, region: Option<&str>) -> aws_sdk_cloudwatchlogs::Client {
        let key = region.unwrap_or("").to_owned();
        let mut clients = self.logs.lock().expect("logs client lock");
        clients
            .entry(key)
            .or_insert_with(|| {
                let mut builder = aws_sdk_cloudwatchlogs::config::Builder::from(&self.sdk_config)
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(timeouts());
                if let Some(region) = region {
                    builder = builder.region(aws_sdk_cloudwatchlogs::config::Region::new(
                        region.to_owned(),
                    ));
                }
                aws_sdk_cloudwatchlogs::Client::from_conf(builder.build())
            })
            .clone()
    }

    /// Sends a request, again after throttling (always) and after a transient failure (when
    /// `call.idempotent`), waiting with backoff in between; the attempts are bounded.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        call: Call<'_>,
        mut send: F,
    ) -> Result<T, EcsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            *self
                .calls
                .lock()
                .expect("call counter lock")
                .entry(call.operation)
                .or_default() += 1;
            let error = match send().await {
                Ok(output) => return Ok(output),
                Err(error) => error,
            };
            let failure = classify(&error);
            let retry = match failure {
                Failure::Throttled => true,
                Failure::Transient => call.idempotent,
                Failure::Permanent => false,
            };
            if !retry || !self.backoff.allows_another(attempt) {
                return Err(EcsError::from_sdk(&call, &error, failure, attempt));
            }
            let delay = self.backoff.delay(attempt, &mut rand::rng());
            tracing::debug!(
                operation = call.operation,
                attempt,
                ?failure,
                delay_ms = delay.as_millis() as u64,
                "retrying an AWS call"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// RegisterTaskDefinition, each attempt in its turn of the one-per-second limiter.
    pub(crate) async fn register(
        &self,
        input: &RegisterTaskDefinitionInput,
    ) -> Result<TaskDefinition, EcsError> {
        let family = input.family.clone().unwrap_or_default();
        let output = self
            .call(
                Call::new(
                    "register a new task definition revision",
                    "ecs:RegisterTaskDefinition",
                    &family,
                )
                .idempotent(),
                || async {
                    self.register_limiter.acquire().await;
                    let i = input.clone();
                    self.ecs
                        .register_task_definition()
                        .set_family(i.family)
                        .set_task_role_arn(i.task_role_arn)
                        .set_execution_role_arn(i.execution_role_arn)
                        .set_network_mode(i.network_mode)
                        .set_container_definitions(i.container_definitions)
                        .set_volumes(i.volumes)
                        .set_placement_constraints(i.placement_constraints)
                        .set_requires_compatibilities(i.requires_compatibilities)
                        .set_cpu(i.cpu)
                        .set_memory(i.memory)
                        .set_tags(i.tags)
                        .set_pid_mode(i.pid_mode)
                        .set_ipc_mode(i.ipc_mode)
                        .set_proxy_configuration(i.proxy_configuration)
                        .set_ephemeral_storage(i.ephemeral_storage)
                        .set_runtime_platform(i.runtime_platform)
                        .set_enable_fault_injection(i.enable_fault_injection)
                        .send()
                        .await
                },
            )
            .await?;
        output.task_definition.ok_or_else(|| EcsError::Unexpected {
            what: format!("RegisterTaskDefinition for `{family}` returned no task definition"),
        })
    }

    /// DescribeTaskDefinition with its tags.
    pub(crate) async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<
        aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput,
        EcsError,
    > {
        self.call(
            Call::new(
                "read the task definition",
                "ecs:DescribeTaskDefinition",
                task_definition,
            )
            .idempotent(),
            || {
                self.ecs
                    .describe_task_definition()
                    .task_definition(task_definition)
                    .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                    .send()
            },
        )
        .await
    }

    /// DescribeServices for up to 10 services (ECS's limit per call).
    pub(crate) async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<aws_sdk_ecs::operation::describe_services::DescribeServicesOutput, EcsError> {
        debug_assert!(services.len() <= 10);
        self.call(
            Call::new(
                "read the services",
                "ecs:DescribeServices",
                &format!("{cluster}: {}", services.join(", ")),
            )
            .idempotent(),
            || {
                self.ecs
                    .describe_services()
                    .cluster(cluster)
                    .set_services(Some(services.to_vec()))
                    .send()
            },
        )
        .await
    }
}

/// One kind of AWS call, for retries and error messages.
pub(crate) struct Call<'a> {
    /// What we were trying to do, for people: "read the services".
    pub(crate) action: &'static str,
    /// `ecs:DescribeServices`, the IAM action name.
    pub(crate) operation: &'static str,
    /// What it was about: a service, a task definition, a task.
    pub(crate) target: &'a str,
    /// Whether repeating a request that may have been carried out is harmless.
    pub(crate) idempotent: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn new(action: &'static str, operation: &'static str, target: &'a str) -> Self {
        Call {
            action,
            operation,
            target,
            idempotent: false,
        }
    }

    pub(crate) fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
}

fn timeouts() -> TimeoutConfig {
    crate::timeouts::aws_config()
}

/// `startedBy` for a run's tasks: at most 36 of the characters ECS allows (letters, digits,
/// `-`, `_`, `/`).
pub(crate) fn started_by(run_id: &str) -> String {
    let clean: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let value = format!("envelope-{clean}");
    if value.len() <= 36 {
        value
    } else {
        // Long run ids keep their tail, which is where a ULID's randomness is.
        format!("envelope-{}", &clean[clean.len() - 27..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_by_fits_ecs_limits() {
        let cases = [
            (
                "01jd6y5m1qz1d1x4g9r1w8w3kq",
                "envelope-01jd6y5m1qz1d1x4g9r1w8w3kq",
            ),
            ("run 1:a", "envelope-run-1-a"),
            (
                "a-very-long-run-identifier-that-goes-on-and-on",
                "envelope-ntifier-that-goes-on-and-on",
            ),
        ];
        for (run, expected) in cases {
            let value = started_by(run);
            assert_eq!(value, expected);
            assert!(value.len() <= 36, "{value}");
        }
    }
}
