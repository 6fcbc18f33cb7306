//! `env.secrets-manager` and `env.parameter-store`: parsing secret references and fetching
//! their values from Secrets Manager and Parameter Store before the phases run.

use super::BuildspecError;
use crate::buildspec::Buildspec;
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap};

/// Fetch the buildspec's `env.secrets-manager` and `env.parameter-store` values (parameters
/// decrypted), with the endpoint, region and credentials of `sdk_config`.
pub async fn resolve_secret_env(
    spec: &Buildspec,
    sdk_config: &aws_types::SdkConfig,
) -> Result<BTreeMap<String, Secret>, BuildspecError> {
    let mut resolved = BTreeMap::new();
    let Some(env) = &spec.env else {
        return Ok(resolved);
    };
    if !env.secrets_manager.is_empty() {
        let client = aws_sdk_secretsmanager::Client::new(sdk_config);
        // Several variables often read keys of one secret: fetch each version once.
        let mut fetched: HashMap<SecretVersion, String> = HashMap::new();
        for (variable, text) in &env.secrets_manager {
            let reference = SecretReference::parse(text).map_err(|problem| {
                BuildspecError::SecretReference {
                    variable: variable.clone(),
                    reference: text.clone(),
                    problem,
                }
            })?;
            let secrets_manager_error = |message: String| BuildspecError::SecretsManager {
                variable: variable.clone(),
                secret_id: reference.version.secret_id.clone(),
                message,
            };
            let secret_text = match fetched.get(&reference.version) {
                Some(secret_text) => secret_text.clone(),
                None => {
                    let version = &reference.version;
                    let output = client
                        .get_secret_value()
                        .secret_id(&version.secret_id)
                        .set_version_stage(version.version_stage.clone())
                        .set_version_id(version.version_id.clone())
                        .send()
                        .await
                        .map_err(|error| BuildspecError::Aws {
                            what: format!(
                                "secret `{}` (variable `{variable}`) from Secrets Manager",
                                version.secret_id
                            ),
                            failure: crate::aws_error::AwsFailure::during(
                                &error,
                                "Secrets Manager GetSecretValue",
                            ),
                        })?;
                    let secret_text = match (output.secret_string, output.secret_binary) {
                        (Some(text), _) => text,
                        (None, Some(_)) => {
                            return Err(secrets_manager_error(
                                "the secret is stored as SecretBinary, which is never handed to a \
                                 build; store it as SecretString (text) instead"
                                    .into(),
                            ));
                        }
                        (None, None) => {
                            return Err(secrets_manager_error("the secret has no value".into()));
                        }
                    };
                    fetched.insert(version.clone(), secret_text.clone());
                    secret_text
                }
            };
            let value = reference
                .select(&secret_text)
                .map_err(secrets_manager_error)?;
            resolved.insert(variable.clone(), Secret::new(value));
        }
    }
    if !env.parameter_store.is_empty() {
        let client = aws_sdk_ssm::Client::new(sdk_config);
        let mut fetched: HashMap<&str, Secret> = HashMap::new();
        for (variable, parameter) in &env.parameter_store {
            let value = match fetched.get(parameter.as_str()) {
                Some(value) => value.clone(),
                None => {
                    let parameter_store_error = |message: String| BuildspecError::ParameterStore {
                        variable: variable.clone(),
                        parameter: parameter.clone(),
                        message,
                    };
                    let output = client
                        .get_parameter()
                        .name(parameter)
                        .with_decryption(true)
                        .send()
                        .await
                        .map_err(|error| BuildspecError::Aws {
                            what: format!(
                                "parameter `{parameter}` (variable `{variable}`) from Parameter Store"
                            ),
                            failure: crate::aws_error::AwsFailure::during(
                                &error,
                                "SSM GetParameter",
                            ),
                        })?;
                    let value = output
                        .parameter
                        .and_then(|parameter| parameter.value)
                        .ok_or_else(|| {
                            parameter_store_error("the parameter has no value".into())
                        })?;
                    let value = Secret::new(value);
                    fetched.insert(parameter, value.clone());
                    value
                }
            };
            resolved.insert(variable.clone(), value);
        }
    }
    Ok(resolved)
}

/// Which secret version a `secrets-manager` reference reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SecretVersion {
    secret_id: String,
    version_stage: Option<String>,
    version_id: Option<String>,
}

/// A parsed `secret-id:json-key:version-stage:version-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretReference {
    version: SecretVersion,
    json_key: Option<String>,
}

impl SecretReference {
    fn parse(text: &str) -> Result<SecretReference, String> {
        let parts: Vec<&str> = text.split(':').collect();
        // An ARN (arn:partition:secretsmanager:region:account:secret:name) has colons itself.
        let id_parts = if text.starts_with("arn:") {
            if parts.len() < 7 {
                return Err("looks like an ARN but is not a complete secret ARN".into());
            }
            7
        } else {
            1
        };
        let secret_id = parts[..id_parts].join(":");
        let rest = &parts[id_parts..];
        if secret_id.is_empty() {
            return Err("has no secret id".into());
        }
        if rest.len() > 3 {
            return Err("has too many `:`-separated fields".into());
        }
        let field = |index: usize| {
            rest.get(index)
                .filter(|field| !field.is_empty())
                .map(|field| field.to_string())
        };
        Ok(SecretReference {
            version: SecretVersion {
                secret_id,
                version_stage: field(1),
                version_id: field(2),
            },
            json_key: field(0),
        })
    }

    /// The variable's value from the secret's text. Errors never quote the secret.
    fn select(&self, secret_text: &str) -> Result<String, String> {
        let Some(key) = &self.json_key else {
            return Ok(secret_text.to_string());
        };
        let Ok(serde_json::Value::Object(object)) = serde_json::from_str(secret_text) else {
            return Err(format!(
                "the secret is not a JSON object, so it has no key `{key}`"
            ));
        };
        match object.get(key) {
            Some(serde_json::Value::String(value)) => Ok(value.clone()),
            Some(value) => Ok(value.to_string()),
            None => Err(format!(
                "the secret has no JSON key `{key}` (it has: {})",
                object.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_secrets_manager_references() {
        let version = |id: &str, stage: Option<&str>, version_id: Option<&str>| SecretVersion {
            secret_id: id.into(),
            version_stage: stage.map(Into::into),
            version_id: version_id.map(Into::into),
        };
        let arn = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:prod/db-AbCdEf";
        let cases = [
            ("prod/db", version("prod/db", None, None), None),
            (
                "prod/db:password",
                version("prod/db", None, None),
                Some("password"),
            ),
            (
                "prod/db::AWSPREVIOUS",
                version("prod/db", Some("AWSPREVIOUS"), None),
                None,
            ),
            (
                "prod/db:password::v-123",
                version("prod/db", None, Some("v-123")),
                Some("password"),
            ),
            (arn, version(arn, None, None), None),
            (
                &format!("{arn}:password:AWSCURRENT"),
                version(arn, Some("AWSCURRENT"), None),
                Some("password"),
            ),
        ];
        for (text, expected_version, expected_key) in cases {
            let reference = SecretReference::parse(text).unwrap();
            assert_eq!(reference.version, expected_version, "{text}");
            assert_eq!(reference.json_key.as_deref(), expected_key, "{text}");
        }
        for bad in ["", ":key", "a:b:c:d:e", "arn:aws:secretsmanager:eu-west-2"] {
            assert!(SecretReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_json_keys_without_quoting_the_secret() {
        let reference = SecretReference::parse("db:password").unwrap();
        assert_eq!(
            reference.select(r#"{"password":"pw-1","port":5432}"#),
            Ok("pw-1".to_string())
        );
        let port = SecretReference::parse("db:port").unwrap();
        assert_eq!(
            port.select(r#"{"password":"pw-1","port":5432}"#),
            Ok("5432".to_string())
        );
        let missing = reference.select(r#"{"user":"pw-1"}"#).unwrap_err();
        assert!(missing.contains("no JSON key `password`"), "{missing}");
        assert!(!missing.contains("pw-1"), "{missing}");
        let not_json = reference.select("pw-1").unwrap_err();
        assert!(!not_json.contains("pw-1"), "{not_json}");
        let whole = SecretReference::parse("db").unwrap();
        assert_eq!(whole.select("pw-1"), Ok("pw-1".to_string()));
    }
}
