//! The gateway's invocation path: `/fn/{user}/{function}/{*path}` reaches that user's instance.
//! The runtime says which replicas are ready ([`Runtime::connect`]); the gateway dials them
//! itself (a local replica's Unix socket, a pod's address; no relay in between, except kubefn's
//! port-forward from outside a cluster), keeps a keep-alive pool per replica and sends each
//! request to the replica with the fewest requests outstanding (`upstream.rs`). A replica's pool
//! goes when the replica stops being ready, and a new or restarted replica has an endpoint of
//! its own, so after a rollout, a scale-out or a restart new replicas get requests at once and
//! old ones only finish what they have. A request to an instance scaled to zero waits while a
//! replica starts (a cold start). Upgrades
//! (WebSocket) get a connection of their own: after the instance's 101 the two connections are
//! joined byte for byte.
//!
//! Each function's [`InvokePolicy`] decides who may invoke (owner, any account, anyone), the
//! largest body (413) and the requests in flight per ready replica (429 with Retry-After);
//! every invocation is counted in [`GatewayMetrics`] and carries a W3C trace ([`TraceContext`]),
//! continued from the caller or started here, named in the invocation log.

use crate::platform::auth::Principal;
use crate::platform::metrics::{GatewayMetrics, InFlight, InstanceLabels, Rejection};
use crate::platform::model::{InstanceState, InvokeAccess, InvokePolicy};
use crate::platform::runtime::{Route, Runtime, RuntimeError};
use crate::platform::store::{Store, StoreError};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Buf, Bytes, Incoming};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Why an invocation was not answered by the function.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No such instance, or not the caller's.
    #[error("{user} has no instance of {function} that you may invoke; deploy it first")]
    NoInstance {
        /// The user in the path.
        user: String,
        /// The function in the path.
        function: String,
    },
    /// The function may only be invoked with credentials, and there were none.
    #[error(
        "invoking {function} needs a kubefn session or an API token (\"Authorization: Bearer …\"); a call from another site or port never uses the session"
    )]
    Unauthenticated {
        /// The function in the path.
        function: String,
    },
    /// The request body is over the function's limit.
    #[error("the request body is over {function}'s limit of {limit} bytes; send less, or raise invoke.max_body_bytes")]
    TooLarge {
        /// The function.
        function: String,
        /// Its limit in bytes.
        limit: u64,
    },
    /// The instance serves its most requests at once.
    #[error(
        "the instance is serving its limit of {limit} requests at once; retry in {retry_after_s} s, or raise invoke.max_in_flight_per_replica"
    )]
    TooBusy {
        /// The instance's limit now (per replica × ready replicas).
        limit: u64,
        /// Seconds to wait.
        retry_after_s: u64,
    },
    /// The instance exists but cannot take requests.
    #[error("the instance is {state}: {reason}")]
    NotRunning {
        /// Its state.
        state: &'static str,
        /// What to do.
        reason: String,
    },
    /// The function did not start answering within its timeout.
    #[error("the function did not answer within its timeout of {seconds} s")]
    Timeout {
        /// The timeout.
        seconds: u32,
    },
    /// The connection to the instance failed.
    #[error("cannot reach the instance")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection to the instance could not be opened.
    #[error("cannot connect to the instance")]
    Connect(#[source] std::io::Error),
    /// The runtime failed.
    #[error("the runtime cannot reach the instance")]
    Runtime(#[source] RuntimeError),
    /// The store failed.
    #[error("the instance store failed")]
    Store(#[from] StoreError),
}

impl GatewayError {
    /// Whether the same call may succeed later: the instance is unavailable, overloaded, slow
    /// or broken on the way, rather than the call refused (no instance, no credentials, a body
    /// over the limit). The async worker retries these.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            GatewayError::NoInstance { .. } | GatewayError::Unauthenticated { .. } | GatewayError::TooLarge { .. }
        )
    }
}

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The invocation proxy; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    store: Store,
    runtime: Arc<dyn Runtime>,
    metrics: Arc<GatewayMetrics>,
    pools: Arc<Mutex<HashMap<String, InstancePools>>>,
    /// Where the gateway's spans go, when kubefn exports them.
    spans: Option<Arc<SpanExport>>,
}

/// The body sent upstream: the caller's, cut at the function's limit.
type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// What an admitted invocation reaches.
#[derive(Clone, Debug)]
pub struct Target {
    /// The instance's id.
    pub instance_id: String,
    /// The function's id.
    pub function_id: i64,
    /// The instance's user's id.
    pub owner_id: i64,
    /// The function's name.
    pub function: String,
    /// Whether the instance is paused.
    pub paused: bool,
    /// The function's invocation timeout.
    pub timeout_s: u32,
    /// The function's invoke policy.
    pub policy: InvokePolicy,
}

impl Gateway {
    /// A gateway over the store's instances, reaching them through `runtime`, counting in
    /// `metrics`.
    pub fn new(
        store: Store,
        runtime: Arc<dyn Runtime>,
        metrics: Arc<GatewayMetrics>,
        spans: Option<SpanExport>,
    ) -> Gateway {
        Gateway { store, runtime, metrics, pools: Arc::default(), spans: spans.map(Arc::new) }
    }

    /// Sends the spans still buffered, when kubefn exports them (at shutdown).
    pub async fn flush_spans(&self) {
        if let Some(spans) = &self.spans {
            spans.shutdown().await;
        }
    }

    /// The replica of instance `id` that `route` offers with the fewest requests outstanding,
    /// and its pool (see [`InstancePools::choose`]).
    fn choose(&self, id: &str, route: Route) -> Option<Chosen> {
        let mut pools = self.pools.lock();
        if let Some(pools) = pools.get_mut(id) {
            return pools.choose(route);
        }
        // A first request to an instance (rare next to the requests that find its pools) also
        // drops the pools of instances the runtime no longer runs: a deleted instance that is
        // never called again would otherwise keep its entry for as long as kubefn runs.
        pools.retain(|known, _| self.runtime.ready_replicas(known).is_some());
        pools.entry(id.to_string()).or_default().choose(route)
    }

    /// How many instances the gateway keeps replica pools for: the ones called since kubefn
    /// started, less those pruned once the runtime no longer ran them.
    pub fn pooled_instances(&self) -> usize {
        self.pools.lock().len()
    }

    /// The invocation metrics.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// The instance `caller` (`None`: anonymous) may invoke as `/fn/{user}/{function}`, with
    /// the function's limits; the same errors as an invocation otherwise.
    pub async fn admit(&self, caller: Option<&Principal>, user: &str, function: &str) -> Result<Target, GatewayError> {
        let no_instance = || GatewayError::NoInstance { user: user.to_string(), function: function.to_string() };
        // Cached by the store, policy parsed: no database read and no JSON on most requests.
        let row = self.store.invocation(user, function).await?.ok_or_else(no_instance)?;
        let policy = row.policy.clone();
        let timeout_s =
            row.timeout_s.and_then(|t| u32::try_from(t).ok()).unwrap_or(crate::platform::model::DEFAULT_TIMEOUT_S);
        match (policy.access, caller) {
            (InvokeAccess::Public, _) => {}
            (_, None) => return Err(GatewayError::Unauthenticated { function: function.to_string() }),
            (InvokeAccess::Token, Some(_)) => {}
            // Another user learns nothing, not even that the instance exists.
            (InvokeAccess::Owner, Some(caller)) if row.owner_id != caller.id && !caller.is_admin() => {
                return Err(no_instance());
            }
            (InvokeAccess::Owner, Some(_)) => {}
        }
        let instance_id = row.instance_id.clone().ok_or_else(no_instance)?;
        Ok(Target {
            instance_id,
            function_id: row.function_id,
            owner_id: row.owner_id,
            function: function.to_string(),
            paused: row.paused.unwrap_or(false),
            timeout_s,
            policy,
        })
    }

    /// Forwards `request` (its URI already the path and query for the function) to the
    /// instance of `function` belonging to `user`, if the function's invoke policy lets
    /// `caller` (`None`: anonymous) in and the request is within its limits.
    pub async fn invoke<B>(
        &self,
        caller: Option<&Principal>,
        user: &str,
        function: &str,
        mut request: Request<B>,
        client: Option<IpAddr>,
    ) -> Result<Response<Answer>, GatewayError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Target { instance_id, paused, timeout_s, policy, .. } = self.admit(caller, user, function).await?;
        let labels = InstanceLabels::new(function, user);
        let declared_length = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > policy.max_body_bytes) {
            self.metrics.rejected(&labels, Rejection::TooLarge);
            return Err(GatewayError::TooLarge { function: function.to_string(), limit: policy.max_body_bytes });
        }
        if paused {
            return Err(GatewayError::NotRunning { state: "Paused", reason: "resume it to invoke it".into() });
        }
        let ready = self.runtime.ready_replicas(&instance_id).unwrap_or(0);
        if ready == 0
            && let Some(status) = self.runtime.status(&instance_id)
            && status.state == InstanceState::Failed
            && status.serving_version.is_none()
        {
            return Err(GatewayError::NotRunning { state: "Failed", reason: status.message });
        }
        let limit = admission_limit(policy.max_in_flight_per_replica, ready);
        let Some(in_flight) = self.metrics.admit(&labels, limit) else {
            self.metrics.rejected(&labels, Rejection::TooBusy);
            return Err(GatewayError::TooBusy { limit, retry_after_s: 1 });
        };
        if ready == 0 {
            self.metrics.cold_start(&labels);
        }
        let started = Instant::now();
        let trace = TraceContext::stamp(request.headers_mut());
        let wall_clock_start = self.spans.as_ref().map(|_| std::time::SystemTime::now());
        let answer = self.forward(&instance_id, request, client, timeout_s, policy.max_body_bytes, function).await;
        // What the log, the span and the metrics say of the call: the function's status, or why none.
        let outcome = answer.as_ref().map(|(response, _)| response.status());
        log_invocation(&trace, (user, function), started.elapsed(), outcome);
        if let (Some(spans), Some(wall_clock_start)) = (&self.spans, wall_clock_start) {
            spans.record(&trace, (user, function), wall_clock_start, outcome);
        }
        let failed = outcome.map_or(true, |status| status.is_server_error());
        let counted = !matches!(answer, Err(GatewayError::TooLarge { .. }));
        if counted {
            self.metrics.called(&labels, started.elapsed().as_secs_f64(), failed);
        } else {
            self.metrics.rejected(&labels, Rejection::TooLarge);
        }
        let (response, outstanding) = answer?;
        Ok(response.map(|body| Answer { body, _in_flight: in_flight, _outstanding: outstanding }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward<B>(
        &self,
        id: &str,
        mut request: Request<B>,
        client: Option<IpAddr>,
        timeout_s: u32,
        max_body_bytes: u64,
        function: &str,
    ) -> Result<(Response<Incoming>, Option<Outstanding>), GatewayError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let not_ready =
            || GatewayError::NotRunning { state: "Pending", reason: "it is starting; try again in a moment".into() };
        let route = self.runtime.connect(id).await.map_err(|error| match error {
            RuntimeError::NotFound { .. } => {
                // Not (or no longer) in the runtime: nothing to pool for it.
                self.pools.lock().remove(id);
                not_ready()
            }
            RuntimeError::NotProxied { .. } => GatewayError::NotRunning {
                state: "not served by the gateway",
                reason: "its Service is an ExternalName, which kubefn never proxies to (it could name any host); call that name directly".into(),
            },
            other => GatewayError::Runtime(other),
        })?;
        let Chosen { endpoint, connections, mut outstanding } = self.choose(id, route).ok_or_else(not_ready)?;
        // A WebSocket (or other) upgrade keeps its Upgrade and Connection headers, and the
        // client's connection, once upgraded, is joined to the instance's.
        let upgrade = requested_upgrade(request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        prepare_upstream(request.headers_mut(), client);
        // A body cut at the limit is the caller's 413, anything else the instance's 502.
        let upstream_error = |error: Box<dyn std::error::Error + Send + Sync>| {
            if over_limit(error.as_ref()) {
                GatewayError::TooLarge { function: function.to_string(), limit: max_body_bytes }
            } else {
                GatewayError::Upstream(error)
            }
        };
        // A body without a length (chunked) is cut at the limit as it streams.
        let request = request
            .map(|body| http_body_util::Limited::new(body, usize::try_from(max_body_bytes).unwrap_or(usize::MAX)));
        let forward = async {
            if let Some(protocol) = upgrade {
                let mut request = request;
                request.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
                request.headers_mut().insert(http::header::UPGRADE, protocol);
                let stream = ReplicaStream::connect(&endpoint).await.map_err(GatewayError::Connect)?;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .map_err(|error| GatewayError::Upstream(error.into()))?;
                // Drives the connection until the upgrade ends.
                tokio::spawn(async move {
                    let _ = connection.with_upgrades().await;
                });
                let response = sender.send_request(request).await.map_err(|error| upstream_error(error.into()))?;
                return Ok::<_, GatewayError>((response, None));
            }
            let (mut parts, body) = request.into_parts();
            // Origin form (the path and query) on a connection to the replica; the Host header
            // is already `function` (see `prepare_upstream`).
            let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
            let body =
                body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))).boxed_unsync();
            let (response, connection) =
                connections.send(Request::from_parts(parts, body)).await.map_err(upstream_error)?;
            Ok((response, Some(connection)))
        };
        // The function's own timeout plus a little for a cold start; the bootstrap answers 504
        // itself at its timeout, this bounds a replica that does not answer at all.
        let limit = Duration::from_secs(u64::from(timeout_s) + 5);
        let (mut response, connection) =
            tokio::time::timeout(limit, forward).await.map_err(|_| GatewayError::Timeout { seconds: timeout_s })??;
        outstanding.connection = connection;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                // The joined connection counts as outstanding on its replica while it lasts.
                let _outstanding = outstanding;
                match (client_upgrade.await, upstream_upgrade.await) {
                    (Ok(client), Ok(upstream)) => {
                        let (mut client, mut upstream) =
                            (hyper_util::rt::TokioIo::new(client), hyper_util::rt::TokioIo::new(upstream));
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::debug!(%error, "an upgraded connection could not be joined")
                    }
                }
            });
            // The 101 keeps the headers that say what the connection became.
            confine_answer(response.headers_mut());
            return Ok((response, None));
        }
        strip_hop_by_hop(response.headers_mut());
        confine_answer(response.headers_mut());
        Ok((response, Some(outstanding)))
    }
}

/// Requests that may wait for an instance at zero replicas to start, whatever its limit.
pub const COLD_START_QUEUE: u64 = 1000;

/// How many requests an instance with `ready` replicas takes at once (0: no limit): the
/// per-replica limit times the ready replicas; at zero replicas the requests wait for the
/// first one, so as many as one replica takes, and never more than [`COLD_START_QUEUE`].
fn admission_limit(per_replica: u32, ready: u32) -> u64 {
    let per_replica = u64::from(per_replica);
    match (per_replica, ready) {
        (0, 0) => COLD_START_QUEUE,
        (_, 0) => per_replica.min(COLD_START_QUEUE),
        (_, ready) => per_replica * u64::from(ready),
    }
}

/// Whether a failed upstream request failed because its body went over the limit.
fn over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The upstream path and query for `/fn/{user}/{function}{rest}`: `rest` (or `/`) plus the
/// original query.
pub fn upstream_uri(rest: &str, query: Option<&str>) -> Result<Uri, http::uri::InvalidUri> {
    let path = if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") };
    match query {
        Some(query) => format!("{path}?{query}").parse(),
        None => path.parse(),
    }
}

/// The upstream URI for a path with its query in one text (`/report?full=1`), as triggers,
/// queued invocations and the invoke panel hold them.
pub fn upstream_uri_of(path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
    match path_and_query.split_once('?') {
        Some((path, query)) => upstream_uri(path, Some(query)),
        None => upstream_uri(path_and_query, None),
    }
}

mod answer;
mod connections;
mod headers;
mod spans;
mod trace;
mod upstream;

pub use answer::{Answer, AnswerStart};
use connections::ReplicaStream;
use headers::{confine_answer, prepare_upstream, requested_upgrade, strip_hop_by_hop};
pub use spans::{SpanExport, SpanExportError};
use trace::log_invocation;
pub use trace::{INVOCATION_LOG, TraceContext};
use upstream::{Chosen, InstancePools, Outstanding};

#[cfg(test)]
mod tests;
