//! `make bench`, local runtime part: deploy-to-answer and cold starts (scale from zero to the
//! first byte) for Python and Node hello functions, with and without the warm pool, and with
//! the sandbox (the default) against without it (single-user mode), each against a baseline
//! measured in the same run (a request to an already-running replica).
//! Prints the figures and writes them as JSON to $KUBEFN_BENCH_DIR (default target/bench-run)
//! for bench/system.py's report.

use figures::{figure, report};
use kubefn::platform::model::{FunctionSpec, InstanceState, Language, Named, ScalingPolicy};
use kubefn::platform::runtime::local::{LocalConfig, LocalRuntime};
use kubefn::platform::runtime::{ApplyMode, InstanceSpec, Runtime};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/figures.rs"]
mod figures;

const ROUNDS: usize = 15;

fn hello(language: Language, idle_after: Option<u64>) -> FunctionSpec {
    let source = match language {
        Language::Python => "def handle(req):\n    return 'hello'\n",
        _ => "module.exports = async () => 'hello';\n",
    };
    let scaling = ScalingPolicy {
        min: u32::from(idle_after.is_none()),
        max: 1,
        target_cpu_percent: None,
        scale_to_zero_after_s: idle_after,
        ..ScalingPolicy::default()
    };
    FunctionSpec { scaling, ..FunctionSpec::new("bench", language, source) }
}

fn instance(id: String, spec: FunctionSpec) -> InstanceSpec {
    InstanceSpec::new(id, "bench", 1, spec)
}

/// Time to the first byte of the answer to one request on a new connection.
async fn first_byte(address: SocketAddr) -> std::io::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    let elapsed = started.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    Ok(elapsed)
}

async fn until_ready(runtime: &LocalRuntime, id: &str) -> SocketAddr {
    loop {
        if let Some(status) = runtime.status(id) {
            match status.state {
                InstanceState::Ready if status.ready > 0 => return status.node_port.expect("node port"),
                InstanceState::Failed => panic!("{id} failed: {}", status.message),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn runtime(dir: &std::path::Path, pool: usize, sandboxed: bool) -> LocalRuntime {
    let mut config = LocalConfig::new(dir);
    config.warm_pool_size = pool;
    if !sandboxed {
        config.sandbox = None;
    }
    config.usage_period = Duration::from_millis(100);
    config.node_ports = 45000..=45999;
    LocalRuntime::new(config).expect("runtime")
}

/// Deploy (apply) to the first answer, each round a new instance.
async fn deploy_to_answer(runtime: &LocalRuntime, language: Language) -> Vec<Duration> {
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let id = format!("deploy-{}-{round}", language.as_str());
        let started = Instant::now();
        runtime.apply(instance(id.clone(), hello(language, None)), ApplyMode::Reconcile).await.expect("apply");
        let address = until_ready(runtime, &id).await;
        first_byte(address).await.expect("answer");
        samples.push(started.elapsed());
        runtime.delete(&id).await.expect("delete");
        // Give the pool time to refill, as between real deploys.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples
}

/// Scale from zero to the first byte: the instance idles to zero, then one request.
async fn cold_starts(runtime: &LocalRuntime, language: Language, label: &str) -> Vec<Duration> {
    let id = format!("cold-{}-{label}", language.as_str());
    runtime.apply(instance(id.clone(), hello(language, Some(1))), ApplyMode::Reconcile).await.expect("apply");
    let address = until_ready(runtime, &id).await;
    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        loop {
            let status = runtime.status(&id).expect("status");
            if status.desired == 0 && status.replicas.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The pool refills after each take; wait as long as a real idle period would.
        tokio::time::sleep(Duration::from_millis(300)).await;
        samples.push(first_byte(address).await.expect("cold answer"));
    }
    runtime.delete(&id).await.expect("delete");
    samples
}

/// The baseline: a request to a replica that is already running.
async fn warm_requests(runtime: &LocalRuntime, language: Language) -> Vec<Duration> {
    let id = format!("hot-{}", language.as_str());
    runtime.apply(instance(id.clone(), hello(language, None)), ApplyMode::Reconcile).await.expect("apply");
    let address = until_ready(runtime, &id).await;
    let mut samples = Vec::new();
    for _ in 0..ROUNDS * 4 {
        samples.push(first_byte(address).await.expect("answer"));
    }
    runtime.delete(&id).await.expect("delete");
    samples
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut figures = Vec::new();
    for (sandboxed, suffix) in [(true, ""), (false, ", no sandbox")] {
        let label = if sandboxed { "sandbox" } else { "bare" };
        let cold_runtime = runtime(&dir.path().join(format!("cold-{label}")), 0, sandboxed);
        let pooled_runtime = runtime(&dir.path().join(format!("pooled-{label}")), 1, sandboxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for language in [Language::Python, Language::Node] {
            let lang = language.as_str();
            let named = |what: &str| format!("{lang}: {what}{suffix}");
            figures.push(figure(
                &named("request to a running replica (baseline)"),
                warm_requests(&cold_runtime, language).await,
            ));
            figures.push(figure(
                &named("deploy to first answer, no pool"),
                deploy_to_answer(&cold_runtime, language).await,
            ));
            figures.push(figure(
                &named("deploy to first answer, warm pool"),
                deploy_to_answer(&pooled_runtime, language).await,
            ));
            figures.push(figure(
                &named("cold start from zero, no pool"),
                cold_starts(&cold_runtime, language, &format!("nopool-{label}")).await,
            ));
            figures.push(figure(
                &named("cold start from zero, warm pool"),
                cold_starts(&pooled_runtime, language, &format!("pool-{label}")).await,
            ));
        }
        cold_runtime.shutdown().await;
        pooled_runtime.shutdown().await;
    }

    report("local_runtime", &figures);
}
