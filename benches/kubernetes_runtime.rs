//! `make bench`, Kubernetes part: apply-to-Ready on the test cluster's real node (containerd,
//! runc, kubelet), kubefn's runtime against its baseline measured in the same run: a plain
//! Deployment of one replica of the same image, serving HTTP with a readiness probe of the same
//! period, created with kube's client and watched until its pod is ready. Also kubefn's delete
//! (until nothing of the instance is left). Writes JSON to $KUBEFN_BENCH_DIR (default
//! target/bench-run) for bench/system.py's report.

use figures::{figure, report};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kubefn::platform::model::{FunctionSpec, InstanceState, Language, ScalingPolicy};
use kubefn::platform::runtime::kubernetes::{KubernetesConfig, KubernetesRuntime, client};
use kubefn::platform::runtime::{ApplyMode, InstanceSpec, Runtime};
use std::time::{Duration, Instant};
use test_cluster::TestCluster;

#[path = "support/figures.rs"]
mod figures;

#[path = "../tests/support/cluster.rs"]
mod test_cluster;

const ROUNDS: usize = 10;
const NAMESPACE: &str = "kubefn-functions";

/// A plain Deployment of one replica of the Python image serving HTTP, as a person would apply
/// it, on the real node, ready when its port answers (probed every 2 s, as kubefn's pods are).
/// Its security context meets Pod Security `restricted`, which the functions' namespace
/// enforces; without it the ReplicaSet may not create the pod at all.
fn plain_deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"nodeSelector": {"type": "real"},
                                       "securityContext": {"runAsUser": 65534, "runAsNonRoot": true,
                                                           "seccompProfile": {"type": "RuntimeDefault"}},
                                       "containers": [{"name": "fn", "image": test_cluster::images().python,
                                                       "securityContext": {"allowPrivilegeEscalation": false,
                                                                           "capabilities": {"drop": ["ALL"]}},
                                                       "command": ["python3", "-m", "http.server", "8080"],
                                                       "ports": [{"containerPort": 8080}],
                                                       "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2}}]}}}
    }))
    .expect("deployment")
}

#[tokio::main]
async fn main() {
    let cluster = TestCluster::start();
    let config = KubernetesConfig {
        kubeconfig: Some(cluster.kubeconfig.clone()),
        namespace: NAMESPACE.into(),
        pods: test_cluster::pods(),
        forward_ports: 47000..=47999,
        ..KubernetesConfig::new()
    };
    let admin = client(&config).await.expect("client");
    let deployments: Api<Deployment> = Api::namespaced(admin, NAMESPACE);
    let runtime = KubernetesRuntime::connect(config).await.expect("runtime");
    let spec = FunctionSpec {
        scaling: ScalingPolicy { min: 1, max: 1, ..ScalingPolicy::default() },
        ..FunctionSpec::new("bench", Language::Python, "def handle(req):\n    return 'hello'\n")
    };

    let (mut plain, mut kubefn, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let name = format!("bench-plain-{round}");
        let started = Instant::now();
        deployments.create(&PostParams::default(), &plain_deployment(&name)).await.expect("create");
        let ready = |d: Option<&Deployment>| d.and_then(|d| d.status.as_ref()?.ready_replicas).unwrap_or(0) >= 1;
        tokio::time::timeout(Duration::from_secs(60), await_condition(deployments.clone(), &name, ready))
            .await
            .expect("ready in time")
            .expect("watch");
        plain.push(started.elapsed());
        deployments.delete(&name, &DeleteParams::default()).await.expect("delete");

        let id = uuid::Uuid::new_v4().to_string();
        let instance = InstanceSpec::new(id.clone(), "bench", 1, spec.clone());
        let started = Instant::now();
        runtime.apply(instance, ApplyMode::Reconcile).await.expect("apply");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = runtime.status(&id)
                && status.state == InstanceState::Ready
                && status.ready >= 1
            {
                break;
            }
            assert!(Instant::now() < deadline, "kubefn's instance was not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kubefn.push(started.elapsed());
        let started = Instant::now();
        runtime.delete(&id).await.expect("delete");
        deletes.push(started.elapsed());
    }
    let figures = [
        figure("plain Deployment created to ready (baseline)", plain),
        figure("kubefn instance applied to Ready (its ConfigMap, Deployment and Service; no HPA at min = max)", kubefn),
        figure("kubefn instance deleted until nothing is left (a 2 s drain, then SIGTERM)", deletes),
    ];
    report("kubernetes", &figures);
}
