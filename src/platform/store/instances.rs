//! Instances: what each user asked to run. The runtime's view of them is reconciled to this.

use super::{Store, StoreResult, numbered_parameters};
use crate::platform::model::Named;
use crate::platform::model::{EventInfo, FunctionSpec, InstanceState};
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::HashMap;

/// An instance row joined with its function's and user's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Stable id (a UUID).
    pub id: String,
    /// The function's row id.
    pub function_id: i64,
    /// The function's name.
    pub function: String,
    /// What the instance should run: its pinned version, else the function's current one.
    pub function_version: u32,
    /// The function's current version (its owner's latest choice).
    pub current_version: u32,
    /// Whether the instance stays on [`InstanceRecord::function_version`] whatever the owner
    /// changes (`false`: it follows the current version).
    pub pinned: bool,
    /// The user's row id.
    pub user_id: i64,
    /// The user's name.
    pub user: String,
    /// The version last handed to the runtime.
    pub desired_version: u32,
    /// Replicas asked for (by deploy, scale or the autoscaler).
    pub replicas: u32,
    /// Paused by its user.
    pub paused: bool,
    /// The state last seen.
    pub state: InstanceState,
    /// The message last seen.
    pub message: String,
    /// The node port it was given, kept across restarts.
    pub node_port: Option<u16>,
    /// First deployed.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct InstanceRow {
    id: String,
    function_id: i64,
    function: String,
    function_version: i64,
    current_version: i64,
    pinned: bool,
    user_id: i64,
    user: String,
    desired_version: i64,
    replicas: i64,
    paused: bool,
    state: String,
    message: String,
    node_port: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<InstanceRow> for InstanceRecord {
    fn from(row: InstanceRow) -> Self {
        InstanceRecord {
            id: row.id,
            function_id: row.function_id,
            function: row.function,
            function_version: u32::try_from(row.function_version).unwrap_or(0),
            current_version: u32::try_from(row.current_version).unwrap_or(0),
            pinned: row.pinned,
            user_id: row.user_id,
            user: row.user,
            desired_version: u32::try_from(row.desired_version).unwrap_or(0),
            replicas: u32::try_from(row.replicas).unwrap_or(0),
            paused: row.paused,
            // The CHECK constraint admits only known states.
            state: InstanceState::parse(&row.state).unwrap_or_default(),
            message: row.message,
            node_port: row.node_port.and_then(|port| u16::try_from(port).ok()),
            created_at: row.created_at,
        }
    }
}

const SELECT_INSTANCE: &str = "SELECT i.id, i.function_id, f.name AS function, COALESCE(i.pinned_version, f.current_version) AS function_version,
        f.current_version AS current_version, i.pinned_version IS NOT NULL AS pinned,
        i.user_id, u.name AS \"user\", i.desired_version, i.replicas, i.paused, i.state, i.message, i.node_port, i.created_at
   FROM instances i JOIN functions f ON f.id = i.function_id JOIN users u ON u.id = i.user_id";

impl Store {
    /// The instance of (function, user), creating it (as `Pending`, with `replicas`, pinned to
    /// `pinned` or following the current version) when there is none; an existing one is only
    /// un-paused. Returns it and whether it was created.
    pub async fn upsert_instance(
        &self,
        function_id: i64,
        user_id: i64,
        version: u32,
        replicas: u32,
        pinned: Option<u32>,
    ) -> StoreResult<(InstanceRecord, bool)> {
        with_pool!(self, |pool| {
            let now = Utc::now();
            let id = uuid::Uuid::new_v4().to_string();
            let (stored_id,): (String,) = sqlx::query_as(
            "INSERT INTO instances (id, function_id, user_id, desired_version, replicas, paused, state, message, created_at, updated_at, pinned_version)
             VALUES ($1, $2, $3, $4, $5, FALSE, 'Pending', '', $6, $7, $8)
             ON CONFLICT (function_id, user_id) DO UPDATE SET paused = FALSE, updated_at = excluded.updated_at
             RETURNING id",
        )
        .bind(&id)
        .bind(function_id)
        .bind(user_id)
        .bind(i64::from(version))
        .bind(i64::from(replicas))
        .bind(now)
        .bind(now)
        .bind(pinned.map(i64::from))
        .fetch_one(pool)
        .await?;
            self.forget_invocations();
            let record = self.instance(&stored_id).await?.ok_or(super::StoreError::Query(sqlx::Error::RowNotFound))?;
            Ok((record, stored_id == id))
        })
    }

    /// One instance.
    pub async fn instance(&self, id: &str) -> StoreResult<Option<InstanceRecord>> {
        with_pool!(self, |pool| {
            let row: Option<InstanceRow> =
                sqlx::query_as(&format!("{SELECT_INSTANCE} WHERE i.id = $1")).bind(id).fetch_optional(pool).await?;
            Ok(row.map(InstanceRecord::from))
        })
    }

    /// The instance of (function, user), if any.
    pub async fn instance_of(&self, function_id: i64, user_id: i64) -> StoreResult<Option<InstanceRecord>> {
        with_pool!(self, |pool| {
            let row: Option<InstanceRow> =
                sqlx::query_as(&format!("{SELECT_INSTANCE} WHERE i.function_id = $1 AND i.user_id = $2"))
                    .bind(function_id)
                    .bind(user_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(InstanceRecord::from))
        })
    }

    /// Every instance of one user, or of everyone when `user_id` is `None`, by function and user.
    pub async fn instances(&self, user_id: Option<i64>) -> StoreResult<Vec<InstanceRecord>> {
        with_pool!(self, |pool| {
            let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
                "{SELECT_INSTANCE} WHERE $1 IS NULL OR i.user_id = $1 ORDER BY f.name, u.name"
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(InstanceRecord::from).collect())
        })
    }

    /// A user's instances of the functions named `names` (a catalog page's), by function name:
    /// what the catalog shows costs what the page holds, however many instances the user runs.
    pub async fn instances_of_functions(&self, user_id: i64, names: &[String]) -> StoreResult<Vec<InstanceRecord>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names_in = numbered_parameters(2, names.len());
        let sql = format!("{SELECT_INSTANCE} WHERE i.user_id = $1 AND f.name IN ({names_in}) ORDER BY f.name");
        with_pool!(self, |pool| {
            let query = sqlx::query_as::<_, InstanceRow>(&sql).bind(user_id);
            let rows = names.iter().fold(query, |query, name| query.bind(name)).fetch_all(pool).await?;
            Ok(rows.into_iter().map(InstanceRecord::from).collect())
        })
    }

    /// The spec of the version each of a user's instances (or everyone's, when `user_id` is
    /// `None`) runs, by instance id, in one query: a quota check and a reconcile pass need all of
    /// them, and a query each cost a round trip to the database per instance.
    pub async fn instance_specs(&self, user_id: Option<i64>) -> StoreResult<HashMap<String, FunctionSpec>> {
        with_pool!(self, |pool| {
            // The version each instance runs is `function_version` as SELECT_INSTANCE defines it.
            let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(&format!(
                "SELECT r.id, v.function_id, v.number, v.spec
               FROM ({SELECT_INSTANCE} WHERE $1 IS NULL OR i.user_id = $1) r
               JOIN function_versions v ON v.function_id = r.function_id AND v.number = r.function_version"
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            // Many instances may run one version: each is decoded once.
            let mut decoded: HashMap<(i64, i64), FunctionSpec> = HashMap::new();
            let mut specs = HashMap::with_capacity(rows.len());
            for (id, function_id, number, text) in rows {
                let spec = match decoded.get(&(function_id, number)) {
                    Some(spec) => spec.clone(),
                    None => {
                        let spec = super::functions::decode_spec(&text)?;
                        decoded.insert((function_id, number), spec.clone());
                        spec
                    }
                };
                specs.insert(id, spec);
            }
            Ok(specs)
        })
    }

    /// Pins the instance to `version`, or lets it follow the function's current version (`None`).
    pub async fn set_instance_pin(&self, id: &str, version: Option<u32>) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE instances SET pinned_version = $1, updated_at = $2 WHERE id = $3")
                .bind(version.map(i64::from))
                .bind(Utc::now())
                .bind(id)
                .execute(pool)
                .await?;
            // The gateway's limits are those of the version the instance runs.
            self.forget_invocations();
            Ok(())
        })
    }

    /// Records what was handed to the runtime.
    pub async fn set_instance_desired(&self, id: &str, version: u32, replicas: u32, paused: bool) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE instances SET desired_version = $1, replicas = $2, paused = $3, updated_at = $4 WHERE id = $5",
            )
            .bind(i64::from(version))
            .bind(i64::from(replicas))
            .bind(paused)
            .bind(Utc::now())
            .bind(id)
            .execute(pool)
            .await?;
            self.forget_invocations();
            Ok(())
        })
    }

    /// Records the state the runtime reports, when it changed.
    pub async fn set_instance_state(&self, id: &str, state: InstanceState, message: &str) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE instances SET state = $1, message = $2, updated_at = $3 WHERE id = $4 AND (state <> $1 OR message <> $2)")
            .bind(state.as_str())
            .bind(message)
            .bind(Utc::now())
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Records the node port the runtime gave the instance.
    pub async fn set_instance_node_port(&self, id: &str, port: u16) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE instances SET node_port = $1 WHERE id = $2")
                .bind(i64::from(port))
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Removes an instance (its usage samples and events go with it).
    pub async fn delete_instance(&self, id: &str) -> StoreResult<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM instances WHERE id = $1").bind(id).execute(pool).await?;
            self.forget_invocations();
            Ok(())
        })
    }
}

impl Store {
    /// Records an instance's events newer than the newest one stored (the runtime keeps only
    /// recent ones in memory); returns how many were new.
    pub async fn record_events(&self, instance_id: &str, events: &[EventInfo]) -> StoreResult<usize> {
        with_pool!(self, |pool| {
            let (newest,): (Option<DateTime<Utc>>,) =
                sqlx::query_as("SELECT MAX(at) FROM events WHERE instance_id = $1")
                    .bind(instance_id)
                    .fetch_one(pool)
                    .await?;
            self.record_events_after(instance_id, events, newest).await
        })
    }

    /// The time of each instance's newest stored event, in one query: the reconcile pass needs
    /// every instance's, and a query each was a round trip per instance on every pass.
    pub async fn newest_events(&self) -> StoreResult<HashMap<String, DateTime<Utc>>> {
        with_pool!(self, |pool| {
            let rows: Vec<(String, DateTime<Utc>)> =
                sqlx::query_as("SELECT instance_id, MAX(at) FROM events GROUP BY instance_id").fetch_all(pool).await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// [`Store::record_events`] when the newest stored event's time is known already
    /// ([`Store::newest_events`]; `None`: the instance has none).
    pub async fn record_events_after(
        &self,
        instance_id: &str,
        events: &[EventInfo],
        newest: Option<DateTime<Utc>>,
    ) -> StoreResult<usize> {
        with_pool!(self, |pool| {
            // PostgreSQL keeps microseconds: an event read back is compared at that precision, or
            // every pass would find the newest stored event newer than itself.
            let fresh: Vec<&EventInfo> = events
                .iter()
                .filter(|e| newest.is_none_or(|newest| e.at.trunc_subsecs(6) > newest.trunc_subsecs(6)))
                .collect();
            // Nothing new, nothing to trim: no write, which the reconcile loop would otherwise make
            // for every instance on every pass.
            if fresh.is_empty() {
                return Ok(0);
            }
            let mut tx = pool.begin().await?;
            // Oldest first, so ids follow time.
            for event in fresh.iter().rev() {
                sqlx::query("INSERT INTO events (instance_id, at, kind, reason, message) VALUES ($1, $2, $3, $4, $5)")
                    .bind(instance_id)
                    .bind(event.at)
                    .bind(&event.kind)
                    .bind(&event.reason)
                    .bind(&event.message)
                    .execute(&mut *tx)
                    .await?;
            }
            // Bounded: the newest EVENTS_KEPT per instance.
            sqlx::query("DELETE FROM events WHERE instance_id = $1 AND id NOT IN (SELECT id FROM events WHERE instance_id = $1 ORDER BY at DESC, id DESC LIMIT $2)")
            .bind(instance_id)
            .bind(EVENTS_KEPT)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(fresh.len())
        })
    }

    /// The newest `limit` events with one of `reasons` since `since`, of every instance
    /// (`None`) or of one, newest first, each with its instance's id.
    pub async fn events_with_reasons(
        &self,
        instance_id: Option<&str>,
        reasons: &[&str],
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(String, EventInfo)>> {
        with_pool!(self, |pool| {
            let placeholders = numbered_parameters(3, reasons.len());
            let sql = format!(
            "SELECT instance_id, at, kind, reason, message FROM events
             WHERE instance_id IS NOT NULL AND ($1 IS NULL OR instance_id = $1) AND at >= $2 AND reason IN ({placeholders})
             ORDER BY at DESC, id DESC LIMIT {limit}"
        );
            let mut query = sqlx::query_as::<_, (String, DateTime<Utc>, String, String, String)>(&sql)
                .bind(instance_id)
                .bind(since);
            for reason in reasons {
                query = query.bind(*reason);
            }
            let rows = query.fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(id, at, kind, reason, message)| (id, EventInfo { at, kind, reason, message }))
                .collect())
        })
    }

    /// An instance's stored events, newest first.
    pub async fn events(&self, instance_id: &str) -> StoreResult<Vec<EventInfo>> {
        with_pool!(self, |pool| {
            let rows: Vec<(DateTime<Utc>, String, String, String)> = sqlx::query_as(
                "SELECT at, kind, reason, message FROM events WHERE instance_id = $1 ORDER BY at DESC, id DESC",
            )
            .bind(instance_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(at, kind, reason, message)| EventInfo { at, kind, reason, message }).collect())
        })
    }
}

/// Events kept per instance.
pub const EVENTS_KEPT: i64 = 200;

#[cfg(test)]
mod tests {
    use super::super::Store;
    use crate::platform::model::{FunctionSpec, InvokeAccess, Role};

    #[tokio::test]
    async fn an_invocation_row_follows_every_write_it_depends_on() {
        for super::super::test_databases::TestStore { store, url, .. } in
            super::super::test_databases::test_stores().await
        {
            let alice = store.insert_user("alice", "hash", Role::User).await.expect("user");
            assert_eq!(store.invocation("alice", "hello").await.expect("row"), None, "no function yet");
            let mut spec: FunctionSpec = serde_json::from_value(
            serde_json::json!({"name": "hello", "runtime": "python", "source": "def handle(req):\n    return req\n"}),
        )
        .expect("spec");
            let function = store.insert_function(alice.id, &spec).await.expect("function");
            let row = store.invocation("alice", "hello").await.expect("row").expect("function row");
            assert_eq!(row.instance_id, None);

            // Each write below is seen by the very next read, though reads are cached.
            let (instance, _) = store.upsert_instance(function.id, alice.id, 1, 1, None).await.expect("instance");
            assert_eq!(
                store.invocation("alice", "hello").await.expect("row").expect("row").instance_id.as_deref(),
                Some(instance.id.as_str())
            );
            store.set_instance_desired(&instance.id, 1, 1, true).await.expect("pause");
            assert_eq!(store.invocation("alice", "hello").await.expect("row").expect("row").paused, Some(true));
            spec.invoke.access = InvokeAccess::Public;
            spec.timeout_s = 7;
            store.add_version(function.id, &spec, alice.id).await.expect("version 2");
            let row = store.invocation("alice", "hello").await.expect("row").expect("row");
            assert_eq!(row.timeout_s, Some(7));
            assert!(row.invoke.as_deref().is_some_and(|invoke| invoke.contains("public")), "{row:?}");
            assert_eq!(row.policy.access, InvokeAccess::Public, "parsed once, with the row");
            assert!(store.set_current_version(function.id, 1).await.expect("roll back"));
            assert_eq!(store.invocation("alice", "hello").await.expect("row").expect("row").timeout_s, Some(60));
            // Another kubefn over the same database: its writes are seen once the row is old enough.
            let other = Store::open(&url).await.expect("second store");
            other.set_instance_desired(&instance.id, 1, 1, false).await.expect("resume elsewhere");
            tokio::time::sleep(super::super::invocations::INVOCATION_CACHE_TTL).await;
            assert_eq!(store.invocation("alice", "hello").await.expect("row").expect("row").paused, Some(false));
            store.delete_instance(&instance.id).await.expect("delete");
            assert_eq!(store.invocation("alice", "hello").await.expect("row").expect("row").instance_id, None);
            assert!(store.delete_unused_function(function.id).await.expect("unregister"));
            assert_eq!(store.invocation("alice", "hello").await.expect("row"), None);
        }
    }

    #[tokio::test]
    async fn instance_specs_are_the_versions_each_instance_runs_and_only_the_users() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let alice = store.insert_user("alice", "hash", Role::User).await.expect("user");
            let bob = store.insert_user("bob", "hash", Role::User).await.expect("user");
            let mut spec: FunctionSpec =
                serde_json::from_value(serde_json::json!({"name": "f", "runtime": "python", "source": "v1"}))
                    .expect("spec");
            let function = store.insert_function(alice.id, &spec).await.expect("function");
            spec.source = "v2".into();
            store.add_version(function.id, &spec, alice.id).await.expect("version 2");
            let (pinned, _) = store.upsert_instance(function.id, alice.id, 1, 1, Some(1)).await.expect("alice's");
            let (following, _) = store.upsert_instance(function.id, bob.id, 2, 1, None).await.expect("bob's");

            let alices = store.instance_specs(Some(alice.id)).await.expect("alice's specs");
            assert_eq!(alices.len(), 1, "only alice's instances");
            assert_eq!(alices[&pinned.id].source, "v1", "the pinned version");
            let bobs = store.instance_specs(Some(bob.id)).await.expect("bob's specs");
            assert_eq!(bobs[&following.id].source, "v2", "the current version");
            assert_eq!(store.instance_specs(None).await.expect("everyone's").len(), 2);
        }
    }

    #[tokio::test]
    async fn a_pages_instances_are_the_users_own_of_the_functions_named() {
        for super::super::test_databases::TestStore { store, .. } in super::super::test_databases::test_stores().await {
            let alice = store.insert_user("alice", "hash", Role::User).await.expect("user");
            let bob = store.insert_user("bob", "hash", Role::User).await.expect("user");
            for name in ["a", "b", "c"] {
                let spec =
                    serde_json::from_value(serde_json::json!({"name": name, "runtime": "python", "source": "x"}));
                let function = store.insert_function(alice.id, &spec.expect("spec")).await.expect("function");
                store.upsert_instance(function.id, alice.id, 1, 1, None).await.expect("alice's");
                store.upsert_instance(function.id, bob.id, 1, 1, None).await.expect("bob's");
            }
            let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
            let page = store.instances_of_functions(alice.id, &names(&["c", "a", "nope"])).await.expect("page");
            let shown: Vec<_> = page.iter().map(|i| (i.function.as_str(), i.user_id)).collect();
            assert_eq!(shown, [("a", alice.id), ("c", alice.id)], "only alice's, only those named");
            assert!(store.instances_of_functions(bob.id, &[]).await.expect("none").is_empty());
        }
    }
}
