//! The row the gateway reads on every request to `/fn/{user}/{function}`, and the cache that
//! spares the database most of those reads.

use super::{JsonField, Store, StoreResult};
use crate::platform::model::InvokePolicy;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What the gateway needs to admit an invocation of `/fn/{user}/{function}`, read in one
/// query (it runs on every request).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct InvocationRow {
    /// The instance's user's id.
    pub owner_id: i64,
    /// The function's id.
    pub function_id: i64,
    /// `timeout_s` of the current version, when it states one.
    pub timeout_s: Option<i64>,
    /// `invoke` of the current version as JSON, when it states one.
    pub invoke: Option<String>,
    /// That `invoke`, parsed once when the row is read (the default policy when the version
    /// states none), so no request parses JSON.
    #[sqlx(skip)]
    pub policy: InvokePolicy,
    /// The user's instance of the function, if deployed.
    pub instance_id: Option<String>,
    /// Whether that instance is paused.
    pub paused: Option<bool>,
}

/// Most rows [`InvocationCache`] keeps; past it, it starts over.
const INVOCATION_CACHE_ROWS: usize = 10_000;

/// How long a row of [`InvocationCache`] is used: what another kubefn over the same database
/// changes (`--cron false` replicas) is seen within this time.
pub(super) const INVOCATION_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Rows of [`Store::invocation`] read since the last write to the tables they come from. The
/// gateway asks for one on every request; the writes (a deploy, a pause, an edit) are rare, and
/// those of this process empty the cache at once, so a request never sees them late. Writes of
/// another process over the same database are seen once a row is [`INVOCATION_CACHE_TTL`] old.
#[derive(Debug, Default)]
pub(super) struct InvocationCache {
    /// Bumped by every such write: a row read across one is not kept.
    generation: u64,
    /// By user, then function: a lookup borrows the request's names instead of copying them.
    rows: HashMap<String, HashMap<String, (Instant, Arc<InvocationRow>)>>,
    /// How many rows `rows` holds.
    len: usize,
}

impl InvocationCache {
    /// The row of `user`'s `function`, if read within [`INVOCATION_CACHE_TTL`].
    fn fresh(&self, user: &str, function: &str) -> Option<Arc<InvocationRow>> {
        let (read_at, row) = self.rows.get(user)?.get(function)?;
        (read_at.elapsed() < INVOCATION_CACHE_TTL).then(|| row.clone())
    }

    fn insert(&mut self, user: &str, function: &str, read_at: Instant, row: Arc<InvocationRow>) {
        if self.len >= INVOCATION_CACHE_ROWS {
            self.clear();
        }
        let previous = self.rows.entry(user.to_string()).or_default().insert(function.to_string(), (read_at, row));
        if previous.is_none() {
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.len = 0;
    }
}

impl Store {
    /// The user, function, current version's invocation settings and instance behind
    /// `/fn/{user}/{function}`; `None` when the user or the function does not exist.
    pub async fn invocation(&self, user: &str, function: &str) -> StoreResult<Option<Arc<InvocationRow>>> {
        with_pool!(self, |pool| {
            let generation = {
                let cache = self.invocations.lock();
                if let Some(row) = cache.fresh(user, function) {
                    return Ok(Some(row));
                }
                cache.generation
            };
            let read_at = Instant::now();
            let timeout_s = self.json_field("v.spec", "timeout_s", JsonField::Integer);
            let invoke = self.json_field("v.spec", "invoke", JsonField::Document);
            let row: Option<InvocationRow> = sqlx::query_as(&format!(
            "SELECT u.id AS owner_id, f.id AS function_id, {timeout_s} AS timeout_s,
                    {invoke} AS invoke, i.id AS instance_id, i.paused AS paused
               FROM users u
               JOIN functions f ON f.name = $2
               LEFT JOIN instances i ON i.function_id = f.id AND i.user_id = u.id
               JOIN function_versions v ON v.function_id = f.id AND v.number = COALESCE(i.pinned_version, f.current_version)
              WHERE u.name = $1",
        ))
        .bind(user)
        .bind(function)
        .fetch_optional(pool)
        .await?;
            let Some(mut row) = row else { return Ok(None) };
            // A version's policy was checked when it was stored; one that no longer parses
            // (written by an older kubefn) falls back to the default, the strictest access.
            row.policy = row.invoke.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default();
            let row = Arc::new(row);
            // Only rows that exist are kept, so unknown names cannot grow the cache.
            let mut cache = self.invocations.lock();
            if cache.generation == generation {
                cache.insert(user, function, read_at, row.clone());
            }
            Ok(Some(row))
        })
    }

    /// Empties the invocation cache; called after every write to functions, their versions
    /// or instances.
    pub(super) fn forget_invocations(&self) {
        let mut cache = self.invocations.lock();
        cache.generation += 1;
        cache.clear();
    }
}
