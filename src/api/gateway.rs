//! `ANY /fn/{user}/{function}/{*path}`: find the caller (if any), hand the request to the
//! platform's gateway, and stream the function's answer back (or a JSON error saying why
//! not); `ANY /async/fn/…` to queue an invocation; `GET /metrics` for admins and their
//! Prometheus.

use super::caller::{Caller, carries_session_cookie, client_address, principal_from_parts};
use super::openapi::ApiErrors;
use super::origin::session_untrusted;
use super::{ApiError, AppState};
use crate::platform::Platform;
use crate::platform::gateway::{GatewayError, upstream_uri};
use crate::platform::metrics::{CONTENT_TYPE, InstanceLabels};
use crate::platform::model::AsyncAccepted;
use crate::platform::store::AsyncCall;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::future::Either;

/// What an invocation path names: `/fn/{user}/{function}` and the rest (``, `/` or `/path…`),
/// as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InvocationTarget<'a> {
    user: &'a str,
    function: &'a str,
    /// Still percent-encoded: the function receives the path as the client wrote it
    /// (`a%2Fb` stays one segment, `a%20b` stays valid).
    rest: &'a str,
}

/// The synchronous invocations' paths.
const INVOCATION_PREFIX: &str = "/fn/";
/// The queued invocations' paths.
const ASYNC_INVOCATION_PREFIX: &str = "/async/fn/";

/// Splits `{prefix}{user}/{function}{rest}`; `None` for any other path, or an empty name.
/// Names are not decoded: no user or function name needs encoding, so an encoded one names
/// nothing (the caller gets the same 404 as for any unknown name).
fn invocation_target<'a>(path: &'a str, prefix: &str) -> Option<InvocationTarget<'a>> {
    let (user, after_user) = path.strip_prefix(prefix)?.split_once('/')?;
    let (function, rest) = after_user.split_at(after_user.find('/').unwrap_or(after_user.len()));
    (!user.is_empty() && !function.is_empty()).then_some(InvocationTarget { user, function, rest })
}

/// `app` (every route, behind the session layers), except that an invocation without kubefn's
/// session cookie goes straight to the gateway, past axum's routing. Such a call is anonymous
/// or carries an API token, so a session has nothing to add; skipping the session and log-in
/// layers, the router and its extractors saves about a tenth of kubefn's CPU per call (this
/// split runs on every call, so it is one path split and one state reference). The cross-origin
/// guard has nothing to do either: invocations are exempt from it. A `/fn/` path that names no
/// function still gets `app`'s answer.
pub fn past_the_session_layers(app: Router, state: AppState) -> Router {
    let split = tower::service_fn(move |request: Request| {
        let sessionless = invocation_target(request.uri().path(), INVOCATION_PREFIX).is_some()
            && !carries_session_cookie(request.headers());
        if sessionless {
            let state = state.clone();
            Either::Left(async move { Ok(forward_invocation(&state.platform, request).await.into_response()) })
        } else {
            Either::Right(tower::Service::call(&mut app.clone(), request))
        }
    });
    Router::new().fallback_service(split)
}

/// The invocation routes (behind the session layers), queued invocations and `/metrics`.
pub fn router() -> Router<AppState> {
    // `{*path}` matches no empty path, so `/fn/u/f/` (the function's root, as curl users type
    // it) needs a route of its own. The handlers read the path themselves (see
    // [`invocation_target`]): axum would hand them the rest decoded.
    Router::new()
        .route("/fn/{user}/{function}", any(invoke))
        .route("/fn/{user}/{function}/", any(invoke))
        .route("/fn/{user}/{function}/{*path}", any(invoke))
        .route("/async/fn/{user}/{function}", any(invoke_async))
        .route("/async/fn/{user}/{function}/", any(invoke_async))
        .route("/async/fn/{user}/{function}/{*path}", any(invoke_async))
        .route("/metrics", get(metrics))
}

/// The path parameters of an invocation route, for the API's documentation: the handlers
/// split the path themselves ([`invocation_target`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Never built: it only describes the path.
pub(super) struct InvocationParams {
    /// The instance's user.
    user: String,
    /// The function's name.
    function: String,
    /// The path the function sees (may be empty), as the client encoded it; the query string
    /// passes on too.
    path: String,
}

/// An invocation as it arrived: whose instance of what, who calls (`None`: anonymous), and
/// the request with its URI already the path and query for the function.
struct Invocation {
    user: String,
    function: String,
    caller: Option<crate::platform::auth::Principal>,
    parts: http::request::Parts,
    body: Body,
}

impl Invocation {
    /// The invocation `request` makes of a path under `prefix`.
    async fn read(platform: &Platform, prefix: &str, request: Request) -> Result<Invocation, ApiError> {
        let (mut parts, body) = request.into_parts();
        let target = invocation_target(parts.uri.path(), prefix)
            .ok_or_else(|| ApiError::new(404, format!("an invocation's path is {prefix}USER/FUNCTION[/PATH]")))?;
        let uri = upstream_uri(target.rest, parts.uri.query())
            .map_err(|error| ApiError::new(400, format!("the path cannot be forwarded: {error}")))?;
        let (user, function) = (target.user.to_string(), target.function.to_string());
        parts.uri = uri;
        // A call another origin makes never runs as the user whose cookie the browser attached
        // (a page on a node port could otherwise call their private functions): it is anonymous
        // unless it carries an API token.
        // Without a token or the session cookie there is nobody to find (and, on the path past
        // the session layers, no session layer to ask).
        let credentials =
            parts.headers.contains_key(http::header::AUTHORIZATION) || carries_session_cookie(&parts.headers);
        let caller = if session_untrusted(&parts.headers) || !credentials {
            None
        } else {
            principal_from_parts(&mut parts, platform).await?
        };
        Ok(Invocation { user, function, caller, parts, body })
    }
}

/// Queues the request and answers 202 with its id and where to look for the result.
///
/// The call runs later on the user's instance, retried on failure; `X-Callback-Url` names a URL
/// to receive the answer. The invoke policy applies as for a direct call.
#[utoipa::path(method(get, post, put, delete, patch, options), path = "/async/fn/{user}/{function}/{path}",
    tag = "gateway", security((), ("session" = []), ("token" = [])),
    params(InvocationParams),
    request_body(content = Vec<u8>, description = "Any body, kept for the call", content_type = "*/*"),
    responses((status = 202, description = "Queued; `Location` is the status URL", body = AsyncAccepted), ApiErrors,
        (status = 413, description = "The body is over the function's limit", body = ApiError)))]
pub(super) async fn invoke_async(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let Invocation { user, function, caller, parts, body } =
        Invocation::read(platform, ASYNC_INVOCATION_PREFIX, request).await?;
    // Admission (policy, instance) comes first so a refused caller never uploads a body;
    // the body then streams to the spool, up to the function's limit.
    let target = platform.gateway.admit(caller.as_ref(), &user, &function).await?;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let _room = platform
        .asyncs
        .reserve_upload(declared.unwrap_or(target.policy.max_body_bytes).min(target.policy.max_body_bytes))?;
    let header =
        |name: http::header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let call = AsyncCall {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        content_type: header(http::header::CONTENT_TYPE),
        callback_url: header(http::header::HeaderName::from_static("x-callback-url")),
    };
    let accepted = platform.asyncs.enqueue(caller.as_ref(), &target, call, body.into_data_stream()).await?;
    let location = accepted.status_url.clone();
    Ok((http::StatusCode::ACCEPTED, [(http::header::LOCATION, location)], axum::Json(accepted)).into_response())
}

/// The gateway's metrics with the replica gauges of every instance as they are now. Admins
/// only: the figures are labelled by user (Prometheus sends an admin's API token).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"), ApiErrors))]
pub(super) async fn metrics(State(platform): State<Platform>, Caller(caller): Caller) -> Result<Response, ApiError> {
    if !caller.is_admin() {
        return Err(ApiError::new(403, "only admins may read /metrics: it shows every user's figures"));
    }
    let instances = platform.instances.list(&caller).await?;
    let gateway_metrics = platform.gateway.metrics();
    gateway_metrics.set_replicas(
        instances.iter().map(|i| (InstanceLabels::new(&i.function, &i.user), i.replicas.desired, i.replicas.ready)),
    );
    let text = gateway_metrics.encode().map_err(|error| ApiError::internal(&error))?;
    Ok(([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Invokes the user's instance of a function and streams its answer back as it is.
///
/// Who may call is the function's invoke policy: its owner (and admins), any account, or anyone.
/// A `traceparent` is continued (or a trace started) and passed on.
#[utoipa::path(method(get, post, put, delete, patch, head, options), path = "/fn/{user}/{function}/{path}",
    tag = "gateway", security((), ("session" = []), ("token" = [])),
    params(InvocationParams),
    request_body(content = Vec<u8>, description = "Any body, passed to the function", content_type = "*/*"),
    responses((status = 200, description = "The function's answer, whatever its status, headers and body", body = Vec<u8>, content_type = "*/*"),
        ApiErrors,
        (status = 413, description = "The body is over the function's limit", body = ApiError),
        (status = 502, description = "The function's replica failed to answer", body = ApiError),
        (status = 503, description = "The instance is not running (paused or failed)", body = ApiError),
        (status = 504, description = "The function did not answer within its timeout", body = ApiError)))]
pub(super) async fn invoke(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    forward_invocation(&state.platform, request).await
}

/// Reads the invocation `request` makes, forwards it and answers with the function's answer.
async fn forward_invocation(platform: &Platform, request: Request) -> Result<Response, ApiError> {
    let Invocation { user, function, caller, parts, body } =
        Invocation::read(platform, INVOCATION_PREFIX, request).await?;
    let client = client_address(&parts);
    let forwarded = Request::from_parts(parts, body);
    let response = platform.gateway.invoke(caller.as_ref(), &user, &function, forwarded, client).await?;
    Ok(response.map(Body::new).into_response())
}

/// The HTTP status a caller gets for a gateway refusal or failure.
fn status_of(error: &GatewayError) -> u16 {
    match error {
        GatewayError::Unauthenticated { .. } => 401,
        GatewayError::NoInstance { .. } => 404,
        GatewayError::TooLarge { .. } => 413,
        GatewayError::TooBusy { .. } => 429,
        GatewayError::NotRunning { .. } => 503,
        GatewayError::Timeout { .. } => 504,
        GatewayError::Upstream(_) | GatewayError::Connect(_) => 502,
        GatewayError::Runtime(_) | GatewayError::Store(_) => 500,
    }
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        match status_of(&error) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(user: &'a str, function: &'a str, rest: &'a str) -> Option<InvocationTarget<'a>> {
        Some(InvocationTarget { user, function, rest })
    }

    #[test]
    fn an_invocation_path_names_its_user_function_and_the_rest_as_sent() {
        for (path, expected) in [
            ("/fn/alice/echo", target("alice", "echo", "")),
            ("/fn/alice/echo/", target("alice", "echo", "/")),
            ("/fn/alice/echo/a%2Fb/c", target("alice", "echo", "/a%2Fb/c")),
            ("/fn/alice/echo//x", target("alice", "echo", "//x")),
            ("/fn/alice", None),
            ("/fn/alice/", None),
            ("/fn//echo", None),
            ("/fn/", None),
            ("/fnx/alice/echo", None),
            ("/api/v1/fn/alice/echo", None),
            ("/async/fn/alice/echo", None),
        ] {
            assert_eq!(invocation_target(path, INVOCATION_PREFIX), expected, "{path}");
        }
        assert_eq!(invocation_target("/async/fn/alice/echo/x", ASYNC_INVOCATION_PREFIX), target("alice", "echo", "/x"));
    }
}
