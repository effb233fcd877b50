//! Leases: the rows that say which kubefn process leads (see [`crate::platform::leadership`]).

use super::{Store, StoreResult};
use chrono::{DateTime, Utc};

impl Store {
    /// Takes or renews lease `name` for `holder` until `expires_at`: true when `holder` holds it
    /// now (it was free, expired at `now`, or already `holder`'s), false when another holder's
    /// lease is still running. One statement, so two processes can never both win.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            let taken = sqlx::query(
                "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
                    acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END
                 WHERE leases.holder = excluded.holder OR leases.expires_at < excluded.acquired_at",
            )
            .bind(name)
            .bind(holder)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
            Ok(taken.rows_affected() == 1)
        })
    }

    /// Gives lease `name` up if `holder` has it, so the next process need not wait for it to
    /// expire (a graceful stop, a rolling update).
    pub async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Who holds lease `name` and until when, if anyone ever took it.
    pub async fn lease_holder(&self, name: &str) -> StoreResult<Option<(String, DateTime<Utc>)>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires_or_is_given_up() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let now = Utc::now();
            let lease = Duration::seconds(10);
            assert!(store.try_lease("leader", "a", now, now + lease).await.expect("take"), "a free lease is taken");
            assert!(!store.try_lease("leader", "b", now, now + lease).await.expect("try"), "a running lease is kept");
            let later = now + Duration::seconds(5);
            assert!(store.try_lease("leader", "a", later, later + lease).await.expect("renew"), "the holder renews");
            let expired_renewal = now + Duration::seconds(12);
            assert!(
                !store.try_lease("leader", "b", expired_renewal, expired_renewal + lease).await.expect("try"),
                "renewed at +5 s, the lease runs to +15 s"
            );
            let after = now + Duration::seconds(16);
            assert!(store.try_lease("leader", "b", after, after + lease).await.expect("take over"), "expired: taken");
            assert_eq!(store.lease_holder("leader").await.expect("read").map(|(h, _)| h), Some("b".into()));
            assert!(
                !store.try_lease("leader", "a", after, after + lease).await.expect("try"),
                "the old holder lost it"
            );

            store.release_lease("leader", "a").await.expect("not a's to give");
            assert_eq!(store.lease_holder("leader").await.expect("read").map(|(h, _)| h), Some("b".into()));
            store.release_lease("leader", "b").await.expect("give up");
            assert!(store.try_lease("leader", "a", after, after + lease).await.expect("take"), "given up: free");
        }
    }
}
