//! The JSON REST API under `/api/v1` (listed in the README), plus `/healthz` and `/readyz`.

use super::caller::{self, AuthSession, Caller};
use super::{ApiError, AppState};
use crate::platform::Platform;
use crate::platform::instances::{Removal, VersionChoice};
use crate::platform::model::{
    AdminOverview, AsyncStatus, FunctionDetail, FunctionSpec, FunctionSummary, InstanceInfo, NewToken, QuotaReport,
    QuotaSettings, TokenInfo, TriggerInfo, TriggerSpec, UsageSample, UserInfo, VersionDetail,
};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The REST routes and the health endpoints.
pub fn router() -> Router<AppState> {
    let v1 = Router::new()
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/functions", get(list_functions).post(register_function))
        .route("/functions/{name}", get(get_function).put(update_function).delete(unregister_function))
        .route("/functions/{name}/versions/{version}", get(get_version))
        .route("/functions/{name}/rollback", post(rollback_function))
        .route("/functions/{name}/deploy", post(deploy_function).delete(undeploy_function))
        .route("/functions/{name}/triggers", get(list_triggers).post(create_trigger))
        .route("/triggers/{id}", get(get_trigger).delete(delete_trigger))
        .route("/async/{id}", get(get_async))
        .route("/instances", get(list_instances))
        .route("/instances/{id}", get(get_instance).delete(delete_instance))
        .route("/instances/{id}/pause", post(pause_instance))
        .route("/instances/{id}/resume", post(resume_instance))
        .route("/instances/{id}/scale", post(scale_instance))
        .route("/instances/{id}/logs", get(instance_logs))
        .route("/instances/{id}/usage", get(instance_usage))
        .route("/admin/usage", get(admin_usage))
        .route("/users/{name}/quota", get(get_quota).put(set_quota))
        .fallback(|| async { ApiError::new(404, "no such API endpoint; see the REST API in the README") });
    Router::new().nest("/api/v1", v1).route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz))
}

/// A JSON body whose decoding errors name the field (`resources.cpu`) and say what was expected.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(415, "send the body as JSON with \"Content-Type: application/json\""));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status().as_u16(), rejection.body_text()))?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")))
}

/// Decodes JSON, turning serde's errors into a 400 (not JSON) or a 422 naming the field.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if !inner.is_data() {
            return ApiError::new(400, format!("the body is not valid JSON: {inner}"));
        }
        let message = inner.to_string();
        // serde names unknown and missing fields in backticks but leaves them out of the path.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix).and_then(|rest| rest.split('`').next()));
        // The path already ends in an unknown field's name, but stops at the parent of a missing one.
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name.to_string(),
            (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_string(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (".", None) => String::new(),
            (path, None) => path.to_string(),
        };
        let field_label = if field.is_empty() { "the body".to_string() } else { field.clone() };
        ApiError::invalid(field, format!("{field_label}: {message}"))
    })?;
    deserializer.end().map_err(|e| ApiError::new(400, format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Path parameters whose parse errors are JSON API errors (e.g. a version that is not a number).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::new(400, format!("the URL path is malformed: {}", rejection.body_text())))
    }
}

/// Name and password, for sign-up and log-in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    name: String,
    password: String,
}

async fn signup(
    State(platform): State<Platform>,
    mut session: AuthSession,
    ClientAddress(client): ClientAddress,
    JsonBody(body): JsonBody<CredentialsBody>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = caller::sign_up(&platform, &mut session, client, body.name, body.password).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn login(
    State(platform): State<Platform>,
    mut session: AuthSession,
    ClientAddress(client): ClientAddress,
    JsonBody(body): JsonBody<CredentialsBody>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(caller::log_in(&platform, &mut session, client, body.name, body.password).await?))
}

async fn logout(mut session: AuthSession) -> Result<StatusCode, ApiError> {
    caller::log_out(&mut session).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(Caller(caller): Caller) -> Json<UserInfo> {
    Json(caller.info())
}

/// The client's IP address, when the server records connection info.
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(caller::client_address(parts)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
}

async fn create_token(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    Ok((StatusCode::CREATED, Json(platform.accounts.create_token(&caller, &body.name).await?)))
}

async fn list_tokens(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(platform.accounts.tokens(&caller).await?))
}

async fn revoke_token(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    platform.accounts.revoke_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_functions(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<FunctionSummary>>, ApiError> {
    Ok(Json(platform.registry.list(&caller).await?))
}

async fn register_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    JsonBody(spec): JsonBody<FunctionSpec>,
) -> Result<Response, ApiError> {
    let detail = platform.registry.register(&caller, spec).await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("/api/v1/functions/{}", detail.name).parse() {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(detail)).into_response())
}

async fn get_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<FunctionDetail>, ApiError> {
    Ok(Json(platform.registry.get(&caller, &name).await?))
}

async fn update_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<FunctionSpec>,
) -> Result<Json<FunctionDetail>, ApiError> {
    Ok(Json(platform.registry.update(&caller, &name, spec).await?))
}

async fn unregister_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    platform.registry.unregister(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_version(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path((name, version)): Path<(String, u32)>,
) -> Result<Json<VersionDetail>, ApiError> {
    Ok(Json(platform.registry.version(&caller, &name, version).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u32,
}

async fn rollback_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Json<FunctionDetail>, ApiError> {
    Ok(Json(platform.registry.rollback(&caller, &name, body.version).await?))
}

/// A user's quota and use: their own, or anyone's for an admin.
async fn get_quota(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<QuotaReport>, ApiError> {
    Ok(Json(platform.instances.quota_report(&caller, &name).await?))
}

/// Sets a user's quota (admins); fields left out or `null` take kubefn's defaults.
async fn set_quota(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(settings): JsonBody<QuotaSettings>,
) -> Result<Json<QuotaReport>, ApiError> {
    platform.quotas.set(&caller, &name, &settings).await?;
    get_quota(State(platform), Caller(caller), Path(name)).await
}

/// The optional body of `POST /functions/{name}/deploy`: which version an instance of someone
/// else's function runs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    /// Follow the owner's updates (`true`), or stay on the version the instance runs (`false`).
    follow_updates: Option<bool>,
    /// Stay on this version.
    version: Option<u32>,
}

impl DeployBody {
    fn choice(&self) -> Result<Option<VersionChoice>, ApiError> {
        match (self.follow_updates, self.version) {
            (Some(true), Some(_)) => {
                Err(ApiError::invalid("version", "give either follow_updates: true or a version to stay on, not both"))
            }
            (Some(true), None) => Ok(Some(VersionChoice::FollowUpdates)),
            (_, Some(version)) => Ok(Some(VersionChoice::Pin(Some(version)))),
            (Some(false), None) => Ok(Some(VersionChoice::Pin(None))),
            (None, None) => Ok(None),
        }
    }
}

async fn deploy_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // The body is optional: `curl -X POST …/deploy` deploys with the defaults.
    let is_json = is_json(request.headers());
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| ApiError::new(rejection.status().as_u16(), rejection.body_text()))?;
    let body: DeployBody = match (body.iter().all(u8::is_ascii_whitespace), is_json) {
        (true, _) => DeployBody::default(),
        (false, true) => decode_json(&body)?,
        (false, false) => {
            return Err(ApiError::new(
                415,
                "send deploy options as JSON with \"Content-Type: application/json\", or no body",
            ));
        }
    };
    let (instance, created) = platform.instances.deploy(&caller, &name, body.choice()?).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("/api/v1/instances/{}", instance.id).parse() {
        headers.insert(header::LOCATION, location);
    }
    Ok((status, headers, Json(instance)).into_response())
}

async fn list_triggers(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<TriggerInfo>>, ApiError> {
    Ok(Json(platform.triggers.list(&caller, &name, chrono::Utc::now()).await?))
}

async fn create_trigger(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<TriggerSpec>,
) -> Result<Response, ApiError> {
    let trigger = platform.triggers.create(&caller, &name, spec, chrono::Utc::now()).await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = format!("/api/v1/triggers/{}", trigger.id).parse() {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(trigger)).into_response())
}

async fn get_trigger(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<TriggerInfo>, ApiError> {
    Ok(Json(platform.triggers.get(&caller, id, chrono::Utc::now()).await?))
}

async fn delete_trigger(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    platform.triggers.delete(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An async invocation's state and result; anonymous callers may look at anonymous calls.
async fn get_async(
    State(platform): State<Platform>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<AsyncStatus>, ApiError> {
    let (mut parts, _) = request.into_parts();
    let caller = caller::principal_from_parts(&mut parts, &platform).await?;
    Ok(Json(platform.asyncs.status(caller.as_ref(), &id).await?))
}

async fn undeploy_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(removal_response(platform.instances.undeploy(&caller, &name).await?))
}

/// 204 when the instance is gone; 202 with the instance (state `Deleting`) while its replicas
/// are still stopping: `GET /instances/{id}` shows the progress and answers 404 once it is gone.
fn removal_response(removal: Removal) -> Response {
    match removal {
        Removal::Done => StatusCode::NO_CONTENT.into_response(),
        Removal::Underway(instance) => (StatusCode::ACCEPTED, Json(*instance)).into_response(),
    }
}

async fn list_instances(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<InstanceInfo>>, ApiError> {
    Ok(Json(platform.instances.list(&caller).await?))
}

async fn get_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.get(&caller, &id).await?))
}

async fn delete_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(removal_response(platform.instances.delete(&caller, &id).await?))
}

async fn pause_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.pause(&caller, &id).await?))
}

async fn resume_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.resume(&caller, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    replicas: u32,
}

async fn scale_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ScaleBody>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.scale(&caller, &id, body.replicas).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The instance's logs as server-sent events, one JSON [`LogEntry`](crate::platform::model::LogEntry)
/// per event, from `since` (RFC 3339) on when given; with `follow=true` the stream stays open
/// for new lines.
async fn instance_logs(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(query) = query.map_err(|rejection| {
        let text = rejection.body_text();
        let field = if text.contains("since") { "since" } else { "follow" };
        ApiError::invalid(
            field,
            format!("follow must be true or false and since a time such as 2026-11-22T08:00:00Z: {text}"),
        )
    })?;
    let lines = platform.instances.logs(&caller, &id, query.follow, query.since).await?;
    let events = futures::StreamExt::map(lines, |line| {
        Ok::<_, std::convert::Infallible>(
            axum::response::sse::Event::default()
                .json_data(&line)
                .unwrap_or_else(|_| axum::response::sse::Event::default().data(line.text)),
        )
    });
    Ok(axum::response::sse::Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The start of a usage query's window: `since`, or an hour ago.
fn usage_since(
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|rejection| {
        ApiError::invalid(
            "since",
            format!("since must be a time such as 2026-11-22T08:00:00Z: {}", rejection.body_text()),
        )
    })?;
    Ok(query.since.unwrap_or_else(|| chrono::Utc::now() - chrono::Duration::hours(1)))
}

/// The instance's usage samples since `since` (RFC 3339; default: the last hour).
async fn instance_usage(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<UsageSample>>, ApiError> {
    let since = usage_since(query)?;
    Ok(Json(platform.instances.usage(&caller, &id, since).await?))
}

/// Everyone's instances and usage since `since` (default: the last hour); admins only.
async fn admin_usage(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AdminOverview>, ApiError> {
    let since = usage_since(query)?;
    Ok(Json(platform.instances.overview(&caller, since).await?))
}

async fn readyz(State(platform): State<Platform>) -> Response {
    match platform.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer").into_response()
        }
    }
}
