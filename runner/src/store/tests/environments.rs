//! The contract for runs in environments (`pipeline::environment`): runs recorded under
//! `PIPELINE@ENVIRONMENT` keep their own history and deploy lock, apart from the pipeline's
//! other environments and its runs without one, on both stores.

use super::*;
use crate::pipeline::environment::run_key;

contract_tests!(
    each_environment_lists_its_own_runs,
    each_environment_has_its_own_deploy_lock,
);

async fn each_environment_lists_its_own_runs(fixture: Fixture) {
    let store = fixture.open().await;
    let keys = [
        run_key("api", None),
        run_key("api", Some("staging")),
        run_key("api", Some("prod")),
        run_key("api", Some("staging")),
        run_key("tenant", Some("staging")),
    ];
    for (number, key) in keys.iter().enumerate() {
        store
            .create_run(&run_with_id(&format!("01env{number:02}"), key))
            .await
            .unwrap();
    }
    let listed = |pipeline: String| {
        let store = store.clone();
        async move {
            store
                .list_runs(Some(&pipeline), 100, None)
                .await
                .unwrap()
                .into_iter()
                .map(|summary| (summary.id.0, summary.pipeline))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(run_key("api", Some("staging"))).await,
        [
            ("01env03".to_owned(), "api@staging".to_owned()),
            ("01env01".to_owned(), "api@staging".to_owned())
        ]
    );
    assert_eq!(
        listed(run_key("api", Some("prod"))).await,
        [("01env02".to_owned(), "api@prod".to_owned())]
    );
    assert_eq!(
        listed(run_key("api", None)).await,
        [("01env00".to_owned(), "api".to_owned())]
    );
    let read = store.get_run(&RunId("01env01".into())).await.unwrap();
    assert_eq!(read.map(|run| run.pipeline).as_deref(), Some("api@staging"));
}

async fn each_environment_has_its_own_deploy_lock(fixture: Fixture) {
    let time = ManualClock::starting_at(start());
    let first = fixture.open_with_clock(time.clock()).await;
    let second = fixture.open_with_clock(time.clock()).await;
    let ttl = Duration::from_secs(30);
    let gate = |environment: Option<&str>| format!("pipeline:{}:gate", run_key("api", environment));

    let granted = |outcome: LeaseOutcome| matches!(outcome, LeaseOutcome::Granted { .. });
    assert!(granted(
        first
            .acquire_lease(&gate(Some("staging")), "run-staging", ttl)
            .await
            .unwrap()
    ));
    // Staging's deploy does not hold up prod's, nor a run without an environment.
    assert!(granted(
        second
            .acquire_lease(&gate(Some("prod")), "run-prod", ttl)
            .await
            .unwrap()
    ));
    assert!(granted(
        second
            .acquire_lease(&gate(None), "run-plain", ttl)
            .await
            .unwrap()
    ));
    // A second staging run waits for the first.
    assert_eq!(
        second
            .acquire_lease(&gate(Some("staging")), "run-staging-2", ttl)
            .await
            .unwrap(),
        LeaseOutcome::Held {
            by: "run-staging".into(),
            expires_at: start() + ttl
        }
    );
}
