//! An instance's secrets as Kubernetes objects: one Secret (`{base}-secrets`) holding the
//! values of the secrets its function names, mounted read-only at
//! [`SECRETS_DIR`](crate::platform::runtime::SECRETS_DIR) (and given as `secretKeyRef`
//! variables where asked), and for an image function with registry credentials a
//! `kubernetes.io/dockerconfigjson` Secret (`{base}-registry`) in the pod's
//! `imagePullSecrets`. Both live in the instance's own namespace and carry its labels, so they
//! go with it. The pod template carries a digest of the values: a replaced value rolls the
//! pods, as a changed variable would (the kubelet refreshes mounted files, never variables).

use super::{CONTAINER, metadata};
use crate::platform::runtime::{InstanceSpec, SECRETS_DIR, secrets_digest};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The pod-template annotation holding [`secrets_digest`] of the values.
pub const DIGEST_ANNOTATION: &str = "kubefn.dev/secrets-digest";
const VOLUME: &str = "secrets";

/// The Secret with the function's secrets' values.
pub fn secret_name(base: &str) -> String {
    format!("{base}-secrets")
}

/// The Secret with the registry credentials.
pub fn registry_secret_name(base: &str) -> String {
    format!("{base}-registry")
}

/// An object that never prints its data: manifests are logged.
#[derive(Clone, PartialEq)]
pub struct SecretObject(pub Secret);

impl std::fmt::Debug for SecretObject {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_tuple("SecretObject").field(&self.0.metadata.name).finish()
    }
}

/// The Secret of the instance's secret values, if its function names any.
pub fn values(instance: &InstanceSpec, namespace: &str, base: &str) -> Option<SecretObject> {
    if instance.secrets.is_empty() {
        return None;
    }
    let data: BTreeMap<String, ByteString> =
        instance.secrets.iter().map(|secret| (secret.name.clone(), ByteString(secret.value.clone()))).collect();
    Some(object(instance, namespace, &secret_name(base), "Opaque", data))
}

/// The Secret of the instance's registry credentials, if it has any.
pub fn registry(instance: &InstanceSpec, namespace: &str, base: &str) -> Option<SecretObject> {
    let credentials = instance.registry_credentials.as_ref()?;
    let data = BTreeMap::from([(".dockerconfigjson".to_string(), ByteString(credentials.value.clone()))]);
    Some(object(instance, namespace, &registry_secret_name(base), "kubernetes.io/dockerconfigjson", data))
}

fn object(
    instance: &InstanceSpec,
    namespace: &str,
    name: &str,
    kind: &str,
    data: BTreeMap<String, ByteString>,
) -> SecretObject {
    let metadata = serde_json::from_value(metadata(instance, namespace, name, None)).unwrap_or_default();
    SecretObject(Secret { metadata, type_: Some(kind.to_string()), data: Some(data), ..Secret::default() })
}

/// Gives `pod` (a pod spec whose first container is the function's) the instance's secrets:
/// the volume and its mount, the variables, `KUBEFN_SECRETS_DIR`, the pull secret; and the
/// digest annotation to `template_annotations`.
pub fn deliver(instance: &InstanceSpec, base: &str, pod: &mut Value, template_annotations: &mut Value) {
    if let Some(container) = pod["containers"].get_mut(0).filter(|c| c["name"] == CONTAINER)
        && !instance.secrets.is_empty()
    {
        let name = secret_name(base);
        push(&mut container["volumeMounts"], json!({ "name": VOLUME, "mountPath": SECRETS_DIR, "readOnly": true }));
        push(&mut container["env"], json!({ "name": "KUBEFN_SECRETS_DIR", "value": SECRETS_DIR }));
        for secret in &instance.secrets {
            if let Some(env) = &secret.env {
                let from = json!({ "secretKeyRef": { "name": name, "key": secret.name } });
                push(&mut container["env"], json!({ "name": env, "valueFrom": from }));
            }
        }
        // Readable by whatever user an image runs as: only this pod mounts it.
        push(&mut pod["volumes"], json!({ "name": VOLUME, "secret": { "secretName": name, "defaultMode": 0o444 } }));
    }
    if instance.registry_credentials.is_some() {
        pod["imagePullSecrets"] = json!([{ "name": registry_secret_name(base) }]);
    }
    if !instance.secrets.is_empty() || instance.registry_credentials.is_some() {
        let mut all = instance.secrets.clone();
        all.extend(instance.registry_credentials.clone());
        template_annotations[DIGEST_ANNOTATION] = json!(secrets_digest(&all));
    }
}

fn push(list: &mut Value, item: Value) {
    match list.as_array_mut() {
        Some(items) => items.push(item),
        None => *list = json!([item]),
    }
}
