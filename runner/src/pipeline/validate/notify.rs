//! Checks on where notifications go: an approval gate's `notify:` and the pipeline's own
//! `notify:` for the end of a run. SNS targets must be topic ARNs, webhooks http(s) URLs, and a
//! run's webhook URL comes from a variable only through `*_env` (read late, never recorded).

use super::{Checker, key};
use crate::pipeline::model::{Notify, RunNotify};
use crate::pipeline::yaml::PathSegment;

/// An approval gate's `notify:` at `at` (the path of the stage).
pub(super) fn check_approval(checker: &mut Checker, notify: &Notify, at: &[PathSegment]) {
    let at = [at, &[key("notify")]].concat();
    check_topic(checker, notify.sns.as_deref(), &at);
    check_url(checker, "webhook", notify.webhook.as_deref(), &at);
}

/// The pipeline's top-level `notify:`: its targets, and that it sends something at all.
pub(super) fn check_run(checker: &mut Checker, notify: &RunNotify) {
    let at = [key("notify")];
    check_topic(checker, notify.sns.as_deref(), &at);
    for (url_key, url, env_key, env) in [
        (
            "webhook",
            &notify.webhook,
            "webhook_env",
            &notify.webhook_env,
        ),
        ("slack", &notify.slack, "slack_env", &notify.slack_env),
    ] {
        if url.as_deref().is_some_and(|url| url.contains("${env.")) {
            secret_url(checker, url_key, env_key);
        } else {
            check_url(checker, url_key, url.as_deref(), &at);
        }
        if url.is_some() && env.is_some() {
            let position = checker.key_position(&[key("notify"), key(env_key)]);
            checker
                .error(
                    position,
                    format!("both `{url_key}` and `{env_key}` are set"),
                )
                .help = Some(format!(
                "keep one: `{env_key}` names the variable that holds the URL"
            ));
        }
        if let Some(name) = env
            && !crate::pipeline::names::is_env_name(name)
        {
            let position = checker.position(&[key("notify"), key(env_key)]);
            checker
                .error(
                    position,
                    format!("`{name}` is not an environment variable name"),
                )
                .help = Some("write the variable's name, such as SLACK_WEBHOOK_URL".into());
        }
    }
    let targets = [
        &notify.sns,
        &notify.webhook,
        &notify.webhook_env,
        &notify.slack,
        &notify.slack_env,
    ];
    if targets.iter().all(|target| target.is_none()) {
        let position = checker.key_position(&at);
        checker
            .error(position, "`notify` names nowhere to send to")
            .help = Some(
            "add `sns:` (a topic ARN), `slack_env:` or `webhook_env:` (the variable holding a URL), or `slack:` or `webhook:` (a URL)".into(),
        );
    }
    if notify.on.as_ref().is_some_and(Vec::is_empty) {
        let position = checker.position(&[key("notify"), key("on")]);
        checker
            .error(position, "`on` lists no ending, so nothing would be sent")
            .help = Some(
            "list some of `failure`, `rollback`, `success`, or leave `on` out (failure and rollback)"
                .into(),
        );
    }
}

/// A URL read from `${env.…}` would be kept in the run's record with the other declared
/// variables' values: its credential too. `<name>_env` reads it when the run ends instead.
fn secret_url(checker: &mut Checker, name: &str, env_key: &str) {
    let position = checker.position(&[key("notify"), key(name)]);
    checker
        .error(
            position,
            format!("`{name}` reads an environment variable, so the run would record the URL"),
        )
        .help = Some(format!(
        "the URL carries its credential: write `{env_key}: <VARIABLE>` instead, read when the run ends and never recorded"
    ));
}

fn check_topic(checker: &mut Checker, topic: Option<&str>, at: &[PathSegment]) {
    if let Some(topic) = topic
        && !topic.starts_with("arn:")
    {
        let position = checker.position(&[at, &[key("sns")]].concat());
        checker
            .error(position, format!("`{topic}` is not an SNS topic ARN"))
            .help = Some("write the topic ARN: arn:aws:sns:<region>:<account>:<topic>".into());
    }
}

fn check_url(checker: &mut Checker, name: &str, url: Option<&str>, at: &[PathSegment]) {
    if let Some(url) = url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        let position = checker.position(&[at, &[key(name)]].concat());
        // Up to the first `/` only: a webhook URL's path is its credential.
        let shown = match url.find('/') {
            Some(end) => format!("{}/…", &url[..end]),
            None => url.to_owned(),
        };
        checker
            .error(position, format!("`{shown}` is not an http(s) URL"))
            .help = Some("write a full URL such as https://hooks.example.com/deploys".into());
    }
}
