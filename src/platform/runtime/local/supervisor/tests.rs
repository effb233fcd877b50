//! Unit tests of the parent module.

use super::*;
use crate::platform::runtime::forwarding::{ForwardingPort, UnixDial};
use crate::platform::runtime::local::sandbox::Isolation;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Function {
    dir: tempfile::TempDir,
}

impl Function {
    fn new(source: &str) -> Function {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("function.py"), source).expect("source");
        Function { dir }
    }

    /// Unsandboxed, so the pids a function reports are the replicas' own (the sandbox has
    /// tests of its own in tests/sandbox.rs).
    fn spec(&self) -> LaunchSpec {
        let bootstrap = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/runtimes/python/bootstrap.py");
        let launcher = Launcher::new(Isolation::SingleUser { open_files: 1024 }, None, self.dir.path().join("run"))
            .expect("launcher");
        LaunchSpec {
            launcher: Arc::new(launcher),
            program: PathBuf::from("python3"),
            args: vec![bootstrap.display().to_string()],
            env: vec![("KUBEFN_SOURCE".into(), self.dir.path().join("function.py").display().to_string())],
            binds: Vec::new(),
            files: Vec::new(),
            dir: self.dir.path().to_path_buf(),
            limits: Limits::default(),
            pid_dir: None,
            name_prefix: String::new(),
            warm: None,
        }
    }
}

fn quick() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        crashes_before_failed: 3,
        stable_after: Duration::from_secs(60),
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(2),
    }
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(value) = check() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn get(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie's state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

const PID_FUNCTION: &str = "import os\nprint('loaded', flush=True)\ndef handle(req):\n    return str(os.getpid())\n";

#[tokio::test]
async fn replicas_start_become_ready_and_share_the_node_port() {
    let function = Function::new(PID_FUNCTION);
    let logs = LogBuffer::new(1000);
    let set = ReplicaSet::start(function.spec(), quick(), logs.clone(), 2);
    until("two replicas are ready", || (set.status().ready == 2).then_some(())).await;
    let port = ForwardingPort::serve_with(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        set.endpoints(),
        UnixDial,
        Duration::from_secs(5),
    );

    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..4 {
        pids.insert(get(port.address()).await);
    }
    let expected: std::collections::BTreeSet<String> =
        set.status().replicas.iter().map(|r| r.pid.expect("running").to_string()).collect();
    assert_eq!(pids, expected, "both replicas answered through the node port");

    let lines = logs.snapshot();
    for replica in ["r0", "r1"] {
        assert!(
            lines.iter().any(|l| l.replica == replica && l.stream == Stream::Stdout && l.text == "loaded"),
            "{replica}: {lines:?}"
        );
    }
    set.shutdown().await;
}

#[tokio::test]
async fn a_killed_replica_is_restarted() {
    let function = Function::new(PID_FUNCTION);
    let set = ReplicaSet::start(function.spec(), quick(), LogBuffer::new(100), 1);
    let first = until("ready", || set.status().replicas[0].pid.filter(|_| set.status().ready == 1)).await;
    signal_group(i32::try_from(first).expect("pid"), libc::SIGKILL);
    let second = until("restarted and ready", || {
        let status = set.status();
        let replica = &status.replicas[0];
        (replica.restarts == 1 && replica.state == ReplicaState::Ready).then_some(replica.pid)
    })
    .await;
    assert_ne!(second, Some(first));
    set.shutdown().await;
}

#[tokio::test]
async fn repeated_crashes_fail_the_replica_with_its_last_stderr() {
    let function = Function::new("def handle(req)\n    return req\n");
    let set = ReplicaSet::start(function.spec(), quick(), LogBuffer::new(100), 1);
    let reason = until("failed", || set.status().failure().map(str::to_string)).await;
    assert!(reason.contains("exited with exit status: 3"), "{reason}");
    assert!(reason.contains("syntax error in the function source"), "{reason}");
    assert_eq!(set.status().replicas[0].restarts, 2, "three crashes: the first start and two restarts");
    set.shutdown().await;
}

#[tokio::test]
async fn scaling_down_and_shutting_down_leave_no_process_behind() {
    // The function starts a grandchild; stopping the replica must stop it too.
    let function = Function::new(
        "import os, subprocess\nchild = subprocess.Popen(['sleep', '300'])\nprint('grandchild', child.pid, flush=True)\ndef handle(req):\n    return 'ok'\n",
    );
    let logs = LogBuffer::new(100);
    let set = ReplicaSet::start(function.spec(), quick(), logs.clone(), 2);
    until("two ready", || (set.status().ready == 2).then_some(())).await;
    // Keyed by replica: the two replicas' lines arrive in either order.
    let grandchildren: Vec<u32> = until("grandchildren logged", || {
        let pid_of = |replica: &str| {
            logs.snapshot()
                .iter()
                .filter(|l| l.replica == replica)
                .find_map(|l| l.text.strip_prefix("grandchild ").and_then(|p| p.parse().ok()))
        };
        Some(vec![pid_of("r0")?, pid_of("r1")?])
    })
    .await;
    let replica_pids: Vec<u32> = set.status().replicas.iter().filter_map(|r| r.pid).collect();
    let mut endpoints = set.endpoints();

    set.scale(1);
    until("one replica left", || (set.status().desired == 1).then_some(())).await;
    until("the stopped replica's process is gone", || {
        (!alive(replica_pids[1]) && !alive(grandchildren[1])).then_some(())
    })
    .await;
    until("endpoints shrink", || (endpoints.borrow_and_update().len() == 1).then_some(())).await;
    assert!(alive(replica_pids[0]));

    set.shutdown().await;
    for pid in replica_pids.iter().chain(&grandchildren) {
        until("everything is gone", || (!alive(*pid)).then_some(())).await;
    }
    assert!(endpoints.borrow_and_update().is_empty());
}

#[tokio::test]
async fn a_missing_program_is_reported() {
    let function = Function::new(PID_FUNCTION);
    let mut spec = function.spec();
    spec.program = PathBuf::from("/nonexistent/python-for-kubefn");
    let set = ReplicaSet::start(spec, quick(), LogBuffer::new(100), 1);
    let reason = until("failed", || set.status().failure().map(str::to_string)).await;
    assert!(reason.contains("cannot start python-for-kubefn"), "{reason}");
    assert!(!reason.contains("/nonexistent"), "no host paths in messages: {reason}");
    set.shutdown().await;
}
