//! The quotas admins set per user, and the counts they are checked against.

use super::{Store, StoreResult};
use crate::platform::model::QuotaSettings;
use chrono::Utc;

#[derive(sqlx::FromRow)]
struct QuotaRow {
    functions: Option<i64>,
    versions: Option<i64>,
    instances: Option<i64>,
    replicas: Option<i64>,
    cpu_millicores: Option<i64>,
    memory_bytes: Option<i64>,
}

fn unsigned<T: TryFrom<i64>>(value: Option<i64>) -> Option<T> {
    value.and_then(|v| T::try_from(v).ok())
}

fn signed<T: TryInto<i64>>(value: Option<T>) -> Option<i64> {
    value.and_then(|v| v.try_into().ok())
}

impl Store {
    /// The quota settings an admin made for the user (every field `None` when none).
    pub async fn quota_settings(&self, user_id: i64) -> StoreResult<QuotaSettings> {
        with_pool!(self, |pool| {
            let row: Option<QuotaRow> = sqlx::query_as(
            "SELECT functions, versions, instances, replicas, cpu_millicores, memory_bytes FROM user_quotas WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
            Ok(row.map_or_else(QuotaSettings::default, |row| QuotaSettings {
                functions: unsigned(row.functions),
                versions: unsigned(row.versions),
                instances: unsigned(row.instances),
                replicas: unsigned(row.replicas),
                cpu_millicores: unsigned(row.cpu_millicores),
                memory_bytes: unsigned(row.memory_bytes),
            }))
        })
    }

    /// Replaces the user's quota settings.
    pub async fn set_quota_settings(&self, user_id: i64, settings: &QuotaSettings) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO user_quotas (user_id, functions, versions, instances, replicas, cpu_millicores, memory_bytes, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (user_id) DO UPDATE SET functions = excluded.functions, versions = excluded.versions,
                 instances = excluded.instances, replicas = excluded.replicas, cpu_millicores = excluded.cpu_millicores,
                 memory_bytes = excluded.memory_bytes, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(signed(settings.functions))
        .bind(signed(settings.versions))
        .bind(signed(settings.instances))
        .bind(signed(settings.replicas))
        .bind(signed(settings.cpu_millicores))
        .bind(signed(settings.memory_bytes))
        .bind(Utc::now())
        .execute(pool)
        .await?;
            Ok(())
        })
    }

    /// How many functions the user owns and how many versions they have in all.
    pub async fn owned_counts(&self, user_id: i64) -> StoreResult<(u32, u32)> {
        with_pool!(self, |pool| {
            let (functions, versions): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM functions WHERE owner_id = $1),
                    (SELECT COUNT(*) FROM function_versions v JOIN functions f ON f.id = v.function_id WHERE f.owner_id = $1)",
        )
        .bind(user_id)
        .fetch_one(pool)
        .await?;
            Ok((u32::try_from(functions).unwrap_or(u32::MAX), u32::try_from(versions).unwrap_or(u32::MAX)))
        })
    }
}
