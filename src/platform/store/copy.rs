//! Moving an installation from SQLite to PostgreSQL (`kubefn migrate-db`): every record, ids
//! kept, in one PostgreSQL transaction, so a copy that fails leaves the target as it was.

use super::{DatabasePool, Store, StoreError, StoreResult, numbered_parameters};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// The tables copied, in an order their references allow. Sessions are not copied (users log in
/// again), nor leases and rate-limit attempts (they describe the running processes).
const COPIED_TABLES: &[&str] = &[
    "users",
    "api_tokens",
    "functions",
    "function_versions",
    "instances",
    "triggers",
    "usage_samples",
    "events",
    "trigger_runs",
    "async_invocations",
    "user_quotas",
    "secrets",
];

/// The tables whose `id` PostgreSQL numbers itself: their counters move past the copied ids.
const NUMBERED_TABLES: &[&str] = &["users", "api_tokens", "functions", "triggers", "events", "trigger_runs"];

impl Store {
    /// Copies every record of this store, a SQLite one, into `target`, a migrated and empty
    /// PostgreSQL one; how many rows each table had.
    pub async fn copy_into(&self, target: &Store) -> StoreResult<Vec<(&'static str, u64)>> {
        let (DatabasePool::Sqlite(source), DatabasePool::Postgres(target)) = (&self.pool, &target.pool) else {
            return Err(StoreError::CopyDirection);
        };
        let mut transaction = target.begin().await?;
        let mut copied = Vec::with_capacity(COPIED_TABLES.len());
        for table in COPIED_TABLES {
            let (present,): (i64,) =
                sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *transaction).await?;
            if present > 0 {
                return Err(StoreError::TargetNotEmpty { table });
            }
            let columns: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut *transaction)
            .await?;
            let names: Vec<String> = columns.iter().map(|(name, _)| format!("\"{name}\"")).collect();
            let values = numbered_parameters(1, columns.len());
            let insert = format!("INSERT INTO {table} ({}) VALUES ({values})", names.join(", "));
            let rows = sqlx::query(&format!("SELECT {} FROM {table}", names.join(", "))).fetch_all(source).await?;
            for row in &rows {
                let mut query = sqlx::query(&insert);
                for (index, (_, kind)) in columns.iter().enumerate() {
                    // Each value read as the type PostgreSQL keeps it in, so SQLite's text times
                    // and 0/1 flags arrive as times and booleans.
                    query = match kind.as_str() {
                        "bigint" | "integer" | "smallint" => query.bind(row.try_get::<Option<i64>, _>(index)?),
                        "boolean" => query.bind(row.try_get::<Option<bool>, _>(index)?),
                        "double precision" | "real" => query.bind(row.try_get::<Option<f64>, _>(index)?),
                        "bytea" => query.bind(row.try_get::<Option<Vec<u8>>, _>(index)?),
                        "timestamp with time zone" => query.bind(row.try_get::<Option<DateTime<Utc>>, _>(index)?),
                        _ => query.bind(row.try_get::<Option<String>, _>(index)?),
                    };
                }
                query.execute(&mut *transaction).await?;
            }
            copied.push((*table, u64::try_from(rows.len()).unwrap_or(u64::MAX)));
        }
        for table in NUMBERED_TABLES {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            ))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::Role;

    #[tokio::test]
    async fn a_sqlite_installation_moves_to_postgresql_whole_and_only_into_an_empty_database() {
        let stores = super::super::test_databases::test_stores().await;
        let (Some(sqlite), Some(postgres)) =
            (stores.iter().find(|s| !s.store.is_shared()), stores.iter().find(|s| s.store.is_shared()))
        else {
            return;
        };
        let (source, target) = (&sqlite.store, &postgres.store);
        let alice = source.insert_user("alice", "hash-a", Role::User).await.expect("user");
        let admin = source.insert_user("root", "hash-r", Role::Admin).await.expect("user");
        source.insert_token(alice.id, "ci", "token-hash").await.expect("token");

        let copied = source.copy_into(target).await.expect("copied");
        assert_eq!(copied.iter().find(|(table, _)| *table == "users").map(|(_, rows)| *rows), Some(2));
        let moved = target.user_by_name("alice").await.expect("read").expect("alice moved");
        assert_eq!((moved.id, moved.password_hash.as_str()), (alice.id, "hash-a"), "ids and hashes kept");
        assert_eq!(target.user_by_id(admin.id).await.expect("read").map(|u| u.role), Some(Role::Admin));
        assert_eq!(target.user_by_token_hash("token-hash").await.expect("read").map(|u| u.name), Some("alice".into()));
        let next = target.insert_user("bob", "hash-b", Role::User).await.expect("a new user after the copy");
        assert!(next.id > admin.id, "new ids follow the copied ones");

        let again = source.copy_into(target).await.expect_err("the target holds data now");
        assert!(matches!(again, StoreError::TargetNotEmpty { table: "users" }), "{again}");
        assert!(matches!(target.copy_into(source).await, Err(StoreError::CopyDirection)));
    }
}
