//! `make bench`, gateway part: what `/fn/{user}/{function}/` adds to a request, against the
//! same request sent straight to the instance's node port, in the same run. The whole server
//! (release build, local runtime) serves on loopback; the function is a Node hello (the
//! fastest bootstrap here). Latency: sequential requests on one keep-alive connection
//! (p50/p99). Throughput: 32 keep-alive connections for 5 s. Prints a Markdown table and
//! writes it, with the raw figures as JSON, to bench/results/.

// The server's view types are deep; release builds of every crate that builds the router
// need the same limit as the library.
#![recursion_limit = "256"]

use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use kubefn::server::{build_app, Config};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LATENCY_REQUESTS: usize = 3000;
const LOAD_CONNECTIONS: usize = 32;
const LOAD_SECONDS: u64 = 5;

/// One keep-alive HTTP/1.1 connection.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(address: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        Client { sender, host: address.to_string() }
    }

    /// One GET; its status and the time to the whole answer.
    async fn get(&mut self, path: &str) -> (u16, Duration) {
        let request = hyper::Request::get(path).header(hyper::header::HOST, self.host.as_str()).body(Empty::new()).expect("request");
        let started = Instant::now();
        self.sender.ready().await.expect("ready");
        let response = self.sender.send_request(request).await.expect("answer");
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("body");
        (status, started.elapsed())
    }
}

#[derive(serde::Serialize)]
struct Figure {
    name: String,
    p50_ms: f64,
    p99_ms: f64,
    requests_per_s: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn measure(name: &str, address: SocketAddr, path: &str) -> Figure {
    let mut client = Client::connect(address).await;
    for _ in 0..200 {
        assert_eq!(client.get(path).await.0, 200, "{name}: warm-up");
    }
    let mut ms = Vec::with_capacity(LATENCY_REQUESTS);
    for _ in 0..LATENCY_REQUESTS {
        let (status, elapsed) = client.get(path).await;
        assert_eq!(status, 200, "{name}");
        ms.push(elapsed.as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut load = Vec::new();
    for _ in 0..LOAD_CONNECTIONS {
        let path = path.to_string();
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(address).await;
            let mut done = 0u64;
            while Instant::now() < deadline {
                if client.get(&path).await.0 == 200 {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for task in load {
        total += task.await.expect("load task");
    }
    Figure { name: name.into(), p50_ms: percentile(&ms, 0.5), p99_ms: percentile(&ms, 0.99), requests_per_s: total as f64 / LOAD_SECONDS as f64 }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().display().to_string();
    let config = Config::try_parse_from(["kubefn", "--data-dir", &data_dir, "--log", "warn", "--node-port-range", "46000-46999"]).expect("config");
    let options = leptos::config::get_configuration(None).expect("site options").leptos_options;
    let server = build_app(&config, options).await.expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = server.router.clone().into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });

    // A public Node hello, so the figure is the proxy's, not the session lookup's.
    let platform = &server.platform;
    let user = platform.accounts.sign_up("bench", "bench-password").await.expect("user");
    let caller = kubefn::platform::auth::Principal::from(&user);
    let spec = serde_json::from_value(json!({"name": "hello", "runtime": "node", "source": "module.exports = async () => 'hello';\n",
        "invoke": {"access": "public"}}))
    .expect("spec");
    platform.registry.register(&caller, spec).await.expect("register");
    platform.instances.deploy(&caller, "hello").await.expect("deploy");
    let node_port = loop {
        let instance = platform.instances.mine(&caller, "hello").await.expect("instance").expect("deployed");
        if instance.state == kubefn::platform::model::InstanceState::Ready {
            let url = instance.urls.node_port.expect("node port");
            break url.trim_start_matches("http://").parse::<SocketAddr>().expect("node address");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let direct = measure("direct to the instance (baseline)", node_port, "/").await;
    let gateway = measure("through the gateway /fn/bench/hello/", address, "/fn/bench/hello/").await;
    server.shutdown().await;

    let mut table = String::from("| path | p50 ms | p99 ms | requests/s |\n|---|---:|---:|---:|\n");
    for f in [&direct, &gateway] {
        table.push_str(&format!("| {} | {:.3} | {:.3} | {:.0} |\n", f.name, f.p50_ms, f.p99_ms, f.requests_per_s));
    }
    table.push_str(&format!(
        "| gateway added | {:+.3} | {:+.3} | {:.2}× direct |\n",
        gateway.p50_ms - direct.p50_ms,
        gateway.p99_ms - direct.p99_ms,
        gateway.requests_per_s / direct.requests_per_s
    ));
    let machine = format!(
        "{} cores, {}; latency: {LATENCY_REQUESTS} sequential keep-alive requests; throughput: {LOAD_CONNECTIONS} connections for {LOAD_SECONDS} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    let report = format!("# Gateway overhead\n\n{machine}\n\n{table}");
    println!("{report}");
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&results).expect("results dir");
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ");
    std::fs::write(results.join(format!("{stamp}-gateway.md")), &report).expect("write report");
    std::fs::write(results.join(format!("{stamp}-gateway.json")), serde_json::to_string_pretty(&[&direct, &gateway]).expect("json")).expect("write json");
}
