//! Telling the pipeline's `notify:` targets how a run ended: once per ending of a run (an
//! `Event::Notified` in the run's events says it was told), never in a `--local` run, and never
//! changing the run's outcome: a target that fails is a warning.

use super::notify::Delivery;
use super::*;
use crate::exec::notify::Purpose;
use crate::exec::run_notice::{self, Ending, RunNotice};
use crate::pipeline::model::RunEnding;

impl Driver {
    /// Send the end-of-run notification for `record`, which ended as `outcome` says, if the
    /// pipeline asks for this ending and the run's events show it was not sent before.
    pub(super) async fn notify_run_end(
        &self,
        record: &RunRecord,
        outcome: &RunOutcome,
        context: &PlanContext,
    ) {
        if self.settings.is_local() {
            return;
        }
        let Some(ending) = run_notice::ending_of(record, outcome.status) else {
            return;
        };
        let Ok(plan) = plan::plan(&self.compiled, context) else {
            return;
        };
        let Some(notify) = plan.notify else {
            return;
        };
        if !notify.on.contains(&ending) || self.already_notified(&record.id, ending).await {
            return;
        }
        let notice = RunNotice::of(
            record,
            Ending {
                outcome: ending,
                status: outcome.status,
                stage: outcome.stage.as_deref(),
                error: outcome.error.as_deref(),
                duration: since(&record.created_at, &self.settings.clock),
                link: self
                    .settings
                    .run_link
                    .as_ref()
                    .map(|link| link.replace("{run}", &record.id.0)),
                release: plan.trigger.tag,
            },
        );
        // People read it outside the run: it carries none of the run's secrets.
        let Some(notice) = self.events.redactor().redact_texts(&notice) else {
            self.events.emit(Event::Warning {
                stage: None,
                message: "nobody was told how the run ended: the run notification could not be checked for secrets".into(),
            });
            return;
        };
        let webhook = self.webhook_url(&notify.webhook, &notify.webhook_env);
        let slack = self.webhook_url(&notify.slack, &notify.slack_env);
        let mut posts = Vec::new();
        if let Some(url) = webhook.as_deref()
            && let Ok(body) = serde_json::to_value(&notice)
        {
            posts.push((url, body));
        }
        if let Some(url) = slack.as_deref() {
            posts.push((url, notice.slack()));
        }
        let (sent, _warnings) = self
            .deliver(Delivery {
                purpose: Purpose::RunEnd,
                stage: None,
                sns: notify.sns.as_deref(),
                subject: notice.subject(),
                text: notice.text(),
                posts,
            })
            .await;
        if !sent.is_empty() {
            self.events.emit(Event::Notified { ending, to: sent });
        }
        // Written now, so that a process killed from here on does not tell it again.
        if let Err(error) = self.flush_events(&record.id).await {
            self.events.emit(Event::Warning {
                stage: None,
                message: format!("the run notification was sent but not recorded: {error}"),
            });
        }
    }

    /// The URL written in the pipeline, or read now from the variable `env` names (a warning
    /// when it is not set). Its credential joins the run's secrets.
    fn webhook_url(&self, url: &Option<String>, env: &Option<String>) -> Option<String> {
        let url = match (url, env) {
            (Some(url), _) => url.clone(),
            (None, Some(name)) => match std::env::var(name) {
                Ok(url) if !url.is_empty() => url,
                _ => {
                    self.events.emit(Event::Warning {
                        stage: None,
                        message: format!(
                            "nobody was told how the run ended: the run notification's webhook URL is read from ${name}, which is not set; set it where the run runs"
                        ),
                    });
                    return None;
                }
            },
            (None, None) => return None,
        };
        self.events
            .redactor()
            .add_all(crate::redact::webhook_secrets(&url));
        Some(url)
    }

    /// Whether the run's stored events say `ending` was already told.
    async fn already_notified(&self, run: &RunId, ending: RunEnding) -> bool {
        let Ok(events) = self.store.events(run, None, usize::MAX).await else {
            return false;
        };
        events.iter().any(|(_, text)| {
            matches!(
                serde_json::from_str::<Event>(text),
                Ok(Event::Notified { ending: told, .. }) if told == ending
            )
        })
    }
}

/// Time since `created` (RFC 3339) on the run's clock; zero when it cannot be read.
fn since(created: &str, clock: &crate::store::Clock) -> std::time::Duration {
    chrono::DateTime::parse_from_rfc3339(created)
        .ok()
        .and_then(|created| {
            (clock.now() - created.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}
