//! Cron triggers: each invokes its user's instance of a function through the gateway, as
//! that user, at the minutes of a standard 5-field schedule (UTC).
//!
//! The scheduler is a [`Triggers::tick`] at a given time, so tests move the clock themselves;
//! the server ticks every second. A fire is claimed in the store before it starts (see
//! [`Store::claim_fire`]), so it happens at most once even across restarts. Fires that fell
//! due while kubefn was not running are skipped and recorded as one `skipped` run; only the
//! latest one still fires if it is less than [`GRACE`] late.

use super::auth::Principal;
use super::gateway::{Gateway, upstream_uri_of};
use super::model::{FieldError, RunOutcome, TriggerInfo, TriggerRun, TriggerSpec};
use super::registry::{Registry, RegistryError};
use super::store::{Store, StoreError, TriggerRecord};
use chrono::{DateTime, Duration, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use std::time::Instant;

/// How late a due fire may still start (a tick, a busy moment, a quick restart).
pub const GRACE: Duration = Duration::seconds(60);
/// Triggers one user may have on one function.
pub const MAX_TRIGGERS_PER_FUNCTION: u32 = 20;
/// Runs shown with a trigger.
const RUNS_SHOWN: u32 = 20;
/// How much of the function's answer a run keeps.
const ANSWER_KEPT: usize = 500;
/// Missed fires counted one by one before the count says "more than".
const MISSED_COUNTED: u32 = 10_000;

/// Why a trigger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A field of the trigger is invalid.
    #[error("{}", .0.message)]
    Invalid(FieldError),
    /// The function is not visible to the caller.
    #[error(transparent)]
    Function(#[from] RegistryError),
    /// No such trigger, or not the caller's.
    #[error("no trigger {id} of yours exists")]
    NotFound {
        /// The id asked for.
        id: i64,
    },
    /// Too many triggers already.
    #[error("you have {MAX_TRIGGERS_PER_FUNCTION} triggers on {function} already; delete one first")]
    TooMany {
        /// The function.
        function: String,
    },
    /// The store failed.
    #[error("the trigger store failed")]
    Store(#[from] StoreError),
}

/// Result of trigger operations.
pub type TriggerResult<T> = Result<T, TriggerError>;

/// Parses a standard 5-field cron schedule (or `@hourly`, `@daily`, …).
pub fn parse_schedule(schedule: &str) -> Result<Cron, FieldError> {
    CronParser::builder().seconds(Seconds::Disallowed).build().parse(schedule.trim()).map_err(|error| {
        FieldError::new(
            "schedule",
            format!("schedule must be 5 cron fields (minute hour day month weekday), e.g. \"*/5 * * * *\": {error}"),
        )
    })
}

/// What is due for a schedule whose last handled time is `last`, at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The time to fire for now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// Due times that will not fire: how many ([`MISSED_COUNTED`] meaning at least that
    /// many), the first and the last.
    pub missed: Option<(u32, DateTime<Utc>, DateTime<Utc>)>,
}

/// The pure core of the scheduler: which due times after `last` fire at `now`, which are
/// skipped.
pub fn due(schedule: &Cron, last: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let mut pending: Vec<DateTime<Utc>> = Vec::new();
    let mut count = 0u32;
    let mut first = None;
    let mut cursor = last;
    let mut capped = false;
    while let Ok(next) = schedule.find_next_occurrence(&cursor, false) {
        if next > now {
            break;
        }
        count += 1;
        first.get_or_insert(next);
        // Only the latest two matter: the one that may fire and the last missed before it.
        pending.push(next);
        if pending.len() > 2 {
            pending.remove(0);
        }
        cursor = next;
        if count >= MISSED_COUNTED {
            // Jump to the last due times without counting further.
            capped = true;
            if let Ok(latest) = schedule.find_previous_occurrence(&now, true) {
                let before = schedule.find_previous_occurrence(&latest, false).ok();
                pending = before.into_iter().chain([latest]).collect();
            }
            break;
        }
    }
    let Some(&latest) = pending.last() else { return Due { fire: None, missed: None } };
    let fire = (now - latest <= GRACE).then_some(latest);
    let missed_count = if capped {
        MISSED_COUNTED
    } else if fire.is_some() {
        count - 1
    } else {
        count
    };
    let last_missed = if fire.is_some() { pending.len().checked_sub(2).map(|i| pending[i]) } else { Some(latest) };
    let missed = match (missed_count, first, last_missed) {
        (0, _, _) => None,
        (n, Some(first), Some(last_missed)) => Some((n, first, last_missed)),
        _ => None,
    };
    Due { fire, missed }
}

/// The triggers service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Triggers {
    store: Store,
    registry: Registry,
    gateway: Gateway,
}

impl Triggers {
    /// Triggers over the store, invoking through `gateway`.
    pub fn new(store: Store, registry: Registry, gateway: Gateway) -> Triggers {
        Triggers { store, registry, gateway }
    }

    /// Creates a trigger on the caller's instance of `function` (which need not exist yet:
    /// fires before it does are recorded as failed, saying so).
    pub async fn create(
        &self,
        caller: &Principal,
        function: &str,
        spec: TriggerSpec,
        now: DateTime<Utc>,
    ) -> TriggerResult<TriggerInfo> {
        let spec = checked(spec)?;
        let record = self.registry.find_visible(caller, function).await?;
        if self.store.trigger_count(record.id, caller.id).await? >= MAX_TRIGGERS_PER_FUNCTION {
            return Err(TriggerError::TooMany { function: record.name });
        }
        let id = self.store.insert_trigger(record.id, caller.id, &spec, now).await?;
        self.get(caller, id, now).await
    }

    /// The caller's triggers on `function` (an admin's view: everyone's).
    pub async fn list(
        &self,
        caller: &Principal,
        function: &str,
        now: DateTime<Utc>,
    ) -> TriggerResult<Vec<TriggerInfo>> {
        let record = self.registry.find_visible(caller, function).await?;
        let user = if caller.is_admin() { None } else { Some(caller.id) };
        let mut infos = Vec::new();
        for trigger in self.store.triggers_of(record.id, user).await? {
            infos.push(self.info(trigger, now).await?);
        }
        Ok(infos)
    }

    /// One trigger with its latest runs.
    pub async fn get(&self, caller: &Principal, id: i64, now: DateTime<Utc>) -> TriggerResult<TriggerInfo> {
        let trigger = self.owned(caller, id).await?;
        self.info(trigger, now).await
    }

    /// Deletes a trigger and its runs.
    pub async fn delete(&self, caller: &Principal, id: i64) -> TriggerResult<()> {
        let trigger = self.owned(caller, id).await?;
        self.store.delete_trigger(trigger.id).await?;
        Ok(())
    }

    async fn owned(&self, caller: &Principal, id: i64) -> TriggerResult<TriggerRecord> {
        match self.store.trigger(id).await? {
            Some(trigger) if trigger.user_id == caller.id || caller.is_admin() => Ok(trigger),
            _ => Err(TriggerError::NotFound { id }),
        }
    }

    async fn info(&self, trigger: TriggerRecord, now: DateTime<Utc>) -> TriggerResult<TriggerInfo> {
        let runs = self.store.runs(trigger.id, RUNS_SHOWN).await?;
        let next_fire_at =
            parse_schedule(&trigger.spec.schedule).ok().and_then(|cron| cron.find_next_occurrence(&now, false).ok());
        Ok(TriggerInfo {
            id: trigger.id,
            function: trigger.function,
            user: trigger.user,
            spec: trigger.spec,
            next_fire_at,
            last_fire_at: trigger.last_fire_at,
            created_at: trigger.created_at,
            runs,
        })
    }

    /// Marks runs a stopped kubefn left `running` as failed (call once at start).
    pub async fn recover(&self, now: DateTime<Utc>) -> TriggerResult<()> {
        let interrupted = self.store.fail_interrupted_runs(now).await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "trigger runs were cut short by a stop of kubefn");
        }
        Ok(())
    }

    /// Fires every trigger due at `now` (each in a task of its own, returned so callers may
    /// wait) and records the skipped ones.
    pub async fn tick(&self, now: DateTime<Utc>) -> TriggerResult<Vec<tokio::task::JoinHandle<()>>> {
        let mut started = Vec::new();
        for trigger in self.store.enabled_triggers().await? {
            let Ok(schedule) = parse_schedule(&trigger.spec.schedule) else { continue };
            let due = due(&schedule, trigger.last_fire_at.unwrap_or(trigger.created_at), now);
            let Some(handled) = due.fire.or(due.missed.map(|(_, _, last)| last)) else { continue };
            if !self.store.claim_fire(trigger.id, trigger.last_fire_at, handled).await? {
                continue;
            }
            if let Some((count, first, last)) = due.missed {
                let more = if count >= MISSED_COUNTED { "or more " } else { "" };
                let message = format!(
                    "{count} {more}fire(s) from {first} to {last} were due while kubefn was not running; skipped"
                );
                let run = TriggerRun {
                    scheduled_for: first,
                    outcome: RunOutcome::Skipped,
                    status: None,
                    duration_ms: None,
                    message,
                    finished_at: Some(now),
                };
                self.store.insert_run(trigger.id, &run).await?;
            }
            if let Some(at) = due.fire {
                let run = TriggerRun {
                    scheduled_for: at,
                    outcome: RunOutcome::Running,
                    status: None,
                    duration_ms: None,
                    message: String::new(),
                    finished_at: None,
                };
                let run_id = self.store.insert_run(trigger.id, &run).await?;
                let this = self.clone();
                started.push(tokio::spawn(async move { this.fire(trigger, at, run_id).await }));
            }
        }
        Ok(started)
    }

    async fn fire(&self, trigger: TriggerRecord, at: DateTime<Utc>, run_id: i64) {
        let started = Instant::now();
        let (outcome, status, message) = match self.invoke(&trigger).await {
            Ok((status, answer)) => {
                (if status < 400 { RunOutcome::Ok } else { RunOutcome::Failed }, Some(status), answer)
            }
            Err(reason) => (RunOutcome::Failed, None, reason),
        };
        let run = TriggerRun {
            scheduled_for: at,
            outcome,
            status,
            duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            message,
            finished_at: Some(Utc::now()),
        };
        if let Err(error) = self.store.finish_run(run_id, &run).await {
            tracing::error!(trigger = trigger.id, error = %super::error_chain(&error), "cannot record a trigger run");
        }
    }

    /// Invokes the trigger's instance as its user; the status and the start of the answer.
    async fn invoke(&self, trigger: &TriggerRecord) -> Result<(u16, String), String> {
        let user = self
            .store
            .user_by_id(trigger.user_id)
            .await
            .map_err(|e| super::error_chain(&e))?
            .ok_or("the trigger's user no longer exists")?;
        let caller = Principal::from(&user);
        let uri = upstream_uri_of(&trigger.spec.path).map_err(|e| format!("the trigger's path cannot be sent: {e}"))?;
        let request = http::Request::builder()
            .method(trigger.spec.method.as_str())
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-kubefn-trigger", trigger.id.to_string())
            .body(http_body_util::Full::new(hyper::body::Bytes::from(trigger.spec.body.clone())))
            .map_err(|e| format!("the trigger's request cannot be built: {e}"))?;
        let response = self
            .gateway
            .invoke(Some(&caller), &trigger.user, &trigger.function, request, None)
            .await
            .map_err(|e| super::error_chain(&e))?;
        let status = response.status().as_u16();
        let answer =
            response.into_body().read_start(ANSWER_KEPT).await.map_err(|e| format!("the answer broke off: {e}"))?;
        Ok((status, answer.text()))
    }

    /// Ticks every second until aborted.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.recover(Utc::now()).await {
                tracing::error!(error = %super::error_chain(&error), "cannot recover trigger runs");
            }
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                if let Err(error) = this.tick(Utc::now()).await {
                    tracing::error!(error = %super::error_chain(&error), "the trigger scheduler failed a tick");
                }
            }
        })
    }
}

/// The spec with its method upper-cased, or the first invalid field.
fn checked(mut spec: TriggerSpec) -> TriggerResult<TriggerSpec> {
    parse_schedule(&spec.schedule).map_err(TriggerError::Invalid)?;
    spec.schedule = spec.schedule.trim().to_string();
    spec.method = spec.method.trim().to_ascii_uppercase();
    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&spec.method.as_str()) {
        return Err(TriggerError::Invalid(FieldError::new(
            "method",
            format!("method must be GET, POST, PUT, PATCH or DELETE (got {:?})", spec.method),
        )));
    }
    if !spec.path.starts_with('/')
        || spec.path.len() > 2048
        || spec.path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(TriggerError::Invalid(FieldError::new(
            "path",
            "path must start with / and hold no spaces (at most 2048 characters), e.g. /report?full=1",
        )));
    }
    if upstream_uri_of(&spec.path).is_err() {
        return Err(TriggerError::Invalid(FieldError::new(
            "path",
            format!("path {:?} is not a valid URL path", spec.path),
        )));
    }
    if spec.body.len() > 64 * 1024 {
        return Err(TriggerError::Invalid(FieldError::new("body", "body must be at most 64 KiB")));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).single().expect("time")
    }

    #[test]
    fn schedules_are_five_cron_fields() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        let error = parse_schedule("* * * * * *").expect_err("six fields");
        assert_eq!(error.field, "schedule");
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_schedule("").is_err());
    }

    #[test]
    fn a_due_minute_fires_once_and_not_before() {
        let every_minute = parse_schedule("* * * * *").expect("cron");
        assert_eq!(
            due(&every_minute, at(12, 0, 10), at(12, 0, 50)),
            Due { fire: None, missed: None },
            "12:01 is not due yet"
        );
        assert_eq!(due(&every_minute, at(12, 0, 10), at(12, 1, 0)).fire, Some(at(12, 1, 0)), "due at the minute");
        assert_eq!(
            due(&every_minute, at(12, 1, 0), at(12, 1, 30)),
            Due { fire: None, missed: None },
            "handled already"
        );
        let quarter = parse_schedule("15 * * * *").expect("cron");
        assert_eq!(due(&quarter, at(12, 0, 0), at(12, 14, 59)).fire, None);
        assert_eq!(due(&quarter, at(12, 0, 0), at(12, 15, 20)).fire, Some(at(12, 15, 0)));
    }

    #[test]
    fn fires_missed_while_down_are_skipped_and_counted() {
        let every_minute = parse_schedule("* * * * *").expect("cron");
        // Down from 12:01:30 to 12:05:30: 12:02–12:04 missed, 12:05 still within the grace.
        let after_restart = due(&every_minute, at(12, 1, 0), at(12, 5, 30));
        assert_eq!(after_restart.fire, Some(at(12, 5, 0)));
        assert_eq!(after_restart.missed, Some((3, at(12, 2, 0), at(12, 4, 0))));
        // Back more than the grace after the last due minute: nothing fires.
        let hourly = parse_schedule("0 * * * *").expect("cron");
        let late = due(&hourly, at(9, 0, 0), at(12, 30, 0));
        assert_eq!(late.fire, None);
        assert_eq!(late.missed, Some((3, at(10, 0, 0), at(12, 0, 0))));
        // A week down on a per-minute schedule is counted up to the cap.
        let week = due(&every_minute, at(0, 0, 0), at(0, 0, 0) + Duration::days(7));
        assert_eq!(week.fire, Some(at(0, 0, 0) + Duration::days(7)));
        assert!(
            week.missed.is_some_and(|(count, first, last)| count == MISSED_COUNTED
                && first == at(0, 1, 0)
                && last == at(23, 59, 0) + Duration::days(6)),
            "{week:?}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let spec = |method: &str, path: &str| TriggerSpec {
            schedule: "* * * * *".into(),
            method: method.into(),
            path: path.into(),
            body: String::new(),
        };
        assert!(matches!(checked(spec("post", "/x?y=1")), Ok(s) if s.method == "POST"));
        assert!(matches!(checked(spec("BREW", "/")), Err(TriggerError::Invalid(e)) if e.field == "method"));
        assert!(matches!(checked(spec("GET", "x")), Err(TriggerError::Invalid(e)) if e.field == "path"));
        assert!(matches!(checked(spec("GET", "/a b")), Err(TriggerError::Invalid(e)) if e.field == "path"));
    }
}
