//! What kubefn must be allowed to do, checked at start-up with SelfSubjectAccessReviews (the
//! apiserver's own answer, whatever the authorizer), so a missing permission is reported by
//! verb and resource before anything is deployed rather than as a failure later.

use super::{KubernetesConfig, KubernetesError, names};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// `(group, resource, verbs)` kubefn needs where instances live.
pub const NEEDED: &[(&str, &str, &[&str])] = &[
    ("", "configmaps", &["get", "list", "create", "patch", "delete", "deletecollection"]),
    ("", "services", &["get", "list", "watch", "create", "patch", "delete", "deletecollection"]),
    ("", "pods", &["get", "list", "watch", "delete", "deletecollection"]),
    ("", "pods/log", &["get"]),
    ("", "secrets", &["get", "create", "patch", "delete", "deletecollection"]),
    ("", "events", &["list", "watch"]),
    ("apps", "deployments", &["get", "list", "watch", "create", "patch", "delete", "deletecollection"]),
    ("apps", "deployments/scale", &["patch"]),
    ("apps", "replicasets", &["list"]),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        &["get", "list", "watch", "create", "patch", "delete", "deletecollection"],
    ),
    ("networking.k8s.io", "networkpolicies", &["get", "create", "patch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
];

/// What kubefn needs cluster-wide with per-user namespaces: its watchers read its labelled
/// objects in every namespace, it makes the namespaces, and it binds [`names::USER_NAMESPACE_ROLE`]
/// in each (with `bind` on that ClusterRole alone); every write right comes from that binding.
pub const NEEDED_PER_USER: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["get", "list", "watch"]),
    ("", "services", &["get", "list", "watch"]),
    ("", "events", &["list", "watch"]),
    ("", "namespaces", &["get", "create", "patch"]),
    ("apps", "deployments", &["get", "list", "watch"]),
    ("apps", "replicasets", &["list"]),
    ("autoscaling", "horizontalpodautoscalers", &["get", "list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("rbac.authorization.k8s.io", "rolebindings", &["get", "create", "patch"]),
];

/// Whether kubefn may `verb` the `resource` (`name` or `name/subresource`) of `group`.
pub async fn may(client: &Client, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    allowed(client, verb, group, resource, namespace, None).await.unwrap_or(false)
}

async fn allowed(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool, kube::Error> {
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
                name: name.map(str::to_string),
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
    let review = |verb: &str, group: &str, resource: &str, namespace: Option<&str>, name: Option<&str>| {
        let (verb, group, resource) = (verb.to_string(), group.to_string(), resource.to_string());
        let (namespace, name) = (namespace.map(str::to_string), name.map(str::to_string));
        async move {
            let ok = allowed(client, &verb, &group, &resource, namespace.as_deref(), name.as_deref()).await.map_err(
                |source| KubernetesError::Api {
                    action: "review kubefn's permissions (SelfSubjectAccessReview)".into(),
                    source,
                },
            )?;
            if ok { Ok(()) } else { Err(forbidden(&verb, &group, &resource, namespace.as_deref())) }
        }
    };
    if config.user_namespace_prefix.is_some() {
        for (group, resource, verbs) in NEEDED_PER_USER {
            for verb in *verbs {
                review(verb, group, resource, None, None).await?;
            }
        }
        return review("bind", "rbac.authorization.k8s.io", "clusterroles", None, Some(names::USER_NAMESPACE_ROLE))
            .await;
    }
    let namespace = Some(config.namespace.as_str());
    let mut needed: Vec<(&str, &str, Vec<&str>)> = NEEDED.iter().map(|(g, r, v)| (*g, *r, v.to_vec())).collect();
    if !config.in_cluster {
        needed.push(("", "pods/portforward", vec!["create"]));
    }
    for (group, resource, verbs) in &needed {
        for verb in verbs {
            review(verb, group, resource, namespace, None).await?;
        }
    }
    Ok(())
}

fn forbidden(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> KubernetesError {
    let resource = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    let where_ = namespace.map(|n| format!(" in namespace {n}")).unwrap_or_else(|| " in every namespace".into());
    KubernetesError::Forbidden { verb: verb.into(), resource, where_ }
}
