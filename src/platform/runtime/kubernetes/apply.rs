//! Applying an instance's objects by server-side apply, keeping its slot, and deleting them.

use super::*;

impl Inner {
    pub(super) async fn apply(self: &Arc<Self>, spec: InstanceSpec, force: bool) -> Result<(), KubernetesError> {
        let namespace = self.namespace_of(&spec.user);
        if self.config.user_namespace_prefix.is_some() {
            self.prepare_user_namespace(&namespace, &spec.user, spec.user_quota).await?;
        }
        let (name, fingerprint, unchanged) = match self.applied_from(&spec, &namespace).filter(|_| !force) {
            Some((name, fingerprint)) => (name, fingerprint, true),
            None => {
                let manifests = manifests::build(&spec, &namespace, &self.config.pods, spec.node_port)?;
                let unchanged = {
                    let slots = self.slots.lock();
                    slots.get(&spec.id).is_some_and(|s| s.fingerprint == manifests.fingerprint)
                        && self.cluster.deployment_of(&spec.id).is_some()
                };
                if !unchanged || force {
                    self.apply_objects(&namespace, &manifests, &spec).await?;
                }
                (manifests.name, manifests.fingerprint, unchanged)
            }
        };
        self.ensure_slot(&spec, &namespace, &name, &fingerprint).await;
        self.set_replicas(&namespace, &name, &spec).await?;
        if !unchanged {
            self.prune_config_maps(&namespace, &spec).await;
        }
        Ok(())
    }

    /// Serves an instance another kubefn process applies: its slot (route, port-forward) once
    /// its Deployment is in the cluster, writing nothing there. The slot keeps no fingerprint,
    /// so should this process lead later, its first pass applies the objects rather than take
    /// them for applied (the leader that stopped may not have rolled out the newest spec).
    pub(super) async fn serve(self: &Arc<Self>, spec: InstanceSpec) -> Result<(), KubernetesError> {
        let namespace = self.namespace_of(&spec.user);
        let served =
            self.slots.lock().get(&spec.id).is_some_and(|slot| slot.spec == spec && slot.namespace == namespace);
        if served || self.cluster.deployment_of(&spec.id).is_none() {
            return Ok(());
        }
        let manifests = manifests::build(&spec, &namespace, &self.config.pods, spec.node_port)?;
        self.ensure_slot(&spec, &namespace, &manifests.name, "").await;
        Ok(())
    }

    /// The name and fingerprint of the objects the instance's slot holds, when they were applied
    /// from exactly `spec` in `namespace` and its Deployment is there. The objects follow from
    /// those two alone (kubefn's pod settings never change while it runs), so there is nothing
    /// to build: building and hashing them was most of a reconcile pass's time per instance.
    fn applied_from(&self, spec: &InstanceSpec, namespace: &str) -> Option<(String, String)> {
        let applied = {
            let slots = self.slots.lock();
            let slot = slots
                .get(&spec.id)
                .filter(|slot| slot.spec == *spec && slot.namespace == namespace && !slot.fingerprint.is_empty())?;
            (slot.name.clone(), slot.fingerprint.clone())
        };
        self.cluster.deployment_of(&spec.id).is_some().then_some(applied)
    }

    pub(super) async fn apply_objects(
        &self,
        namespace: &str,
        m: &manifests::Manifests,
        spec: &InstanceSpec,
    ) -> Result<(), KubernetesError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        // Server-side apply with force would take over any object of the name: first make sure
        // each one is this instance's, or not there.
        let taken = |kind: &'static str, name: &str| KubernetesError::Taken {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        if let Some(kind) = self.cluster.taken_by_other(namespace, &m.name, &spec.id) {
            return Err(taken(kind, &m.name));
        }
        if !spec.spec.requirements.trim().is_empty()
            && let Some(package_ca) = manifests::package_ca(namespace, &self.config.pods.packages)
        {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let name = manifests::PACKAGE_CA_CONFIG_MAP;
            api.patch(name, &params, &Patch::Apply(&package_ca))
                .await
                .map_err(api_error(format!("apply ConfigMap {namespace}/{name}")))?;
        }
        if let Some(config_map) = &m.config_map {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            let name = names::config_map_name(&m.name, spec.version);
            // Immutable: once there, a version's ConfigMap is left as it is (if it is this
            // instance's: another's would run its code with this instance's settings).
            match api.get_opt(&name).await.map_err(api_error(format!("read ConfigMap {namespace}/{name}")))? {
                None => {
                    api.patch(&name, &params, &Patch::Apply(config_map))
                        .await
                        .map_err(api_error(format!("apply ConfigMap {namespace}/{name}")))?;
                }
                Some(existing)
                    if cluster::instance_label(existing.metadata.labels.as_ref()) == Some(spec.id.as_str()) => {}
                Some(_) => return Err(taken("ConfigMap", &name)),
            }
        }
        // Before the Deployment, so its pods find the Secrets they mount.
        let secret_names = [manifests::secret_name(&m.name), manifests::registry_secret_name(&m.name)];
        for (object, name) in [&m.secret, &m.registry_secret].into_iter().zip(&secret_names) {
            self.apply_secret(namespace, name, object.as_ref().map(|o| &o.0), &spec.id).await?;
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        deployments
            .patch(&m.name, &params, &Patch::Apply(&m.deployment))
            .await
            .map_err(api_error(format!("apply Deployment {namespace}/{}", m.name)))?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        match services.patch(&m.name, &params, &Patch::Apply(&m.service)).await {
            Ok(_) => {}
            // The node port kept from before is taken (a new cluster): let Kubernetes pick one.
            Err(kube::Error::Api(status)) if status.code == 422 && spec.node_port.is_some() => {
                let fresh = manifests::build(
                    &InstanceSpec { node_port: None, ..spec.clone() },
                    namespace,
                    &self.config.pods,
                    None,
                )?;
                services
                    .patch(&m.name, &params, &Patch::Apply(&fresh.service))
                    .await
                    .map_err(api_error(format!("apply Service {namespace}/{}", m.name)))?;
            }
            Err(source) => {
                return Err(KubernetesError::Api { action: format!("apply Service {namespace}/{}", m.name), source });
            }
        }
        let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), namespace);
        match &m.autoscaler {
            Some(hpa) => {
                autoscalers
                    .patch(&m.name, &params, &Patch::Apply(hpa))
                    .await
                    .map_err(api_error(format!("apply HorizontalPodAutoscaler {namespace}/{}", m.name)))?;
            }
            None => match autoscalers.delete(&m.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(KubernetesError::Api {
                        action: format!("delete HorizontalPodAutoscaler {namespace}/{}", m.name),
                        source,
                    });
                }
            },
        }
        self.remove_renamed(namespace, &m.name, &spec.id).await;
        Ok(())
    }

    /// Applies the instance's Secret `name`, or deletes it when `object` is `None` (its
    /// function names no secrets any more). A Secret of that name that is not this instance's
    /// (an administrator's) is never taken over.
    async fn apply_secret(
        &self,
        namespace: &str,
        name: &str,
        object: Option<&k8s_openapi::api::core::v1::Secret>,
        id: &str,
    ) -> Result<(), KubernetesError> {
        let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), namespace);
        let existing =
            api.get_metadata_opt(name).await.map_err(api_error(format!("read Secret {namespace}/{name}")))?;
        let ours = existing.as_ref().map(|e| cluster::instance_label(e.metadata.labels.as_ref()) == Some(id));
        match (object, ours) {
            (_, Some(false)) => {
                Err(KubernetesError::Taken { kind: "Secret", namespace: namespace.to_string(), name: name.to_string() })
            }
            (Some(object), _) => {
                api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
                    .await
                    .map_err(api_error(format!("apply Secret {namespace}/{name}")))?;
                Ok(())
            }
            (None, Some(true)) => match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(source) => {
                    Err(KubernetesError::Api { action: format!("delete Secret {namespace}/{name}"), source })
                }
            },
            (None, None) => Ok(()),
        }
    }

    /// Deletes the instance's Deployments, Services and HPAs of another name than `name`: what
    /// an older kubefn named differently (see [`names::base_name`]) goes once the new ones are
    /// there. Best effort; the next apply tries again.
    pub(super) async fn remove_renamed(&self, namespace: &str, name: &str, id: &str) {
        let params = ListParams::default().labels(&names::instance_selector_text(id));
        macro_rules! sweep {
            ($kind:ty) => {{
                let api: Api<$kind> = Api::namespaced(self.client.clone(), namespace);
                if let Ok(list) = api.list_metadata(&params).await {
                    for old in list.items.into_iter().filter_map(|o| o.metadata.name).filter(|n| n != name) {
                        tracing::info!(instance = %id, object = %old, "removing an object kubefn named differently before");
                        let _ = api.delete(&old, &DeleteParams::background()).await;
                    }
                }
            }};
        }
        sweep!(Deployment);
        sweep!(Service);
        sweep!(HorizontalPodAutoscaler);
    }

    /// Replicas are set through the scale subresource, never by the applied Deployment: paused
    /// means 0 (which also suspends the HPA); with an HPA only a Deployment at zero is woken.
    pub(super) async fn set_replicas(
        &self,
        namespace: &str,
        name: &str,
        spec: &InstanceSpec,
    ) -> Result<(), KubernetesError> {
        let current = self.cluster.deployment_of(&spec.id).and_then(|d| d.spec.as_ref().and_then(|s| s.replicas));
        let wanted = replicas_to_set(&spec.spec, spec.paused, spec.replicas, current);
        if let Some(wanted) = wanted {
            self.scale_deployment(namespace, name, wanted).await?;
        }
        Ok(())
    }

    /// Writes a Deployment's replica count through its scale subresource (nothing else of it
    /// changes, and an HPA takes over from there).
    pub(super) async fn scale_deployment(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
    ) -> Result<(), KubernetesError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error(format!("scale Deployment {namespace}/{name} to {replicas}")))?;
        Ok(())
    }

    /// Keeps the instance's slot: its spec, the name and fingerprint of its objects, and its
    /// port-forward (bound now if it has none).
    pub(super) async fn ensure_slot(
        self: &Arc<Self>,
        spec: &InstanceSpec,
        namespace: &str,
        name: &str,
        fingerprint: &str,
    ) {
        let (fresh, needs_forward) = {
            let mut slots = self.slots.lock();
            let fresh = !slots.contains_key(&spec.id);
            let slot = slots.entry(spec.id.clone()).or_insert_with(|| Slot {
                namespace: namespace.to_string(),
                name: name.to_string(),
                spec: spec.clone(),
                fingerprint: String::new(),
                forward: None,
                traffic: None,
                endpoints: watch::channel(Vec::new()).0,
            });
            // Most passes bring the spec the slot has: no copy of the function's source then.
            if slot.spec != *spec {
                slot.spec = spec.clone();
            }
            if slot.fingerprint != fingerprint {
                slot.fingerprint = fingerprint.to_string();
            }
            let served = spec.spec.service.kind != crate::platform::model::ServiceKind::ExternalName;
            if self.config.in_cluster && served && slot.traffic.is_none() {
                // Inside the cluster kubefn dials the pods itself (see `connect`); requests
                // counted here wake the instance and keep it from idling to zero.
                let traffic = Arc::new(Traffic::default());
                slot.traffic = Some(traffic.clone());
                self.wake_on_demand(traffic, spec.id.clone());
            }
            (fresh, slot.forward.is_none() && !self.config.in_cluster && served)
        };
        if fresh {
            // Pods that were ready before the slot existed (kubefn restarted) changed no pod
            // since: read them now rather than at the next pod change.
            self.refresh_endpoints();
        }
        if !needs_forward {
            return;
        }
        let port = manifests::container_port(&spec.spec);
        let dial = PodDial { pods: Api::namespaced(self.client.clone(), namespace), port };
        let receiver = self.slots.lock().get(&spec.id).map(|s| s.endpoints.subscribe());
        let Some(receiver) = receiver else { return };
        match ForwardingPort::bind_in_range_with(
            self.config.forward_host,
            self.config.forward_ports.clone(),
            receiver,
            dial,
            self.config.hold,
        )
        .await
        {
            Ok(forward) => {
                let traffic = forward.traffic();
                if let Some(slot) = self.slots.lock().get_mut(&spec.id) {
                    slot.forward = Some(forward);
                    slot.traffic = Some(traffic.clone());
                }
                self.wake_on_demand(traffic, spec.id.clone());
                self.refresh_endpoints();
            }
            Err(error) => {
                tracing::warn!(instance = %spec.id, error = %crate::platform::error_chain(&error), "no port-forward for the instance")
            }
        }
    }

    /// Deletes the ConfigMaps of versions neither desired nor run by a pod.
    pub(super) async fn prune_config_maps(&self, namespace: &str, spec: &InstanceSpec) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let Ok(list) = api.list(&ListParams::default().labels(&names::instance_selector_text(&spec.id))).await else {
            return;
        };
        let running = self.cluster.pod_versions(&spec.id);
        for config_map in list {
            let version = status::version_of(config_map.metadata.labels.as_ref());
            if version.is_some_and(|v| v != spec.version && !running.contains(&v))
                && let Some(name) = config_map.metadata.name
            {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
        }
    }

    pub(super) async fn delete_in(&self, namespace: &str, selector: &str) -> Result<(), KubernetesError> {
        let params = ListParams::default().labels(selector);
        let background = DeleteParams::background();
        macro_rules! sweep {
            ($kind:ty, $what:literal) => {{
                let api: Api<$kind> = Api::namespaced(self.client.clone(), namespace);
                api.delete_collection(&background, &params)
                    .await
                    .map_err(api_error(format!("delete the {} of {selector} in {namespace}", $what)))?;
            }};
        }
        sweep!(HorizontalPodAutoscaler, "HorizontalPodAutoscalers");
        sweep!(Deployment, "Deployments");
        sweep!(Service, "Services");
        sweep!(ConfigMap, "ConfigMaps");
        sweep!(k8s_openapi::api::core::v1::Secret, "Secrets");
        // Pods are removed by their ReplicaSet's garbage collection; deleting them directly as
        // well makes a delete quick even where the garbage collector is slow.
        sweep!(Pod, "Pods");
        Ok(())
    }

    /// Waits until nothing matching `selector` is left in `namespace` (ReplicaSets included).
    pub(super) async fn wait_gone(&self, namespace: &str, selector: &str, id: &str) -> Result<(), KubernetesError> {
        const WAIT: Duration = Duration::from_secs(60);
        let started = Instant::now();
        let params = ListParams::default().labels(selector).limit(1);
        loop {
            let mut left = 0;
            macro_rules! count {
                ($kind:ty) => {{
                    let api: Api<$kind> = Api::namespaced(self.client.clone(), namespace);
                    left += api
                        .list_metadata(&params)
                        .await
                        .map_err(api_error(format!("list what is left of {selector}")))?
                        .items
                        .len();
                }};
            }
            count!(Deployment);
            count!(k8s_openapi::api::apps::v1::ReplicaSet);
            count!(Pod);
            count!(Service);
            count!(ConfigMap);
            count!(HorizontalPodAutoscaler);
            if left == 0 {
                return Ok(());
            }
            if started.elapsed() > WAIT {
                return Err(KubernetesError::NotGone { id: id.into(), seconds: WAIT.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
