//! The real Kubernetes cluster of k8s/testcluster (etcd, kube-apiserver, controllers,
//! scheduler, a real node, kwok nodes, metrics-server), built (cached) and started for a test
//! or bench binary, and stopped by its watchdog when that binary exits. kubefn's own manifests from
//! k8s/ are applied to it.
//!
//! Set KUBEFN_TEST_KUBECONFIG (and KUBEFN_TEST_CLUSTER_BIN) to use a cluster that runs already
//! (`make cluster`).
#![allow(dead_code)]

use kubefn::platform::runtime::kubernetes::{Images, Placement, PodSettings};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running control plane and the directory of its binaries (kubectl among them).
pub struct TestCluster {
    /// The admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// Where etcd, kube-apiserver, … and kubectl are.
    pub bin: PathBuf,
}

impl TestCluster {
    /// Builds and starts the control plane (or takes the one KUBEFN_TEST_KUBECONFIG names).
    pub fn start() -> TestCluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cluster = match std::env::var_os("KUBEFN_TEST_KUBECONFIG") {
            Some(kubeconfig) => {
                let bin = std::env::var_os("KUBEFN_TEST_CLUSTER_BIN").map(PathBuf::from).unwrap_or_else(|| build(root));
                TestCluster { kubeconfig: kubeconfig.into(), bin }
            }
            None => {
                let bin = build(root);
                let dir = tempfile::Builder::new().prefix("kubefn-test-cluster.").tempdir().expect("temp dir").keep();
                let output = Command::new(root.join("k8s/testcluster/start.sh"))
                    .arg(&dir)
                    .env("KUBEFN_CLUSTER_OWNER_PID", std::process::id().to_string())
                    .output()
                    .expect("start.sh runs");
                assert!(
                    output.status.success(),
                    "the test control plane did not start (this binary needs it, also outside CI):\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                eprintln!("{}", String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default());
                TestCluster { kubeconfig: dir.join("kubeconfig"), bin }
            }
        };
        // kubefn's own manifests: accepted by the real apiserver, and the RBAC kubefn acts under.
        cluster.kubectl(&["apply", "-k", &root.join("k8s").display().to_string()], None);
        cluster
    }

    /// The host's address on the real node's link (where the apiserver listens): what pods reach
    /// of this machine.
    pub fn host_address(&self) -> std::net::IpAddr {
        let kubeconfig = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: https://")).expect("a server line");
        server.rsplit_once(':').expect("host:port").0.parse().expect("an IP address")
    }

    /// The cluster's directory (its kubeconfig's).
    pub fn dir(&self) -> &Path {
        self.kubeconfig.parent().expect("the kubeconfig is in the cluster's directory")
    }

    /// Imports an image archive into the real node's containerd (no registry is reachable).
    pub fn import_image(&self, archive: &Path) {
        let socket = self.dir().join("node/containerd.sock");
        let output = Command::new("ctr")
            .args(["--address", &socket.display().to_string(), "-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("ctr runs");
        assert!(
            output.status.success(),
            "cannot import {}: {}",
            archive.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A hostPath PersistentVolume of `size` for claims with no storage class (the test cluster
    /// has no provisioner), its directory owned by `owner`; idempotent.
    pub fn volume(&self, name: &str, size: &str, owner: u32) {
        let path = self.dir().join("node/volumes").join(name);
        std::fs::create_dir_all(&path).expect("volume directory");
        std::os::unix::fs::chown(&path, Some(owner), Some(owner)).expect("chown the volume");
        let manifest = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  hostPath: {{path: {}, type: Directory}}\n",
            path.display()
        );
        self.kubectl(&["apply", "-f", "-"], Some(&manifest));
    }

    /// Prints what a failed test needs to know about `namespace`: its pods and why they are as
    /// they are, recent events, the node's conditions and the logs of the containers of the pods
    /// `selector` picks
    /// (the previous run's too, for a container that restarted). Never fails.
    pub fn diagnose(&self, namespace: &str, selector: &str) {
        let run = |args: &[&str]| {
            let output =
                Command::new(self.bin.join("kubectl")).arg("--kubeconfig").arg(&self.kubeconfig).args(args).output();
            match output {
                Ok(output) => {
                    eprintln!(
                        "--- kubectl {}\n{}{}",
                        args.join(" "),
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    )
                }
                Err(error) => eprintln!("--- kubectl {}: {error}", args.join(" ")),
            }
        };
        run(&["get", "pods", "-A", "-o", "wide"]);
        run(&["describe", "nodes"]);
        run(&["-n", namespace, "describe", "pods"]);
        run(&["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"]);
        run(&["-n", namespace, "logs", "--all-containers", "--tail=200", "-l", selector]);
        run(&["-n", namespace, "logs", "--all-containers", "--tail=200", "--previous", "-l", selector]);
    }

    /// Runs kubectl against the cluster with `stdin`; its output (fails on an error).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl starts");
        if let Some(text) = stdin {
            child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("kubectl runs");
        assert!(output.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn build(root: &Path) -> PathBuf {
    let output = Command::new(root.join("k8s/testcluster/build.sh")).output().expect("build.sh runs");
    assert!(
        output.status.success(),
        "cannot build the test control plane:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// The runtime images k8s/testcluster/images.sh builds and the real node has imported.
pub fn images() -> Images {
    Images { python: "kubefn.test/python:3.11-bookworm".into(), node: "kubefn.test/node:18-bookworm".into() }
}

/// The image function the real node has (k8s/testcluster/images/echo).
pub const ECHO_IMAGE: &str = "kubefn.test/echo:1";

/// Pods on the real node (which carries `type=real`).
pub fn on_real_node() -> Placement {
    Placement { node_selector: [("type".to_string(), "real".to_string())].into(), tolerations: Vec::new() }
}

/// Pods on kwok's nodes (`type=kwok`, tainted `kwok.x-k8s.io/node=fake:NoSchedule`).
pub fn on_kwok() -> Placement {
    Placement {
        node_selector: [("type".to_string(), "kwok".to_string())].into(),
        tolerations: Placement::parse_tolerations("kwok.x-k8s.io/node=fake:NoSchedule").expect("a valid toleration"),
    }
}

/// Pods on the real node, on the images built for it.
pub fn pods() -> PodSettings {
    PodSettings { images: images(), placement: on_real_node(), ..PodSettings::default() }
}
