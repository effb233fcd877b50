//! What runs in the background for instances: scale to zero when idle and back on demand (the
//! policy of [`crate::platform::runtime::scale_to_zero`], carried out on Deployments), and usage
//! samples from metrics.k8s.io.

use super::*;
use crate::platform::runtime::scale_to_zero::{idle_past_limit, replicas_on_wake, wake_on_demand};

impl Inner {
    /// Scales instances with `scale_to_zero_after_s` to zero once they saw no request for that
    /// long (through their port-forward, or inside the cluster through kubefn's own dials),
    /// counting the requests every kubefn process saw: each marks its latest on the Deployment
    /// ([`names::LAST_REQUEST`], once per period at most). The next request wakes them
    /// ([`Inner::wake`]). Requests that bypass kubefn (the NodePort) are not seen.
    pub(super) async fn scale_idle_to_zero(&self) {
        let now = Instant::now();
        let wall = Utc::now();
        let period = self.config.usage_period;
        let watched: Vec<(String, String, String, InstanceSpec, Duration)> = self
            .slots
            .lock()
            .iter()
            .filter_map(|(id, slot)| {
                slot.spec.spec.scaling.scale_to_zero_after_s?;
                let idle = slot.traffic.as_ref()?.idle_for(now);
                Some((id.clone(), slot.namespace.clone(), slot.name.clone(), slot.spec.clone(), idle))
            })
            .collect();
        for (id, namespace, name, spec, own_idle) in watched {
            // Precise enough against the instance's own limit, and few writes for busy ones.
            let after = Duration::from_secs(spec.spec.scaling.scale_to_zero_after_s.unwrap_or_default());
            let spacing = period.max(after / 4);
            let Some(deployment) = self.cluster.deployment_of(&id) else { continue };
            let marked = deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::LAST_REQUEST))
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&Utc));
            if let Some(seen) = mark_due(own_idle, marked, wall, spacing)
                && let Err(error) = self.mark_last_request(&namespace, &name, seen).await
            {
                tracing::warn!(instance = %id, %error, "cannot mark the instance's last request");
            }
            let running = deployment.spec.as_ref().and_then(|s| s.replicas).is_some_and(|r| r > 0);
            if !running || idle_past_limit(&spec, shared_idle(own_idle, marked, wall)).is_none() {
                continue;
            }
            if let Err(error) = self.scale_deployment(&namespace, &name, 0).await {
                tracing::warn!(instance = %id, %error, "cannot scale the idle instance to zero");
            }
        }
    }

    /// Marks `seen` as the instance's last request on its Deployment.
    async fn mark_last_request(&self, namespace: &str, name: &str, seen: DateTime<Utc>) -> Result<(), KubernetesError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let stamp = seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = serde_json::json!({ "metadata": { "annotations": { names::LAST_REQUEST: stamp } } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error(format!("mark the last request on Deployment {namespace}/{name}")))?;
        Ok(())
    }

    pub(super) async fn sample_usage(&self) {
        if !self.metrics_available.load(std::sync::atomic::Ordering::Relaxed) {
            // metrics-server may be installed after kubefn started: look again now and then.
            let probe_due = {
                let mut last = self.metrics_probed.lock();
                let due = last.elapsed() >= METRICS_PROBE_PERIOD;
                if due {
                    *last = Instant::now();
                }
                due
            };
            if !probe_due || !cluster::metrics_served(&self.client).await {
                return;
            }
            tracing::info!("the cluster serves metrics.k8s.io now: reading usage from it");
            self.metrics_available.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let namespaces = self.cluster.namespaces_with(&names::managed_selector_text());
        let mut usage: HashMap<String, Vec<ReplicaUsage>> = HashMap::new();
        for namespace in namespaces {
            match cluster::pod_metrics(&self.client, &namespace).await {
                Ok(pods) => {
                    for pod in pods {
                        if let Some(id) = pod.instance.clone() {
                            usage.entry(id).or_default().push(pod.usage);
                        }
                    }
                }
                Err(error) => tracing::debug!(%namespace, %error, "cannot read pod metrics"),
            }
        }
        *self.usage.lock() = usage;
    }
}

/// The replica count to write through the scale subresource, if any: paused → 0; an instance
/// that went to zero while idle stays there until a connection wakes it; without an HPA → the
/// instance's count; with an HPA → only wake a Deployment left at zero.
pub fn replicas_to_set(function: &FunctionSpec, paused: bool, replicas: u32, current: Option<i32>) -> Option<i32> {
    if !paused && current == Some(0) && function.scaling.scale_to_zero_after_s.is_some() {
        return None;
    }
    let wanted = if paused {
        0
    } else if manifests::autoscaling_on(function) {
        if current.is_some_and(|c| c > 0) {
            return None;
        }
        replicas.clamp(function.scaling.min.max(1), function.scaling.max.max(1)) as i32
    } else {
        replicas as i32
    };
    (current != Some(wanted)).then_some(wanted)
}

impl Inner {
    /// Scales instance `id`'s Deployment back up if it was left at zero and is not paused
    /// (scale from zero, for a request that found no ready pod).
    async fn wake(&self, id: &str) {
        let slot = self.slots.lock().get(id).map(|s| (s.namespace.clone(), s.name.clone(), s.spec.clone()));
        let Some((namespace, name, spec)) = slot else { return };
        let at_zero = self.cluster.deployment_of(id).and_then(|d| d.spec.as_ref().and_then(|s| s.replicas)) == Some(0);
        if at_zero && !spec.paused {
            let replicas = i32::try_from(replicas_on_wake(&spec)).unwrap_or(i32::MAX);
            if let Err(error) = self.scale_deployment(&namespace, &name, replicas).await {
                tracing::warn!(instance = %id, %error, "cannot wake the instance");
            }
        }
    }

    /// Wakes instance `id` whenever `traffic` sees a request find no ready pod, until the
    /// instance or the runtime is gone.
    pub(super) fn wake_on_demand(self: &Arc<Self>, traffic: Arc<Traffic>, id: String) {
        let inner = Arc::downgrade(self);
        tokio::spawn(wake_on_demand(traffic, move || {
            let inner = inner.upgrade()?;
            let present = inner.slots.lock().contains_key(&id);
            let id = id.clone();
            present.then_some(async move { inner.wake(&id).await })
        }));
    }
}

/// How long an instance saw no request from any kubefn process: this one's idle time, or the
/// time since the last request another marked, whichever is shorter.
pub fn shared_idle(own: Duration, marked: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    let since_marked = marked.map_or(Duration::MAX, |at| (now - at).to_std().unwrap_or_default());
    own.min(since_marked)
}

/// The time to mark as the instance's last request, when this process saw one that the mark
/// does not show yet, and the mark is at least `spacing` older (one write per `spacing` at most).
pub fn mark_due(
    own_idle: Duration,
    marked: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    spacing: Duration,
) -> Option<DateTime<Utc>> {
    // Long idle here: nothing new to say (and a process that never saw a request counts its
    // idle time from its start).
    if own_idle > spacing * 2 {
        return None;
    }
    let seen = now - chrono::Duration::from_std(own_idle).ok()?;
    let spacing = chrono::Duration::from_std(spacing).ok()?;
    marked.is_none_or(|at| seen - at >= spacing).then_some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_idle_only_when_no_kubefn_process_saw_a_request() {
        let now = Utc::now();
        let minute = Duration::from_secs(60);
        assert_eq!(shared_idle(minute * 10, None, now), minute * 10, "alone: its own idle time");
        let marked = now - chrono::Duration::seconds(30);
        assert_eq!(shared_idle(minute * 10, Some(marked), now), Duration::from_secs(30), "another saw one");
        assert_eq!(shared_idle(Duration::ZERO, Some(marked), now), Duration::ZERO, "busy here");
    }

    #[test]
    fn a_process_marks_its_requests_at_most_once_a_period() {
        let now = Utc::now();
        let period = Duration::from_secs(5);
        assert_eq!(mark_due(Duration::ZERO, None, now, period), Some(now), "first request seen: marked");
        assert_eq!(
            mark_due(Duration::from_secs(2), Some(now - chrono::Duration::seconds(3)), now, period),
            None,
            "marked a second before"
        );
        let old = now - chrono::Duration::seconds(20);
        assert_eq!(mark_due(Duration::from_secs(1), Some(old), now, period), Some(now - chrono::Duration::seconds(1)));
        assert_eq!(mark_due(Duration::from_secs(600), Some(old), now, period), None, "idle here: nothing to say");
    }
}
