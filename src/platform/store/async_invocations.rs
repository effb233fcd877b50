//! The async invocation queue. An attempt is claimed by moving a row from `queued` to
//! `running` with a compare-and-set, so one worker runs it; rows left `running` by a stopped
//! kubefn go back to `queued` at start (delivery is at least once).

use super::{Store, StoreResult};
use crate::platform::model::Named;
use crate::platform::model::{AsyncState, AsyncStatus};
use chrono::{DateTime, Utc};

/// The request an async invocation makes, as it arrived.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AsyncCall {
    /// HTTP method.
    pub method: String,
    /// Path and query under the function.
    pub path: String,
    /// The request's Content-Type.
    pub content_type: Option<String>,
    /// Where to send the result (the `X-Callback-Url` header).
    pub callback_url: Option<String>,
}

/// An invocation to make, as queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAsync {
    /// Its id.
    pub id: String,
    /// The function's id.
    pub function_id: i64,
    /// The instance's user's id.
    pub user_id: i64,
    /// Who asked (`None`: anonymous, for a public function).
    pub caller_id: Option<i64>,
    /// The request.
    pub call: AsyncCall,
    /// The length of its body.
    pub body_bytes: u64,
    /// The body, when it is kept in the database; `None` when it is in the spool directory
    /// ([`crate::platform::async_spool`]).
    pub inline_body: Option<Vec<u8>>,
}

/// A queued invocation with what the worker needs.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AsyncRecord {
    /// Its id.
    pub id: String,
    /// The function's name.
    pub function: String,
    /// The instance's user's name.
    pub user: String,
    /// Who asked.
    pub caller_id: Option<i64>,
    /// The request.
    #[sqlx(flatten)]
    pub call: AsyncCall,
    /// Whether the body is in the spool; if not (queued before bodies moved there), it is
    /// [`AsyncRecord::inline_body`].
    pub body_spooled: bool,
    /// The body of an invocation queued before bodies moved to the spool; empty otherwise.
    #[sqlx(rename = "body")]
    pub inline_body: Vec<u8>,
    /// Attempts made, this one included once claimed.
    pub attempts: i64,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    /// `Succeeded`, `Failed`, or `Queued` for another attempt at `next_attempt_at`.
    pub state: AsyncState,
    /// When to try again (queued only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The function's status, if it answered.
    pub status: Option<u16>,
    /// Its answer.
    pub response: Option<Vec<u8>>,
    /// Its answer's Content-Type.
    pub response_type: Option<String>,
    /// Why it failed.
    pub error: String,
    /// When it ended (final states).
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: String,
    function: String,
    user: String,
    caller_id: Option<i64>,
    user_id: i64,
    state: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    status: Option<i64>,
    response: Option<Vec<u8>>,
    error: String,
    callback_url: Option<String>,
    callback_result: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

const SELECT_RECORD: &str =
    "SELECT a.id, f.name AS function, u.name AS \"user\", a.caller_id, a.method, a.path, a.content_type, a.body,
        a.body_spooled, a.callback_url, a.attempts
   FROM async_invocations a JOIN functions f ON f.id = a.function_id JOIN users u ON u.id = a.user_id";

impl Store {
    /// Queues an invocation, due now.
    pub async fn insert_async(&self, new: &NewAsync, now: DateTime<Utc>) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO async_invocations (id, function_id, user_id, caller_id, method, path, content_type, body, body_bytes, body_spooled,
                                            callback_url, state, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $12, $8, $13, $9, 'queued', $10, $11)",
        )
        .bind(&new.id)
        .bind(new.function_id)
        .bind(new.user_id)
        .bind(new.caller_id)
        .bind(&new.call.method)
        .bind(&new.call.path)
        .bind(&new.call.content_type)
        .bind(i64::try_from(new.body_bytes).unwrap_or(i64::MAX))
        .bind(&new.call.callback_url)
        .bind(now)
        .bind(now)
        // A body in the spool leaves the column an empty value (no literal for empty bytes
        // reads the same in both databases).
        .bind(new.inline_body.as_deref().unwrap_or_default())
        .bind(new.inline_body.is_none())
        .execute(pool)
        .await?;
            Ok(())
        })
    }

    /// Claims up to `limit` queued invocations that are due, counting an attempt for each.
    pub async fn claim_due_async(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<AsyncRecord>> {
        with_pool!(self, |pool| {
            let due: Vec<String> = sqlx::query_scalar("SELECT id FROM async_invocations WHERE state = 'queued' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2")
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let mut claimed = Vec::new();
            for id in due {
                let moved = sqlx::query("UPDATE async_invocations SET state = 'running', attempts = attempts + 1 WHERE id = $1 AND state = 'queued'")
                .bind(&id)
                .execute(pool)
                .await?
                .rows_affected();
                if moved == 1
                    && let Some(record) = sqlx::query_as::<_, AsyncRecord>(&format!("{SELECT_RECORD} WHERE a.id = $1"))
                        .bind(&id)
                        .fetch_optional(pool)
                        .await?
                {
                    claimed.push(record);
                }
            }
            Ok(claimed)
        })
    }

    /// How many invocations of one instance (function and user) are unfinished, and the bytes
    /// of their request bodies.
    pub async fn unfinished_async(&self, function_id: i64, user_id: i64) -> StoreResult<(u64, u64)> {
        with_pool!(self, |pool| {
            let (count, bytes): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(body_bytes), 0) AS BIGINT) FROM async_invocations
              WHERE function_id = $1 AND user_id = $2 AND state IN ('queued', 'running')",
            )
            .bind(function_id)
            .bind(user_id)
            .fetch_one(pool)
            .await?;
            Ok((u64::try_from(count).unwrap_or(0), u64::try_from(bytes).unwrap_or(0)))
        })
    }

    /// The ids of every unfinished invocation whose body is in the spool: the files to keep.
    pub async fn unfinished_spooled_async(&self) -> StoreResult<std::collections::HashSet<String>> {
        with_pool!(self, |pool| {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM async_invocations WHERE body_spooled = TRUE AND state IN ('queued', 'running')",
            )
            .fetch_all(pool)
            .await?;
            Ok(ids.into_iter().collect())
        })
    }

    /// Deletes the invocations that finished before `before`; returns how many.
    pub async fn delete_finished_async(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        with_pool!(self, |pool| {
            let result = sqlx::query(
                "DELETE FROM async_invocations WHERE state IN ('succeeded', 'failed') AND finished_at < $1",
            )
            .bind(before)
            .execute(pool)
            .await?;
            Ok(result.rows_affected())
        })
    }

    /// Records how an attempt ended. A finished invocation's request body is dropped: no
    /// attempt will send it again.
    pub async fn finish_attempt(&self, id: &str, result: &AttemptResult) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE async_invocations SET state = $1, next_attempt_at = COALESCE($2, next_attempt_at), status = $3, response = $4, response_type = $5,
                    error = $6, finished_at = $7, body = CASE WHEN $8 IN ('succeeded', 'failed') THEN $10 ELSE body END
              WHERE id = $9",
        )
        .bind(result.state.as_str())
        .bind(result.next_attempt_at)
        .bind(result.status.map(i64::from))
        .bind(&result.response)
        .bind(&result.response_type)
        .bind(&result.error)
        .bind(result.finished_at)
        .bind(result.state.as_str())
        .bind(id)
        .bind(Vec::<u8>::new())
        .execute(pool)
        .await?;
            Ok(())
        })
    }

    /// Records how delivering the result to the callback URL went.
    pub async fn set_callback_result(&self, id: &str, result: &str) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE async_invocations SET callback_result = $1 WHERE id = $2")
                .bind(result)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Puts invocations a stopped kubefn left running back in the queue; returns how many.
    pub async fn requeue_interrupted_async(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        with_pool!(self, |pool| {
            let result = sqlx::query(
                "UPDATE async_invocations SET state = 'queued', next_attempt_at = $1,
                    error = 'kubefn stopped during an attempt; trying again' WHERE state = 'running'",
            )
            .bind(now)
            .execute(pool)
            .await?;
            Ok(result.rows_affected())
        })
    }

    /// An invocation's status, with the ids of who asked and whose instance it is.
    pub async fn async_status(&self, id: &str) -> StoreResult<Option<(AsyncStatus, Option<i64>, i64)>> {
        with_pool!(self, |pool| {
            let row: Option<StatusRow> = sqlx::query_as(
            "SELECT a.id, f.name AS function, u.name AS \"user\", a.caller_id, a.user_id, a.state, a.attempts, a.next_attempt_at, a.status,
                    a.response, a.error, a.callback_url, a.callback_result, a.created_at, a.finished_at
               FROM async_invocations a JOIN functions f ON f.id = a.function_id JOIN users u ON u.id = a.user_id
              WHERE a.id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
            Ok(row.map(|row| {
                let state = AsyncState::parse(&row.state).unwrap_or(AsyncState::Failed);
                let status = AsyncStatus {
                    id: row.id,
                    function: row.function,
                    user: row.user,
                    state,
                    attempts: u32::try_from(row.attempts).unwrap_or(0),
                    next_attempt_at: (state == AsyncState::Queued).then_some(row.next_attempt_at),
                    status: row.status.and_then(|s| u16::try_from(s).ok()),
                    response: row.response.map(|r| String::from_utf8_lossy(&r).into_owned()),
                    error: row.error,
                    callback_url: row.callback_url,
                    callback_result: row.callback_result,
                    created_at: row.created_at,
                    finished_at: row.finished_at,
                };
                (status, row.caller_id, row.user_id)
            }))
        })
    }
}
