//! Where an instance is served: the ready endpoints of its Service, from the EndpointSlices the
//! cluster's EndpointSlice controller keeps for it — the source kube-proxy itself routes by, so
//! kubefn's gateway sends a request exactly where the Service would (a pod that is Ready but
//! not yet in a slice, or terminating, gets none).
//!
//! Only slices made by that controller count, keyed by the namespace and the Service they name
//! (`kubernetes.io/service-name`, a label the controller sets and never copies from the
//! Service): a slice someone made by hand with kubefn's labels, or the slice of a Service of the
//! same name in another namespace, draws no instance's traffic. (Function pods have no API
//! credentials, so kubefn's tenants cannot write slices at all; whoever may write them in
//! kubefn's namespaces administers the cluster.)

use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::HashMap;
use std::net::IpAddr;

/// The label the EndpointSlice controller sets to the Service a slice belongs to.
const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming what made a slice.
const SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Its value on the slices of Services with a selector, as kubefn's are.
const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// The label selector of the slices worth watching: the controller's, for kubefn's Services
/// (the controller copies a Service's labels to its slices).
pub fn slice_selector_text() -> String {
    format!("{SLICE_MANAGED_BY}={SLICE_CONTROLLER},{}", super::names::managed_selector_text())
}

/// A ready endpoint of an instance: its pod's name (what a port-forward dials) and its address
/// (what kubefn inside the cluster dials).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadyPod {
    /// The pod's name.
    pub name: String,
    /// The pod's IP address.
    pub ip: Option<IpAddr>,
}

/// Every Service's ready endpoints, keyed by `(namespace, Service name)`, each list sorted and
/// without repeats (a pod may sit in two slices for a moment while the controller moves it).
pub fn ready_by_service<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> HashMap<(String, String), Vec<ReadyPod>> {
    let mut ready: HashMap<(String, String), Vec<ReadyPod>> = HashMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|labels| labels.get(key)).map(String::as_str);
        if label(SLICE_MANAGED_BY) != Some(SLICE_CONTROLLER) || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
        {
            continue;
        }
        let (Some(namespace), Some(service)) = (slice.metadata.namespace.as_deref(), label(SERVICE_NAME)) else {
            continue;
        };
        let endpoints = ready.entry((namespace.to_string(), service.to_string())).or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            // The API: an unset `ready` means ready. Terminating endpoints are never ready.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(pod) = endpoint.target_ref.as_ref().filter(|target| target.kind.as_deref() == Some("Pod")) else {
                continue;
            };
            let Some(name) = pod.name.clone() else { continue };
            let ip = endpoint.addresses.first().and_then(|address| address.parse().ok());
            endpoints.push(ReadyPod { name, ip });
        }
    }
    for endpoints in ready.values_mut() {
        endpoints.sort();
        endpoints.dedup();
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use kube::api::ObjectMeta;

    fn endpoint(pod: &str, ip: &str, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions { ready, ..Default::default() }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A slice as the controller writes it for Service `service` in `namespace`.
    fn slice(namespace: &str, service: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                labels: Some(
                    [
                        (SERVICE_NAME, service),
                        (SLICE_MANAGED_BY, SLICE_CONTROLLER),
                        ("app.kubernetes.io/managed-by", "kubefn"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ports: None,
        }
    }

    fn key(namespace: &str, service: &str) -> (String, String) {
        (namespace.into(), service.into())
    }

    #[test]
    fn ready_endpoints_are_gathered_per_service_across_its_slices() {
        let slices = [
            slice(
                "fns",
                "hello-ann",
                vec![endpoint("hello-ann-b", "10.0.0.2", Some(true)), endpoint("hello-ann-a", "10.0.0.1", None)],
            ),
            // The controller moved pod b to a second slice and has not yet dropped it from the first.
            slice(
                "fns",
                "hello-ann",
                vec![endpoint("hello-ann-b", "10.0.0.2", Some(true)), endpoint("hello-ann-c", "10.0.0.3", Some(false))],
            ),
            slice("fns", "other-bob", vec![endpoint("other-bob-a", "10.0.1.1", Some(true))]),
        ];
        let ready = ready_by_service(&slices);
        let pod = |name: &str, ip: &str| ReadyPod { name: name.into(), ip: ip.parse().ok() };
        assert_eq!(
            ready[&key("fns", "hello-ann")],
            vec![pod("hello-ann-a", "10.0.0.1"), pod("hello-ann-b", "10.0.0.2")],
            "an unset ready counts as ready, a not-ready (or terminating) endpoint does not, repeats are dropped"
        );
        assert_eq!(ready[&key("fns", "other-bob")], vec![pod("other-bob-a", "10.0.1.1")]);
    }

    #[test]
    fn only_the_controllers_slices_of_a_namespace_count() {
        let mut forged = slice("fns", "hello-ann", vec![endpoint("hello-ann-x", "203.0.113.9", Some(true))]);
        forged.metadata.labels.as_mut().expect("labels").insert(SLICE_MANAGED_BY.into(), "someone-else".into());
        let elsewhere = slice("other", "hello-ann", vec![endpoint("hello-ann-y", "203.0.113.10", Some(true))]);
        let mut hostnames = slice("fns", "hello-ann", vec![endpoint("hello-ann-z", "evil.example", Some(true))]);
        hostnames.address_type = "FQDN".into();
        let mut no_pod = slice("fns", "hello-ann", vec![endpoint("hello-ann-w", "10.0.0.9", Some(true))]);
        no_pod.endpoints.as_mut().expect("endpoints")[0].target_ref = None;
        let ready = ready_by_service([&forged, &elsewhere, &hostnames, &no_pod]);
        assert!(ready.get(&key("fns", "hello-ann")).is_none_or(Vec::is_empty), "{ready:?}");
        assert_eq!(
            ready[&key("other", "hello-ann")].len(),
            1,
            "keyed by namespace: the slot's namespace picks its own"
        );
    }
}
