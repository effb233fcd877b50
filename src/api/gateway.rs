//! `ANY /fn/{user}/{function}/{*path}`: authenticate, hand the request to the platform's
//! gateway, and stream the function's answer back (or a JSON error saying why not).

use super::caller::{client_address, Caller};
use super::{ApiError, AppState};
use crate::platform::gateway::{upstream_uri, GatewayError};
use crate::platform::Platform;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

/// The invocation routes.
pub fn router() -> Router<AppState> {
    // `{*path}` matches no empty path, so `/fn/u/f/` (the function's root, as curl users type
    // it) needs a route of its own.
    Router::new()
        .route("/fn/{user}/{function}", any(invoke))
        .route("/fn/{user}/{function}/", any(invoke))
        .route("/fn/{user}/{function}/{*path}", any(invoke))
}

async fn invoke(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    super::rest::Path(params): super::rest::Path<std::collections::HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (user, function) = (params.get("user").cloned().unwrap_or_default(), params.get("function").cloned().unwrap_or_default());
    let rest = params.get("path").cloned().unwrap_or_default();
    let (mut parts, body) = request.into_parts();
    let client = client_address(&parts);
    parts.uri = upstream_uri(&rest, parts.uri.query()).map_err(|error| ApiError::new(400, format!("the path cannot be forwarded: {error}")))?;
    let forwarded = Request::from_parts(parts, body);
    let response = platform.gateway.invoke(&caller, &user, &function, forwarded, client).await?;
    Ok(response.map(Body::new).into_response())
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        match error.status() {
            500 => ApiError::internal(&error),
            status => ApiError::new(status, crate::platform::error_chain(&error)),
        }
    }
}
