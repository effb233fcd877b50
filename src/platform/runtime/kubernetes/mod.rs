//! The kubernetes runtime: each instance is a ConfigMap per version, a Deployment, a Service and
//! (when autoscaling is on) an HPA in the instance's namespace, applied with server-side apply
//! from [`manifests`] and named and labelled by [`names`]. What runs is read from reflector
//! stores fed by watchers ([`cluster`]), never listed per page view; [`status`] turns those
//! objects into an instance's state. kubefn reaches an instance through a port-forward listener
//! of its own (pods re-resolved per connection, through the apiserver) or, inside the cluster,
//! through the Service's DNS name. Logs follow every pod ([`logs`]); usage comes from
//! metrics.k8s.io when the cluster serves it.
//!
//! Here: the runtime's state (slots, the shared `Inner`) and start-up. Beside it: `config`
//! (settings, client), `error`, `namespaces` (shared and per-user, with their policy, binding and
//! quota), `apply` (objects by server-side apply, deletion), `background` (scale to zero and back,
//! usage samples) and `runtime` (the trait).

mod apply;
mod background;
mod config;
mod error;
mod namespaces;
mod runtime;

pub mod access;
pub mod cluster;
pub mod logs;
pub mod manifests;
pub mod names;
pub mod package_egress;
pub mod status;

use super::forwarding::{Dial, ForwardingPort, Traffic};
use super::{ApplyMode, InstanceSpec, LogStream, ReplicaUsage, Runtime, RuntimeError, RuntimeStatus};
use crate::platform::model::Quota;
use crate::platform::model::{FunctionSpec, HealthCheck, InstanceState};
pub use background::replicas_to_set;
use chrono::{DateTime, Utc};
use cluster::{Cluster, ReadyPod};
use config::kube_config;
pub use config::{KubernetesConfig, client};
pub use error::KubernetesError;
use error::api_error;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
pub use manifests::{Images, NetworkIsolation, PackageAccess, Placement, PodSettings, Toleration};
use namespaces::{ensure_namespace, isolate_namespace};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The field manager kubefn applies as.
pub const FIELD_MANAGER: &str = "kubefn";

/// How often kubefn looks again for metrics.k8s.io while the cluster does not serve it.
const METRICS_PROBE_PERIOD: Duration = Duration::from_secs(60);

/// Converts a chrono time to the API's time stamp.
pub fn to_timestamp(at: DateTime<Utc>) -> Option<k8s_openapi::jiff::Timestamp> {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(at.timestamp_nanos_opt()?)).ok()
}

/// Converts the API's time stamp to chrono.
pub fn to_chrono(at: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.as_second(), at.subsec_nanosecond().max(0) as u32)
}

/// Pods of one instance reached through the apiserver's port-forward.
struct PodDial {
    pods: Api<Pod>,
    port: u16,
}

impl Dial for PodDial {
    type Endpoint = ReadyPod;
    type Stream = tokio::io::DuplexStream;

    async fn dial(&self, pod: &ReadyPod) -> std::io::Result<tokio::io::DuplexStream> {
        let mut forwarder = self.pods.portforward(&pod.name, &[self.port]).await.map_err(std::io::Error::other)?;
        // The forwarder's task lives on while the stream is open; the stream is all we need.
        forwarder.take_stream(self.port).ok_or_else(|| std::io::Error::other("the port-forward gave no stream"))
    }
}

/// What kubefn keeps about one instance between calls.
struct Slot {
    namespace: String,
    name: String,
    spec: InstanceSpec,
    fingerprint: String,
    forward: Option<ForwardingPort>,
    /// Requests to the instance (its port-forward's, or inside the cluster those kubefn dials
    /// itself): what idleness is judged by and what wakes it from zero.
    traffic: Option<Arc<Traffic>>,
    /// Its Service's ready endpoints, kept by the EndpointSlice watch.
    endpoints: watch::Sender<Vec<ReadyPod>>,
}

struct Inner {
    client: Client,
    config: KubernetesConfig,
    cluster: Cluster,
    slots: Mutex<HashMap<String, Slot>>,
    usage: Mutex<HashMap<String, Vec<ReplicaUsage>>>,
    metrics_available: std::sync::atomic::AtomicBool,
    /// When metrics.k8s.io was last looked for.
    metrics_probed: Mutex<Instant>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// User namespaces made ready (binding, policy, limits), with the quota last applied there.
    user_namespaces: Mutex<HashMap<String, Option<Quota>>>,
}

/// The kubernetes runtime (cheap to clone; clones share everything).
#[derive(Clone)]
pub struct KubernetesRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime").field("namespace", &self.inner.config.namespace).finish_non_exhaustive()
    }
}

impl KubernetesRuntime {
    /// Connects, checks kubefn's permissions, makes sure the shared namespace exists, and starts
    /// the watchers; returns once their stores hold the cluster's objects.
    pub async fn connect(config: KubernetesConfig) -> Result<KubernetesRuntime, KubernetesError> {
        let kube_config = kube_config(&config).await?;
        let url = kube_config.cluster_url.to_string();
        let client = Client::try_from(kube_config).map_err(KubernetesError::Client)?;
        match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(KubernetesError::Unreachable { url, source: Box::new(source) }),
            Err(elapsed) => return Err(KubernetesError::Unreachable { url, source: Box::new(elapsed) }),
        }
        access::check(&client, &config).await?;
        if config.user_namespace_prefix.is_none() {
            ensure_namespace(&client, &config.namespace, None).await?;
            isolate_namespace(&client, &config, &config.namespace).await?;
        }
        let cluster = Cluster::start(client.clone(), &config).await;
        let metrics_available = cluster::metrics_served(&client).await;
        let inner = Arc::new(Inner {
            client,
            config,
            cluster,
            slots: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            metrics_available: std::sync::atomic::AtomicBool::new(metrics_available),
            metrics_probed: Mutex::new(Instant::now()),
            tasks: Mutex::new(Vec::new()),
            user_namespaces: Mutex::new(HashMap::new()),
        });
        let runtime = KubernetesRuntime { inner };
        runtime.spawn_background();
        Ok(runtime)
    }

    fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        let endpoints = tokio::spawn({
            let weak = weak.clone();
            let mut changes = self.inner.cluster.endpoint_changes();
            async move {
                while changes.changed().await.is_ok() {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.refresh_endpoints();
                }
            }
        });
        let usage = tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let period = inner.config.usage_period;
                inner.sample_usage().await;
                inner.scale_idle_to_zero().await;
                drop(inner);
                tokio::time::sleep(period).await;
            }
        });
        self.inner.tasks.lock().extend([endpoints, usage]);
    }

    /// Stops the watchers and listeners; what runs in the cluster keeps running.
    pub async fn shutdown(&self) {
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
        self.inner.cluster.stop();
        let forwards: Vec<ForwardingPort> =
            self.inner.slots.lock().values_mut().filter_map(|s| s.forward.take()).collect();
        for forward in forwards {
            forward.close().await;
        }
    }

    /// The client kubefn uses.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The namespace of `user`'s instances.
    pub fn namespace_of(&self, user: &str) -> String {
        match &self.inner.config.user_namespace_prefix {
            Some(prefix) => names::user_namespace(prefix, user),
            None => self.inner.config.namespace.clone(),
        }
    }

    /// Deletes every object kubefn made that matches `selector` (e.g. all of one function, or
    /// all of one user: [`names::function_selector_text`], [`names::user_selector_text`]) in
    /// every namespace kubefn uses, and waits until they are gone.
    pub async fn delete_matching(&self, selector: &str) -> Result<(), KubernetesError> {
        let namespaces = self.inner.cluster.namespaces_with(selector);
        let ids = self.inner.cluster.instances_matching(selector);
        for namespace in &namespaces {
            self.inner.delete_in(namespace, selector).await?;
        }
        for namespace in &namespaces {
            self.inner.wait_gone(namespace, selector, selector).await?;
        }
        let mut slots = self.inner.slots.lock();
        for id in ids {
            slots.remove(&id);
        }
        Ok(())
    }
}

impl Inner {
    fn namespace_of(&self, user: &str) -> String {
        match &self.config.user_namespace_prefix {
            Some(prefix) => names::user_namespace(prefix, user),
            None => self.config.namespace.clone(),
        }
    }

    /// Where `id` lives: from the slot, or (after a restart) from the watched Deployment.
    fn locate(&self, id: &str) -> Option<(String, String)> {
        if let Some(slot) = self.slots.lock().get(id) {
            return Some((slot.namespace.clone(), slot.name.clone()));
        }
        let deployment = self.cluster.deployment_of(id)?;
        Some((deployment.metadata.namespace.clone()?, deployment.metadata.name.clone()?))
    }

    /// Sets every slot's ready endpoints from the EndpointSlice watch (one pass over the
    /// slices). Looked up by the slot's own namespace and Service name, so only the slices of
    /// that Service count.
    fn refresh_endpoints(&self) {
        let mut by_service = self.cluster.ready_endpoints();
        let slots = self.slots.lock();
        for slot in slots.values() {
            let ready = by_service.remove(&(slot.namespace.clone(), slot.name.clone())).unwrap_or_default();
            slot.endpoints.send_if_modified(|current| {
                let changed = *current != ready;
                if changed {
                    *current = ready;
                }
                changed
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::ScalingPolicy;

    fn function(scaling: ScalingPolicy) -> FunctionSpec {
        FunctionSpec { scaling, ..FunctionSpec::new("f", crate::platform::model::Language::Python, "") }
    }

    #[test]
    fn replicas_follow_pause_and_leave_the_hpa_alone() {
        let fixed = function(ScalingPolicy { target_cpu_percent: None, ..Default::default() });
        assert_eq!(replicas_to_set(&fixed, false, 3, Some(1)), Some(3));
        assert_eq!(replicas_to_set(&fixed, false, 3, Some(3)), None, "nothing to change");
        assert_eq!(replicas_to_set(&fixed, true, 3, Some(3)), Some(0));
        let scaled = function(ScalingPolicy { min: 2, max: 5, ..Default::default() });
        assert_eq!(replicas_to_set(&scaled, false, 1, Some(4)), None, "the HPA owns the count");
        assert_eq!(replicas_to_set(&scaled, false, 1, Some(0)), Some(2), "resume wakes at least min");
        assert_eq!(replicas_to_set(&scaled, false, 1, None), Some(2), "a new Deployment starts at min");
        assert_eq!(replicas_to_set(&scaled, true, 4, Some(4)), Some(0), "pause suspends the HPA by zero replicas");
        let idle = function(ScalingPolicy {
            min: 0,
            max: 1,
            target_cpu_percent: None,
            scale_to_zero_after_s: Some(60),
            ..Default::default()
        });
        assert_eq!(replicas_to_set(&idle, false, 1, Some(0)), None, "idle at zero until a request wakes it");
        assert_eq!(replicas_to_set(&idle, false, 1, None), Some(1), "a new instance starts");
    }

    #[test]
    fn times_convert_both_ways() {
        let now = Utc::now();
        let stamp = to_timestamp(now).expect("timestamp");
        assert_eq!(to_chrono(stamp), Some(now));
    }
}
