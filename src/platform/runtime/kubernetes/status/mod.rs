//! An instance's status from the objects the watchers hold: a pure function of the Deployment,
//! its pods, the HPA and the recent Events, so every rule is unit-tested by feeding it objects.
//! Kubernetes' own words (CrashLoopBackOff, FailedScheduling, …) become sentences that say
//! what happened and what to do.

use super::names;
use crate::platform::autoscale::{AutoscalerStatus, MetricKind, MetricReading};
use crate::platform::model::{EventInfo, InstanceState, ReplicaInfo};
use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Pod};

/// Container waiting reasons that mean the version cannot start without a change.
const STUCK_REASONS: [&str; 7] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What the objects say about one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its state.
    pub state: InstanceState,
    /// Why, in words.
    pub message: String,
    /// The version its ready pods run.
    pub serving_version: Option<u32>,
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas ready.
    pub ready: u32,
    /// One entry per pod.
    pub replicas: Vec<ReplicaInfo>,
}

/// The version a pod (or object) is labelled with.
pub fn version_of(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<u32> {
    labels?.get(names::VERSION)?.parse().ok()
}

/// Whether the pod is Ready and not on its way out.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod cannot start, when it is stuck: a container (or the dependency install) that
/// keeps failing, or an image that cannot be pulled.
pub fn stuck(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for init in status.init_container_statuses.iter().flatten() {
        if let Some(terminated) = init.state.as_ref().and_then(|s| s.terminated.as_ref())
            && terminated.exit_code != 0
        {
            return Some(format!(
                "installing the declared dependencies failed (exit code {}); check the requirements and the logs",
                terminated.exit_code
            ));
        }
        if let Some(waiting) = init.state.as_ref().and_then(|s| s.waiting.as_ref())
            && STUCK_REASONS.contains(&waiting.reason.as_deref().unwrap_or(""))
        {
            return Some(format!(
                "installing the declared dependencies: {}",
                plain_waiting(waiting.reason.as_deref(), waiting.message.as_deref())
            ));
        }
    }
    for container in status.container_statuses.iter().flatten() {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref())
            && STUCK_REASONS.contains(&waiting.reason.as_deref().unwrap_or(""))
        {
            return Some(plain_waiting(waiting.reason.as_deref(), waiting.message.as_deref()));
        }
    }
    None
}

fn plain_waiting(reason: Option<&str>, message: Option<&str>) -> String {
    let detail = message.filter(|m| !m.is_empty()).map(|m| format!(" ({m})")).unwrap_or_default();
    match reason.unwrap_or("") {
        "CrashLoopBackOff" => {
            format!("the function keeps crashing, Kubernetes backs off before each restart{detail}; see the logs")
        }
        "ImagePullBackOff" | "ErrImagePull" => {
            format!("the image cannot be pulled{detail}; check its name and that the cluster may pull it")
        }
        "InvalidImageName" => format!("the image name is invalid{detail}"),
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            format!(
                "the container cannot be created{detail}; check its configuration (a missing Secret, a non-root image)"
            )
        }
        other => format!("{other}{detail}"),
    }
}

fn pod_state(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    if is_ready(pod) {
        return "Ready".into();
    }
    let status = pod.status.as_ref();
    let waiting = status.and_then(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
    });
    if let Some(reason) = waiting {
        return reason;
    }
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
    if phase == "Running" { "Starting".into() } else { phase }
}

fn restarts(pod: &Pod) -> u32 {
    pod.status
        .as_ref()
        .map(|s| s.container_statuses.iter().flatten().map(|c| c.restart_count.max(0) as u32).sum())
        .unwrap_or(0)
}

/// Derives the instance's status from its Deployment and pods.
pub fn observe(deployment: &Deployment, pods: &[&Pod]) -> Observed {
    let desired_version = version_of(deployment.metadata.labels.as_ref()).unwrap_or(0);
    let paused =
        deployment.metadata.annotations.as_ref().and_then(|a| a.get(names::PAUSED)).is_some_and(|v| v == "true");
    let spec_replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    let status = deployment.status.clone().unwrap_or_default();
    let live: Vec<&Pod> = pods.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let ready_pods: Vec<&Pod> = live.iter().copied().filter(|p| is_ready(p)).collect();
    let new_ready =
        ready_pods.iter().filter(|p| version_of(p.metadata.labels.as_ref()) == Some(desired_version)).count() as u32;
    let old_live =
        live.iter().filter(|p| version_of(p.metadata.labels.as_ref()) != Some(desired_version)).count() as u32;
    let serving_version = if new_ready > 0 {
        Some(desired_version)
    } else {
        ready_pods.iter().filter_map(|p| version_of(p.metadata.labels.as_ref())).max()
    };
    let mut replicas: Vec<ReplicaInfo> = pods
        .iter()
        .map(|p| ReplicaInfo {
            name: p.metadata.name.clone().unwrap_or_default(),
            state: pod_state(p),
            version: version_of(p.metadata.labels.as_ref()).unwrap_or(0),
            restarts: restarts(p),
        })
        .collect();
    replicas.sort_by(|a, b| a.name.cmp(&b.name));
    let ready = ready_pods.len() as u32;
    let observed = |state, message: String| Observed {
        state,
        message,
        serving_version,
        desired: spec_replicas,
        ready,
        replicas: replicas.clone(),
    };
    let keeps_serving = match serving_version {
        Some(old) if old != desired_version => format!("; version {old} keeps serving"),
        _ => String::new(),
    };

    if paused {
        return observed(InstanceState::Paused, "paused: no replicas run; resume to start them again".into());
    }
    if spec_replicas == 0 {
        let (state, message) = if live.is_empty() {
            (InstanceState::Ready, "scaled to zero")
        } else {
            (InstanceState::Deploying, "scaling to zero")
        };
        return observed(state, message.into());
    }
    let new_pods = live.iter().filter(|p| version_of(p.metadata.labels.as_ref()) == Some(desired_version));
    if let Some(reason) = new_pods.clone().find_map(|p| stuck(p)) {
        return observed(
            InstanceState::Failed,
            format!("version {desired_version} cannot start: {reason}{keeps_serving}"),
        );
    }
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "Progressing"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
        {
            return observed(
                InstanceState::Failed,
                format!("version {desired_version} did not become ready in time{keeps_serving}"),
            );
        }
        if condition.type_ == "ReplicaFailure" && condition.status == "True" {
            let message = condition.message.clone().unwrap_or_default();
            let hint = if message.contains("exceeded quota") {
                "; the namespace's quota is used up, free some or raise it"
            } else {
                ""
            };
            return observed(
                InstanceState::Failed,
                format!("Kubernetes cannot create replicas: {message}{hint}{keeps_serving}"),
            );
        }
    }
    let generation_seen = status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let rolled_out = generation_seen && status.updated_replicas.unwrap_or(0) as u32 >= spec_replicas && old_live == 0;
    if rolled_out && new_ready >= spec_replicas {
        return observed(InstanceState::Ready, String::new());
    }
    let unscheduled = new_pods.clone().any(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"))
    });
    let waiting = if unscheduled {
        "waiting for a node with room for a replica (see the events)".to_string()
    } else {
        format!("{new_ready} of {spec_replicas} replica(s) of version {desired_version} ready")
    };
    observed(InstanceState::Deploying, format!("{waiting}{keeps_serving}"))
}

/// A Kubernetes Event as the instance page shows it, in plain words.
pub fn event_info(event: &Event) -> EventInfo {
    let at = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .and_then(super::to_chrono)
        .unwrap_or_else(Utc::now);
    let reason = event.reason.clone().unwrap_or_default();
    let message = event.message.clone().unwrap_or_default();
    let object = event.involved_object.name.clone().unwrap_or_default();
    EventInfo {
        at,
        kind: event.type_.clone().unwrap_or_else(|| "Normal".into()),
        message: plain_event(&reason, &message, &object),
        reason,
    }
}

/// Kubernetes' event messages, said so that someone who never used kubectl understands them.
pub fn plain_event(reason: &str, message: &str, object: &str) -> String {
    match reason {
        "FailedScheduling" => format!("no node can take replica {object} yet: {message}"),
        "BackOff" if message.contains("pulling image") => {
            format!("the image of {object} cannot be pulled; retrying with back-off ({message})")
        }
        "BackOff" => format!("{object} keeps crashing; Kubernetes waits longer before each restart ({message})"),
        "Failed" if message.contains("pull") || message.contains("image") => {
            format!("the image of {object} cannot be pulled: {message}")
        }
        "FailedCreate" if message.contains("exceeded quota") => {
            format!("a replica cannot be created, the namespace's quota is used up: {message}")
        }
        "FailedCreate" => format!("a replica cannot be created: {message}"),
        "Unhealthy" => format!("{object} failed a health check: {message}"),
        "Killing" => format!("{object} is being stopped: {message}"),
        "OOMKilling" | "OOMKilled" => {
            format!("{object} ran out of memory and was killed; raise memory_limit or use less")
        }
        "ScalingReplicaSet" => message.to_string(),
        "SuccessfulRescale" => {
            match message.strip_prefix("New size: ").and_then(|rest| rest.split_once("; reason: ")) {
                Some((size, reason)) => format!("the autoscaler set {size} replicas because {reason}"),
                None => format!("the autoscaler rescaled: {message}"),
            }
        }
        "FailedGetResourceMetric" | "FailedComputeMetricsReplicas" => {
            format!("the autoscaler cannot read the replicas' usage yet (is metrics-server installed?): {message}")
        }
        "Scheduled" | "Pulled" | "Created" | "Started" | "SuccessfulCreate" | "SuccessfulDelete" => message.to_string(),
        _ => message.to_string(),
    }
}

/// What an HPA last measured and asked for: its CPU and memory utilization metrics (the ones
/// kubefn sets) with their current averages from its status, `None` before its first sync.
pub fn autoscaler(hpa: &HorizontalPodAutoscaler) -> Option<AutoscalerStatus> {
    // The controller fills conditions on its first sync; before that the status says nothing.
    let status = hpa.status.as_ref().filter(|s| s.conditions.as_ref().is_some_and(|c| !c.is_empty()))?;
    let current_of = |resource: &str| {
        status
            .current_metrics
            .iter()
            .flatten()
            .filter_map(|m| m.resource.as_ref())
            .find(|r| r.name == resource)
            .and_then(|r| r.current.average_utilization)
    };
    let metrics = hpa
        .spec
        .metrics
        .iter()
        .flatten()
        .filter_map(|m| m.resource.as_ref())
        .filter_map(|r| {
            let kind = match r.name.as_str() {
                "cpu" => MetricKind::CpuUtilization,
                "memory" => MetricKind::MemoryUtilization,
                _ => return None,
            };
            let target = r.target.average_utilization?;
            Some(MetricReading { kind, current: current_of(&r.name).map(f64::from), target: f64::from(target) })
        })
        .collect();
    Some(AutoscalerStatus {
        current: u32::try_from(status.current_replicas.unwrap_or(0)).unwrap_or(0),
        desired: u32::try_from(status.desired_replicas).unwrap_or(0),
        metrics,
    })
}

#[cfg(test)]
mod tests;
