//! The real `kubefn` binary is killed with SIGKILL and started again on the same data
//! directory: users, sessions, functions and deployed instances are all still there, and the
//! replica processes the killed one left are stopped and replaced.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(data: &std::path::Path, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_kubefn"))
            .env("KUBEFN_LISTEN", format!("127.0.0.1:{port}"))
            .env("KUBEFN_DATA_DIR", data)
            .env("KUBEFN_LOG", "warn")
            .env("KUBEFN_RECONCILE_SECONDS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubefn starts");
        let server = Server { child, port };
        for _ in 0..200 {
            if server.request("GET", "/readyz", None, None).0 == 200 {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kubefn did not become ready");
    }

    /// A minimal HTTP/1.1 exchange: (status, Set-Cookie pair if any, body).
    fn request(&self, method: &str, path: &str, cookie: Option<&str>, json: Option<&str>) -> (u16, Option<String>, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return (0, None, String::new()) };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(cookie) = cookie {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        let body = json.unwrap_or("");
        if json.is_some() {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(body.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let cookie = answer
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (status, cookie, body)
    }

    fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn nothing_is_lost_when_kubefn_is_killed() {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let first = Server::start(data.path(), port);
    let (status, cookie, _) = first.request("POST", "/api/v1/signup", None, Some(r#"{"name":"kim","password":"kim-password"}"#));
    assert_eq!(status, 201);
    let cookie = cookie.expect("session cookie");
    let spec = r#"{"name":"survivor","runtime":"python","source":"def handle(req):\n    return req\n"}"#;
    assert_eq!(first.request("POST", "/api/v1/functions", Some(&cookie), Some(spec)).0, 201);
    let edit = r#"{"name":"survivor","runtime":"python","source":"def handle(req):\n    return 'v2'\n"}"#;
    assert_eq!(first.request("PUT", "/api/v1/functions/survivor", Some(&cookie), Some(edit)).0, 200);
    first.kill_hard();

    let second = Server::start(data.path(), port);
    let (status, _, body) = second.request("GET", "/api/v1/functions/survivor", Some(&cookie), None);
    assert_eq!(status, 200, "the session survived the crash too: {body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(detail["version"], 2);
    assert_eq!(detail["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["spec"]["source"], "def handle(req):\n    return 'v2'\n");
}

/// Polls an instance until its state is `state`, returning its JSON.
fn instance_in_state(server: &Server, cookie: &str, id: &str, state: &str) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..400 {
        let (status, _, body) = server.request("GET", &format!("/api/v1/instances/{id}"), Some(cookie), None);
        if status == 200 {
            let instance: serde_json::Value = serde_json::from_str(&body).expect("json");
            if instance["state"] == state {
                return instance;
            }
        }
        last = body;
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("instance {id} never became {state}; last: {last}");
}

/// Whether process `pid` runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// The live processes whose command line mentions `dir` (every replica and warm process of a
/// kubefn runs a bootstrap from its data directory).
fn processes_under(dir: &std::path::Path) -> Vec<u32> {
    let marker = dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).contains(&marker) && alive(*pid))
        .collect()
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
    let (_, cookie, _) = first.request("POST", "/api/v1/signup", None, Some(r#"{"name":"kim","password":"kim-password"}"#));
    let cookie = cookie.expect("session cookie");
    let spec = r#"{"name":"phoenix","runtime":"python","source":"import os\ndef handle(req):\n    return str(os.getpid())\n"}"#;
    assert_eq!(first.request("POST", "/api/v1/functions", Some(&cookie), Some(spec)).0, 201);
    let (status, _, body) = first.request("POST", "/api/v1/functions/phoenix/deploy", Some(&cookie), None);
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"].as_str().expect("id").to_string();
    let before = instance_in_state(&first, &cookie, &id, "Ready");
    let old_pid: u32 = invoke(&before["urls"]["node_port"]).parse().expect("pid");
    // One reconcile pass (every second here) stores the events.
    std::thread::sleep(Duration::from_millis(1500));
    first.kill_hard();
    assert!(alive(old_pid), "the replica outlives a killed kubefn");

    let second = Server::start(data.path(), port);
    let after = instance_in_state(&second, &cookie, &id, "Ready");
    assert_eq!(after["urls"]["node_port"], before["urls"]["node_port"], "the instance keeps its node port");
    let new_pid: u32 = invoke(&after["urls"]["node_port"]).parse().expect("pid");
    assert_ne!(new_pid, old_pid, "a new replica serves");
    assert!(!alive(old_pid), "the leftover replica was stopped");
    let deployed = |instance: &serde_json::Value| {
        instance["events"].as_array().map_or(0, |events| events.iter().filter(|e| e["reason"] == "Deployed").count())
    };
    let after = instance_in_state(&second, &cookie, &id, "Ready");
    assert!(deployed(&after) >= 2, "events of both runs are kept: {:#}", after["events"]);
    let (_, _, logs) = second.request("GET", &format!("/api/v1/instances/{id}/logs"), Some(&cookie), None);
    let starts = logs.matches("running as process").count();
    assert!(starts >= 2, "the logs of the killed run are still there: {logs}");

    // A graceful stop (SIGTERM) stops the replicas too.
    let pid = i32::try_from(second.child.id()).expect("pid");
    // SAFETY: kill(2) on the child we started; it touches no memory.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let mut second = second;
    second.child.wait().expect("kubefn exits");
    assert!(!alive(new_pid));
    assert_eq!(processes_under(data.path()), Vec::<u32>::new(), "no replica or warm process is left after a graceful stop");
}
