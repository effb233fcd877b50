//! What runs in the background for instances: scale to zero when idle and back on demand,
//! and usage samples from metrics.k8s.io.

use super::*;

impl Inner {
    /// Scales instances with `scale_to_zero_after_s` to zero once they saw no request for that
    /// long (through their port-forward, or inside the cluster through kubefn's own dials); the
    /// next request wakes them ([`wake_on_demand`]). Requests that bypass kubefn (the NodePort)
    /// are not seen.
    pub(super) async fn scale_idle_to_zero(&self) {
        let now = Instant::now();
        let idle: Vec<(String, String, String)> = self
            .slots
            .lock()
            .iter()
            .filter(|(_, slot)| !slot.spec.paused)
            .filter_map(|(id, slot)| {
                let after = Duration::from_secs(slot.spec.spec.scaling.scale_to_zero_after_s?);
                let traffic = slot.traffic.as_ref()?;
                (traffic.idle_for(now) >= after).then(|| (id.clone(), slot.namespace.clone(), slot.name.clone()))
            })
            .collect();
        for (id, namespace, name) in idle {
            let running =
                self.cluster.deployment_of(&id).and_then(|d| d.spec.and_then(|s| s.replicas)).is_some_and(|r| r > 0);
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

/// Scales a Deployment left at zero back up when a connection arrives (scale from zero).
pub(super) async fn wake_on_demand(traffic: Arc<Traffic>, inner: std::sync::Weak<Inner>, id: String) {
    loop {
        traffic.demanded().await;
        let Some(inner) = inner.upgrade() else { return };
        let slot = inner.slots.lock().get(&id).map(|s| (s.namespace.clone(), s.name.clone(), s.spec.clone()));
        let Some((namespace, name, spec)) = slot else { return };
        let at_zero = inner.cluster.deployment_of(&id).and_then(|d| d.spec.and_then(|s| s.replicas)) == Some(0);
        if at_zero && !spec.paused {
            let replicas = spec.replicas.clamp(spec.spec.scaling.min.max(1), spec.spec.scaling.max.max(1));
            let replicas = i32::try_from(replicas).unwrap_or(i32::MAX);
            if let Err(error) = inner.scale_deployment(&namespace, &name, replicas).await {
                tracing::warn!(instance = %id, %error, "cannot wake the instance");
            }
        }
    }
}
