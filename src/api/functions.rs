//! Server functions for the pages. Each one resolves the caller, calls the platform and maps
//! errors exactly like the REST API, so the two front ends cannot drift apart.

use super::ApiError;
use crate::platform::model::{
    AdminOverview, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_S, FieldError, FunctionDetail, FunctionListPage,
    FunctionSpec, InstanceInfo, InvokeAccess, InvokePolicy, InvokeResult, Language, NewToken, QuotaReport, Resources,
    ScalingPolicy, ServiceKind, ServiceSpec, TokenInfo, TriggerInfo, UsageReport, UserInfo, Visibility,
};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The register/edit form as the browser submits it: every input is text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionForm {
    /// Function name.
    pub name: String,
    /// `python`, `node` or `image`.
    pub runtime: String,
    /// Entry point, empty to detect one.
    #[serde(default)]
    pub handler: String,
    /// Source code.
    #[serde(default)]
    pub source: String,
    /// requirements.txt or package.json.
    #[serde(default)]
    pub requirements: String,
    /// Container image, for image functions.
    #[serde(default)]
    pub image: String,
    /// One `NAME=value` per line.
    #[serde(default)]
    pub env: String,
    /// `public` or `private`.
    #[serde(default)]
    pub visibility: String,
    /// CPU request.
    #[serde(default)]
    pub cpu: String,
    /// Memory request.
    #[serde(default)]
    pub memory: String,
    /// CPU limit.
    #[serde(default)]
    pub cpu_limit: String,
    /// Memory limit.
    #[serde(default)]
    pub memory_limit: String,
    /// Fewest replicas.
    #[serde(default)]
    pub min: String,
    /// Most replicas.
    #[serde(default)]
    pub max: String,
    /// CPU target in percent, empty for none.
    #[serde(default)]
    pub target_cpu_percent: String,
    /// Memory target in percent, empty for none.
    #[serde(default)]
    pub target_memory_percent: String,
    /// Requests in flight per replica to aim for, empty for none.
    #[serde(default)]
    pub target_requests_in_flight: String,
    /// Idle seconds before scaling to zero, empty for never.
    #[serde(default)]
    pub scale_to_zero_after_s: String,
    /// Service type.
    #[serde(default)]
    pub service_type: String,
    /// Invocation timeout in seconds.
    #[serde(default)]
    pub timeout_s: String,
    /// `owner`, `token` or `public`.
    #[serde(default)]
    pub invoke_access: String,
    /// Request body limit in bytes, empty for the default.
    #[serde(default)]
    pub max_body_bytes: String,
    /// Requests in flight per replica, empty or 0 for no limit.
    #[serde(default)]
    pub max_in_flight_per_replica: String,
}

impl FunctionForm {
    /// The form pre-filled from a spec (the edit page).
    pub fn from_spec(spec: &FunctionSpec) -> FunctionForm {
        let optional = |value: Option<String>| value.unwrap_or_default();
        FunctionForm {
            name: spec.name.clone(),
            runtime: spec.runtime.as_str().into(),
            handler: optional(spec.handler.clone()),
            source: spec.source.clone(),
            requirements: spec.requirements.clone(),
            image: optional(spec.image.clone()),
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
            visibility: spec.visibility.as_str().into(),
            cpu: spec.resources.cpu.clone(),
            memory: spec.resources.memory.clone(),
            cpu_limit: spec.resources.cpu_limit.clone(),
            memory_limit: spec.resources.memory_limit.clone(),
            min: spec.scaling.min.to_string(),
            max: spec.scaling.max.to_string(),
            target_cpu_percent: optional(spec.scaling.target_cpu_percent.map(|p| p.to_string())),
            target_memory_percent: optional(spec.scaling.target_memory_percent.map(|p| p.to_string())),
            target_requests_in_flight: optional(spec.scaling.target_requests_in_flight.map(|n| n.to_string())),
            scale_to_zero_after_s: optional(spec.scaling.scale_to_zero_after_s.map(|s| s.to_string())),
            service_type: spec.service.kind.as_str().into(),
            timeout_s: spec.timeout_s.to_string(),
            invoke_access: spec.invoke.access.as_str().into(),
            max_body_bytes: spec.invoke.max_body_bytes.to_string(),
            max_in_flight_per_replica: spec.invoke.max_in_flight_per_replica.to_string(),
        }
    }

    /// The defaults a new function starts from.
    pub fn blank() -> FunctionForm {
        let mut form = FunctionForm::from_spec(&FunctionSpec {
            name: String::new(),
            runtime: Language::Python,
            handler: Some("handle".into()),
            source: "def handle(req):\n    return \"Hello, \" + (req or \"world\")\n".into(),
            requirements: String::new(),
            image: None,
            env: BTreeMap::new(),
            visibility: Visibility::Private,
            resources: Resources::default(),
            scaling: ScalingPolicy::default(),
            service: ServiceSpec::default(),
            timeout_s: DEFAULT_TIMEOUT_S,
            invoke: Default::default(),
        });
        form.name.clear();
        form
    }

    /// Parses the text inputs into a spec, naming every input that is not understood.
    /// Semantic checks (ranges, quantities) are the platform's validation, not this.
    pub fn into_spec(self) -> Result<FunctionSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        let runtime = Language::parse(self.runtime.trim()).unwrap_or_else(|| {
            errors.push(FieldError::new("runtime", "runtime must be python, node or image"));
            Language::Python
        });
        let visibility = match self.visibility.trim() {
            "" => Visibility::Private,
            text => Visibility::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new("visibility", "visibility must be public or private"));
                Visibility::Private
            }),
        };
        let kind = match self.service_type.trim() {
            "" => ServiceKind::NodePort,
            text => ServiceKind::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "service.type",
                    "service type must be NodePort, ClusterIP, LoadBalancer or ExternalName",
                ));
                ServiceKind::NodePort
            }),
        };
        let access = match self.invoke_access.trim() {
            "" => InvokeAccess::Owner,
            text => InvokeAccess::parse(text).unwrap_or_else(|| {
                errors.push(FieldError::new("invoke.access", "invoke.access must be owner, token or public"));
                InvokeAccess::Owner
            }),
        };
        let mut env = BTreeMap::new();
        for (index, line) in self.env.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((name, value)) => {
                    env.insert(name.trim().to_string(), value.to_string());
                }
                None => errors.push(FieldError::new(
                    "env",
                    format!("env line {} must look like NAME=value (got {line:?})", index + 1),
                )),
            }
        }
        let mut number = |field: &str, text: &str| -> Option<u64> {
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            text.parse::<u64>()
                .map_err(|_| {
                    errors.push(FieldError::new(field, format!("{field} must be a whole number (got {text:?})")))
                })
                .ok()
        };
        let min = number("scaling.min", &self.min);
        let max = number("scaling.max", &self.max);
        let target = number("scaling.target_cpu_percent", &self.target_cpu_percent);
        let memory_target = number("scaling.target_memory_percent", &self.target_memory_percent);
        let in_flight_target = number("scaling.target_requests_in_flight", &self.target_requests_in_flight);
        let timeout = number("timeout_s", &self.timeout_s);
        let idle = number("scaling.scale_to_zero_after_s", &self.scale_to_zero_after_s);
        let max_body = number("invoke.max_body_bytes", &self.max_body_bytes);
        let max_in_flight = number("invoke.max_in_flight_per_replica", &self.max_in_flight_per_replica);
        let defaults = ScalingPolicy::default();
        let to_u32 =
            |value: Option<u64>, fallback: u32| value.map_or(fallback, |v| u32::try_from(v).unwrap_or(u32::MAX));
        let or_default =
            |text: String, fallback: String| if text.trim().is_empty() { fallback } else { text.trim().to_string() };
        let default_resources = Resources::default();
        let spec = FunctionSpec {
            name: self.name.trim().to_string(),
            runtime,
            handler: Some(self.handler.trim().to_string()).filter(|h| !h.is_empty()),
            source: if runtime == Language::Image { String::new() } else { self.source },
            requirements: if runtime == Language::Image { String::new() } else { self.requirements },
            image: if runtime == Language::Image {
                Some(self.image.trim().to_string()).filter(|i| !i.is_empty())
            } else {
                None
            },
            env,
            visibility,
            resources: Resources {
                cpu: or_default(self.cpu, default_resources.cpu),
                memory: or_default(self.memory, default_resources.memory),
                cpu_limit: or_default(self.cpu_limit, default_resources.cpu_limit),
                memory_limit: or_default(self.memory_limit, default_resources.memory_limit),
            },
            scaling: ScalingPolicy {
                min: to_u32(min, defaults.min),
                max: to_u32(max, defaults.max),
                target_cpu_percent: target.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                target_memory_percent: memory_target.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                target_requests_in_flight: in_flight_target.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                scale_to_zero_after_s: idle,
            },
            service: ServiceSpec { kind, external_name: None, port: None },
            timeout_s: to_u32(timeout, DEFAULT_TIMEOUT_S),
            invoke: InvokePolicy {
                access,
                max_body_bytes: max_body.unwrap_or(DEFAULT_MAX_BODY_BYTES),
                max_in_flight_per_replica: to_u32(max_in_flight, 0),
            },
        };
        if errors.is_empty() { Ok(spec) } else { Err(errors) }
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    use super::ApiError;
    use crate::api::AppState;
    use crate::api::caller::{AuthSession, principal_from_parts, session_from_parts};
    use crate::platform::Platform;
    use crate::platform::auth::Principal;
    use http::request::Parts;
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;

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

    /// Gives the response the error's status, so browsers and tools see a real 4xx/5xx. Only
    /// when the server function was called over HTTP: while a page renders, the function runs
    /// in-process and the page decides its own status (e.g. a redirect to /login).
    pub fn with_status<T>(result: Result<T, ApiError>) -> Result<T, ApiError> {
        let called_over_http =
            use_context::<Parts>().is_some_and(|parts| parts.uri.path().starts_with(SERVER_FN_PREFIX));
        if let (Err(error), Some(response), true) = (&result, use_context::<ResponseOptions>(), called_over_http) {
            response.set_status(error.status_code());
        }
        result
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

    /// Where leptos_axum serves server functions (the `#[server]` default).
    const SERVER_FN_PREFIX: &str = "/api/";
}

/// The signed-in user, or `None`.
#[server]
pub async fn current_user() -> Result<Option<UserInfo>, ApiError> {
    let (platform, mut parts) = ssr::request()?;
    let principal = crate::api::caller::principal_from_parts(&mut parts, &platform).await;
    ssr::with_status(principal.map(|p| p.map(|p| p.info())))
}

/// Signs in and starts a session.
#[server]
pub async fn log_in(name: String, password: String) -> Result<UserInfo, ApiError> {
    let result = async {
        let (platform, client, mut session) = ssr::session().await?;
        crate::api::caller::log_in(&platform, &mut session, client, name, password).await
    };
    ssr::with_status(result.await)
}

/// Creates an account and starts its session.
#[server]
pub async fn sign_up(name: String, password: String) -> Result<UserInfo, ApiError> {
    let result = async {
        let (platform, client, mut session) = ssr::session().await?;
        crate::api::caller::sign_up(&platform, &mut session, client, name, password).await
    };
    ssr::with_status(result.await)
}

/// Ends the session.
#[server]
pub async fn log_out() -> Result<(), ApiError> {
    let result = async {
        let (_, _, mut session) = ssr::session().await?;
        crate::api::caller::log_out(&mut session).await
    };
    ssr::with_status(result.await)
}

/// A page of the catalog: my functions and the public ones (admins: all) whose names contain
/// `filter`.
#[server]
pub async fn list_functions(page: u32, filter: String) -> Result<FunctionListPage, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.registry.list_page(&caller, &filter, page).await?)
    };
    ssr::with_status(result.await)
}

/// One function with its versions.
#[server]
pub async fn get_function(name: String) -> Result<FunctionDetail, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.registry.get(&caller, &name).await?)
    };
    ssr::with_status(result.await)
}

/// Registers a function (`existing` empty) or records a new version of `existing`.
#[server]
pub async fn save_function(existing: String, form: FunctionForm) -> Result<FunctionDetail, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        let spec = form.into_spec().map_err(ApiError::invalid_fields)?;
        Ok(if existing.is_empty() {
            platform.registry.register(&caller, spec).await?
        } else {
            platform.registry.update(&caller, &existing, spec).await?
        })
    };
    ssr::with_status(result.await)
}

/// Makes an existing version current.
#[server]
pub async fn rollback_function(name: String, version: u32) -> Result<FunctionDetail, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.registry.rollback(&caller, &name, version).await?)
    };
    ssr::with_status(result.await)
}

/// Removes a function that has no instances.
#[server]
pub async fn unregister_function(name: String) -> Result<(), ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.registry.unregister(&caller, &name).await?)
    };
    ssr::with_status(result.await)
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
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        use crate::platform::instances::VersionChoice;
        let choice =
            follow_updates.map(|follow| if follow { VersionChoice::FollowUpdates } else { VersionChoice::Pin(None) });
        Ok(platform.instances.deploy(&caller, &name, choice).await?.0)
    };
    ssr::with_status(result.await)
}

/// The caller's own instances (also for admins: the catalog shows what *I* run).
#[server]
pub async fn my_instances() -> Result<Vec<InstanceInfo>, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.list_own(&caller).await?)
    };
    ssr::with_status(result.await)
}

/// The caller's instance of one function, if deployed.
#[server]
pub async fn my_instance(function: String) -> Result<Option<InstanceInfo>, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.mine(&caller, &function).await?)
    };
    ssr::with_status(result.await)
}

/// Pauses an instance: its replicas stop, its configuration and node port stay.
#[server]
pub async fn pause_instance(id: String) -> Result<InstanceInfo, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.pause(&caller, &id).await?)
    };
    ssr::with_status(result.await)
}

/// Starts a paused instance's replicas again.
#[server]
pub async fn resume_instance(id: String) -> Result<InstanceInfo, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.resume(&caller, &id).await?)
    };
    ssr::with_status(result.await)
}

/// Sets an instance's replicas; `replicas` is the form's text, so a non-number is named.
#[server]
pub async fn scale_instance(id: String, replicas: String) -> Result<InstanceInfo, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        let replicas = replicas.trim().parse::<u32>().map_err(|_| {
            ApiError::invalid("replicas", format!("replicas must be a whole number, not {:?}", replicas.trim()))
        })?;
        Ok(platform.instances.scale(&caller, &id, replicas).await?)
    };
    ssr::with_status(result.await)
}

/// Deletes an instance: replicas stopped, ports freed.
#[server]
pub async fn delete_instance(id: String) -> Result<(), ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        // Replicas still stopping show as `Deleting` until they are gone.
        platform.instances.delete(&caller, &id).await?;
        Ok(())
    };
    ssr::with_status(result.await)
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
    let result = async {
        let (platform, caller) = ssr::caller().await?;
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
    };
    ssr::with_status(result.await)
}

/// The windows the charts offer, in seconds; anything else is refused.
pub const CHART_WINDOWS_S: [u32; 5] = [300, 900, 3600, 6 * 3600, 24 * 3600];

/// The instance's usage and scaling events over the last `window_s` seconds (one of
/// [`CHART_WINDOWS_S`]).
#[server]
pub async fn instance_usage(id: String, window_s: u32) -> Result<UsageReport, ApiError> {
    let result = async {
        let since = ssr::window_start(window_s)?;
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.usage_report(&caller, &id, since).await?)
    };
    ssr::with_status(result.await)
}

/// Everyone's instances and usage over the last `window_s` seconds; admins only.
#[server]
pub async fn admin_dashboard(window_s: u32) -> Result<AdminOverview, ApiError> {
    let result = async {
        let since = ssr::window_start(window_s)?;
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.overview(&caller, since).await?)
    };
    ssr::with_status(result.await)
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
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.triggers.list(&caller, &function, chrono::Utc::now()).await?)
    };
    ssr::with_status(result.await)
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
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        let spec = crate::platform::model::TriggerSpec { schedule, method, path, body };
        Ok(platform.triggers.create(&caller, &function, spec, chrono::Utc::now()).await?)
    };
    ssr::with_status(result.await)
}

/// Deletes one of the caller's triggers.
#[server]
pub async fn delete_trigger(id: i64) -> Result<(), ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.triggers.delete(&caller, id).await?)
    };
    ssr::with_status(result.await)
}

/// The caller's quota and what they use of it.
#[server]
pub async fn my_quota() -> Result<QuotaReport, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.instances.quota_report(&caller, &caller.name).await?)
    };
    ssr::with_status(result.await)
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
    let result = async {
        use crate::platform::model::QuotaSettings;
        use crate::platform::validation::{parse_cpu_millis, parse_memory_bytes};
        let (platform, caller) = ssr::caller().await?;
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
    };
    ssr::with_status(result.await)
}

/// The caller's API tokens.
#[server]
pub async fn list_tokens() -> Result<Vec<TokenInfo>, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.accounts.tokens(&caller).await?)
    };
    ssr::with_status(result.await)
}

/// Creates an API token; the secret is in the answer only.
#[server]
pub async fn create_token(name: String) -> Result<NewToken, ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.accounts.create_token(&caller, &name).await?)
    };
    ssr::with_status(result.await)
}

/// Revokes one of the caller's API tokens.
#[server]
pub async fn revoke_token(id: i64) -> Result<(), ApiError> {
    let result = async {
        let (platform, caller) = ssr::caller().await?;
        Ok(platform.accounts.revoke_token(&caller, id).await?)
    };
    ssr::with_status(result.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blank_form_parses_to_a_spec_with_defaults() {
        let mut form = FunctionForm::blank();
        form.name = "hello".into();
        let spec = form.into_spec().expect("parses");
        assert_eq!(spec.runtime, Language::Python);
        assert_eq!(spec.resources, Resources::default());
        assert_eq!(spec.scaling, ScalingPolicy::default());
    }

    #[test]
    fn a_spec_survives_the_form_round_trip() {
        let mut form = FunctionForm::blank();
        form.name = "echo".into();
        form.env = "A=1\nB=two=2\n".into();
        form.scale_to_zero_after_s = "60".into();
        form.min = "0".into();
        let spec = form.into_spec().expect("parses");
        assert_eq!(spec.env.get("B").map(String::as_str), Some("two=2"));
        assert_eq!(FunctionForm::from_spec(&spec).into_spec(), Ok(spec));
    }

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

    #[test]
    fn unreadable_inputs_are_named() {
        let form = FunctionForm {
            runtime: "ruby".into(),
            env: "NOEQUALS".into(),
            min: "one".into(),
            service_type: "Ingress".into(),
            ..FunctionForm::blank()
        };
        let fields: Vec<String> = form.into_spec().expect_err("invalid").into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["runtime", "service.type", "env", "scaling.min"]);
    }
}
