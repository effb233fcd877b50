//! Names, labels and selectors of an instance's Kubernetes objects: objects are named
//! `{function}-{user}` when that cannot be read two ways, else with a short hash of the pair
//! (see [`base_name`]), and labelled
//! `app.kubernetes.io/managed-by=kubefn`, `kubefn.dev/function`, `kubefn.dev/user`,
//! `kubefn.dev/version`, plus `kubefn.dev/instance` (the instance's id), which is how kubefn
//! finds an instance's objects again and deletes them all. They also carry Kubernetes'
//! recommended `app.kubernetes.io/*` labels ([`APP_NAME`] and the rest), which kubectl users and
//! dashboards filter on; kubefn never selects by those. Pure functions, no client.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The ClusterRole (shipped in `k8s/per-user-namespaces/`) kubefn binds in each user namespace it
/// makes: its rights on instance objects there and nowhere else.
pub const USER_NAMESPACE_ROLE: &str = "kubefn-user-namespace";
/// The RoleBinding, ResourceQuota and LimitRange kubefn keeps in each user namespace.
pub const USER_NAMESPACE_OBJECTS: &str = "kubefn";
/// The NetworkPolicy kubefn keeps in each namespace with functions.
pub const ISOLATION_POLICY: &str = "kubefn-isolation";
/// The label Kubernetes gives every namespace, its own name.
pub const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
/// The label of the cluster DNS pods (CoreDNS and kube-dns alike), which function pods may ask.
pub const DNS_POD: (&str, &str) = ("k8s-app", "kube-dns");
/// `app.kubernetes.io/managed-by`: every object kubefn creates carries it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "kubefn";
/// `app.kubernetes.io/name`: the function's name on an instance's objects, `kubefn` on the objects
/// kubefn keeps for a namespace.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the instance's base name ([`base_name`], `{function}-{user}`).
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/version`: the function version the instance is set to run (kubefn's own
/// version on the objects it keeps for a namespace).
pub const APP_VERSION: &str = "app.kubernetes.io/version";
/// `app.kubernetes.io/component`: [`FUNCTION_COMPONENT`] on an instance's objects.
pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/part-of`: always [`MANAGER`], the platform every function is part of.
pub const APP_PART_OF: &str = "app.kubernetes.io/part-of";
/// The [`APP_COMPONENT`] of an instance's objects.
pub const FUNCTION_COMPONENT: &str = "function";
/// The function's name.
pub const FUNCTION: &str = "kubefn.dev/function";
/// The user's name.
pub const USER: &str = "kubefn.dev/user";
/// The version a ConfigMap holds or a pod runs.
pub const VERSION: &str = "kubefn.dev/version";
/// The instance's id: selects every object of one instance.
pub const INSTANCE: &str = "kubefn.dev/instance";
/// Annotation on the Deployment: the instance is paused (zero replicas on purpose).
pub const PAUSED: &str = "kubefn.dev/paused";
/// Annotation on the Deployment: the desired version's fingerprint (what was applied last).
pub const FINGERPRINT: &str = "kubefn.dev/fingerprint";
/// Annotation on an instance's Deployment: when a kubefn process last saw a request for it
/// (RFC 3339). With several kubefn processes each serves part of the traffic; none may scale to
/// zero an instance another keeps busy.
pub const LAST_REQUEST: &str = "kubefn.dev/last-request";
/// The Pod Security admission label every namespace kubefn creates carries, with
/// [`POD_SECURITY_LEVEL`]: function pods already meet the restricted profile, so anything that
/// does not (a privileged pod, a host path) is refused there by the apiserver itself.
pub const POD_SECURITY: &str = "pod-security.kubernetes.io/enforce";
/// The value of [`POD_SECURITY`].
pub const POD_SECURITY_LEVEL: &str = "restricted";
/// The label namespaces kubefn creates for users carry (with the user's name).
pub const NAMESPACE_USER: &str = "kubefn.dev/namespace-of";

/// The longest base name: room for `-v{version}` on ConfigMaps within 63 characters.
pub const MAX_BASE: usize = 47;

/// The base name of an instance's objects: `{function}-{user}` when neither name has a dash
/// and it fits [`MAX_BASE`]. Otherwise `{function}-{user}` (cut to fit) and a hash of the
/// *pair*: with a dash in either name the joined form can be read two ways (user `resize-bob`'s
/// function `image` and user `bob`'s function `image-resize` both give `image-resize-bob`), and
/// one user's objects must never be another's. Function and user names are DNS labels starting
/// with a letter (validated at registration), so the result is a DNS-1035 label, as Service
/// names must be.
pub fn base_name(function: &str, user: &str) -> String {
    let full = format!("{function}-{user}");
    if full.len() <= MAX_BASE && !function.contains('-') && !user.contains('-') {
        return full;
    }
    // '/' appears in neither name, so the hash tells every pair apart.
    let hash: String =
        Sha256::digest(format!("{function}/{user}").as_bytes()).iter().take(3).map(|b| format!("{b:02x}")).collect();
    let keep = (MAX_BASE - hash.len() - 1).min(full.len());
    let start = full[..keep].trim_end_matches('-');
    format!("{start}-{hash}")
}

/// The ConfigMap holding one version's source and bootstrap.
pub fn config_map_name(base: &str, version: u32) -> String {
    format!("{base}-v{version}")
}

/// The namespace of a user's instances when every user has their own.
pub fn user_namespace(prefix: &str, user: &str) -> String {
    format!("{prefix}{user}")
}

/// The labels that select every object (and pod) of one instance.
pub fn instance_selector(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.to_string(), MANAGER.to_string()), (INSTANCE.to_string(), instance.to_string())])
}

/// [`instance_selector`] as a label selector string.
pub fn instance_selector_text(instance: &str) -> String {
    selector_text(&instance_selector(instance))
}

/// Every object kubefn manages.
pub fn managed_selector_text() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Every object of one function, across users.
pub fn function_selector_text(function: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{FUNCTION}={function}")
}

/// Every object of one user, across functions.
pub fn user_selector_text(user: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{USER}={user}")
}

/// The full label set of an instance's objects: `desired` is the version the instance is set to
/// run; `holds` the one version an object holds or runs (a ConfigMap, a pod), where one is meant.
pub fn labels(
    instance: &str,
    function: &str,
    user: &str,
    desired: u32,
    holds: Option<u32>,
) -> BTreeMap<String, String> {
    let mut labels = instance_selector(instance);
    labels.insert(FUNCTION.to_string(), function.to_string());
    labels.insert(USER.to_string(), user.to_string());
    if let Some(version) = holds {
        labels.insert(VERSION.to_string(), version.to_string());
    }
    labels.insert(APP_NAME.to_string(), function.to_string());
    labels.insert(APP_INSTANCE.to_string(), base_name(function, user));
    labels.insert(APP_VERSION.to_string(), desired.to_string());
    labels.insert(APP_COMPONENT.to_string(), FUNCTION_COMPONENT.to_string());
    labels.insert(APP_PART_OF.to_string(), MANAGER.to_string());
    labels
}

/// The labels of an object kubefn keeps for a whole namespace (the namespace itself, its
/// isolation policy, quota, limits, role binding, package CA), `component` saying which.
pub fn platform_labels(component: &str) -> BTreeMap<String, String> {
    [
        (MANAGED_BY, MANAGER),
        (APP_NAME, MANAGER),
        (APP_INSTANCE, MANAGER),
        (APP_VERSION, env!("CARGO_PKG_VERSION")),
        (APP_COMPONENT, component),
        (APP_PART_OF, MANAGER),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

fn selector_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Whether `text` is a DNS-1123 label (what object names and label values here must be).
pub fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `text` is a valid label value (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends).
pub fn is_label_value(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_function_dash_user() {
        assert_eq!(base_name("hello", "alice"), "hello-alice");
        assert_eq!(config_map_name("hello-alice", 3), "hello-alice-v3");
    }

    #[test]
    fn the_longest_names_are_cut_with_a_hash_and_stay_distinct() {
        let function = format!("f{}", "a".repeat(39));
        let first = base_name(&function, &format!("u{}", "b".repeat(19)));
        let second = base_name(&function, &format!("u{}", "c".repeat(19)));
        for name in [&first, &second] {
            assert!(name.len() <= MAX_BASE, "{name}");
            assert!(is_dns1123_label(name), "{name}");
            assert!(name.starts_with('f'), "Service names must start with a letter: {name}");
            assert!(is_dns1123_label(&config_map_name(name, 999_999)), "{name}");
        }
        assert_ne!(first, second);
    }

    #[test]
    fn names_that_join_alike_stay_apart() {
        // User `resize-bob`'s function `image` and user `bob`'s function `image-resize`.
        let (first, second) = (base_name("image", "resize-bob"), base_name("image-resize", "bob"));
        assert_ne!(first, second);
        for name in [&first, &second] {
            assert!(name.starts_with("image-resize-bob-"), "still readable: {name}");
            assert!(is_dns1123_label(name) && name.len() <= MAX_BASE, "{name}");
        }
        assert_eq!(base_name("image", "resize-bob"), first, "stable");
    }

    #[test]
    fn a_cut_never_leaves_a_dash_before_the_hash() {
        // 40 characters then '-' at the cut position.
        let function = format!("{}-{}", "a".repeat(39), "b");
        let name = base_name(&function, "someone-with-a-name");
        assert!(!name.contains("--"), "{name}");
        assert!(is_dns1123_label(&name), "{name}");
    }

    #[test]
    fn labels_are_valid_and_selectors_are_subsets_of_them() {
        let id = "0b6c9f52-5a0e-4f7e-9d4e-0c1b2a3d4e5f";
        let labels = labels(id, "a-very-long-function-name-of-forty-chars", "and-a-long-user-name", 12, Some(12));
        for (key, value) in &labels {
            assert!(is_label_value(value), "{key}={value}");
        }
        for (key, value) in instance_selector(id) {
            assert_eq!(labels.get(&key), Some(&value));
        }
        assert_eq!(instance_selector_text(id), format!("app.kubernetes.io/managed-by=kubefn,kubefn.dev/instance={id}"));
        assert_eq!(user_selector_text("alice"), "app.kubernetes.io/managed-by=kubefn,kubefn.dev/user=alice");
    }

    #[test]
    fn label_values_are_checked() {
        assert!(is_label_value("v1.2_3-x"));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(!is_dns1123_label("Hello"));
    }
}
