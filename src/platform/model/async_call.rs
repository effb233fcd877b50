//! Async invocations as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The answer to `POST /async/fn/{user}/{function}/…` (202 Accepted).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncAccepted {
    /// The invocation's id.
    pub id: String,
    /// Where its state and result are: `GET` this.
    pub status_url: String,
}

/// Where an async invocation is.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum AsyncState {
    /// Waiting for its (next) attempt.
    Queued,
    /// Being invoked now.
    Running,
    /// The function answered with a status below 400.
    Succeeded,
    /// It answered 4xx (not retried), or every attempt failed.
    Failed,
}

/// An async invocation as `GET /api/v1/async/{id}` shows it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncStatus {
    /// Its id.
    pub id: String,
    /// The function.
    pub function: String,
    /// Whose instance.
    pub user: String,
    /// Where it is.
    pub state: AsyncState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (while queued).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The function's HTTP status, once it answered.
    pub status: Option<u16>,
    /// The function's answer (as text, invalid UTF-8 replaced; at most 256 KiB kept).
    pub response: Option<String>,
    /// Why the last attempt failed, if it did.
    pub error: String,
    /// Where the result is sent, if anywhere.
    pub callback_url: Option<String>,
    /// How sending it there went.
    pub callback_result: String,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}
