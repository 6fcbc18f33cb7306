//! What only the SQLite store has: its file (created with its directory, reopened with
//! everything kept), its schema version, damaged or foreign files left alone, many processes
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

#[test]
fn a_database_with_damaged_pages_is_reported_and_left_alone() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    {
        let store = open_sqlite(&path).unwrap();
        for _ in 0..200 {
            runtime.block_on(store.create_run(&new_run("api"))).unwrap();
        }
    }
    let mut damaged = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(damaged.len() > 6 * page, "the test needs several pages");
    for byte in &mut damaged[2 * page..5 * page] {
        *byte = 0xa5;
    }
    std::fs::write(&path, &damaged).unwrap();

    let error = open_sqlite(&path).unwrap_err();

    assert_corrupt_and_untouched(&error, &path, &damaged);
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
