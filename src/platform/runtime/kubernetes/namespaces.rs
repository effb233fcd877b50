//! Namespaces kubefn makes or keeps: the shared one and per-user ones, each with its
//! NetworkPolicy; per user also a RoleBinding, a LimitRange and a ResourceQuota.

use super::*;

/// Creates `namespace` when missing (labelled as kubefn's, with its user when per user).
pub(super) async fn ensure_namespace(
    client: &Client,
    namespace: &str,
    user: Option<&str>,
) -> Result<(), KubernetesError> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        // Without the right to read namespaces the shared one is assumed to exist (k8s/ makes it);
        // the first apply says so clearly if not.
        Err(kube::Error::Api(status)) if status.code == 403 && user.is_none() => return Ok(()),
        Err(source) => return Err(KubernetesError::Namespace { namespace: namespace.into(), source }),
    }
    let mut labels = names::platform_labels("namespace");
    labels.insert(names::POD_SECURITY.to_string(), names::POD_SECURITY_LEVEL.to_string());
    if let Some(user) = user {
        labels.insert(names::NAMESPACE_USER.to_string(), user.to_string());
    }
    let body = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace, "labels": labels } });
    api.patch(namespace, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| KubernetesError::Namespace { namespace: namespace.into(), source })?;
    Ok(())
}

/// Applies the NetworkPolicy [`names::ISOLATION_POLICY`] to `namespace` (see
/// [`manifests::isolation_policy`]): function pods reach neither each other, nor kubefn, nor the
/// apiserver or cloud metadata, wherever the cluster's network plugin enforces policies.
pub(super) async fn isolate_namespace(
    client: &Client,
    config: &KubernetesConfig,
    namespace: &str,
) -> Result<(), KubernetesError> {
    let policy = manifests::isolation_policy(namespace, &config.network, &config.pods.packages);
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    api.patch(names::ISOLATION_POLICY, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&policy))
        .await
        .map_err(api_error(format!("apply NetworkPolicy {namespace}/{}", names::ISOLATION_POLICY)))?;
    Ok(())
}

impl Inner {
    /// Makes `user`'s namespace ready, once (and again when their quota changes): the namespace,
    /// the RoleBinding that gives kubefn its rights there and only there, the NetworkPolicy, a
    /// LimitRange and a ResourceQuota from the user's kubefn quota.
    pub(super) async fn prepare_user_namespace(
        &self,
        namespace: &str,
        user: &str,
        quota: Option<Quota>,
    ) -> Result<(), KubernetesError> {
        if self.user_namespaces.lock().get(namespace) == Some(&quota) {
            return Ok(());
        }
        ensure_namespace(&self.client, namespace, Some(user)).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let objects = names::USER_NAMESPACE_OBJECTS;
        let binding = manifests::user_namespace_binding(
            namespace,
            (&self.config.network.system_namespace, &self.config.service_account),
        );
        Api::<RoleBinding>::namespaced(self.client.clone(), namespace)
            .patch(objects, &params, &Patch::Apply(&binding))
            .await
            .map_err(api_error(format!("apply RoleBinding {namespace}/{objects}")))?;
        // The apiserver's authorizer sees a new binding within moments: wait for it rather than
        // fail the first objects with 403.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !access::may(&self.client, "patch", "networking.k8s.io", "networkpolicies", Some(namespace)).await {
            if Instant::now() > deadline {
                return Err(KubernetesError::Forbidden {
                    verb: "patch".into(),
                    resource: "networkpolicies.networking.k8s.io".into(),
                    where_: format!(
                        " in namespace {namespace} (is the ClusterRole {} of k8s/per-user-namespaces/ applied?)",
                        names::USER_NAMESPACE_ROLE
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        isolate_namespace(&self.client, &self.config, namespace).await?;
        Api::<LimitRange>::namespaced(self.client.clone(), namespace)
            .patch(objects, &params, &Patch::Apply(&manifests::user_namespace_limits(namespace)))
            .await
            .map_err(api_error(format!("apply LimitRange {namespace}/{objects}")))?;
        if let Some(quota) = &quota {
            Api::<ResourceQuota>::namespaced(self.client.clone(), namespace)
                .patch(objects, &params, &Patch::Apply(&manifests::user_namespace_quota(namespace, quota)))
                .await
                .map_err(api_error(format!("apply ResourceQuota {namespace}/{objects}")))?;
        }
        self.user_namespaces.lock().insert(namespace.to_string(), quota);
        Ok(())
    }
}
