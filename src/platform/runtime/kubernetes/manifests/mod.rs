//! The Kubernetes objects of one instance, built from its spec with no client in sight (so they
//! are unit-tested by looking at them): a ConfigMap per version with the source and the
//! bootstrap, a Deployment (init container for declared dependencies, readiness and liveness
//! probes on the bootstrap, requests and limits, env, non-root), a Service, the Secrets of its
//! secrets and registry credentials ([`secrets`]), and an autoscaling/v2
//! HorizontalPodAutoscaler when autoscaling is on.
//!
//! The Deployment never states `replicas`: the HPA or kubefn's scale calls own that field, so
//! re-applying the Deployment never undoes a scaling decision.

use super::names;
use crate::platform::model::Named;
use crate::platform::model::{FunctionSpec, Language, ServiceKind};
use crate::platform::runtime::InstanceSpec;
use crate::platform::runtime::bootstrap::{self, Bootstrap, HEALTH_PATH, READY_PATH};
use crate::platform::validation::parse_memory_bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
pub use secrets::{SecretObject, registry_secret_name, secret_name};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub mod secrets;

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

/// The [`PACKAGE_CA_CONFIG_MAP`] of `namespace`, when a bundle is configured.
pub fn package_ca(namespace: &str, packages: &PackageAccess) -> Option<Value> {
    let bundle = packages.ca_bundle.as_ref()?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": PACKAGE_CA_CONFIG_MAP, "namespace": namespace, "labels": names::platform_labels("package-ca") },
        "data": { PACKAGE_CA_FILE: bundle },
    }))
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
    /// The Secret of the secrets its function names, if any.
    pub secret: Option<SecretObject>,
    /// The Secret of its registry credentials, if any.
    pub registry_secret: Option<SecretObject>,
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
    let secret = secrets::values(instance, namespace, &name);
    let registry_secret = secrets::registry(instance, namespace, &name);
    let fingerprint = {
        let secrets = (secret.as_ref().map(|s| &s.0), registry_secret.as_ref().map(|s| &s.0));
        let text = serde_json::to_string(&(&config_map, &deployment, &service, &autoscaler, secrets))
            .map_err(|source| ManifestError { kind: "fingerprint", source })?;
        Sha256::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
    };
    Ok(Manifests { name, config_map, deployment, service, autoscaler, secret, registry_secret, fingerprint })
}

fn typed<T: serde::de::DeserializeOwned>(kind: &'static str, value: Value) -> Result<T, ManifestError> {
    serde_json::from_value(value).map_err(|source| ManifestError { kind, source })
}

fn metadata(instance: &InstanceSpec, namespace: &str, name: &str, holds: Option<u32>) -> Value {
    json!({
        "name": name,
        "namespace": namespace,
        "labels": names::labels(&instance.id, &instance.function, &instance.user, instance.version, holds),
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
    let pod_labels =
        names::labels(&instance.id, &instance.function, &instance.user, instance.version, Some(instance.version));
    let mut pod = match bootstrap::for_language(spec.runtime) {
        Some(boot) => source_pod(instance, base, boot, pods),
        None => image_pod(spec),
    };
    pods.placement.apply_to(&mut pod);
    let mut template_annotations = json!({});
    secrets::deliver(instance, base, &mut pod, &mut template_annotations);
    let mut template = json!({ "metadata": { "labels": pod_labels }, "spec": pod });
    if template_annotations.as_object().is_some_and(|a| !a.is_empty()) {
        template["metadata"]["annotations"] = template_annotations;
    }
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
            "template": template,
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

mod namespace;
mod placement;

pub use namespace::{
    NetworkIsolation, isolation_policy, user_namespace_binding, user_namespace_limits, user_namespace_quota,
};
pub use placement::{Placement, PlacementError, Toleration};

#[cfg(test)]
mod tests;
