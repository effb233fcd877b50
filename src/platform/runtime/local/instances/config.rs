//! How the local runtime runs instances: its settings.

use super::*;

/// How the local runtime runs instances.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Directory for bootstraps, sources, dependencies, logs and pid files.
    pub root: PathBuf,
    /// Address node ports listen on.
    pub node_host: IpAddr,
    /// Ports node ports are taken from.
    pub node_ports: RangeInclusive<u16>,
    /// Restart back-off, readiness timeout and stop grace of replicas.
    pub restart: RestartPolicy,
    /// How long a node port holds a connection while no replica is ready.
    pub hold: Duration,
    /// How long replicas replaced by an update keep serving requests in flight.
    pub drain: Duration,
    /// Log lines kept in memory per instance.
    pub log_lines: usize,
    /// Size at which an instance's log file is rotated.
    pub log_file_bytes: u64,
    /// The Python interpreter.
    pub python: PathBuf,
    /// The Node.js interpreter.
    pub node: PathBuf,
    /// The HPA algorithm's periods and tolerance.
    pub autoscaler: AutoscalerConfig,
    /// How often replica CPU and memory are read (and memory limits checked).
    pub usage_period: Duration,
    /// Warm bootstrap processes kept per language for fast starts (0: none).
    pub warm_pool_size: usize,
    /// The sandbox function code runs in; `None` runs it unsandboxed as kubefn (the explicit
    /// single-user mode).
    pub sandbox: Option<SandboxSettings>,
    /// Processes and threads one replica may have.
    pub pids_limit: u64,
    /// How long one dependency install may take.
    pub install_timeout: Duration,
}

impl LocalConfig {
    /// Defaults under `root`: loopback node ports in Kubernetes' range, Kubernetes-like timings.
    pub fn new(root: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig {
            root: root.into(),
            node_host: IpAddr::from([127, 0, 0, 1]),
            node_ports: crate::platform::runtime::forwarding::DEFAULT_NODE_PORT_RANGE,
            restart: RestartPolicy::default(),
            hold: Duration::from_secs(60),
            drain: Duration::from_secs(5),
            log_lines: 2000,
            log_file_bytes: 4 * 1024 * 1024,
            python: PathBuf::from("python3"),
            node: PathBuf::from("node"),
            autoscaler: AutoscalerConfig::default(),
            usage_period: Duration::from_secs(3),
            warm_pool_size: 1,
            sandbox: Some(SandboxSettings::default()),
            pids_limit: 1024,
            install_timeout: Duration::from_secs(300),
        }
    }
}
