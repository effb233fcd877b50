//! The local runtime with real processes: every handler convention of both bootstraps deployed
//! and invoked through its node port, an update under load, bad functions, pause, resume,
//! scaling, logs and delete.

use futures::StreamExt;
use kubefn::platform::autoscale::AutoscalerConfig;
use kubefn::platform::model::{FunctionSpec, InstanceState, Language, ScalingPolicy};
use kubefn::platform::runtime::local::supervisor::RestartPolicy;
use kubefn::platform::runtime::local::{LocalConfig, LocalRuntime};
use kubefn::platform::runtime::{ApplyMode, InstanceSpec, Runtime, RuntimeStatus};
use std::net::SocketAddr;
use std::time::Duration;
use support::call;

mod support;

struct Harness {
    runtime: LocalRuntime,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(|_| {})
    }

    fn with_pool(warm_pool_size: usize) -> Harness {
        Harness::with(|config| config.warm_pool_size = warm_pool_size)
    }

    /// Quick timings for tests, cold starts, then `adjust`.
    fn with(adjust: impl FnOnce(&mut LocalConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = LocalConfig::new(dir.path().join("runtime"));
        config.node_ports = 41000..=41999;
        config.drain = Duration::from_millis(500);
        config.hold = Duration::from_secs(20);
        config.usage_period = Duration::from_millis(200);
        config.warm_pool_size = 0;
        config.autoscaler = AutoscalerConfig {
            sync_period: Duration::from_millis(400),
            tolerance: 0.1,
            scale_down_stabilization: Duration::from_secs(2),
            scale_up_period: Duration::from_millis(400),
        };
        config.restart = RestartPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            crashes_before_failed: 3,
            stable_after: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(2),
        };
        adjust(&mut config);
        Harness { runtime: LocalRuntime::new(config).expect("runtime"), _dir: dir }
    }

    /// Waits until the instance's status satisfies `done`, failing with the last status.
    async fn until(&self, id: &str, what: &str, done: impl Fn(&RuntimeStatus) -> bool) -> RuntimeStatus {
        let mut last = None;
        for _ in 0..600 {
            if let Some(status) = self.runtime.status(id) {
                if done(&status) {
                    return status;
                }
                last = Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("instance {id}: timed out waiting until {what}; last status: {last:#?}");
    }

    async fn ready(&self, id: &str) -> SocketAddr {
        let status =
            self.until(id, "ready", |s| s.state == InstanceState::Ready || s.state == InstanceState::Failed).await;
        assert_eq!(status.state, InstanceState::Ready, "{status:#?}");
        status.node_port.expect("a node port")
    }
}

/// A function spec with every default but its name, language, handler and source.
fn function(name: &str, language: Language, handler: Option<&str>, source: &str) -> FunctionSpec {
    FunctionSpec { handler: handler.map(str::to_string), ..FunctionSpec::new(name, language, source) }
}

fn instance(id: &str, version: u32, spec: FunctionSpec, replicas: u32) -> InstanceSpec {
    InstanceSpec { replicas, ..InstanceSpec::new(id, "alice", version, spec) }
}

async fn post(address: SocketAddr, body: &str) -> (u16, String) {
    call(address, "POST", "/", "text/plain", body).await.expect("the function answers")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// The live processes whose environment holds `marker` (set through the function's env).
fn bootstrap_pids(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let environment = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if String::from_utf8_lossy(&environment).contains(marker) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_handler_convention_of_both_languages_answers() {
    let harness = Harness::new();
    let cases: Vec<(FunctionSpec, &str, &str, (u16, &str))> = vec![
        (
            function("openfaas-classic", Language::Python, None, "def handle(req):\n    return 'hello ' + req\n"),
            "text/plain",
            "ada",
            (200, "hello ada"),
        ),
        (
            function(
                "kubeless-python",
                Language::Python,
                Some("handler"),
                "def handler(event, context):\n    return {'got': event['data'], 'fn': context['function-name']}\n",
            ),
            "application/json",
            "{\"x\": 1}",
            (200, "{\"got\": {\"x\": 1}, \"fn\": \"kubeless-python\"}"),
        ),
        (
            function(
                "openfaas-http",
                Language::Python,
                None,
                "def handle(event, context):\n    return {'statusCode': 201, 'body': 'created ' + event.body.decode() + ' via ' + event.method}\n",
            ),
            "text/plain",
            "it",
            (201, "created it via POST"),
        ),
        // The peers' own sample functions, unchanged: OpenFaaS python3 and python3-http, and
        // Kubeless's helloget.py (handler foo) and hellowithdata.py.
        (
            function(
                "openfaas-python3-sample",
                Language::Python,
                None,
                "def handle(req):\n    \"\"\"handle a request to the function\n    Args:\n        req (str): request body\n    \"\"\"\n\n    return req\n",
            ),
            "text/plain",
            "echo me",
            (200, "echo me"),
        ),
        (
            function(
                "openfaas-python3-http-sample",
                Language::Python,
                None,
                "def handle(event, context):\n    # TODO implement\n    return {\n        \"statusCode\": 200,\n        \"body\": \"Hello from OpenFaaS!\"\n    }",
            ),
            "text/plain",
            "",
            (200, "Hello from OpenFaaS!"),
        ),
        (
            function(
                "kubeless-helloget",
                Language::Python,
                Some("foo"),
                "def foo(event, context):\n    return \"hello world\"\n",
            ),
            "text/plain",
            "",
            (200, "hello world"),
        ),
        (
            function(
                "kubeless-hellowithdata",
                Language::Python,
                Some("handler"),
                "def handler(event, context):\n    print (event)\n    return event['data']\n",
            ),
            "text/plain",
            "some data",
            (200, "some data"),
        ),
        (
            function(
                "wsgi",
                Language::Python,
                None,
                "def app(environ, start_response):\n    size = int(environ.get('CONTENT_LENGTH') or 0)\n    body = environ['wsgi.input'].read(size)\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'wsgi ' + body]\n",
            ),
            "text/plain",
            "works",
            (200, "wsgi works"),
        ),
        (
            function(
                "node-default",
                Language::Node,
                None,
                "module.exports = async (event, context) => `node ${event.data} from ${context['function-name']}`;\n",
            ),
            "text/plain",
            "hi",
            (200, "node hi from node-default"),
        ),
        (
            function(
                "node-named",
                Language::Node,
                Some("hello"),
                "module.exports = { other() { return 'wrong'; }, hello(event) { return { statusCode: 202, body: 'named ' + event.data.who }; } };\n",
            ),
            "application/json",
            "{\"who\": \"bob\"}",
            (202, "named bob"),
        ),
        // OpenFaaS's node18/20/22 sample handler and Kubeless's nodejs helloget.js and
        // hellowithdata.js, unchanged.
        (
            function(
                "openfaas-node-sample",
                Language::Node,
                None,
                "module.exports = async (event, context) => {\n  const result = {\n    'body': JSON.stringify(event.body),\n    'content-type': event.headers[\"content-type\"]\n  }\n\n  return context\n    .status(200)\n    .succeed(result)\n}\n",
            ),
            "application/json",
            "{\"a\": 1}",
            (200, "{\"body\":\"{\\\"a\\\":1}\",\"content-type\":\"application/json\"}"),
        ),
        (
            function(
                "kubeless-node-helloget",
                Language::Node,
                Some("foo"),
                "module.exports = {\n  foo: function (event, context) {\n    return 'hello world';\n  },\n};\n",
            ),
            "text/plain",
            "",
            (200, "hello world"),
        ),
        (
            function(
                "kubeless-node-hellowithdata",
                Language::Node,
                Some("handler"),
                "module.exports = {\n  handler: (event, context) => {\n    console.log(event);\n    return event.data;\n  },\n};\n",
            ),
            "application/json",
            "{\"hello\": \"world\"}",
            (200, "{\"hello\":\"world\"}"),
        ),
        (
            function(
                "node-express",
                Language::Node,
                None,
                "module.exports = (req, res) => { res.status(200).send('express ' + req.body); };\n",
            ),
            "text/plain",
            "style",
            (200, "express style"),
        ),
    ];
    for (index, (spec, ..)) in cases.iter().enumerate() {
        harness
            .runtime
            .apply(instance(&format!("conv-{index}"), 1, spec.clone(), 1), ApplyMode::Reconcile)
            .await
            .expect("apply");
    }
    for (index, (spec, content_type, body, (status, expected))) in cases.iter().enumerate() {
        let address = harness.ready(&format!("conv-{index}")).await;
        let answer = call(address, "POST", "/", content_type, body).await.expect("answer");
        assert_eq!(answer, (*status, expected.to_string()), "{}", spec.name);
    }
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_under_load_fails_no_request() {
    let harness = Harness::new();
    let version =
        |n: u32| function("versioned", Language::Python, None, &format!("def handle(req):\n    return 'v{n}'\n"));
    harness.runtime.apply(instance("update", 1, version(1), 2), ApplyMode::Reconcile).await.expect("apply v1");
    let address = harness.ready("update").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push(call(address, "POST", "/", "text/plain", "").await.map_err(|e| e.to_string()));
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    harness.runtime.apply(instance("update", 2, version(2), 2), ApplyMode::Reconcile).await.expect("apply v2");
    let status = harness
        .until("update", "version 2 serves and the old replicas are gone", |s| {
            s.serving_version == Some(2) && s.replicas.iter().all(|r| r.version == 2)
        })
        .await;
    assert_eq!(status.state, InstanceState::Ready);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client"));
    }
    let failures: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok((200, _)))).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        answers.len(),
        &failures[..failures.len().min(5)]
    );
    let bodies: std::collections::BTreeSet<&str> =
        answers.iter().filter_map(|a| a.as_ref().ok()).map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, ["v1", "v2"].into_iter().collect(), "both versions answered, nothing else");
    assert!(answers.len() > 50, "the load was real: {} requests", answers.len());
    assert!(
        status.events.iter().any(|e| e.reason == "Deployed" && e.message.contains("version 2")),
        "{:?}",
        status.events
    );
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_functions_fail_with_their_reason_while_others_keep_serving() {
    let harness = Harness::new();
    harness
        .runtime
        .apply(
            instance("good", 1, function("good", Language::Python, None, "def handle(req):\n    return 'fine'\n"), 1),
            ApplyMode::Reconcile,
        )
        .await
        .expect("apply");
    let good = harness.ready("good").await;

    let mut failing_deps = function("deps", Language::Python, None, "def handle(req):\n    return req\n");
    failing_deps.requirements = "this is not a requirement !!!\n".into();
    let cases = [
        (function("syntax", Language::Python, None, "def handle(req)\n    return req\n"), "syntax error"),
        (function("nohandler", Language::Python, Some("missing"), "def handle(req):\n    return req\n"), "missing"),
        (function("exits", Language::Python, None, "import os\nos._exit(7)\n"), "exited with exit status: 7"),
        (function("node-syntax", Language::Node, None, "module.exports = async (event => 1;\n"), "syntax error"),
        (failing_deps, "installing the python dependencies failed"),
    ];
    for (spec, _) in &cases {
        harness.runtime.apply(instance(&spec.name, 1, spec.clone(), 1), ApplyMode::Reconcile).await.expect("apply");
    }
    for (spec, reason) in &cases {
        let status = harness.until(&spec.name, "failed", |s| s.state == InstanceState::Failed).await;
        assert!(status.message.contains(reason), "{}: {:?} lacks {reason:?}", spec.name, status.message);
        assert!(
            status.events.iter().any(|e| e.kind == "Warning" && e.reason == "RolloutFailed"),
            "{}: {:?}",
            spec.name,
            status.events
        );
        let logs: Vec<String> =
            harness.runtime.logs(&spec.name, false, None).expect("logs").map(|l| l.text).collect().await;
        assert!(logs.iter().any(|l| l.contains(reason)), "{}: the logs say why too: {logs:#?}", spec.name);
    }
    assert_eq!(post(good, "").await, (200, "fine".to_string()), "kubefn keeps serving the good function");

    // A failed version is not retried by a plain apply (the reconcile loop), only on redeploy.
    let (exits, _) = &cases[2];
    harness.runtime.apply(instance("exits", 1, exits.clone(), 1), ApplyMode::Reconcile).await.expect("apply again");
    assert_eq!(harness.runtime.status("exits").expect("status").state, InstanceState::Failed);
    harness.runtime.apply(instance("exits", 1, exits.clone(), 1), ApplyMode::Retry).await.expect("redeploy");
    assert_eq!(harness.runtime.status("exits").expect("status").state, InstanceState::Deploying);
    harness.until("exits", "failed again", |s| s.state == InstanceState::Failed).await;

    // A fixed version replaces a failed one.
    harness
        .runtime
        .apply(
            instance(
                "syntax",
                2,
                function("syntax", Language::Python, None, "def handle(req):\n    return 'fixed'\n"),
                1,
            ),
            ApplyMode::Reconcile,
        )
        .await
        .expect("apply");
    let fixed = harness.ready("syntax").await;
    assert_eq!(post(fixed, "").await, (200, "fixed".to_string()));
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_update_leaves_the_old_version_serving() {
    let harness = Harness::new();
    harness
        .runtime
        .apply(
            instance("keep", 1, function("keep", Language::Python, None, "def handle(req):\n    return 'v1'\n"), 1),
            ApplyMode::Reconcile,
        )
        .await
        .expect("apply");
    let address = harness.ready("keep").await;
    harness
        .runtime
        .apply(
            instance("keep", 2, function("keep", Language::Python, None, "def handle(req)\n"), 1),
            ApplyMode::Reconcile,
        )
        .await
        .expect("apply");
    let status = harness.until("keep", "the update failed", |s| s.state == InstanceState::Failed).await;
    assert!(status.message.contains("version 1 keeps serving"), "{}", status.message);
    assert_eq!(status.serving_version, Some(1));
    assert_eq!(post(address, "").await, (200, "v1".to_string()));
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_scale_logs_and_delete() {
    let harness = Harness::new();
    let marker = format!("kubefn-test-marker-{}", std::process::id());
    let mut spec = function(
        "lifecycle",
        Language::Python,
        None,
        "import os, uuid\nTOKEN = uuid.uuid4().hex\nprint('loaded', os.getpid(), flush=True)\ndef handle(req):\n    print('handled', req, flush=True)\n    return TOKEN\n",
    );
    spec.env.insert("TEST_MARKER".into(), marker.clone());
    harness.runtime.apply(instance("life", 1, spec.clone(), 1), ApplyMode::Reconcile).await.expect("apply");
    let address = harness.ready("life").await;
    let mut follow = harness.runtime.logs("life", true, None).expect("logs");

    // Scaling up: a second replica joins the node port and the followed logs.
    let life = instance("life", 1, spec.clone(), 1);
    harness.runtime.apply(InstanceSpec { replicas: 2, ..life.clone() }, ApplyMode::SetReplicas).await.expect("scale");
    harness.until("life", "two ready", |s| s.ready == 2 && s.state == InstanceState::Ready).await;
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..6 {
        pids.insert(post(address, "ping").await.1);
    }
    assert_eq!(pids.len(), 2, "both replicas answer through the node port: {pids:?}");
    let mut seen = Vec::new();
    while !(seen.iter().any(|l: &kubefn::platform::model::LogEntry| {
        l.replica == "v1-r1" && l.stream == "stdout" && l.text.starts_with("loaded")
    }) && seen.iter().any(|l| l.text == "handled ping"))
    {
        let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("a log line in time")
            .expect("the stream goes on");
        seen.push(line);
    }
    assert!(seen.iter().all(|l| ["v1-r0", "v1-r1", "install", "kubefn"].contains(&l.replica.as_str())), "{seen:#?}");

    // Pause: no process, the node port stays; resume: it answers again on the same port.
    harness
        .runtime
        .apply(InstanceSpec { replicas: 2, paused: true, ..life.clone() }, ApplyMode::Reconcile)
        .await
        .expect("pause");
    let paused = harness
        .until("life", "paused with no replicas", |s| s.state == InstanceState::Paused && s.replicas.is_empty())
        .await;
    assert_eq!(paused.node_port, Some(address));
    for _ in 0..100 {
        if bootstrap_pids(&marker).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness.runtime.apply(InstanceSpec { replicas: 2, ..life.clone() }, ApplyMode::Reconcile).await.expect("resume");
    assert_eq!(harness.ready("life").await, address);
    assert_eq!(post(address, "again").await.0, 200);

    // Delete: no process left, the port is free, the log stream ends.
    harness.runtime.delete("life").await.expect("delete");
    assert!(harness.runtime.status("life").is_none());
    for _ in 0..100 {
        if bootstrap_pids(&marker).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bootstrap_pids(&marker), Vec::<u32>::new(), "no replica process is left");
    std::net::TcpListener::bind(address).expect("the node port is free again");
    let rest = tokio::time::timeout(Duration::from_secs(10), follow.collect::<Vec<_>>()).await;
    assert!(rest.is_ok(), "the followed log stream ends with the instance");
    harness.runtime.delete("life").await.expect("deleting again is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_stops_the_processes_a_killed_one_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = LocalConfig::new(dir.path().join("runtime"));
    config.node_ports = 42000..=42999;
    config.warm_pool_size = 0;
    // Unsandboxed replicas outlive a killed kubefn (sandboxed ones die with it: see
    // tests/crash_recovery.rs); their pid files let the next one stop them.
    config.sandbox = None;
    let marker = format!("kubefn-leftover-{}", std::process::id());
    let mut spec = function("leftover", Language::Python, None, "def handle(req):\n    return 'x'\n");
    spec.env.insert("TEST_MARKER".into(), marker.clone());

    // The first runtime lives on a runtime of its own that is torn down without any cleanup,
    // as when kubefn is killed: its tasks vanish, its children do not.
    let first = config.clone();
    let leftover = std::thread::spawn(move || {
        let tokio = tokio::runtime::Runtime::new().expect("tokio");
        tokio.block_on(async {
            let runtime = LocalRuntime::new(first).expect("runtime");
            runtime.apply(instance("left", 1, spec, 1), ApplyMode::Reconcile).await.expect("apply");
            for _ in 0..400 {
                if runtime.status("left").is_some_and(|s| s.state == InstanceState::Ready) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            std::mem::forget(runtime);
        });
        std::mem::forget(tokio);
    });
    leftover.join().expect("first runtime");
    assert_eq!(bootstrap_pids(&marker).len(), 1, "the replica outlived its runtime");

    let _second = LocalRuntime::new(config).expect("runtime");
    for _ in 0..100 {
        if bootstrap_pids(&marker).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bootstrap_pids(&marker), Vec::<u32>::new(), "the new runtime stopped the leftover replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cpu_load_scales_out_and_quiet_scales_back_in() {
    let harness = Harness::new();
    // Each call burns 20 ms of CPU: a few callers keep a replica far above 50% of its 100m.
    let mut spec = function(
        "burner",
        Language::Python,
        None,
        "import time\ndef handle(req):\n    end = time.process_time() + 0.02\n    while time.process_time() < end:\n        pass\n    return 'burnt'\n",
    );
    spec.scaling = ScalingPolicy { min: 1, max: 3, target_cpu_percent: Some(50), ..ScalingPolicy::default() };
    harness.runtime.apply(instance("burn", 1, spec, 1), ApplyMode::Reconcile).await.expect("apply");
    let address = harness.ready("burn").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = call(address, "POST", "/", "text/plain", "").await;
            }
        }));
    }
    let scaled = harness.until("burn", "scaled out to 3 ready replicas", |s| s.desired == 3 && s.ready == 3).await;
    // Under load the autoscaler may take two steps (1 → 2 → 3): the first names where it began.
    let scalings: Vec<&str> =
        scaled.events.iter().filter(|e| e.reason == "ScalingReplicaSet").map(|e| e.message.as_str()).collect();
    assert!(
        scalings.iter().any(|m| m.contains("autoscaled from 1 to") && m.contains("CPU utilization")),
        "{scalings:?}"
    );
    let usage = harness.runtime.usage("burn").expect("usage");
    assert!(usage.iter().any(|u| u.cpu_millicores.is_some_and(|m| m > 50.0)), "usage shows the load: {usage:?}");
    assert!(usage.iter().all(|u| u.memory_bytes > 1024 * 1024), "usage shows memory: {usage:?}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }
    let quiet = harness.until("burn", "scaled back in to 1", |s| s.desired == 1 && s.ready == 1).await;
    assert!(
        quiet.events.iter().any(|e| e.message.starts_with("autoscaled from") && e.message.contains("to 1 replica")),
        "{:#?}",
        quiet.events
    );
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_instance_goes_to_zero_and_a_request_brings_it_back() {
    let harness = Harness::new();
    let mut spec =
        function("sleepy", Language::Node, None, "module.exports = async (event) => 'awake ' + event.data;\n");
    spec.scaling = ScalingPolicy {
        min: 0,
        max: 2,
        target_cpu_percent: None,
        scale_to_zero_after_s: Some(1),
        ..ScalingPolicy::default()
    };
    harness.runtime.apply(instance("sleepy", 1, spec, 1), ApplyMode::Reconcile).await.expect("apply");
    let address = harness.ready("sleepy").await;
    assert_eq!(post(address, "once").await, (200, "awake once".to_string()));

    let idle = harness.until("sleepy", "scaled to zero", |s| s.desired == 0 && s.replicas.is_empty()).await;
    assert_eq!(idle.state, InstanceState::Ready);
    assert!(idle.message.contains("scaled to zero"), "{}", idle.message);
    assert!(idle.events.iter().any(|e| e.reason == "ScaledToZero"), "{:#?}", idle.events);

    // The cold request is held while a replica starts, then served.
    assert_eq!(post(address, "again").await, (200, "awake again".to_string()));
    let woken = harness.until("sleepy", "one replica again", |s| s.ready == 1).await;
    assert!(woken.events.iter().any(|e| e.reason == "ScaledFromZero"), "{:#?}", woken.events);
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_over_its_memory_limit_is_killed_and_restarted_and_slow_calls_time_out() {
    let harness = Harness::new();
    let mut spec = function(
        "hungry",
        Language::Python,
        None,
        "import time\nheld = []\ndef handle(req):\n    if req == 'eat':\n        held.append(bytearray(200 * 1024 * 1024))\n    if req == 'hang':\n        time.sleep(30)\n    return 'ok'\n",
    );
    spec.resources.memory = "32Mi".into();
    spec.resources.memory_limit = "96Mi".into();
    spec.timeout_s = 1;
    harness.runtime.apply(instance("hungry", 1, spec, 1), ApplyMode::Reconcile).await.expect("apply");
    let address = harness.ready("hungry").await;
    let status = harness.runtime.status("hungry").expect("status");
    assert!(status.limits.contains("memory limit 96Mi: enforced by the kernel"), "{}", status.limits);
    assert!(status.limits.contains("invocation timeout 1 s"), "{}", status.limits);

    let started = std::time::Instant::now();
    let (code, body) = post(address, "hang").await;
    assert_eq!(code, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The replica may be killed before it answers: either way the kill is what counts.
    let _ = call(address, "POST", "/", "text/plain", "eat").await;
    let killed = harness
        .until("hungry", "killed for memory and restarted", |s| {
            s.events.iter().any(|e| e.reason == "OOMKilled")
                && s.replicas.first().is_some_and(|r| r.restarts >= 1 && r.state == "Ready")
        })
        .await;
    let event = killed.events.iter().find(|e| e.reason == "OOMKilled").expect("event");
    assert!(
        event.message.contains("OOM killer") && event.message.contains("memory limit of 96Mi"),
        "{}",
        event.message
    );
    assert_eq!(post(address, "light").await, (200, "ok".to_string()), "the restarted replica serves");
    harness.runtime.shutdown().await;
}

/// A function answering with its greeting, its working directory and whether it can see
/// variables of kubefn's own environment (cargo sets CARGO_* for every test process).
const ENVIRONMENT_PROBE_PY: &str = "import os\ndef handle(req):\n    leaked = sorted(k for k in os.environ if k.startswith('CARGO'))\n    return f\"{os.environ['GREETING']} {os.path.basename(os.getcwd())} leaked={leaked}\"\n";
const ENVIRONMENT_PROBE_JS: &str = "module.exports = async () => `${process.env.GREETING} ${require('path').basename(process.cwd())} leaked=${JSON.stringify(Object.keys(process.env).filter((k) => k.startsWith('CARGO')))}`;\n";

fn probe(name: &str, language: Language) -> FunctionSpec {
    let source = if language == Language::Python { ENVIRONMENT_PROBE_PY } else { ENVIRONMENT_PROBE_JS };
    let mut spec = function(name, language, None, source);
    spec.env.insert("GREETING".into(), "hej".into());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_see_their_own_environment_and_nothing_of_kubefns() {
    let harness = Harness::new();
    harness
        .runtime
        .apply(instance("env-py", 3, probe("env-py", Language::Python), 1), ApplyMode::Reconcile)
        .await
        .expect("apply");
    harness
        .runtime
        .apply(instance("env-js", 3, probe("env-js", Language::Node), 1), ApplyMode::Reconcile)
        .await
        .expect("apply");
    // The sandbox shows each replica its version's files as /kubefn/function.
    assert_eq!(post(harness.ready("env-py").await, "").await, (200, "hej function leaked=[]".to_string()));
    assert_eq!(post(harness.ready("env-js").await, "").await, (200, "hej function leaked=[]".to_string()));
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_start_from_the_warm_pool_and_behave_as_cold_ones() {
    let harness = Harness::with_pool(1);
    // Let the pool fill before deploying.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (id, language) in [("warm-py", Language::Python), ("warm-js", Language::Node)] {
        harness.runtime.apply(instance(id, 3, probe(id, language), 1), ApplyMode::Reconcile).await.expect("apply");
        let address = harness.ready(id).await;
        assert_eq!(post(address, "").await, (200, "hej function leaked=[]".to_string()), "{id}");
        let logs: Vec<kubefn::platform::model::LogEntry> =
            harness.runtime.logs(id, false, None).expect("logs").collect().await;
        assert!(
            logs.iter().any(|l| l.replica == "v3-r0" && l.text.starts_with("loading the function into warm process")),
            "{id}: {logs:#?}"
        );
        assert!(
            logs.iter().any(|l| l.replica == "v3-r0" && l.text.contains("detected")),
            "{id}: the warm process's output reaches the instance: {logs:#?}"
        );
        assert!(
            logs.iter().any(|l| l.replica == "v3-r0" && l.text.starts_with("kubefn: ready on socket /kubefn/run/")),
            "{id}: {logs:#?}"
        );
    }

    // A function that cannot load in a warm process fails as a cold one would.
    harness
        .runtime
        .apply(
            instance("warm-bad", 1, function("warm-bad", Language::Python, None, "def handle(req)\n"), 1),
            ApplyMode::Reconcile,
        )
        .await
        .expect("apply");
    let status = harness.until("warm-bad", "failed", |s| s.state == InstanceState::Failed).await;
    assert!(status.message.contains("syntax error"), "{}", status.message);
    harness.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_function_that_hangs_while_loading_fails_with_the_reason() {
    let harness = Harness::with(|config| config.restart.ready_timeout = Duration::from_secs(1));
    let spec = function(
        "stuck",
        Language::Python,
        None,
        "import time\nprint('loading forever', flush=True)\ntime.sleep(3600)\ndef handle(req):\n    return req\n",
    );
    harness.runtime.apply(instance("stuck", 1, spec, 1), ApplyMode::Reconcile).await.expect("apply");
    let status = harness.until("stuck", "failed", |s| s.state == InstanceState::Failed).await;
    assert!(status.message.contains("not ready after 1 s"), "{}", status.message);
    let logs: Vec<String> = harness.runtime.logs("stuck", false, None).expect("logs").map(|l| l.text).collect().await;
    assert!(
        logs.iter().any(|l| l == "loading forever") && logs.iter().any(|l| l.contains("not ready after 1 s")),
        "{logs:#?}"
    );
    harness.runtime.shutdown().await;
}
