//! The Kubernetes objects of one instance, built from its spec with no client in sight (so they
//! are unit-tested by looking at them): a ConfigMap per version with the source and the
//! bootstrap, a Deployment (init container for declared dependencies, readiness and liveness
//! probes on the bootstrap, requests and limits, env and an optional Secret, non-root), a
//! Service, and an autoscaling/v2 HorizontalPodAutoscaler when autoscaling is on.
//!
//! The Deployment never states `replicas`: the HPA or kubefn's scale calls own that field, so
//! re-applying the Deployment never undoes a scaling decision.

use super::names;
use crate::platform::model::{FunctionSpec, Language, ServiceKind};
use crate::platform::runtime::InstanceSpec;
use crate::platform::runtime::bootstrap::{self, Bootstrap, HEALTH_PATH, READY_PATH};
use crate::platform::validation::parse_memory_bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The port the bootstrap listens on in the pod.
pub const CONTAINER_PORT: u16 = 8080;
/// The Service's port.
pub const SERVICE_PORT: u16 = 80;
/// The container's name.
pub const CONTAINER: &str = "function";
/// The init container's name.
pub const INSTALL_CONTAINER: &str = "install-dependencies";
const CODE_DIR: &str = "/kubefn/code";
/// How long a stopping replica keeps serving before it is sent SIGTERM. Its endpoint is removed
/// when its deletion starts, but the port-forwards, kube-proxy and Service meshes learn that
/// a moment later; without this pause the connections they send meanwhile would be refused in
/// every rollout and scale-down. (Kubernetes' own advice; OpenFaaS's watchdog waits likewise.)
const DRAIN_SECONDS: u32 = 2;
const DEPS_DIR: &str = "/kubefn/deps";
/// The uid source functions run as (`nobody`): the runtime images need no other.
const NOBODY: i64 = 65534;

/// What the manifests take from kubefn's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// The image Python functions run on.
    pub python: String,
    /// The image Node functions run on.
    pub node: String,
}

impl Default for Images {
    fn default() -> Self {
        Images { python: "python:3.12-slim".into(), node: "node:22-slim".into() }
    }
}

/// What every function pod takes from kubefn's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSettings {
    /// The runtime images per language.
    pub images: Images,
    /// Which nodes function pods may run on.
    pub placement: Placement,
    /// How dependency installs reach the package registries.
    pub packages: PackageAccess,
}

/// How the init container that installs a function's dependencies reaches the registries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageAccess {
    /// The proxy installs go through (`HTTPS_PROXY`), e.g. kubefn's package egress; `None`: they
    /// connect directly, where the cluster lets pods reach the internet.
    pub proxy: Option<String>,
    /// A PEM bundle of the certificate authorities installs trust instead of the image's (a
    /// TLS-inspecting proxy's CA, say). It reaches pods as the ConfigMap
    /// [`PACKAGE_CA_CONFIG_MAP`] of their namespace.
    pub ca_bundle: Option<String>,
    /// Package index settings for installers (`PIP_INDEX_URL`, `npm_config_registry`, …).
    pub env: Vec<(String, String)>,
}

/// The ConfigMap holding [`PackageAccess::ca_bundle`] in each namespace with functions.
pub const PACKAGE_CA_CONFIG_MAP: &str = "kubefn-package-ca";
const PACKAGE_CA_DIR: &str = "/kubefn/package-ca";
const PACKAGE_CA_FILE: &str = "ca.pem";

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
        "metadata": { "name": names::ISOLATION_POLICY, "namespace": namespace, "labels": { names::MANAGED_BY: names::MANAGER } },
        "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress },
    })
}

/// The RoleBinding that gives kubefn (`service_account` as `namespace/name`) its rights in a
/// user namespace: the ClusterRole [`names::USER_NAMESPACE_ROLE`], bound there only.
pub fn user_namespace_binding(namespace: &str, service_account: (&str, &str)) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": names::USER_NAMESPACE_OBJECTS, "namespace": namespace, "labels": { names::MANAGED_BY: names::MANAGER } },
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
        "metadata": { "name": names::USER_NAMESPACE_OBJECTS, "namespace": namespace, "labels": { names::MANAGED_BY: names::MANAGER } },
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
        "metadata": { "name": names::USER_NAMESPACE_OBJECTS, "namespace": namespace, "labels": { names::MANAGED_BY: names::MANAGER } },
        "spec": { "limits": [{
            "type": "Container",
            "default": { "cpu": defaults.cpu_limit, "memory": defaults.memory_limit },
            "defaultRequest": { "cpu": defaults.cpu, "memory": defaults.memory },
        }] },
    })
}

/// The [`PACKAGE_CA_CONFIG_MAP`] of `namespace`, when a bundle is configured.
pub fn package_ca(namespace: &str, packages: &PackageAccess) -> Option<Value> {
    let bundle = packages.ca_bundle.as_ref()?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": PACKAGE_CA_CONFIG_MAP, "namespace": namespace, "labels": { names::MANAGED_BY: names::MANAGER } },
        "data": { PACKAGE_CA_FILE: bundle },
    }))
}

/// Which nodes function pods may run on, as OpenFaaS's constraints and Knative's node
/// selectors offer: a dedicated node pool is selected by its labels and its taints tolerated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Labels a node must carry.
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Taints the pods tolerate.
    pub tolerations: Vec<Toleration>,
}

/// One tolerated taint: `key`, `key=value` or either with `:Effect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// The taint's key.
    pub key: String,
    /// Its value; `None` tolerates any value.
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; `None` tolerates every effect.
    pub effect: Option<String>,
}

/// A placement setting that cannot be read; the message names the setting and the form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {text:?} is not {form}")]
pub struct PlacementError {
    setting: &'static str,
    text: String,
    form: &'static str,
}

impl Placement {
    /// Reads `key=value,…` labels.
    pub fn parse_node_selector(text: &str) -> Result<std::collections::BTreeMap<String, String>, PlacementError> {
        let wrong =
            || PlacementError { setting: "node selector", text: text.into(), form: "a list of key=value labels" };
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
                _ => Err(wrong()),
            })
            .collect()
    }

    /// Reads `key[=value][:Effect],…` tolerations.
    pub fn parse_tolerations(text: &str) -> Result<Vec<Toleration>, PlacementError> {
        let wrong = || PlacementError {
            setting: "tolerations",
            text: text.into(),
            form: "a list of key[=value][:NoSchedule|PreferNoSchedule|NoExecute]",
        };
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let (taint, effect) = match item.rsplit_once(':') {
                    Some((taint, effect)) if ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) => {
                        (taint, Some(effect.to_string()))
                    }
                    Some(_) => return Err(wrong()),
                    None => (item, None),
                };
                let (key, value) = match taint.split_once('=') {
                    Some((key, value)) => (key, Some(value.to_string())),
                    None => (taint, None),
                };
                if key.is_empty() {
                    return Err(wrong());
                }
                Ok(Toleration { key: key.to_string(), value, effect })
            })
            .collect()
    }

    fn apply_to(&self, pod: &mut Value) {
        if !self.node_selector.is_empty() {
            pod["nodeSelector"] = json!(self.node_selector);
        }
        if !self.tolerations.is_empty() {
            let tolerations: Vec<Value> = self
                .tolerations
                .iter()
                .map(|t| {
                    let mut toleration =
                        json!({ "key": t.key, "operator": if t.value.is_some() { "Equal" } else { "Exists" } });
                    if let Some(value) = &t.value {
                        toleration["value"] = json!(value);
                    }
                    if let Some(effect) = &t.effect {
                        toleration["effect"] = json!(effect);
                    }
                    toleration
                })
                .collect();
            pod["tolerations"] = json!(tolerations);
        }
    }
}

/// A manifest that does not fit its Kubernetes type (a bug in kubefn, caught by unit tests).
#[derive(Debug, thiserror::Error)]
#[error("kubefn built an invalid {kind} manifest; please report this")]
pub struct ManifestError {
    kind: &'static str,
    #[source]
    source: serde_json::Error,
}

/// Every object of one instance, ready for server-side apply.
#[derive(Clone, Debug)]
pub struct Manifests {
    /// The objects' base name.
    pub name: String,
    /// The version's ConfigMap (`None` for image functions).
    pub config_map: Option<ConfigMap>,
    /// The Deployment.
    pub deployment: Deployment,
    /// The Service.
    pub service: Service,
    /// The HPA, when autoscaling is on.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// A hash of all of the above: unchanged means nothing to apply.
    pub fingerprint: String,
}

/// Whether kubefn hands the instance's scaling to an HPA: a CPU or memory target and room
/// between min and max. (Requests in flight have no HPA metric without a metrics adapter.)
pub fn autoscaling_on(spec: &FunctionSpec) -> bool {
    (spec.scaling.target_cpu_percent.is_some() || spec.scaling.target_memory_percent.is_some())
        && spec.scaling.max > spec.scaling.min.max(1)
}

/// Builds every object of `instance` in `namespace`. `node_port` is the Service's port from
/// before, kept so the instance's address survives re-creation.
pub fn build(
    instance: &InstanceSpec,
    namespace: &str,
    pods: &PodSettings,
    node_port: Option<u16>,
) -> Result<Manifests, ManifestError> {
    let name = names::base_name(&instance.function, &instance.user);
    let spec = &instance.spec;
    let config_map = match bootstrap::for_language(spec.runtime) {
        Some(boot) => Some(typed("ConfigMap", config_map(instance, namespace, &name, boot))?),
        None => None,
    };
    let deployment = typed("Deployment", deployment(instance, namespace, &name, pods))?;
    let service = typed("Service", service(instance, namespace, &name, node_port))?;
    let autoscaler = if autoscaling_on(spec) {
        Some(typed("HorizontalPodAutoscaler", autoscaler(instance, namespace, &name))?)
    } else {
        None
    };
    let fingerprint = {
        let text = serde_json::to_string(&(&config_map, &deployment, &service, &autoscaler))
            .map_err(|source| ManifestError { kind: "fingerprint", source })?;
        Sha256::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
    };
    Ok(Manifests { name, config_map, deployment, service, autoscaler, fingerprint })
}

fn typed<T: serde::de::DeserializeOwned>(kind: &'static str, value: Value) -> Result<T, ManifestError> {
    serde_json::from_value(value).map_err(|source| ManifestError { kind, source })
}

fn metadata(instance: &InstanceSpec, namespace: &str, name: &str, version: Option<u32>) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "labels": names::labels(&instance.id, &instance.function, &instance.user, version),
    })
}

fn config_map(instance: &InstanceSpec, namespace: &str, base: &str, boot: &Bootstrap) -> Value {
    let spec = &instance.spec;
    let mut data = serde_json::Map::new();
    data.insert(boot.file.into(), boot.source.into());
    data.insert(boot.function_file.into(), spec.source.clone().into());
    if !spec.requirements.trim().is_empty() {
        data.insert(boot.requirements_file.into(), spec.requirements.clone().into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(instance, namespace, &names::config_map_name(base, instance.version), Some(instance.version)),
        // A version never changes; immutable ConfigMaps also spare the kubelets a watch each.
        "immutable": true,
        "data": data,
    })
}

fn deployment(instance: &InstanceSpec, namespace: &str, base: &str, pods: &PodSettings) -> Value {
    let spec = &instance.spec;
    let selector = names::instance_selector(&instance.id);
    let pod_labels = names::labels(&instance.id, &instance.function, &instance.user, Some(instance.version));
    let mut pod = match bootstrap::for_language(spec.runtime) {
        Some(boot) => source_pod(instance, base, boot, pods),
        None => image_pod(spec),
    };
    pods.placement.apply_to(&mut pod);
    let mut metadata = metadata(instance, namespace, base, Some(instance.version));
    metadata["annotations"] = json!({ names::PAUSED: instance.paused.to_string() });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": { "matchLabels": selector },
            // A new version starts before an old replica stops: no request meets no replica.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": "25%" } },
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 300,
            "template": { "metadata": { "labels": pod_labels }, "spec": pod },
        },
    })
}

fn resources(spec: &FunctionSpec) -> Value {
    let r = &spec.resources;
    json!({
        "requests": { "cpu": r.cpu, "memory": r.memory },
        "limits": { "cpu": r.cpu_limit, "memory": r.memory_limit },
    })
}

fn container_security(read_only_root: bool) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": { "drop": ["ALL"] },
    })
}

/// User variables first: a later entry of the same name wins, so kubefn's own stay in force.
fn env_list(user: &std::collections::BTreeMap<String, String>, own: Vec<(&str, String)>) -> Vec<Value> {
    user.iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain(own)
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect()
}

fn source_pod(instance: &InstanceSpec, base: &str, boot: &Bootstrap, pods: &PodSettings) -> Value {
    let spec = &instance.spec;
    let image = if spec.runtime == Language::Node { &pods.images.node } else { &pods.images.python };
    let has_deps = !spec.requirements.trim().is_empty();
    let mut own = vec![
        ("PORT", CONTAINER_PORT.to_string()),
        ("KUBEFN_SOURCE", format!("{CODE_DIR}/{}", boot.function_file)),
        ("KUBEFN_HANDLER", spec.handler.clone().unwrap_or_default()),
        ("KUBEFN_FUNCTION_NAME", spec.name.clone()),
        ("KUBEFN_MEMORY_LIMIT", spec.resources.memory_limit.clone()),
        ("KUBEFN_TIMEOUT", spec.timeout_s.to_string()),
        ("PYTHONUNBUFFERED", "1".into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("HOME", "/tmp".into()),
    ];
    if has_deps {
        let deps =
            if spec.runtime == Language::Node { format!("{DEPS_DIR}/node_modules") } else { DEPS_DIR.to_string() };
        own.push(("KUBEFN_DEPS", deps));
    }
    let mut command = vec![boot.interpreter.to_string()];
    if spec.runtime == Language::Node
        && let Some(limit) = parse_memory_bytes(&spec.resources.memory_limit)
    {
        command.push(bootstrap::node_heap_limit_flag(limit));
    }
    command.push(format!("{CODE_DIR}/{}", boot.file));
    let mut mounts = vec![
        json!({ "name": "code", "mountPath": CODE_DIR, "readOnly": true }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    let mut volumes = vec![
        json!({ "name": "code", "configMap": { "name": names::config_map_name(base, instance.version), "defaultMode": 0o444 } }),
        json!({ "name": "tmp", "emptyDir": { "sizeLimit": "256Mi" } }),
    ];
    let mut init = Vec::new();
    if has_deps {
        mounts.push(json!({ "name": "deps", "mountPath": DEPS_DIR, "readOnly": true }));
        volumes.push(json!({ "name": "deps", "emptyDir": {} }));
        let install = if spec.runtime == Language::Node {
            json!([
                "sh",
                "-c",
                format!(
                    "cp {CODE_DIR}/package.json {DEPS_DIR}/ && cd {DEPS_DIR} && npm install --omit=dev --no-audit --no-fund --no-update-notifier"
                )
            ])
        } else {
            json!([
                "python3",
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-input",
                "--target",
                DEPS_DIR,
                "-r",
                format!("{CODE_DIR}/requirements.txt")
            ])
        };
        let (install_env, install_mounts) = install_access(&pods.packages, &mut volumes);
        init.push(json!({
            "name": INSTALL_CONTAINER,
            "image": image,
            "command": install,
            "env": install_env,
            "resources": resources(spec),
            "securityContext": container_security(true),
            "volumeMounts": install_mounts,
        }));
    }
    let probe = |path: &str, period: u32, failures: u32| json!({ "httpGet": { "path": path, "port": "http" }, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures });
    let mut pod = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        // Long enough for an invocation under way to finish when a rollout replaces the pod.
        "terminationGracePeriodSeconds": (spec.timeout_s + 5).min(905),
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": NOBODY, "runAsGroup": NOBODY, "fsGroup": NOBODY,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": [{
            "name": CONTAINER,
            "image": image,
            "command": command,
            "ports": [{ "name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP" }],
            "env": env_list(&spec.env, own),
            // Secrets an administrator put in `{name}-secrets` reach the function as variables.
            "envFrom": [{ "secretRef": { "name": format!("{base}-secrets"), "optional": true } }],
            "readinessProbe": probe(READY_PATH, 2, 2),
            "livenessProbe": probe(HEALTH_PATH, 10, 3),
            "lifecycle": drain(),
            "resources": resources(spec),
            "securityContext": container_security(true),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    if !init.is_empty() {
        pod["initContainers"] = json!(init);
    }
    pod
}

/// The dependency installer's environment and mounts: its scratch space, the registries' proxy
/// and CA bundle (a volume added to `volumes`), and the admin's package index settings.
fn install_access(packages: &PackageAccess, volumes: &mut Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let mut env =
        vec![("HOME".to_string(), "/tmp".to_string()), ("npm_config_cache".to_string(), "/tmp/.npm".to_string())];
    let mut mounts = vec![
        json!({ "name": "code", "mountPath": CODE_DIR, "readOnly": true }),
        json!({ "name": "deps", "mountPath": DEPS_DIR }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    if let Some(proxy) = &packages.proxy {
        // pip reads the lower-case names, npm its own setting; both tunnel TLS through it.
        for name in ["HTTPS_PROXY", "https_proxy", "npm_config_https_proxy"] {
            env.push((name.to_string(), proxy.clone()));
        }
    }
    if packages.ca_bundle.is_some() {
        let file = format!("{PACKAGE_CA_DIR}/{PACKAGE_CA_FILE}");
        for name in ["PIP_CERT", "npm_config_cafile", "SSL_CERT_FILE"] {
            env.push((name.to_string(), file.clone()));
        }
        volumes.push(json!({ "name": "package-ca", "configMap": { "name": PACKAGE_CA_CONFIG_MAP, "optional": true } }));
        mounts.push(json!({ "name": "package-ca", "mountPath": PACKAGE_CA_DIR, "readOnly": true }));
    }
    env.extend(packages.env.iter().cloned());
    let env = env.into_iter().map(|(name, value)| json!({ "name": name, "value": value })).collect();
    (env, mounts)
}

/// The kubelet's own sleep before SIGTERM (no program needed in the image): see [`DRAIN_SECONDS`].
fn drain() -> Value {
    json!({ "preStop": { "sleep": { "seconds": DRAIN_SECONDS } } })
}

/// The port the function's container serves on: the bootstraps' own, or an image's.
pub fn container_port(spec: &FunctionSpec) -> u16 {
    match spec.runtime {
        Language::Image => spec.service.port.unwrap_or(CONTAINER_PORT),
        Language::Python | Language::Node => CONTAINER_PORT,
    }
}

fn image_pod(spec: &FunctionSpec) -> Value {
    let port = container_port(spec);
    // An image's own HTTP paths are unknown: ready and alive mean its port accepts connections.
    let probe = |period: u32, failures: u32| json!({ "tcpSocket": { "port": "http" }, "periodSeconds": period, "failureThreshold": failures });
    json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [{
            "name": CONTAINER,
            "image": spec.image.clone().unwrap_or_default(),
            "ports": [{ "name": "http", "containerPort": port, "protocol": "TCP" }],
            "env": env_list(&spec.env, vec![("PORT", port.to_string())]),
            "readinessProbe": probe(2, 2),
            "livenessProbe": probe(10, 3),
            "lifecycle": drain(),
            "resources": resources(spec),
            "securityContext": container_security(false),
        }],
    })
}

fn service(instance: &InstanceSpec, namespace: &str, base: &str, node_port: Option<u16>) -> Value {
    let kind = instance.spec.service.kind;
    let mut spec = json!({ "type": kind.as_str() });
    if kind == ServiceKind::ExternalName {
        spec["externalName"] = json!(instance.spec.service.external_name.clone().unwrap_or_default());
    } else {
        let mut port = json!({ "name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP" });
        if matches!(kind, ServiceKind::NodePort | ServiceKind::LoadBalancer)
            && let Some(node_port) = node_port
        {
            port["nodePort"] = json!(node_port);
        }
        spec["selector"] = json!(names::instance_selector(&instance.id));
        spec["ports"] = json!([port]);
    }
    json!({ "apiVersion": "v1", "kind": "Service", "metadata": metadata(instance, namespace, base, None), "spec": spec })
}

fn autoscaler(instance: &InstanceSpec, namespace: &str, base: &str) -> Value {
    let scaling = &instance.spec.scaling;
    let min = scaling.min.max(1);
    let metric = |resource: &str, percent: u32| json!({ "type": "Resource", "resource": { "name": resource, "target": { "type": "Utilization", "averageUtilization": percent } } });
    let metrics: Vec<Value> = [("cpu", scaling.target_cpu_percent), ("memory", scaling.target_memory_percent)]
        .into_iter()
        .filter_map(|(resource, target)| target.map(|percent| metric(resource, percent)))
        .collect();
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(instance, namespace, base, None),
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": base },
            "minReplicas": min,
            "maxReplicas": scaling.max.max(min),
            "metrics": metrics,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_pod_network_only_kubefn_may_connect_and_without_a_proxy_nothing_in_its_namespace_is_reachable() {
        let policy = isolation_policy("fns", &NetworkIsolation::default(), &PackageAccess::default());
        let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
        assert_eq!(ingress.len(), 1, "{ingress:#?}");
        assert_eq!(ingress[0]["from"][0]["namespaceSelector"]["matchLabels"][names::NAMESPACE_NAME], "kubefn-system");
        let egress = policy["spec"]["egress"].as_array().expect("egress");
        assert_eq!(egress.len(), 2, "DNS and public addresses: {egress:#?}");
        assert!(!egress.iter().any(|rule| rule.to_string().contains("kubefn-system")));
    }

    #[test]
    fn a_package_egress_at_an_address_is_let_through_on_its_port_alone() {
        let at = |proxy: &str| {
            let packages = PackageAccess { proxy: Some(proxy.into()), ..PackageAccess::default() };
            isolation_policy("fns", &NetworkIsolation::default(), &packages)["spec"]["egress"][1].clone()
        };
        let outside = at("http://10.250.3.1:41234");
        assert_eq!(outside["ports"], json!([{ "protocol": "TCP", "port": 41234 }]));
        assert_eq!(outside["to"][0]["namespaceSelector"]["matchLabels"][names::NAMESPACE_NAME], "kubefn-system");
        assert_eq!(outside["to"][1], json!({ "ipBlock": { "cidr": "10.250.3.1/32" } }));
        assert_eq!(at("http://[fd00::7]:3128")["to"][1], json!({ "ipBlock": { "cidr": "fd00::7/128" } }));
        let inside = at("http://kubefn.kubefn-system.svc:3128");
        assert_eq!(inside["to"].as_array().map(Vec::len), Some(1), "a name is kubefn's namespace alone: {inside}");
    }
    use crate::platform::model::{Language, ServiceSpec};

    /// A fluent fixture: an instance of a function, changed field by field.
    struct Fixture(InstanceSpec);

    impl Fixture {
        fn python() -> Fixture {
            let spec = FunctionSpec {
                name: "hello".into(),
                runtime: Language::Python,
                handler: None,
                source: "def handle(req):\n    return 'hi'\n".into(),
                requirements: String::new(),
                image: None,
                env: [("GREETING".to_string(), "hi".to_string())].into(),
                visibility: Default::default(),
                resources: Default::default(),
                scaling: Default::default(),
                service: Default::default(),
                timeout_s: 60,
                invoke: Default::default(),
            };
            Fixture(InstanceSpec {
                id: "3f2c1d7e-8a9b-4c5d-9e0f-112233445566".into(),
                function: "hello".into(),
                user: "alice".into(),
                version: 2,
                spec,
                replicas: 1,
                paused: false,
                node_port: None,
                user_quota: None,
            })
        }
        fn with(mut self, change: impl FnOnce(&mut InstanceSpec)) -> Fixture {
            change(&mut self.0);
            self
        }
        fn build(&self) -> Manifests {
            build(&self.0, "kubefn-functions", &PodSettings::default(), None).expect("manifests")
        }
    }

    fn json_of<T: serde::Serialize>(value: &T) -> Value {
        serde_json::to_value(value).expect("json")
    }

    #[test]
    fn every_object_is_named_labelled_and_in_the_namespace() {
        let m = Fixture::python().build();
        assert_eq!(m.name, "hello-alice");
        let metas = [
            json_of(&m.config_map.as_ref().expect("config map").metadata),
            json_of(&m.deployment.metadata),
            json_of(&m.service.metadata),
            json_of(&m.autoscaler.as_ref().expect("hpa").metadata),
        ];
        for meta in &metas {
            let name = meta["name"].as_str().expect("name");
            assert!(names::is_dns1123_label(name), "{name}");
            assert_eq!(meta["namespace"], "kubefn-functions");
            assert_eq!(meta["labels"][names::MANAGED_BY], "kubefn");
            assert_eq!(meta["labels"][names::INSTANCE], "3f2c1d7e-8a9b-4c5d-9e0f-112233445566");
            assert_eq!(meta["labels"][names::FUNCTION], "hello");
            assert_eq!(meta["labels"][names::USER], "alice");
            for value in meta["labels"].as_object().expect("labels").values() {
                assert!(names::is_label_value(value.as_str().expect("text")), "{value}");
            }
        }
        assert_eq!(metas[0]["name"], "hello-alice-v2");
        assert_eq!(metas[0]["labels"][names::VERSION], "2");
    }

    #[test]
    fn the_selector_matches_the_pod_template_and_the_service_selects_the_same_pods() {
        let m = Fixture::python().build();
        let deployment = json_of(&m.deployment);
        let selector = deployment["spec"]["selector"]["matchLabels"].as_object().expect("selector");
        let template = deployment["spec"]["template"]["metadata"]["labels"].as_object().expect("template labels");
        assert!(!selector.is_empty());
        for (key, value) in selector {
            assert_eq!(template.get(key), Some(value), "{key}");
        }
        // The selector is immutable in Kubernetes: it must not name the version.
        assert!(!selector.contains_key(names::VERSION));
        assert_eq!(template[names::VERSION], "2");
        let service = json_of(&m.service);
        assert_eq!(service["spec"]["selector"].as_object().expect("service selector"), selector);
        assert_eq!(service["spec"]["type"], "NodePort");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn the_pod_runs_the_bootstrap_from_the_config_map_as_nobody_with_probes_and_limits() {
        let m = Fixture::python().build();
        let config_map = m.config_map.as_ref().expect("config map");
        let data = config_map.data.as_ref().expect("data");
        assert_eq!(data["bootstrap.py"], bootstrap::PYTHON.source);
        assert!(data["function.py"].contains("def handle"));
        assert_eq!(config_map.immutable, Some(true));
        let d = json_of(&m.deployment);
        assert!(d["spec"].get("replicas").is_none(), "the Deployment must leave replicas to the HPA and scale calls");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65534);
        assert_eq!(pod["volumes"][0]["configMap"]["name"], "hello-alice-v2");
        assert!(pod.get("initContainers").is_none(), "no dependencies, no init container");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "python:3.12-slim");
        assert_eq!(c["command"], json!(["python3", "/kubefn/code/bootstrap.py"]));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/_/ready");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/_/health");
        assert_eq!(
            c["lifecycle"]["preStop"]["sleep"]["seconds"], 2,
            "a stopping replica serves until its endpoint is gone everywhere"
        );
        assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "hello-alice-secrets");
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().expect("n").to_string(), e["value"].as_str().expect("v").to_string()))
            .collect();
        assert_eq!(env[0], ("GREETING".into(), "hi".into()), "the user's variables come first");
        assert!(env.contains(&("PORT".into(), "8080".into())));
        assert!(env.contains(&("KUBEFN_SOURCE".into(), "/kubefn/code/function.py".into())));
        assert!(!env.iter().any(|(k, _)| k == "KUBEFN_DEPS"));
    }

    #[test]
    fn declared_dependencies_are_installed_by_an_init_container_into_a_shared_volume() {
        let m = Fixture::python().with(|i| i.spec.requirements = "requests==2.32.3\n".into()).build();
        let d = json_of(&m.deployment);
        let pod = &d["spec"]["template"]["spec"];
        let init = &pod["initContainers"][0];
        assert_eq!(init["name"], INSTALL_CONTAINER);
        assert!(init["command"].as_array().expect("command").iter().any(|a| a == "--target"));
        assert_eq!(init["volumeMounts"][1]["mountPath"], "/kubefn/deps");
        let main = &pod["containers"][0];
        assert!(
            main["env"]
                .as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == "KUBEFN_DEPS" && e["value"] == "/kubefn/deps")
        );
        assert_eq!(m.config_map.expect("cm").data.expect("data")["requirements.txt"], "requests==2.32.3\n");

        let node = Fixture::python()
            .with(|i| {
                i.spec.runtime = Language::Node;
                i.spec.source = "module.exports = async () => 'hi'".into();
                i.spec.requirements = r#"{"dependencies": {"left-pad": "1.3.0"}}"#.into();
            })
            .build();
        let d = json_of(&node.deployment);
        let main = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(main["image"], "node:22-slim");
        assert_eq!(main["command"], json!(["node", "--max-old-space-size=192", "/kubefn/code/bootstrap.js"]));
        assert!(main["env"].as_array().expect("env").iter().any(|e| e["value"] == "/kubefn/deps/node_modules"));
        assert!(
            d["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
                .as_str()
                .expect("sh -c")
                .contains("npm install")
        );
    }

    #[test]
    fn image_functions_use_their_image_and_port_without_a_config_map() {
        let m = Fixture::python()
            .with(|i| {
                i.spec.runtime = Language::Image;
                i.spec.source.clear();
                i.spec.image = Some("ghcr.io/example/echo:1.0".into());
                i.spec.service = ServiceSpec { kind: ServiceKind::ClusterIP, external_name: None, port: Some(9000) };
            })
            .build();
        assert!(m.config_map.is_none());
        let d = json_of(&m.deployment);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "ghcr.io/example/echo:1.0");
        assert_eq!(c["ports"][0]["containerPort"], 9000);
        assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], "http");
        assert!(c.get("command").is_none());
        assert_eq!(json_of(&m.service)["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn service_types_and_a_kept_node_port() {
        let fixture = Fixture::python();
        let kept = build(&fixture.0, "ns", &PodSettings::default(), Some(31234)).expect("manifests");
        assert_eq!(json_of(&kept.service)["spec"]["ports"][0]["nodePort"], 31234);
        let external = Fixture::python()
            .with(|i| {
                i.spec.service = ServiceSpec {
                    kind: ServiceKind::ExternalName,
                    external_name: Some("api.example.com".into()),
                    port: None,
                }
            })
            .build();
        let service = json_of(&external.service);
        assert_eq!(service["spec"]["externalName"], "api.example.com");
        assert!(service["spec"].get("selector").is_none());
    }

    #[test]
    fn the_autoscaler_targets_the_deployment_with_the_policy() {
        let m = Fixture::python()
            .with(|i| {
                i.spec.scaling.min = 2;
                i.spec.scaling.max = 7;
                i.spec.scaling.target_memory_percent = Some(80);
            })
            .build();
        let hpa = json_of(&m.autoscaler.expect("hpa"));
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "hello-alice");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 7);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(hpa["spec"]["metrics"][1]["resource"]["name"], "memory");

        let fixed = Fixture::python().with(|i| i.spec.scaling.target_cpu_percent = None).build();
        assert!(fixed.autoscaler.is_none(), "no target, no HPA");
        let pinned = Fixture::python().with(|i| i.spec.scaling.max = 1).build();
        assert!(pinned.autoscaler.is_none(), "min = max leaves nothing to scale");
    }

    #[test]
    fn the_fingerprint_follows_every_change() {
        let a = Fixture::python().build();
        assert_eq!(a.fingerprint, Fixture::python().build().fingerprint);
        assert_ne!(a.fingerprint, Fixture::python().with(|i| i.version = 3).build().fingerprint);
        assert_ne!(a.fingerprint, Fixture::python().with(|i| i.paused = true).build().fingerprint);
        assert_ne!(a.fingerprint, Fixture::python().with(|i| i.spec.resources.cpu = "200m".into()).build().fingerprint);
    }

    #[test]
    fn placement_reads_labels_and_tolerations_and_names_what_is_wrong() {
        let selector = Placement::parse_node_selector("pool=functions, zone = a").expect("labels");
        assert_eq!(selector.get("pool").map(String::as_str), Some("functions"));
        assert_eq!(selector.get("zone").map(String::as_str), Some("a"));
        assert!(Placement::parse_node_selector("").expect("none").is_empty());
        assert!(Placement::parse_node_selector("pool").unwrap_err().to_string().starts_with("node selector: \"pool\""));

        let tolerations =
            Placement::parse_tolerations("dedicated=functions:NoSchedule,gpu,spot:NoExecute").expect("tolerations");
        assert_eq!(
            tolerations[0],
            Toleration { key: "dedicated".into(), value: Some("functions".into()), effect: Some("NoSchedule".into()) }
        );
        assert_eq!(tolerations[1], Toleration { key: "gpu".into(), value: None, effect: None });
        assert_eq!(tolerations[2].effect.as_deref(), Some("NoExecute"));
        assert!(Placement::parse_tolerations("a:Sometimes").is_err());
        assert!(Placement::parse_tolerations("=x").is_err());
    }

    #[test]
    fn placement_reaches_every_pod_of_the_instance() {
        let placement = Placement {
            node_selector: [("pool".to_string(), "functions".to_string())].into(),
            tolerations: Placement::parse_tolerations("dedicated=functions:NoSchedule,gpu").expect("tolerations"),
        };
        for fixture in
            [Fixture::python(), Fixture::python().with(|i| i.spec.image = Some("ghcr.io/example/echo:1.0".into()))]
        {
            let manifests =
                build(&fixture.0, "ns", &PodSettings { placement: placement.clone(), ..PodSettings::default() }, None)
                    .expect("manifests");
            let pod = serde_json::to_value(&manifests.deployment).expect("json")["spec"]["template"]["spec"].clone();
            assert_eq!(pod["nodeSelector"], json!({ "pool": "functions" }));
            assert_eq!(
                pod["tolerations"],
                json!([
                    { "key": "dedicated", "operator": "Equal", "value": "functions", "effect": "NoSchedule" },
                    { "key": "gpu", "operator": "Exists" },
                ])
            );
        }
        let plain = build(&Fixture::python().0, "ns", &PodSettings::default(), None).expect("manifests");
        let pod = serde_json::to_value(&plain.deployment).expect("json")["spec"]["template"]["spec"].clone();
        assert!(pod.get("nodeSelector").is_none() && pod.get("tolerations").is_none());
    }
}
