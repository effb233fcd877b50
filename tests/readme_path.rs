//! The README's `make run`, as a newcomer runs it: the real binary started from the repository
//! root with no data-directory setting (so the relative default `data`), then a Python and a
//! Node function deployed and invoked through the REST API and the gateway. Nothing else in
//! the suite runs kubefn with a relative data directory.

use process::{Server, free_port};
use serde_json::json;

#[path = "support/process.rs"]
mod process;

#[test]
fn make_run_as_the_readme_says_deploys_and_invokes_python_and_node() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = Server::start_with(free_port(), |command| {
        command.current_dir(repo);
    });
    let data = repo.join("data");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&data).expect("./data exists").permissions());
    assert_eq!(mode & 0o777, 0o700, "the data directory is kubefn's alone");

    // A fresh name each run: ./data outlives the test, as it does for `make run`.
    let user = format!("newcomer-{}", std::process::id());
    let cookie = server.sign_up(&user);
    let python =
        json!({"name": "hello-py", "runtime": "python", "source": "def handle(req):\n    return 'hello ' + req\n"});
    let node = json!({"name": "hello-js", "runtime": "node", "source": "module.exports = async (event) => `hi ${event.body}`;\n"});
    let broken = json!({"name": "broken-py", "runtime": "python", "source": "def handle(req)\n    return req\n"});
    let ids: Vec<String> = [&python, &node, &broken].iter().map(|spec| server.deploy(&cookie, spec)).collect();

    server.instance_in_state(&cookie, &ids[0], "Ready");
    server.instance_in_state(&cookie, &ids[1], "Ready");
    let answer = server.invoke(&cookie, &user, "hello-py", "newcomer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello newcomer"));
    let answer = server.invoke(&cookie, &user, "hello-js", "newcomer");
    assert_eq!((answer.status, answer.body.as_str()), (200, "hi newcomer"));
    // Large bodies arrive intact through the gateway's vectored writes to the replica's socket.
    for length in [1 << 20, 5 << 20] {
        let body: String = (0..length).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let answer = server.invoke(&cookie, &user, "hello-js", &body);
        assert_eq!(answer.status, 200, "a body of {length} bytes");
        assert!(answer.body == format!("hi {body}"), "a body of {length} bytes arrives intact");
    }

    // A function that cannot start says why, without kubefn's own paths.
    let failed = server.instance_in_state(&cookie, &ids[2], "Failed");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("syntax error"), "{message}");
    let repo_path = repo.display().to_string();
    for instance in
        ids.iter().map(|id| server.request("GET", &format!("/api/v1/instances/{id}"), Some(&cookie), None).body)
    {
        assert!(
            !instance.contains(&repo_path) && !instance.contains("/runtime/"),
            "host paths reach the client: {instance}"
        );
    }
    let logs = server.request("GET", &format!("/api/v1/instances/{}/logs", ids[2]), Some(&cookie), None).body;
    assert!(!logs.contains(&repo_path), "host paths reach the client through the logs: {logs}");

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
