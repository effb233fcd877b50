//! Per-user secrets as sealed bytes (see `platform/secrets.rs`): the store never sees a value
//! in the clear.

use super::{Store, StoreResult};
use crate::platform::model::SecretInfo;
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct SecretRow {
    name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Store {
    /// Creates or replaces a user's sealed secret: `Some(true)` created, `Some(false)` replaced,
    /// `None` refused because the user keeps `limit` secrets already. One transaction, so two
    /// concurrent creations cannot both pass the limit.
    pub async fn put_secret(
        &self,
        user_id: i64,
        name: &str,
        nonce: &[u8],
        sealed: &[u8],
        limit: usize,
    ) -> StoreResult<Option<bool>> {
        with_pool!(self, |pool| {
            let mut transaction = pool.begin().await?;
            let now = Utc::now();
            let replaced = sqlx::query(
                "UPDATE secrets SET nonce = $1, sealed = $2, updated_at = $3 WHERE user_id = $4 AND name = $5",
            )
            .bind(nonce)
            .bind(sealed)
            .bind(now)
            .bind(user_id)
            .bind(name)
            .execute(&mut *transaction)
            .await?
            .rows_affected()
                > 0;
            if !replaced {
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM secrets WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *transaction)
                    .await?;
                if usize::try_from(count).unwrap_or(usize::MAX) >= limit {
                    return Ok(None);
                }
                sqlx::query(
                "INSERT INTO secrets (user_id, name, nonce, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user_id)
            .bind(name)
            .bind(nonce)
            .bind(sealed)
            .bind(now)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
            }
            transaction.commit().await?;
            Ok(Some(!replaced))
        })
    }

    /// A user's secrets by name, without their values.
    pub async fn secrets_of(&self, user_id: i64) -> StoreResult<Vec<SecretInfo>> {
        with_pool!(self, |pool| {
            let rows: Vec<SecretRow> =
                sqlx::query_as("SELECT name, created_at, updated_at FROM secrets WHERE user_id = $1 ORDER BY name")
                    .bind(user_id)
                    .fetch_all(pool)
                    .await?;
            Ok(rows
                .into_iter()
                .map(|row| SecretInfo { name: row.name, created_at: row.created_at, updated_at: row.updated_at })
                .collect())
        })
    }

    /// Deletes a user's secret; whether there was one.
    pub async fn delete_secret(&self, user_id: i64, name: &str) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            let result = sqlx::query("DELETE FROM secrets WHERE user_id = $1 AND name = $2")
                .bind(user_id)
                .bind(name)
                .execute(pool)
                .await?;
            Ok(result.rows_affected() > 0)
        })
    }

    /// A user's sealed secret: its nonce and sealed bytes.
    pub async fn sealed_secret(&self, user_id: i64, name: &str) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT nonce, sealed FROM secrets WHERE user_id = $1 AND name = $2")
                .bind(user_id)
                .bind(name)
                .fetch_optional(pool)
                .await?)
        })
    }
}
