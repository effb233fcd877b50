//! The real `kubefn` binary is killed with SIGKILL and started again on the same data
//! directory: users, sessions, functions, deployed instances and queued async calls are all
//! still there, and the replica processes the killed one left are stopped and replaced.

use process::{Server, alive, free_port, processes_under};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[path = "support/process.rs"]
mod process;

#[test]
fn nothing_is_lost_when_kubefn_is_killed() {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let first = Server::start(data.path(), port);
    let cookie = first.sign_up("kim");
    let spec = r#"{"name":"survivor","runtime":"python","source":"def handle(req):\n    return req\n"}"#;
    assert_eq!(first.request("POST", "/api/v1/functions", Some(&cookie), Some(spec)).status, 201);
    let edit = r#"{"name":"survivor","runtime":"python","source":"def handle(req):\n    return 'v2'\n"}"#;
    assert_eq!(first.request("PUT", "/api/v1/functions/survivor", Some(&cookie), Some(edit)).status, 200);
    first.kill_hard();

    let second = Server::start(data.path(), port);
    let answer = second.request("GET", "/api/v1/functions/survivor", Some(&cookie), None);
    assert_eq!(answer.status, 200, "the session survived the crash too: {}", answer.body);
    let detail = answer.json();
    assert_eq!(detail["version"], 2);
    assert_eq!(detail["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["spec"]["source"], "def handle(req):\n    return 'v2'\n");
}

/// An async call answered 202 is on disk: killed while its instance is paused, kubefn runs it
/// with its whole body once it is back, and keeps no body after.
#[test]
fn queued_async_calls_survive_a_kill() {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let first = Server::start(data.path(), port);
    let cookie = first.sign_up("kim");
    let spec = serde_json::json!({"name": "keeper", "runtime": "python", "source": "def handle(req):\n    return str(len(req)) + ' ' + req[:8]\n"});
    let id = first.deploy(&cookie, &spec);
    first.instance_in_state(&cookie, &id, "Ready");
    let pause = first.request("POST", &format!("/api/v1/instances/{id}/pause"), Some(&cookie), None);
    assert!((200..300).contains(&pause.status), "pause: {}", pause.body);
    first.instance_in_state(&cookie, &id, "Paused");
    let bodies: Vec<String> = (0..3).map(|i| format!("call-{i}:{}", "x".repeat(300_000))).collect();
    let calls: Vec<String> = bodies
        .iter()
        .map(|body| {
            let queued = first.request("POST", "/async/fn/kim/keeper", Some(&cookie), Some(body));
            assert_eq!(queued.status, 202, "{}", queued.body);
            queued.json()["id"].as_str().expect("id").to_string()
        })
        .collect();
    let spool = data.path().join("async-bodies");
    for (call, body) in calls.iter().zip(&bodies) {
        assert_eq!(std::fs::read(spool.join(call)).expect("the body is on disk"), body.as_bytes());
    }
    first.kill_hard();

    let second = Server::start(data.path(), port);
    let resume = second.request("POST", &format!("/api/v1/instances/{id}/resume"), Some(&cookie), None);
    assert!((200..300).contains(&resume.status), "resume: {}", resume.body);
    for (i, call) in calls.iter().enumerate() {
        let mut last = serde_json::Value::Null;
        for _ in 0..600 {
            last = second.request("GET", &format!("/api/v1/async/{call}"), Some(&cookie), None).json();
            if last["state"] == "succeeded" {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(last["response"], format!("300007 call-{i}:x"), "{last:#}");
    }
    // A finished call's body goes just after its result is recorded.
    let left = || std::fs::read_dir(&spool).expect("the spool").count();
    for _ in 0..100 {
        if left() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left(), 0, "finished calls keep no body");
}

fn invoke(node_port: &serde_json::Value) -> String {
    let address = node_port.as_str().and_then(|u| u.strip_prefix("http://")).expect("node port url");
    let mut stream = TcpStream::connect(address).expect("the node port answers");
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[test]
fn deployed_instances_come_back_after_kubefn_is_killed() {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let first = Server::start(data.path(), port);
    let cookie = first.sign_up("kim");
    // Each replica process answers with a token of its own (pids inside the sandbox's pid
    // namespace are the same for every replica).
    let spec = serde_json::json!({"name": "phoenix", "runtime": "python", "source": "import uuid\nTOKEN = uuid.uuid4().hex\ndef handle(req):\n    return TOKEN\n"});
    let id = first.deploy(&cookie, &spec);
    let before = first.instance_in_state(&cookie, &id, "Ready");
    let old_token = invoke(&before["urls"]["node_port"]);
    // One reconcile pass (every second here) stores the events.
    std::thread::sleep(Duration::from_millis(1500));
    first.kill_hard();
    // The sandbox ends with the kubefn that started it: nothing of the killed one lingers.
    for _ in 0..100 {
        if processes_under(data.path()).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_under(data.path()), Vec::<u32>::new(), "replicas die with a killed kubefn");

    let second = Server::start(data.path(), port);
    let after = second.instance_in_state(&cookie, &id, "Ready");
    assert_eq!(after["urls"]["node_port"], before["urls"]["node_port"], "the instance keeps its node port");
    let new_token = invoke(&after["urls"]["node_port"]);
    assert_eq!(new_token.len(), 32, "{new_token}");
    assert_ne!(new_token, old_token, "a new replica serves");
    let deployed = |instance: &serde_json::Value| {
        instance["events"].as_array().map_or(0, |events| events.iter().filter(|e| e["reason"] == "Deployed").count())
    };
    let after = second.instance_in_state(&cookie, &id, "Ready");
    assert!(deployed(&after) >= 2, "events of both runs are kept: {:#}", after["events"]);
    let logs = second.request("GET", &format!("/api/v1/instances/{id}/logs"), Some(&cookie), None).body;
    let starts = logs.matches("running as process").count();
    assert!(starts >= 2, "the logs of the killed run are still there: {logs}");

    // A graceful stop (SIGTERM) stops the replicas too.
    let replicas = processes_under(data.path());
    assert!(!replicas.is_empty());
    let pid = i32::try_from(second.child.id()).expect("pid");
    // SAFETY: kill(2) on the child we started; it touches no memory.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let mut second = second;
    second.child.wait().expect("kubefn exits");
    assert!(replicas.iter().all(|pid| !alive(*pid)));
    assert_eq!(
        processes_under(data.path()),
        Vec::<u32>::new(),
        "no replica or warm process is left after a graceful stop"
    );
}
