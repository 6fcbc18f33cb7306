//! What only the SQLite store has: its file (created with its directory, reopened with
//! everything kept), its schema version, damaged or foreign files left alone (pages checked
//! after an unclean shutdown and on demand), many processes
//! creating it at once, and the store URLs that name it.

use super::*;

#[tokio::test]
async fn reopening_keeps_everything_and_records_the_schema_version() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    let run = new_run("api");
    open_sqlite(&path).unwrap().create_run(&run).await.unwrap();

    let reopened = open_sqlite(&path).unwrap();

    assert_eq!(reopened.get_run(&run.id).await.unwrap(), Some(run));
    let connection = rusqlite::Connection::open(&path).unwrap();
    let pragma = |name| -> i64 {
        connection
            .pragma_query_value(None, name, |row| row.get(0))
            .unwrap()
    };
    assert_eq!(pragma("user_version"), schema::SUPPORTED_VERSION);
    assert_eq!(pragma("application_id"), schema::APPLICATION_ID);
    let journal: String = connection
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn a_store_from_a_newer_version_is_refused_and_left_alone() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    drop(open_sqlite(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let before = std::fs::read(&path).unwrap();

    let error = open_sqlite(&path).unwrap_err();

    assert!(
        matches!(&error, StoreError::NewerSchema { found: 999, supported, .. } if *supported == schema::SUPPORTED_VERSION),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("upgrade envelope-runner"), "{message}");
    assert!(message.contains("not modified"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_file_that_is_not_a_database_is_reported_and_left_alone() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|n| (n * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();

    let error = open_sqlite(&path).unwrap_err();

    assert_corrupt_and_untouched(&error, &path, &garbage);
}

/// A store of 200 runs, and a runtime to call it with.
fn store_of_200_runs(path: &Path) -> (SqliteStore, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let store = open_sqlite(path).unwrap();
    for _ in 0..200 {
        runtime.block_on(store.create_run(&new_run("api"))).unwrap();
    }
    (store, runtime)
}

/// Overwrites pages 2 to 4 of the file at `path` (the first tables' b-trees); the new bytes.
fn damage_pages(path: &Path) -> Vec<u8> {
    let mut damaged = std::fs::read(path).unwrap();
    let page = 4096;
    assert!(damaged.len() > 6 * page, "the test needs several pages");
    for byte in &mut damaged[2 * page..5 * page] {
        *byte = 0xa5;
    }
    std::fs::write(path, &damaged).unwrap();
    damaged
}

#[test]
fn damaged_pages_of_a_cleanly_closed_store_fail_the_first_read_of_them_and_the_check() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    drop(store_of_200_runs(&path));
    let wal = path.with_extension("db-wal");
    assert!(!wal.exists(), "closing the last connection removes the log");
    let damaged = damage_pages(&path);

    // Opening does not read every page: it costs the same however many runs there are.
    let store = open_sqlite(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let error = runtime
        .block_on(store.list_runs(Some("api"), usize::MAX, None))
        .map(|runs| runs.len())
        .unwrap_err();
    drop(store);
    assert_corrupt_and_untouched(&error, &path, &damaged);

    let error = crate::store::check_sqlite(&path).unwrap_err();
    assert_corrupt_and_untouched(&error, &path, &damaged);
}

#[test]
fn an_intact_store_passes_the_check() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    drop(store_of_200_runs(&path));
    crate::store::check_sqlite(&path).unwrap();
    let error = crate::store::check_sqlite(&directory.path().join("missing.db")).unwrap_err();
    assert!(error.to_string().contains("missing.db"), "{error}");
}

#[test]
fn a_store_left_open_by_a_process_that_died_is_checked_before_use() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    let (store, runtime) = store_of_200_runs(&path);
    // Move every run into the main file and start the log again, then write a lease: the log
    // a crash now leaves behind holds only the lease's page, not the pages damaged below.
    let side = rusqlite::Connection::open(&path).unwrap();
    side.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(side);
    runtime
        .block_on(store.acquire_lease("pipeline:api:gate", "run-a", Duration::from_secs(60)))
        .unwrap();
    // The files as a process killed at this moment leaves them.
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("state.db");
    std::fs::copy(&path, &copy).unwrap();
    let log = std::fs::read(path.with_extension("db-wal")).unwrap();
    assert!(!log.is_empty(), "the open store has a log");
    std::fs::write(copy.with_extension("db-wal"), &log).unwrap();
    drop(store);
    let damaged = damage_pages(&copy);

    let error = open_sqlite(&copy).unwrap_err();

    assert_corrupt_and_untouched(&error, &copy, &damaged);
}

#[test]
fn a_second_process_opening_a_store_in_use_does_not_check_it() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    let (store, _runtime) = store_of_200_runs(&path);
    assert!(path.with_extension("db-wal").exists());
    // Pages damaged under a running process are found when read, not when another opens.
    damage_pages(&path);
    let second = open_sqlite(&path);
    assert!(second.is_ok(), "{:?}", second.err());
    drop((second, store));
}

fn assert_corrupt_and_untouched(error: &StoreError, path: &Path, contents: &[u8]) {
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("not modified"), "{message}");
    assert!(message.contains("mv "), "{message}");
    assert!(std::fs::read(path).unwrap() == contents, "the file changed");
}

#[test]
fn another_programs_database_is_refused_and_left_alone() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("app.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    let before = std::fs::read(&path).unwrap();

    let error = open_sqlite(&path).unwrap_err();

    assert!(matches!(error, StoreError::Foreign { .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn several_processes_creating_the_store_at_once_all_succeed() {
    for _ in 0..10 {
        let directory = tempfile::tempdir().unwrap();
        let path = state_path(&directory);
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || open_sqlite(&path).map(drop))
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
    }
}

#[test]
fn store_urls() {
    let sqlite = |path: &str| Ok(StoreLocation::Sqlite(PathBuf::from(path)));
    let cases = [
        (".envelope/state.db", sqlite(".envelope/state.db")),
        ("sqlite:state.db", sqlite("state.db")),
        (
            "sqlite:///var/lib/envelope/state.db",
            sqlite("/var/lib/envelope/state.db"),
        ),
        (
            "dynamodb://envelope-runs",
            Ok(StoreLocation::DynamoDb {
                table: "envelope-runs".into(),
            }),
        ),
        ("postgres://db/runs", Err(())),
        ("sqlite:", Err(())),
        ("dynamodb://", Err(())),
        ("", Err(())),
    ];
    for (url, expected) in cases {
        assert_eq!(StoreLocation::parse(url).map_err(|_| ()), expected, "{url}");
    }
}

#[tokio::test]
async fn open_creates_the_store_and_its_directory() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("deep").join("er").join("state.db");

    let store = open(&format!("sqlite:{}", path.display())).await.unwrap();

    store.create_run(&new_run("api")).await.unwrap();
    assert!(path.is_file());
}
