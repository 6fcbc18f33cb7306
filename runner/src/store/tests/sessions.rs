//! The contract of web sessions on both stores (kept under a hash of their id, shared by every
//! handle, expired by the store's clock, ended by deleting), and an SQLite store of schema
//! version 2 opened by this build.

use super::*;

contract_tests!(
    a_session_is_shared_by_every_handle_until_it_is_deleted,
    a_session_expires_by_the_store_clock,
);

fn signed_in(approver: &str, csrf: &str) -> SessionRecord {
    SessionRecord {
        approver: Some(approver.into()),
        csrf: csrf.into(),
    }
}

async fn a_session_is_shared_by_every_handle_until_it_is_deleted(fixture: Fixture) {
    let first = fixture.open().await;
    let second = fixture.open().await;
    let ttl = Duration::from_secs(3600);
    let id = "5f".repeat(32);
    let anonymous = SessionRecord {
        approver: None,
        csrf: "form-token".into(),
    };

    assert_eq!(first.session(&id).await.unwrap(), None);
    first.put_session(&id, &anonymous, ttl).await.unwrap();
    assert_eq!(second.session(&id).await.unwrap(), Some(anonymous));

    let alice = signed_in("alice", "alice-csrf");
    second.put_session(&id, &alice, ttl).await.unwrap();
    assert_eq!(first.session(&id).await.unwrap(), Some(alice.clone()));
    assert_eq!(first.session(&"60".repeat(32)).await.unwrap(), None);

    first.delete_session(&id).await.unwrap();
    assert_eq!(second.session(&id).await.unwrap(), None);
    second.delete_session(&id).await.unwrap();
}

async fn a_session_expires_by_the_store_clock(fixture: Fixture) {
    let time = ManualClock::starting_at(start());
    let store = fixture.open_with_clock(time.clock()).await;
    let (short, long) = ("a1".repeat(32), "b2".repeat(32));
    store
        .put_session(&short, &signed_in("alice", "one"), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .put_session(&long, &signed_in("bob", "two"), Duration::from_secs(600))
        .await
        .unwrap();

    time.advance(Duration::from_secs(59));
    assert!(store.session(&short).await.unwrap().is_some());
    time.advance(Duration::from_secs(1));
    assert_eq!(store.session(&short).await.unwrap(), None);
    assert_eq!(
        store.session(&long).await.unwrap(),
        Some(signed_in("bob", "two"))
    );

    // Writing it again starts its time again.
    store
        .put_session(
            &short,
            &signed_in("alice", "three"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        store.session(&short).await.unwrap(),
        Some(signed_in("alice", "three"))
    );
}

/// The SQLite file holds the SHA-256 of a session id and never the id itself, and expired
/// sessions are deleted when another is written.
#[tokio::test]
async fn the_sqlite_store_keeps_a_hash_of_the_session_id_and_drops_expired_ones() {
    let directory = tempfile::tempdir().unwrap();
    let time = ManualClock::starting_at(start());
    let store = open_sqlite(&state_path(&directory))
        .unwrap()
        .with_clock(time.clock());
    let id = "c3".repeat(32);
    store
        .put_session(&id, &signed_in("alice", "csrf"), Duration::from_secs(60))
        .await
        .unwrap();
    let rows = || -> Vec<String> {
        let connection = rusqlite::Connection::open(state_path(&directory)).unwrap();
        let mut statement = connection.prepare("SELECT key FROM sessions").unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(rows(), vec![crate::store::sessions::session_key(&id)]);
    assert_ne!(rows()[0], id);
    assert_eq!(rows()[0].len(), 64);

    time.advance(Duration::from_secs(61));
    let other = "d4".repeat(32);
    store
        .put_session(&other, &signed_in("bob", "csrf"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(rows(), vec![crate::store::sessions::session_key(&other)]);
}

/// A store written by an envelope-runner with schema version 2 (no sessions) opens, is
/// migrated, keeps its lease and keeps sessions from then on.
#[tokio::test]
async fn a_version_2_store_is_migrated_and_keeps_sessions() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let far = Utc::now().timestamp_millis() + 3_600_000;
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        for step in &schema::MIGRATIONS[..2] {
            connection.execute_batch(step).unwrap();
        }
        connection
            .pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        connection.pragma_update(None, "user_version", 2).unwrap();
        connection
            .execute(
                "INSERT INTO leases (key, holder, expires_at_ms, generation)
                 VALUES ('pipeline:api:gate', 'run-old', ?1, 4)",
                [far],
            )
            .unwrap();
    }
    let store = open_sqlite(&path).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::SUPPORTED_VERSION);
    assert!(version >= 3);
    assert!(
        store
            .confirm_lease("pipeline:api:gate", "run-old", 4, Duration::from_secs(30))
            .await
            .unwrap()
    );
    let id = "e5".repeat(32);
    store
        .put_session(&id, &signed_in("alice", "csrf"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.session(&id).await.unwrap(),
        Some(signed_in("alice", "csrf"))
    );
}
