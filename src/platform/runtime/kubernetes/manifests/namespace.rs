//! The objects of a namespace with functions: the NetworkPolicy every such namespace gets, and
//! per user the RoleBinding, ResourceQuota and LimitRange.

use super::*;

/// Where function pods may connect and who may connect to them, for the NetworkPolicy
/// [`names::ISOLATION_POLICY`] in every namespace with functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkIsolation {
    /// kubefn's own namespace: its pods (the gateway inside the cluster) may reach functions,
    /// and functions may reach its package egress, nothing else there.
    pub system_namespace: String,
    /// The cluster's pod network. With it, clients outside it (node-port users) may connect
    /// too; without it only kubefn may, since a rule for "everyone else" would also let other
    /// users' pods in.
    pub pod_network: Vec<ipnet::IpNet>,
}

impl Default for NetworkIsolation {
    fn default() -> Self {
        NetworkIsolation { system_namespace: "kubefn-system".into(), pod_network: Vec::new() }
    }
}

/// The NetworkPolicy of a namespace with functions. Ingress: from kubefn's namespace, and from
/// outside the pod network when it is known, never from another function pod. Egress: the
/// cluster DNS, kubefn's package egress (when configured: in kubefn's namespace, or at its
/// address when that is an IP address), and public addresses only: no cloud
/// metadata (link-local), no apiserver, Service or pod address (private ranges), the same
/// ranges the outbound policy refuses for callbacks.
pub fn isolation_policy(namespace: &str, isolation: &NetworkIsolation, packages: &PackageAccess) -> Value {
    let system =
        json!({ "namespaceSelector": { "matchLabels": { names::NAMESPACE_NAME: isolation.system_namespace } } });
    let everywhere_but =
        |family_any: &str, except: Vec<String>| json!({ "ipBlock": { "cidr": family_any, "except": except } });
    let split = |ranges: Vec<ipnet::IpNet>| -> (Vec<String>, Vec<String>) {
        let (v4, v6): (Vec<_>, Vec<_>) = ranges.into_iter().partition(|net| matches!(net, ipnet::IpNet::V4(_)));
        (v4.iter().map(ToString::to_string).collect(), v6.iter().map(ToString::to_string).collect())
    };
    let mut ingress = vec![json!({ "from": [system] })];
    if !isolation.pod_network.is_empty() {
        let (v4, v6) = split(isolation.pod_network.clone());
        ingress.push(json!({ "from": [everywhere_but("0.0.0.0/0", v4), everywhere_but("::/0", v6)] }));
    }
    let (dns_key, dns_value) = names::DNS_POD;
    let mut egress = vec![json!({
        "to": [{ "namespaceSelector": {}, "podSelector": { "matchLabels": { dns_key: dns_value } } }],
        "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
    })];
    let proxy = packages.proxy.as_deref().and_then(|url| url.parse::<http::Uri>().ok());
    if let Some(port) = proxy.as_ref().and_then(http::Uri::port_u16) {
        let mut to = vec![system];
        // A kubefn outside the cluster names its egress by address: a namespace selector matches
        // only pods, so that one address is let through too (on this port only).
        let address = proxy
            .as_ref()
            .and_then(http::Uri::host)
            .and_then(|host| host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok());
        if let Some(address) = address {
            to.push(json!({ "ipBlock": { "cidr": ipnet::IpNet::from(address).to_string() } }));
        }
        egress.push(json!({ "to": to, "ports": [{ "protocol": "TCP", "port": port }] }));
    }
    let internal: Vec<ipnet::IpNet> =
        crate::platform::outbound::INTERNAL_RANGES.iter().filter_map(|range| range.parse().ok()).collect();
    let (v4, v6) = split(internal);
    // `except` must lie inside `cidr`: 0.0.0.0/0 and ::/0 hold every range of their family.
    egress.push(json!({ "to": [everywhere_but("0.0.0.0/0", v4), everywhere_but("::/0", v6)] }));
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": names::ISOLATION_POLICY, "namespace": namespace, "labels": names::platform_labels("isolation") },
        "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress },
    })
}

/// The RoleBinding that gives kubefn (`service_account` as `namespace/name`) its rights in a
/// user namespace: the ClusterRole [`names::USER_NAMESPACE_ROLE`], bound there only.
pub fn user_namespace_binding(namespace: &str, service_account: (&str, &str)) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": names::USER_NAMESPACE_OBJECTS, "namespace": namespace, "labels": names::platform_labels("access") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": names::USER_NAMESPACE_ROLE },
        "subjects": [{ "kind": "ServiceAccount", "namespace": service_account.0, "name": service_account.1 }],
    })
}

/// The ResourceQuota of a user namespace: the user's kubefn quota, doubled for the pods and
/// limits a rolling update runs side by side. kubefn refuses changes past the quota itself
/// first; this is the cluster's own backstop, whatever creates pods there.
pub fn user_namespace_quota(namespace: &str, quota: &crate::platform::model::Quota) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": { "name": names::USER_NAMESPACE_OBJECTS, "namespace": namespace, "labels": names::platform_labels("quota") },
        "spec": { "hard": {
            "pods": (u64::from(quota.replicas) * 2).to_string(),
            "limits.cpu": format!("{}m", quota.cpu_millicores.saturating_mul(2)),
            "limits.memory": quota.memory_bytes.saturating_mul(2).to_string(),
            "count/deployments.apps": quota.instances.to_string(),
            "services": quota.instances.to_string(),
        } },
    })
}

/// The LimitRange of a user namespace: kubefn's default resources for a container that names
/// none (every container kubefn makes names its own), so the ResourceQuota on limits never
/// refuses one for lacking them.
pub fn user_namespace_limits(namespace: &str) -> Value {
    let defaults = crate::platform::model::Resources::default();
    json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": { "name": names::USER_NAMESPACE_OBJECTS, "namespace": namespace, "labels": names::platform_labels("limits") },
        "spec": { "limits": [{
            "type": "Container",
            "default": { "cpu": defaults.cpu_limit, "memory": defaults.memory_limit },
            "defaultRequest": { "cpu": defaults.cpu, "memory": defaults.memory },
        }] },
    })
}
