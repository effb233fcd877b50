//! The kubernetes runtime's settings, and the client built from them.

use super::*;

/// The kubernetes runtime's settings.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// A kubeconfig file; `None` infers one (KUBECONFIG, ~/.kube/config, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of every instance (when not per user).
    pub namespace: String,
    /// With a prefix, every user's instances go to `{prefix}{user}`, created on demand.
    pub user_namespace_prefix: Option<String>,
    /// What every function pod takes from kubefn's configuration (images, nodes, registries).
    pub pods: PodSettings,
    /// Where port-forward listeners listen.
    pub forward_host: IpAddr,
    /// The ports port-forward listeners take.
    pub forward_ports: RangeInclusive<u16>,
    /// How long a connection waits for a ready pod.
    pub hold: Duration,
    /// Reach instances through their Service's DNS name (kubefn runs inside the cluster).
    pub in_cluster: bool,
    /// Act as this user (tests impersonate kubefn's ServiceAccount to prove its RBAC).
    pub impersonate: Option<String>,
    /// How often pod usage is read from metrics.k8s.io.
    pub usage_period: Duration,
    /// The NetworkPolicy kept in each namespace with functions.
    pub network: NetworkIsolation,
    /// kubefn's ServiceAccount (in [`NetworkIsolation::system_namespace`]), which the RoleBinding
    /// in each user namespace names.
    pub service_account: String,
}

impl KubernetesConfig {
    /// Defaults: namespace `kubefn-functions`, port-forwards on 127.0.0.1:40000-40999.
    pub fn new() -> KubernetesConfig {
        KubernetesConfig {
            kubeconfig: None,
            namespace: "kubefn-functions".into(),
            user_namespace_prefix: None,
            pods: PodSettings::default(),
            forward_host: IpAddr::from([127, 0, 0, 1]),
            forward_ports: 40000..=40999,
            hold: Duration::from_secs(30),
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            impersonate: None,
            usage_period: Duration::from_secs(5),
            network: NetworkIsolation::default(),
            service_account: "kubefn".into(),
        }
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig::new()
    }
}

/// Builds a client from the configuration, with no read timeout: log follows and port-forwards
/// stay open for as long as they are used.
pub async fn client(config: &KubernetesConfig) -> Result<Client, KubernetesError> {
    Client::try_from(kube_config(config).await?).map_err(KubernetesError::Client)
}

pub(super) async fn kube_config(config: &KubernetesConfig) -> Result<Config, KubernetesError> {
    let mut kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|source| KubernetesError::Kubeconfig { path: path.clone(), source })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubernetesError::Kubeconfig { path: path.clone(), source })?
        }
        None => Config::infer().await.map_err(KubernetesError::Config)?,
    };
    kube_config.read_timeout = None;
    if let Some(user) = &config.impersonate {
        kube_config.auth_info.impersonate = Some(user.clone());
    }
    Ok(kube_config)
}
