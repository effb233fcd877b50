//! The real `kubefn` binary as a child process, and a minimal HTTP client for it: the tests
//! that must see kubefn as users and operators do (its own environment, its working
//! directory, SIGKILL and restarts).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running kubefn; killed when dropped. Its HTTP client's methods are its own (`Deref`).
pub struct Server {
    /// The process.
    pub child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    client: Client,
}

/// A minimal HTTP/1.1 client for a kubefn at `address` (a child process here, or a pod).
#[derive(Clone, Copy)]
pub struct Client {
    /// Where kubefn answers.
    pub address: SocketAddr,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// An HTTP answer: status, the `Set-Cookie` pair if any, body.
pub struct Answer {
    pub status: u16,
    pub cookie: Option<String>,
    pub body: String,
}

impl Answer {
    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Server {
    /// kubefn over `data` on `port`, with node ports of its own: the tests of one binary run
    /// at once, and a node port a killed kubefn freed would otherwise go to another test's
    /// instance before the restarted kubefn takes it back. The range follows from `port`, so a
    /// restart on the same port gets the same one.
    pub fn start(data: &Path, port: u16) -> Server {
        let first = 20_000 + (port % 600) * 20;
        Server::start_with(port, |command| {
            command.env("KUBEFN_DATA_DIR", data).env("KUBEFN_NODE_PORT_RANGE", format!("{first}-{}", first + 19));
        })
    }

    /// kubefn on `port`, its command changed by `configure` (environment, working directory).
    pub fn start_with(port: u16, configure: impl FnOnce(&mut Command)) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kubefn"));
        command
            .env_remove("KUBEFN_DATA_DIR")
            .env("KUBEFN_LISTEN", format!("127.0.0.1:{port}"))
            .env("KUBEFN_LOG", "warn")
            .env("KUBEFN_RECONCILE_SECONDS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut command);
        let child = command.spawn().expect("kubefn starts");
        let mut server = Server { child, port, client: Client { address: SocketAddr::from(([127, 0, 0, 1], port)) } };
        for _ in 0..300 {
            if server.request("GET", "/readyz", None, None).status == 200 {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("kubefn exited during start-up with {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kubefn did not become ready");
    }

    /// SIGKILL, and wait for it.
    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// Calls made one after another on a thread of their own until [`SteadyCalls::stop`]: the
/// load a test keeps on kubefn while it rolls, fails over or restarts.
pub struct SteadyCalls {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl SteadyCalls {
    /// Stops the calls; how many were sent, and the status and body of every one not answered 200.
    pub fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the calling thread")
    }
}

impl Client {
    /// Starts `POST path` with `json`, as the session `cookie`, again and again with `pause`
    /// between calls, until stopped.
    pub fn steady_calls(&self, path: &str, cookie: &str, json: &str, pause: Duration) -> SteadyCalls {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, path, cookie, json) = (*self, path.to_string(), cookie.to_string(), json.to_string());
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut sent, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let answer = client.request("POST", &path, Some(&cookie), Some(&json));
                    sent += 1;
                    if answer.status != 200 {
                        failed.push(format!("{} {}", answer.status, answer.body));
                    }
                    std::thread::sleep(pause);
                }
                (sent, failed)
            }
        });
        SteadyCalls { stop, thread }
    }

    /// A minimal HTTP/1.1 exchange.
    pub fn request(&self, method: &str, path: &str, cookie: Option<&str>, json: Option<&str>) -> Answer {
        // Status 0 and the cause in the body when there is no HTTP answer at all.
        let failed = |stage: &str, error: std::io::Error| Answer {
            status: 0,
            cookie: None,
            body: format!("(no answer: {stage} {}: {error})", self.address),
        };
        // Bounded, so an unreachable kubefn fails a test with its cause instead of hanging it.
        let mut stream = match TcpStream::connect_timeout(&self.address, Duration::from_secs(10)) {
            Ok(stream) => stream,
            Err(error) => return failed("connect", error),
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.address);
        if let Some(cookie) = cookie {
            head.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        let body = json.unwrap_or("");
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
        if let Err(error) = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())) {
            return failed("write", error);
        }
        let mut answer = Vec::new();
        if let Err(error) = stream.read_to_end(&mut answer) {
            return failed("read", error);
        }
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        Answer { status, cookie, body }
    }

    /// Signs up `name` and returns the session cookie.
    pub fn sign_up(&self, name: &str) -> String {
        let answer = self.request(
            "POST",
            "/api/v1/signup",
            None,
            Some(&format!(r#"{{"name":"{name}","password":"{name}-password"}}"#)),
        );
        assert_eq!(answer.status, 201, "sign-up of {name}: {}", answer.body);
        answer.cookie.expect("a session cookie")
    }

    /// Registers `spec` and deploys it; returns the instance id.
    pub fn deploy(&self, cookie: &str, spec: &serde_json::Value) -> String {
        let name = spec["name"].as_str().expect("name");
        let registered = self.request("POST", "/api/v1/functions", Some(cookie), Some(&spec.to_string()));
        assert_eq!(registered.status, 201, "register {name}: {}", registered.body);
        let deployed = self.request("POST", &format!("/api/v1/functions/{name}/deploy"), Some(cookie), None);
        assert_eq!(deployed.status, 201, "deploy {name}: {}", deployed.body);
        deployed.json()["id"].as_str().expect("id").to_string()
    }

    /// Polls an instance until `done` holds, returning its JSON.
    pub fn instance_until(
        &self,
        cookie: &str,
        id: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = std::time::Instant::now();
        let mut last = Answer { status: 0, cookie: None, body: String::new() };
        for _ in 0..600 {
            let answer = self.request("GET", &format!("/api/v1/instances/{id}"), Some(cookie), None);
            if answer.status == 200 && done(&answer.json()) {
                return answer.json();
            }
            last = answer;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "instance {id}: timed out after {:?} waiting until {what}; last answer: {} {}",
            started.elapsed(),
            last.status,
            last.body
        );
    }

    /// Polls an instance until its state is `state`.
    pub fn instance_in_state(&self, cookie: &str, id: &str, state: &str) -> serde_json::Value {
        self.instance_until(cookie, id, state, |instance| instance["state"] == state)
    }

    /// Invokes `user`'s `function` through the gateway with `body`.
    pub fn invoke(&self, cookie: &str, user: &str, function: &str, body: &str) -> Answer {
        self.invoke_with(cookie, user, function, &[], body)
    }

    /// [`Client::invoke`] with more request headers.
    pub fn invoke_with(
        &self,
        cookie: &str,
        user: &str,
        function: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let path = format!("/fn/{user}/{function}/");
        let Ok(mut stream) = TcpStream::connect(self.address) else { panic!("kubefn answers") };
        let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {cookie}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(body.as_bytes()).expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        Answer { status, cookie: None, body }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so kubefn stops its replicas; SIGKILL if it takes too long.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the child we started; it touches no memory.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chunked body put back together.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Whether process `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// The live processes whose command line mentions `dir` (every replica and warm process of a
/// kubefn names its data directory: the sandbox binds from it).
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let marker = dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                .contains(&marker)
                && alive(*pid)
        })
        .collect()
}

/// Whether this host can run the sandbox; under CI=true it must.
pub fn sandbox_available() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let bwrap = std::path::Path::new("/usr/bin/bwrap").exists();
    let cgroups = std::path::Path::new("/sys/fs/cgroup/cpu").exists()
        || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let available = root && bwrap && cgroups;
    if !available {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true: the sandbox tests need root, /usr/bin/bwrap (Debian's bubblewrap) and cgroups"
        );
        eprintln!("skipped: the sandbox needs root, bwrap and cgroups");
    }
    available
}

/// Runs `script` with `sh -e` in `home` (also its HOME), as a user's shell runs the README's
/// examples: the kubefn binary first on PATH, and no login or kubefn variables of this
/// environment.
pub fn run_shell(script: &str, home: &Path) -> std::process::Output {
    let binaries = Path::new(env!("CARGO_BIN_EXE_kubefn")).parent().expect("bin dir").display().to_string();
    Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(home)
        .env("HOME", home)
        .env("PATH", format!("{binaries}:{}", std::env::var("PATH").unwrap_or_default()))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("KUBEFN_URL")
        .env_remove("KUBEFN_TOKEN")
        .output()
        .expect("sh runs")
}
