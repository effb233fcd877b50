//! The [`Runtime`] trait over the local runtime's slots.

use super::*;
use crate::platform::runtime::forwarding::OpenTraffic;
use crate::platform::runtime::scale_to_zero::hold_until_ready;
use crate::platform::runtime::{Endpoint, Route};

fn entry(line: LogLine) -> LogEntry {
    LogEntry { at: line.at, replica: line.replica, stream: line.stream.as_str().to_string(), text: line.text }
}

#[async_trait::async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check(&self, spec: &FunctionSpec) -> Result<(), RuntimeError> {
        match spec.runtime {
            Language::Python | Language::Node => Ok(()),
            Language::Image => Err(RuntimeError::Unsupported {
                runtime: "local",
                language: "image",
                hint: "start kubefn with --runtime kubernetes to run container images",
            }),
        }
    }

    async fn apply(&self, spec: InstanceSpec, mode: ApplyMode) -> Result<(), RuntimeError> {
        if mode == ApplyMode::Serve {
            // One machine: replicas run under the process that leads, and only it serves them.
            return Ok(());
        }
        self.apply_spec(spec, mode == ApplyMode::Retry, mode == ApplyMode::SetReplicas).await
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_slot(id, true).await
    }

    fn ready_replicas(&self, id: &str) -> Option<u32> {
        let slot = self.slot(id).ok()?;
        let ready = slot.endpoints.borrow().len();
        Some(u32::try_from(ready).unwrap_or(u32::MAX))
    }

    fn status(&self, id: &str) -> Option<RuntimeStatus> {
        let slot = self.slot(id).ok()?;
        let state = slot.state.lock();
        let wanted = state.replicas_wanted();
        let mut replicas = Vec::new();
        let mut failed_replica = None;
        let mut ready = 0;
        let mut sets: Vec<(u32, Arc<ReplicaSet>)> = state.active.iter().map(|a| (a.version, a.set.clone())).collect();
        if let Some(rollout) = &state.rollout {
            sets.extend(rollout.set.lock().clone().map(|set| (state.spec.version, set)));
        }
        for (version, set) in &sets {
            let status = set.status();
            if state.active.as_ref().is_some_and(|a| Arc::ptr_eq(&a.set, set)) {
                ready = status.ready;
                failed_replica = failed_replica.or(status.failure().map(str::to_string));
            }
            replicas.extend(status.replicas.into_iter().map(|r| {
                ReplicaInfo {
                    name: r.name,
                    state: match r.state {
                        ReplicaState::Starting => "Starting",
                        ReplicaState::Ready => "Ready",
                        ReplicaState::BackingOff => "BackingOff",
                        ReplicaState::Failed(_) => "Failed",
                    }
                    .to_string(),
                    version: *version,
                    restarts: r.restarts,
                }
            }));
        }
        let serving_version = state.active.as_ref().filter(|_| ready > 0).map(|a| a.version);
        let (instance_state, message) = if state.spec.paused {
            (InstanceState::Paused, "paused; resume to start its replicas again".to_string())
        } else if state.idle_at_zero && state.failure.is_none() && state.rollout.is_none() {
            (InstanceState::Ready, "scaled to zero while idle; the next request starts a replica".to_string())
        } else if let Some(failure) = &state.failure {
            (InstanceState::Failed, failure.clone())
        } else if let Some(failure) = failed_replica {
            (InstanceState::Failed, format!("a replica keeps crashing: {failure}"))
        } else if state.rollout.is_some() {
            let starting = if sets.len() > usize::from(state.active.is_some()) {
                "starting replicas"
            } else if state.spec.spec.requirements.trim().is_empty() {
                "preparing its files"
            } else {
                "installing dependencies"
            };
            (InstanceState::Deploying, format!("version {}: {starting}", state.spec.version))
        } else if ready < wanted {
            (InstanceState::Deploying, format!("{ready} of {wanted} replica(s) ready"))
        } else {
            (InstanceState::Ready, String::new())
        };
        Some(RuntimeStatus {
            state: instance_state,
            message,
            serving_version,
            desired: wanted,
            ready,
            node_port: Some(slot.node_address),
            port_forward: None,
            limits: super::super::limits::describe(
                &state.spec.spec.resources,
                state.spec.spec.timeout_s,
                &self.inner.enforcement,
            ),
            replicas,
            events: state.events.iter().cloned().collect(),
            autoscaler: state.autoscaler_status.clone(),
        })
    }

    fn instance_ids(&self) -> Vec<String> {
        self.inner.slots.lock().keys().cloned().collect()
    }

    fn logs(&self, id: &str, follow: bool, since: Option<DateTime<Utc>>) -> Result<LogStream, RuntimeError> {
        let slot = self.slot(id)?;
        let (backlog, live) = slot.logs.follow();
        drop(slot);
        let backlog = futures::stream::iter(
            backlog.into_iter().filter(move |line| since.is_none_or(|since| line.at >= since)).map(entry),
        );
        if !follow {
            return Ok(Box::pin(backlog));
        }
        let live = futures::stream::unfold(live, |mut live| async move {
            let next = match live.recv().await {
                Ok(line) => entry(line),
                Err(broadcast::error::RecvError::Lagged(skipped)) => LogEntry {
                    at: Utc::now(),
                    replica: "kubefn".into(),
                    stream: Stream::System.as_str().into(),
                    text: format!("{skipped} line(s) skipped: the reader was too slow"),
                },
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((next, live))
        });
        Ok(Box::pin(futures::StreamExt::chain(backlog, live)))
    }

    fn usage(&self, id: &str) -> Result<Vec<ReplicaUsage>, RuntimeError> {
        Ok(self.slot(id)?.state.lock().usage.clone())
    }

    fn health(&self) -> Vec<HealthCheck> {
        let enforcement = &self.inner.enforcement;
        let sandbox = if enforcement.sandboxed {
            HealthCheck::new("sandbox", true, self.isolation())
        } else {
            HealthCheck::new("sandbox", false, self.isolation())
        };
        let limits = match enforcement.cgroups {
            Some(version) => HealthCheck::new(
                "resource limits",
                true,
                format!(
                    "{}: CPU, memory and process limits are enforced by the kernel; usage comes from the cgroups' counters",
                    version.label()
                ),
            ),
            None => HealthCheck::new(
                "resource limits",
                false,
                "no writable cgroups: memory limits are enforced by kubefn, CPU and process limits are not (run kubefn as root on a host with cgroups, or on Kubernetes)",
            ),
        };
        let pool = match &self.inner.pool {
            Some(pool) => {
                let idle = [Language::Python, Language::Node].map(|language| pool.idle(language));
                let size = self.inner.config.warm_pool_size;
                HealthCheck::new(
                    "warm pool",
                    idle.iter().all(|n| *n > 0),
                    format!(
                        "{} Python and {} Node processes waiting (of {size} each); an empty pool refills within seconds, cold starts meanwhile take longer",
                        idle[0], idle[1]
                    ),
                )
            }
            None => HealthCheck::new(
                "warm pool",
                true,
                "off (--warm-pool-size 0): every cold start loads its function from scratch",
            ),
        };
        vec![sandbox, limits, pool]
    }

    async fn connect(&self, id: &str) -> Result<Route, RuntimeError> {
        // The gateway dials the replicas' sockets itself (no hop through the node port), so
        // the request is counted on the instance's traffic here. The wake is done here too, so
        // the hold raises no demand for the wake-on-demand loop to repeat it.
        let slot = self.slot(id)?;
        let in_flight = OpenTraffic::new(slot.traffic.clone());
        slot.state.lock().wake("a request arrived");
        let ready = || slot.endpoints.borrow().clone();
        let replicas = hold_until_ready(slot.endpoints.subscribe(), None, self.inner.config.hold, ready)
            .await
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        Ok(Route { replicas: replicas.into_iter().map(Endpoint::Unix).collect(), in_flight: Some(in_flight) })
    }

    async fn shutdown(&self) {
        LocalRuntime::shutdown(self).await;
    }
}
