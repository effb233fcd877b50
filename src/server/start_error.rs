//! Why kubefn could not start: one error per step of [`super::build_app`] and [`super::serve`].

use crate::platform::async_spool::SpoolError;
use crate::platform::auth::AuthError;
use crate::platform::gateway::SpanExportError;
use crate::platform::runtime::RuntimeError;
use crate::platform::runtime::kubernetes::KubernetesError;
use crate::platform::runtime::kubernetes::package_egress;
use crate::platform::secrets::SecretsError;
use crate::platform::store::StoreError;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why kubefn could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}; choose another with --data-dir")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The async queue's spool directory could not be made.
    #[error("cannot prepare the async spool in the data directory")]
    Spool(#[source] SpoolError),
    /// The secrets key is malformed or its file unusable.
    #[error("cannot use the secrets key (--secrets-key or DATA_DIR/secrets.key)")]
    SecretsKey(#[source] SecretsError),
    /// A database several processes share, without a secrets key they share too.
    #[error(
        "on a PostgreSQL database, which several kubefn processes may share, set --secrets-key (KUBEFN_SECRETS_KEY, 64 hex digits) to the same key on every one of them"
    )]
    SharedSecretsKey,
    /// Another kubefn runs the local runtime over the same database.
    #[error(
        "another kubefn runs the local runtime over this database (it kept its lease); the local runtime runs on one machine: give this kubefn a database of its own, or use --runtime kubernetes for several kubefn replicas"
    )]
    LocalRuntimeTaken,
    /// The database failed to open or migrate.
    #[error("the database is not usable")]
    Store(#[source] StoreError),
    /// The session table could not be created.
    #[error("cannot prepare the session table in the database")]
    Sessions(#[source] sqlx::Error),
    /// `--admin` is malformed.
    #[error("--admin must look like NAME:PASSWORD")]
    AdminFormat,
    /// `--admin` names an invalid user or password.
    #[error("cannot create the admin from --admin")]
    Admin(#[source] AuthError),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {address}; pick another with --listen")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The site settings (LEPTOS_* variables) are malformed.
    #[error("the LEPTOS_* site settings are invalid")]
    Site(#[source] leptos::config::errors::LeptosConfigError),
    /// The runtime could not be prepared.
    #[error("cannot prepare the {runtime} runtime")]
    Runtime {
        /// Which one.
        runtime: &'static str,
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// The package CA file could not be read.
    #[error("cannot read the package CA file {path}; check --package-ca-file")]
    PackageCa {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The package egress could not listen.
    #[error("cannot start the package egress")]
    PackageEgress(#[source] package_egress::EgressError),
    /// The Kubernetes runtime could not connect or lacks a permission.
    #[error("cannot start the kubernetes runtime")]
    Kubernetes(#[source] KubernetesError),
    /// The span exporter could not be set up.
    #[error("cannot export the gateway's spans")]
    Spans(#[source] SpanExportError),
    /// Serving stopped with an error.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}
