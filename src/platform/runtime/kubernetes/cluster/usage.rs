//! What kubefn's pods use, as metrics.k8s.io (metrics-server or an equivalent) reports it.

use super::names;
use crate::platform::runtime::ReplicaUsage;
use crate::platform::validation::{MILLICORE, parse_memory_bytes, quantity_in};
use k8s_metrics::v1beta1::PodMetrics;
use kube::Client;
use kube::api::{Api, ListParams};

/// Whether the cluster serves metrics.k8s.io (metrics-server or an equivalent).
pub async fn metrics_served(client: &Client) -> bool {
    client.list_api_groups().await.is_ok_and(|groups| groups.groups.iter().any(|g| g.name == "metrics.k8s.io"))
}

/// One pod's usage, with the instance it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    /// The instance, from the pod's labels.
    pub instance: Option<String>,
    /// Its CPU and memory.
    pub usage: ReplicaUsage,
}

/// The usage of kubefn's pods in `namespace`, from metrics.k8s.io's PodMetrics.
pub async fn pod_metrics(client: &Client, namespace: &str) -> Result<Vec<PodUsage>, kube::Error> {
    let api: Api<PodMetrics> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(&names::managed_selector_text())).await?;
    Ok(list.items.iter().map(pod_usage).collect())
}

/// One pod's usage from its PodMetrics: the sum over its containers.
pub fn pod_usage(metrics: &PodMetrics) -> PodUsage {
    let cpu: f64 = metrics.containers.iter().filter_map(|c| parse_cpu_millicores(&c.usage.cpu.0)).sum();
    let memory: u64 = metrics.containers.iter().filter_map(|c| parse_memory_bytes(&c.usage.memory.0)).sum();
    PodUsage {
        instance: metrics.metadata.labels.as_ref().and_then(|l| l.get(names::INSTANCE)).cloned(),
        usage: ReplicaUsage {
            replica: metrics.metadata.name.clone().unwrap_or_default(),
            cpu_millicores: Some(cpu),
            memory_bytes: memory,
        },
    }
}

/// A CPU quantity as metrics report it (`250m`, `12345678n`, `1`) in millicores.
pub fn parse_cpu_millicores(text: &str) -> Option<f64> {
    quantity_in(text, MILLICORE)
}
