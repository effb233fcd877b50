//! The REST API's instance routes: deploy and undeploy, instances and their changes, logs, usage
//! (the caller's and the admin view), cron triggers and async calls.

use super::*;

/// The optional body of `POST /functions/{name}/deploy`: which version an instance of someone
/// else's function runs.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployBody {
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

/// Deploys the caller's instance of a function (201), or answers the one they have (200);
/// `Location` names it. The body is optional.
#[utoipa::path(post, path = "/functions/{name}/deploy", tag = "instances", params(("name" = String, Path, description = "The function's name")),
    request_body(content = Option<DeployBody>, description = "Optional: which version an instance of someone else's function runs"),
    responses((status = 201, description = "Deployed", body = InstanceInfo),
        (status = 200, description = "The caller's instance already existed", body = InstanceInfo), ApiErrors))]
pub(super) async fn deploy_function(
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

/// A function's cron triggers, with their next fire and recent runs.
#[utoipa::path(get, path = "/functions/{name}/triggers", tag = "triggers", params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, body = [TriggerInfo]), ApiErrors))]
pub(super) async fn list_triggers(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<TriggerInfo>>, ApiError> {
    Ok(Json(platform.triggers.list(&caller, &name, chrono::Utc::now()).await?))
}

/// Adds a cron trigger that invokes the caller's instance of a function; `Location` names it.
#[utoipa::path(post, path = "/functions/{name}/triggers", tag = "triggers", params(("name" = String, Path, description = "The function's name")), request_body = TriggerSpec,
    responses((status = 201, body = TriggerInfo), ApiErrors))]
pub(super) async fn create_trigger(
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

/// One cron trigger.
#[utoipa::path(get, path = "/triggers/{id}", tag = "triggers", params(("id" = i64, Path, description = "The trigger's id")),
    responses((status = 200, body = TriggerInfo), ApiErrors))]
pub(super) async fn get_trigger(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<TriggerInfo>, ApiError> {
    Ok(Json(platform.triggers.get(&caller, id, chrono::Utc::now()).await?))
}

/// Removes a cron trigger.
#[utoipa::path(delete, path = "/triggers/{id}", tag = "triggers", params(("id" = i64, Path, description = "The trigger's id")),
    responses((status = 204, description = "Removed"), ApiErrors))]
pub(super) async fn delete_trigger(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    platform.triggers.delete(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An async invocation's state and result; anonymous callers may look at anonymous calls.
#[utoipa::path(get, path = "/async/{id}", tag = "triggers", security(()), params(("id" = String, Path, description = "The invocation's id")),
    responses((status = 200, body = AsyncStatus), ApiErrors))]
pub(super) async fn get_async(
    State(platform): State<Platform>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<AsyncStatus>, ApiError> {
    let (mut parts, _) = request.into_parts();
    let caller = caller::principal_from_parts(&mut parts, &platform).await?;
    Ok(Json(platform.asyncs.status(caller.as_ref(), &id).await?))
}

/// Deletes the caller's instance of a function.
#[utoipa::path(delete, path = "/functions/{name}/deploy", tag = "instances", params(("name" = String, Path, description = "The function's name")),
    responses((status = 204, description = "Gone"),
        (status = 202, description = "Replicas still stopping: the instance, in state `Deleting`", body = InstanceInfo), ApiErrors))]
pub(super) async fn undeploy_function(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(removal_response(platform.instances.undeploy(&caller, &name).await?))
}

/// 204 when the instance is gone; 202 with the instance (state `Deleting`) while its replicas
/// are still stopping: `GET /instances/{id}` shows the progress and answers 404 once it is gone.
pub(super) fn removal_response(removal: Removal) -> Response {
    match removal {
        Removal::Done => StatusCode::NO_CONTENT.into_response(),
        Removal::Underway(instance) => (StatusCode::ACCEPTED, Json(*instance)).into_response(),
    }
}

/// The caller's instances (every instance for admins).
#[utoipa::path(get, path = "/instances", tag = "instances", responses((status = 200, body = [InstanceInfo]), ApiErrors))]
pub(super) async fn list_instances(
    State(platform): State<Platform>,
    Caller(caller): Caller,
) -> Result<Json<Vec<InstanceInfo>>, ApiError> {
    Ok(Json(platform.instances.list(&caller).await?))
}

/// An instance: state, replicas, addresses, events.
#[utoipa::path(get, path = "/instances/{id}", tag = "instances", params(("id" = String, Path, description = "The instance's id")),
    responses((status = 200, body = InstanceInfo), ApiErrors))]
pub(super) async fn get_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.get(&caller, &id).await?))
}

/// Deletes an instance.
#[utoipa::path(delete, path = "/instances/{id}", tag = "instances", params(("id" = String, Path, description = "The instance's id")),
    responses((status = 204, description = "Gone"),
        (status = 202, description = "Replicas still stopping: the instance, in state `Deleting`", body = InstanceInfo), ApiErrors))]
pub(super) async fn delete_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(removal_response(platform.instances.delete(&caller, &id).await?))
}

/// Pauses an instance: no replicas, configuration kept.
#[utoipa::path(post, path = "/instances/{id}/pause", tag = "instances", params(("id" = String, Path, description = "The instance's id")),
    responses((status = 200, body = InstanceInfo), ApiErrors))]
pub(super) async fn pause_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.pause(&caller, &id).await?))
}

/// Resumes a paused instance.
#[utoipa::path(post, path = "/instances/{id}/resume", tag = "instances", params(("id" = String, Path, description = "The instance's id")),
    responses((status = 200, body = InstanceInfo), ApiErrors))]
pub(super) async fn resume_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.resume(&caller, &id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScaleBody {
    /// Replicas to run, within the function's scaling bounds and the user's quota.
    replicas: u32,
}

/// Sets an instance's replica count.
#[utoipa::path(post, path = "/instances/{id}/scale", tag = "instances", params(("id" = String, Path, description = "The instance's id")), request_body = ScaleBody,
    responses((status = 200, body = InstanceInfo), ApiErrors))]
pub(super) async fn scale_instance(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ScaleBody>,
) -> Result<Json<InstanceInfo>, ApiError> {
    Ok(Json(platform.instances.scale(&caller, &id, body.replicas).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    /// Keep the stream open for new lines.
    #[serde(default)]
    follow: bool,
    /// Only lines from this time on (RFC 3339).
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The instance's logs as server-sent events, one JSON [`LogEntry`](crate::platform::model::LogEntry)
/// per event, from `since` (RFC 3339) on when given; with `follow=true` the stream stays open
/// for new lines.
#[utoipa::path(get, path = "/instances/{id}/logs", tag = "instances", params(("id" = String, Path, description = "The instance's id"), LogsQuery),
    responses((status = 200, description = "Server-sent events, one JSON log entry each", body = LogEntry, content_type = "text/event-stream"), ApiErrors))]
pub(super) async fn instance_logs(
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// The window's start (RFC 3339); default: an hour ago.
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The start of a usage query's window: `since`, or an hour ago.
pub(super) fn usage_since(
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
#[utoipa::path(get, path = "/instances/{id}/usage", tag = "instances", params(("id" = String, Path, description = "The instance's id"), UsageQuery),
    responses((status = 200, body = [UsageSample]), ApiErrors))]
pub(super) async fn instance_usage(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<UsageSample>>, ApiError> {
    let since = usage_since(query)?;
    Ok(Json(platform.instances.usage(&caller, &id, since).await?))
}

/// Everyone's instances and usage since `since` (default: the last hour); admins only.
#[utoipa::path(get, path = "/admin/usage", tag = "instances", params(UsageQuery),
    responses((status = 200, body = AdminOverview), ApiErrors))]
pub(super) async fn admin_usage(
    State(platform): State<Platform>,
    Caller(caller): Caller,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AdminOverview>, ApiError> {
    let since = usage_since(query)?;
    Ok(Json(platform.instances.overview(&caller, since).await?))
}
