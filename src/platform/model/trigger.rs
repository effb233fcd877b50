//! Cron triggers and their runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A cron trigger as created: `POST /api/v1/functions/{name}/triggers`. It invokes the
/// caller's instance of the function through the gateway, as the caller.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// A standard 5-field cron schedule in UTC (`*/5 * * * *`), or `@hourly` and the like.
    pub schedule: String,
    /// The HTTP method of each invocation.
    #[serde(default = "default_trigger_method")]
    pub method: String,
    /// The path (and query) under the function, e.g. `/report?full=1`.
    #[serde(default = "default_trigger_path")]
    pub path: String,
    /// The request body.
    #[serde(default)]
    pub body: String,
}

fn default_trigger_method() -> String {
    "POST".into()
}

fn default_trigger_path() -> String {
    "/".into()
}

/// A trigger with its recent runs: `GET /api/v1/triggers/{id}`.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// Its id.
    pub id: i64,
    /// The function it invokes.
    pub function: String,
    /// Whose instance it invokes (and as whom).
    pub user: String,
    /// What it sends, and when.
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// The next time it fires.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last time it fired (or was due and skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its latest runs, newest first.
    pub runs: Vec<TriggerRun>,
}

/// How one run of a trigger went.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum RunOutcome {
    /// Invoking now.
    Running,
    /// The function answered with a status below 400.
    Ok,
    /// The function answered 4xx/5xx, or could not be reached.
    Failed,
    /// Due while kubefn was not running: not fired (recorded so nobody wonders).
    Skipped,
}

/// One run of a trigger.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRun {
    /// The minute it was due (for skipped runs: the first missed one).
    pub scheduled_for: DateTime<Utc>,
    /// How it went.
    pub outcome: RunOutcome,
    /// The function's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Time to the answer, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The start of the answer, or why it failed or was skipped.
    pub message: String,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}
