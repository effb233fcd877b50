//! Attempts counted against rate limits by several kubefn processes at once (see
//! [`crate::platform::rate_limits`]).

use super::{Store, StoreResult};
use chrono::{DateTime, Utc};

impl Store {
    /// The `nth` newest attempt on `key` of limit `scope` since `since`, if there are that many:
    /// the attempt whose leaving the window lifts the limit.
    pub async fn nth_newest_attempt(
        &self,
        scope: &str,
        key: &str,
        since: DateTime<Utc>,
        nth: usize,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let Some(skipped) = nth.checked_sub(1) else { return Ok(Some(Utc::now())) };
        with_pool!(self, |pool| {
            let at: Option<(DateTime<Utc>,)> = sqlx::query_as(
                "SELECT at FROM rate_limit_attempts WHERE scope = $1 AND key = $2 AND at > $3
                 ORDER BY at DESC LIMIT 1 OFFSET $4",
            )
            .bind(scope)
            .bind(key)
            .bind(since)
            .bind(i64::try_from(skipped).unwrap_or(i64::MAX))
            .fetch_optional(pool)
            .await?;
            Ok(at.map(|(at,)| at))
        })
    }

    /// Counts an attempt at `at` on each of `keys` of limit `scope`, and deletes the limit's
    /// attempts from before `expired`, which no longer count.
    pub async fn record_attempts(
        &self,
        scope: &str,
        keys: &[&str],
        at: DateTime<Utc>,
        expired: DateTime<Utc>,
    ) -> StoreResult<()> {
        with_pool!(self, |pool| {
            let mut transaction = pool.begin().await?;
            sqlx::query("DELETE FROM rate_limit_attempts WHERE scope = $1 AND at <= $2")
                .bind(scope)
                .bind(expired)
                .execute(&mut *transaction)
                .await?;
            for key in keys {
                sqlx::query("INSERT INTO rate_limit_attempts (scope, key, at) VALUES ($1, $2, $3)")
                    .bind(scope)
                    .bind(key)
                    .bind(at)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
            Ok(())
        })
    }

    /// Forgets the attempts on `keys` of limit `scope` (a successful log-in).
    pub async fn forget_attempts(&self, scope: &str, keys: &[&str]) -> StoreResult<()> {
        with_pool!(self, |pool| {
            for key in keys {
                sqlx::query("DELETE FROM rate_limit_attempts WHERE scope = $1 AND key = $2")
                    .bind(scope)
                    .bind(key)
                    .execute(pool)
                    .await?;
            }
            Ok(())
        })
    }
}
