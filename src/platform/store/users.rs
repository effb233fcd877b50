//! Users and their password hashes.

use super::{Store, StoreResult, duplicate_or_query};
use crate::platform::model::Named;
use crate::platform::model::Role;
use chrono::Utc;

/// A user row. The hash never leaves the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Row id.
    pub id: i64,
    /// Unique user name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// PHC-format password hash.
    pub password_hash: String,
}

/// A user as selected from the `users` table.
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: i64,
    name: String,
    role: String,
    password_hash: String,
}

impl From<UserRow> for UserRecord {
    fn from(row: UserRow) -> Self {
        UserRecord {
            id: row.id,
            name: row.name,
            // The CHECK constraint admits only known roles; an unknown one gets the least privilege.
            role: Role::parse(&row.role).unwrap_or(Role::User),
            password_hash: row.password_hash,
        }
    }
}

impl Store {
    /// Every user, by name.
    pub async fn users(&self) -> StoreResult<Vec<UserRecord>> {
        with_pool!(self, |pool| {
            let rows: Vec<UserRow> =
                sqlx::query_as("SELECT id, name, role, password_hash FROM users ORDER BY name").fetch_all(pool).await?;
            Ok(rows.into_iter().map(UserRecord::from).collect())
        })
    }

    /// Adds a user; a taken name is [`StoreError::Duplicate`].
    pub async fn insert_user(&self, name: &str, password_hash: &str, role: Role) -> StoreResult<UserRecord> {
        with_pool!(self, |pool| {
            let row: UserRow = sqlx::query_as(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id, name, role, password_hash",
        )
        .bind(name)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(Utc::now())
        .fetch_one(pool)
        .await
        .map_err(|e| duplicate_or_query(e, "user", "name"))?;
            Ok(row.into())
        })
    }

    /// Creates the user or, when the name exists, sets its password and role.
    pub async fn upsert_user(&self, name: &str, password_hash: &str, role: Role) -> StoreResult<UserRecord> {
        with_pool!(self, |pool| {
            let row: UserRow = sqlx::query_as(
                "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role
             RETURNING id, name, role, password_hash",
            )
            .bind(name)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(Utc::now())
            .fetch_one(pool)
            .await?;
            Ok(row.into())
        })
    }

    /// The user with this name, if any.
    pub async fn user_by_name(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        with_pool!(self, |pool| {
            let row: Option<UserRow> =
                sqlx::query_as("SELECT id, name, role, password_hash FROM users WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(Into::into))
        })
    }

    /// The user with this id, if any.
    pub async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRecord>> {
        with_pool!(self, |pool| {
            let row: Option<UserRow> = sqlx::query_as("SELECT id, name, role, password_hash FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(Into::into))
        })
    }
}
