//! The [`Runtime`] trait over the cluster.

use super::*;
use crate::platform::runtime::forwarding::OpenTraffic;
use crate::platform::runtime::scale_to_zero::hold_until_ready;
use crate::platform::runtime::{Endpoint, Route};

#[async_trait::async_trait]
impl Runtime for KubernetesRuntime {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, _spec: &FunctionSpec) -> Result<(), RuntimeError> {
        // Python, Node and image functions all run in a cluster.
        Ok(())
    }

    async fn apply(&self, spec: InstanceSpec, mode: ApplyMode) -> Result<(), RuntimeError> {
        match mode {
            // The Deployment's scale alone: no other object changes, and the HPA (if any) takes
            // over from the count it is given.
            ApplyMode::SetReplicas if self.inner.locate(&spec.id).is_some() => self.set_replicas(&spec).await,
            ApplyMode::SetReplicas | ApplyMode::Reconcile => Ok(self.inner.apply(spec, false).await?),
            ApplyMode::Serve => Ok(self.inner.serve(spec).await?),
            ApplyMode::Retry => {
                let id = spec.id.clone();
                self.inner.apply(spec, true).await?;
                // Pods stuck in back-off restart at once rather than after the back-off.
                if let Some((namespace, _)) = self.inner.locate(&id) {
                    let api: Api<Pod> = Api::namespaced(self.inner.client.clone(), &namespace);
                    for pod in self.inner.cluster.stuck_pods(&id) {
                        let _ = api.delete(&pod, &DeleteParams::default()).await;
                    }
                }
                Ok(())
            }
        }
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let namespace = match self.inner.locate(id) {
            Some((namespace, _)) => namespace,
            None => return Ok(()),
        };
        let selector = names::instance_selector_text(id);
        self.inner.delete_in(&namespace, &selector).await?;
        let forward = self.inner.slots.lock().remove(id).and_then(|mut s| s.forward.take());
        if let Some(forward) = forward {
            forward.close().await;
        }
        self.inner.wait_gone(&namespace, &selector, id).await?;
        Ok(())
    }

    async fn release_all_but(&self, keep: &std::collections::HashSet<String>) {
        let forwards: Vec<_> = {
            let mut slots = self.inner.slots.lock();
            let gone: Vec<String> = slots.keys().filter(|id| !keep.contains(*id)).cloned().collect();
            gone.iter().filter_map(|id| slots.remove(id).and_then(|mut slot| slot.forward.take())).collect()
        };
        for forward in forwards {
            forward.close().await;
        }
    }

    fn ready_replicas(&self, id: &str) -> Option<u32> {
        // The slot's endpoints: its Service's ready endpoints, kept by the EndpointSlice watch.
        let ready = self.inner.slots.lock().get(id)?.endpoints.borrow().len();
        Some(u32::try_from(ready).unwrap_or(u32::MAX))
    }

    fn status(&self, id: &str) -> Option<RuntimeStatus> {
        let deployment = self.inner.cluster.deployment_of(id)?;
        let pods = self.inner.cluster.pods_of(id);
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let mut observed = status::observe(&deployment, &pod_refs);
        let slots = self.inner.slots.lock();
        let slot = slots.get(id);
        if let Some(slot) = slot
            && slot.spec.paused
            && observed.state != InstanceState::Paused
        {
            observed.state = InstanceState::Deploying;
            observed.message = "pausing".into();
        }
        let port_forward = slot.and_then(|s| s.forward.as_ref()).map(|f| f.address());
        let spec = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.resources.clone());
        let limits = match spec.and_then(|r| r.limits) {
            Some(limits) => {
                let text: Vec<String> = limits.iter().map(|(k, v)| format!("{k} {}", v.0)).collect();
                let metrics = if self.inner.metrics_available.load(std::sync::atomic::Ordering::Relaxed) {
                    ""
                } else {
                    "; usage not available: the cluster serves no metrics.k8s.io (install metrics-server)"
                };
                format!("limits enforced by the kubelet: {}{metrics}", text.join(", "))
            }
            None => String::new(),
        };
        Some(RuntimeStatus {
            state: observed.state,
            message: observed.message,
            serving_version: observed.serving_version,
            desired: observed.desired,
            ready: observed.ready,
            node_port: self.inner.cluster.node_address_of(id),
            port_forward,
            limits,
            replicas: observed.replicas,
            events: self.inner.cluster.events_of(id),
            autoscaler: self.inner.cluster.autoscaler_of(id).and_then(|hpa| status::autoscaler(&hpa)),
        })
    }

    fn instance_ids(&self) -> Vec<String> {
        self.inner.cluster.instance_ids()
    }

    fn logs(&self, id: &str, follow: bool, since: Option<DateTime<Utc>>) -> Result<LogStream, RuntimeError> {
        let (namespace, _) = self.inner.locate(id).ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let api: Api<Pod> = Api::namespaced(self.inner.client.clone(), &namespace);
        tokio::spawn(logs::run(api, self.inner.cluster.pod_store(), namespace, id.to_string(), follow, since, sender));
        Ok(Box::pin(futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|line| (line, receiver))
        })))
    }

    fn usage(&self, id: &str) -> Result<Vec<ReplicaUsage>, RuntimeError> {
        Ok(self.inner.usage.lock().get(id).cloned().unwrap_or_default())
    }

    fn health(&self) -> Vec<HealthCheck> {
        let metrics = if self.inner.metrics_available.load(std::sync::atomic::Ordering::Relaxed) {
            HealthCheck::new("metrics.k8s.io", true, "served: CPU and memory per pod, and CPU/memory autoscaling")
        } else {
            HealthCheck::new(
                "metrics.k8s.io",
                false,
                "not served: no usage figures and no CPU/memory autoscaling (install metrics-server)",
            )
        };
        let pods = self.inner.cluster.pod_store().state();
        let ready = pods.iter().filter(|pod| status::is_ready(pod)).count();
        let namespaces = match &self.inner.config.user_namespace_prefix {
            Some(prefix) => format!("one namespace per user ({prefix}<user>)"),
            None => format!("namespace {}", self.inner.config.namespace),
        };
        vec![
            metrics,
            HealthCheck::new(
                "pods",
                ready == pods.len(),
                format!("{ready} of {} kubefn pods ready; {namespaces}", pods.len()),
            ),
        ]
    }

    async fn connect(&self, id: &str) -> Result<Route, RuntimeError> {
        // Outside the cluster: the instance's port-forward, which balances and counts itself.
        // Inside: the ready endpoints' own addresses, from kubefn's EndpointSlice watch (where
        // the Service itself would route, resolved by kubefn so no cluster DNS or kube-proxy
        // hop is needed), for the gateway to balance over; with none ready, the request waits
        // up to the hold time while one starts.
        let (forward, traffic, endpoints, port) = {
            let slots = self.inner.slots.lock();
            let slot = slots.get(id).ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
            let spec = &slot.spec.spec;
            if spec.service.kind == crate::platform::model::ServiceKind::ExternalName {
                return Err(RuntimeError::NotProxied { id: id.into() });
            }
            let port = manifests::container_port(spec);
            (slot.forward.as_ref().map(|f| f.address()), slot.traffic.clone(), slot.endpoints.subscribe(), port)
        };
        if let Some(address) = forward {
            return Ok(Route { replicas: vec![Endpoint::Tcp(address)], in_flight: None });
        }
        let in_flight = traffic.clone().map(OpenTraffic::new);
        let pods = endpoints.clone();
        let ready = || -> Vec<Endpoint> {
            pods.borrow().iter().filter_map(|pod| Some(Endpoint::Tcp(SocketAddr::new(pod.ip?, port)))).collect()
        };
        let replicas = hold_until_ready(endpoints, traffic.as_deref(), self.inner.config.hold, ready)
            .await
            .ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        Ok(Route { replicas, in_flight })
    }

    async fn shutdown(&self) {
        KubernetesRuntime::shutdown(self).await;
    }
}

impl KubernetesRuntime {
    /// Sets the Deployment's replicas to `spec`'s (none while paused) through its scale
    /// subresource, and remembers the count.
    async fn set_replicas(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let id = spec.id.as_str();
        let (namespace, name) = self.inner.locate(id).ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        if let Some(slot) = self.inner.slots.lock().get_mut(id) {
            slot.spec.replicas = spec.replicas;
        }
        let wanted = if spec.paused { 0 } else { i32::try_from(spec.replicas).unwrap_or(i32::MAX) };
        self.inner.scale_deployment(&namespace, &name, wanted).await?;
        Ok(())
    }
}
