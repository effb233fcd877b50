//! PostgreSQL for the integration tests: the store tests' own harness (one file serves both),
//! a server per test binary started by `tests/postgres/start.sh` and a fresh database per call.
#![allow(dead_code)]

pub use kubefn::platform::store::Store;

#[path = "../../src/platform/store/test_databases.rs"]
mod test_databases;

/// The URL of a fresh, migrated PostgreSQL database; `None` when the server cannot start
/// outside CI (under `CI=true` that fails the test).
pub async fn fresh_database() -> Option<String> {
    test_databases::test_stores().await.into_iter().map(|test| test.url).find(|url| url.starts_with("postgres://"))
}
