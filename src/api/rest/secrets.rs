//! The REST API's secret routes: the caller's own secrets by name; values go in, never out.

use super::*;
use crate::platform::model::SecretInfo;

/// The body of `PUT /secrets/{name}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretBody {
    /// The value, as text (at most 64 KiB). It is sealed at rest and never shown back.
    value: String,
}

/// The caller's secrets: names and dates, never values.
#[utoipa::path(get, path = "/secrets", tag = "secrets", responses((status = 200, body = [SecretInfo]), ApiErrors))]
pub(super) async fn list_secrets(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<SecretInfo>>, ApiError> {
    Ok(Json(platform.secrets.list(caller.id).await?))
}

/// Creates (201) or replaces (200) one of the caller's secrets.
#[utoipa::path(put, path = "/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name: lowercase letters, digits and '-'")),
    request_body = SecretBody,
    responses((status = 201, description = "Created", body = SecretInfo),
        (status = 200, description = "Replaced", body = SecretInfo), ApiErrors))]
pub(super) async fn put_secret(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SecretBody>,
) -> Result<Response, ApiError> {
    let created = platform.secrets.put(caller.id, &name, body.value.as_bytes()).await?;
    let info = platform.secrets.list(caller.id).await?.into_iter().find(|secret| secret.name == name);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(info)).into_response())
}

/// Deletes one of the caller's secrets.
#[utoipa::path(delete, path = "/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses((status = 204, description = "Deleted"), ApiErrors))]
pub(super) async fn delete_secret(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    platform.secrets.delete(caller.id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
