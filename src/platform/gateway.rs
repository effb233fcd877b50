//! The gateway's invocation path: `/fn/{user}/{function}/{*path}` reaches that user's instance
//! through the runtime's connector. Each request gets its own upstream connection, so the
//! runtime's balancing and rolling updates see every request (a pooled connection would pin
//! a client to one replica, including one being replaced). A request to an instance scaled to
//! zero waits while a replica starts. Limits beyond the function's timeout, metrics and
//! triggers are the gateway issue's work.

use crate::platform::auth::Principal;
use crate::platform::model::InstanceState;
use crate::platform::runtime::{Runtime, RuntimeError};
use crate::platform::store::{Store, StoreError};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
    Upstream(#[source] hyper::Error),
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
    /// The HTTP status the caller gets.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::NoInstance { .. } => 404,
            GatewayError::NotRunning { .. } => 503,
            GatewayError::Timeout { .. } => 504,
            GatewayError::Upstream(_) | GatewayError::Connect(_) => 502,
            GatewayError::Runtime(_) | GatewayError::Store(_) => 500,
        }
    }
}

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

/// The invocation proxy; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    store: Store,
    runtime: Arc<dyn Runtime>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over the store's instances, reaching them through `runtime`.
    pub fn new(store: Store, runtime: Arc<dyn Runtime>) -> Gateway {
        Gateway { store, runtime }
    }

    /// Forwards `request` (its URI already the path and query for the function) to the
    /// instance of `function` belonging to `user`. Until per-function invoke rules exist,
    /// only that user (or an admin) may invoke it.
    pub async fn invoke<B>(
        &self,
        caller: &Principal,
        user: &str,
        function: &str,
        mut request: Request<B>,
        client: Option<IpAddr>,
    ) -> Result<Response<Incoming>, GatewayError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let no_instance = || GatewayError::NoInstance { user: user.to_string(), function: function.to_string() };
        let owner = self.store.user_by_name(user).await?.ok_or_else(no_instance)?;
        if owner.id != caller.id && !caller.is_admin() {
            return Err(no_instance());
        }
        let record = self.store.function_by_name(function).await?.ok_or_else(no_instance)?;
        let instance = self.store.instance_of(record.id, owner.id).await?.ok_or_else(no_instance)?;
        let timeout_s = self.store.version_spec(record.id, record.current_version).await?.map_or(60, |(_, spec)| spec.timeout_s);
        if instance.paused {
            return Err(GatewayError::NotRunning { state: "Paused", reason: "resume it to invoke it".into() });
        }
        if let Some(status) = self.runtime.status(&instance.id)
            && status.state == InstanceState::Failed
            && status.serving_version.is_none()
        {
            return Err(GatewayError::NotRunning { state: "Failed", reason: status.message });
        }
        let address = self.runtime.connect(&instance.id).await.map_err(|error| match error {
            RuntimeError::NotFound { .. } => GatewayError::NotRunning { state: "Pending", reason: "it is starting; try again in a moment".into() },
            other => GatewayError::Runtime(other),
        })?;

        prepare_upstream(request.headers_mut(), client);
        let forward = async {
            let stream = tokio::net::TcpStream::connect(address).await.map_err(GatewayError::Connect)?;
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(GatewayError::Upstream)?;
            // Drives the connection until the response body is read.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender.send_request(request).await.map_err(GatewayError::Upstream)
        };
        // The function's own timeout plus a little for a cold start; the bootstrap answers 504
        // itself at its timeout, this bounds a replica that does not answer at all.
        let limit = Duration::from_secs(u64::from(timeout_s) + 5);
        let mut response = tokio::time::timeout(limit, forward).await.map_err(|_| GatewayError::Timeout { seconds: timeout_s })??;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
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

fn prepare_upstream(headers: &mut HeaderMap, client: Option<IpAddr>) {
    let host = headers.get(http::header::HOST).cloned();
    strip_hop_by_hop(headers);
    // Credentials for kubefn are not the function's business.
    headers.remove(http::header::COOKIE);
    headers.remove(http::header::AUTHORIZATION);
    if let Some(client) = client {
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {client}"),
            None => client.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    headers.insert(http::header::HOST, HeaderValue::from_static("function"));
    // One request per upstream connection (see the module's documentation).
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|name| name.trim().to_ascii_lowercase()))
        .collect();
    for name in HOP_BY_HOP.iter().map(|n| n.to_string()).chain(named) {
        headers.remove(name.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_uri_keeps_the_rest_of_the_path_and_the_query() {
        assert_eq!(upstream_uri("", None).expect("uri"), "/");
        assert_eq!(upstream_uri("/a/b", Some("x=1&y=2")).expect("uri"), "/a/b?x=1&y=2");
        assert_eq!(upstream_uri("a", None).expect("uri"), "/a");
    }

    #[test]
    fn hop_by_hop_headers_and_kubefn_credentials_stay_behind() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        headers.insert("x-private", HeaderValue::from_static("secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("cookie", HeaderValue::from_static("kubefn_session=abc"));
        headers.insert("authorization", HeaderValue::from_static("Bearer kfn_x"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("host", HeaderValue::from_static("kubefn.example"));
        headers.insert("x-custom", HeaderValue::from_static("kept"));
        prepare_upstream(&mut headers, Some(IpAddr::from([127, 0, 0, 1])));
        for gone in ["x-private", "keep-alive", "cookie", "authorization"] {
            assert!(!headers.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "kubefn.example");
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(headers["connection"], "close");
    }
}
