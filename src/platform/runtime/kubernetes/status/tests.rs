//! Unit tests of the parent module.

use super::*;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;

fn deployment(version: u32, replicas: i32, updated: i32, paused: bool) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("hello-alice".into()),
            generation: Some(2),
            labels: Some(BTreeMap::from([(names::VERSION.to_string(), version.to_string())])),
            annotations: Some(BTreeMap::from([(names::PAUSED.to_string(), paused.to_string())])),
            ..Default::default()
        },
        spec: Some(DeploymentSpec { replicas: Some(replicas), ..Default::default() }),
        status: Some(DeploymentStatus {
            observed_generation: Some(2),
            updated_replicas: Some(updated),
            ..Default::default()
        }),
    }
}

struct PodFixture(Pod);

impl PodFixture {
    fn new(name: &str, version: u32) -> PodFixture {
        PodFixture(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(names::VERSION.to_string(), version.to_string())])),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus { phase: Some("Pending".into()), ..Default::default() }),
        })
    }
    fn ready(mut self) -> PodFixture {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.phase = Some("Running".into());
        status.conditions =
            Some(vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]);
        self
    }
    fn waiting(mut self, reason: &str) -> PodFixture {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.container_statuses = Some(vec![ContainerStatus {
            name: "function".into(),
            restart_count: 4,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("back-off 40s".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        self
    }
    fn unschedulable(mut self) -> PodFixture {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.conditions =
            Some(vec![PodCondition { type_: "PodScheduled".into(), status: "False".into(), ..Default::default() }]);
        self
    }
    fn failed_install(mut self) -> PodFixture {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.init_container_statuses = Some(vec![ContainerStatus {
            name: "install-dependencies".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: 1, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        self
    }
    fn terminating(mut self) -> PodFixture {
        self.0.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        self
    }
}

fn observe_pods(deployment: &Deployment, pods: &[PodFixture]) -> Observed {
    let pods: Vec<&Pod> = pods.iter().map(|p| &p.0).collect();
    observe(deployment, &pods)
}

#[test]
fn all_replicas_of_the_version_ready_is_ready() {
    let o =
        observe_pods(&deployment(2, 2, 2, false), &[PodFixture::new("a", 2).ready(), PodFixture::new("b", 2).ready()]);
    assert_eq!((o.state, o.desired, o.ready, o.serving_version), (InstanceState::Ready, 2, 2, Some(2)));
    assert_eq!(o.replicas.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(), ["Ready", "Ready"]);
}

#[test]
fn a_rollout_under_way_is_deploying_and_the_old_version_serves() {
    let o = observe_pods(&deployment(3, 1, 1, false), &[PodFixture::new("old", 2).ready(), PodFixture::new("new", 3)]);
    assert_eq!(o.state, InstanceState::Deploying);
    assert_eq!(o.serving_version, Some(2));
    assert_eq!(o.message, "0 of 1 replica(s) of version 3 ready; version 2 keeps serving");
    // The new one is ready but the old one is still there: not yet Ready.
    let o = observe_pods(
        &deployment(3, 1, 1, false),
        &[PodFixture::new("old", 2).ready(), PodFixture::new("new", 3).ready()],
    );
    assert_eq!((o.state, o.serving_version), (InstanceState::Deploying, Some(3)));
    // Once the old pod is terminating it no longer counts.
    let o = observe_pods(
        &deployment(3, 1, 1, false),
        &[PodFixture::new("old", 2).ready().terminating(), PodFixture::new("new", 3).ready()],
    );
    assert_eq!(o.state, InstanceState::Ready);
    assert_eq!(o.replicas[1].state, "Terminating");
}

#[test]
fn a_crashing_version_fails_with_plain_words_while_the_old_one_keeps_serving() {
    let o = observe_pods(
        &deployment(3, 1, 1, false),
        &[PodFixture::new("old", 2).ready(), PodFixture::new("new", 3).waiting("CrashLoopBackOff")],
    );
    assert_eq!(o.state, InstanceState::Failed);
    assert!(o.message.starts_with("version 3 cannot start: the function keeps crashing"), "{}", o.message);
    assert!(o.message.ends_with("; version 2 keeps serving"), "{}", o.message);
    assert_eq!(o.replicas[0].restarts, 4);
    assert_eq!(o.replicas[0].state, "CrashLoopBackOff");
    let o = observe_pods(&deployment(1, 1, 1, false), &[PodFixture::new("p", 1).waiting("ImagePullBackOff")]);
    assert!(o.message.contains("the image cannot be pulled"), "{}", o.message);
    let o = observe_pods(&deployment(1, 1, 1, false), &[PodFixture::new("p", 1).failed_install()]);
    assert!(o.message.contains("installing the declared dependencies failed (exit code 1)"), "{}", o.message);
}

#[test]
fn deadline_and_quota_conditions_fail_the_instance() {
    let mut d = deployment(1, 1, 0, false);
    d.status.as_mut().expect("status").conditions = Some(vec![DeploymentCondition {
        type_: "ReplicaFailure".into(),
        status: "True".into(),
        message: Some("pods \"x\" is forbidden: exceeded quota: small".into()),
        ..Default::default()
    }]);
    let o = observe_pods(&d, &[]);
    assert_eq!(o.state, InstanceState::Failed);
    assert!(o.message.contains("quota is used up"), "{}", o.message);
    d.status.as_mut().expect("status").conditions = Some(vec![DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        ..Default::default()
    }]);
    assert!(observe_pods(&d, &[]).message.contains("did not become ready in time"));
}

#[test]
fn unscheduled_pods_wait_for_a_node_and_paused_wins() {
    let o = observe_pods(&deployment(1, 1, 1, false), &[PodFixture::new("p", 1).unschedulable()]);
    assert_eq!(o.state, InstanceState::Deploying);
    assert!(o.message.starts_with("waiting for a node"), "{}", o.message);
    let o = observe_pods(&deployment(1, 0, 0, true), &[]);
    assert_eq!((o.state, o.desired), (InstanceState::Paused, 0));
    let o = observe_pods(&deployment(1, 0, 0, false), &[]);
    assert_eq!((o.state, o.message.as_str()), (InstanceState::Ready, "scaled to zero"));
    let mut unseen = deployment(1, 0, 0, false);
    unseen.metadata.generation = Some(9);
    assert_eq!(
        observe_pods(&unseen, &[]).state,
        InstanceState::Ready,
        "zero is zero even before the controller caught up"
    );
    let o = observe_pods(&deployment(1, 0, 0, false), &[PodFixture::new("going", 1).ready()]);
    assert_eq!((o.state, o.message.as_str()), (InstanceState::Deploying, "scaling to zero"));
}

#[test]
fn a_generation_not_yet_seen_is_not_ready() {
    let mut d = deployment(2, 1, 1, false);
    d.metadata.generation = Some(3);
    assert_eq!(observe_pods(&d, &[PodFixture::new("a", 2).ready()]).state, InstanceState::Deploying);
}

#[test]
fn events_read_as_sentences() {
    assert_eq!(
        plain_event("FailedScheduling", "0/2 nodes are available: 2 Insufficient cpu.", "hello-alice-7d-x"),
        "no node can take replica hello-alice-7d-x yet: 0/2 nodes are available: 2 Insufficient cpu."
    );
    assert!(plain_event("FailedGetResourceMetric", "unable to get metrics", "hpa").contains("metrics-server"));
    assert_eq!(
        plain_event(
            "SuccessfulRescale",
            "New size: 4; reason: cpu resource utilization (percentage of request) above target",
            "hpa"
        ),
        "the autoscaler set 4 replicas because cpu resource utilization (percentage of request) above target"
    );
    assert_eq!(plain_event("SuccessfulRescale", "Something new", "hpa"), "the autoscaler rescaled: Something new");
}

fn hpa(status: serde_json::Value) -> HorizontalPodAutoscaler {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "hello-alice" },
        "spec": {
            "scaleTargetRef": { "kind": "Deployment", "name": "hello-alice" },
            "maxReplicas": 3,
            "metrics": [
                { "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 50 } } },
                { "type": "Resource", "resource": { "name": "memory", "target": { "type": "Utilization", "averageUtilization": 80 } } },
            ],
        },
        "status": status,
    }))
    .expect("hpa")
}

#[test]
fn an_hpa_status_gives_replicas_and_each_metric_against_its_target() {
    assert_eq!(autoscaler(&hpa(serde_json::json!({ "desiredReplicas": 0 }))), None, "not synced yet");
    let synced = hpa(serde_json::json!({
        "currentReplicas": 1,
        "desiredReplicas": 3,
        "conditions": [{ "type": "AbleToScale", "status": "True" }],
        "currentMetrics": [{ "type": "Resource", "resource": { "name": "cpu", "current": { "averageUtilization": 200, "averageValue": "200m" } } }],
    }));
    let status = autoscaler(&synced).expect("synced");
    assert_eq!((status.current, status.desired), (1, 3));
    assert_eq!(
        status.metrics,
        vec![
            MetricReading { kind: MetricKind::CpuUtilization, current: Some(200.0), target: 50.0 },
            MetricReading { kind: MetricKind::MemoryUtilization, current: None, target: 80.0 },
        ]
    );
    assert_eq!(status.load_percent(), Some(400.0));
    assert!(plain_event("FailedCreate", "pods is forbidden: exceeded quota", "rs").contains("quota is used up"));
    assert!(plain_event("BackOff", "Back-off restarting failed container", "p").contains("keeps crashing"));
}
