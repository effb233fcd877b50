//! The JSON REST API under `/api/v1` (listed in the README), plus `/healthz` and `/readyz`.

use super::caller::{self, AuthSession, Caller};
use super::openapi::{self, ApiErrors};
use super::{ApiError, AppState};
use crate::platform::Platform;
use crate::platform::instances::{Removal, VersionChoice};
use crate::platform::model::{
    AdminOverview, AsyncStatus, FunctionDetail, FunctionSpec, FunctionSummary, InstanceInfo, LogEntry, NewToken,
    QuotaReport, QuotaSettings, TokenInfo, TriggerInfo, TriggerSpec, UsageSample, UserInfo, VersionDetail,
};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

mod instances;
mod secrets;

use instances::*;
use secrets::*;

/// The REST routes, the health endpoints, and the OpenAPI document with its page.
///
/// Each `routes!` line registers the handlers of one path and their OpenAPI entries together.
pub fn router() -> Router<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_functions, register_function))
        .routes(routes!(get_function, update_function, unregister_function))
        .routes(routes!(get_version))
        .routes(routes!(rollback_function))
        .routes(routes!(deploy_function, undeploy_function))
        .routes(routes!(list_triggers, create_trigger))
        .routes(routes!(get_trigger, delete_trigger))
        .routes(routes!(get_async))
        .routes(routes!(list_instances))
        .routes(routes!(get_instance, delete_instance))
        .routes(routes!(pause_instance))
        .routes(routes!(resume_instance))
        .routes(routes!(scale_instance))
        .routes(routes!(instance_logs))
        .routes(routes!(instance_usage))
        .routes(routes!(admin_usage))
        .routes(routes!(get_quota, set_quota))
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
        .fallback(|| async { ApiError::new(404, "no such API endpoint; see /api/docs or the REST API in the README") });
    let (routes, spec) = OpenApiRouter::new().nest("/api/v1", v1).split_for_parts();
    routes
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(SwaggerUi::new(openapi::PAGE_PATH).url(openapi::DOCUMENT_PATH, openapi::document(spec)))
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
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    /// A DNS-1123 label of at most 20 characters (it appears in gateway paths).
    name: String,
    password: String,
}

/// Creates an account (when sign-up is open) and logs it in.
#[utoipa::path(post, path = "/signup", tag = "accounts", security(()), request_body = CredentialsBody,
    responses((status = 201, description = "Signed up and logged in; the session cookie is set", body = UserInfo), ApiErrors))]
async fn signup(
    State(platform): State<Platform>,
    mut session: AuthSession,
    ClientAddress(client): ClientAddress,
    JsonBody(body): JsonBody<CredentialsBody>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let user = caller::sign_up(&platform, &mut session, client, body.name, body.password).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Logs in; too many failed attempts for a name or from a client are refused for a while.
#[utoipa::path(post, path = "/login", tag = "accounts", security(()), request_body = CredentialsBody,
    responses((status = 200, description = "Logged in; the session cookie is set", body = UserInfo), ApiErrors))]
async fn login(
    State(platform): State<Platform>,
    mut session: AuthSession,
    ClientAddress(client): ClientAddress,
    JsonBody(body): JsonBody<CredentialsBody>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(caller::log_in(&platform, &mut session, client, body.name, body.password).await?))
}

/// Ends the session.
#[utoipa::path(post, path = "/logout", tag = "accounts",
    responses((status = 204, description = "Logged out"), ApiErrors))]
async fn logout(mut session: AuthSession) -> Result<StatusCode, ApiError> {
    caller::log_out(&mut session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is.
#[utoipa::path(get, path = "/me", tag = "accounts", responses((status = 200, body = UserInfo), ApiErrors))]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// What the token is for, e.g. `ci`.
    name: String,
}

/// Creates an API token; its secret is in this answer only.
#[utoipa::path(post, path = "/tokens", tag = "accounts", request_body = TokenBody,
    responses((status = 201, body = NewToken), ApiErrors))]
async fn create_token(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    Ok((StatusCode::CREATED, Json(platform.accounts.create_token(&caller, &body.name).await?)))
}

/// The caller's API tokens (names and dates, never the secrets).
#[utoipa::path(get, path = "/tokens", tag = "accounts", responses((status = 200, body = [TokenInfo]), ApiErrors))]
async fn list_tokens(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(platform.accounts.tokens(&caller).await?))
}

/// Revokes one of the caller's API tokens.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "accounts", params(("id" = i64, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), ApiErrors))]
async fn revoke_token(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    platform.accounts.revoke_token(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The functions the caller may see: their own, public ones, and every one for admins.
#[utoipa::path(get, path = "/functions", tag = "functions", responses((status = 200, body = [FunctionSummary]), ApiErrors))]
async fn list_functions(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<FunctionSummary>>, ApiError> {
    Ok(Json(platform.registry.list(&caller).await?))
}

/// Registers a function as version 1; `Location` names it.
#[utoipa::path(post, path = "/functions", tag = "functions", request_body = FunctionSpec,
    responses((status = 201, body = FunctionDetail), ApiErrors))]
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

/// A function with its current version and version list.
#[utoipa::path(get, path = "/functions/{name}", tag = "functions", params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, body = FunctionDetail), ApiErrors))]
async fn get_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<FunctionDetail>, ApiError> {
    Ok(Json(platform.registry.get(&caller, &name).await?))
}

/// Stores a new version and makes it current (the owner or an admin).
#[utoipa::path(put, path = "/functions/{name}", tag = "functions", params(("name" = String, Path, description = "The function's name")), request_body = FunctionSpec,
    responses((status = 200, body = FunctionDetail), ApiErrors))]
async fn update_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<FunctionSpec>,
) -> Result<Json<FunctionDetail>, ApiError> {
    Ok(Json(platform.registry.update(&caller, &name, spec).await?))
}

/// Removes a function and its versions; refused (409) while instances of it exist.
#[utoipa::path(delete, path = "/functions/{name}", tag = "functions", params(("name" = String, Path, description = "The function's name")),
    responses((status = 204, description = "Unregistered"), ApiErrors))]
async fn unregister_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    platform.registry.unregister(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One stored version of a function.
#[utoipa::path(get, path = "/functions/{name}/versions/{version}", tag = "functions",
    params(("name" = String, Path, description = "The function's name"), ("version" = u32, Path, description = "The version number")),
    responses((status = 200, body = VersionDetail), ApiErrors))]
async fn get_version(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path((name, version)): Path<(String, u32)>,
) -> Result<Json<VersionDetail>, ApiError> {
    Ok(Json(platform.registry.version(&caller, &name, version).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// The stored version to make current again.
    version: u32,
}

/// Makes an existing version current again.
#[utoipa::path(post, path = "/functions/{name}/rollback", tag = "functions", params(("name" = String, Path, description = "The function's name")), request_body = RollbackBody,
    responses((status = 200, body = FunctionDetail), ApiErrors))]
async fn rollback_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Json<FunctionDetail>, ApiError> {
    Ok(Json(platform.registry.rollback(&caller, &name, body.version).await?))
}

/// A user's quota and use: their own, or anyone's for an admin.
#[utoipa::path(get, path = "/users/{name}/quota", tag = "accounts", params(("name" = String, Path, description = "The user's name")),
    responses((status = 200, body = QuotaReport), ApiErrors))]
async fn get_quota(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<QuotaReport>, ApiError> {
    Ok(Json(platform.instances.quota_report(&caller, &name).await?))
}

/// Sets a user's quota (admins); fields left out or `null` take kubefn's defaults.
#[utoipa::path(put, path = "/users/{name}/quota", tag = "accounts", params(("name" = String, Path, description = "The user's name")), request_body = QuotaSettings,
    responses((status = 200, body = QuotaReport), ApiErrors))]
async fn set_quota(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(settings): JsonBody<QuotaSettings>,
) -> Result<Json<QuotaReport>, ApiError> {
    platform.quotas.set(&caller, &name, &settings).await?;
    get_quota(State(platform), Caller(caller), Path(name)).await
}

/// Liveness: kubefn's process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: kubefn's database answers, and kubefn has read its instances (so its gateway
/// answers for them).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer, or kubefn is still reading its instances", body = String, content_type = "text/plain")))]
pub(super) async fn readyz(State(platform): State<Platform>) -> Response {
    if !platform.instances.routes_known() {
        return (StatusCode::SERVICE_UNAVAILABLE, "kubefn is still reading its instances").into_response();
    }
    match platform.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer").into_response()
        }
    }
}
