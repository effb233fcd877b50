//! What runs in the background for instances: scale to zero when idle and back on demand (the
//! policy of [`crate::platform::runtime::scale_to_zero`], carried out on Deployments), and usage
//! samples from metrics.k8s.io.

use super::*;
use crate::platform::runtime::scale_to_zero::{idle_past_limit, replicas_on_wake, wake_on_demand};

impl Inner {
    /// Scales instances with `scale_to_zero_after_s` to zero once they saw no request for that
    /// long (through their port-forward, or inside the cluster through kubefn's own dials); the
    /// next request wakes them ([`Inner::wake`]). Requests that bypass kubefn (the NodePort)
    /// are not seen.
    pub(super) async fn scale_idle_to_zero(&self) {
        let now = Instant::now();
        let idle: Vec<(String, String, String)> = self
            .slots
            .lock()
            .iter()
            .filter_map(|(id, slot)| {
                idle_past_limit(&slot.spec, slot.traffic.as_ref()?, now)?;
                Some((id.clone(), slot.namespace.clone(), slot.name.clone()))
            })
            .collect();
        for (id, namespace, name) in idle {
            let running = self
                .cluster
                .deployment_of(&id)
                .and_then(|d| d.spec.as_ref().and_then(|s| s.replicas))
                .is_some_and(|r| r > 0);
            if !running {
                continue;
            }
            if let Err(error) = self.scale_deployment(&namespace, &name, 0).await {
                tracing::warn!(instance = %id, %error, "cannot scale the idle instance to zero");
            }
        }
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
