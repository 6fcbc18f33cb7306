//! `verify:` checks of a CloudWatch alarm (`alarm: {name, for}`) on ministack: a web service
//! and a metric alarm of its own (nothing feeds its metric, so ministack leaves its state to
//! SetAlarmState). An alarm set to ALARM while the check watches it (a moment after ECS
//! reported the rollout COMPLETED) rolls the release back at the next look, the report
//! carrying the alarm's StateReason; an alarm that stays OK for the whole `for` passes.
//!
//! The CloudWatch SDK speaks the RPCv2 CBOR protocol, which ministack answers only with the
//! Python `cbor2` module installed next to it (scripts/test-env does).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use envelope_runner::exec::ecs::deploy::{Deploy, DeployProgress, DeployRecord, Phase};
use envelope_runner::exec::ecs::{EcsAws, EcsError};
use envelope_runner::exec::verify::{AlarmCheck, CheckReport, LastAnswer};
use envelope_runner::redact::Redactor;
use tokio::sync::Notify;

use crate::support::ecs::{WebCluster, parts, web_images};
use envelope_tests::env::{TestEnv, unique};

/// A metric alarm on ministack under a unique name, deleted when dropped.
struct Alarm {
    env: &'static TestEnv,
    name: String,
    cloudwatch: aws_sdk_cloudwatch::Client,
}

impl Alarm {
    async fn create(env: &'static TestEnv) -> Alarm {
        let cloudwatch = aws_sdk_cloudwatch::Client::new(&env.sdk_config(env.endpoint()).await);
        let name = unique("envelope-e2e-5xx");
        cloudwatch
            .put_metric_alarm()
            .alarm_name(&name)
            .namespace("envelope-e2e")
            .metric_name("5xx")
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(5.0)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .send()
            .await
            .unwrap();
        let alarm = Alarm {
            env,
            name,
            cloudwatch,
        };
        alarm.set(StateValue::Ok, "quiet before the release").await;
        // ministack answers the SDK's CBOR protocol only with the `cbor2` module, which
        // scripts/test-env installs with it (an environment set up before it did needs
        // `scripts/test-env down` and `up`).
        let described = alarm
            .cloudwatch
            .describe_alarms()
            .alarm_names(&alarm.name)
            .send()
            .await;
        if let Err(error) = described {
            panic!(
                "ministack cannot answer DescribeAlarms; does its venv lack cbor2 (see \
                 scripts/test-env)? {error:?}"
            );
        }
        alarm
    }

    async fn set(&self, state: StateValue, reason: &str) {
        self.cloudwatch
            .set_alarm_state()
            .alarm_name(&self.name)
            .state_value(state)
            .state_reason(reason)
            .send()
            .await
            .unwrap();
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        let (env, name) = (self.env, self.name.clone());
        crate::support::cleanup::on_own_runtime(async move {
            let config = env.sdk_config(env.endpoint()).await;
            let _ = aws_sdk_cloudwatch::Client::new(&config)
                .delete_alarms()
                .alarm_names(name)
                .send()
                .await;
        });
    }
}

/// Deploys v2 of the web app with a check watching `alarm` for `watch`, looking every
/// second; `rolled_out` is told when ECS reports the rollout COMPLETED.
async fn deploy_watching(
    env: &'static TestEnv,
    cluster: &WebCluster,
    alarm: &Alarm,
    watch: Duration,
    rolled_out: Arc<Notify>,
) -> (Result<(), EcsError>, Vec<CheckReport>, Vec<DeployProgress>) {
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(&web_images(env).v2, Duration::from_secs(120));
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let progress = move |event: DeployProgress| {
        eprintln!("progress: {event:?}");
        if let DeployProgress::Finished {
            phase: Phase::Deploy,
            outcome: Ok(()),
            ..
        } = &event
        {
            rolled_out.notify_one();
        }
        sink.lock().unwrap().push(event);
    };
    let check = AlarmCheck {
        name: alarm.name.clone(),
        watch,
        interval: Duration::from_secs(1),
    };
    let mut deploy = Deploy::new(&aws, &request, DeployRecord::default())
        .verified(vec![check.into()], Redactor::new());
    deploy.prepare(&progress).await.unwrap();
    deploy.update(&progress).await.unwrap();
    let result = deploy.wait(&progress).await.map(|_| ());
    let reports = deploy.check_reports().to_vec();
    let events = events.lock().unwrap().clone();
    (result, reports, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_firing_while_it_is_watched_rolls_the_release_back() {
    let Some(env) = parts("alarm check that fires").await else {
        return;
    };
    let alarm = Alarm::create(env).await;
    let cluster = WebCluster::create(env, 1).await;
    let before = cluster.task_definition().await;
    let rolled_out = Arc::new(Notify::new());
    let waiting = rolled_out.clone();
    let firing = async {
        waiting.notified().await;
        // After the first looks, while the check still watches.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        alarm
            .set(
                StateValue::Alarm,
                "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0)",
            )
            .await;
    };
    let ((result, reports, events), ()) = tokio::join!(
        deploy_watching(env, &cluster, &alarm, Duration::from_secs(20), rolled_out),
        firing
    );
    let message = result.unwrap_err().to_string();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let report = &reports[0];
    assert!(!report.passed, "{report}");
    assert_eq!(report.url, format!("alarm {}", alarm.name));
    // The looks before the alarm fired saw it quiet; the first one after failed at once.
    assert!((3..=6).contains(&report.attempts), "{report}");
    assert!(report.elapsed < Duration::from_secs(10), "{report}");
    assert_eq!(
        report.last,
        LastAnswer::Alarm {
            state: "ALARM".into(),
            reason: "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0)"
                .into(),
        }
    );
    assert!(
        report.to_string().ends_with(
            "expected not in ALARM for 20s; last seen: ALARM (Threshold Crossed: 1 datapoint \
             [12.0] was greater than the threshold (5.0))"
        ),
        "{report}"
    );
    assert!(
        message.contains("All services run their previous revisions"),
        "{message}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeployProgress::RollbackStarted { .. }))
    );
    assert_eq!(cluster.task_definition().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_quiet_for_the_whole_watch_passes() {
    let Some(env) = parts("alarm check that stays quiet").await else {
        return;
    };
    let alarm = Alarm::create(env).await;
    let cluster = WebCluster::create(env, 1).await;
    let before = cluster.task_definition().await;
    let watch = Duration::from_secs(3);
    let (result, reports, _) =
        deploy_watching(env, &cluster, &alarm, watch, Arc::new(Notify::new())).await;
    result.unwrap_or_else(|error| panic!("{error}"));
    let report = &reports[0];
    assert!(report.passed, "{report}");
    // A look at once, every second, and one at the end.
    assert!((4..=5).contains(&report.attempts), "{report}");
    assert!(report.elapsed >= watch, "watched the whole time: {report}");
    assert_eq!(
        report.last,
        LastAnswer::Alarm {
            state: "OK".into(),
            reason: "quiet before the release".into(),
        }
    );
    assert_ne!(cluster.task_definition().await, before, "the service moved");
}
