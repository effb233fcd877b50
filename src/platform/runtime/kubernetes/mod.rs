//! The kubernetes runtime: each instance is a ConfigMap per version, a Deployment, a Service and
//! (when autoscaling is on) an HPA in the instance's namespace, applied with server-side apply
//! from [`manifests`] and named and labelled by [`names`]. What runs is read from reflector
//! stores fed by watchers ([`cluster`]), never listed per page view; [`status`] turns those
//! objects into an instance's state. kubefn reaches an instance through a port-forward listener
//! of its own (pods re-resolved per connection, through the apiserver) or, inside the cluster,
//! through the Service's DNS name. Logs follow every pod ([`logs`]); usage comes from
//! metrics.k8s.io when the cluster serves it.

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
use chrono::{DateTime, Utc};
use cluster::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
pub use manifests::{Images, NetworkIsolation, PackageAccess, Placement, PodSettings, Toleration};
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

/// Why the kubernetes runtime could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// No configuration: no kubeconfig and not inside a cluster.
    #[error("no cluster configured: set KUBECONFIG (or --kubeconfig), or run kubefn inside a cluster")]
    Config(#[source] kube::config::InferConfigError),
    /// The kubeconfig file is unusable.
    #[error("cannot use the kubeconfig {path}; check the file")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built (TLS settings).
    #[error("cannot build a Kubernetes client from the configuration")]
    Client(#[source] kube::Error),
    /// The apiserver did not answer.
    #[error("no cluster answers at {url}; check that it runs and that the kubeconfig points to it")]
    Unreachable {
        /// The apiserver's address.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// kubefn's account lacks a permission it needs.
    #[error("kubefn may not {verb} {resource}{where_}; apply k8s/ (its Role and ClusterRole) or grant that permission")]
    Forbidden {
        /// The verb.
        verb: String,
        /// The resource (with its group).
        resource: String,
        /// ` in namespace …`, or empty for cluster-wide.
        where_: String,
    },
    /// The namespace for instances does not exist and cannot be created.
    #[error("the namespace {namespace} does not exist and kubefn may not create it; create it or apply k8s/")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A request to the apiserver failed.
    #[error("the apiserver refused to {action}")]
    Api {
        /// What kubefn tried.
        action: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A manifest did not fit its type.
    #[error(transparent)]
    Manifest(#[from] manifests::ManifestError),
    /// Objects were still there after the wait.
    #[error("the objects of instance {id} were still there after {seconds} s; check the namespace's finalizers")]
    NotGone {
        /// The instance.
        id: String,
        /// How long kubefn waited.
        seconds: u64,
    },
    /// An object kubefn would write belongs to something else: never adopted.
    #[error(
        "{kind} {namespace}/{name} belongs to another instance or was not made by kubefn; kubefn leaves it alone (remove it, or rename the function)"
    )]
    Taken {
        /// The kind of object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> KubernetesError {
    let action = action.into();
    move |source| KubernetesError::Api { action, source }
}

impl From<KubernetesError> for RuntimeError {
    fn from(error: KubernetesError) -> RuntimeError {
        RuntimeError::Cluster(Box::new(error))
    }
}

/// The kubernetes runtime's settings.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// A kubeconfig file; `None` infers one (KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of every instance (when not per user).
    pub namespace: String,
    /// With a prefix, every user's instances go to `{prefix}{user}`, created on demand.
    pub user_namespace_prefix: Option<String>,
    /// What every function pod takes from kubefn's configuration (images, nodes, registries).
    pub pods: PodSettings,
    /// Where port-forward listeners listen.
    pub forward_host: IpAddr,
    /// The ports port-forward listeners take.
    pub forward_ports: RangeInclusive<u16>,
    /// How long a connection waits for a ready pod.
    pub hold: Duration,
    /// Reach instances through their Service's DNS name (kubefn runs inside the cluster).
    pub in_cluster: bool,
    /// Act as this user (tests impersonate kubefn's ServiceAccount to prove its RBAC).
    pub impersonate: Option<String>,
    /// How often pod usage is read from metrics.k8s.io.
    pub usage_period: Duration,
    /// The NetworkPolicy kept in each namespace with functions.
    pub network: NetworkIsolation,
    /// kubefn's ServiceAccount (in [`NetworkIsolation::system_namespace`]), which the RoleBinding
    /// in each user namespace names.
    pub service_account: String,
}

impl KubernetesConfig {
    /// Defaults: namespace `kubefn-functions`, port-forwards on 127.0.0.1:40000-40999.
    pub fn new() -> KubernetesConfig {
        KubernetesConfig {
            kubeconfig: None,
            namespace: "kubefn-functions".into(),
            user_namespace_prefix: None,
            pods: PodSettings::default(),
            forward_host: IpAddr::from([127, 0, 0, 1]),
            forward_ports: 40000..=40999,
            hold: Duration::from_secs(30),
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            impersonate: None,
            usage_period: Duration::from_secs(5),
            network: NetworkIsolation::default(),
            service_account: "kubefn".into(),
        }
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig::new()
    }
}

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
    type Endpoint = String;
    type Stream = tokio::io::DuplexStream;

    async fn dial(&self, pod: &String) -> std::io::Result<tokio::io::DuplexStream> {
        let mut forwarder = self.pods.portforward(pod, &[self.port]).await.map_err(std::io::Error::other)?;
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
    endpoints: watch::Sender<Vec<String>>,
    /// Turns of the round robin over ready pods when kubefn dials them itself.
    next_pod: Arc<std::sync::atomic::AtomicUsize>,
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

/// Builds a client from the configuration, with no read timeout: log follows and port-forwards
/// stay open for as long as they are used.
pub async fn client(config: &KubernetesConfig) -> Result<Client, KubernetesError> {
    Client::try_from(kube_config(config).await?).map_err(KubernetesError::Client)
}

async fn kube_config(config: &KubernetesConfig) -> Result<Config, KubernetesError> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|source| KubernetesError::Kubeconfig { path: path.clone(), source })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubernetesError::Kubeconfig { path: path.clone(), source })?
        }
        None => Config::infer().await.map_err(KubernetesError::Config)?,
    };
    kube_config.read_timeout = None;
    if let Some(user) = &config.impersonate {
        kube_config.auth_info.impersonate = Some(user.clone());
    }
    Ok(kube_config)
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
            let mut changes = self.inner.cluster.pod_changes();
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

/// Creates `namespace` when missing (labelled as kubefn's, with its user when per user).
async fn ensure_namespace(client: &Client, namespace: &str, user: Option<&str>) -> Result<(), KubernetesError> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        // Without the right to read namespaces the shared one is assumed to exist (k8s/ makes it);
        // the first apply says so clearly if not.
        Err(kube::Error::Api(status)) if status.code == 403 && user.is_none() => return Ok(()),
        Err(source) => return Err(KubernetesError::Namespace { namespace: namespace.into(), source }),
    }
    let mut labels =
        serde_json::json!({ names::MANAGED_BY: names::MANAGER, names::POD_SECURITY: names::POD_SECURITY_LEVEL });
    if let Some(user) = user {
        labels[names::NAMESPACE_USER] = user.into();
    }
    let body = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace, "labels": labels } });
    api.patch(namespace, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| KubernetesError::Namespace { namespace: namespace.into(), source })?;
    Ok(())
}

/// Applies the NetworkPolicy [`names::ISOLATION_POLICY`] to `namespace` (see
/// [`manifests::isolation_policy`]): function pods reach neither each other, nor kubefn, nor the
/// apiserver or cloud metadata, wherever the cluster's network plugin enforces policies.
async fn isolate_namespace(client: &Client, config: &KubernetesConfig, namespace: &str) -> Result<(), KubernetesError> {
    let policy = manifests::isolation_policy(namespace, &config.network, &config.pods.packages);
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    api.patch(names::ISOLATION_POLICY, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&policy))
        .await
        .map_err(api_error(format!("apply NetworkPolicy {namespace}/{}", names::ISOLATION_POLICY)))?;
    Ok(())
}

impl Inner {
    /// Makes `user`'s namespace ready, once (and again when their quota changes): the namespace,
    /// the RoleBinding that gives kubefn its rights there and only there, the NetworkPolicy, a
    /// LimitRange and a ResourceQuota from the user's kubefn quota.
    async fn prepare_user_namespace(
        &self,
        namespace: &str,
        user: &str,
        quota: Option<Quota>,
    ) -> Result<(), KubernetesError> {
        if self.user_namespaces.lock().get(namespace) == Some(&quota) {
            return Ok(());
        }
        ensure_namespace(&self.client, namespace, Some(user)).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let objects = names::USER_NAMESPACE_OBJECTS;
        let binding = manifests::user_namespace_binding(
            namespace,
            (&self.config.network.system_namespace, &self.config.service_account),
        );
        Api::<RoleBinding>::namespaced(self.client.clone(), namespace)
            .patch(objects, &params, &Patch::Apply(&binding))
            .await
            .map_err(api_error(format!("apply RoleBinding {namespace}/{objects}")))?;
        // The apiserver's authorizer sees a new binding within moments: wait for it rather than
        // fail the first objects with 403.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !access::may(&self.client, "patch", "networking.k8s.io", "networkpolicies", Some(namespace)).await {
            if Instant::now() > deadline {
                return Err(KubernetesError::Forbidden {
                    verb: "patch".into(),
                    resource: "networkpolicies.networking.k8s.io".into(),
                    where_: format!(
                        " in namespace {namespace} (is the ClusterRole {} of k8s/per-user-namespaces/ applied?)",
                        names::USER_NAMESPACE_ROLE
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        isolate_namespace(&self.client, &self.config, namespace).await?;
        Api::<LimitRange>::namespaced(self.client.clone(), namespace)
            .patch(objects, &params, &Patch::Apply(&manifests::user_namespace_limits(namespace)))
            .await
            .map_err(api_error(format!("apply LimitRange {namespace}/{objects}")))?;
        if let Some(quota) = &quota {
            Api::<ResourceQuota>::namespaced(self.client.clone(), namespace)
                .patch(objects, &params, &Patch::Apply(&manifests::user_namespace_quota(namespace, quota)))
                .await
                .map_err(api_error(format!("apply ResourceQuota {namespace}/{objects}")))?;
        }
        self.user_namespaces.lock().insert(namespace.to_string(), quota);
        Ok(())
    }

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

    fn refresh_endpoints(&self) {
        let slots = self.slots.lock();
        for (id, slot) in slots.iter() {
            let ready = self.cluster.ready_pods(id);
            slot.endpoints.send_if_modified(|current| {
                let changed = *current != ready;
                if changed {
                    *current = ready;
                }
                changed
            });
        }
    }

    async fn apply(self: &Arc<Self>, spec: InstanceSpec, force: bool) -> Result<(), KubernetesError> {
        let namespace = self.namespace_of(&spec.user);
        let node_port = spec.node_port;
        let manifests = manifests::build(&spec, &namespace, &self.config.pods, node_port)?;
        let unchanged = {
            let slots = self.slots.lock();
            slots.get(&spec.id).is_some_and(|s| s.fingerprint == manifests.fingerprint)
                && self.cluster.deployment_of(&spec.id).is_some()
        };
        if self.config.user_namespace_prefix.is_some() {
            self.prepare_user_namespace(&namespace, &spec.user, spec.user_quota).await?;
        }
        if !unchanged || force {
            self.apply_objects(&namespace, &manifests, &spec).await?;
        }
        self.ensure_slot(&spec, &namespace, &manifests).await;
        self.set_replicas(&namespace, &manifests.name, &spec).await?;
        if !unchanged {
            self.prune_config_maps(&namespace, &spec).await;
        }
        Ok(())
    }

    async fn apply_objects(
        &self,
        namespace: &str,
        m: &manifests::Manifests,
        spec: &InstanceSpec,
    ) -> Result<(), KubernetesError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // Server-side apply with force would take over any object of the name: first make sure
        // each one is this instance's, or not there.
        let taken = |kind: &'static str, name: &str| KubernetesError::Taken {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        if let Some(kind) = self.cluster.taken_by_other(namespace, &m.name, &spec.id) {
            return Err(taken(kind, &m.name));
        }
        if !spec.spec.requirements.trim().is_empty()
            && let Some(package_ca) = manifests::package_ca(namespace, &self.config.pods.packages)
        {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let name = manifests::PACKAGE_CA_CONFIG_MAP;
            api.patch(name, &params, &Patch::Apply(&package_ca))
                .await
                .map_err(api_error(format!("apply ConfigMap {namespace}/{name}")))?;
        }
        if let Some(config_map) = &m.config_map {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let name = names::config_map_name(&m.name, spec.version);
            // Immutable: once there, a version's ConfigMap is left as it is (if it is this
            // instance's: another's would run its code with this instance's settings).
            match api.get_opt(&name).await.map_err(api_error(format!("read ConfigMap {namespace}/{name}")))? {
                None => {
                    api.patch(&name, &params, &Patch::Apply(config_map))
                        .await
                        .map_err(api_error(format!("apply ConfigMap {namespace}/{name}")))?;
                }
                Some(existing)
                    if cluster::instance_label(existing.metadata.labels.as_ref()) == Some(spec.id.as_str()) => {}
                Some(_) => return Err(taken("ConfigMap", &name)),
            }
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        deployments
            .patch(&m.name, &params, &Patch::Apply(&m.deployment))
            .await
            .map_err(api_error(format!("apply Deployment {namespace}/{}", m.name)))?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        match services.patch(&m.name, &params, &Patch::Apply(&m.service)).await {
            Ok(_) => {}
            // The node port kept from before is taken (a new cluster): let Kubernetes pick one.
            Err(kube::Error::Api(status)) if status.code == 422 && spec.node_port.is_some() => {
                let fresh = manifests::build(
                    &InstanceSpec { node_port: None, ..spec.clone() },
                    namespace,
                    &self.config.pods,
                    None,
                )?;
                services
                    .patch(&m.name, &params, &Patch::Apply(&fresh.service))
                    .await
                    .map_err(api_error(format!("apply Service {namespace}/{}", m.name)))?;
            }
            Err(source) => {
                return Err(KubernetesError::Api { action: format!("apply Service {namespace}/{}", m.name), source });
            }
        }
        let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), namespace);
        match &m.autoscaler {
            Some(hpa) => {
                autoscalers
                    .patch(&m.name, &params, &Patch::Apply(hpa))
                    .await
                    .map_err(api_error(format!("apply HorizontalPodAutoscaler {namespace}/{}", m.name)))?;
            }
            None => match autoscalers.delete(&m.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(KubernetesError::Api {
                        action: format!("delete HorizontalPodAutoscaler {namespace}/{}", m.name),
                        source,
                    });
                }
            },
        }
        self.remove_renamed(namespace, &m.name, &spec.id).await;
        Ok(())
    }

    /// Deletes the instance's Deployments, Services and HPAs of another name than `name`: what
    /// an older kubefn named differently (see [`names::base_name`]) goes once the new ones are
    /// there. Best effort; the next apply tries again.
    async fn remove_renamed(&self, namespace: &str, name: &str, id: &str) {
        let params = ListParams::default().labels(&names::instance_selector_text(id));
        macro_rules! sweep {
            ($kind:ty) => {{
                let api: Api<$kind> = Api::namespaced(self.client.clone(), namespace);
                if let Ok(list) = api.list_metadata(&params).await {
                    for old in list.items.into_iter().filter_map(|o| o.metadata.name).filter(|n| n != name) {
                        tracing::info!(instance = %id, object = %old, "removing an object kubefn named differently before");
                        let _ = api.delete(&old, &DeleteParams::background()).await;
                    }
                }
            }};
        }
        sweep!(Deployment);
        sweep!(Service);
        sweep!(HorizontalPodAutoscaler);
    }

    /// Replicas are set through the scale subresource, never by the applied Deployment: paused
    /// means 0 (which also suspends the HPA); with an HPA only a Deployment at zero is woken.
    async fn set_replicas(&self, namespace: &str, name: &str, spec: &InstanceSpec) -> Result<(), KubernetesError> {
        let current = self.cluster.deployment_of(&spec.id).and_then(|d| d.spec.and_then(|s| s.replicas));
        let wanted = replicas_to_set(&spec.spec, spec.paused, spec.replicas, current);
        if let Some(wanted) = wanted {
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
            let patch = serde_json::json!({ "spec": { "replicas": wanted } });
            api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_error(format!("scale Deployment {namespace}/{name} to {wanted}")))?;
        }
        Ok(())
    }

    async fn ensure_slot(self: &Arc<Self>, spec: &InstanceSpec, namespace: &str, m: &manifests::Manifests) {
        let needs_forward = {
            let mut slots = self.slots.lock();
            let slot = slots.entry(spec.id.clone()).or_insert_with(|| Slot {
                namespace: namespace.to_string(),
                name: m.name.clone(),
                spec: spec.clone(),
                fingerprint: String::new(),
                forward: None,
                traffic: None,
                endpoints: watch::channel(Vec::new()).0,
                next_pod: Arc::default(),
            });
            slot.spec = spec.clone();
            slot.fingerprint = m.fingerprint.clone();
            let served = spec.spec.service.kind != crate::platform::model::ServiceKind::ExternalName;
            if self.config.in_cluster && served && slot.traffic.is_none() {
                // Inside the cluster kubefn dials the pods itself (see `connect`); requests
                // counted here wake the instance and keep it from idling to zero.
                let traffic = Arc::new(Traffic::default());
                slot.traffic = Some(traffic.clone());
                tokio::spawn(wake_on_demand(traffic, Arc::downgrade(self), spec.id.clone()));
            }
            slot.forward.is_none() && !self.config.in_cluster && served
        };
        if !needs_forward {
            return;
        }
        let port = manifests::container_port(&spec.spec);
        let dial = PodDial { pods: Api::namespaced(self.client.clone(), namespace), port };
        let receiver = self.slots.lock().get(&spec.id).map(|s| s.endpoints.subscribe());
        let Some(receiver) = receiver else { return };
        match ForwardingPort::bind_in_range_with(
            self.config.forward_host,
            self.config.forward_ports.clone(),
            receiver,
            dial,
            self.config.hold,
        )
        .await
        {
            Ok(forward) => {
                let traffic = forward.traffic();
                if let Some(slot) = self.slots.lock().get_mut(&spec.id) {
                    slot.forward = Some(forward);
                    slot.traffic = Some(traffic.clone());
                }
                tokio::spawn(wake_on_demand(traffic, Arc::downgrade(self), spec.id.clone()));
                self.refresh_endpoints();
            }
            Err(error) => {
                tracing::warn!(instance = %spec.id, error = %crate::platform::error_chain(&error), "no port-forward for the instance")
            }
        }
    }

    /// Deletes the ConfigMaps of versions neither desired nor run by a pod.
    async fn prune_config_maps(&self, namespace: &str, spec: &InstanceSpec) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let Ok(list) = api.list(&ListParams::default().labels(&names::instance_selector_text(&spec.id))).await else {
            return;
        };
        let running = self.cluster.pod_versions(&spec.id);
        for config_map in list {
            let version = status::version_of(config_map.metadata.labels.as_ref());
            if version.is_some_and(|v| v != spec.version && !running.contains(&v))
                && let Some(name) = config_map.metadata.name
            {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
        }
    }

    async fn delete_in(&self, namespace: &str, selector: &str) -> Result<(), KubernetesError> {
        let params = ListParams::default().labels(selector);
        let background = DeleteParams::background();
        macro_rules! sweep {
            ($kind:ty, $what:literal) => {{
                let api: Api<$kind> = Api::namespaced(self.client.clone(), namespace);
                api.delete_collection(&background, &params)
                    .await
                    .map_err(api_error(format!("delete the {} of {selector} in {namespace}", $what)))?;
            }};
        }
        sweep!(HorizontalPodAutoscaler, "HorizontalPodAutoscalers");
        sweep!(Deployment, "Deployments");
        sweep!(Service, "Services");
        sweep!(ConfigMap, "ConfigMaps");
        // Pods are removed by their ReplicaSet's garbage collection; deleting them directly as
        // well makes a delete quick even where the garbage collector is slow.
        sweep!(Pod, "Pods");
        Ok(())
    }

    /// Waits until nothing matching `selector` is left in `namespace` (ReplicaSets included).
    async fn wait_gone(&self, namespace: &str, selector: &str, id: &str) -> Result<(), KubernetesError> {
        const WAIT: Duration = Duration::from_secs(60);
        let started = Instant::now();
        let params = ListParams::default().labels(selector).limit(1);
        loop {
            let mut left = 0;
            macro_rules! count {
                ($kind:ty) => {{
                    let api: Api<$kind> = Api::namespaced(self.client.clone(), namespace);
                    left += api
                        .list_metadata(&params)
                        .await
                        .map_err(api_error(format!("list what is left of {selector}")))?
                        .items
                        .len();
                }};
            }
            count!(Deployment);
            count!(k8s_openapi::api::apps::v1::ReplicaSet);
            count!(Pod);
            count!(Service);
            count!(ConfigMap);
            count!(HorizontalPodAutoscaler);
            if left == 0 {
                return Ok(());
            }
            if started.elapsed() > WAIT {
                return Err(KubernetesError::NotGone { id: id.into(), seconds: WAIT.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Scales instances with `scale_to_zero_after_s` to zero once they saw no request for that
    /// long (through their port-forward, or inside the cluster through kubefn's own dials); the
    /// next request wakes them ([`wake_on_demand`]). Requests that bypass kubefn (the NodePort)
    /// are not seen.
    async fn scale_idle_to_zero(&self) {
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
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
            let zero = serde_json::json!({ "spec": { "replicas": 0 } });
            if let Err(error) = api.patch_scale(&name, &PatchParams::default(), &Patch::Merge(&zero)).await {
                tracing::warn!(instance = %id, %error, "cannot scale the idle instance to zero");
            }
        }
    }

    async fn sample_usage(&self) {
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
async fn wake_on_demand(traffic: Arc<Traffic>, inner: std::sync::Weak<Inner>, id: String) {
    loop {
        traffic.demanded().await;
        let Some(inner) = inner.upgrade() else { return };
        let slot = inner.slots.lock().get(&id).map(|s| (s.namespace.clone(), s.name.clone(), s.spec.clone()));
        let Some((namespace, name, spec)) = slot else { return };
        let at_zero = inner.cluster.deployment_of(&id).and_then(|d| d.spec.and_then(|s| s.replicas)) == Some(0);
        if at_zero && !spec.paused {
            let replicas = spec.replicas.clamp(spec.spec.scaling.min.max(1), spec.spec.scaling.max.max(1));
            let api: Api<Deployment> = Api::namespaced(inner.client.clone(), &namespace);
            let wake = serde_json::json!({ "spec": { "replicas": replicas } });
            if let Err(error) = api.patch_scale(&name, &PatchParams::default(), &Patch::Merge(&wake)).await {
                tracing::warn!(instance = %id, %error, "cannot wake the instance");
            }
        }
    }
}

#[async_trait::async_trait]
impl Runtime for KubernetesRuntime {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, _spec: &FunctionSpec) -> Result<(), RuntimeError> {
        // Python, Node and image functions all run in a cluster.
        Ok(())
    }

    async fn apply(&self, spec: InstanceSpec, mode: ApplyMode) -> Result<(), RuntimeError> {
        match mode {
            // The Deployment's scale alone: no other object changes, and the HPA (if any) takes
            // over from the count it is given.
            ApplyMode::SetReplicas if self.inner.locate(&spec.id).is_some() => self.set_replicas(&spec).await,
            ApplyMode::SetReplicas | ApplyMode::Reconcile => Ok(self.inner.apply(spec, false).await?),
            ApplyMode::Retry => {
                let id = spec.id.clone();
                self.inner.apply(spec, true).await?;
                // Pods stuck in back-off restart at once rather than after the back-off.
                if let Some((namespace, _)) = self.inner.locate(&id) {
                    let api: Api<Pod> = Api::namespaced(self.inner.client.clone(), &namespace);
                    for pod in self.inner.cluster.stuck_pods(&id) {
                        let _ = api.delete(&pod, &DeleteParams::default()).await;
                    }
                }
                Ok(())
            }
        }
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let namespace = match self.inner.locate(id) {
            Some((namespace, _)) => namespace,
            None => return Ok(()),
        };
        let selector = names::instance_selector_text(id);
        self.inner.delete_in(&namespace, &selector).await?;
        let forward = self.inner.slots.lock().remove(id).and_then(|mut s| s.forward.take());
        if let Some(forward) = forward {
            forward.close().await;
        }
        self.inner.wait_gone(&namespace, &selector, id).await?;
        Ok(())
    }

    fn status(&self, id: &str) -> Option<RuntimeStatus> {
        let deployment = self.inner.cluster.deployment_of(id)?;
        let pods = self.inner.cluster.pods_of(id);
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let mut observed = status::observe(&deployment, &pod_refs);
        let slots = self.inner.slots.lock();
        let slot = slots.get(id);
        if let Some(slot) = slot
            && slot.spec.paused
            && observed.state != InstanceState::Paused
        {
            observed.state = InstanceState::Deploying;
            observed.message = "pausing".into();
        }
        let port_forward = slot.and_then(|s| s.forward.as_ref()).map(|f| f.address());
        let spec = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.resources.clone());
        let limits = match spec.and_then(|r| r.limits) {
            Some(limits) => {
                let text: Vec<String> = limits.iter().map(|(k, v)| format!("{k} {}", v.0)).collect();
                let metrics = if self.inner.metrics_available.load(std::sync::atomic::Ordering::Relaxed) {
                    ""
                } else {
                    "; usage not available: the cluster serves no metrics.k8s.io (install metrics-server)"
                };
                format!("limits enforced by the kubelet: {}{metrics}", text.join(", "))
            }
            None => String::new(),
        };
        Some(RuntimeStatus {
            state: observed.state,
            message: observed.message,
            serving_version: observed.serving_version,
            desired: observed.desired,
            ready: observed.ready,
            node_port: self.inner.cluster.node_address_of(id),
            port_forward,
            limits,
            replicas: observed.replicas,
            events: self.inner.cluster.events_of(id),
            autoscaler: self.inner.cluster.autoscaler_of(id).and_then(|hpa| status::autoscaler(&hpa)),
        })
    }

    fn instance_ids(&self) -> Vec<String> {
        self.inner.cluster.instance_ids()
    }

    fn logs(&self, id: &str, follow: bool, since: Option<DateTime<Utc>>) -> Result<LogStream, RuntimeError> {
        let (namespace, _) = self.inner.locate(id).ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let api: Api<Pod> = Api::namespaced(self.inner.client.clone(), &namespace);
        tokio::spawn(logs::run(api, self.inner.cluster.pod_store(), namespace, id.to_string(), follow, since, sender));
        Ok(Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|line| (line, receiver))
        })))
    }

    fn usage(&self, id: &str) -> Result<Vec<ReplicaUsage>, RuntimeError> {
        Ok(self.inner.usage.lock().get(id).cloned().unwrap_or_default())
    }

    fn health(&self) -> Vec<HealthCheck> {
        let metrics = if self.inner.metrics_available.load(std::sync::atomic::Ordering::Relaxed) {
            HealthCheck::new("metrics.k8s.io", true, "served: CPU and memory per pod, and CPU/memory autoscaling")
        } else {
            HealthCheck::new(
                "metrics.k8s.io",
                false,
                "not served: no usage figures and no CPU/memory autoscaling (install metrics-server)",
            )
        };
        let pods = self.inner.cluster.pod_store().state();
        let ready = pods.iter().filter(|pod| status::is_ready(pod)).count();
        let namespaces = match &self.inner.config.user_namespace_prefix {
            Some(prefix) => format!("one namespace per user ({prefix}<user>)"),
            None => format!("namespace {}", self.inner.config.namespace),
        };
        vec![
            metrics,
            HealthCheck::new(
                "pods",
                ready == pods.len(),
                format!("{ready} of {} kubefn pods ready; {namespaces}", pods.len()),
            ),
        ]
    }

    async fn connect(&self, id: &str) -> Result<SocketAddr, RuntimeError> {
        // Outside the cluster: the instance's port-forward. Inside: a ready pod's own address,
        // from kubefn's pod watch (the endpoints resolved by kubefn itself, so no cluster DNS or
        // kube-proxy hop is needed), in turn; with none ready, the request waits up to the hold
        // time while one starts.
        let (forward, traffic, mut endpoints, next, port) = {
            let slots = self.inner.slots.lock();
            let slot = slots.get(id).ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
            let spec = &slot.spec.spec;
            if spec.service.kind == crate::platform::model::ServiceKind::ExternalName {
                return Err(RuntimeError::NotProxied { id: id.into() });
            }
            let port = manifests::container_port(spec);
            (
                slot.forward.as_ref().map(|f| f.address()),
                slot.traffic.clone(),
                slot.endpoints.subscribe(),
                slot.next_pod.clone(),
                port,
            )
        };
        if let Some(address) = forward {
            return Ok(address);
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.hold;
        loop {
            if let Some(traffic) = &traffic {
                traffic.touch();
            }
            let ready = self.inner.cluster.ready_pod_ips(id);
            if !ready.is_empty() {
                let turn = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(SocketAddr::new(ready[turn % ready.len()], port));
            }
            if let Some(traffic) = &traffic {
                traffic.demand();
            }
            if tokio::time::timeout_at(deadline, endpoints.changed()).await.map_or(true, |changed| changed.is_err()) {
                return Err(RuntimeError::NotFound { id: id.into() });
            }
        }
    }

    async fn shutdown(&self) {
        KubernetesRuntime::shutdown(self).await;
    }
}

impl KubernetesRuntime {
    /// Sets the Deployment's replicas to `spec`'s (none while paused) through its scale
    /// subresource, and remembers the count.
    async fn set_replicas(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let id = spec.id.as_str();
        let (namespace, name) = self.inner.locate(id).ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        if let Some(slot) = self.inner.slots.lock().get_mut(id) {
            slot.spec.replicas = spec.replicas;
        }
        let api: Api<Deployment> = Api::namespaced(self.inner.client.clone(), &namespace);
        let wanted = if spec.paused { 0 } else { spec.replicas };
        api.patch_scale(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "spec": { "replicas": wanted } })),
        )
        .await
        .map_err(api_error(format!("scale Deployment {namespace}/{name} to {wanted}")))
        .map_err(RuntimeError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::model::ScalingPolicy;

    fn function(scaling: ScalingPolicy) -> FunctionSpec {
        FunctionSpec {
            name: "f".into(),
            runtime: crate::platform::model::Language::Python,
            handler: None,
            source: String::new(),
            requirements: String::new(),
            image: None,
            env: Default::default(),
            visibility: Default::default(),
            resources: Default::default(),
            scaling,
            service: Default::default(),
            timeout_s: 60,
            invoke: Default::default(),
        }
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
