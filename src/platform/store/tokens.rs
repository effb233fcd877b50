//! API tokens: only a SHA-256 of each secret is stored.

use super::users::{UserRecord, UserRow};
use super::{Store, StoreResult, duplicate_or_query};
use crate::platform::model::TokenInfo;
use chrono::{DateTime, Utc};

/// How stale `last_used_at` may get, in seconds.
const LAST_USED_RESOLUTION_S: i64 = 60;

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TokenOwnerRow {
    token_id: i64,
    last_used_at: Option<DateTime<Utc>>,
    #[sqlx(flatten)]
    owner: UserRow,
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        TokenInfo { id: row.id, name: row.name, created_at: row.created_at, last_used_at: row.last_used_at }
    }
}

impl Store {
    /// Stores a token's hash for the user.
    pub async fn insert_token(&self, user_id: i64, name: &str, token_hash: &str) -> StoreResult<TokenInfo> {
        with_pool!(self, |pool| {
            let row: TokenRow = sqlx::query_as(
                "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)
             RETURNING id, name, created_at, last_used_at",
            )
            .bind(user_id)
            .bind(name)
            .bind(token_hash)
            .bind(Utc::now())
            .fetch_one(pool)
            .await
            .map_err(|e| duplicate_or_query(e, "token", "secret"))?;
            Ok(row.into())
        })
    }

    /// The user's tokens, newest first.
    pub async fn tokens_of(&self, user_id: i64) -> StoreResult<Vec<TokenInfo>> {
        with_pool!(self, |pool| {
            let rows: Vec<TokenRow> = sqlx::query_as(
                "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = $1 ORDER BY id DESC",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }

    /// Revokes one of the user's tokens; false when the user has no such token.
    pub async fn delete_token(&self, user_id: i64, token_id: i64) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
                .bind(token_id)
                .bind(user_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// The owner of the token with this hash, marking the token used. The mark is written at
    /// most once a minute per token, so authenticating stays a read on the hot path.
    pub async fn user_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<UserRecord>> {
        with_pool!(self, |pool| {
            let row: Option<TokenOwnerRow> = sqlx::query_as(
                "SELECT t.id AS token_id, u.id, u.name, u.role, u.password_hash, t.last_used_at
               FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let now = Utc::now();
            if row.last_used_at.is_none_or(|at| now - at >= chrono::Duration::seconds(LAST_USED_RESOLUTION_S)) {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(row.token_id)
                    .execute(pool)
                    .await?;
            }
            Ok(Some(row.owner.into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::platform::model::Role;

    #[tokio::test]
    async fn using_a_token_marks_it_at_most_once_a_minute() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let user = store.insert_user("tina", "hash", Role::User).await.expect("user");
            store.insert_token(user.id, "ci", "hash-of-secret").await.expect("token");
            assert_eq!(store.tokens_of(user.id).await.expect("tokens")[0].last_used_at, None);

            assert_eq!(
                store.user_by_token_hash("hash-of-secret").await.expect("lookup").map(|u| u.name),
                Some("tina".into())
            );
            let first = store.tokens_of(user.id).await.expect("tokens")[0].last_used_at.expect("marked");
            store.user_by_token_hash("hash-of-secret").await.expect("lookup");
            assert_eq!(
                store.tokens_of(user.id).await.expect("tokens")[0].last_used_at,
                Some(first),
                "not rewritten within a minute"
            );
            assert_eq!(store.user_by_token_hash("unknown").await.expect("lookup"), None);
        }
    }
}
