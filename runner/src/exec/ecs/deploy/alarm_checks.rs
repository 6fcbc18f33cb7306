//! `verify:` checks of a CloudWatch alarm: once every rollout completed, the alarm is looked at
//! (DescribeAlarms by name, metric and composite alarms) at once, every `interval` and once
//! more when its `for` has passed; the check fails at the first look that finds it in ALARM
//! (with CloudWatch's StateReason), or when there is no such alarm, and passes when no look
//! did. `OK` and `INSUFFICIENT_DATA` both count as not in ALARM.

use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_cloudwatch::types::AlarmType;
use tokio::time::Instant;

use super::Deploy;
use crate::exec::ecs::Call;
use crate::exec::verify::{self, AlarmCheck, CheckReport, LastAnswer};
use crate::pipeline::duration;

/// The state CloudWatch names an alarm that is firing.
const ALARM: &str = "ALARM";

impl Deploy<'_> {
    /// Watches `check`'s alarm for its whole `watch`, or until a look finds it in ALARM.
    pub(super) async fn watch_alarm(&self, check: &AlarmCheck) -> CheckReport {
        let start = Instant::now();
        let end = start + check.watch;
        let report = |passed: bool, attempts: u32, last: LastAnswer| CheckReport {
            url: format!("alarm {}", check.name),
            passed,
            attempts,
            elapsed: start.elapsed(),
            expected: format!("not in ALARM for {}", duration::format(check.watch)),
            last,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let seen = match self.alarm_state(&check.name).await {
                Ok(Some(seen)) => seen,
                Ok(None) => {
                    let region = self.aws.region().unwrap_or("the configured region");
                    let error = format!(
                        "there is no CloudWatch alarm named `{}` in {region}",
                        check.name
                    );
                    return report(false, attempts, LastAnswer::NoAnswer { error });
                }
                Err(error) => return report(false, attempts, LastAnswer::NoAnswer { error }),
            };
            let firing = seen_in_alarm(&seen);
            let now = Instant::now();
            if firing || now >= end || attempts >= verify::MAX_ATTEMPTS {
                return report(!firing, attempts, seen);
            }
            tokio::time::sleep(check.interval.min(end - now)).await;
        }
    }

    /// The alarm's state and reason, `None` when there is no alarm of that name.
    async fn alarm_state(&self, name: &str) -> Result<Option<LastAnswer>, String> {
        let output = self
            .aws
            .call(
                Call::new("read the alarm", "cloudwatch:DescribeAlarms", name).idempotent(),
                || {
                    self.aws
                        .cloudwatch()
                        .describe_alarms()
                        .alarm_names(name)
                        .alarm_types(AlarmType::MetricAlarm)
                        .alarm_types(AlarmType::CompositeAlarm)
                        .send()
                },
            )
            .await
            .map_err(|error| format!("the alarm could not be read: {error}"))?;
        Ok(alarm_seen(&output, name, &self.redactor))
    }
}

/// What DescribeAlarms says of the alarm `name` (metric or composite), if it lists it; the
/// reason passes through `redactor`.
fn alarm_seen(
    output: &DescribeAlarmsOutput,
    name: &str,
    redactor: &crate::redact::Redactor,
) -> Option<LastAnswer> {
    let metric = output
        .metric_alarms()
        .iter()
        .find(|alarm| alarm.alarm_name() == Some(name))
        .map(|alarm| (alarm.state_value(), alarm.state_reason()));
    let composite = || {
        output
            .composite_alarms()
            .iter()
            .find(|alarm| alarm.alarm_name() == Some(name))
            .map(|alarm| (alarm.state_value(), alarm.state_reason()))
    };
    let (state, reason) = metric.or_else(composite)?;
    Some(LastAnswer::Alarm {
        state: state.map_or("unknown", |s| s.as_str()).to_owned(),
        reason: redactor.redact(reason.unwrap_or_default()),
    })
}

fn seen_in_alarm(seen: &LastAnswer) -> bool {
    matches!(seen, LastAnswer::Alarm { state, .. } if state == ALARM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactor;
    use aws_sdk_cloudwatch::types::{CompositeAlarm, MetricAlarm, StateValue};

    #[test]
    fn the_named_metric_or_composite_alarm_is_read_with_its_reason() {
        let output = DescribeAlarmsOutput::builder()
            .metric_alarms(
                MetricAlarm::builder()
                    .alarm_name("api-5xx")
                    .state_value(StateValue::Alarm)
                    .state_reason("Threshold Crossed: 1 datapoint [12.0] > 5.0")
                    .build(),
            )
            .composite_alarms(
                CompositeAlarm::builder()
                    .alarm_name("api-health")
                    .state_value(StateValue::Ok)
                    .build(),
            )
            .build();
        let redactor = Redactor::new();
        let firing = alarm_seen(&output, "api-5xx", &redactor).unwrap();
        assert!(seen_in_alarm(&firing));
        assert_eq!(
            firing,
            LastAnswer::Alarm {
                state: "ALARM".into(),
                reason: "Threshold Crossed: 1 datapoint [12.0] > 5.0".into(),
            }
        );
        let quiet = alarm_seen(&output, "api-health", &redactor).unwrap();
        assert!(!seen_in_alarm(&quiet), "{quiet:?}");
        assert_eq!(alarm_seen(&output, "api-4xx", &redactor), None);
    }
}
