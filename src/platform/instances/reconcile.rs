//! The reconcile loop: the runtime made to follow the store, usage recorded, followers kept
//! within their quota.

use super::*;

/// What the previous pass saw: the usage sample's counters (to turn them into rates), and
/// whether a pass ran at all.
#[derive(Default)]
pub(super) struct Meters {
    /// Per instance: when the last sample was taken and the gateway's call count then.
    pub(super) calls: HashMap<String, (Instant, u64)>,
    pub(super) last_downsample: Option<Instant>,
    /// A reconcile or serving pass has run since kubefn started: it knows its routes to the
    /// instances (before that, its gateway would answer for none).
    pub(super) passed: bool,
}

impl Instances {
    /// Whether this process has routes to the instances: a reconcile or serving pass has run
    /// since it started (`/readyz` waits for that, so no replica takes calls before it).
    pub fn routes_known(&self) -> bool {
        self.meters.lock().passed
    }

    /// Runs the reconcile loop: once now, then every `period` and whenever a function's current version changes.
    pub fn spawn_reconciler(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let instances = self.clone();
        tokio::spawn(async move {
            loop {
                let started = std::time::Instant::now();
                let passed = instances.reconcile().await;
                instances.meters.lock().passed = true;
                instances.invocations.reconciled(started.elapsed().as_secs_f64());
                if let Err(error) = passed {
                    tracing::warn!(error = %crate::platform::error_chain(&error), "reconciling instances failed; trying again");
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = instances.wake.notified() => {}
                }
            }
        })
    }

    /// One pass: every recorded instance is applied (new versions roll out, lost ones start
    /// again), finished deletions are completed, instances the store does not know are
    /// stopped, and the state each runtime reports is recorded.
    pub async fn reconcile(&self) -> InstanceResult<()> {
        let _changing = self.changes.lock().await;
        let records = self.store.instances(None).await?;
        let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        // Read for every instance at once: a query per instance was most of a pass's time.
        let mut specs = self.store.instance_specs(None).await?;
        let newest_events = self.store.newest_events().await?;
        let mut user_quotas: HashMap<i64, Quota> = HashMap::new();
        // Written together after the loop: one transaction per pass, not one per instance.
        let mut samples = Vec::with_capacity(records.len());
        for record in records {
            if record.state == InstanceState::Deleting {
                // In the background: a slow deletion must not hold up everyone's changes.
                self.spawn_removal(record.id.clone());
                continue;
            }
            let spec = self.spec_of(&mut specs, &record).await?;
            let quota = self.quota_in(&mut user_quotas, record.user_id).await?;
            let (record, spec) = self.follow_within_quota(record, spec).await?;
            if let Err(error) = self.apply(&record, spec, quota, ApplyMode::Reconcile).await {
                // The state itself is the "state shows why": only the runtime's words go in it.
                tracing::warn!(instance = %record.id, %error, "cannot apply the instance");
                let message = match &error {
                    InstanceError::Runtime(refusal) => refusal.owner_message(),
                    other => other.to_string(),
                };
                self.store.set_instance_state(&record.id, InstanceState::Failed, &message).await?;
                continue;
            }
            if let Some(status) = self.runtime.status(&record.id) {
                // Most passes change nothing: no round trip to the database for those.
                if (record.state, record.message.as_str()) != (status.state, status.message.as_str()) {
                    self.store.set_instance_state(&record.id, status.state, &status.message).await?;
                }
                let port = status.node_port.map(|address| address.port());
                if let Some(port) = port.filter(|port| record.node_port != Some(*port)) {
                    self.store.set_instance_node_port(&record.id, port).await?;
                }
                // The autoscaler's count, so a restart resumes from it (zero while idle is
                // the runtime's business: the next request wakes it).
                if !record.paused && status.desired > 0 && status.desired != record.replicas {
                    self.store.set_instance_desired(&record.id, record.function_version, status.desired, false).await?;
                }
                samples.push((record.id.clone(), self.usage_sample(&record, &status)));
                self.store
                    .record_events_after(&record.id, &status.events, newest_events.get(&record.id).copied())
                    .await?;
            }
        }
        self.store.insert_usage(&samples).await?;
        for stray in self.runtime.instance_ids().into_iter().filter(|id| !known.contains(id)) {
            if self.spawn_removal(stray.clone()).is_some() {
                tracing::info!(instance = %stray, "stopping an instance the store no longer has");
            }
        }
        let downsample = {
            let mut meters = self.meters.lock();
            meters.calls.retain(|id, _| known.contains(id));
            let due = meters.last_downsample.is_none_or(|last| last.elapsed() >= DOWNSAMPLE_EVERY);
            if due {
                meters.last_downsample = Some(Instant::now());
            }
            due
        };
        if downsample {
            self.store.downsample_usage(Utc::now()).await?;
        }
        Ok(())
    }

    /// The instance's usage sample for this pass: the runtime's figures and the gateway's calls
    /// since the last one.
    fn usage_sample(&self, record: &InstanceRecord, status: &RuntimeStatus) -> UsageSample {
        let id = record.id.as_str();
        let usage = self.runtime.usage(id).unwrap_or_default();
        let labels = InstanceLabels::new(&record.function, &record.user);
        let calls = self.invocations.calls_total(&labels);
        let now = Instant::now();
        let requests_per_s = {
            let mut meters = self.meters.lock();
            let previous = meters.calls.insert(id.to_string(), (now, calls));
            previous.and_then(|(at, total)| {
                let seconds = now.saturating_duration_since(at).as_secs_f64();
                (seconds > 0.0 && calls >= total).then(|| (calls - total) as f64 / seconds)
            })
        };
        let finished = self.invocations.take_finished(&labels);
        let cpu: Vec<f64> = usage.iter().filter_map(|u| u.cpu_millicores).collect();
        UsageSample {
            at: Utc::now(),
            replicas_desired: status.desired,
            replicas_ready: status.ready,
            cpu_millicores: (!cpu.is_empty()).then(|| cpu.iter().sum()),
            memory_bytes: (!usage.is_empty()).then(|| usage.iter().map(|u| u.memory_bytes).sum()),
            requests_per_s,
            p50_ms: finished.latency.quantile(0.50),
            p95_ms: finished.latency.quantile(0.95),
            invocations: finished.ended,
            errors: finished.failed,
            autoscaler_load_percent: status.autoscaler.as_ref().and_then(|a| a.load_percent()),
        }
    }

    /// An instance that follows someone else's function moves to the owner's new version only
    /// within its own user's quota: an owner raising `scaling.max` or the limits must not run up
    /// their followers' use. Past the quota, the instance stops following and stays on the
    /// version it runs, with a Warning event that says why; its user may follow again (a deploy
    /// with `follow_updates`, checked against the quota) once there is room.
    pub(super) async fn follow_within_quota(
        &self,
        record: InstanceRecord,
        spec: FunctionSpec,
    ) -> InstanceResult<(InstanceRecord, FunctionSpec)> {
        let moving = !record.pinned && record.desired_version != 0 && record.desired_version != record.function_version;
        if !moving {
            return Ok((record, spec));
        }
        let refusal =
            match self.check_quota(record.user_id, Some(&record.id), Footprint::of(&spec, record.replicas)).await {
                Ok(()) => return Ok((record, spec)),
                Err(InstanceError::Quota(refusal @ QuotaError::Exceeded { .. })) => refusal,
                Err(other) => return Err(other),
            };
        let owner = self.store.function_by_id(record.function_id).await?.map(|f| f.owner_id);
        if owner == Some(record.user_id) {
            // The owner's own change was checked when they made it.
            return Ok((record, spec));
        }
        let (stay, new) = (record.desired_version, record.function_version);
        let why = match &refusal {
            QuotaError::Exceeded { limit, quota, would_be, .. } => {
                format!("v{new} would make {would_be} {limit}, over your quota of {quota}")
            }
            other => other.to_string(),
        };
        let event = EventInfo {
            at: Utc::now(),
            kind: "Warning".into(),
            reason: "OverQuota".into(),
            message: format!(
                "stopped following {}'s updates and stays on v{stay}: {why}; follow again once there is room",
                record.function
            ),
        };
        // The event first: whoever sees the instance pinned also sees why.
        self.store.record_events(&record.id, &[event]).await?;
        self.store.set_instance_pin(&record.id, Some(stay)).await?;
        tracing::warn!(instance = %record.id, stay, new, "an instance stops following its function's updates: over its user's quota");
        let spec = self.version_spec(record.function_id, stay, &record.function).await?;
        Ok((InstanceRecord { function_version: stay, pinned: true, ..record }, spec))
    }
}
