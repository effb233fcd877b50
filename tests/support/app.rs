//! The test harness of the REST API tests: kubefn's whole router built in-process over a
//! temporary data directory (real SQLite, real sessions, the real local runtime), requests
//! through it, and the JSON fixtures the tests share. With `KUBEFN_TEST_DATABASE=postgres`
//! every app runs on a fresh database of a real PostgreSQL instead (`make test` runs the suite
//! both ways).
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use clap::Parser;
use http_body_util::BodyExt;
use kubefn::platform::auth::SignupPolicy;
use kubefn::server::{Config, Server, build_app};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: (&str, &str) = ("root", "root-password");

/// kubefn over `dir`, with its node ports in `node_ports` and `extra` settings; cron triggers
/// run on the clock the tests move (`platform.triggers.tick`).
async fn launch(dir: &tempfile::TempDir, node_ports: &str, extra: &[&str]) -> Server {
    let data_dir = dir.path().display().to_string();
    let admin = format!("{}:{}", ADMIN.0, ADMIN.1);
    let mut args = vec!["kubefn", "--data-dir", &data_dir, "--node-port-range", node_ports, "--admin", &admin];
    args.extend(["--drain-seconds", "1", "--reconcile-seconds", "1", "--log", "warn", "--cron", "false"]);
    args.extend(extra);
    let config = Config::try_parse_from(args).expect("configuration");
    let options = leptos::config::get_configuration(None).expect("site options").leptos_options;
    build_app(&config, options).await.expect("app builds")
}

pub struct TestApp {
    pub router: Router,
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    /// The app's own block of node ports (`FIRST-LAST`), kept across restarts.
    node_ports: String,
    /// The command-line settings it started with, kept across restarts.
    extra: Vec<String>,
}

#[derive(Clone, Copy)]
pub enum As<'a> {
    Anonymous,
    Cookie(&'a str),
    Bearer(&'a str),
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(SignupPolicy::Open).await
    }

    pub async fn start_with(signup: SignupPolicy) -> TestApp {
        TestApp::start_configured(signup, &[]).await
    }

    /// With more command-line settings (`--outbound-allow …`, say).
    pub async fn start_configured(signup: SignupPolicy, extra: &[&str]) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        // Each app its own block of node ports: the apps of one test binary run side by side,
        // and a port one frees (a test checks it is) must not go to another's next instance.
        static APPS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let block = 30_100 + (APPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 50) * 50;
        let node_ports = format!("{block}-{}", block + 49);
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if signup == SignupPolicy::Closed {
            extra.extend(["--signup".into(), "closed".into()]);
        }
        let on_postgres = std::env::var("KUBEFN_TEST_DATABASE").is_ok_and(|d| d == "postgres");
        if on_postgres && !extra.iter().any(|arg| arg == "--database-url") {
            let url = crate::postgres::fresh_database()
                .await
                .expect("KUBEFN_TEST_DATABASE=postgres needs a PostgreSQL server");
            extra.extend(["--database-url".into(), url, "--secrets-key".into(), "6".repeat(64)]);
        }
        let args: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = launch(&dir, &node_ports, &args).await;
        TestApp { router: server.router.clone(), server: Some(server), dir, node_ports, extra }
    }

    /// The URL of the database the app runs on: a PostgreSQL one under
    /// `KUBEFN_TEST_DATABASE=postgres` (or when a test chose one), else its SQLite file.
    pub fn database_url(&self) -> String {
        let chosen = self.extra.iter().position(|arg| arg == "--database-url").and_then(|at| self.extra.get(at + 1));
        chosen.cloned().unwrap_or_else(|| format!("sqlite://{}", self.dir.path().join("kubefn.db").display()))
    }

    /// Waits until `/readyz` answers 200: the database answers and the first reconcile pass ran.
    pub async fn until_ready(&self) {
        for _ in 0..200 {
            if self.call(Method::GET, "/readyz", None, As::Anonymous).await.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("/readyz never answered 200");
    }

    /// Whether the app runs on its own SQLite file (where some of its state is files).
    pub fn on_sqlite(&self) -> bool {
        self.database_url().starts_with("sqlite:")
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, who: As<'_>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        match who {
            As::Anonymous => {}
            As::Cookie(cookie) => request = request.header(header::COOKIE, cookie),
            As::Bearer(token) => request = request.header(header::AUTHORIZATION, format!("Bearer {token}")),
        }
        let request = match body {
            Some(body) => request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer { status, headers, body }
    }

    /// Signs up (or logs in, for the admin) and returns the session cookie.
    pub async fn session(&self, name: &str, password: &str) -> String {
        let signup = self
            .call(Method::POST, "/api/v1/signup", Some(json!({"name": name, "password": password})), As::Anonymous)
            .await;
        let answer = if signup.status == StatusCode::CREATED {
            signup
        } else {
            self.call(Method::POST, "/api/v1/login", Some(json!({"name": name, "password": password})), As::Anonymous)
                .await
        };
        assert!(answer.status.is_success(), "{name} signs in: {} {}", answer.status, answer.body);
        cookie_of(&answer.headers)
    }

    /// Polls an instance until `done` holds for it, failing with its last answer.
    pub async fn instance_until(&self, id: &str, who: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            let answer = self.call(Method::GET, &format!("/api/v1/instances/{id}"), None, As::Cookie(who)).await;
            if answer.status == StatusCode::OK && done(&answer.body) {
                return answer.body;
            }
            last = answer.body;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("instance {id}: timed out waiting until {what}; last answer: {last:#}");
    }

    /// Stops kubefn and starts it again over the same data directory.
    pub async fn restart(mut self) -> TestApp {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let server = launch(&self.dir, &self.node_ports, &extra).await;
        TestApp {
            router: server.router.clone(),
            server: Some(server),
            dir: self.dir,
            node_ports: self.node_ports,
            extra: self.extra,
        }
    }

    /// Runs the trigger scheduler at `now` and waits for the fires it started.
    pub async fn tick(&self, now: chrono::DateTime<chrono::Utc>) -> usize {
        let fires = self.server.as_ref().expect("running").platform.triggers.tick(now).await.expect("tick");
        let count = fires.len();
        for fire in fires {
            fire.await.expect("fire");
        }
        count
    }

    /// Stops the reconcile loop and every replica.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub async fn user(&self, name: &str) -> String {
        self.session(name, &format!("{name}-password")).await
    }

    pub async fn admin(&self) -> String {
        self.session(ADMIN.0, ADMIN.1).await
    }
}

pub fn cookie_of(headers: &HeaderMap) -> String {
    let set_cookie = headers.get(header::SET_COOKIE).expect("a session cookie").to_str().expect("ascii");
    set_cookie.split(';').next().expect("cookie pair").to_string()
}

pub fn hello(name: &str) -> Value {
    json!({
        "name": name,
        "runtime": "python",
        "handler": "handle",
        "source": "def handle(req):\n    return 'hello ' + req\n",
        "requirements": "",
        "env": {"GREETING": "hi"},
        "visibility": "public",
        "resources": {"cpu": "100m", "memory": "128Mi", "cpu_limit": "500m", "memory_limit": "256Mi"},
        "scaling": {"min": 1, "max": 5, "target_cpu_percent": 70, "target_memory_percent": null, "target_requests_in_flight": null, "scale_to_zero_after_s": null},
        "service": {"type": "NodePort"},
        "timeout_s": 60,
        "invoke": {"access": "owner", "max_body_bytes": 10485760, "max_in_flight_per_replica": 0}
    })
}

pub fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = base.pointer_mut(parent).expect("parent exists");
    target.as_object_mut().expect("object").insert(key.to_string(), value);
    base
}
