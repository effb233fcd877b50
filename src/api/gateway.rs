//! `ANY /fn/{user}/{function}/{*path}`: find the caller (if any), hand the request to the
//! platform's gateway, and stream the function's answer back (or a JSON error saying why
//! not); `GET /metrics` for admins and their Prometheus.

use super::caller::{client_address, principal_from_parts, Caller};
use super::{ApiError, AppState};
use crate::platform::gateway::{upstream_uri, GatewayError};
use crate::platform::metrics::{InstanceLabels, CONTENT_TYPE};
use crate::platform::Platform;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

/// The invocation routes.
pub fn router() -> Router<AppState> {
    // `{*path}` matches no empty path, so `/fn/u/f/` (the function's root, as curl users type
    // it) needs a route of its own.
    Router::new()
        .route("/fn/{user}/{function}", any(invoke))
        .route("/fn/{user}/{function}/", any(invoke))
        .route("/fn/{user}/{function}/{*path}", any(invoke))
        .route("/metrics", get(metrics))
}

/// The gateway's metrics with the replica gauges of every instance as they are now. Admins
/// only: the figures are labelled by user (Prometheus sends an admin's API token).
async fn metrics(State(platform): State<Platform>, Caller(caller): Caller) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::new(403, "only admins may read /metrics: it shows every user's figures"));
    }
    let instances = platform.instances.list(&caller).await?;
    let gateway_metrics = platform.gateway.metrics();
    gateway_metrics.set_replicas(instances.iter().map(|i| (InstanceLabels::new(&i.function, &i.user), i.replicas.desired, i.replicas.ready)));
    let text = gateway_metrics.encode().map_err(|error| ApiError::internal(&error))?;
    Ok(([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

async fn invoke(
    State(platform): State<Platform>,
    super::rest::Path(params): super::rest::Path<std::collections::HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (user, function) = (params.get("user").cloned().unwrap_or_default(), params.get("function").cloned().unwrap_or_default());
    let rest = params.get("path").cloned().unwrap_or_default();
    let (mut parts, body) = request.into_parts();
    let caller = principal_from_parts(&mut parts, &platform).await?;
    let client = client_address(&parts);
    parts.uri = upstream_uri(&rest, parts.uri.query()).map_err(|error| ApiError::new(400, format!("the path cannot be forwarded: {error}")))?;
    let forwarded = Request::from_parts(parts, body);
    let response = platform.gateway.invoke(caller.as_ref(), &user, &function, forwarded, client).await?;
    Ok(response.map(Body::new).into_response())
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        match error.status() {
            500 => ApiError::internal(&error),
            status => {
                let retry_after_s = match &error {
                    GatewayError::TooBusy { retry_after_s, .. } => Some(*retry_after_s),
                    _ => None,
                };
                ApiError { retry_after_s, ..ApiError::new(status, crate::platform::error_chain(&error)) }
            }
        }
    }
}
