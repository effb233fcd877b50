//! Persistence: the database behind users, tokens, functions, instances and everything else
//! kubefn keeps. SQLite (a file, the embedded default) or PostgreSQL (several kubefn processes on
//! one database), chosen by the URL's scheme.
//!
//! The schema lives in `migrations/sqlite` and `migrations/postgres` (the same tables in each
//! database's types) and is applied at start-up. Every query goes through the repositories in
//! this module so the rest of the platform never writes SQL. The queries are written once, in the
//! SQL both databases read (`$1` parameters, `ON CONFLICT`, `RETURNING`, `TRUE`/`FALSE`), and
//! [`with_pool!`] compiles each for both drivers, so either database gets its own native types
//! (times, flags, bytes) rather than a lowest common denominator.

/// Runs `$body` with `$pool` bound to the store's pool, whichever database it is: the body is
/// compiled once per driver, and each query's database type follows from the pool it runs on.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::platform::store::DatabasePool::Sqlite($pool) => $body,
            $crate::platform::store::DatabasePool::Postgres($pool) => $body,
        }
    };
}

mod async_invocations;
mod attempts;
mod copy;
mod functions;
mod instances;
mod invocations;
mod leases;
mod quotas;
mod secrets;
mod tokens;
mod triggers;
mod usage;
mod users;

pub use async_invocations::{AsyncCall, AsyncRecord, AttemptResult, NewAsync};
pub use functions::FunctionRecord;
pub use instances::InstanceRecord;
pub use invocations::InvocationRow;
pub use triggers::TriggerRecord;
pub use users::UserRecord;

use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The SQLite schema migrations, embedded in the binary.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The PostgreSQL schema migrations, embedded in the binary.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error(
        "cannot open the database {url}; check --database-url (for SQLite, that its directory exists and is writable; for PostgreSQL, that the server answers and the database exists)"
    )]
    Open {
        /// The URL as configured, without its password.
        url: String,
        /// What the driver said.
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
    /// `kubefn migrate-db` was asked to copy other than from SQLite to PostgreSQL.
    #[error(
        "kubefn migrate-db copies from a SQLite database (--from sqlite://…) to a PostgreSQL one (--to postgres://…)"
    )]
    CopyDirection,
    /// The target of `kubefn migrate-db` holds records already.
    #[error("the target database already has rows in {table}; migrate into a new, empty database")]
    TargetNotEmpty {
        /// The first table found with rows.
        table: &'static str,
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

/// `count` numbered query parameters from `$first` on ("$3, $4, $5"), which both databases take:
/// for an `IN (…)` list or a row's values, bound in the same order.
fn numbered_parameters(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// The connection pool of whichever database the store runs on.
#[derive(Clone, Debug)]
pub enum DatabasePool {
    /// A SQLite file in WAL mode: one kubefn process (the embedded default).
    Sqlite(SqlitePool),
    /// A PostgreSQL database: one or several kubefn processes.
    Postgres(PgPool),
}

/// The database behind kubefn.
#[derive(Clone, Debug)]
pub struct Store {
    pool: DatabasePool,
    invocations: Arc<Mutex<invocations::InvocationCache>>,
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` without the password it may carry, for messages and logs.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password cannot fail on a URL that has one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Opens (creating a missing SQLite file) the database at `url` and applies every pending
    /// migration.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let store = Store::open_unmigrated(url).await?;
        match &store.pool {
            DatabasePool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
            DatabasePool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
        }
        .map_err(StoreError::Migrate)?;
        Ok(store)
    }

    /// Opens the database without touching its schema (tests use it to build old schemas).
    pub async fn open_unmigrated(url: &str) -> StoreResult<Store> {
        let open_error = |source| StoreError::Open { url: without_password(url), source };
        let pool = if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url).map_err(open_error)?;
            // Several kubefn processes share the server's connections: a modest pool each.
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(open_error)?;
            DatabasePool::Postgres(pool)
        } else {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(open_error)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL with NORMAL sync is durable across application crashes; only an OS crash may lose the last commit.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await.map_err(open_error)?;
            DatabasePool::Sqlite(pool)
        };
        Ok(Store { pool, invocations: Arc::default() })
    }

    /// The connection pool, for the session store and for tests.
    pub fn pool(&self) -> &DatabasePool {
        &self.pool
    }

    /// Whether several kubefn processes may share this database (PostgreSQL), rather than one
    /// process owning it (a SQLite file).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, DatabasePool::Postgres(_))
    }

    /// Closes every connection: later queries fail at once.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        })
    }

    /// The SQL reading top-level field `field` of the JSON document in `column` (the one thing
    /// the two databases spell differently): SQLite's `json_extract`, PostgreSQL's `jsonb`
    /// operators.
    fn json_field(&self, column: &str, field: &str, read_as: JsonField) -> String {
        match (&self.pool, read_as) {
            (DatabasePool::Sqlite(_), _) => format!("json_extract({column}, '$.{field}')"),
            (DatabasePool::Postgres(_), JsonField::Text) => format!("(CAST({column} AS jsonb) ->> '{field}')"),
            (DatabasePool::Postgres(_), JsonField::Integer) => {
                format!("CAST(CAST({column} AS jsonb) ->> '{field}' AS BIGINT)")
            }
            (DatabasePool::Postgres(_), JsonField::Document) => {
                format!("CAST(CAST({column} AS jsonb) -> '{field}' AS TEXT)")
            }
        }
    }
}

/// How [`Store::json_field`] reads a field.
#[derive(Clone, Copy, Debug)]
enum JsonField {
    /// A string, as text.
    Text,
    /// A number, as a 64-bit integer.
    Integer,
    /// An object or array, as its JSON text.
    Document,
}

#[cfg(test)]
pub(crate) mod test_databases;

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::Migrator;

    fn temp_db() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("kubefn.db").display());
        (dir, url)
    }

    #[test]
    fn numbered_parameters_count_on_from_the_first() {
        assert_eq!(numbered_parameters(3, 3), "$3, $4, $5");
        assert_eq!(numbered_parameters(1, 1), "$1");
        assert_eq!(numbered_parameters(2, 0), "");
    }

    #[tokio::test]
    async fn migrates_an_empty_database() {
        for test_databases::TestStore { store, url, .. } in test_databases::test_stores().await {
            let tables: Vec<(String,)> = with_pool!(store, |pool| {
                let catalog = match store.pool() {
                    DatabasePool::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                    DatabasePool::Postgres(_) => {
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
                    }
                };
                sqlx::query_as(catalog).fetch_all(pool).await.expect("tables")
            });
            let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
            for wanted in [
                "api_tokens",
                "async_invocations",
                "events",
                "function_versions",
                "functions",
                "instances",
                "secrets",
                "trigger_runs",
                "triggers",
                "usage_samples",
                "user_quotas",
                "users",
            ] {
                assert!(names.contains(&wanted), "{wanted} missing from {names:?} ({url})");
            }
            // Opening again is a no-op, not an error.
            Store::open(&url).await.expect("reopen");
        }
    }

    /// Both databases are at the same schema version: a migration added to one directory and
    /// not the other fails here.
    #[test]
    fn both_databases_have_the_same_newest_migration() {
        let newest = |migrator: &Migrator| migrator.migrations.iter().map(|m| m.version).max();
        assert_eq!(newest(&SQLITE_MIGRATOR), newest(&POSTGRES_MIGRATOR));
    }

    /// A SQLite database made by the previous migration set (all but the newest migration), with
    /// data in it, is upgraded by the current set and keeps its data. (PostgreSQL's schema starts
    /// at the current version; its upgrades start with the next migration.)
    #[tokio::test]
    async fn upgrades_a_database_made_by_the_previous_migration_set() {
        let (_dir, url) = temp_db();
        let old = Store::open_unmigrated(&url).await.expect("open");
        let mut previous = Migrator { migrations: SQLITE_MIGRATOR.migrations.clone(), ..Migrator::DEFAULT };
        let mut migrations = previous.migrations.to_vec();
        let newest = migrations.pop().expect("at least one migration");
        previous.migrations = migrations.into();
        let DatabasePool::Sqlite(old_pool) = old.pool() else { panic!("a sqlite:// URL opens SQLite") };
        previous.run(old_pool).await.expect("previous migrations");

        let user = old.insert_user("alice", "hash", crate::platform::model::Role::User).await.expect("user");
        let spec = crate::platform::model::FunctionSpec::new(
            "hello",
            crate::platform::model::Language::Python,
            "def handle(req):\n    return req\n",
        );
        old.insert_function(user.id, &spec).await.expect("function");
        old_pool.close().await;

        let upgraded = Store::open(&url).await.expect("upgrade");
        let applied: Vec<(i64,)> = with_pool!(upgraded, |pool| {
            sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .expect("applied")
        });
        assert_eq!(applied.last().map(|v| v.0), Some(newest.version));
        let function = upgraded.function_by_name("hello").await.expect("query").expect("kept");
        assert_eq!(function.owner, "alice");
        let (_, kept_spec) = upgraded.version_spec(function.id, 1).await.expect("query").expect("version kept");
        assert_eq!(kept_spec, spec);
        assert_eq!(upgraded.user_by_name("alice").await.expect("query").map(|u| u.id), Some(user.id));
    }
}
