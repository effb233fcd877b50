//! Persistence: the SQLite database behind users, tokens, functions and (later) instances.
//!
//! The schema lives in `migrations/` and is applied at start-up; every query goes through the
//! repositories in this module so the rest of the platform never writes SQL.

mod async_invocations;
mod functions;
mod instances;
mod quotas;
mod secrets;
mod tokens;
mod triggers;
mod usage;
mod users;

pub use async_invocations::{AsyncCall, AsyncRecord, AttemptResult, NewAsync};
pub use functions::FunctionRecord;
pub use instances::{InstanceRecord, InvocationRow};
pub use triggers::TriggerRecord;
pub use users::UserRecord;

use parking_lot::Mutex;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the database {url}; check --database-url and that its directory exists and is writable")]
    Open {
        /// The URL as configured.
        url: String,
        /// What SQLite said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database schema; the database may be from a newer kubefn or damaged")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A unique column already holds the value.
    #[error("a {what} with that {field} exists already")]
    Duplicate {
        /// The kind of record.
        what: &'static str,
        /// The unique field.
        field: &'static str,
    },
    /// A query failed.
    #[error("a database query failed")]
    Query(#[source] sqlx::Error),
    /// A stored JSON document could not be read back.
    #[error("a stored {what} cannot be read back")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        StoreError::Query(source)
    }
}

/// Maps a unique-constraint violation to [`StoreError::Duplicate`], anything else to a query error.
fn duplicate_or_query(source: sqlx::Error, what: &'static str, field: &'static str) -> StoreError {
    match source.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Duplicate { what, field },
        _ => StoreError::Query(source),
    }
}

/// The database: a pool of SQLite connections in WAL mode.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    invocations: Arc<Mutex<instances::InvocationCache>>,
}

impl Store {
    /// Opens (creating if missing) the database at `url` and applies every pending migration.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let store = Store::open_unmigrated(url).await?;
        MIGRATOR.run(&store.pool).await.map_err(StoreError::Migrate)?;
        Ok(store)
    }

    /// Opens the database without touching its schema (tests use it to build old schemas).
    pub async fn open_unmigrated(url: &str) -> StoreResult<Store> {
        let open_error = |source| StoreError::Open { url: url.to_string(), source };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL sync is durable across application crashes; only an OS crash may lose the last commit.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await.map_err(open_error)?;
        Ok(Store { pool, invocations: Arc::default() })
    }

    /// The connection pool, for the session store and for tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A migrated store in a new temporary directory (kept while the directory lives), for the
/// store modules' tests.
#[cfg(test)]
pub(super) async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&format!("sqlite://{}", dir.path().join("kubefn.db").display())).await.expect("store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::Migrator;

    fn temp_db() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("kubefn.db").display());
        (dir, url)
    }

    #[tokio::test]
    async fn migrates_an_empty_database() {
        let (_dir, url) = temp_db();
        let store = Store::open(&url).await.expect("open");
        let tables: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(store.pool())
                .await
                .expect("tables");
        let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
        for wanted in [
            "api_tokens",
            "async_invocations",
            "events",
            "function_versions",
            "functions",
            "instances",
            "trigger_runs",
            "triggers",
            "usage_samples",
            "users",
        ] {
            assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
        }
        // Opening again is a no-op, not an error.
        Store::open(&url).await.expect("reopen");
    }

    /// A database made by the previous migration set (all but the newest migration), with data
    /// in it, is upgraded by the current set and keeps its data.
    #[tokio::test]
    async fn upgrades_a_database_made_by_the_previous_migration_set() {
        let (_dir, url) = temp_db();
        let old = Store::open_unmigrated(&url).await.expect("open");
        let mut previous = Migrator { migrations: MIGRATOR.migrations.clone(), ..Migrator::DEFAULT };
        let mut migrations = previous.migrations.to_vec();
        let newest = migrations.pop().expect("at least one migration");
        previous.migrations = migrations.into();
        previous.run(old.pool()).await.expect("previous migrations");

        let user = old.insert_user("alice", "hash", crate::platform::model::Role::User).await.expect("user");
        let spec = crate::platform::model::FunctionSpec::new(
            "hello",
            crate::platform::model::Language::Python,
            "def handle(req):\n    return req\n",
        );
        old.insert_function(user.id, &spec).await.expect("function");
        old.pool().close().await;

        let upgraded = Store::open(&url).await.expect("upgrade");
        let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(upgraded.pool())
            .await
            .expect("applied");
        assert_eq!(applied.last().map(|v| v.0), Some(newest.version));
        let function = upgraded.function_by_name("hello").await.expect("query").expect("kept");
        assert_eq!(function.owner, "alice");
        let (_, kept_spec) = upgraded.version_spec(function.id, 1).await.expect("query").expect("version kept");
        assert_eq!(kept_spec, spec);
        assert_eq!(upgraded.user_by_name("alice").await.expect("query").map(|u| u.id), Some(user.id));
    }
}
