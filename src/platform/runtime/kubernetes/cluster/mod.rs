//! What runs in the cluster, as watchers keep it: reflector stores of kubefn's Deployments,
//! pods, Services, EndpointSlices and HPAs, the Events of its namespaces and the nodes, so
//! status, endpoints and addresses are read from memory rather than listed per request (as
//! kube-rs' version-rs serves a store). Watches use streaming lists when the apiserver supports
//! them.

use super::{KubernetesConfig, names, status};
use crate::platform::model::EventInfo;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events kept per instance in a status.
const EVENTS_SHOWN: usize = 30;

/// The watched objects.
pub struct Cluster {
    deployments: Grouped<Deployment>,
    pods: Grouped<Pod>,
    services: Store<Service>,
    /// The controller's slices of kubefn's Services ([`endpoints`]).
    endpoint_slices: Store<EndpointSlice>,
    autoscalers: Grouped<HorizontalPodAutoscaler>,
    /// Grouped by `{namespace}/{the name of the instance's objects}` ([`owner_base`]).
    events: Grouped<Event>,
    nodes: Option<Store<Node>>,
    endpoint_changes: watch::Receiver<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    scope: Scope,
}

/// The namespaces this kubefn owns: the shared one, or those with its per-user prefix. Only
/// there does it treat an unknown instance as its own stray.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One namespace for every instance.
    Shared(String),
    /// `{prefix}{user}` per user.
    PerUser(String),
}

impl Scope {
    /// The scope of a configuration.
    pub fn of(config: &KubernetesConfig) -> Scope {
        match &config.user_namespace_prefix {
            Some(prefix) => Scope::PerUser(prefix.clone()),
            None => Scope::Shared(config.namespace.clone()),
        }
    }

    /// Whether `namespace` is one of this kubefn's.
    pub fn owns(&self, namespace: &str) -> bool {
        match self {
            Scope::Shared(shared) => namespace == shared,
            Scope::PerUser(prefix) => namespace.starts_with(prefix.as_str()),
        }
    }
}

/// A watcher and its store: the store, its change count (one more per applied event) and the
/// task; `changes` (when given) ticks too.
fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    changes: Option<watch::Sender<u64>>,
) -> (Store<K>, Arc<AtomicU64>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let applied = Arc::new(AtomicU64::new(0));
    let counted = applied.clone();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    // The reflector has applied the event to the store by now.
                    counted.fetch_add(1, Ordering::Release);
                    if let Some(changes) = &changes {
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, kind = %K::kind(&Default::default()), "watch interrupted; retrying")
                }
            }
        }
    });
    (store, applied, task)
}

/// Whether the apiserver serves streaming lists (`sendInitialEvents`): it needs the WatchList
/// feature and an etcd with watch progress notifications, so kubefn asks once instead of assuming.
pub async fn streaming_lists_served(client: &Client, namespace: &str) -> bool {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let Ok(stream) = api.watch(&WatchParams::streaming_lists().timeout(2), "").await else { return false };
    futures::pin_mut!(stream);
    match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
        Ok(Some(Ok(WatchEvent::Error(_)))) | Ok(Some(Err(_))) => false,
        Ok(Some(Ok(_))) => true,
        // An empty namespace may send only the closing bookmark; an answer with no error is support.
        Ok(None) | Err(_) => true,
    }
}

impl Cluster {
    /// Starts the watchers and returns once each store holds its initial list (or 30 s passed).
    pub async fn start(client: Client, config: &KubernetesConfig) -> Cluster {
        let per_user = config.user_namespace_prefix.is_some();
        let streaming = streaming_lists_served(&client, &config.namespace).await;
        tracing::info!(streaming_lists = streaming, "watching the cluster");
        let watch_config = |labels: Option<String>| {
            let mut c = watcher::Config::default();
            if let Some(labels) = labels {
                c = c.labels(&labels);
            }
            if streaming { c.streaming_lists() } else { c }
        };
        fn scoped<K>(client: &Client, per_user: bool, namespace: &str) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
            K::DynamicType: Default,
        {
            if per_user { Api::all(client.clone()) } else { Api::namespaced(client.clone(), namespace) }
        }
        let managed = Some(names::managed_selector_text());
        let (deployments, deployments_applied, t1) = spawn_reflector(
            scoped::<Deployment>(&client, per_user, &config.namespace),
            watch_config(managed.clone()),
            None,
        );
        let (pods, pods_applied, t2) =
            spawn_reflector(scoped::<Pod>(&client, per_user, &config.namespace), watch_config(managed.clone()), None);
        let (endpoint_sender, endpoint_changes) = watch::channel(0);
        let (endpoint_slices, _, t7) = spawn_reflector(
            scoped::<EndpointSlice>(&client, per_user, &config.namespace),
            watch_config(Some(endpoints::slice_selector_text())),
            Some(endpoint_sender),
        );
        let (services, _, t3) = spawn_reflector(
            scoped::<Service>(&client, per_user, &config.namespace),
            watch_config(managed.clone()),
            None,
        );
        let (events, events_applied, t4) =
            spawn_reflector(scoped::<Event>(&client, per_user, &config.namespace), watch_config(None), None);
        let (autoscalers, autoscalers_applied, t6) = spawn_reflector(
            scoped::<HorizontalPodAutoscaler>(&client, per_user, &config.namespace),
            watch_config(managed),
            None,
        );
        let mut tasks = vec![t1, t2, t3, t4, t6, t7];
        let nodes = if super::access::may(&client, "list", "", "nodes", None).await {
            let (nodes, _, t5) = spawn_reflector(Api::<Node>::all(client.clone()), watch_config(None), None);
            tasks.push(t5);
            Some(nodes)
        } else {
            tracing::info!("kubefn may not list nodes: node port URLs are not shown");
            None
        };
        let wait = async {
            let _ = deployments.wait_until_ready().await;
            let _ = pods.wait_until_ready().await;
            let _ = services.wait_until_ready().await;
            let _ = endpoint_slices.wait_until_ready().await;
            let _ = events.wait_until_ready().await;
            let _ = autoscalers.wait_until_ready().await;
            if let Some(nodes) = &nodes {
                let _ = nodes.wait_until_ready().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), wait).await.is_err() {
            tracing::warn!("the cluster's objects were not all listed within 30 s; statuses fill in as they arrive");
        }
        Cluster {
            deployments: Grouped::new(deployments, deployments_applied, instance_of::<Deployment>),
            pods: Grouped::new(pods, pods_applied, instance_of::<Pod>),
            services,
            endpoint_slices,
            autoscalers: Grouped::new(autoscalers, autoscalers_applied, instance_of::<HorizontalPodAutoscaler>),
            events: Grouped::new(events, events_applied, event_group),
            nodes,
            endpoint_changes,
            tasks: Mutex::new(tasks),
            scope: Scope::of(config),
        }
    }

    /// Stops every watcher.
    pub fn stop(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Ticks whenever an EndpointSlice of kubefn's changes.
    pub fn endpoint_changes(&self) -> watch::Receiver<u64> {
        self.endpoint_changes.clone()
    }

    /// The pod store (log follows read which pods exist).
    pub fn pod_store(&self) -> Store<Pod> {
        self.pods.store().clone()
    }

    /// The instance's Deployment (shared with the watch's store, not copied).
    pub fn deployment_of(&self, id: &str) -> Option<Arc<Deployment>> {
        self.deployments.of(id).into_iter().next()
    }

    /// The instance's HPA, when it has one.
    pub fn autoscaler_of(&self, id: &str) -> Option<Arc<HorizontalPodAutoscaler>> {
        self.autoscalers.of(id).into_iter().next()
    }

    /// The instance's pods.
    pub fn pods_of(&self, id: &str) -> Vec<Arc<Pod>> {
        self.pods.of(id)
    }

    /// Every Service's ready endpoints by `(namespace, name)`, in one pass over the slices
    /// (kept in each instance's slot whenever a slice changes, so no request scans them).
    pub fn ready_endpoints(&self) -> HashMap<(String, String), Vec<ReadyPod>> {
        endpoints::ready_by_service(self.endpoint_slices.state().iter().map(|slice| slice.as_ref()))
    }

    /// Which of the Deployment and the Service named `name` in `namespace` belongs to something
    /// other than instance `id`, as the watch sees them (a just-created object of another
    /// instance is caught by the next apply); `None` when each is this instance's or absent.
    pub fn taken_by_other(&self, namespace: &str, name: &str, id: &str) -> Option<&'static str> {
        fn foreign<K: Resource<DynamicType = ()> + Clone>(
            store: &Store<K>,
            namespace: &str,
            name: &str,
            id: &str,
        ) -> bool {
            store
                .get(&reflector::ObjectRef::new(name).within(namespace))
                .is_some_and(|object| instance_label(object.meta().labels.as_ref()) != Some(id))
        }
        if foreign(self.deployments.store(), namespace, name, id) {
            Some("Deployment")
        } else if foreign(&self.services, namespace, name, id) {
            Some("Service")
        } else {
            None
        }
    }

    /// The versions the instance's pods run.
    pub fn pod_versions(&self, id: &str) -> HashSet<u32> {
        self.pods_of(id).iter().filter_map(|p| status::version_of(p.metadata.labels.as_ref())).collect()
    }

    /// The instance's pods stuck in a back-off or a failed start.
    pub fn stuck_pods(&self, id: &str) -> Vec<String> {
        self.pods_of(id).iter().filter(|p| status::stuck(p).is_some()).filter_map(|p| p.metadata.name.clone()).collect()
    }

    /// Every instance with a Deployment in this kubefn's namespaces (another kubefn in the
    /// same cluster keeps its own).
    pub fn instance_ids(&self) -> Vec<String> {
        self.deployments
            .store()
            .state()
            .iter()
            .filter(|d| d.metadata.namespace.as_deref().is_some_and(|n| self.scope.owns(n)))
            .filter_map(|d| instance_label(d.metadata.labels.as_ref()).map(str::to_string))
            .collect()
    }

    /// Instances whose Deployment or Service matches `selector` (`k=v,k=v`).
    pub fn instances_matching(&self, selector: &str) -> Vec<String> {
        let wanted = parse_selector(selector);
        let mut ids: HashSet<String> = HashSet::new();
        for labels in self
            .deployments
            .store()
            .state()
            .iter()
            .map(|d| d.metadata.labels.clone())
            .chain(self.services.state().iter().map(|s| s.metadata.labels.clone()))
        {
            if matches(labels.as_ref(), &wanted)
                && let Some(id) = instance_label(labels.as_ref())
            {
                ids.insert(id.to_string());
            }
        }
        ids.into_iter().collect()
    }

    /// Namespaces holding watched objects that match `selector`.
    pub fn namespaces_with(&self, selector: &str) -> Vec<String> {
        let wanted = parse_selector(selector);
        let mut namespaces: HashSet<String> = HashSet::new();
        let metas = self
            .deployments
            .store()
            .state()
            .iter()
            .map(|d| d.metadata.clone())
            .chain(self.pods.store().state().iter().map(|p| p.metadata.clone()))
            .chain(self.services.state().iter().map(|s| s.metadata.clone()))
            .collect::<Vec<_>>();
        for meta in metas {
            if matches(meta.labels.as_ref(), &wanted)
                && let Some(namespace) = meta.namespace
            {
                namespaces.insert(namespace);
            }
        }
        let mut namespaces: Vec<String> = namespaces.into_iter().collect();
        namespaces.sort();
        namespaces
    }

    /// `node address:node port` of the instance's Service, when it has a node port. The node
    /// is one that runs a replica of the instance (a node port answers on every node that runs
    /// kube-proxy, but not every node does, and the replica's own node always serves it).
    pub fn node_address_of(&self, id: &str) -> Option<SocketAddr> {
        let service =
            self.services.state().into_iter().find(|s| instance_label(s.metadata.labels.as_ref()) == Some(id))?;
        let port = service.spec.as_ref()?.ports.as_ref()?.iter().find_map(|p| p.node_port)?;
        let mut hosts: Vec<String> =
            self.pods_of(id).iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
        hosts.sort();
        let address = self.node_address(&hosts)?;
        Some(SocketAddr::new(address, u16::try_from(port).ok()?))
    }

    /// The address of a Ready node, the first of `preferred` that is Ready if any: external if
    /// it has one, else internal.
    fn node_address(&self, preferred: &[String]) -> Option<IpAddr> {
        let nodes = self.nodes.as_ref()?.state();
        let mut ready: Vec<&Node> = nodes
            .iter()
            .map(|n| n.as_ref())
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect();
        // Preferred nodes first, in their order; the rest after.
        ready.sort_by_key(|n| preferred.iter().position(|p| n.metadata.name.as_ref() == Some(p)).unwrap_or(usize::MAX));
        let address_of = |node: &Node| {
            let addresses: Vec<(&str, IpAddr)> = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|a| Some((a.type_.as_str(), a.address.parse::<IpAddr>().ok()?)))
                .collect();
            let external = addresses.iter().find(|(kind, _)| *kind == "ExternalIP");
            external.or_else(|| addresses.iter().find(|(kind, _)| *kind == "InternalIP")).map(|(_, ip)| *ip)
        };
        ready.into_iter().find_map(address_of)
    }

    /// Recent Events about the instance's Deployment, ReplicaSets, pods, Service and HPA, newest first.
    pub fn events_of(&self, id: &str) -> Vec<EventInfo> {
        let Some(deployment) = self.deployment_of(id) else { return Vec::new() };
        let (Some(namespace), Some(name)) = (&deployment.metadata.namespace, &deployment.metadata.name) else {
            return Vec::new();
        };
        let mut events: Vec<EventInfo> =
            self.events.of(&format!("{namespace}/{name}")).iter().map(|e| status::event_info(e)).collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.at));
        events.truncate(EVENTS_SHOWN);
        events
    }
}

/// The name of the instance objects an object of `kind` named `object` belongs to: the
/// Deployment, Service and HPA carry the name; a ReplicaSet adds `-{hash}`; a pod adds
/// `-{hash}-{suffix}`. `None` for kinds an instance does not own.
fn owner_base<'a>(kind: &str, object: &'a str) -> Option<&'a str> {
    let strip = |text: &'a str| text.rsplit_once('-').map(|(start, _)| start);
    match kind {
        "Deployment" | "Service" | "HorizontalPodAutoscaler" => Some(object),
        "ReplicaSet" => strip(object),
        "Pod" => strip(object).and_then(strip),
        _ => None,
    }
}

/// The group of an object in [`Cluster`]'s stores: the instance its label names.
fn instance_of<K: Resource>(object: &K) -> Option<String> {
    instance_label(object.meta().labels.as_ref()).map(str::to_string)
}

/// The group of an Event in [`Cluster`]'s store: `{namespace}/{the instance objects' name}`.
fn event_group(event: &Event) -> Option<String> {
    let object = &event.involved_object;
    let base = owner_base(object.kind.as_deref()?, object.name.as_deref()?)?;
    Some(format!("{}/{base}", object.namespace.as_deref()?))
}

/// The instance an object belongs to, by its [`names::INSTANCE`] label.
pub fn instance_label(labels: Option<&BTreeMap<String, String>>) -> Option<&str> {
    labels?.get(names::INSTANCE).map(String::as_str)
}

fn parse_selector(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn matches(labels: Option<&BTreeMap<String, String>>, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

mod endpoints;
mod grouped;
#[cfg(test)]
mod tests;
mod usage;

pub use endpoints::ReadyPod;
use grouped::Grouped;
pub use usage::{PodUsage, metrics_served, parse_cpu_millicores, pod_metrics, pod_usage};
