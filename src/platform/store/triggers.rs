//! Cron triggers and their runs. A fire is claimed by moving `last_fire_at` forward with a
//! compare-and-set before the invocation starts, so two schedulers (or one restarted) never
//! fire the same minute twice.

use super::{Store, StoreResult};
use crate::platform::model::Named;
use crate::platform::model::{RunOutcome, TriggerRun, TriggerSpec};
use chrono::{DateTime, Utc};

/// Runs kept per trigger; older ones are deleted as new ones arrive.
const RUNS_KEPT: i64 = 100;

/// A trigger as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerRecord {
    /// Row id.
    pub id: i64,
    /// The function's id.
    pub function_id: i64,
    /// The function's name.
    pub function: String,
    /// The user's id (whose instance, and as whom).
    pub user_id: i64,
    /// The user's name.
    pub user: String,
    /// Schedule, method, path and body.
    pub spec: TriggerSpec,
    /// The last due time handled (fired or skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    id: i64,
    function_id: i64,
    function: String,
    user_id: i64,
    user: String,
    schedule: String,
    method: String,
    path: String,
    body: String,
    last_fire_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<TriggerRow> for TriggerRecord {
    fn from(row: TriggerRow) -> Self {
        TriggerRecord {
            id: row.id,
            function_id: row.function_id,
            function: row.function,
            user_id: row.user_id,
            user: row.user,
            spec: TriggerSpec { schedule: row.schedule, method: row.method, path: row.path, body: row.body },
            last_fire_at: row.last_fire_at,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    scheduled_for: DateTime<Utc>,
    outcome: String,
    status: Option<i64>,
    duration_ms: Option<i64>,
    message: String,
    finished_at: Option<DateTime<Utc>>,
}

impl From<RunRow> for TriggerRun {
    fn from(row: RunRow) -> Self {
        TriggerRun {
            scheduled_for: row.scheduled_for,
            outcome: RunOutcome::parse(&row.outcome).unwrap_or(RunOutcome::Failed),
            status: row.status.and_then(|s| u16::try_from(s).ok()),
            duration_ms: row.duration_ms.and_then(|d| u64::try_from(d).ok()),
            message: row.message,
            finished_at: row.finished_at,
        }
    }
}

const SELECT_TRIGGERS: &str =
    "SELECT t.id, t.function_id, f.name AS function, t.user_id, u.name AS \"user\", t.schedule, t.method, t.path,
        t.body, t.last_fire_at, t.created_at
   FROM triggers t JOIN functions f ON f.id = t.function_id JOIN users u ON u.id = t.user_id";

impl Store {
    /// Stores a new enabled cron trigger.
    pub async fn insert_trigger(
        &self,
        function_id: i64,
        user_id: i64,
        spec: &TriggerSpec,
        now: DateTime<Utc>,
    ) -> StoreResult<i64> {
        with_pool!(self, |pool| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO triggers (function_id, user_id, kind, schedule, method, path, body, enabled, created_at)
             VALUES ($1, $2, 'cron', $3, $4, $5, $6, TRUE, $7) RETURNING id",
            )
            .bind(function_id)
            .bind(user_id)
            .bind(&spec.schedule)
            .bind(&spec.method)
            .bind(&spec.path)
            .bind(&spec.body)
            .bind(now)
            .fetch_one(pool)
            .await?;
            Ok(id)
        })
    }

    /// One trigger.
    pub async fn trigger(&self, id: i64) -> StoreResult<Option<TriggerRecord>> {
        with_pool!(self, |pool| {
            let row: Option<TriggerRow> =
                sqlx::query_as(&format!("{SELECT_TRIGGERS} WHERE t.id = $1")).bind(id).fetch_optional(pool).await?;
            Ok(row.map(TriggerRecord::from))
        })
    }

    /// The triggers of a function, of one user or (`None`) of everyone, oldest first.
    pub async fn triggers_of(&self, function_id: i64, user_id: Option<i64>) -> StoreResult<Vec<TriggerRecord>> {
        with_pool!(self, |pool| {
            let rows: Vec<TriggerRow> = sqlx::query_as(&format!(
                "{SELECT_TRIGGERS} WHERE t.function_id = $1 AND ($2 IS NULL OR t.user_id = $3) ORDER BY t.id"
            ))
            .bind(function_id)
            .bind(user_id)
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(TriggerRecord::from).collect())
        })
    }

    /// Every enabled trigger.
    pub async fn enabled_triggers(&self) -> StoreResult<Vec<TriggerRecord>> {
        with_pool!(self, |pool| {
            let rows: Vec<TriggerRow> =
                sqlx::query_as(&format!("{SELECT_TRIGGERS} WHERE t.enabled = TRUE ORDER BY t.id"))
                    .fetch_all(pool)
                    .await?;
            Ok(rows.into_iter().map(TriggerRecord::from).collect())
        })
    }

    /// How many triggers a user has on a function.
    pub async fn trigger_count(&self, function_id: i64, user_id: i64) -> StoreResult<u32> {
        with_pool!(self, |pool| {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM triggers WHERE function_id = $1 AND user_id = $2")
                    .bind(function_id)
                    .bind(user_id)
                    .fetch_one(pool)
                    .await?;
            Ok(u32::try_from(count).unwrap_or(u32::MAX))
        })
    }

    /// Deletes a trigger and its runs.
    pub async fn delete_trigger(&self, id: i64) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM triggers WHERE id = $1").bind(id).execute(pool).await?.rows_affected() == 1)
        })
    }

    /// Moves `last_fire_at` from `seen` (what the caller read) to `due`; false when someone
    /// else moved it first, in which case the caller must not fire.
    pub async fn claim_fire(&self, id: i64, seen: Option<DateTime<Utc>>, due: DateTime<Utc>) -> StoreResult<bool> {
        with_pool!(self, |pool| {
            let result = sqlx::query(
                "UPDATE triggers SET last_fire_at = $1 WHERE id = $2 AND last_fire_at IS NOT DISTINCT FROM $3",
            )
            .bind(due)
            .bind(id)
            .bind(seen)
            .execute(pool)
            .await?;
            Ok(result.rows_affected() == 1)
        })
    }

    /// Records a run (and forgets the oldest beyond the ones kept); returns its id.
    pub async fn insert_run(&self, trigger_id: i64, run: &TriggerRun) -> StoreResult<i64> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
            "INSERT INTO trigger_runs (trigger_id, scheduled_for, outcome, status, duration_ms, message, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(trigger_id)
        .bind(run.scheduled_for)
        .bind(run.outcome.as_str())
        .bind(run.status.map(i64::from))
        .bind(run.duration_ms.and_then(|d| i64::try_from(d).ok()))
        .bind(&run.message)
        .bind(run.finished_at)
        .fetch_one(&mut *tx)
        .await?;
            sqlx::query("DELETE FROM trigger_runs WHERE trigger_id = $1 AND id <= $2")
                .bind(trigger_id)
                .bind(id - RUNS_KEPT)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Records how a running run ended.
    pub async fn finish_run(&self, run_id: i64, run: &TriggerRun) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE trigger_runs SET outcome = $1, status = $2, duration_ms = $3, message = $4, finished_at = $5 WHERE id = $6")
            .bind(run.outcome.as_str())
            .bind(run.status.map(i64::from))
            .bind(run.duration_ms.and_then(|d| i64::try_from(d).ok()))
            .bind(&run.message)
            .bind(run.finished_at)
            .bind(run_id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Marks runs left `running` by a kubefn that stopped as failed; returns how many.
    pub async fn fail_interrupted_runs(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        with_pool!(self, |pool| {
            let result = sqlx::query(
                "UPDATE trigger_runs SET outcome = 'failed', finished_at = $1,
                    message = 'kubefn stopped while this run was invoking the function; its result is unknown'
              WHERE outcome = 'running'",
            )
            .bind(now)
            .execute(pool)
            .await?;
            Ok(result.rows_affected())
        })
    }

    /// A trigger's latest runs, newest first.
    pub async fn runs(&self, trigger_id: i64, limit: u32) -> StoreResult<Vec<TriggerRun>> {
        with_pool!(self, |pool| {
            let rows: Vec<RunRow> =
            sqlx::query_as("SELECT scheduled_for, outcome, status, duration_ms, message, finished_at FROM trigger_runs WHERE trigger_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(trigger_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(TriggerRun::from).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::{FunctionSpec, Role};
    use chrono::{Duration, SubsecRound};

    #[tokio::test]
    async fn a_fire_is_claimed_once_and_interrupted_runs_end_failed() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let user = store.insert_user("ann", "hash", Role::User).await.expect("user");
            let spec: FunctionSpec =
                serde_json::from_value(serde_json::json!({"name": "f", "runtime": "python", "source": "x"}))
                    .expect("spec");
            let function = store.insert_function(user.id, &spec).await.expect("function");
            let now = Utc::now();
            let trigger = TriggerSpec {
                schedule: "* * * * *".into(),
                method: "POST".into(),
                path: "/".into(),
                body: String::new(),
            };
            let id = store.insert_trigger(function.id, user.id, &trigger, now).await.expect("trigger");

            // Whole seconds: PostgreSQL keeps microseconds, and the scheduler only ever passes
            // back a time it read from the store.
            let minute = now.trunc_subsecs(0) + Duration::minutes(1);
            assert!(store.claim_fire(id, None, minute).await.expect("claim"));
            assert!(
                !store.claim_fire(id, None, minute).await.expect("claim"),
                "a second scheduler that read the old value loses"
            );
            assert!(store.claim_fire(id, Some(minute), minute + Duration::minutes(1)).await.expect("claim"));
            assert_eq!(
                store.trigger(id).await.expect("read").expect("trigger").last_fire_at,
                Some(minute + Duration::minutes(1))
            );

            let running = TriggerRun {
                scheduled_for: minute,
                outcome: RunOutcome::Running,
                status: None,
                duration_ms: None,
                message: String::new(),
                finished_at: None,
            };
            store.insert_run(id, &running).await.expect("run");
            assert_eq!(store.fail_interrupted_runs(now).await.expect("recover"), 1);
            let runs = store.runs(id, 10).await.expect("runs");
            assert_eq!(runs[0].outcome, RunOutcome::Failed);
            assert!(runs[0].message.contains("kubefn stopped"));

            for _ in 0..RUNS_KEPT + 5 {
                store.insert_run(id, &running).await.expect("run");
            }
            assert_eq!(store.runs(id, 1000).await.expect("runs").len(), RUNS_KEPT as usize, "old runs are forgotten");
        }
    }
}
