//! The run's clients, made once and only when a stage needs them: Docker, the AWS config
//! with its region and account settled, ECS, and registry credentials.

use super::*;
use crate::exec::docker_config::DockerConfig;
use crate::exec::docker_host::{self, DockerTarget, Transport};
use crate::exec::{aws_target, ecs, push};
use crate::plan::{self, PlanContext, Step};
use crate::secret::Secret;

impl Driver {
    /// Settle the run's AWS region and account (see `aws_target`) into `context`, so that no
    /// step reaches Docker, a registry, ECS or SNS with a placeholder in a name. Learns the
    /// account from STS only when a step that will run names it.
    pub(super) async fn settle_aws(&self, context: &mut PlanContext) -> Result<(), DriverError> {
        let local = self.settings.is_local();
        context.region = aws_target::resolve_region(
            self.settings.region.as_deref(),
            context.region.as_deref(),
            self.compiled.aws.region.as_deref(),
        )
        .await;
        let plan = plan::plan(&self.compiled, context)?;
        let run_notify = plan.notify.iter().flat_map(|n| [&n.webhook, &n.slack]);
        let approval_notify = plan.steps.iter().map(|step| match step {
            Step::Approval(approval) => &approval.notify_webhook,
            _ => &None,
        });
        // Webhook URLs carry their credentials: never shown past the host.
        for url in run_notify.chain(approval_notify).flatten() {
            self.events
                .redactor()
                .add_all(crate::redact::webhook_secrets(url));
        }
        match &context.region {
            Some(region) => {
                let _ = self.region.set(region.clone());
            }
            None => {
                let needs_region = !local
                    && plan
                        .steps
                        .iter()
                        .any(|step| matches!(step, Step::Migrate(_) | Step::Deploy(_)));
                if needs_region
                    || !aws_target::steps_naming(&plan, aws_target::REGION_PLACEHOLDER, local)
                        .is_empty()
                {
                    return Err(aws_target::AwsTargetError::NoRegion {
                        pipeline: self.compiled.name.clone(),
                    }
                    .into());
                }
            }
        }
        if context.account.is_none()
            && self.compiled.aws.account.is_none()
            && !aws_target::steps_naming(&plan, aws_target::ACCOUNT_PLACEHOLDER, local).is_empty()
        {
            let config =
                self.aws()
                    .await
                    .map_err(|failure| aws_target::AwsTargetError::Identity {
                        detail: failure.message,
                    })?;
            context.account = Some(aws_target::caller_account(config).await?);
        }
        Ok(())
    }

    pub(super) async fn ecs(&self) -> Result<&ecs::EcsAws, StageFailure> {
        let config = self.aws().await?.clone();
        Ok(self
            .ecs
            .get_or_init(|| async move { ecs::EcsAws::new(&config) })
            .await)
    }

    pub(super) async fn docker(&self) -> Result<bollard::Docker, StageFailure> {
        Ok(self.docker_connection().await?.0.clone())
    }

    /// The TLS files of the Docker connection, when the daemon is reached over TLS.
    pub(super) async fn docker_tls(&self) -> Result<Option<docker_host::TlsFiles>, StageFailure> {
        Ok(match &self.docker_connection().await?.1.transport {
            Transport::Tls { files, .. } => Some(files.clone()),
            _ => None,
        })
    }

    /// The daemon as the Docker CLI would choose it (`docker_host`), connected and with the
    /// API version settled.
    async fn docker_connection(&self) -> Result<&(bollard::Docker, DockerTarget), StageFailure> {
        self.docker
            .get_or_try_init(|| async {
                let (docker, target) = docker_host::from_environment()
                    .map_err(|error| StageFailure::environment(error.to_string()))?;
                let docker = docker
                    .negotiate_version()
                    .await
                    .map_err(|error| docker_unreachable(&target, error))?;
                Ok((docker, target))
            })
            .await
    }

    /// The Docker CLI's `config.json`, read once.
    pub(super) async fn docker_config(&self) -> Result<&DockerConfig, StageFailure> {
        self.docker_config
            .get_or_try_init(|| async {
                DockerConfig::from_environment()
                    .map_err(|error| StageFailure::environment(error.to_string()))
            })
            .await
    }

    pub(super) async fn aws(&self) -> Result<&aws_config::SdkConfig, StageFailure> {
        self.aws
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(crate::timeouts::aws_config());
                if let Some(region) = self.region.get().or(self.compiled.aws.region.as_ref()) {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                Ok::<_, StageFailure>(loader.load().await)
            })
            .await
    }

    pub(super) async fn aws_if_needed(
        &self,
        spec: &crate::buildspec::Buildspec,
    ) -> Result<Option<aws_config::SdkConfig>, StageFailure> {
        let needs = spec
            .env
            .as_ref()
            .is_some_and(|env| !env.secrets_manager.is_empty() || !env.parameter_store.is_empty());
        Ok(if needs {
            Some(self.aws().await?.clone())
        } else {
            None
        })
    }

    /// `auth`'s ECR token as the credentials of `host`; the password is added to the run's
    /// redactor before anything can print it.
    pub(super) async fn ecr_credentials(
        &self,
        auth: &push::ecr::EcrAuth,
        host: &str,
    ) -> Result<push::RegistryCredentials, StageFailure> {
        let mut credentials = auth.credentials().await.map_err(|error| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        })?;
        credentials.server = host.to_owned();
        self.events
            .redactor()
            .add_basic_auth(&credentials.username, credentials.password.expose());
        Ok(credentials)
    }

    /// Registry credentials: ECR's token for an ECR host, else `ENVELOPE_REGISTRY_USERNAME` /
    /// `ENVELOPE_REGISTRY_PASSWORD` (or `_PASSWORD_FILE`) when set, else the Docker CLI's
    /// (`config.json`: `credHelpers`, `credsStore`, `auths`).
    pub(super) async fn credentials_for(
        &self,
        repository: &str,
    ) -> Result<Option<push::RegistryCredentials>, StageFailure> {
        let host = repository.split('/').next().unwrap_or("");
        if push::ecr::parse_ecr_host(host).is_some() {
            let config = self.aws().await?.clone();
            let auth = self
                .ecr_auth
                .get_or_init(|| async {
                    push::ecr::EcrAuth::new(aws_sdk_ecr::Client::new(&config))
                })
                .await;
            return self.ecr_credentials(auth, host).await.map(Some);
        }
        let username = std::env::var("ENVELOPE_REGISTRY_USERNAME").ok();
        let password = std::env::var("ENVELOPE_REGISTRY_PASSWORD")
            .ok()
            .or_else(|| {
                std::env::var("ENVELOPE_REGISTRY_PASSWORD_FILE")
                    .ok()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .map(|text| text.trim_end().to_owned())
            });
        if let (Some(username), Some(password)) = (username, password) {
            self.events.redactor().add_basic_auth(&username, &password);
            return Ok(Some(push::RegistryCredentials {
                server: host.to_owned(),
                username,
                password: Secret::new(password),
                expires_at: None,
            }));
        }
        // `envelope/api` without a registry host: a local image, nothing to authenticate.
        let registry_host = host.contains(['.', ':']) || host == "localhost";
        if !registry_host {
            return Ok(None);
        }
        let config = self.docker_config().await?;
        let found = config
            .credentials(host)
            .await
            .map_err(|error| StageFailure::environment(error.to_string()))?;
        if let Some(credentials) = &found {
            self.events
                .redactor()
                .add_basic_auth(&credentials.username, credentials.password.expose());
        }
        Ok(found)
    }

    /// For a build: the credentials of registries other than the image's own (a private base
    /// image), looked up in the Docker CLI's `config.json` as the daemon asks for them; what
    /// is found is added to the run's redactor first.
    pub(super) async fn registry_auth_lookup(
        &self,
    ) -> Result<crate::exec::build::CredentialLookup, StageFailure> {
        let config = self.docker_config().await?.clone();
        let redactor = self.events.redactor().clone();
        Ok(crate::exec::build::CredentialLookup::new(move |host| {
            let config = config.clone();
            let redactor = redactor.clone();
            Box::pin(async move {
                let found = config
                    .credentials(&host)
                    .await
                    .map_err(|error| error.to_string())?;
                if let Some(credentials) = &found {
                    redactor.add_basic_auth(&credentials.username, credentials.password.expose());
                }
                Ok(found)
            })
        }))
    }

    pub(super) fn endpoint_for(&self, repository: &str) -> Option<String> {
        let host = repository.split('/').next().unwrap_or("");
        self.settings
            .registry_endpoint
            .clone()
            .filter(|endpoint| !endpoint.is_empty() && endpoint != host)
    }
}

pub(super) fn docker_unreachable(
    target: &DockerTarget,
    error: bollard::errors::Error,
) -> StageFailure {
    let detail = crate::error_chain(&error);
    let advice = if detail.contains("certificate") {
        "check the TLS files (the daemon's certificate must chain to ca.pem, and the daemon \
         must accept cert.pem)"
    } else {
        "start Docker, or set DOCKER_HOST (or DOCKER_CONTEXT) to a running daemon"
    };
    StageFailure::environment(format!(
        "cannot reach the Docker daemon at {target} ({detail}); {advice}, and run again"
    ))
}
