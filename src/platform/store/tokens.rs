//! API tokens: only a SHA-256 of each secret is stored.

use super::users::UserRecord;
use super::{duplicate_or_query, Store, StoreResult};
use crate::platform::model::{Role, TokenInfo};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        TokenInfo { id: row.id, name: row.name, created_at: row.created_at, last_used_at: row.last_used_at }
    }
}

impl Store {
    /// Stores a token's hash for the user.
    pub async fn insert_token(&self, user_id: i64, name: &str, token_hash: &str) -> StoreResult<TokenInfo> {
        let row: TokenRow = sqlx::query_as(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)
             RETURNING id, name, created_at, last_used_at",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "token", "secret"))?;
        Ok(row.into())
    }

    /// The user's tokens, newest first.
    pub async fn tokens_of(&self, user_id: i64) -> StoreResult<Vec<TokenInfo>> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Revokes one of the user's tokens; false when the user has no such token.
    pub async fn delete_token(&self, user_id: i64, token_id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = ? AND user_id = ?")
            .bind(token_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The owner of the token with this hash, marking the token used.
    pub async fn user_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<UserRecord>> {
        let row: Option<(i64, String, String, String)> = sqlx::query_as(
            "UPDATE api_tokens SET last_used_at = ? WHERE token_hash = ?
             RETURNING user_id, (SELECT name FROM users WHERE users.id = user_id),
                       (SELECT role FROM users WHERE users.id = user_id),
                       (SELECT password_hash FROM users WHERE users.id = user_id)",
        )
        .bind(Utc::now())
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, name, role, password_hash)| UserRecord {
            id,
            name,
            role: Role::parse(&role).unwrap_or(Role::User),
            password_hash,
        }))
    }
}
