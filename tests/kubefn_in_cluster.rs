//! kubefn inside the cluster, deployed the way the README says: its image built without a
//! container engine (k8s/testcluster/kubefn-image.sh, as k8s/Dockerfile describes it),
//! `kubectl apply -k k8s/`, its UI and API reached through its Service. It reaches instances
//! through their pods' own addresses (no port-forward, no cluster DNS) and scales an idle one to
//! zero and wakes it. A cluster of its own (this test binary's), so no other test's instances
//! share its namespace.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_cluster::TestCluster;

#[path = "support/process.rs"]
mod process;
#[path = "support/cluster.rs"]
mod test_cluster;

#[test]
fn kubefn_applied_with_kubectl_serves_deploy_invoke_and_delete_from_inside_the_cluster() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // TestCluster::start has applied k8s/ already: kubefn's Deployment waits for its image and
    // its volume, which an operator provides.
    let cluster = TestCluster::start();
    let _diagnostics = DiagnoseOnPanic(&cluster);
    let work = tempfile::tempdir().expect("dir");
    let archive = work.path().join("kubefn.tar");
    let built = Instant::now();
    let output = Command::new(root.join("k8s/testcluster/kubefn-image.sh"))
        .arg(&archive)
        .arg(env!("CARGO_BIN_EXE_kubefn"))
        .arg(root.join("target/site"))
        .output()
        .expect("kubefn-image.sh runs");
    assert!(output.status.success(), "cannot build kubefn's image: {}", String::from_utf8_lossy(&output.stderr));
    cluster.import_image(&archive);
    eprintln!("kubefn's image built and imported in {} ms", built.elapsed().as_millis());
    cluster.volume("kubefn-data", "1Gi", 65532);
    let kubectl = |args: &[&str]| cluster.kubectl(args, None);
    // The operator's settings: an admin, and the runtime images this cluster has.
    kubectl(&[
        "-n",
        "kubefn-system",
        "create",
        "secret",
        "generic",
        "kubefn-admin",
        "--from-literal=admin=root:root-password-1",
    ]);
    let images = test_cluster::images();
    // The runtime images this cluster has, set on kubefn's Deployment (again after each apply).
    let use_test_images = || {
        kubectl(&[
            "-n",
            "kubefn-system",
            "set",
            "env",
            "deployment/kubefn",
            &format!("KUBEFN_PYTHON_IMAGE={}", images.python),
            &format!("KUBEFN_NODE_IMAGE={}", images.node),
        ])
    };
    use_test_images();
    let started = Instant::now();
    kubectl(&["-n", "kubefn-system", "rollout", "status", "deployment/kubefn", "--timeout=120s"]);
    eprintln!("kubefn's pod Ready {} ms after its rollout began", started.elapsed().as_millis());
    let recommended = "app.kubernetes.io/name=kubefn,app.kubernetes.io/instance=kubefn,\
                       app.kubernetes.io/component=control-plane,app.kubernetes.io/part-of=kubefn";
    let pods = kubectl(&["-n", "kubefn-system", "get", "pods", "-l", recommended, "-o", "name"]);
    assert_eq!(pods.lines().count(), 1, "kubefn's pod by Kubernetes' recommended labels: {pods}");

    // Its Service, from this machine (the test cluster routes Service addresses to its node).
    let service_ip = kubectl(&["-n", "kubefn-system", "get", "service", "kubefn", "-o", "jsonpath={.spec.clusterIP}"]);
    let kubefn =
        process::Client { address: format!("{}:80", service_ip.trim()).parse().expect("the Service's address") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while kubefn.request("GET", "/readyz", None, None).status != 200 {
        assert!(Instant::now() < deadline, "kubefn's Service never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let page = kubefn.request("GET", "/", None, None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<html"), "the UI renders on the server: {}", &page.body[..page.body.len().min(300)]);
    let admin = kubefn.request("POST", "/api/v1/login", None, Some(r#"{"name":"root","password":"root-password-1"}"#));
    assert_eq!(admin.status, 200, "the admin from the Secret logs in: {}", admin.body);

    // Deploy → invoke → Delete, as a user, with the instance reached from inside the cluster.
    let cookie = kubefn.sign_up("inside");
    let spec = serde_json::json!({
        "name": "hello", "runtime": "python", "source": "def handle(req):\n    return 'hello from inside: ' + req\n",
        "scaling": {"min": 0, "max": 1, "scale_to_zero_after_s": 10},
    });
    let deployed = Instant::now();
    let id = kubefn.deploy(&cookie, &spec);
    let ready = kubefn.instance_until(&cookie, &id, "Ready", |i| i["state"] == "Ready");
    eprintln!("the instance was Ready {} ms after Deploy", deployed.elapsed().as_millis());
    assert!(ready["urls"]["port_forward"].is_null(), "no port-forward inside the cluster: {ready:#}");
    let answer = kubefn.invoke(&cookie, "inside", "hello", "hi");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello from inside: hi"));

    // Idle for 10 s: scaled to zero; the next call wakes it and is answered.
    // (The count reaches 0 a moment before the pod is gone and the status says why.)
    let zero = kubefn.instance_until(&cookie, &id, "scaled to zero", |i| {
        i["replicas"]["desired"] == 0 && i["message"] == "scaled to zero"
    });
    assert_eq!(zero["state"], "Ready", "an instance at zero is Ready to wake: {zero:#}");
    let woken = Instant::now();
    let answer = kubefn.invoke(&cookie, "inside", "hello", "again");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello from inside: again"));
    eprintln!("a call to the instance at zero was answered after {} ms", woken.elapsed().as_millis());

    let asked = Instant::now();
    let deleted = kubefn.request("DELETE", &format!("/api/v1/instances/{id}"), Some(&cookie), None);
    let answered = asked.elapsed();
    assert!(deleted.status == 204 || deleted.status == 202, "{} {}", deleted.status, deleted.body);
    assert!(answered < Duration::from_secs(10), "Delete took {answered:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while kubefn.request("GET", &format!("/api/v1/instances/{id}"), Some(&cookie), None).status != 404 {
        assert!(Instant::now() < deadline, "the instance was not gone");
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone = asked.elapsed();
    let left = kubectl(&[
        "-n",
        "kubefn-functions",
        "get",
        "deployments,pods,services,configmaps",
        "-l",
        &format!("kubefn.dev/instance={id}"),
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "objects left after Delete");
    eprintln!(
        "Delete answered {} in {} ms; the instance was gone after {} ms",
        deleted.status,
        answered.as_millis(),
        gone.as_millis()
    );

    // Then as the README's `k8s/ha/` runs it: three replicas on PostgreSQL (a server on this
    // machine that the pods reach), rolled to a new revision while calls go through the Service.
    let postgres = tempfile::tempdir().expect("dir");
    let port = process::free_port();
    let host = cluster.host_address().to_string();
    let started = Command::new(root.join("tests/postgres/start.sh"))
        .arg(postgres.path())
        .arg(port.to_string())
        .env("KUBEFN_PG_OWNER_PID", std::process::id().to_string())
        .env("KUBEFN_PG_LISTEN", &host)
        .output()
        .expect("start.sh runs");
    assert!(started.status.success(), "PostgreSQL did not start: {}", String::from_utf8_lossy(&started.stderr));
    let url = format!("postgres://postgres@{host}:{port}/postgres");
    let secret = |name: &str, literal: &str| {
        kubectl(&["-n", "kubefn-system", "create", "secret", "generic", name, &format!("--from-literal={literal}")])
    };
    secret("kubefn-database", &format!("url={url}"));
    secret("kubefn-secrets-key", &format!("key={}", "c".repeat(64)));
    kubectl(&["apply", "-k", &root.join("k8s/ha").display().to_string()]);
    use_test_images();
    kubectl(&["-n", "kubefn-system", "rollout", "status", "deployment/kubefn", "--timeout=180s"]);
    until_only_current_pods_serve(&kubectl);
    let cookie = kubefn.sign_up("several");
    let spec = serde_json::json!({"name": "steady", "runtime": "python", "source": "def handle(req):\n    return 'steady ' + req\n"});
    let id = kubefn.deploy(&cookie, &spec);
    kubefn.instance_until(&cookie, &id, "Ready", |i| i["state"] == "Ready");
    // Every replica serves the instance (the Service spreads calls over them) once it has
    // passed over the instances again (every --reconcile-seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        let answer = kubefn.invoke(&cookie, "several", "steady", "x");
        in_a_row = if (answer.status, answer.body.as_str()) == (200, "steady x") { in_a_row + 1 } else { 0 };
        assert!(
            Instant::now() < deadline,
            "the replicas never all answered for the instance: {} {}",
            answer.status,
            answer.body
        );
    }
    let load = process::Client { address: kubefn.address }.steady_calls(
        "/fn/several/steady/",
        &cookie,
        "\"r\"",
        Duration::ZERO,
    );
    let rolled = Instant::now();
    kubectl(&["-n", "kubefn-system", "rollout", "restart", "deployment/kubefn"]);
    kubectl(&["-n", "kubefn-system", "rollout", "status", "deployment/kubefn", "--timeout=240s"]);
    until_only_current_pods_serve(&kubectl);
    let (sent, failed) = load.stop();
    eprintln!(
        "k8s/ha: three replicas rolled in {} ms; {} of {sent} calls through the Service answered meanwhile",
        rolled.elapsed().as_millis(),
        sent - failed.len() as u32
    );
    assert!(sent >= 20, "hardly any call was made during the roll: {sent}");
    assert!(
        failed.is_empty(),
        "calls failed during the roll: {} of {sent}: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// Waits until kubefn's Service routes to its three current pods alone: the replicas an earlier
/// revision left have stopped and left its endpoints (a rollout's status says done before that).
fn until_only_current_pods_serve(kubectl: &dyn Fn(&[&str]) -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods =
            kubectl(&["-n", "kubefn-system", "get", "pods", "-l", "app.kubernetes.io/name=kubefn", "-o", "name"]);
        let endpoints = kubectl(&[
            "-n",
            "kubefn-system",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kubefn",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.serving}",
        ]);
        let serving = endpoints.split_whitespace().filter(|s| *s == "true").count();
        if pods.lines().count() == 3 && serving == 3 && endpoints.split_whitespace().count() == 3 {
            // The node's kube-proxy follows the endpoints within its sync period.
            std::thread::sleep(Duration::from_secs(2));
            return;
        }
        assert!(Instant::now() < deadline, "kubefn's Service never settled on three pods: {pods} / {endpoints}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prints the cluster's side of a failure (kubefn's pods, events, logs) when the test panics:
/// an unreachable kubefn in a cluster has many possible causes, and CI keeps only this output.
struct DiagnoseOnPanic<'a>(&'a TestCluster);

impl Drop for DiagnoseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.diagnose("kubefn-system", "app.kubernetes.io/name=kubefn");
            self.0.diagnose("kubefn-functions", "app.kubernetes.io/managed-by=kubefn");
        }
    }
}
