//! Server functions for the pages. Each one resolves the caller, calls the platform and maps
//! errors exactly like the REST API, so the two front ends cannot drift apart.

use super::ApiError;
pub use super::forms::FunctionForm;
use crate::platform::model::{
    AdminOverview, FunctionDetail, FunctionListPage, InstanceInfo, InvokeResult, NewToken, QuotaReport, SecretInfo,
    TokenInfo, TriggerInfo, UsageReport, UserInfo,
};
use leptos::prelude::*;

#[cfg(feature = "ssr")]
mod ssr {
    use super::ApiError;
    use crate::api::AppState;
    use crate::api::caller::{AuthSession, principal_from_parts, session_from_parts};
    use crate::platform::Platform;
    use crate::platform::auth::Principal;
    use http::request::Parts;
    use leptos::prelude::*;

    /// The platform and the request parts, from the context leptos_axum provides.
    pub fn request() -> Result<(Platform, Parts), ApiError> {
        let state = use_context::<AppState>()
            .ok_or_else(|| ApiError::new(500, "server functions are not wired to the platform"))?;
        let parts =
            use_context::<Parts>().ok_or_else(|| ApiError::new(500, "server functions are missing the request"))?;
        Ok((state.platform.clone(), parts))
    }

    /// The signed-in caller, or 401.
    pub async fn caller() -> Result<(Platform, Principal), ApiError> {
        let (platform, mut parts) = request()?;
        let principal = principal_from_parts(&mut parts, &platform).await?.ok_or_else(ApiError::unauthenticated)?;
        Ok((platform, principal))
    }

    /// The platform, the client address and the session, for log-in and sign-up.
    pub async fn session() -> Result<(Platform, Option<std::net::IpAddr>, AuthSession), ApiError> {
        let (platform, mut parts) = request()?;
        let client = crate::api::caller::client_address(&parts);
        let session = session_from_parts(&mut parts).await?;
        Ok((platform, client, session))
    }

    /// Runs `work` for the signed-in caller (401 without one): what every server function that
    /// needs a caller does. (The answer's status comes from the error, in
    /// [`crate::api::error::server_function_error_status`].)
    pub async fn authed<T, F, Fut>(work: F) -> Result<T, ApiError>
    where
        F: FnOnce(Platform, Principal) -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let (platform, caller) = caller().await?;
        work(platform, caller).await
    }

    /// The start of a chart window of `window_s` seconds ending now, if it is one offered.
    pub fn window_start(window_s: u32) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
        if !super::CHART_WINDOWS_S.contains(&window_s) {
            let offered: Vec<String> = super::CHART_WINDOWS_S.iter().map(u32::to_string).collect();
            return Err(ApiError::invalid(
                "window_s",
                format!("the window must be one of {} seconds", offered.join(", ")),
            ));
        }
        Ok(chrono::Utc::now() - chrono::Duration::seconds(i64::from(window_s)))
    }
}

/// The signed-in user, or `None`.
#[server]
pub async fn current_user() -> Result<Option<UserInfo>, ApiError> {
    let (platform, mut parts) = ssr::request()?;
    let principal = crate::api::caller::principal_from_parts(&mut parts, &platform).await;
    principal.map(|p| p.map(|p| p.info()))
}

/// Signs in and starts a session.
#[server]
pub async fn log_in(name: String, password: String) -> Result<UserInfo, ApiError> {
    let (platform, client, mut session) = ssr::session().await?;
    crate::api::caller::log_in(&platform, &mut session, client, name, password).await
}

/// Creates an account and starts its session.
#[server]
pub async fn sign_up(name: String, password: String) -> Result<UserInfo, ApiError> {
    let (platform, client, mut session) = ssr::session().await?;
    crate::api::caller::sign_up(&platform, &mut session, client, name, password).await
}

/// Ends the session.
#[server]
pub async fn log_out() -> Result<(), ApiError> {
    let (_, _, mut session) = ssr::session().await?;
    crate::api::caller::log_out(&mut session).await
}

/// A page of the catalog: my functions and the public ones (admins: all) whose names contain
/// `filter`.
#[server]
pub async fn list_functions(page: u32, filter: String) -> Result<FunctionListPage, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.registry.list_page(&caller, &filter, page).await?) })
        .await
}

/// One function with its versions.
#[server]
pub async fn get_function(name: String) -> Result<FunctionDetail, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.registry.get(&caller, &name).await?) }).await
}

/// Registers a function (`existing` empty) or records a new version of `existing`.
#[server]
pub async fn save_function(existing: String, form: FunctionForm) -> Result<FunctionDetail, ApiError> {
    ssr::authed(move |platform, caller| async move {
        let spec = form.into_spec().map_err(ApiError::invalid_fields)?;
        Ok(if existing.is_empty() {
            platform.registry.register(&caller, spec).await?
        } else {
            platform.registry.update(&caller, &existing, spec).await?
        })
    })
    .await
}

/// Makes an existing version current.
#[server]
pub async fn rollback_function(name: String, version: u32) -> Result<FunctionDetail, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.registry.rollback(&caller, &name, version).await?) })
        .await
}

/// Removes a function that has no instances.
#[server]
pub async fn unregister_function(name: String) -> Result<(), ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.registry.unregister(&caller, &name).await?) }).await
}

/// Deploys the caller's instance of a function (again: un-pauses it, retries a failed version).
/// For someone else's function, `follow_updates` chooses between the owner's updates (`true`)
/// and the version the instance runs (`false`); absent, a new instance stays on the current
/// version and an existing one keeps its choice.
#[server]
pub async fn deploy_function(
    name: String,
    #[server(default)] follow_updates: Option<bool>,
) -> Result<InstanceInfo, ApiError> {
    ssr::authed(move |platform, caller| async move {
        use crate::platform::instances::VersionChoice;
        let choice =
            follow_updates.map(|follow| if follow { VersionChoice::FollowUpdates } else { VersionChoice::Pin(None) });
        Ok(platform.instances.deploy(&caller, &name, choice).await?.0)
    })
    .await
}

/// The caller's own instances (also for admins: the catalog shows what *I* run) of the
/// functions on a catalog page, as the catalog lists them: without their events, replica
/// details and limits, which only the function page shows. The page carries the list for
/// hydration and polls it, so it holds the page's instances only, and only what the rows show.
/// At a fixed address (`/api/my_instances`, form fields `functions[0]`, `functions[1]`, …): a
/// page with no functions sends no field at all.
#[server(endpoint = "my_instances")]
pub async fn my_instances(#[server(default)] functions: Vec<String>) -> Result<Vec<InstanceInfo>, ApiError> {
    ssr::authed(move |platform, caller| async move {
        use crate::platform::registry::FUNCTIONS_PER_PAGE;
        if functions.len() > FUNCTIONS_PER_PAGE as usize {
            let error =
                format!("ask for at most {FUNCTIONS_PER_PAGE} functions at a time, as many as a catalog page lists");
            return Err(ApiError::invalid("functions", error));
        }
        let mut instances = platform.instances.list_own(&caller, &functions).await?;
        for instance in &mut instances {
            instance.events = Vec::new();
            instance.replica_details = Vec::new();
            instance.limits = String::new();
        }
        Ok(instances)
    })
    .await
}

/// The caller's instance of one function, if deployed.
#[server]
pub async fn my_instance(function: String) -> Result<Option<InstanceInfo>, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.instances.mine(&caller, &function).await?) }).await
}

/// Pauses an instance: its replicas stop, its configuration and node port stay.
#[server]
pub async fn pause_instance(id: String) -> Result<InstanceInfo, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.instances.pause(&caller, &id).await?) }).await
}

/// Starts a paused instance's replicas again.
#[server]
pub async fn resume_instance(id: String) -> Result<InstanceInfo, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.instances.resume(&caller, &id).await?) }).await
}

/// Sets an instance's replicas; `replicas` is the form's text, so a non-number is named.
#[server]
pub async fn scale_instance(id: String, replicas: String) -> Result<InstanceInfo, ApiError> {
    ssr::authed(move |platform, caller| async move {
        let replicas = replicas.trim().parse::<u32>().map_err(|_| {
            ApiError::invalid("replicas", format!("replicas must be a whole number, not {:?}", replicas.trim()))
        })?;
        Ok(platform.instances.scale(&caller, &id, replicas).await?)
    })
    .await
}

/// Deletes an instance: replicas stopped, ports freed.
#[server]
pub async fn delete_instance(id: String) -> Result<(), ApiError> {
    ssr::authed(move |platform, caller| async move {
        // Replicas still stopping show as `Deleting` until they are gone.
        platform.instances.delete(&caller, &id).await?;
        Ok(())
    })
    .await
}

/// Invokes the caller's instance of `function` through the gateway, as a client would.
#[server]
pub async fn invoke_function(
    function: String,
    method: String,
    path: String,
    #[server(default)] headers: String,
    body: String,
) -> Result<InvokeResult, ApiError> {
    ssr::authed(move |platform, caller| async move {
        let method = http::Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| ApiError::invalid("method", format!("{method:?} is not an HTTP method")))?;
        let uri = crate::platform::gateway::upstream_uri_of(path.trim())
            .map_err(|error| ApiError::invalid("path", format!("the path cannot be sent: {error}")))?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::from(body))
            .map_err(|error| ApiError::invalid("path", format!("the request cannot be built: {error}")))?;
        let sent = request.headers_mut();
        for (name, value) in parse_headers(&headers)? {
            sent.append(name, value);
        }
        if !sent.contains_key(http::header::CONTENT_TYPE) {
            sent.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        }
        let started = std::time::Instant::now();
        let user = caller.name.clone();
        let response = platform.gateway.invoke(Some(&caller), &user, &function, request, None).await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let answer = response
            .into_body()
            .read_start(64 * 1024)
            .await
            .map_err(|error| ApiError::new(502, format!("the function's answer broke off: {error}")))?;
        Ok(InvokeResult {
            status,
            headers,
            body: answer.text(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    })
    .await
}

/// The windows the charts offer, in seconds; anything else is refused.
pub const CHART_WINDOWS_S: [u32; 5] = [300, 900, 3600, 6 * 3600, 24 * 3600];

/// The instance's usage and scaling events over the last `window_s` seconds (one of
/// [`CHART_WINDOWS_S`]).
#[server]
pub async fn instance_usage(id: String, window_s: u32) -> Result<UsageReport, ApiError> {
    // The window is checked before the caller, as it always was.
    let since = ssr::window_start(window_s)?;
    ssr::authed(move |platform, caller| async move { Ok(platform.instances.usage_report(&caller, &id, since).await?) })
        .await
}

/// Everyone's instances and usage over the last `window_s` seconds; admins only.
#[server]
pub async fn admin_dashboard(window_s: u32) -> Result<AdminOverview, ApiError> {
    // The window is checked before the caller, as it always was.
    let since = ssr::window_start(window_s)?;
    ssr::authed(move |platform, caller| async move { Ok(platform.instances.overview(&caller, since).await?) }).await
}

/// The invoke panel's headers, one `Name: value` per line (blank lines ignored).
#[cfg(feature = "ssr")]
fn parse_headers(text: &str) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ApiError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let invalid = |why: &str| {
                ApiError::invalid(
                    "headers",
                    format!("line {} ({line:?}) {why}; write one \"Name: value\" per line", number + 1),
                )
            };
            let (name, value) = line.split_once(':').ok_or_else(|| invalid("has no colon"))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| invalid("is not a valid header name"))?;
            let value =
                http::HeaderValue::from_str(value.trim()).map_err(|_| invalid("has a value that cannot be sent"))?;
            Ok((name, value))
        })
        .collect()
}

/// The caller's cron triggers on `function` (an admin's: everyone's).
#[server]
pub async fn list_triggers(function: String) -> Result<Vec<TriggerInfo>, ApiError> {
    ssr::authed(move |platform, caller| async move {
        Ok(platform.triggers.list(&caller, &function, chrono::Utc::now()).await?)
    })
    .await
}

/// Adds a cron trigger on the caller's instance of `function`.
#[server]
pub async fn create_trigger(
    function: String,
    schedule: String,
    method: String,
    path: String,
    #[server(default)] body: String,
) -> Result<TriggerInfo, ApiError> {
    ssr::authed(move |platform, caller| async move {
        let spec = crate::platform::model::TriggerSpec { schedule, method, path, body };
        Ok(platform.triggers.create(&caller, &function, spec, chrono::Utc::now()).await?)
    })
    .await
}

/// Deletes one of the caller's triggers.
#[server]
pub async fn delete_trigger(id: i64) -> Result<(), ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.triggers.delete(&caller, id).await?) }).await
}

/// The caller's quota and what they use of it.
#[server]
pub async fn my_quota() -> Result<QuotaReport, ApiError> {
    ssr::authed(
        move |platform, caller| async move { Ok(platform.instances.quota_report(&caller, &caller.name).await?) },
    )
    .await
}

/// Sets user `name`'s quota (admins). Each field empty for kubefn's default; `cpu` and `memory`
/// as Kubernetes quantities (`8`, `500m`; `16Gi`).
#[server]
pub async fn set_user_quota(
    name: String,
    functions: String,
    versions: String,
    instances: String,
    replicas: String,
    cpu: String,
    memory: String,
) -> Result<QuotaReport, ApiError> {
    ssr::authed(move |platform, caller| async move {
        use crate::platform::model::QuotaSettings;
        use crate::platform::validation::{parse_cpu_millis, parse_memory_bytes};
        let count = |field: &str, text: &str| -> Result<Option<u32>, ApiError> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse().map(Some).map_err(|_| {
                ApiError::invalid(field, format!("{field} must be a whole number, or empty for the default"))
            })
        };
        let quantity =
            |field: &str, text: &str, parse: fn(&str) -> Option<u64>, example: &str| -> Result<Option<u64>, ApiError> {
                let text = text.trim();
                if text.is_empty() {
                    return Ok(None);
                }
                parse(text).map(Some).ok_or_else(|| {
                    ApiError::invalid(
                        field,
                        format!("{field} must be a quantity such as {example}, or empty for the default"),
                    )
                })
            };
        let settings = QuotaSettings {
            functions: count("functions", &functions)?,
            versions: count("versions", &versions)?,
            instances: count("instances", &instances)?,
            replicas: count("replicas", &replicas)?,
            cpu_millicores: quantity("cpu", &cpu, parse_cpu_millis, "8 or 500m")?,
            memory_bytes: quantity("memory", &memory, parse_memory_bytes, "16Gi")?,
        };
        let name = name.trim();
        platform.quotas.set(&caller, name, &settings).await?;
        Ok(platform.instances.quota_report(&caller, name).await?)
    })
    .await
}

/// The caller's API tokens.
#[server]
pub async fn list_tokens() -> Result<Vec<TokenInfo>, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.accounts.tokens(&caller).await?) }).await
}

/// Creates an API token; the secret is in the answer only.
#[server]
pub async fn create_token(name: String) -> Result<NewToken, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.accounts.create_token(&caller, &name).await?) }).await
}

/// Revokes one of the caller's API tokens.
#[server]
pub async fn revoke_token(id: i64) -> Result<(), ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.accounts.revoke_token(&caller, id).await?) }).await
}

/// The caller's secrets: names and dates, never values.
#[server]
pub async fn list_secrets() -> Result<Vec<SecretInfo>, ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.secrets.list(caller.id).await?) }).await
}

/// Creates or replaces one of the caller's secrets; the value is never sent back.
#[server]
pub async fn put_secret(name: String, value: String) -> Result<(), ApiError> {
    ssr::authed(move |platform, caller| async move {
        platform.secrets.put(caller.id, name.trim(), value.as_bytes()).await?;
        Ok(())
    })
    .await
}

/// Deletes one of the caller's secrets.
#[server]
pub async fn delete_secret(name: String) -> Result<(), ApiError> {
    ssr::authed(move |platform, caller| async move { Ok(platform.secrets.delete(caller.id, &name).await?) }).await
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;
    #[test]
    fn invoke_headers_are_one_per_line_and_bad_lines_are_named() {
        let headers = parse_headers("X-Trace: abc\n\nContent-Type: application/json\n").expect("parses");
        assert_eq!(headers.len(), 2);
        assert_eq!((headers[0].0.as_str(), headers[0].1.to_str().ok()), ("x-trace", Some("abc")));
        let error = parse_headers("X-Ok: 1\nno colon here").expect_err("invalid");
        assert_eq!(error.field.as_deref(), Some("headers"));
        assert!(error.error.contains("line 2"), "{}", error.error);
        assert!(parse_headers("Bad Name: 1").is_err());
    }
}
