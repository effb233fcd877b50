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

mod instances;

use instances::*;

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

async fn readyz(State(platform): State<Platform>) -> Response {
    match platform.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer").into_response()
        }
    }
}
