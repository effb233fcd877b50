//! Databases for the store's tests: a SQLite file each, and a database each on a PostgreSQL
//! server this test binary starts once (`tests/postgres/start.sh`, stopped by its watchdog when
//! the binary exits), so every store test runs against both. Outside CI a machine that cannot
//! start PostgreSQL runs SQLite only and says so; under `CI=true` that fails the run.

use super::Store;
use std::process::Command;
use std::sync::OnceLock;

/// A migrated store on a fresh database, with what keeps it alive.
pub(crate) struct TestStore {
    /// The store.
    pub store: Store,
    /// Its URL, to open a second store on the same database (another kubefn process).
    pub url: String,
    /// The SQLite file's directory (none for PostgreSQL).
    _dir: Option<tempfile::TempDir>,
}

/// The URL of the test binary's PostgreSQL server, started on first use; `None` when it cannot
/// start outside CI.
fn postgres_server() -> Option<&'static str> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let dir = tempfile::Builder::new().prefix("kubefn-test-pg.").tempdir().expect("temp dir").keep();
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            let started = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/postgres/start.sh"))
                .arg(&dir)
                .arg(port.to_string())
                .env("KUBEFN_PG_OWNER_PID", std::process::id().to_string())
                .output();
            match started {
                Ok(output) if output.status.success() => {
                    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
                }
                other => {
                    let why = match other {
                        Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
                        Err(error) => error.to_string(),
                    };
                    // No server and no watchdog: nothing else would remove it.
                    let _ = std::fs::remove_dir_all(&dir);
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "PostgreSQL did not start (CI needs it): {why}"
                    );
                    eprintln!("PostgreSQL did not start, so the store tests run on SQLite only: {why}");
                    None
                }
            }
        })
        .as_deref()
}

/// A migrated store on a new SQLite file and, when the server runs, one on a new PostgreSQL
/// database.
pub(crate) async fn test_stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("kubefn.db").display());
    let mut stores = vec![TestStore { store: Store::open(&url).await.expect("SQLite store"), url, _dir: Some(dir) }];
    if let Some(server) = postgres_server() {
        let name = format!("kubefn_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await.expect("the test server answers");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("a test database");
        admin.close().await;
        let url = format!("{server}/{name}");
        stores.push(TestStore { store: Store::open(&url).await.expect("PostgreSQL store"), url, _dir: None });
    }
    stores
}
