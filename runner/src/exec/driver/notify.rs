//! Sending a run's notifications (an approval gate's notice, the end of the run) to SNS and
//! webhooks. Each target that fails is a warning event, never a failure of the run; each that
//! took it is a line saying where it went (webhooks by their origin only).

use super::*;
use crate::exec::notify::{self, NotifyError, Purpose};

/// One notification and where it goes.
pub(super) struct Delivery<'a> {
    pub purpose: Purpose,
    /// The stage the events belong to (`None`: the run as a whole).
    pub stage: Option<&'a str>,
    pub sns: Option<&'a str>,
    pub subject: String,
    pub text: String,
    /// The URL and JSON body of each webhook POST.
    pub posts: Vec<(&'a str, serde_json::Value)>,
}

impl Driver {
    /// Send `delivery`. Returns where it went (`sns:<topic>`, `webhook:<origin>`) and one
    /// warning line for each target that did not take it.
    pub(super) async fn deliver(&self, delivery: Delivery<'_>) -> (Vec<String>, Vec<String>) {
        let purpose = delivery.purpose;
        let mut results = Vec::new();
        if let Some(topic) = delivery.sns {
            let result = match self.aws().await {
                Ok(config) => {
                    notify::publish_sns(config, purpose, topic, &delivery.subject, &delivery.text)
                        .await
                        .map(|id| format!("notified SNS topic {topic} (message {id})"))
                }
                Err(failure) => Err(NotifyError::Sns {
                    purpose,
                    topic: topic.to_owned(),
                    detail: failure.message,
                }),
            };
            results.push((format!("sns:{topic}"), result));
        }
        for (url, body) in &delivery.posts {
            let origin = crate::redact::url_origin(url);
            let result = notify::post_webhook(purpose, url, body)
                .await
                .map(|()| format!("notified the webhook at {origin}"));
            results.push((format!("webhook:{origin}"), result));
        }
        let stage = delivery.stage.map(str::to_owned);
        let mut sent = Vec::new();
        let mut warnings = Vec::new();
        for (target, result) in results {
            match result {
                Ok(line) => {
                    self.events.emit(match &stage {
                        Some(stage) => Event::Log {
                            stage: stage.clone(),
                            line,
                        },
                        None => Event::Notice {
                            stage: None,
                            message: line,
                        },
                    });
                    sent.push(target);
                }
                Err(error) => {
                    let message = error.to_string();
                    self.events.emit(Event::Warning {
                        stage: stage.clone(),
                        message: message.clone(),
                    });
                    warnings.push(message);
                }
            }
        }
        (sent, warnings)
    }
}
