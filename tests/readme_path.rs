//! The README's `make run`, as a newcomer runs it: the real binary started from a directory
//! laid out like a fresh clone with no data-directory setting (so the relative default
//! `data`), then a Python and a Node function deployed and invoked through the REST API and
//! the gateway. Nothing else in the suite but the browser run (`end2end/run.sh`, laid out the
//! same way) runs kubefn with a relative data directory.

use process::{Server, free_port};
use serde_json::json;

#[path = "support/process.rs"]
mod process;

#[test]
fn make_run_as_the_readme_says_deploys_and_invokes_python_and_node() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Not the checkout itself: its ./data is the developer's own `make run` installation, which
    // a test must neither write into nor share with a second kubefn. A directory whose target/
    // is this checkout's is what kubefn sees of a fresh clone (the site root is relative to it).
    let clone = tempfile::tempdir().expect("a directory laid out like a fresh clone");
    std::os::unix::fs::symlink(repo.join("target"), clone.path().join("target")).expect("target/ linked");
    let server = Server::start_with(free_port(), |command| {
        command.current_dir(clone.path());
    });
    let data = clone.path().join("data");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&data).expect("./data exists").permissions());
    assert_eq!(mode & 0o777, 0o700, "the data directory is kubefn's alone");

    let user = "newcomer";
    let cookie = server.sign_up(user);
    let python =
        json!({"name": "hello-py", "runtime": "python", "source": "def handle(req):\n    return 'hello ' + req\n"});
    let node = json!({"name": "hello-js", "runtime": "node", "source": "module.exports = async (event) => `hi ${event.body}`;\n"});
    let broken = json!({"name": "broken-py", "runtime": "python", "source": "def handle(req)\n    return req\n"});
    let ids: Vec<String> = [&python, &node, &broken].iter().map(|spec| server.deploy(&cookie, spec)).collect();

    server.instance_in_state(&cookie, &ids[0], "Ready");
    server.instance_in_state(&cookie, &ids[1], "Ready");
    let answer = server.invoke(&cookie, user, "hello-py", "newcomer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello newcomer"));
    let answer = server.invoke(&cookie, user, "hello-js", "newcomer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hi newcomer"));
    // Large bodies arrive intact through the gateway's vectored writes to the replica's socket.
    for length in [1 << 20, 5 << 20] {
        let body: String = (0..length).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let answer = server.invoke(&cookie, user, "hello-js", &body);
        assert_eq!(answer.status, 200, "a body of {length} bytes");
        assert!(answer.body == format!("hi {body}"), "a body of {length} bytes arrives intact");
    }

    // A function that cannot start says why, without kubefn's own paths.
    let failed = server.instance_in_state(&cookie, &ids[2], "Failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("syntax error"), "{message}");
    let host_paths = [repo.display().to_string(), clone.path().display().to_string()];
    let shows_host_path = |text: &str| host_paths.iter().any(|path| text.contains(path.as_str()));
    for instance in
        ids.iter().map(|id| server.request("GET", &format!("/api/v1/instances/{id}"), Some(&cookie), None).body)
    {
        assert!(
            !shows_host_path(&instance) && !instance.contains("/runtime/"),
            "host paths reach the client: {instance}"
        );
    }
    let logs = server.request("GET", &format!("/api/v1/instances/{}/logs", ids[2]), Some(&cookie), None).body;
    assert!(!shows_host_path(&logs), "host paths reach the client through the logs: {logs}");

    for name in ["hello-py", "hello-js", "broken-py"] {
        let deleted = server.request("DELETE", &format!("/api/v1/functions/{name}/deploy"), Some(&cookie), None);
        assert!(deleted.status < 300, "delete {name}: {} {}", deleted.status, deleted.body);
        let unregistered = server.request("DELETE", &format!("/api/v1/functions/{name}"), Some(&cookie), None);
        assert!(unregistered.status < 300, "unregister {name}: {} {}", unregistered.status, unregistered.body);
    }
}

/// Started as distributions start a program (a soft limit of 1,024 open files), kubefn raises
/// its own soft limit to the hard one: each gateway connection, replica socket and live-log
/// follower is an open file, and 1,000 followers alone would pass 1,024.
#[test]
fn kubefn_lifts_its_open_files_limit_to_the_hard_limit() {
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::start_with(free_port(), |command| {
        command.env("KUBEFN_DATA_DIR", data.path());
        // SAFETY: setrlimit only changes the child about to exec kubefn.
        unsafe {
            command.pre_exec(|| {
                let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                limit.rlim_cur = limit.rlim_max.min(1024);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).expect("limits");
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).expect("open files line");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit raised to the hard one: {open_files}");
}

/// Functions written for the peers run unchanged behind kubefn's gateway: the sample handlers
/// of OpenFaaS's node18/20/22 and python3-http templates and of Kubeless's Python runtime,
/// deployed through the REST API and called at their gateway URLs.
#[test]
fn the_peers_sample_functions_run_unchanged_behind_the_gateway() {
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::start(data.path(), free_port());
    let cookie = server.sign_up("porter");
    let samples = [
        (
            json!({"name": "of-node", "runtime": "node", "source": "module.exports = async (event, context) => {\n  const result = {\n    'body': JSON.stringify(event.body),\n    'content-type': event.headers[\"content-type\"]\n  }\n\n  return context\n    .status(200)\n    .succeed(result)\n}\n"}),
            "ported",
            r#"{"body":"\"ported\"","content-type":"text/plain"}"#,
        ),
        (
            json!({"name": "of-python3-http", "runtime": "python", "source": "def handle(event, context):\n    # TODO implement\n    return {\n        \"statusCode\": 200,\n        \"body\": \"Hello from OpenFaaS!\"\n    }"}),
            "",
            "Hello from OpenFaaS!",
        ),
        (
            json!({"name": "kubeless-python", "runtime": "python", "handler": "handler", "source": "def handler(event, context):\n    print (event)\n    return event['data']\n"}),
            "ported data",
            "ported data",
        ),
    ];
    let ids: Vec<String> = samples.iter().map(|(spec, ..)| server.deploy(&cookie, spec)).collect();
    for ((spec, body, expected), id) in samples.iter().zip(&ids) {
        server.instance_in_state(&cookie, id, "Ready");
        let name = spec["name"].as_str().expect("name");
        let answer = server.invoke(&cookie, "porter", name, body);
        assert_eq!((answer.status, answer.body.as_str()), (200, *expected), "{name}");
    }
}

/// The README's tracing example: a call with a W3C `traceparent` continues that trace (the
/// function sees the trace id with the gateway's span as its parent), a call without one starts
/// a trace, with `KUBEFN_LOG=…,invocations=info` kubefn's log names each call's trace, and with
/// `KUBEFN_OTLP_ENDPOINT` the gateway's spans reach an OTLP collector.
#[test]
fn the_gateway_continues_or_starts_a_trace_and_logs_it_with_the_invocation() {
    let data = tempfile::tempdir().expect("data dir");
    let log_path = data.path().join("kubefn.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let collector = Collector::start();
    let server = Server::start_with(free_port(), |command| {
        command
            .env("KUBEFN_DATA_DIR", data.path())
            .env("KUBEFN_LOG", "warn,invocations=info")
            .env("KUBEFN_OTLP_ENDPOINT", format!("http://{}", collector.address))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(log);
    });
    let cookie = server.sign_up("tracer");
    let echo = json!({"name": "traced", "runtime": "python", "source":
        "def handle(event, context):\n    return event.headers.get('traceparent', '') + ' ' + event.headers.get('tracestate', '-')\n"});
    let id = server.deploy(&cookie, &echo);
    server.instance_in_state(&cookie, &id, "Ready");

    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("traceparent", caller), ("tracestate", "vendor=opaque")];
    let continued = server.invoke_with(&cookie, "tracer", "traced", &headers, "");
    assert_eq!(continued.status, 200, "{}", continued.body);
    let (traceparent, tracestate) = continued.body.split_once(' ').expect("two fields");
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "the caller's trace: {traceparent}");
    assert!(traceparent.ends_with("-01") && traceparent.len() == 55, "{traceparent}");
    assert!(!traceparent.contains("00f067aa0ba902b7"), "the gateway's own span is the parent: {traceparent}");
    assert_eq!(tracestate, "vendor=opaque");
    let gateway_span = traceparent[36..52].to_string();

    let forged = [("traceparent", "00-not-a-trace-01"), ("tracestate", "vendor=forged")];
    let started = server.invoke_with(&cookie, "tracer", "traced", &forged, "");
    let (traceparent, tracestate) = started.body.split_once(' ').expect("two fields");
    assert_eq!((traceparent.len(), tracestate), (55, "-"), "a new trace, the foreign state dropped");
    let new_trace = &traceparent[3..35];

    let mut lines = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log_path).expect("log");
        lines = text.lines().filter(|line| line.contains("invocations")).map(str::to_string).collect();
        if lines.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for trace in ["4bf92f3577b34da6a3ce929d0e0e4736", new_trace] {
        let line = lines.iter().find(|line| line.contains(&format!("trace_id={trace}")));
        let line = line.unwrap_or_else(|| panic!("no invocation line for {trace}: {lines:#?}"));
        assert!(line.contains("tracer") && line.contains("traced") && line.contains("status=200"), "{line}");
    }

    // With KUBEFN_OTLP_ENDPOINT the gateway's spans reach the collector with the same ids.
    let spans = collector.spans_until(2);
    let continued = spans.iter().find(|s| s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736").expect("the span");
    assert_eq!(continued["spanId"], gateway_span.as_str(), "{continued}");
    assert_eq!(continued["parentSpanId"], "00f067aa0ba902b7", "{continued}");
    assert_eq!(continued["name"], "invoke tracer/traced");
    assert_eq!(continued["kind"], 2, "a server span");
    let attributes = continued["attributes"].to_string();
    assert!(attributes.contains("kubefn.function") && attributes.contains("traced"), "{attributes}");
    let started = spans.iter().find(|s| s["traceId"] == new_trace).expect("the started trace's span");
    assert_eq!(started["parentSpanId"], "", "a root span: {started}");
}

/// A minimal OTLP/HTTP collector: takes `POST /v1/traces` (JSON) on loopback, answers 200 and
/// keeps the spans.
struct Collector {
    address: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Collector {
    fn start() -> Collector {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut stream = stream;
                    loop {
                        let (mut length, mut path, mut line) = (0usize, String::new(), String::new());
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if path.is_empty() {
                                path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                            }
                            if let Some((name, value)) = line.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        assert_eq!(path, "/v1/traces");
                        kept.lock().expect("lock").push(serde_json::from_slice(&body).expect("OTLP JSON"));
                        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        if stream.write_all(ok.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Collector { address, bodies }
    }

    /// Every span received, once there are at least `count`.
    fn spans_until(&self, count: usize) -> Vec<serde_json::Value> {
        let mut spans = Vec::new();
        for _ in 0..200 {
            spans = self
                .bodies
                .lock()
                .expect("lock")
                .iter()
                .flat_map(|body| body["resourceSpans"].as_array().cloned().unwrap_or_default())
                .flat_map(|resource| resource["scopeSpans"].as_array().cloned().unwrap_or_default())
                .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
                .collect();
            if spans.len() >= count {
                return spans;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the collector got {} spans: {spans:#?}", spans.len());
    }
}

/// Runs the kubefn binary as the command line, in `home` (its HOME, so its own login), with
/// `stdin` as standard input; returns the exit code, stdout and stderr.
fn kubefn_cli(home: &std::path::Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubefn"))
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("KUBEFN_URL")
        .env_remove("KUBEFN_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the kubefn binary runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("it exits");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// The README's command-line example, run as it stands (with this server's URL) by `sh -e`
/// with the kubefn binary on PATH; then what scripts and people meet when things go wrong:
/// the API's words and the exit code of each kind, `--output json`, `logs -f`, and a revoked
/// token.
#[test]
fn the_cli_runs_the_readme_example_and_words_failures_as_the_api_does() {
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::start(data.path(), free_port());
    let url = format!("http://127.0.0.1:{}", server.port);
    server.sign_up("alice");

    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let block = readme.split("<!-- cli-example -->\n```sh\n").nth(1).expect("the README's CLI example");
    let script = block.split("\n```").next().expect("its end").replace("http://127.0.0.1:3000", &url);
    let home = tempfile::tempdir().expect("home");
    let run = process::run_shell(&script, home.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the README's example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("hello world"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["hello", "alice", "python", "private", "1"]),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("kfn_")), "token create prints the token: {stdout}");
    assert!(stderr.contains("Ready: 1/1 replicas ready"), "deploy --wait shows progress: {stderr}");
    let stored = home.path().join(".config/kubefn/credentials.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&stored).expect("stored login").permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !std::fs::read_to_string(&stored).expect("read").contains("alice-password"),
        "the password is never stored"
    );

    // Failures, each in the API's words with the exit code of its kind.
    let nowhere = tempfile::tempdir().expect("empty home");
    let (code, _, err) = kubefn_cli(nowhere.path(), &["fn", "ls"], "");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not logged in"), "{err}");
    let (code, _, err) =
        kubefn_cli(nowhere.path(), &["login", "--url", &url, "-u", "alice", "--password-stdin"], "wrong\n");
    assert_eq!((code, err.trim()), (3, "kubefn: wrong user name or password (HTTP 401)"));
    let (code, _, err) =
        kubefn_cli(nowhere.path(), &["fn", "ls", "--url", "http://127.0.0.1:1", "--token", "kfn_x"], "");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach kubefn at http://127.0.0.1:1"), "{err}");

    let home = home.path();
    let (code, _, err) =
        kubefn_cli(home, &["login", "--url", &url, "-u", "alice", "--password-stdin"], "alice-password\n");
    assert_eq!(code, 0, "{err}");
    std::fs::write(home.join("notes.txt"), "hello").expect("write");
    let (code, _, err) = kubefn_cli(home, &["fn", "register", "notes.txt"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--runtime"), "{err}");
    let (code, _, err) =
        kubefn_cli(home, &["fn", "register", "-", "--name", "Bad_Name", "--runtime", "python"], "x = 1\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[name]") || err.contains("name"), "the field is named: {err}");

    let bob = server.sign_up("bob");
    let secret = json!({"name": "bobs-own", "runtime": "python", "source": "def handle(req):\n    return 'mine'\n"});
    server.deploy(&bob, &secret);
    let (code, out, err) = kubefn_cli(home, &["fn", "invoke", "bobs-own", "--user", "bob"], "");
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("(HTTP 404)"), "another user's private function is not there: {err}");

    std::fs::write(home.join("broken.py"), "def handle(req)\n    return req\n").expect("write");
    kubefn_cli(home, &["fn", "register", "broken.py"], "");
    let (code, _, err) = kubefn_cli(home, &["fn", "deploy", "broken", "--wait", "--timeout", "90"], "");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("the deploy of broken failed") && err.contains("last log lines") && err.contains("syntax error"),
        "{err}"
    );

    // A Node function: JSON listing, followed logs, and a refused unregister.
    std::fs::write(
        home.join("echo.js"),
        "module.exports = async (event) => { console.log('saw ' + event.body); return event.body; };\n",
    )
    .expect("write");
    let (code, _, err) = kubefn_cli(home, &["fn", "register", "echo.js", "--visibility", "public"], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kubefn_cli(home, &["fn", "deploy", "echo", "--wait"], "");
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = kubefn_cli(home, &["fn", "ls", "-o", "json"], "");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert!(
        listed.as_array().expect("a list").iter().any(|f| f["name"] == "echo" && f["visibility"] == "public"),
        "{listed}"
    );
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_kubefn"))
        .args(["fn", "logs", "echo", "-f"])
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("KUBEFN_URL")
        .env_remove("KUBEFN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("follow");
    let lines = std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().expect("stdout")));
    let (sent, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if sent.send(line).is_err() {
                return;
            }
        }
    });
    let (code, out, err) = kubefn_cli(home, &["fn", "invoke", "echo", "-H", "content-type: text/plain"], "followed");
    assert_eq!((code, out.as_str()), (0, "followed"), "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = Vec::new();
    while !got.iter().any(|l: &String| l.contains("saw followed")) && std::time::Instant::now() < deadline {
        if let Ok(line) = seen.recv_timeout(std::time::Duration::from_millis(200)) {
            got.push(line);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(got.iter().any(|l| l.contains("saw followed")), "logs -f printed the call's line: {got:?}");
    let (code, _, err) = kubefn_cli(home, &["fn", "delete", "echo"], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("(HTTP 409)"), "{err}");

    // A revoked token stops working at once.
    let (_, token, _) = kubefn_cli(home, &["token", "create", "short-lived"], "");
    let (_, out, _) = kubefn_cli(home, &["token", "ls", "-o", "json"], "");
    let tokens: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let id =
        tokens.as_array().expect("list").iter().find(|t| t["name"] == "short-lived").expect("listed")["id"].to_string();
    let (code, _, err) = kubefn_cli(home, &["token", "rm", &id], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kubefn_cli(nowhere.path(), &["fn", "ls", "--url", &url, "--token", token.trim()], "");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("(HTTP 401)"), "{err}");
}
