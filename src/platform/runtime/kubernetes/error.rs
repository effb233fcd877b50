//! Why the kubernetes runtime could not start or act, and the mapping into the runtime trait's error.

use super::*;

/// Why the kubernetes runtime could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// No configuration: no kubeconfig and not inside a cluster.
    #[error("no cluster configured: set KUBECONFIG (or --kubeconfig), or run kubefn inside a cluster")]
    Config(#[source] kube::config::InferConfigError),
    /// The kubeconfig file is unusable.
    #[error("cannot use the kubeconfig {path}; check the file")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built (TLS settings).
    #[error("cannot build a Kubernetes client from the configuration")]
    Client(#[source] kube::Error),
    /// The apiserver did not answer.
    #[error("no cluster answers at {url}; check that it runs and that the kubeconfig points to it")]
    Unreachable {
        /// The apiserver's address.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// kubefn's account lacks a permission it needs.
    #[error("kubefn may not {verb} {resource}{where_}; apply k8s/ (its Role and ClusterRole) or grant that permission")]
    Forbidden {
        /// The verb.
        verb: String,
        /// The resource (with its group).
        resource: String,
        /// ` in namespace …`, or empty for cluster-wide.
        where_: String,
    },
    /// The namespace for instances does not exist and cannot be created.
    #[error("the namespace {namespace} does not exist and kubefn may not create it; create it or apply k8s/")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A request to the apiserver failed.
    #[error("the apiserver refused to {action}")]
    Api {
        /// What kubefn tried.
        action: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A manifest did not fit its type.
    #[error(transparent)]
    Manifest(#[from] manifests::ManifestError),
    /// Objects were still there after the wait.
    #[error("the objects of instance {id} were still there after {seconds} s; check the namespace's finalizers")]
    NotGone {
        /// The instance.
        id: String,
        /// How long kubefn waited.
        seconds: u64,
    },
    /// An object kubefn would write belongs to something else: never adopted.
    #[error(
        "{kind} {namespace}/{name} belongs to another instance or was not made by kubefn; kubefn leaves it alone (remove it, or rename the function)"
    )]
    Taken {
        /// The kind of object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

pub(super) fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> KubernetesError {
    let action = action.into();
    move |source| KubernetesError::Api { action, source }
}

impl From<KubernetesError> for RuntimeError {
    /// The words the instance's owner reads: when the apiserver refused a request, its own
    /// message (a full Service address range, a ResourceQuota, an admission webhook's reason),
    /// which says what an admin must change; otherwise no more than that the cluster failed,
    /// since a transport error would name the apiserver's address.
    fn from(error: KubernetesError) -> RuntimeError {
        let what = match &error {
            KubernetesError::Api { action, source: kube::Error::Api(status) } => {
                format!("the cluster refused to {action}: {}", status.message)
            }
            KubernetesError::Taken { .. } | KubernetesError::NotGone { .. } | KubernetesError::Forbidden { .. } => {
                error.to_string()
            }
            _ => "the Kubernetes cluster could not do it; kubefn retries, and its log has the details".to_string(),
        };
        RuntimeError::Backend { what, source: Box::new(error) }
    }
}
