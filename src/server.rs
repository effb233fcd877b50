//! The server binary's wiring: configuration, the session layer, the router and serving.
//! Tests build the same router through [`build_app`] without binding a port.

use crate::api::session::{SessionBackend, SessionRecords};
use crate::api::{AppState, gateway, origin, rest};
use crate::app::{App, shell};
use crate::platform::Platform;
use crate::platform::async_spool::AsyncSpool;
use crate::platform::auth::SignupPolicy;
use crate::platform::gateway::SpanExport;
use crate::platform::leadership::{Leadership, LeaseTimings};
use crate::platform::outbound::OutboundPolicy;
use crate::platform::runtime::Runtime;
use crate::platform::runtime::kubernetes::package_egress::{self, PackageEgress};
use crate::platform::runtime::kubernetes::{
    Images, KubernetesConfig, KubernetesRuntime, NetworkIsolation, PackageAccess, Placement, PodSettings, Toleration,
};
use crate::platform::runtime::local::dependencies::InstallerSettings;
use crate::platform::runtime::local::sandbox::SandboxSettings;
use crate::platform::runtime::local::{LocalConfig, LocalRuntime};
use crate::platform::secrets::SecretKey;
use axum::Router;
use axum_login::AuthManagerLayerBuilder;
use clap::Parser;
use leptos::config::LeptosOptions;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

/// Where function instances run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Supervised processes on this machine (no cluster needed).
    Local,
    /// A Kubernetes cluster through kube-rs.
    Kubernetes,
}

/// kubefn's configuration: every flag is also an environment variable `KUBEFN_<FLAG>`.
#[derive(Clone, Debug, Parser)]
#[command(name = "kubefn", version, about = "Functions-as-a-Service on Kubernetes, with a web UI")]
pub struct Config {
    /// Address to serve the UI, the REST API and the gateway on.
    #[arg(long, env = "KUBEFN_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Directory for the database and runtime state (created if missing).
    #[arg(long, env = "KUBEFN_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Database URL; defaults to SQLite at DATA_DIR/kubefn.db.
    #[arg(long, env = "KUBEFN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where instances run.
    #[arg(long, env = "KUBEFN_RUNTIME", value_enum, default_value = "local")]
    pub runtime: RuntimeKind,
    /// Create (or reset) an admin at start-up, as NAME:PASSWORD.
    #[arg(long, env = "KUBEFN_ADMIN", hide_env_values = true)]
    pub admin: Option<String>,
    /// Whether anyone may sign up.
    #[arg(long, env = "KUBEFN_SIGNUP", value_enum, default_value = "open")]
    pub signup: SignupPolicy,
    /// Mark the session cookie Secure (serve behind HTTPS).
    #[arg(long, env = "KUBEFN_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,
    /// Ports the local runtime gives instances as their node ports, as FIRST-LAST.
    #[arg(long, env = "KUBEFN_NODE_PORT_RANGE", default_value = "30000-32767", value_parser = parse_port_range)]
    pub node_port_range: RangeInclusive<u16>,
    /// Address the local runtime's node ports listen on.
    #[arg(long, env = "KUBEFN_NODE_HOST", default_value = "127.0.0.1")]
    pub node_host: IpAddr,
    /// Seconds between reconcile passes (store → runtime); edits and rollbacks also trigger one.
    #[arg(long, env = "KUBEFN_RECONCILE_SECONDS", default_value_t = 5)]
    pub reconcile_seconds: u64,
    /// With several kubefn processes on one PostgreSQL database: seconds the leader's lease
    /// runs unrenewed before another process takes over its work (renewed every fifth of it).
    #[arg(long, env = "KUBEFN_LEADER_LEASE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub leader_lease_seconds: u64,
    /// Run cron triggers (`false`: they are kept but do not fire, e.g. for tests that drive the
    /// clock themselves).
    #[arg(long, env = "KUBEFN_CRON", default_value_t = true, action = clap::ArgAction::Set)]
    pub cron: bool,
    /// Seconds replicas replaced by an update keep serving the requests they have.
    #[arg(long, env = "KUBEFN_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Local runtime: seconds between autoscaler decisions (on Kubernetes, the controller
    /// manager's --horizontal-pod-autoscaler-sync-period).
    #[arg(long, env = "KUBEFN_AUTOSCALE_SYNC_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub autoscale_sync_seconds: u64,
    /// Local runtime: how long a scale-down waits, taking the highest recommendation seen
    /// meanwhile (the HPA's scale-down stabilization window).
    #[arg(long, env = "KUBEFN_SCALE_DOWN_STABILIZATION_SECONDS", default_value_t = 300)]
    pub scale_down_stabilization_seconds: u64,
    /// Warm bootstrap processes the local runtime keeps per language for fast cold starts.
    #[arg(long, env = "KUBEFN_WARM_POOL_SIZE", default_value_t = 1)]
    pub warm_pool_size: usize,
    /// Local runtime: run function code without a sandbox, as kubefn itself. Any account's
    /// function can then read kubefn's database and environment: only for a machine where you
    /// are the only user (the sandbox needs root, bubblewrap and cgroups).
    #[arg(long, env = "KUBEFN_SINGLE_USER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub single_user: bool,
    /// Local runtime: processes and threads one replica may have (a fork bomb stops there).
    #[arg(long, env = "KUBEFN_PIDS_LIMIT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..))]
    pub pids_limit: u64,
    /// Local runtime: the unprivileged user id (and group id) function code runs as.
    #[arg(long, env = "KUBEFN_SANDBOX_UID", default_value_t = 65534, value_parser = clap::value_parser!(u32).range(1..))]
    pub sandbox_uid: u32,
    /// Kubernetes runtime: the kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBEFN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes runtime: the namespace of every instance.
    #[arg(long, env = "KUBEFN_NAMESPACE", default_value = "kubefn-functions")]
    pub namespace: String,
    /// Kubernetes runtime: give every user a namespace of their own, named PREFIX + user name.
    #[arg(long, env = "KUBEFN_USER_NAMESPACE_PREFIX")]
    pub user_namespace_prefix: Option<String>,
    /// Kubernetes runtime: the image Python functions run on.
    #[arg(long, env = "KUBEFN_PYTHON_IMAGE", default_value = "python:3.12-slim")]
    pub python_image: String,
    /// Kubernetes runtime: the image Node functions run on.
    #[arg(long, env = "KUBEFN_NODE_IMAGE", default_value = "node:22-slim")]
    pub node_image: String,
    /// Kubernetes runtime: labels a node must carry to run functions, as `key=value,…` (a
    /// dedicated node pool).
    #[arg(long, env = "KUBEFN_NODE_SELECTOR", default_value = "", value_parser = |t: &str| Placement::parse_node_selector(t).map_err(|e| e.to_string()))]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes runtime: taints function pods tolerate, as `key[=value][:Effect],…`.
    #[arg(long, env = "KUBEFN_TOLERATIONS", default_value = "", value_parser = |t: &str| Placement::parse_tolerations(t).map_err(|e| e.to_string()))]
    pub tolerations: Tolerations,
    /// Address ranges (`CIDR,…`) that user-chosen outbound calls (async callbacks) may reach
    /// besides public addresses; loopback, link-local and private ones are refused otherwise,
    /// and kubefn's own port always.
    #[arg(long, env = "KUBEFN_OUTBOUND_ALLOW", default_value = "", value_parser = |t: &str| OutboundPolicy::parse_ranges(t))]
    pub outbound_allow: OutboundRanges,
    /// Kubernetes runtime: serve the package egress here, an HTTPS proxy through which the
    /// dependency installs of function pods reach the package registries and nothing else
    /// (e.g. `0.0.0.0:3128` inside the cluster). Off by default.
    #[arg(long, env = "KUBEFN_PACKAGE_EGRESS_LISTEN")]
    pub package_egress_listen: Option<SocketAddr>,
    /// Kubernetes runtime: the proxy URL dependency installs in pods use (default: the package
    /// egress at its listen address, e.g. `http://kubefn.kubefn-system.svc:3128` in a cluster).
    #[arg(long, env = "KUBEFN_PACKAGE_PROXY")]
    pub package_proxy: Option<String>,
    /// Kubernetes runtime: a PEM file of the certificate authorities dependency installs trust
    /// (a TLS-inspecting proxy's CA); default: the runtime image's own.
    #[arg(long, env = "KUBEFN_PACKAGE_CA_FILE")]
    pub package_ca_file: Option<PathBuf>,
    /// Kubernetes runtime: kubefn's own namespace, whose pods (and only they) may connect to
    /// function pods; functions may reach only its package egress there.
    #[arg(long, env = "KUBEFN_SYSTEM_NAMESPACE", default_value = "kubefn-system")]
    pub system_namespace: String,
    /// Kubernetes runtime: the cluster's pod network (`CIDR,…`). With it, clients outside it
    /// (node-port users) may connect to function pods as well; without it, where the network
    /// plugin enforces NetworkPolicies, only kubefn may.
    #[arg(long, env = "KUBEFN_POD_NETWORK", default_value = "", value_parser = |t: &str| OutboundPolicy::parse_ranges(t))]
    pub pod_network: OutboundRanges,
    /// Kubernetes runtime: ports kubefn's port-forwards to instances listen on, as FIRST-LAST.
    #[arg(long, env = "KUBEFN_PORT_FORWARD_RANGE", default_value = "40000-40999", value_parser = parse_port_range)]
    pub port_forward_range: RangeInclusive<u16>,
    /// An OTLP/HTTP collector (its base URL, e.g. `http://otel-collector:4318`) to export the
    /// gateway's spans to, one per invocation (none by default).
    #[arg(long, env = "KUBEFN_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// 64 hex digits sealing users' secrets at rest (default: DATA_DIR/secrets.key, made 0600 at first start).
    #[arg(long, env = "KUBEFN_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// Log filter, as RUST_LOG (e.g. `info`, `kubefn=debug`). The invocation log (target
    /// `invocations`, one line per call with its trace id) keeps only failures by default;
    /// `info,invocations=info` logs every call.
    #[arg(long, env = "KUBEFN_LOG", default_value = "info,sqlx=warn,tower_sessions=warn,invocations=warn")]
    pub log: String,
}

impl Config {
    /// The same configuration with its paths made absolute against the current directory, so
    /// nothing depends on the working directory of whatever kubefn starts (`make run` passes
    /// the relative `data`).
    pub fn with_absolute_paths(mut self) -> std::io::Result<Config> {
        self.data_dir = std::path::absolute(&self.data_dir)?;
        if let Some(kubeconfig) = &self.kubeconfig {
            self.kubeconfig = Some(std::path::absolute(kubeconfig)?);
        }
        Ok(self)
    }

    /// The database URL, defaulting to SQLite inside the data directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("kubefn.db").display()))
    }
}

/// The outbound ranges setting, whole (as [`Tolerations`]).
type OutboundRanges = Vec<ipnet::IpNet>;

/// The tolerations setting, whole: a plain `Vec` would make clap take one toleration per flag.
type Tolerations = Vec<Toleration>;

/// Parses `FIRST-LAST` (e.g. `30000-32767`).
/// An OTLP/HTTP collector's base URL: plain http (a collector next to kubefn, such as an agent on
/// the node or a Service in the cluster); kubefn's exporter speaks no TLS.
fn parse_otlp_endpoint(text: &str) -> Result<String, String> {
    match text.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && text.parse::<http::Uri>().is_ok() => Ok(text.to_string()),
        _ => Err(format!("{text:?} is not an http:// URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318")),
    }
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (first, last) = text.split_once('-').ok_or_else(|| format!("{text:?} is not FIRST-LAST, e.g. 30000-32767"))?;
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("{p:?} is not a port number (1-65535)"));
    let (first, last) = (port(first)?, port(last)?);
    if first == 0 || first > last {
        return Err(format!("the range {first}-{last} is empty or starts at 0"));
    }
    Ok(first..=last)
}

/// The built server: its router and the runtime to stop when it exits.
pub struct Server {
    /// The UI, server functions, REST API and health endpoints.
    pub router: Router,
    /// The platform behind the router (tests drive the trigger clock through it).
    pub platform: Platform,
    runtime: Arc<dyn Runtime>,
    /// The Kubernetes runtime's package egress, when kubefn serves one.
    egress: Option<PackageEgress>,
    /// Which kubefn process does the work that must happen once.
    pub leadership: Leadership,
    campaign: tokio::task::JoinHandle<()>,
    /// The loops that run while this process leads (reconcile, cron, async) or while it follows
    /// (serving the leader's instances).
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops the reconcile loop and the runtime: every local replica process (they come back
    /// at the next start), or the cluster watchers and port-forwards (instances keep running).
    pub async fn shutdown(self) {
        self.campaign.abort();
        for task in &self.background {
            task.abort();
        }
        // The work has stopped: hand the lease to the next process at once.
        self.leadership.resign().await;
        drop(self.egress);
        self.platform.gateway.flush_spans().await;
        self.runtime.shutdown().await;
    }
}

/// The kubernetes runtime's settings from the server's (reads the package CA file).
pub fn kubernetes_config(config: &Config) -> Result<KubernetesConfig, StartError> {
    let ca_bundle = match &config.package_ca_file {
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|source| StartError::PackageCa { path: path.clone(), source })?)
        }
        None => None,
    };
    let proxy = config.package_proxy.clone().or_else(|| {
        config
            .package_egress_listen
            .filter(|address| !address.ip().is_unspecified())
            .map(|address| format!("http://{address}"))
    });
    Ok(KubernetesConfig {
        kubeconfig: config.kubeconfig.clone(),
        namespace: config.namespace.clone(),
        user_namespace_prefix: config.user_namespace_prefix.clone(),
        pods: PodSettings {
            images: Images { python: config.python_image.clone(), node: config.node_image.clone() },
            placement: Placement {
                node_selector: config.node_selector.clone(),
                tolerations: config.tolerations.clone(),
            },
            packages: PackageAccess { proxy, ca_bundle, env: InstallerSettings::passed_environment() },
        },
        forward_ports: config.port_forward_range.clone(),
        network: NetworkIsolation {
            system_namespace: config.system_namespace.clone(),
            pod_network: config.pod_network.clone(),
        },
        ..KubernetesConfig::new()
    })
}

/// Opens the platform, starts the runtime and its reconcile loop, and builds the whole router
/// (UI, server functions, REST API, sessions).
pub async fn build_app(config: &Config, mut leptos_options: LeptosOptions) -> Result<Server, StartError> {
    let data_dir_error = |source| StartError::DataDir { path: config.data_dir.clone(), source };
    let config = &config.clone().with_absolute_paths().map_err(data_dir_error)?;
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    // The database, the session store and every instance's files and logs live here: kubefn's
    // alone (function code runs as another user, and sees none of it anyway).
    std::fs::set_permissions(&config.data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(data_dir_error)?;
    let (runtime, egress): (Arc<dyn Runtime>, Option<PackageEgress>) = match config.runtime {
        RuntimeKind::Local => {
            let mut local = LocalConfig::new(config.data_dir.join("runtime"));
            local.node_host = config.node_host;
            local.node_ports = config.node_port_range.clone();
            local.drain = Duration::from_secs(config.drain_seconds);
            local.warm_pool_size = config.warm_pool_size;
            local.pids_limit = config.pids_limit;
            local.sandbox = (!config.single_user).then(|| SandboxSettings {
                uid: config.sandbox_uid,
                gid: config.sandbox_uid,
                ..SandboxSettings::default()
            });
            local.autoscaler.sync_period = Duration::from_secs(config.autoscale_sync_seconds);
            local.autoscaler.scale_down_stabilization = Duration::from_secs(config.scale_down_stabilization_seconds);
            let local = LocalRuntime::new(local).map_err(|source| StartError::Runtime { runtime: "local", source })?;
            (Arc::new(local), None)
        }
        RuntimeKind::Kubernetes => {
            let kubernetes_config = kubernetes_config(config)?;
            let egress = match config.package_egress_listen {
                Some(listen) => {
                    let hosts = package_egress::registry_hosts(&kubernetes_config.pods.packages.env);
                    Some(PackageEgress::start(listen, hosts).await.map_err(StartError::PackageEgress)?)
                }
                None => None,
            };
            let kubernetes = KubernetesRuntime::connect(kubernetes_config).await.map_err(StartError::Kubernetes)?;
            (Arc::new(kubernetes), egress)
        }
    };
    let outbound = OutboundPolicy::new(config.outbound_allow.clone(), Some(config.listen));
    let spool = AsyncSpool::open(config.data_dir.join("async-bodies")).map_err(StartError::Spool)?;
    let spans = match &config.otlp_endpoint {
        Some(endpoint) => Some(SpanExport::start(endpoint).map_err(StartError::Spans)?),
        None => None,
    };
    let secrets_key =
        SecretKey::configured(config.secrets_key.as_deref(), &config.data_dir).map_err(StartError::SecretsKey)?;
    let platform =
        Platform::open(&config.database_url(), spool, config.signup, runtime.clone(), outbound, spans, secrets_key)
            .await
            .map_err(StartError::Store)?;
    if platform.store.is_shared() && config.secrets_key.is_none() {
        // A key of this process's own would seal secrets the other processes cannot open.
        return Err(StartError::SharedSecretsKey);
    }
    if let Some(admin) = &config.admin {
        let (name, password) = admin.split_once(':').ok_or(StartError::AdminFormat)?;
        platform.accounts.ensure_admin(name, password).await.map_err(StartError::Admin)?;
        tracing::info!(admin = name, "admin account ready");
    }

    let session_store = SessionRecords::open(platform.store.pool()).await.map_err(StartError::Sessions)?;
    let sessions = SessionManagerLayer::new(session_store.clone())
        .with_name(crate::api::caller::SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.secure_cookies)
        .with_expiry(Expiry::OnInactivity(time::Duration::days(7)));
    let auth = AuthManagerLayerBuilder::new(SessionBackend(platform.accounts.clone()), sessions).build();

    if leptos_options.output_name.is_empty() {
        // Only a server built without cargo-leptos (e.g. `cargo test`) lacks the bundle name.
        leptos_options.output_name = env!("CARGO_PKG_NAME").into();
    }
    leptos_options.site_addr = config.listen;
    let reconcile_period = Duration::from_secs(config.reconcile_seconds.max(1));
    let lease = Duration::from_secs(config.leader_lease_seconds);
    let leadership = Leadership::for_store(&platform.store, LeaseTimings { duration: lease, renew_every: lease / 5 });
    let campaign = leadership.spawn();
    // The local runtime's replicas are children of the kubefn that runs them: one process alone
    // may run them over a database (after a crash, the old lease runs out first).
    if config.runtime == RuntimeKind::Local && !leadership.until_leading(lease + lease / 5 * 2).await {
        campaign.abort();
        return Err(StartError::LocalRuntimeTaken);
    }
    let mut background = vec![
        leadership.lead({
            let instances = platform.instances.clone();
            move || instances.spawn_reconciler(reconcile_period)
        }),
        leadership.lead({
            let asyncs = platform.asyncs.clone();
            move || asyncs.spawn()
        }),
        platform.instances.spawn_server(reconcile_period, leadership.clone()),
    ];
    background.push(leadership.lead({
        let sessions = session_store.clone();
        move || sessions.spawn_expiry_sweep(Duration::from_secs(3600))
    }));
    if config.cron {
        let triggers = platform.triggers.clone();
        background.push(leadership.lead(move || triggers.spawn()));
    }
    let state = AppState::new(leptos_options.clone(), platform.clone());
    let routes = generate_route_list(App);
    let app = Router::new()
        .merge(rest::router())
        .merge(gateway::router())
        .leptos_routes_with_context(&state, routes, || {}, {
            let options = leptos_options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .with_state(state.clone())
        .layer(axum::middleware::map_response(crate::api::error::server_function_error_status))
        .layer(auth)
        // Outside the session layer: a forged write is refused before its session is loaded.
        .layer(axum::middleware::from_fn(origin::refuse_cross_origin_writes))
        // Not around sessionless invocations: the gateway writes its own invocation log.
        .layer(TraceLayer::new_for_http());
    let app = gateway::past_the_session_layers(app, state);
    Ok(Server { router: app, platform, runtime, egress, leadership, campaign, background })
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let leptos_options = leptos::config::get_configuration(None).map_err(StartError::Site)?.leptos_options;
    let server = build_app(&config, leptos_options).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { address: config.listen, source })?;
    tracing::info!(address = %config.listen, runtime = ?config.runtime, "kubefn serving on http://{}", config.listen);
    let served = axum::serve(listener, server.router.clone().into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(StartError::Serve);
    server.shutdown().await;
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

mod start_error;
pub use start_error::StartError;

#[cfg(test)]
mod tests;
