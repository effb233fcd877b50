//! The kubernetes runtime against a real cluster (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler; a real node with containerd, runc, the kubelet and
//! kube-proxy; kwok nodes) that this test binary builds (cached) and starts through
//! k8s/testcluster, and that stops when the binary exits. Functions run in real pods on the
//! real node; tests that want kwok's nodes say so ([`on_kwok`]). kubefn acts as its
//! ServiceAccount from k8s/ (impersonated), so the RBAC there is proven enough; a few things it
//! must not do are shown refused.
//!
//! Set KUBEFN_TEST_KUBECONFIG (and KUBEFN_TEST_CLUSTER_BIN) to use a cluster that runs already
//! (`make cluster`).

use axum::http::{Method, StatusCode};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use kubefn::platform::autoscale::MetricKind;
use kubefn::platform::model::{FunctionSpec, InstanceState, Language, ScalingPolicy};
use kubefn::platform::runtime::kubernetes::{
    KubernetesConfig, KubernetesRuntime, NetworkIsolation, PackageAccess, PodSettings, access, client, names,
};
use kubefn::platform::runtime::{ApplyMode, Endpoint, InstanceSpec, Runtime, RuntimeStatus};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::call;
use test_cluster::TestCluster;

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/process.rs"]
mod process;
mod support;
#[path = "support/cluster.rs"]
mod test_cluster;

const NAMESPACE: &str = "kubefn-functions";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:kubefn-system:kubefn";

/// The control plane, started once per test binary.
fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(TestCluster::start)
}

/// The test clusters' pod networks (10.251.N.0/24 each, see k8s/testcluster/node.sh).
const POD_NETWORK: &str = "10.251.0.0/16";

/// kubefn's settings for the test cluster: pods on the real node, on the images built for it,
/// and the pod network named as the README tells operators to (the node runs kube-router's
/// policy controller, so node-port clients need it).
fn config(forward_ports: std::ops::RangeInclusive<u16>) -> KubernetesConfig {
    KubernetesConfig {
        kubeconfig: Some(cluster().kubeconfig.clone()),
        namespace: NAMESPACE.into(),
        impersonate: Some(SERVICE_ACCOUNT.into()),
        pods: test_cluster::pods(),
        forward_ports,
        in_cluster: false,
        hold: Duration::from_secs(10),
        network: NetworkIsolation {
            pod_network: vec![POD_NETWORK.parse().expect("cidr")],
            ..NetworkIsolation::default()
        },
        ..KubernetesConfig::new()
    }
}

/// Pods on kwok's nodes instead, which run nothing: for what needs many nodes or made-up usage.
fn on_kwok(config: KubernetesConfig) -> KubernetesConfig {
    KubernetesConfig { pods: PodSettings { placement: test_cluster::on_kwok(), ..config.pods }, ..config }
}

/// kubefn's runtime acting as its ServiceAccount, with no objects left of `functions` (from an
/// earlier run against the same cluster).
async fn runtime(forward_ports: std::ops::RangeInclusive<u16>, functions: &[&str]) -> KubernetesRuntime {
    let runtime = KubernetesRuntime::connect(config(forward_ports))
        .await
        .expect("the runtime connects as kubefn's ServiceAccount");
    for function in functions {
        runtime.delete_matching(&names::function_selector_text(function)).await.expect("clean up an earlier run");
    }
    runtime
}

async fn admin() -> Client {
    let config = KubernetesConfig { kubeconfig: Some(cluster().kubeconfig.clone()), ..KubernetesConfig::new() };
    client(&config).await.expect("admin client")
}

fn python(name: &str, source: &str) -> FunctionSpec {
    FunctionSpec {
        scaling: ScalingPolicy { min: 1, max: 1, target_cpu_percent: None, ..ScalingPolicy::default() },
        timeout_s: 30,
        ..FunctionSpec::new(name, Language::Python, source)
    }
}

fn instance(function: &FunctionSpec, user: &str, version: u32) -> InstanceSpec {
    InstanceSpec::new(uuid::Uuid::new_v4().to_string(), user, version, function.clone())
}

/// The port-forward the runtime routes instance `id` through: outside the cluster, the one
/// endpoint it offers the gateway.
async fn port_forward(runtime: &KubernetesRuntime, id: &str) -> std::net::SocketAddr {
    let route = runtime.connect(id).await.expect("connect");
    match route.replicas.as_slice() {
        [Endpoint::Tcp(address)] => *address,
        other => panic!("expected the port-forward alone, got {other:?}"),
    }
}

/// Polls the runtime's status until `done` holds (or fails the test, showing the last status).
async fn until(
    runtime: &KubernetesRuntime,
    id: &str,
    what: &str,
    done: impl Fn(&RuntimeStatus) -> bool,
) -> RuntimeStatus {
    // Long enough for metrics-server's two scrapes and an HPA sync (about 30 s here).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = runtime.status(id);
        if let Some(status) = &status
            && done(status)
        {
            return status.clone();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last status: {status:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn left_of(client: &Client, selector: &str) -> usize {
    left_of_in(client, NAMESPACE, selector).await
}

/// How many objects matching `selector` are left in `namespace`.
async fn left_of_in(client: &Client, namespace: &str, selector: &str) -> usize {
    let params = ListParams::default().labels(selector);
    let mut left = 0;
    left += Api::<Deployment>::namespaced(client.clone(), namespace)
        .list_metadata(&params)
        .await
        .expect("list")
        .items
        .len();
    left += Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(client.clone(), namespace)
        .list_metadata(&params)
        .await
        .expect("list")
        .items
        .len();
    left += Api::<Pod>::namespaced(client.clone(), namespace).list_metadata(&params).await.expect("list").items.len();
    left +=
        Api::<Service>::namespaced(client.clone(), namespace).list_metadata(&params).await.expect("list").items.len();
    left +=
        Api::<ConfigMap>::namespaced(client.clone(), namespace).list_metadata(&params).await.expect("list").items.len();
    left += Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .list_metadata(&params)
        .await
        .expect("list")
        .items
        .len();
    left
}

/// The real node's InternalIP, where node ports answer.
async fn real_node_ip(client: &Client) -> std::net::IpAddr {
    let node = Api::<Node>::all(client.clone()).get("real-node").await.expect("the real node");
    let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
    let internal = addresses.iter().find(|a| a.type_ == "InternalIP").expect("an InternalIP");
    internal.address.parse().expect("an IP address")
}

/// Calls the function at `address` until it answers 200 (a fresh port-forward or node port can
/// take a moment), failing after 20 s; the body.
async fn invoke(address: std::net::SocketAddr, body: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match call(address, "POST", "/", "text/plain", body).await {
            Ok((200, answer)) => return answer,
            other => assert!(Instant::now() < deadline, "{address} did not answer 200: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_deploys_updates_under_load_rolls_back_scales_pauses_and_is_deleted_on_the_real_node() {
    let runtime = runtime(41000..=41099, &["life"]).await;
    let admin = admin().await;
    let v1 = python("life", "def handle(req):\n    return 'v1 ' + req\n");
    let spec = instance(&v1, "alice", 1);
    let id = spec.id.clone();
    let deployed = Instant::now();
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    let ready = until(&runtime, &id, "v1 Ready", |s| s.state == InstanceState::Ready && s.ready == 1).await;
    eprintln!("pod Ready {} ms after apply", deployed.elapsed().as_millis());
    assert_eq!(ready.serving_version, Some(1));
    assert_eq!(ready.replicas.len(), 1);
    assert_eq!(ready.replicas[0].state, "Ready");
    assert!(ready.limits.contains("limits enforced by the kubelet"), "{}", ready.limits);

    // The pod runs the function: through kubefn's port-forward (apiserver, kubelet, containerd)
    // and through the NodePort Service (kube-proxy's nftables rules on the node).
    let forward = ready.port_forward.expect("a port-forward");
    assert_eq!(invoke(forward, "through the port-forward").await, "v1 through the port-forward");
    let node_port = ready.node_port.expect("a NodePort Service gives a node address");
    assert_eq!(node_port.ip(), real_node_ip(&admin).await, "the node port is on the real node's InternalIP");
    assert!((30000..=32767).contains(&node_port.port()));
    assert_eq!(invoke(node_port, "through the node port").await, "v1 through the node port");

    // What the apiserver holds reads back as built.
    let config_map =
        Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE).get("life-alice-v1").await.expect("ConfigMap v1");
    assert!(config_map.data.expect("data")["function.py"].contains("'v1 '"));
    assert_eq!(config_map.immutable, Some(true));
    let deployment =
        Api::<Deployment>::namespaced(admin.clone(), NAMESPACE).get("life-alice").await.expect("Deployment");
    let labels = deployment.metadata.labels.clone().expect("labels");
    assert_eq!(labels[names::MANAGED_BY], "kubefn");
    assert_eq!(labels[names::USER], "alice");
    assert_eq!(labels[names::FUNCTION], "life");
    let pod_spec = deployment.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod_spec.security_context.expect("security").run_as_non_root, Some(true));
    let container = &pod_spec.containers[0];
    assert_eq!(
        container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone()).as_deref(),
        Some("/_/ready")
    );
    let service = Api::<Service>::namespaced(admin.clone(), NAMESPACE).get("life-alice").await.expect("Service");
    assert_eq!(service.spec.expect("spec").type_.as_deref(), Some("NodePort"));

    // Update under load: a client calls through the port-forward for the whole rolling update;
    // every call is answered, by v1 until v2 takes over.
    let load = tokio::spawn(async move {
        let (mut answers, mut failures) = (Vec::new(), Vec::new());
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match call(forward, "POST", "/", "text/plain", "load").await {
                Ok((200, body)) => {
                    let v2 = body == "v2 load";
                    answers.push(body);
                    if v2 && answers.iter().rev().take(20).filter(|b| *b == "v2 load").count() == 20 {
                        break;
                    }
                }
                other => failures.push(format!("{other:?}")),
            }
        }
        (answers, failures)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v2 = python("life", "def handle(req):\n    return 'v2 ' + req\n");
    runtime.apply(InstanceSpec { version: 2, spec: v2, ..spec.clone() }, ApplyMode::Reconcile).await.expect("update");
    let updated = until(&runtime, &id, "v2 rolled out", |s| {
        s.state == InstanceState::Ready && s.serving_version == Some(2) && s.replicas.iter().all(|r| r.version == 2)
    })
    .await;
    assert_eq!(updated.ready, 1);
    let (answers, failures) = load.await.expect("the load ran");
    assert!(failures.is_empty(), "calls failed during the rolling update: {failures:?} ({} answered)", answers.len());
    assert!(answers.iter().all(|a| a == "v1 load" || a == "v2 load"), "{answers:?}");
    assert!(
        answers.iter().any(|a| a == "v1 load") && answers.last().map(String::as_str) == Some("v2 load"),
        "v1 served until v2 took over"
    );
    eprintln!("{} calls during the rolling update, none failed", answers.len());
    Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE).get("life-alice-v2").await.expect("ConfigMap v2");
    assert!(
        updated.events.iter().any(|e| e.reason == "ScalingReplicaSet"),
        "the rollout's events show: {:#?}",
        updated.events
    );

    // Rollback to v1.
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("rollback");
    until(&runtime, &id, "rolled back to v1", |s| {
        s.state == InstanceState::Ready && s.serving_version == Some(1) && s.replicas.iter().all(|r| r.version == 1)
    })
    .await;
    assert_eq!(invoke(node_port, "back").await, "v1 back");

    // Scale to 3: the Service spreads connections over them.
    runtime.apply(InstanceSpec { replicas: 3, ..spec.clone() }, ApplyMode::SetReplicas).await.expect("scale");
    let scaled =
        until(&runtime, &id, "3 replicas ready", |s| s.state == InstanceState::Ready && s.ready == 3 && s.desired == 3)
            .await;
    assert_eq!(scaled.replicas.iter().filter(|r| r.state == "Ready").count(), 3);
    assert_eq!(invoke(node_port, "three").await, "v1 three");

    // Pause: no pods; resume: 3 again, answering.
    runtime
        .apply(InstanceSpec { replicas: 3, paused: true, ..spec.clone() }, ApplyMode::Reconcile)
        .await
        .expect("pause");
    until(&runtime, &id, "paused with no pods", |s| s.state == InstanceState::Paused && s.replicas.is_empty()).await;
    runtime.apply(InstanceSpec { replicas: 3, ..spec.clone() }, ApplyMode::Reconcile).await.expect("resume");
    until(&runtime, &id, "resumed with 3 ready", |s| s.state == InstanceState::Ready && s.ready == 3).await;
    assert_eq!(invoke(node_port, "resumed").await, "v1 resumed");
    assert!(runtime.instance_ids().contains(&id));

    // Delete: the bootstraps stop at once on SIGTERM, so the pods are gone in seconds.
    let deleting = Instant::now();
    runtime.delete(&id).await.expect("delete");
    let took = deleting.elapsed();
    eprintln!("delete of 3 real pods took {} ms", took.as_millis());
    assert!(took < Duration::from_secs(10), "deleting took {took:?}");
    assert_eq!(
        left_of(&admin, &names::instance_selector_text(&id)).await,
        0,
        "objects of the instance left after delete"
    );
    assert!(runtime.status(&id).is_none() || runtime.status(&id).is_some_and(|s| s.replicas.is_empty()));
    runtime.delete(&id).await.expect("deleting again is fine");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaled_instances_get_a_valid_hpa_that_pause_suspends() {
    let runtime = runtime(41100..=41199, &["hpa"]).await;
    let admin = admin().await;
    let mut function = python("hpa", "def handle(req):\n    return 'ok'\n");
    function.scaling = ScalingPolicy {
        min: 2,
        max: 5,
        target_cpu_percent: Some(60),
        target_memory_percent: Some(80),
        ..ScalingPolicy::default()
    };
    let spec = instance(&function, "alice", 1);
    let id = spec.id.clone();
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    until(&runtime, &id, "2 replicas (the HPA's min)", |s| s.state == InstanceState::Ready && s.ready == 2).await;
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE)
        .get("hpa-alice")
        .await
        .expect("the HPA exists");
    let hpa_spec = hpa.spec;
    assert_eq!((hpa_spec.min_replicas, hpa_spec.max_replicas), (Some(2), 5));
    assert_eq!(hpa_spec.scale_target_ref.name, "hpa-alice");
    let metrics: Vec<String> =
        hpa_spec.metrics.expect("metrics").iter().filter_map(|m| m.resource.as_ref().map(|r| r.name.clone())).collect();
    assert_eq!(metrics, ["cpu", "memory"]);

    runtime.apply(InstanceSpec { paused: true, ..spec.clone() }, ApplyMode::Reconcile).await.expect("pause");
    until(&runtime, &id, "paused", |s| s.state == InstanceState::Paused && s.replicas.is_empty()).await;
    Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE)
        .get("hpa-alice")
        .await
        .expect("the HPA stays, suspended by zero replicas");
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("resume");
    until(&runtime, &id, "resumed at min", |s| s.state == InstanceState::Ready && s.ready == 2).await;

    // Autoscaling off: the HPA goes, the count is the instance's.
    let mut fixed = function.clone();
    fixed.scaling.target_cpu_percent = None;
    fixed.scaling.target_memory_percent = None;
    runtime
        .apply(InstanceSpec { version: 2, spec: fixed, replicas: 1, ..spec }, ApplyMode::Reconcile)
        .await
        .expect("apply without autoscaling");
    until(&runtime, &id, "one replica of v2", |s| {
        s.state == InstanceState::Ready && s.ready == 1 && s.serving_version == Some(2)
    })
    .await;
    assert!(
        Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE)
            .get_opt("hpa-alice")
            .await
            .expect("get")
            .is_none()
    );
    runtime.delete(&id).await.expect("delete");
    runtime.shutdown().await;
}

/// A function that burns 50 ms of CPU per call.
const BURN: &str = "import time\ndef handle(req):\n    end = time.process_time() + 0.05\n    while time.process_time() < end:\n        pass\n    return 'burned'\n";

/// `clients` callers calling `address` back to back until the returned sender is dropped.
fn load(address: std::net::SocketAddr, clients: usize) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures::FutureExt::shared(stopped);
    for _ in 0..clients {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped => {}
                () = async { loop { let _ = call(address, "POST", "/", "text/plain", "load").await; } } => {}
            }
        });
    }
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_scales_out_on_real_cpu_and_back_and_usage_comes_from_metrics_server() {
    let runtime = runtime(41800..=41899, &["busy"]).await;
    let mut function = python("busy", BURN);
    function.resources.cpu = "100m".into();
    function.scaling = ScalingPolicy { min: 1, max: 3, target_cpu_percent: Some(50), ..ScalingPolicy::default() };
    let spec = instance(&function, "alice", 1);
    let id = spec.id.clone();
    runtime.apply(spec, ApplyMode::Reconcile).await.expect("apply");
    let ready =
        until(&runtime, &id, "1 replica (the HPA's min)", |s| s.state == InstanceState::Ready && s.ready == 1).await;
    assert!(!ready.limits.contains("usage not available"), "{}", ready.limits);
    let pod = ready.replicas[0].name.clone();
    let address = port_forward(&runtime, &id).await;
    assert_eq!(invoke(address, "once").await, "burned");

    // Four callers keep the pod busy: it uses up to its 500m limit, many times the 50 % of its
    // 100m request the HPA aims at, so the HPA asks for its max. The kubelet measures the CPU
    // (cAdvisor), metrics-server serves it.
    let loaded = Instant::now();
    let stop = load(address, 4);
    let wants =
        until(&runtime, &id, "the HPA to ask for 3", |s| s.autoscaler.as_ref().is_some_and(|a| a.desired == 3)).await;
    let autoscaler = wants.autoscaler.expect("autoscaler status");
    let cpu = autoscaler.metrics.iter().find(|m| m.kind == MetricKind::CpuUtilization).expect("the CPU metric");
    assert_eq!(cpu.target, 50.0);
    assert!(cpu.current.is_some_and(|c| c >= 100.0), "the HPA measured the load: {autoscaler:?}");
    let scaled =
        until(&runtime, &id, "3 replicas ready", |s| s.state == InstanceState::Ready && s.ready == 3 && s.desired == 3)
            .await;
    eprintln!("the HPA scaled out to 3 ready replicas {} ms after the load started", loaded.elapsed().as_millis());
    assert!(
        scaled.events.iter().any(|e| e.reason == "SuccessfulRescale" && e.message.starts_with("the autoscaler")),
        "the rescale is told in words: {:#?}",
        scaled.events
    );

    // The runtime's own usage readings (behind the usage charts) come from metrics.k8s.io.
    let deadline = Instant::now() + Duration::from_secs(60);
    let usage = loop {
        let usage = runtime.usage(&id).expect("usage");
        if usage.iter().any(|u| u.replica == pod && u.cpu_millicores.is_some_and(|c| c >= 100.0)) {
            break usage;
        }
        assert!(Instant::now() < deadline, "no PodMetrics of {pod} under load: {usage:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let busy = usage.iter().find(|u| u.replica == pod).expect("the busy pod");
    assert!(busy.cpu_millicores.expect("cpu") <= 600.0, "no more than its 500m limit (and a margin): {busy:?}");
    assert!(
        busy.memory_bytes > 4 * 1024 * 1024 && busy.memory_bytes < 256 * 1024 * 1024,
        "a Python process's memory: {busy:?}"
    );
    // The admin dashboard's health checks say so too, and count the pods.
    let health = runtime.health();
    let metrics = health.iter().find(|c| c.name == "metrics.k8s.io").expect("a metrics check");
    assert!(metrics.ok, "{metrics:?}");
    let pods = health.iter().find(|c| c.name == "pods").expect("a pods check");
    assert!(pods.detail.contains("kubefn pods ready"), "{pods:?}");

    // The load stops: back to one replica (the test cluster's HPA waits 15 s before scaling in).
    drop(stop);
    let idle = Instant::now();
    until(&runtime, &id, "back to 1 replica", |s| s.desired == 1 && s.replicas.len() == 1).await;
    eprintln!("the HPA scaled back in to 1 replica {} ms after the load stopped", idle.elapsed().as_millis());
    runtime.delete(&id).await.expect("delete");
    runtime.shutdown().await;
}

/// Follows the instance's logs until a line containing `text` arrives (20 s at most).
async fn next_line_with(
    follow: &mut kubefn::platform::runtime::LogStream,
    text: &str,
) -> kubefn::platform::model::LogEntry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline, follow.next())
            .await
            .unwrap_or_else(|_| panic!("no log line with {text:?} in time"))
            .expect("a line");
        if line.text.contains(text) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_node_and_image_functions_answer_through_the_port_forward_and_their_logs_follow() {
    let runtime = runtime(41200..=41299, &["pf-py", "pf-js", "pf-image"]).await;
    let py = python(
        "pf-py",
        "def handle(req):\n    print('python got', req, flush=True)\n    return 'from python: ' + req\n",
    );
    let js = FunctionSpec {
        runtime: Language::Node,
        source: "module.exports = async (event) => { console.log('node got ' + event.data); return 'from node: ' + event.data; };\n".into(),
        ..python("pf-js", "")
    };
    let image = FunctionSpec {
        runtime: Language::Image,
        image: Some(test_cluster::ECHO_IMAGE.into()),
        source: String::new(),
        ..python("pf-image", "")
    };
    let specs: Vec<InstanceSpec> = [&py, &js, &image].into_iter().map(|f| instance(f, "alice", 1)).collect();
    for spec in &specs {
        runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    }
    for (spec, (got, answer)) in
        specs.iter().zip([("python got", "from python: "), ("node got", "from node: "), ("", "echo POST / ")])
    {
        let status = until(&runtime, &spec.id, "Ready", |s| s.state == InstanceState::Ready && s.ready == 1).await;
        let pod = status.replicas[0].name.clone();
        if spec.function == "pf-py" {
            // Endpoints come from the EndpointSlice controller's slices alone: one made by hand
            // with kubefn's labels, naming the instance's Service, draws none of its traffic.
            let (slices, forged) = forge_endpoint_slice(&spec.id).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(runtime.ready_replicas(&spec.id), Some(1), "the forged endpoint is not counted");
            slices.delete(&forged, &Default::default()).await.expect("delete the forged slice");
        }
        let address = port_forward(&runtime, &spec.id).await;
        assert_eq!(Some(address), status.port_forward);
        assert_eq!(invoke(address, "hi").await, format!("{answer}hi"), "{}", spec.function);
        for _ in 0..5 {
            assert_eq!(
                call(address, "POST", "/", "text/plain", "again").await.expect("call").0,
                200,
                "each connection re-resolves a pod"
            );
        }
        if got.is_empty() {
            continue; // the echo image logs nothing
        }
        // Logs: what the function printed, tagged with its pod; a line printed while following
        // arrives; and each line is there once.
        let mut follow = runtime.logs(&spec.id, true, None).expect("logs");
        let first = next_line_with(&mut follow, &format!("{got} hi")).await;
        assert_eq!(first.replica, pod);
        assert_eq!(call(address, "POST", "/", "text/plain", "later").await.expect("call").0, 200);
        next_line_with(&mut follow, &format!("{got} later")).await;
        drop(follow);
        let all: Vec<String> = runtime.logs(&spec.id, false, None).expect("logs").map(|l| l.text).collect().await;
        assert_eq!(all.iter().filter(|l| l.contains(&format!("{got} hi"))).count(), 1, "no line twice: {all:?}");
        assert_eq!(all.iter().filter(|l| l.contains(&format!("{got} again"))).count(), 5, "{all:?}");
    }
    // Both bootstraps stop at once on SIGTERM as PID 1 (the pods' grace period is 35 s): each
    // delete takes the 2 s drain and little more.
    for spec in &specs {
        let deleting = Instant::now();
        runtime.delete(&spec.id).await.expect("delete");
        assert!(
            deleting.elapsed() < Duration::from_secs(10),
            "deleting {} took {:?}",
            spec.function,
            deleting.elapsed()
        );
    }
    runtime.shutdown().await;
}

/// An EndpointSlice made by hand (as an administrator) for instance `id`'s Service, with
/// kubefn's labels and a ready endpoint: a pod that does not exist, at a documentation address.
/// Returns the slices' API and the slice's name.
async fn forge_endpoint_slice(id: &str) -> (Api<k8s_openapi::api::discovery::v1::EndpointSlice>, String) {
    let admin = admin().await;
    let name = format!("forged-{id}");
    let selector = ListParams::default().labels(&names::instance_selector_text(id));
    let services = Api::<Service>::namespaced(admin.clone(), NAMESPACE).list(&selector).await.expect("services");
    let service = services.items[0].metadata.name.clone().expect("the Service's name");
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "someone-else",
                (names::MANAGED_BY): names::MANAGER,
                (names::INSTANCE): id,
            },
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": ["203.0.113.9"],
            "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": name, "namespace": NAMESPACE},
        }],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    let slices = Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(admin, NAMESPACE);
    slices.create(&Default::default(), &slice).await.expect("an administrator may make a slice");
    (slices, name)
}

/// Secrets on the real node: the instance's values become a Secret in its namespace, read by
/// the pod as a read-only file at /var/openfaas/secrets/NAME and as the variable asked for; a
/// replaced value rolls the pod; a spec without secrets removes the Secret; an administrator's
/// Secret of the same name is never taken over; delete leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_pod_as_files_and_env_and_go_with_the_instance() {
    use k8s_openapi::api::core::v1::Secret;
    use kubefn::platform::runtime::SecretValue;
    let runtime = runtime(43000..=43099, &["secreader", "sectaken"]).await;
    let admin = admin().await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let reader = python(
        "secreader",
        "import os\ndef handle(req):\n    with open('/var/openfaas/secrets/db-password') as f:\n        value = f.read()\n    try:\n        open('/var/openfaas/secrets/db-password', 'w')\n        writable = 'writable'\n    except OSError:\n        writable = 'read-only'\n    return value + ' ' + os.environ['DB_PASSWORD'] + ' ' + writable\n",
    );
    let with_value = |spec: &InstanceSpec, value: &str| InstanceSpec {
        secrets: vec![SecretValue { name: "db-password".into(), env: Some("DB_PASSWORD".into()), value: value.into() }],
        ..spec.clone()
    };
    let base = instance(&reader, "alice", 1);
    let spec = with_value(&base, "first-value");
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    until(&runtime, &spec.id, "Ready", |s| s.state == InstanceState::Ready && s.ready == 1).await;
    let address = port_forward(&runtime, &spec.id).await;
    assert_eq!(invoke(address, "").await, "first-value first-value read-only");
    let object = secrets.get("secreader-alice-secrets").await.expect("the instance's Secret");
    let labels = object.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(names::INSTANCE).map(String::as_str), Some(spec.id.as_str()));

    // A replaced value reaches the variable too: the pod template changed, so the pod rolled.
    let rotated = with_value(&base, "second-value");
    runtime.apply(rotated.clone(), ApplyMode::Reconcile).await.expect("apply");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let address = port_forward(&runtime, &spec.id).await;
        if call(address, "POST", "/", "text/plain", "").await.map(|(_, body)| body).unwrap_or_default()
            == "second-value second-value read-only"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the new value never reached the pod");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // No secrets named any more: no Secret either.
    let without =
        InstanceSpec { version: 2, spec: python("secreader", "def handle(req):\n    return 'none'\n"), ..base.clone() };
    runtime.apply(without, ApplyMode::Reconcile).await.expect("apply");
    assert!(secrets.get_opt("secreader-alice-secrets").await.expect("read").is_none(), "the Secret went");
    runtime.delete(&spec.id).await.expect("delete");

    // An administrator's Secret of the name the instance would use stays theirs.
    let taken = serde_json::from_value::<Secret>(json!({
        "metadata": { "name": "sectaken-alice-secrets", "namespace": NAMESPACE },
        "stringData": { "admin-key": "admins-own" },
    }))
    .expect("a Secret");
    let _ = secrets.delete("sectaken-alice-secrets", &Default::default()).await;
    secrets.create(&Default::default(), &taken).await.expect("the admin's Secret");
    let other = with_value(&instance(&python("sectaken", "def handle(req):\n    return 'x'\n"), "alice", 1), "v");
    let refused = runtime.apply(other.clone(), ApplyMode::Reconcile).await.expect_err("not taken over");
    assert!(refused.to_string().contains("sectaken-alice-secrets"), "{refused}");
    let kept = secrets.get("sectaken-alice-secrets").await.expect("still there");
    assert_eq!(kept.data.unwrap_or_default().keys().collect::<Vec<_>>(), ["admin-key"], "untouched");
    runtime.delete(&other.id).await.expect("delete");
    secrets.delete("sectaken-alice-secrets", &Default::default()).await.expect("clean up");
    runtime.shutdown().await;
}

/// Dependencies: the init container installs them as uid 65534 with a read-only root, through
/// kubefn's package egress (the pod's only way out: the registries, nothing else), trusting this
/// machine's CA bundle (its egress inspects TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_install_in_the_pod_through_the_package_egress() {
    use kubefn::platform::runtime::kubernetes::package_egress::{PackageEgress, registry_hosts};
    use kubefn::platform::runtime::local::dependencies::InstallerSettings;
    let installer_env = InstallerSettings::passed_environment();
    let egress =
        PackageEgress::start(std::net::SocketAddr::new(cluster().host_address(), 0), registry_hosts(&installer_env))
            .await
            .expect("egress");
    let bundle = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    // In a namespace of its own: the policy there lets its pods reach this egress, at this
    // machine's address, and no other test's kubefn applies a policy without it.
    let mut config = KubernetesConfig { namespace: "kubefn-deps".into(), impersonate: None, ..config(42300..=42399) };
    config.pods.packages = PackageAccess {
        proxy: Some(format!("http://{}", egress.address())),
        ca_bundle: Some(std::fs::read_to_string(&bundle).expect("this machine's CA bundle")),
        env: installer_env,
    };
    let runtime = KubernetesRuntime::connect(config).await.expect("connect");
    for function in ["deps-py", "deps-js"] {
        runtime.delete_matching(&names::function_selector_text(function)).await.expect("clean up an earlier run");
    }
    let py = FunctionSpec {
        requirements: "six==1.16.0\n".into(),
        ..python("deps-py", "import six\ndef handle(req):\n    return 'six ' + six.__version__\n")
    };
    let js = FunctionSpec {
        runtime: Language::Node,
        source: "const isNumber = require('is-number');\nmodule.exports = async (event) => 'is-number says ' + isNumber(event.data);\n".into(),
        requirements: r#"{"name": "deps-js", "dependencies": {"is-number": "7.0.0"}}"#.into(),
        ..python("deps-js", "")
    };
    let specs = [instance(&py, "alice", 1), instance(&js, "alice", 1)];
    for spec in &specs {
        runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    }
    for (spec, expected) in specs.iter().zip(["six 1.16.0", "is-number says true"]) {
        let status = until(&runtime, &spec.id, "Ready with its dependencies", |s| {
            s.state == InstanceState::Ready || s.state == InstanceState::Failed
        })
        .await;
        assert_eq!(status.state, InstanceState::Ready, "{status:#?}");
        let body = if spec.function == "deps-js" { "42" } else { "x" };
        assert_eq!(invoke(status.port_forward.expect("port-forward"), body).await, expected);
    }
    for spec in &specs {
        runtime.delete(&spec.id).await.expect("delete");
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_goes_to_zero_and_a_connection_wakes_it() {
    let config = KubernetesConfig {
        usage_period: Duration::from_millis(200),
        hold: Duration::from_secs(30),
        ..config(42000..=42099)
    };
    let runtime = KubernetesRuntime::connect(config).await.expect("connect");
    runtime.delete_matching(&names::function_selector_text("idle")).await.expect("clean up an earlier run");
    let mut function = python("idle", "def handle(req):\n    return 'x'\n");
    function.scaling = ScalingPolicy {
        min: 0,
        max: 1,
        target_cpu_percent: None,
        scale_to_zero_after_s: Some(1),
        ..ScalingPolicy::default()
    };
    let spec = instance(&function, "alice", 1);
    let id = spec.id.clone();
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    let zero = until(&runtime, &id, "scaled to zero after 1 s idle", |s| {
        s.desired == 0 && s.replicas.is_empty() && s.state == InstanceState::Ready
    })
    .await;
    assert_eq!((zero.state, zero.message.as_str()), (InstanceState::Ready, "scaled to zero"));
    // The reconcile loop's next apply (with the stored count, 1) keeps it at zero.
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("re-apply");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runtime.status(&id).expect("status").desired, 0);
    // A connection arrives: it is held while the instance wakes, then answered by the new pod.
    let address = port_forward(&runtime, &id).await;
    let woken = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(30), call(address, "POST", "/", "text/plain", "")).await;
    assert!(matches!(&answer, Ok(Ok((200, body))) if body == "x"), "the waking call is answered: {answer:?}");
    eprintln!("a call to an instance at zero was answered after {} ms", woken.elapsed().as_millis());
    until(&runtime, &id, "woken to one ready replica", |s| s.ready == 1 && s.desired == 1).await;
    runtime.delete(&id).await.expect("delete");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_or_a_user_is_deleted_by_label_and_nothing_is_left() {
    let runtime = runtime(41300..=41399, &["sel", "sel-other"]).await;
    let admin = admin().await;
    let shared = python("sel", "def handle(req):\n    return 'x'\n");
    let other = python("sel-other", "def handle(req):\n    return 'y'\n");
    let a = instance(&shared, "carol", 1);
    let b = instance(&shared, "dave", 1);
    let c = instance(&other, "carol", 1);
    for spec in [&a, &b, &c] {
        runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    }
    for spec in [&a, &b, &c] {
        until(&runtime, &spec.id, "Ready", |s| s.state == InstanceState::Ready).await;
    }
    runtime.delete_matching(&names::function_selector_text("sel")).await.expect("delete the function's instances");
    assert_eq!(left_of(&admin, &names::function_selector_text("sel")).await, 0);
    assert!(runtime.status(&c.id).is_some(), "another function's instance stays");
    runtime.delete_matching(&names::user_selector_text("carol")).await.expect("delete the user's instances");
    assert_eq!(left_of(&admin, &names::user_selector_text("carol")).await, 0);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_no_node_can_take_waits_with_the_reason_in_plain_words() {
    let runtime = runtime(41400..=41499, &["huge"]).await;
    let mut function = python("huge", "def handle(req):\n    return 'x'\n");
    function.resources.cpu = "64".into();
    function.resources.cpu_limit = "64".into();
    let spec = instance(&function, "alice", 1);
    let id = spec.id.clone();
    runtime.apply(spec, ApplyMode::Reconcile).await.expect("apply");
    let status =
        until(&runtime, &id, "unschedulable", |s| s.events.iter().any(|e| e.reason == "FailedScheduling")).await;
    assert_eq!(status.state, InstanceState::Deploying);
    assert!(status.message.starts_with("waiting for a node"), "{}", status.message);
    let event = status.events.iter().find(|e| e.reason == "FailedScheduling").expect("event");
    assert!(event.message.starts_with("no node can take replica"), "{}", event.message);
    assert!(event.message.contains("Insufficient cpu"), "{}", event.message);
    runtime.delete(&id).await.expect("delete");
    runtime.shutdown().await;
}

/// Placement: pods go to the nodes the node selector names, tolerating their taint (kwok's
/// nodes here); without the toleration the taint keeps them away, and the reason says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_sends_pods_to_the_chosen_nodes_and_an_untolerated_taint_keeps_them_away() {
    let runtime = KubernetesRuntime::connect(on_kwok(config(42200..=42299))).await.expect("connect");
    runtime.delete_matching(&names::function_selector_text("placed")).await.expect("clean up an earlier run");
    let mut function = python("placed", "def handle(req):\n    return 'x'\n");
    function.scaling = ScalingPolicy { min: 4, max: 4, target_cpu_percent: None, ..ScalingPolicy::default() };
    // Limits as Kubernetes also writes them: the apiserver takes what kubefn's validation takes.
    function.resources.cpu_limit = "1e-1".into();
    function.resources.memory_limit = "0.25Gi".into();
    let spec = InstanceSpec { replicas: 4, ..instance(&function, "alice", 1) };
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    until(&runtime, &spec.id, "4 replicas on kwok's nodes", |s| s.state == InstanceState::Ready && s.ready == 4).await;
    let admin = admin().await;
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .list(&ListParams::default().labels(&names::instance_selector_text(&spec.id)))
        .await
        .expect("pods");
    let nodes: Vec<String> = pods.items.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|n| n.starts_with("kwok-node-")), "{nodes:?}");
    // Kubernetes' recommended labels find the same pods and every other object of the instance.
    let recommended = ListParams::default().labels(
        "app.kubernetes.io/name=placed,app.kubernetes.io/instance=placed-alice,app.kubernetes.io/version=1,\
         app.kubernetes.io/component=function,app.kubernetes.io/part-of=kubefn",
    );
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE).list(&recommended).await.expect("pods");
    assert_eq!(pods.items.len(), 4);
    let limits = pods.items[0].spec.as_ref().and_then(|s| s.containers[0].resources.as_ref()?.limits.clone());
    let limits = limits.expect("limits");
    // The apiserver keeps each quantity's notation and canonicalises its number: 0.1 cores in
    // exponent notation is 100e-3, a quarter Gi is 256Mi.
    assert_eq!(
        (limits["cpu"].0.as_str(), limits["memory"].0.as_str()),
        ("100e-3", "256Mi"),
        "as the apiserver reads them"
    );
    let deployments = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE).list(&recommended).await.expect("list");
    let services = Api::<Service>::namespaced(admin.clone(), NAMESPACE).list(&recommended).await.expect("list");
    let config_maps = Api::<ConfigMap>::namespaced(admin.clone(), NAMESPACE).list(&recommended).await.expect("list");
    assert_eq!((deployments.items.len(), services.items.len(), config_maps.items.len()), (1, 1, 1));
    runtime.delete(&spec.id).await.expect("delete");
    runtime.shutdown().await;

    let mut untolerated = on_kwok(config(42200..=42299));
    untolerated.pods.placement.tolerations.clear();
    let runtime = KubernetesRuntime::connect(untolerated).await.expect("connect");
    let spec = instance(&function, "bob", 1);
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    let status =
        until(&runtime, &spec.id, "unschedulable", |s| s.events.iter().any(|e| e.reason == "FailedScheduling")).await;
    let event = status.events.iter().find(|e| e.reason == "FailedScheduling").expect("event");
    assert!(event.message.contains("untolerated taint"), "{}", event.message);
    runtime.delete(&spec.id).await.expect("delete");
    runtime.shutdown().await;
}

/// An ExternalName Service stays a Kubernetes feature: kubefn's gateway never proxies to one,
/// so no function owner can point kubefn at an address of their choosing (a cloud's metadata
/// endpoint, say); the refusal is immediate and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_never_proxies_to_an_external_name_service() {
    let runtime = runtime(42400..=42499, &["alias"]).await;
    let mut function = python("alias", "def handle(req):\n    return 'x'\n");
    function.service.kind = kubefn::platform::model::ServiceKind::ExternalName;
    function.service.external_name = Some("metadata.google.internal".into());
    let spec = instance(&function, "mallory", 1);
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    let admin = admin().await;
    let service = Api::<Service>::namespaced(admin, NAMESPACE).get("alias-mallory").await.expect("the Service exists");
    assert_eq!(service.spec.expect("spec").external_name.as_deref(), Some("metadata.google.internal"));
    let asked = Instant::now();
    let refused = runtime.connect(&spec.id).await.expect_err("no route through kubefn");
    assert!(matches!(refused, kubefn::platform::runtime::RuntimeError::NotProxied { .. }), "{refused}");
    assert!(refused.to_string().contains("never proxies"), "{refused}");
    assert!(asked.elapsed() < Duration::from_secs(1), "refused at once, not after the hold time");
    runtime.delete(&spec.id).await.expect("delete");
    runtime.shutdown().await;
}

/// One user's objects are never another's: names that join alike stay apart, each instance runs
/// its own code, and an object of the name that kubefn did not make for this instance is left
/// alone, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_join_alike_stay_apart_and_nothing_is_adopted() {
    let runtime = runtime(42500..=42599, &["image", "image-resize", "taken"]).await;
    // User `resize-bob`'s function `image` and user `bob`'s function `image-resize`.
    let mallory = instance(&python("image", "def handle(req):\n    return 'resize-bob'\n"), "resize-bob", 1);
    let bob = instance(&python("image-resize", "def handle(req):\n    return 'bob'\n"), "bob", 1);
    for spec in [&mallory, &bob] {
        runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    }
    for (spec, own) in [(&mallory, "resize-bob"), (&bob, "bob")] {
        let status = until(&runtime, &spec.id, "Ready", |s| s.state == InstanceState::Ready && s.ready == 1).await;
        assert_eq!(
            invoke(status.port_forward.expect("port-forward"), "x").await,
            own,
            "each instance runs its own code"
        );
    }
    let admin = admin().await;
    let names: Vec<String> = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE)
        .list_metadata(&ListParams::default().labels(&names::function_selector_text("image")))
        .await
        .expect("list")
        .items
        .into_iter()
        .chain(
            Api::<Deployment>::namespaced(admin.clone(), NAMESPACE)
                .list_metadata(&ListParams::default().labels(&names::function_selector_text("image-resize")))
                .await
                .expect("list")
                .items,
        )
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);

    // A ConfigMap of the name an instance would use, made by someone else: not adopted.
    cluster().kubectl(
        &[
            "-n",
            NAMESPACE,
            "create",
            "configmap",
            "taken-carol-v1",
            "--from-literal=function.py=def handle(req): return 'not yours'",
        ],
        None,
    );
    let carol = instance(&python("taken", "def handle(req):\n    return 'carol'\n"), "carol", 1);
    let refused =
        runtime.apply(carol.clone(), ApplyMode::Reconcile).await.expect_err("the ConfigMap is someone else's");
    let text = kubefn::platform::error_chain(&refused);
    assert!(text.contains("ConfigMap kubefn-functions/taken-carol-v1 belongs to another instance"), "{text}");
    cluster().kubectl(&["-n", NAMESPACE, "delete", "configmap", "taken-carol-v1"], None);
    for spec in [&mallory, &bob, &carol] {
        runtime.delete(&spec.id).await.expect("delete");
    }
    runtime.shutdown().await;
}

/// kubefn's namespaces enforce Pod Security "restricted" (every function pod in this suite
/// complies, or it would not start): a privileged pod there is refused by the apiserver itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privileged_pod_is_refused_in_the_functions_namespace() {
    let _ = cluster();
    let admin = admin().await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "escape"},
        "spec": {"containers": [{"name": "c", "image": test_cluster::ECHO_IMAGE, "securityContext": {"privileged": true}}],
                 "hostPID": true, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}
    }))
    .expect("pod");
    let refused = Api::<Pod>::namespaced(admin, NAMESPACE).create(&kube::api::PostParams::default(), &pod).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains("violates PodSecurity \"restricted"), "{}", status.message)
        }
        other => panic!("a privileged pod was not refused: {other:?}"),
    }
}

/// The NetworkPolicy kubefn keeps where functions run, as the real apiserver stores it.
async fn isolation_policy_of(admin: &Client, namespace: &str) -> serde_json::Value {
    let policy = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(admin.clone(), namespace)
        .get(names::ISOLATION_POLICY)
        .await
        .unwrap_or_else(|e| panic!("no NetworkPolicy in {namespace}: {e}"));
    serde_json::to_value(policy.spec.expect("spec")).expect("json")
}

/// What a function pod reaches at `target` (`ip:port`), asked through `probe`, the port-forward
/// of a function that tries a TCP connection: "open", or "closed: " and why.
async fn reaches(probe: std::net::SocketAddr, target: std::net::SocketAddr) -> String {
    invoke(probe, &target.to_string()).await
}

/// Polls `reaches` until its answer starts with `expected` (kube-router applies a changed
/// policy within a second or two), failing after 30 s with the last answer.
async fn until_reaches(probe: std::net::SocketAddr, target: std::net::SocketAddr, expected: &str, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reaches(probe, target).await;
        if answer.starts_with(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: a function pod reaching {target} got {answer:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The policy as stored, and as enforced: the real node runs kube-router's policy controller
/// (see k8s/testcluster/node.sh), so packets are really dropped. Mallory's function cannot open a
/// connection to Bob's pod or to the apiserver, while this machine (outside the pod network, as
/// node-port clients are) still reaches Bob's pod. Without the policy Mallory's pod reaches both,
/// so it is the policy that stops her; a kubefn that starts again puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_pods_may_be_reached_only_by_kubefn_and_reach_only_public_addresses() {
    // In a namespace of this test's own, as the admin: each kubefn applies the policy of its
    // own settings when it starts, and taking it away for the control touches no other test.
    // (That kubefn's ServiceAccount may manage the policy is checked with its other rights.)
    let admin = admin().await;
    let mut config = KubernetesConfig { namespace: "kubefn-netpol".into(), impersonate: None, ..config(42600..=42699) };
    config.network.pod_network.push("fd00:251::/48".parse().expect("cidr"));
    config.pods.packages.proxy = Some("http://kubefn.kubefn-system.svc:3128".into());
    let runtime = KubernetesRuntime::connect(config.clone()).await.expect("connect");
    for function in ["np-probe", "np-target"] {
        runtime.delete_matching(&names::function_selector_text(function)).await.expect("clean up an earlier run");
    }
    let spec = isolation_policy_of(&admin, &config.namespace).await;
    assert_eq!(spec["podSelector"], serde_json::json!({}), "every pod of the namespace");
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    let ingress = spec["ingress"].as_array().expect("ingress rules");
    assert_eq!(ingress[0]["from"][0]["namespaceSelector"]["matchLabels"][names::NAMESPACE_NAME], "kubefn-system");
    assert_eq!(
        ingress[1]["from"][0]["ipBlock"],
        serde_json::json!({"cidr": "0.0.0.0/0", "except": [POD_NETWORK]}),
        "outside the pod network: node-port clients"
    );
    assert_eq!(ingress[1]["from"][1]["ipBlock"], serde_json::json!({"cidr": "::/0", "except": ["fd00:251::/48"]}));
    assert_eq!(ingress.len(), 2, "no rule lets another function pod in: {ingress:#?}");
    let egress = spec["egress"].as_array().expect("egress rules");
    assert_eq!(egress[0]["ports"][0], serde_json::json!({"protocol": "UDP", "port": 53}), "DNS");
    assert_eq!(
        egress[1]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": 3128}]),
        "kubefn's namespace: the package egress only"
    );
    let public = &egress[2]["to"][0]["ipBlock"];
    assert_eq!(public["cidr"], "0.0.0.0/0");
    for internal in ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"] {
        assert!(
            public["except"].as_array().expect("except").iter().any(|e| e == internal),
            "{internal} (metadata, apiserver, Services, pods) is not excluded: {public}"
        );
    }

    // Enforced: Mallory's function tries connections; Bob's answers.
    let probe = python(
        "np-probe",
        "import socket\ndef handle(req):\n    host, port = req.rsplit(':', 1)\n    try:\n        socket.create_connection((host, int(port)), timeout=2).close()\n        return 'open'\n    except OSError as e:\n        return 'closed: ' + repr(e)\n",
    );
    let mallory = instance(&probe, "mallory", 1);
    let bob = instance(&python("np-target", "def handle(req):\n    return 'bob'\n"), "bob", 1);
    for spec in [&mallory, &bob] {
        runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply");
    }
    let probe = until(&runtime, &mallory.id, "Ready", |s| s.state == InstanceState::Ready && s.ready == 1)
        .await
        .port_forward
        .expect("port-forward");
    let target_pod =
        until(&runtime, &bob.id, "Ready", |s| s.state == InstanceState::Ready && s.ready == 1).await.replicas[0]
            .name
            .clone();
    let pod = Api::<Pod>::namespaced(admin.clone(), &config.namespace).get(&target_pod).await.expect("Bob's pod");
    let pod_ip: std::net::IpAddr = pod.status.and_then(|s| s.pod_ip).expect("a pod IP").parse().expect("an IP address");
    let bobs_pod = std::net::SocketAddr::new(pod_ip, kubefn::platform::runtime::kubernetes::manifests::CONTAINER_PORT);
    let server = std::fs::read_to_string(&cluster().kubeconfig).expect("kubeconfig");
    let api_port: u16 = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("the apiserver's port");
    let apiserver = std::net::SocketAddr::new(cluster().host_address(), api_port);

    assert_eq!(invoke(bobs_pod, "x").await, "bob", "this machine, outside the pod network, reaches Bob's pod");
    until_reaches(probe, bobs_pod, "closed", "another user's pod").await;
    until_reaches(probe, apiserver, "closed", "the apiserver").await;

    // The control: without the policy the same pod reaches both, so the policy is what stops it.
    cluster().kubectl(&["-n", &config.namespace, "delete", "networkpolicy", names::ISOLATION_POLICY], None);
    until_reaches(probe, bobs_pod, "open", "with no policy, another user's pod").await;
    until_reaches(probe, apiserver, "open", "with no policy, the apiserver").await;
    // kubefn puts it back when it starts.
    let restarted = KubernetesRuntime::connect(config).await.expect("connect again");
    until_reaches(probe, bobs_pod, "closed", "after kubefn starts again, another user's pod").await;
    until_reaches(probe, apiserver, "closed", "after kubefn starts again, the apiserver").await;
    restarted.shutdown().await;
    for spec in [&mallory, &bob] {
        runtime.delete(&spec.id).await.expect("delete");
    }
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_namespaces_are_created_labelled_and_a_quota_failure_is_explained() {
    let _ = cluster();
    let admin = admin().await;
    // Per-user namespaces need cluster-wide rights (k8s/per-user-namespaces); acting as admin here.
    let config = KubernetesConfig {
        impersonate: None,
        user_namespace_prefix: Some("kfn-test-".into()),
        ..config(41500..=41599)
    };
    let runtime = KubernetesRuntime::connect(config).await.expect("connect");
    runtime.delete_matching(&names::function_selector_text("quota")).await.expect("clean up an earlier run");
    runtime.delete_matching(&names::function_selector_text("quota-two")).await.expect("clean up an earlier run");
    for quota in ["no-pods", "no-services"] {
        let _ = cluster().kubectl(&["delete", "quota", quota, "-n", "kfn-test-erin", "--ignore-not-found"], None);
    }
    let function = python("quota", "def handle(req):\n    return 'x'\n");
    let spec = instance(&function, "erin", 1);
    runtime.apply(spec.clone(), ApplyMode::Reconcile).await.expect("apply in erin's namespace");
    until(&runtime, &spec.id, "Ready in kfn-test-erin", |s| s.state == InstanceState::Ready).await;
    let namespace =
        Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone()).get("kfn-test-erin").await.expect("namespace");
    let labels = namespace.metadata.labels.expect("labels");
    assert_eq!(labels[names::NAMESPACE_USER], "erin");
    assert_eq!(labels[names::MANAGED_BY], "kubefn");
    assert_eq!(labels[names::POD_SECURITY], "restricted", "a namespace kubefn makes enforces the restricted profile");
    assert_eq!(runtime.namespace_of("erin"), "kfn-test-erin");
    assert_eq!(
        isolation_policy_of(&admin, "kfn-test-erin").await["policyTypes"],
        serde_json::json!(["Ingress", "Egress"]),
        "a namespace kubefn makes is isolated too"
    );

    // A quota that allows no more pods: the next version cannot create its replica.
    cluster().kubectl(&["create", "quota", "no-pods", "-n", "kfn-test-erin", "--hard=pods=1"], None);
    let v2 = python("quota", "def handle(req):\n    return 'v2'\n");
    runtime.apply(InstanceSpec { version: 2, spec: v2, ..spec.clone() }, ApplyMode::Reconcile).await.expect("apply v2");
    let failed = until(&runtime, &spec.id, "quota failure", |s| s.state == InstanceState::Failed).await;
    assert!(failed.message.contains("quota is used up"), "{}", failed.message);
    assert!(failed.message.ends_with("version 1 keeps serving"), "{}", failed.message);

    // A quota that allows no more Services: the apiserver refuses the next instance's, and the
    // error carries the apiserver's own words, which tell an admin what to change.
    cluster().kubectl(&["create", "quota", "no-services", "-n", "kfn-test-erin", "--hard=services=1"], None);
    let other = instance(&python("quota-two", "def handle(req):\n    return 'x'\n"), "erin", 1);
    let refused = runtime.apply(other.clone(), ApplyMode::Reconcile).await.expect_err("no Service allowed");
    let words = refused.to_string();
    assert!(words.starts_with("the cluster refused to "), "{words}");
    assert!(words.contains("exceeded quota: no-services"), "{words}");
    runtime.delete(&other.id).await.expect("delete the refused instance");
    runtime.delete(&spec.id).await.expect("delete");
    runtime.shutdown().await;
}

/// Per-user namespaces under k8s/per-user-namespaces' RBAC, as a ServiceAccount of their own
/// (so the shared-namespace tests keep k8s/'s narrower rights): cluster-wide kubefn only reads,
/// makes namespaces and binds one role; it writes only in the namespaces it made, each with a
/// NetworkPolicy, a LimitRange and a ResourceQuota from the user's quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_namespaces_get_their_rights_by_role_binding_and_a_quota_of_the_users() {
    let _ = cluster();
    let admin = admin().await;
    let account = "kubefn-per-user";
    let manifest = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {account}\n  namespace: kubefn-system\n---\n{}",
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/per-user-namespaces/cluster-rbac.yaml"))
            .expect("the overlay's RBAC")
            .replace(
                "  name: kubefn\n  namespace: kubefn-system",
                &format!("  name: {account}\n  namespace: kubefn-system")
            )
    );
    cluster().kubectl(&["apply", "-f", "-"], Some(&manifest));
    let config = KubernetesConfig {
        impersonate: Some(format!("system:serviceaccount:kubefn-system:{account}")),
        service_account: account.into(),
        user_namespace_prefix: Some("kfn-rbac-".into()),
        ..config(42700..=42799)
    };
    let runtime = KubernetesRuntime::connect(config.clone())
        .await
        .expect("the overlay's cluster-wide rights pass the start-up check");
    runtime.delete_matching(&names::function_selector_text("scoped")).await.expect("clean up an earlier run");
    let quota = kubefn::platform::model::Quota {
        replicas: 3,
        cpu_millicores: 1500,
        memory_bytes: 1 << 30,
        instances: 2,
        ..kubefn::platform::model::Quota::DEFAULT
    };
    let spec = InstanceSpec {
        user_quota: Some(quota),
        ..instance(&python("scoped", "def handle(req):\n    return 'scoped'\n"), "ivy", 1)
    };
    runtime
        .apply(spec.clone(), ApplyMode::Reconcile)
        .await
        .expect("apply in ivy's namespace, through the binding kubefn makes there");
    until(&runtime, &spec.id, "Ready in kfn-rbac-ivy", |s| s.state == InstanceState::Ready).await;

    let namespace = "kfn-rbac-ivy";
    let binding = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), namespace)
        .get(names::USER_NAMESPACE_OBJECTS)
        .await
        .expect("RoleBinding");
    assert_eq!(binding.role_ref.name, names::USER_NAMESPACE_ROLE);
    let hard = Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(admin.clone(), namespace)
        .get(names::USER_NAMESPACE_OBJECTS)
        .await
        .expect("ResourceQuota")
        .spec
        .and_then(|s| s.hard)
        .expect("hard limits");
    assert_eq!(hard["pods"].0, "6", "twice the replicas, for rolling updates");
    assert_eq!(hard["limits.cpu"].0, "3");
    assert_eq!(hard["count/deployments.apps"].0, "2");
    Api::<k8s_openapi::api::core::v1::LimitRange>::namespaced(admin.clone(), namespace)
        .get(names::USER_NAMESPACE_OBJECTS)
        .await
        .expect("LimitRange");
    assert_eq!(isolation_policy_of(&admin, namespace).await["policyTypes"], serde_json::json!(["Ingress", "Egress"]));

    // No more than that: writes only where kubefn made a namespace, and no other role to grant.
    let scoped = client(&config).await.expect("impersonating client");
    assert!(access::may(&scoped, "create", "apps", "deployments", Some(namespace)).await);
    assert!(access::may(&scoped, "create", "", "secrets", Some(namespace)).await, "the Secrets of users' secrets");
    for (verb, group, resource, where_) in [
        ("create", "apps", "deployments", Some("default")),
        ("create", "apps", "deployments", None),
        ("delete", "", "pods", Some("kube-system")),
        // Secrets only by name, those it makes: never listed or watched, nor read elsewhere.
        ("list", "", "secrets", Some(namespace)),
        ("watch", "", "secrets", Some(namespace)),
        ("get", "", "secrets", Some("kube-system")),
        ("create", "", "pods/exec", Some(namespace)),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles", None),
    ] {
        assert!(
            !access::may(&scoped, verb, group, resource, where_).await,
            "{verb} {resource} in {where_:?} was allowed"
        );
    }
    let grab: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "grab"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "kubefn-system"}],
    }))
    .expect("binding");
    match Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(scoped, namespace)
        .create(&kube::api::PostParams::default(), &grab)
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{}", status.message),
        other => panic!("kubefn granted itself cluster-admin in {namespace}: {other:?}"),
    }
    runtime.delete(&spec.id).await.expect("delete");
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubefns_service_account_may_do_what_it_needs_and_no_more() {
    let _ = cluster();
    let client = client(&config(41600..=41699)).await.expect("impersonating client");
    // Enough: the start-up check passes (every verb of access::NEEDED in kubefn-functions).
    access::check(&client, &config(41600..=41699)).await.expect("k8s/'s RBAC is enough");
    // No more.
    let refused = [
        ("get", "", "secrets", Some("kube-system")),
        ("list", "", "secrets", Some(NAMESPACE)),
        ("watch", "", "secrets", Some(NAMESPACE)),
        ("delete", "", "nodes", None),
        ("create", "", "namespaces", None),
        ("create", "apps", "deployments", Some("default")),
        ("create", "rbac.authorization.k8s.io", "rolebindings", Some(NAMESPACE)),
        ("create", "", "pods/exec", Some(NAMESPACE)),
    ];
    for (verb, group, resource, namespace) in refused {
        assert!(
            !access::may(&client, verb, group, resource, namespace).await,
            "kubefn must not {verb} {resource} in {namespace:?}"
        );
    }
    // An API call outside its namespace is refused by the apiserver itself.
    let outside = Api::<ConfigMap>::namespaced(client.clone(), "default").list(&ListParams::default()).await;
    assert!(matches!(outside, Err(kube::Error::Api(ref status)) if status.code == 403), "{outside:?}");
}

/// kubefn's whole server on the kubernetes runtime (user namespaces `kfn-srv-…`, pods on the
/// real node), with a fresh user signed up.
struct ServerOnCluster {
    server: kubefn::server::Server,
    router: axum::Router,
    user: String,
    cookie: String,
    _dir: tempfile::TempDir,
}

impl ServerOnCluster {
    async fn start(name: &str, forward_ports: &str) -> ServerOnCluster {
        use clap::Parser;
        let cluster = cluster();
        let user = format!("{name}{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let dir = tempfile::tempdir().expect("dir");
        let data_dir = dir.path().display().to_string();
        let kubeconfig = cluster.kubeconfig.display().to_string();
        let config = kubefn::server::Config::try_parse_from([
            "kubefn",
            "--data-dir",
            &data_dir,
            "--runtime",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--user-namespace-prefix",
            "kfn-srv-",
            "--port-forward-range",
            forward_ports,
            "--reconcile-seconds",
            "1",
            "--log",
            "warn",
            "--python-image",
            &test_cluster::images().python,
            "--node-selector",
            "type=real",
        ])
        .expect("configuration");
        let options = leptos::config::get_configuration(None).expect("site options").leptos_options;
        let server =
            kubefn::server::build_app(&config, options).await.expect("the server starts on the kubernetes runtime");
        let router = server.router.clone();
        let mut this = ServerOnCluster { server, router, user: user.clone(), cookie: String::new(), _dir: dir };
        let signup = serde_json::json!({"name": user, "password": "a-long-password"});
        let (status, _, cookie) = this.send(Method::POST, "/api/v1/signup".into(), Some(signup), None).await;
        assert_eq!(status, StatusCode::CREATED);
        this.cookie = cookie.expect("session cookie");
        this
    }

    /// One request (a JSON body, or `hi`); the status, the body (JSON if it is) and the
    /// session cookie set, if any.
    async fn send(
        &self,
        method: Method,
        path: String,
        body: Option<Value>,
        cookie: Option<String>,
    ) -> (StatusCode, Value, Option<String>) {
        use axum::body::Body;
        use axum::http::{Request, header};
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let path_is_invocation = path.starts_with("/fn/");
        let mut request = Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = match body {
            Some(body) => request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
            // Invocations send a word; other calls without JSON send nothing.
            None if path_is_invocation => request.body(Body::from("hi")),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body, cookie)
    }

    /// The caller's instance once it is Ready with a port-forward (60 s at most).
    async fn until_ready(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body, _) =
                self.send(Method::GET, format!("/api/v1/instances/{id}"), None, Some(self.cookie.clone())).await;
            if body["state"] == "Ready" && body["urls"]["port_forward"].is_string() {
                return body;
            }
            assert!(Instant::now() < deadline, "not Ready: {body:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The whole product on the kubernetes runtime: sign up, register, Deploy through the REST API,
/// the reconcile loop reports Ready with a port-forward URL, the gateway invokes the pod on the
/// real node, load through the gateway scales it out, and undeploy answers in seconds and
/// leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_deploys_and_invokes_through_the_gateway_on_the_kubernetes_runtime() {
    let server = ServerOnCluster::start("frank", "41700-41799").await;
    let (router, user, cookie) = (server.router.clone(), server.user.clone(), server.cookie.clone());
    let namespace = format!("kfn-srv-{user}");
    let send = |method, path, body, cookie| server.send(method, path, body, cookie);
    // Each call burns 50 ms of CPU, so load through the gateway is real load on the pod.
    let source = BURN.replace("return 'burned'", "return 'gateway to pod: ' + req");
    let function = json!({"name": "gw", "runtime": "python", "source": source,
        "resources": {"cpu": "100m"}, "scaling": {"min": 1, "max": 3, "target_cpu_percent": 50}});
    let (status, body, _) = send(Method::POST, "/api/v1/functions".into(), Some(function), Some(cookie.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _) = send(Method::POST, "/api/v1/functions/gw/deploy".into(), None, Some(cookie.clone())).await;
    assert!(status.is_success(), "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let ready = server.until_ready(&id).await;
    let node_ip = real_node_ip(&admin().await).await;
    assert!(
        ready["urls"]["node_port"].as_str().is_some_and(|u| u.starts_with(&format!("http://{node_ip}:3"))),
        "{ready:#}"
    );
    assert_eq!(ready["replicas"]["ready"], 1);

    let (status, answer, _) = send(Method::POST, format!("/fn/{user}/gw/"), None, Some(cookie.clone())).await;
    assert_eq!((status, answer), (StatusCode::OK, Value::String("gateway to pod: hi".into())));

    // Load through the gateway: the usage series behind the charts shows the CPU from
    // metrics.k8s.io, the HPA's load against its target and the replicas it asked for.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures::FutureExt::shared(stopped);
    for _ in 0..4 {
        let (router, path, cookie, stopped) =
            (router.clone(), format!("/fn/{user}/gw/"), cookie.clone(), stopped.clone());
        tokio::spawn(async move {
            use axum::body::Body;
            use axum::http::{Request, header};
            use tower::ServiceExt;
            let calls = async {
                loop {
                    let request =
                        Request::post(&path).header(header::COOKIE, &cookie).body(Body::from("load")).expect("request");
                    let Ok(response) = router.clone().oneshot(request).await;
                    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                }
            };
            tokio::select! { _ = stopped => {} () = calls => {} }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, samples, _) =
            send(Method::GET, format!("/api/v1/instances/{id}/usage"), None, Some(cookie.clone())).await;
        assert_eq!(status, StatusCode::OK, "{samples}");
        let samples = samples.as_array().cloned().unwrap_or_default();
        let loaded = samples.iter().any(|s| s["cpu_millicores"].as_f64().is_some_and(|c| c >= 100.0));
        let hpa_load = samples.iter().any(|s| s["autoscaler_load_percent"].as_f64().is_some_and(|l| l >= 200.0));
        let scaled = samples.iter().any(|s| s["replicas_desired"] == 3);
        if loaded && hpa_load && scaled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the usage series never showed the load and the scale-up: {:#}",
            Value::Array(samples)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    drop(stop);

    // Undeploy answers within seconds: 204 once the pods are gone, or 202 with the instance
    // `Deleting` while they stop; either way nothing is left soon after.
    let deleting = Instant::now();
    let (status, body, _) =
        send(Method::DELETE, "/api/v1/functions/gw/deploy".into(), None, Some(cookie.clone())).await;
    assert!(deleting.elapsed() < Duration::from_secs(10), "undeploy took {:?}", deleting.elapsed());
    match status {
        StatusCode::NO_CONTENT => {}
        StatusCode::ACCEPTED => assert_eq!(body["state"], "Deleting", "{body}"),
        other => panic!("undeploy answered {other}: {body}"),
    }
    eprintln!("undeploy of 3 real pods answered {status} in {} ms", deleting.elapsed().as_millis());
    let admin = admin().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = left_of_in(&admin, &namespace, &names::instance_selector_text(&id)).await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} objects left after undeploy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The record goes with the objects (at once after a 204; after a 202 once the background
    // deletion has finished).
    while send(Method::GET, format!("/api/v1/instances/{id}"), None, Some(cookie.clone())).await.0
        != StatusCode::NOT_FOUND
    {
        assert!(Instant::now() < deadline, "the instance's record stayed after its objects went");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.server.shutdown().await;
}

/// A replica that ignores SIGTERM holds its pod for the whole grace period: Delete still answers
/// within seconds (202, the instance `Deleting`), refuses changes meanwhile, and finishes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_deletion_answers_202_shows_progress_and_finishes_in_the_background() {
    let server = ServerOnCluster::start("grace", "42100-42199").await;
    let cookie = Some(server.cookie.clone());
    // Blocked, not ignored: the bootstrap's own handler cannot undo a blocked signal.
    let stubborn = "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\ndef handle(req):\n    return 'still here'\n";
    let function = json!({"name": "stubborn", "runtime": "python", "source": stubborn, "timeout_s": 10, "scaling": {"min": 1, "max": 1}});
    let (status, body, _) = server.send(Method::POST, "/api/v1/functions".into(), Some(function), cookie.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _) =
        server.send(Method::POST, "/api/v1/functions/stubborn/deploy".into(), None, cookie.clone()).await;
    assert!(status.is_success(), "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    server.until_ready(&id).await;

    let asked = Instant::now();
    let (status, body, _) = server.send(Method::DELETE, format!("/api/v1/instances/{id}"), None, cookie.clone()).await;
    let answered = asked.elapsed();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(answered < Duration::from_secs(10), "the answer took {answered:?}");
    assert_eq!(body["state"], "Deleting", "{body}");
    assert_eq!(body["message"], "stopping its replicas", "{body}");

    // Meanwhile: the instance shows its progress, and changes are refused with the reason.
    let (status, shown, _) = server.send(Method::GET, format!("/api/v1/instances/{id}"), None, cookie.clone()).await;
    assert_eq!((status, shown["state"].as_str()), (StatusCode::OK, Some("Deleting")), "{shown}");
    let (status, refused, _) =
        server.send(Method::POST, "/api/v1/functions/stubborn/deploy".into(), None, cookie.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("is being deleted")), "{refused}");
    let (status, _, _) = server.send(Method::POST, format!("/api/v1/instances/{id}/pause"), None, cookie.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The kubelet kills the replica when its grace period (timeout + 5 s) ends; then it is gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.send(Method::GET, format!("/api/v1/instances/{id}"), None, cookie.clone()).await.0
        != StatusCode::NOT_FOUND
    {
        assert!(Instant::now() < deadline, "the deletion never finished");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "Delete answered 202 in {} ms; the stubborn pod was gone after {} ms",
        answered.as_millis(),
        asked.elapsed().as_millis()
    );
    assert!(asked.elapsed() > Duration::from_secs(10), "the replica ignored SIGTERM, so its grace period had to pass");
    let admin = admin().await;
    assert_eq!(left_of_in(&admin, &format!("kfn-srv-{}", server.user), &names::instance_selector_text(&id)).await, 0);
    let (status, body, _) =
        server.send(Method::POST, "/api/v1/functions/stubborn/deploy".into(), None, cookie.clone()).await;
    assert!(status.is_success(), "deployable again once gone: {body}");
    let id = body["id"].as_str().expect("id").to_string();
    let (status, _, _) = server.send(Method::DELETE, format!("/api/v1/instances/{id}"), None, cookie.clone()).await;
    assert!(status.is_success());
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_a_missing_permission_and_a_cluster_that_does_not_answer() {
    let _ = cluster();
    let nobody =
        KubernetesConfig { impersonate: Some("system:serviceaccount:default:nobody".into()), ..config(41900..=41949) };
    let error =
        KubernetesRuntime::connect(nobody).await.expect_err("an account without rights cannot start the runtime");
    let text = kubefn::platform::error_chain(&error);
    assert!(text.contains("kubefn may not get configmaps in namespace kubefn-functions; apply k8s/"), "{text}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: 'https://127.0.0.1:{closed}', insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: x}}\ncontexts:\n- name: c\n  context: {{cluster: gone, user: u}}\ncurrent-context: c\n"
        ),
    )
    .expect("kubeconfig");
    let gone = KubernetesConfig { kubeconfig: Some(kubeconfig), impersonate: None, ..config(41950..=41999) };
    let error = KubernetesRuntime::connect(gone).await.expect_err("no cluster there");
    let text = kubefn::platform::error_chain(&error);
    assert!(text.contains(&format!("no cluster answers at https://127.0.0.1:{closed}/")), "{text}");
}

/// Three kubefn processes on one PostgreSQL database and the real cluster: every one serves the
/// UI, the API and the gateway, one leads. The leader is killed with SIGKILL while a deploy, a
/// cron fire and async calls are in flight: another takes over within the lease's bound, the
/// gateway keeps answering through the survivors, the deploy finishes, the cron fire due while
/// nobody led happens once, and every queued async call finishes.
#[test]
fn three_kubefns_on_one_postgresql_keep_every_promise_when_the_leader_is_killed() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let Some(url) = runtime.block_on(postgres::fresh_database()) else {
        eprintln!("skipped: no PostgreSQL server could start here (CI=true makes this a failure)");
        return;
    };
    let store = runtime.block_on(postgres::Store::open(&url)).expect("the database");
    let cluster = cluster();
    let lease_seconds = 5;
    let secrets_key = "5".repeat(64);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("data dir")).collect();
    let _logs = LogsOnFailure(dirs.iter().map(|dir| dir.path().join("kubefn.log")).collect());
    let start = |index: usize| {
        let forwards = format!("{}-{}", 42800 + index * 50, 42849 + index * 50);
        process::Server::start_with(process::free_port(), |command| {
            command
                .env("KUBEFN_DATA_DIR", dirs[index].path())
                .env("KUBEFN_DATABASE_URL", &url)
                .env("KUBEFN_SECRETS_KEY", &secrets_key)
                .env("KUBEFN_RUNTIME", "kubernetes")
                .env("KUBEFN_KUBECONFIG", &cluster.kubeconfig)
                .env("KUBEFN_USER_NAMESPACE_PREFIX", "kfn-ha-")
                .env("KUBEFN_PORT_FORWARD_RANGE", forwards)
                .env("KUBEFN_PYTHON_IMAGE", test_cluster::images().python)
                .env("KUBEFN_NODE_SELECTOR", "type=real")
                .env("KUBEFN_LEADER_LEASE_SECONDS", lease_seconds.to_string())
                .env("KUBEFN_LOG", "info,sqlx=warn,tower_sessions=warn,invocations=warn")
                .stderr(std::fs::File::create(dirs[index].path().join("kubefn.log")).expect("log file"));
        })
    };
    let kubefns: Vec<process::Server> = (0..3).map(start).collect();
    let leader_pid = || {
        let (holder, _) = runtime.block_on(store.lease_holder("leader")).expect("read the lease").expect("a leader");
        holder.split('/').nth(1).and_then(|pid| pid.parse::<u32>().ok()).expect("HOST/PID/RANDOM")
    };
    let pid_of = |kubefn: &process::Server| kubefn.child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubefns.iter().any(|k| pid_of(k) == leader_pid()) {
        assert!(Instant::now() < deadline, "none of the three leads");
        std::thread::sleep(Duration::from_millis(200));
    }
    let leader = kubefns.iter().position(|k| pid_of(k) == leader_pid()).expect("the leader");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let via = |index: usize| &kubefns[index];
    let (first, second) = (via(followers[0]), via(followers[1]));

    // One account, one session: any of the three answers for it (sessions are in the database).
    let user = format!("ha{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let cookie = first.sign_up(&user);
    let source = "import time\n\ndef handle(req):\n    print('saw', req, flush=True)\n    if 'slow' in str(req):\n        time.sleep(0.5)\n    return 'ok ' + str(req)\n";
    let id = first.deploy(&cookie, &json!({"name": "ha", "runtime": "python", "source": source}));
    until_instance(second, &cookie, &id, |i| i["state"] == "Ready" && i["replicas"]["ready"] == 1);
    for index in 0..3 {
        let kubefn = via(index);
        let mut answer = kubefn.invoke(&cookie, &user, "ha", "hi");
        let deadline = Instant::now() + Duration::from_secs(30);
        while answer.status != 200 && Instant::now() < deadline {
            // A follower serves an instance from its next pass on (a second here).
            std::thread::sleep(Duration::from_millis(200));
            answer = kubefn.invoke(&cookie, &user, "ha", "hi");
        }
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok hi"), "kubefn {index} answers for the instance");
    }
    let trigger = json!({"schedule": "* * * * *", "method": "POST", "path": "/", "body": "cron"});
    let created = first.request("POST", "/api/v1/functions/ha/triggers", Some(&cookie), Some(&trigger.to_string()));
    assert_eq!(created.status, 201, "{}", created.body);
    let trigger_id = created.json()["id"].as_i64().expect("trigger id");

    // Kill the leader a few seconds before a minute starts, so that minute's cron fire falls due
    // while nobody leads.
    let seconds_in_minute = chrono::Timelike::second(&chrono::Utc::now());
    std::thread::sleep(Duration::from_secs(u64::from((57 + 60 - seconds_in_minute) % 60)));
    let calls: Vec<String> = (0..12)
        .map(|i| {
            let queued =
                second.request("POST", &format!("/async/fn/{user}/ha"), Some(&cookie), Some(&format!("\"slow {i}\"")));
            assert_eq!(queued.status, 202, "{}", queued.body);
            queued.json()["id"].as_str().expect("id").to_string()
        })
        .collect();
    let registered =
        json!({"name": "late", "runtime": "python", "source": "def handle(req):\n    return 'late ' + req\n"});
    assert_eq!(second.request("POST", "/api/v1/functions", Some(&cookie), Some(&registered.to_string())).status, 201);
    let late = second.request("POST", "/api/v1/functions/late/deploy", Some(&cookie), None);
    assert_eq!(late.status, 201, "deploy while the leader dies: {}", late.body);
    let late_id = late.json()["id"].as_str().expect("id").to_string();

    // The gateway, through the survivors, for the whole failover.
    // Steady calls, not a flood: the other tests of this binary share the machine.
    let load: Vec<_> = followers
        .iter()
        .map(|index| {
            let client = process::Client { address: via(*index).address };
            client.steady_calls(&format!("/fn/{user}/ha/"), &cookie, "\"load\"", Duration::from_millis(20))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let killed_pid = pid_of(&kubefns[leader]);
    // SAFETY: kill(2) on a child this test started; it touches no memory.
    unsafe {
        libc::kill(i32::try_from(killed_pid).expect("a pid"), libc::SIGKILL);
    }
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while followers.iter().all(|i| pid_of(&kubefns[*i]) != leader_pid()) {
        assert!(Instant::now() < deadline, "no survivor took the lead (still {killed_pid})");
        std::thread::sleep(Duration::from_millis(100));
    }
    let takeover = killed.elapsed();
    let bound = Duration::from_secs(lease_seconds + lease_seconds / 5 * 2 + 1);
    assert!(takeover <= bound, "a survivor led {takeover:?} after the kill, over the bound of {bound:?}");

    // The deploy under way finishes, the async calls all finish, the cron minute fires once.
    until_instance(first, &cookie, &late_id, |i| i["state"] == "Ready" && i["replicas"]["ready"] == 1);
    // Logs come from any survivor (the pods' own, through the apiserver).
    let logs = second.request("GET", &format!("/api/v1/instances/{id}/logs"), Some(&cookie), None);
    assert_eq!(logs.status, 200, "{}", logs.body);
    assert!(logs.body.contains("saw hi"), "the instance's log through a survivor: {}", logs.body);
    assert_eq!(first.invoke(&cookie, &user, "late", "after").body, "late after");
    let mut attempts = 0;
    for call in &calls {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = second.request("GET", &format!("/api/v1/async/{call}"), Some(&cookie), None).json();
            if status["state"] == "succeeded" {
                assert!(
                    status["response"].as_str().is_some_and(|r| r.starts_with("ok ") && r.contains("slow")),
                    "{status:#}"
                );
                attempts += status["attempts"].as_u64().unwrap_or(0);
                break;
            }
            assert!(status["state"] != "failed", "an async call failed: {status:#}");
            assert!(Instant::now() < deadline, "an async call never finished: {status:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let fired_after = |runs: &Value| -> Vec<String> {
        runs.as_array()
            .into_iter()
            .flatten()
            .filter(|run| run["outcome"] != "skipped")
            .map(|run| run["scheduled_for"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut fires = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while fires.len() < 2 {
        let listed = first.request("GET", "/api/v1/functions/ha/triggers", Some(&cookie), None).json();
        let runs =
            listed.as_array().and_then(|all| all.iter().find(|t| t["id"] == trigger_id)).map(|t| t["runs"].clone());
        fires = fired_after(&runs.unwrap_or(Value::Null));
        assert!(Instant::now() < deadline, "the cron trigger did not fire twice after the kill: {fires:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut unique = fires.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), fires.len(), "a cron minute fired twice: {fires:?}");
    let minutes: Vec<i64> =
        unique.iter().map(|at| chrono::DateTime::parse_from_rfc3339(at).expect("a time").timestamp() / 60).collect();
    assert!(minutes.windows(2).all(|pair| pair[1] == pair[0] + 1), "a cron minute was lost: {fires:?}");

    let (mut sent, mut failed) = (0, Vec::new());
    for calls in load {
        let (s, f) = calls.stop();
        sent += s;
        failed.extend(f);
    }
    eprintln!(
        "failover: a survivor led {} ms after SIGKILL (lease {lease_seconds} s); the gateway answered {} of {sent} calls through the survivors meanwhile; 12 async calls took {attempts} attempts; cron fires {fires:?}",
        takeover.as_millis(),
        sent - failed.len() as u32,
    );
    assert!(sent >= 20, "the survivors' gateways were hardly asked: {sent}");
    assert!(
        failed.is_empty(),
        "the gateway failed {} of {sent} calls through the survivors: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for function in ["ha", "late"] {
        let undeployed = first.request("DELETE", &format!("/api/v1/functions/{function}/deploy"), Some(&cookie), None);
        assert!((200..300).contains(&undeployed.status), "undeploy {function}: {}", undeployed.body);
    }
    let namespace = format!("kfn-ha-{user}");
    let admin = runtime.block_on(admin());
    let deadline = Instant::now() + Duration::from_secs(60);
    while runtime.block_on(left_of_in(&admin, &namespace, &names::managed_selector_text())) > 0 {
        assert!(Instant::now() < deadline, "the survivors did not delete the instances");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(kubefns);
}

/// Polls `kubefn` for instance `id` until `done` holds (a minute at most: pods start on the real node).
fn until_instance(kubefn: &process::Server, cookie: &str, id: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = kubefn.request("GET", &format!("/api/v1/instances/{id}"), Some(cookie), None);
        if answer.status == 200 && done(&answer.json()) {
            return;
        }
        assert!(Instant::now() < deadline, "instance {id} never got there: {} {}", answer.status, answer.body);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prints the tail of each kubefn's log when the test fails (dropped while panicking).
struct LogsOnFailure(Vec<std::path::PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in &self.0 {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- {}\n{}", path.display(), lines[lines.len().saturating_sub(60)..].join("\n"));
        }
    }
}

/// `k8s/ha` as the real apiserver takes it (a server-side dry run): three replicas rolled with
/// none unavailable, the database URL and the secrets key from Secrets, no SQLite volume, and a
/// PodDisruptionBudget over kubefn's pods.
#[test]
fn the_ha_overlay_is_three_replicas_on_a_database_from_a_secret() {
    let overlay = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/ha");
    let applied = cluster().kubectl(&["apply", "-k", overlay, "--dry-run=server", "-o", "json"], None);
    let list: Value = serde_json::from_str(&applied).expect("JSON");
    let objects = list["items"].as_array().cloned().unwrap_or_default();
    let of_kind = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).cloned().collect::<Vec<_>>();
    let deployment = &of_kind("Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "{:#}",
        deployment["spec"]["strategy"]
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().cloned().unwrap_or_default();
    let from_secret =
        |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["valueFrom"]["secretKeyRef"]["name"].clone());
    assert_eq!(from_secret("KUBEFN_DATABASE_URL"), Some(json!("kubefn-database")));
    assert_eq!(from_secret("KUBEFN_SECRETS_KEY"), Some(json!("kubefn-secrets-key")));
    assert!(pod["volumes"][0]["emptyDir"].is_object(), "no SQLite volume: {:#}", pod["volumes"]);
    assert!(of_kind("PersistentVolumeClaim").is_empty(), "no claim for SQLite");
    let budget = &of_kind("PodDisruptionBudget")[0];
    assert_eq!(budget["spec"]["minAvailable"], 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = budget["spec"]["selector"]["matchLabels"].as_object().expect("labels");
    assert!(selector.iter().all(|(key, value)| &labels[key] == value), "the budget covers kubefn's pods");
}
