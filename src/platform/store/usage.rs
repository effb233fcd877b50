//! Usage samples: one row per instance every few seconds, thinned as they age so the table
//! stays bounded: full resolution for the last hour, one averaged point per minute for the
//! last week, nothing older.

use super::{Store, StoreResult};
use crate::platform::model::UsageSample;
use crate::platform::usage_report;
use chrono::{DateTime, Duration, DurationRound, Utc};

/// The statement inserting (or replacing) one sample, for whichever database the executor it is
/// run on belongs to (a macro, since a query's database type comes from that executor).
macro_rules! insert_sample {
    ($instance_id:expr, $sample:expr) => {{
        let sample: &UsageSample = $sample;
        sqlx::query(
            "INSERT INTO usage_samples
               (instance_id, at, replicas_desired, replicas_ready, cpu_millicores, memory_bytes, requests_per_s, p50_ms, p95_ms, errors,
                autoscaler_load_percent, invocations)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (instance_id, at) DO UPDATE SET replicas_desired = excluded.replicas_desired,
                replicas_ready = excluded.replicas_ready, cpu_millicores = excluded.cpu_millicores,
                memory_bytes = excluded.memory_bytes, requests_per_s = excluded.requests_per_s, p50_ms = excluded.p50_ms,
                p95_ms = excluded.p95_ms, errors = excluded.errors,
                autoscaler_load_percent = excluded.autoscaler_load_percent, invocations = excluded.invocations",
        )
        .bind($instance_id)
        .bind(sample.at)
        .bind(i64::from(sample.replicas_desired))
        .bind(i64::from(sample.replicas_ready))
        .bind(sample.cpu_millicores)
        .bind(sample.memory_bytes.and_then(|m| i64::try_from(m).ok()))
        .bind(sample.requests_per_s)
        .bind(sample.p50_ms)
        .bind(sample.p95_ms)
        .bind(i64::from(sample.errors))
        .bind(sample.autoscaler_load_percent)
        .bind(i64::from(sample.invocations))
    }};
}

/// How long samples keep their full resolution.
pub const FULL_RESOLUTION_FOR: Duration = Duration::hours(1);
/// How long downsampled samples are kept.
pub const KEPT_FOR: Duration = Duration::days(7);

#[derive(sqlx::FromRow)]
struct UsageRow {
    instance_id: String,
    at: DateTime<Utc>,
    replicas_desired: i64,
    replicas_ready: i64,
    cpu_millicores: Option<f64>,
    memory_bytes: Option<i64>,
    requests_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    errors: i64,
    autoscaler_load_percent: Option<f64>,
    invocations: i64,
}

impl From<UsageRow> for UsageSample {
    fn from(row: UsageRow) -> Self {
        UsageSample {
            at: row.at,
            replicas_desired: u32::try_from(row.replicas_desired).unwrap_or(0),
            replicas_ready: u32::try_from(row.replicas_ready).unwrap_or(0),
            cpu_millicores: row.cpu_millicores,
            memory_bytes: row.memory_bytes.and_then(|m| u64::try_from(m).ok()),
            requests_per_s: row.requests_per_s,
            p50_ms: row.p50_ms,
            p95_ms: row.p95_ms,
            invocations: u32::try_from(row.invocations).unwrap_or(0),
            errors: u32::try_from(row.errors).unwrap_or(0),
            autoscaler_load_percent: row.autoscaler_load_percent,
        }
    }
}

impl Store {
    /// Records samples, each of the instance it names, in one transaction: the reconcile pass
    /// records one per instance, and a commit per instance made the pass's writes grow with
    /// every instance.
    pub async fn insert_usage(&self, samples: &[(String, UsageSample)]) -> StoreResult<()> {
        with_pool!(self, |pool| {
            if samples.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            for (instance_id, sample) in samples {
                insert_sample!(instance_id, sample).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// An instance's samples since `since`, oldest first.
    pub async fn usage(&self, instance_id: &str, since: DateTime<Utc>) -> StoreResult<Vec<UsageSample>> {
        with_pool!(self, |pool| {
            let rows: Vec<UsageRow> =
                sqlx::query_as("SELECT * FROM usage_samples WHERE instance_id = $1 AND at >= $2 ORDER BY at")
                    .bind(instance_id)
                    .bind(since)
                    .fetch_all(pool)
                    .await?;
            Ok(rows.into_iter().map(UsageSample::from).collect())
        })
    }

    /// Every instance's samples since `since`, by instance id (each oldest first).
    pub async fn usage_of_all(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashMap<String, Vec<UsageSample>>> {
        with_pool!(self, |pool| {
            let rows: Vec<UsageRow> =
                sqlx::query_as("SELECT * FROM usage_samples WHERE at >= $1 ORDER BY instance_id, at")
                    .bind(since)
                    .fetch_all(pool)
                    .await?;
            let mut by_instance: std::collections::HashMap<String, Vec<UsageSample>> = std::collections::HashMap::new();
            for row in rows {
                by_instance.entry(row.instance_id.clone()).or_default().push(row.into());
            }
            Ok(by_instance)
        })
    }

    /// Averages full-resolution samples older than an hour into one per minute and deletes
    /// samples older than a week. Runs in one transaction, so readers never see a minute twice.
    pub async fn downsample_usage(&self, now: DateTime<Utc>) -> StoreResult<()> {
        with_pool!(self, |pool| {
            let horizon = now - FULL_RESOLUTION_FOR;
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM usage_samples WHERE at < $1").bind(now - KEPT_FOR).execute(&mut *tx).await?;
            let rows: Vec<UsageRow> =
                sqlx::query_as("SELECT * FROM usage_samples WHERE at < $1 ORDER BY instance_id, at")
                    .bind(horizon)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut buckets: Vec<(String, DateTime<Utc>, Vec<UsageSample>)> = Vec::new();
            for row in rows {
                let minute = row.at.duration_trunc(Duration::minutes(1)).unwrap_or(row.at);
                let instance = row.instance_id.clone();
                match buckets.last_mut() {
                    Some((id, at, samples)) if *id == instance && *at == minute => samples.push(row.into()),
                    _ => buckets.push((instance, minute, vec![row.into()])),
                }
            }
            for (instance, minute, samples) in buckets {
                // Already one point on its minute: downsampled before.
                if samples.len() == 1 && samples[0].at == minute {
                    continue;
                }
                sqlx::query("DELETE FROM usage_samples WHERE instance_id = $1 AND at >= $2 AND at < $3")
                    .bind(&instance)
                    .bind(minute)
                    .bind(minute + Duration::minutes(1))
                    .execute(&mut *tx)
                    .await?;
                let samples: Vec<&UsageSample> = samples.iter().collect();
                insert_sample!(&instance, &usage_report::average(minute, &samples)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::{FunctionSpec, Language, Role};

    fn sample(at: DateTime<Utc>, cpu: f64, ready: u32) -> UsageSample {
        UsageSample {
            at,
            replicas_desired: ready,
            replicas_ready: ready,
            cpu_millicores: Some(cpu),
            memory_bytes: Some(1000),
            requests_per_s: None,
            p50_ms: None,
            p95_ms: None,
            invocations: 2,
            errors: 1,
            autoscaler_load_percent: Some(cpu / 10.0),
        }
    }

    #[tokio::test]
    async fn old_samples_are_averaged_per_minute_and_very_old_ones_dropped() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let user = store.insert_user("ann", "hash", Role::User).await.expect("user");
            let spec: FunctionSpec =
                serde_json::from_value(serde_json::json!({"name": "f", "runtime": "python", "source": "x"}))
                    .expect("spec");
            assert_eq!(spec.runtime, Language::Python);
            let function = store.insert_function(user.id, &spec).await.expect("function");
            let (instance, _) = store.upsert_instance(function.id, user.id, 1, 1, None).await.expect("instance");

            let now = Utc::now().duration_trunc(Duration::minutes(1)).expect("minute");
            let old_minute = now - Duration::hours(2);
            for (offset, cpu, ready) in [(5, 100.0, 1), (25, 200.0, 3), (45, 300.0, 2)] {
                store
                    .insert_usage(&[(instance.id.clone(), sample(old_minute + Duration::seconds(offset), cpu, ready))])
                    .await
                    .expect("insert");
            }
            store
                .insert_usage(&[(instance.id.clone(), sample(now - Duration::days(8), 1.0, 1))])
                .await
                .expect("ancient");
            store
                .insert_usage(&[(instance.id.clone(), sample(now - Duration::minutes(5), 50.0, 1))])
                .await
                .expect("recent");
            store
                .insert_usage(&[(
                    instance.id.clone(),
                    sample(now - Duration::minutes(5) + Duration::seconds(5), 60.0, 1),
                )])
                .await
                .expect("recent");

            store.downsample_usage(now).await.expect("downsample");
            let kept = store.usage(&instance.id, now - Duration::days(30)).await.expect("read");
            assert_eq!(kept.len(), 3, "one averaged point for the old minute and both recent samples: {kept:#?}");
            assert_eq!(kept[0].at, old_minute);
            assert_eq!(kept[0].cpu_millicores, Some(200.0));
            assert_eq!(kept[0].autoscaler_load_percent, Some(20.0), "the load is averaged too");
            assert_eq!((kept[0].replicas_desired, kept[0].errors, kept[0].invocations), (3, 3, 6), "counts add up");
            assert_eq!(kept[1].cpu_millicores, Some(50.0));

            store.downsample_usage(now).await.expect("again");
            assert_eq!(
                store.usage(&instance.id, now - Duration::days(30)).await.expect("read"),
                kept,
                "downsampling twice changes nothing"
            );
        }
    }
}
