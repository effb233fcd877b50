//! What kubefn must be allowed to do, checked at start-up with SelfSubjectAccessReviews (the
//! apiserver's own answer, whatever the authorizer), so a missing permission is reported by
//! verb and resource before anything is deployed rather than as a failure later.

use super::{KubernetesConfig, KubernetesError};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;

/// `(group, resource, verbs)` kubefn needs where instances live.
pub const NEEDED: &[(&str, &str, &[&str])] = &[
    ("", "configmaps", &["get", "list", "create", "patch", "delete", "deletecollection"]),
    ("", "services", &["get", "list", "watch", "create", "patch", "delete", "deletecollection"]),
    ("", "pods", &["get", "list", "watch", "delete", "deletecollection"]),
    ("", "pods/log", &["get"]),
    ("", "events", &["list", "watch"]),
    ("apps", "deployments", &["get", "list", "watch", "create", "patch", "delete", "deletecollection"]),
    ("apps", "deployments/scale", &["patch"]),
    ("apps", "replicasets", &["list"]),
    ("autoscaling", "horizontalpodautoscalers", &["get", "list", "watch", "create", "patch", "delete", "deletecollection"]),
    ("networking.k8s.io", "networkpolicies", &["get", "create", "patch"]),
];

/// Whether kubefn may `verb` the `resource` (`name` or `name/subresource`) of `group`.
pub async fn may(client: &Client, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    allowed(client, verb, group, resource, namespace).await.unwrap_or(false)
}

async fn allowed(client: &Client, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Result<bool, kube::Error> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Checks every permission kubefn needs with this configuration.
pub async fn check(client: &Client, config: &KubernetesConfig) -> Result<(), KubernetesError> {
    // Per-user namespaces are created on demand, so kubefn needs its rights in all of them.
    let namespace = if config.user_namespace_prefix.is_some() { None } else { Some(config.namespace.as_str()) };
    let mut needed: Vec<(&str, &str, Vec<&str>)> = NEEDED.iter().map(|(g, r, v)| (*g, *r, v.to_vec())).collect();
    if !config.in_cluster {
        needed.push(("", "pods/portforward", vec!["create"]));
    }
    for (group, resource, verbs) in &needed {
        for verb in verbs {
            let ok = allowed(client, verb, group, resource, namespace)
                .await
                .map_err(|source| KubernetesError::Api { action: "review kubefn's permissions (SelfSubjectAccessReview)".into(), source })?;
            if !ok {
                return Err(forbidden(verb, group, resource, namespace));
            }
        }
    }
    if config.user_namespace_prefix.is_some() {
        for verb in ["get", "create", "patch"] {
            if !may(client, verb, "", "namespaces", None).await {
                return Err(forbidden(verb, "", "namespaces", None));
            }
        }
    }
    Ok(())
}

fn forbidden(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> KubernetesError {
    let resource = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    let where_ = namespace.map(|n| format!(" in namespace {n}")).unwrap_or_else(|| " in every namespace".into());
    KubernetesError::Forbidden { verb: verb.into(), resource, where_ }
}
