//! Hostile tenants on the local runtime: the real kubefn binary (with an admin password and a
//! secret in its own environment) runs functions written to attack it, one test per attack,
//! each next to a well-behaved function that must keep answering. The sandbox (bubblewrap,
//! setpriv, cgroups) is what stops them; these tests need root, bwrap and writable cgroups,
//! and fail under CI=true without them.

use process::{Server, free_port, processes_under, sandbox_available};
use serde_json::{Value, json};
use std::time::Duration;

#[path = "support/process.rs"]
mod process;

/// Put in kubefn's environment: no function may ever read it.
const SECRET: &str = "kubefn-test-secret-7c1f9e";
const ADMIN_PASSWORD: &str = "admin-password-3b8d21";

struct Tenancy {
    server: Server,
    data: tempfile::TempDir,
}

impl Tenancy {
    fn start(extra: &[(&str, &str)]) -> Option<Tenancy> {
        if !sandbox_available() {
            return None;
        }
        let data = tempfile::tempdir().expect("data dir");
        let server = Server::start_with(free_port(), |command| {
            command
                .env("KUBEFN_DATA_DIR", data.path())
                .env("KUBEFN_ADMIN", format!("admin:{ADMIN_PASSWORD}"))
                .env("KUBEFN_TEST_SECRET", SECRET)
                .env("KUBEFN_DRAIN_SECONDS", "1");
            for (name, value) in extra {
                command.env(name, value);
            }
        });
        Some(Tenancy { server, data })
    }

    /// A user with a well-behaved function deployed and answering.
    fn bystander(&self) -> (String, String) {
        let cookie = self.server.sign_up("bystander");
        let id = self.server.deploy(
            &cookie,
            &json!({"name": "echo", "runtime": "python", "source": "def handle(req):\n    return 'echo ' + req\n"}),
        );
        self.server.instance_in_state(&cookie, &id, "Ready");
        self.assert_bystander_answers(&cookie);
        (cookie, id)
    }

    fn assert_bystander_answers(&self, cookie: &str) {
        let answer = self.server.invoke(cookie, "bystander", "echo", "still here");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "echo still here"),
            "the well-behaved function keeps answering"
        );
        assert_eq!(self.server.request("GET", "/healthz", None, None).status, 200, "kubefn keeps answering");
    }

    /// Signs up `user`, deploys `spec` as theirs and waits until it is Ready.
    fn attacker(&self, user: &str, spec: Value) -> (String, String) {
        let cookie = self.server.sign_up(user);
        let id = self.server.deploy(&cookie, &spec);
        self.server.instance_in_state(&cookie, &id, "Ready");
        (cookie, id)
    }

    fn data_dir(&self) -> String {
        self.data.path().display().to_string()
    }
}

/// A Python function whose handler runs `body` (indented by the caller) and returns `result`.
fn attack(name: &str, body: &str, env: Value) -> Value {
    json!({
        "name": name,
        "runtime": "python",
        "source": format!("import json, os, socket, time, threading\n\ndef handle(req):\n    result = {{}}\n{body}\n    return json.dumps(result)\n"),
        "env": env,
        "timeout_s": 30,
    })
}

fn invoke_json(tenancy: &Tenancy, cookie: &str, user: &str, function: &str) -> Value {
    let answer = tenancy.server.invoke(cookie, user, function, "");
    assert_eq!(answer.status, 200, "{function}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("{function} answered {}", answer.body))
}

#[test]
fn a_function_cannot_read_kubefns_database_environment_or_data() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let (bystander, _) = tenancy.bystander();
    let body = r#"
    data = os.environ["TARGET"]
    for path in [data + "/kubefn.db", data + "/kubefn.db-wal", data + "/runtime/logs", "/proc/1/environ", "/proc/self/environ"]:
        try:
            with open(path, "rb") as f:
                result[path] = f.read(4096).decode("latin-1")
        except Exception as error:
            result[path] = "refused: " + type(error).__name__
    # Every process the function can see, and what their environments hold.
    result["pids"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
    for pid in result["pids"]:
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                result["environ " + pid] = f.read().decode("latin-1")
        except Exception as error:
            result["environ " + pid] = "refused: " + type(error).__name__
    result["env"] = dict(os.environ)
    result["uid"] = os.getuid()
    found = []
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/usr", "/dev")]
        found += [os.path.join(root, f) for f in files if f.startswith("kubefn.db")]
    result["found"] = found"#;
    let (cookie, _) = tenancy.attacker("mallory", attack("snoop", body, json!({"TARGET": tenancy.data_dir()})));
    let result = invoke_json(&tenancy, &cookie, "mallory", "snoop");
    let text = result.to_string();
    assert!(!text.contains("SQLite format 3"), "the database was read: {text}");
    assert!(!text.contains(SECRET), "kubefn's environment was read: {text}");
    assert!(!text.contains(ADMIN_PASSWORD), "the admin password was read: {text}");
    assert_eq!(result["found"], json!([]), "{text}");
    assert_eq!(result["uid"], 65534, "function code runs as an unprivileged user");
    let data = tenancy.data_dir();
    assert!(result[format!("{data}/kubefn.db")].as_str().unwrap_or_default().starts_with("refused"), "{text}");
    // Only the sandbox's own processes are visible (its init and the bootstrap).
    let pids = result["pids"].as_array().map_or(0, Vec::len);
    assert!(pids <= 3, "other processes are visible: {text}");
    tenancy.assert_bystander_answers(&bystander);
}

#[test]
fn a_function_cannot_read_another_instances_source_or_logs() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let victim = tenancy.server.sign_up("victim");
    let victim_secret = "victim-source-secret-91d2";
    let victim_id = tenancy.server.deploy(
        &victim,
        &json!({"name": "private", "runtime": "python", "source": format!("print('{victim_secret} in the logs', flush=True)\ndef handle(req):\n    return '{victim_secret}'\n")}),
    );
    tenancy.server.instance_in_state(&victim, &victim_id, "Ready");
    let body = r#"
    data = os.environ["TARGET"]
    victim = os.environ["VICTIM"]
    for path in [data + "/runtime/instances/" + victim + "/v1/function.py", data + "/runtime/logs/" + victim + ".log"]:
        try:
            with open(path) as f:
                result[path] = f.read()
        except Exception as error:
            result[path] = "refused: " + type(error).__name__
    seen = []
    for root, dirs, files in os.walk("/kubefn"):
        for f in files:
            try:
                with open(os.path.join(root, f), errors="replace") as handle:
                    seen.append(handle.read())
            except Exception:
                pass
    result["kubefn files"] = seen"#;
    let (cookie, _) =
        tenancy.attacker("mallory", attack("peek", body, json!({"TARGET": tenancy.data_dir(), "VICTIM": victim_id})));
    let text = invoke_json(&tenancy, &cookie, "mallory", "peek").to_string();
    assert!(!text.contains(victim_secret), "another instance's source or logs were read: {text}");
    let answer = tenancy.server.invoke(&victim, "victim", "private", "");
    assert_eq!(answer.body, victim_secret);
}

#[test]
fn a_function_cannot_write_the_dependency_cache() {
    let wheels = tempfile::tempdir().expect("wheels");
    write_wheel(wheels.path());
    let links = wheels.path().display().to_string();
    let Some(tenancy) = Tenancy::start(&[("PIP_NO_INDEX", "1"), ("PIP_FIND_LINKS", &links)]) else { return };
    let (bystander, _) = tenancy.bystander();
    let body = r#"
    import kubefngreet
    deps = os.environ["KUBEFN_DEPS"]
    target = os.path.join(deps, "kubefngreet", "__init__.py")
    for what, action in [("append", lambda: open(target, "a").write("WORD = 'owned'\n")),
                         ("create", lambda: open(os.path.join(deps, "evil.py"), "w").write("x = 1\n")),
                         ("chmod", lambda: os.chmod(target, 0o777))]:
        try:
            action()
            result[what] = "done"
        except Exception as error:
            result[what] = "refused: " + type(error).__name__
    result["word"] = kubefngreet.WORD"#;
    let mut spec = attack("poison", body, json!({}));
    spec["requirements"] = json!("kubefngreet==1.0\n");
    let (cookie, _) = tenancy.attacker("mallory", spec);
    let result = invoke_json(&tenancy, &cookie, "mallory", "poison");
    for what in ["append", "create", "chmod"] {
        assert!(result[what].as_str().unwrap_or_default().starts_with("refused"), "{what}: {result}");
    }
    assert_eq!(result["word"], "from-a-wheel");
    // A second user of the same package gets it unchanged.
    let mut honest = attack("honest", "    import kubefngreet\n    result['word'] = kubefngreet.WORD", json!({}));
    honest["requirements"] = json!("kubefngreet==1.0\n");
    let (cookie, _) = tenancy.attacker("carol", honest);
    assert_eq!(invoke_json(&tenancy, &cookie, "carol", "honest")["word"], "from-a-wheel");
    tenancy.assert_bystander_answers(&bystander);
}

#[test]
fn a_fork_bomb_stays_inside_its_process_limit() {
    let Some(tenancy) = Tenancy::start(&[("KUBEFN_PIDS_LIMIT", "64")]) else { return };
    let (bystander, _) = tenancy.bystander();
    let body = r#"
    children = 0
    error = ""
    for _ in range(10000):
        try:
            pid = os.fork()
        except OSError as failure:
            error = type(failure).__name__
            break
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        children += 1
    result["children"] = children
    result["error"] = error"#;
    let (cookie, _) = tenancy.attacker("mallory", attack("bomb", body, json!({})));
    let result = invoke_json(&tenancy, &cookie, "mallory", "bomb");
    let children = result["children"].as_u64().unwrap_or(u64::MAX);
    assert!(children < 64, "the fork bomb went past its limit of 64: {result}");
    assert_eq!(result["error"], "BlockingIOError", "{result}");
    tenancy.assert_bystander_answers(&bystander);
    // A new process still starts on this machine and kubefn still serves.
    assert!(std::process::Command::new("true").status().expect("fork").success());
}

#[test]
fn cpu_use_stays_at_the_limit() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let (bystander, _) = tenancy.bystander();
    // Two busy threads want two cores; the limit grants a fifth of one.
    let body = r#"
    stop = time.time() + 3
    def burn():
        while time.time() < stop:
            pass
    threads = [threading.Thread(target=burn) for _ in range(2)]
    started, cpu = time.time(), time.process_time()
    for t in threads: t.start()
    for t in threads: t.join()
    result["cores"] = (time.process_time() - cpu) / (time.time() - started)"#;
    let mut spec = attack("burn", body, json!({}));
    // 0.2 cores, written as Kubernetes also accepts it, is 200m to the kernel.
    spec["resources"] = json!({"cpu": "100m", "memory": "64Mi", "cpu_limit": "0.2", "memory_limit": "128Mi"});
    let (cookie, id) = tenancy.attacker("mallory", spec);
    let cores = invoke_json(&tenancy, &cookie, "mallory", "burn")["cores"].as_f64().expect("cores");
    eprintln!("measured CPU of a function limited to 200m with two busy threads: {cores:.3} cores");
    assert!((0.18..=0.22).contains(&cores), "CPU {cores:.3} cores, limit 0.2 ± 10 %");
    let instance = tenancy.server.instance_in_state(&cookie, &id, "Ready");
    let limits = instance["limits"].as_str().unwrap_or_default();
    assert!(limits.contains("CPU limit 0.2: enforced by the kernel"), "{limits}");
    tenancy.assert_bystander_answers(&bystander);
}

#[test]
fn memory_past_the_limit_is_killed_by_the_kernel_and_reported() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let (bystander, _) = tenancy.bystander();
    let body = r#"
    hog = bytearray(300 * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    result["survived"] = len(hog)"#;
    let mut spec = attack("hog", body, json!({}));
    // 96Mi, written as a fraction of a Gi as Kubernetes also accepts it.
    spec["resources"] = json!({"cpu": "100m", "memory": "64Mi", "cpu_limit": "1", "memory_limit": "0.09375Gi"});
    let (cookie, id) = tenancy.attacker("mallory", spec);
    let answer = tenancy.server.invoke(&cookie, "mallory", "hog", "");
    assert_ne!(answer.status, 200, "300 MiB in a 96 MiB replica: {}", answer.body);
    let instance = tenancy.server.instance_until(&cookie, &id, "an OOMKilled event", |instance| {
        instance["events"].as_array().is_some_and(|events| events.iter().any(|e| e["reason"] == "OOMKilled"))
    });
    let event = instance["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["reason"] == "OOMKilled"))
        .cloned()
        .unwrap_or_default();
    assert!(event["message"].as_str().unwrap_or_default().contains("memory limit of 0.09375Gi"), "{event}");
    // The replica is restarted and serves again.
    tenancy.server.instance_in_state(&cookie, &id, "Ready");
    tenancy.assert_bystander_answers(&bystander);
}

#[test]
fn tmp_fills_only_up_to_its_size() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let (bystander, _) = tenancy.bystander();
    let body = r#"
    written = 0
    error = ""
    chunk = b"x" * (1024 * 1024)
    try:
        with open("/tmp/fill", "wb") as f:
            for _ in range(200):
                f.write(chunk)
                f.flush()
                written += len(chunk)
    except OSError as failure:
        error = failure.strerror
    result["written"] = written
    result["error"] = error
    os.remove("/tmp/fill")
    handles = []
    try:
        while len(handles) < 100000:
            handles.append(open("/dev/null"))
    except OSError as failure:
        result["files error"] = failure.strerror
    result["files"] = len(handles)
    for handle in handles:
        handle.close()"#;
    let (cookie, _) = tenancy.attacker("mallory", attack("filler", body, json!({})));
    let result = invoke_json(&tenancy, &cookie, "mallory", "filler");
    let written = result["written"].as_u64().unwrap_or(u64::MAX);
    assert!(written <= 64 << 20, "{result}");
    assert_eq!(result["error"], "No space left on device", "{result}");
    // Open files stop at the sandbox's 1024 (a few are the bootstrap's own).
    let files = result["files"].as_u64().unwrap_or(u64::MAX);
    assert!((900..1024).contains(&files), "{result}");
    assert_eq!(result["files error"], "Too many open files", "{result}");
    tenancy.assert_bystander_answers(&bystander);
}

#[test]
fn without_a_sandbox_kubefn_refuses_to_start_unless_single_user() {
    if !sandbox_available() {
        return;
    }
    // kubefn as an unprivileged user cannot give function code an identity of its own.
    let data = tempfile::tempdir().expect("data dir");
    std::os::unix::fs::chown(data.path(), Some(65534), Some(65534)).expect("chown");
    // A copy uid 65534 can reach: the checkout may sit under a directory only its owner may
    // enter (a clone into `mktemp -d`, say).
    let reachable = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(reachable.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let binary = reachable.path().join("kubefn");
    std::fs::copy(env!("CARGO_BIN_EXE_kubefn"), &binary).expect("copy the binary");
    let start = |single_user: &str| {
        let mut command = std::process::Command::new(&binary);
        command.current_dir(reachable.path());
        std::os::unix::process::CommandExt::uid(&mut command, 65534);
        std::os::unix::process::CommandExt::gid(&mut command, 65534);
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("KUBEFN_DATA_DIR", data.path().join("data"))
            .env("KUBEFN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("KUBEFN_SINGLE_USER", single_user)
            .env("KUBEFN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command
    };
    let refused = start("false").output().expect("kubefn runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("cannot be sandboxed") && said.contains("--single-user") && said.contains("not root"),
        "{said}"
    );

    let mut single = start("true").spawn().expect("kubefn runs");
    std::thread::sleep(Duration::from_secs(3));
    let still_running = single.try_wait().expect("wait").is_none();
    let _ = single.kill();
    let output = single.wait_with_output().expect("output");
    // Without a sandbox nothing ends its warm processes with it (the next start on this data
    // directory would, from their pid files); this test starts no next one, so it stops them.
    for _ in 0..50 {
        let left = processes_under(data.path());
        if left.is_empty() {
            break;
        }
        for pid in left {
            // SAFETY: kill(2) on a process this test's kubefn started; it touches no memory.
            unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(processes_under(data.path()), Vec::<u32>::new(), "the test leaves nothing running");
    assert!(still_running, "--single-user starts without the sandbox: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn kubefn_and_other_instances_are_unreachable_from_a_function() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let (bystander, bystander_id) = tenancy.bystander();
    let node_port = tenancy.server.instance_in_state(&bystander, &bystander_id, "Ready")["urls"]["node_port"]
        .as_str()
        .and_then(|url| url.rsplit(':').next())
        .and_then(|port| port.parse::<u16>().ok())
        .expect("node port");
    let body = r#"
    for name, address in [("kubefn", ("127.0.0.1", int(os.environ["TARGET_PORT"]))),
                          ("node port", ("127.0.0.1", int(os.environ["NODE_PORT"])))]:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(address)
            result[name] = "connected"
        except Exception as error:
            result[name] = "refused: " + type(error).__name__
        finally:
            s.close()
    result["sockets"] = [p for p in os.listdir(os.path.dirname(os.environ["KUBEFN_SOCKET"]))]
    # Its network namespace has loopback only: no route leads anywhere else.
    result["interfaces"] = [name for _, name in socket.if_nameindex()]"#;
    let env = json!({"TARGET_PORT": tenancy.server.port.to_string(), "NODE_PORT": node_port.to_string()});
    let (cookie, _) = tenancy.attacker("mallory", attack("reach", body, env));
    let result = invoke_json(&tenancy, &cookie, "mallory", "reach");
    for name in ["kubefn", "node port"] {
        assert!(result[name].as_str().unwrap_or_default().starts_with("refused"), "{name}: {result}");
    }
    assert_eq!(result["sockets"], json!(["http.sock"]), "only its own socket: {result}");
    assert_eq!(result["interfaces"], json!(["lo"]), "{result}");
    tenancy.assert_bystander_answers(&bystander);
}

#[test]
fn requirement_lines_cannot_leak_kubefns_environment() {
    let Some(tenancy) = Tenancy::start(&[]) else { return };
    let cookie = tenancy.server.sign_up("mallory");
    for requirements in [
        "-r /proc/self/environ\n",
        "requests\n-c /proc/1/environ\n",
        "--index-url http://127.0.0.1:1/\n",
        "x @ file:///proc/self/environ\n",
    ] {
        let spec = json!({"name": "leak", "runtime": "python", "source": "def handle(req):\n    return req\n", "requirements": requirements});
        let answer = tenancy.server.request("POST", "/api/v1/functions", Some(&cookie), Some(&spec.to_string()));
        assert_eq!(answer.status, 422, "{requirements}: {}", answer.body);
        assert_eq!(answer.json()["field"], "requirements", "{}", answer.body);
        assert!(!answer.body.contains(SECRET));
        assert_eq!(
            tenancy.server.request("GET", "/api/v1/functions/leak", Some(&cookie), None).status,
            404,
            "nothing was stored"
        );
    }
    let node = json!({"name": "leak", "runtime": "node", "source": "module.exports = async () => 1;", "requirements": r#"{"dependencies": {"x": "file:/proc/self"}}"#});
    let answer = tenancy.server.request("POST", "/api/v1/functions", Some(&cookie), Some(&node.to_string()));
    assert_eq!((answer.status, answer.json()["field"].clone()), (422, json!("requirements")), "{}", answer.body);
}

#[test]
fn the_bootstrap_test_suites_pass_inside_the_sandbox() {
    use kubefn::platform::runtime::local::launch;
    use kubefn::platform::runtime::local::sandbox::{
        Bind, Confined, Isolation, Network, Program, Sandbox, SandboxSettings, inside,
    };
    if !sandbox_available() {
        return;
    }
    let python = launch::python_executable(std::path::Path::new("python3"));
    let node = launch::node_executable(std::path::Path::new("node"));
    let sandbox = Sandbox::detect(SandboxSettings::default(), &[python.clone(), node.clone()]).expect("sandbox");
    let isolation = Isolation::Sandboxed(sandbox);
    let runtimes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtimes");
    let env = vec![
        ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME".to_string(), "/tmp".to_string()),
    ];
    let suites: [(&std::path::Path, Vec<String>, &str); 2] = [
        (
            &python,
            ["-m", "unittest", "discover", "-s", inside::FUNCTION, "-p", "test_*.py"].map(String::from).to_vec(),
            "python",
        ),
        (&node, ["--test", inside::FUNCTION].map(String::from).to_vec(), "node"),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    for (program, args, language) in suites {
        let binds = [Bind::read_only(runtimes.join(language), inside::FUNCTION)];
        let confined = Confined {
            program: Program {
                path: program,
                args: &args,
                env: &env,
                binds: &binds,
                files: &[],
                workdir: std::path::Path::new(inside::FUNCTION),
            },
            network: Network::None,
            cgroup: None,
        };
        let output = runtime
            .block_on(async {
                let child = isolation.spawn(&confined).expect("starts");
                tokio::time::timeout(Duration::from_secs(180), child.wait_with_output()).await
            })
            .expect("in time")
            .expect("runs");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "the {language} bootstrap suite inside the sandbox:\n{text}");
    }
}

/// A minimal pure-Python wheel (`kubefngreet`), written with Python's zipfile.
fn write_wheel(dir: &std::path::Path) {
    let script = r#"
import sys, zipfile
path = sys.argv[1] + "/kubefngreet-1.0-py3-none-any.whl"
with zipfile.ZipFile(path, "w") as wheel:
    wheel.writestr("kubefngreet/__init__.py", "WORD = 'from-a-wheel'\n")
    wheel.writestr("kubefngreet-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: kubefngreet\nVersion: 1.0\n")
    wheel.writestr("kubefngreet-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: kubefn-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    wheel.writestr("kubefngreet-1.0.dist-info/RECORD", "")
"#;
    let status = std::process::Command::new("python3").args(["-c", script]).arg(dir).status().expect("python3");
    assert!(status.success());
    // The directory must be readable by the sandbox's user.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
}
