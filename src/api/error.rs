//! The one error type every API answer uses, REST and server functions alike.
//!
//! On the wire it is `{"error": "...", "field": "...", "errors": [...], "status": N}`: a message
//! that says what happened and what to do, the offending field when there is one, and nothing
//! internal (SQL, paths, stack traces). Internal failures are logged with a reference that the
//! message repeats, so an operator can find them.

use crate::platform::model::FieldError;
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// An API error as clients see it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// What happened and what to do.
    pub error: String,
    /// The field at fault, as a dotted path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every invalid field, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before retrying (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with a status and message and no field.
    pub fn new(status: u16, error: impl Into<String>) -> ApiError {
        ApiError { status, error: error.into(), field: None, errors: Vec::new(), retry_after_s: None }
    }

    /// A 422 about one field.
    pub fn invalid(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError { field: Some(field.into()), ..ApiError::new(422, error) }
    }

    /// A 422 listing every invalid field; the first one is `field`.
    pub fn invalid_fields(errors: Vec<FieldError>) -> ApiError {
        let first = errors.first().cloned().unwrap_or_else(|| FieldError::new("", "the request is invalid"));
        ApiError { field: Some(first.field), errors, ..ApiError::new(422, first.message) }
    }

    /// 401: no session and no valid token.
    pub fn unauthenticated() -> ApiError {
        ApiError::new(401, "log in first, or send an API token as \"Authorization: Bearer …\"")
    }

    /// The message for one field, if this error names it (for forms).
    pub fn message_for(&self, field: &str) -> Option<String> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
            .or_else(|| (self.field.as_deref() == Some(field)).then(|| self.error.clone()))
    }
}

impl FromServerFnError for ApiError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Request(_) => {
                ApiError::new(503, "cannot reach the kubefn server; check your connection and retry")
            }
            ServerFnErrorErr::Args(message)
            | ServerFnErrorErr::MissingArg(message)
            | ServerFnErrorErr::Deserialization(message) => {
                ApiError::new(400, format!("the request is malformed: {message}"))
            }
            ServerFnErrorErr::UnsupportedRequestMethod(method) => {
                ApiError::new(405, format!("method {method} is not supported here"))
            }
            other => ApiError::new(500, format!("the request failed: {other}")),
        }
    }
}

#[cfg(feature = "ssr")]
pub use ssr::server_function_error_status;

#[cfg(feature = "ssr")]
mod ssr {
    use super::ApiError;
    use crate::platform::async_invocations::AsyncError;
    use crate::platform::auth::AuthError;
    use crate::platform::instances::InstanceError;
    use crate::platform::quotas::QuotaError;
    use crate::platform::registry::RegistryError;
    use crate::platform::runtime::RuntimeError;
    use crate::platform::secrets::SecretsError;
    use crate::platform::triggers::TriggerError;
    use axum::Json;
    use axum::response::{IntoResponse, Response};
    use http::{HeaderValue, StatusCode, header};

    impl ApiError {
        /// The status as an HTTP status code.
        pub fn status_code(&self) -> StatusCode {
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }

        /// Logs an internal failure with its whole source chain and returns a 500 that
        /// names only a reference to the log line.
        pub fn internal(error: &(dyn std::error::Error + 'static)) -> ApiError {
            let reference = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
            let chain = crate::platform::error_chain(error);
            tracing::error!(reference = %reference, error = %chain, "internal error");
            ApiError::new(
                500,
                format!("kubefn hit an internal error (ref {reference}); the server log has the details"),
            )
        }
    }

    impl From<RegistryError> for ApiError {
        fn from(error: RegistryError) -> Self {
            let field = error.field().map(str::to_string);
            let status = match &error {
                RegistryError::Invalid(errors) => return ApiError::invalid_fields(errors.clone()),
                RegistryError::NotFound { .. } | RegistryError::NoSuchVersion { .. } => 404,
                RegistryError::Forbidden { .. } => 403,
                RegistryError::NameTaken { .. } | RegistryError::InUse { .. } => 409,
                RegistryError::Quota(quota) => return quota_error(quota),
                RegistryError::Store(_) => return ApiError::internal(&error),
            };
            ApiError { field, ..ApiError::new(status, error.to_string()) }
        }
    }

    impl From<QuotaError> for ApiError {
        fn from(error: QuotaError) -> Self {
            quota_error(&error)
        }
    }

    /// Over a quota is 403 (as Kubernetes answers a ResourceQuota), naming the limit as
    /// `quota.<limit>`.
    fn quota_error(error: &QuotaError) -> ApiError {
        match error {
            QuotaError::Exceeded { limit, .. } => {
                ApiError { field: Some(format!("quota.{limit}")), ..ApiError::new(403, error.to_string()) }
            }
            QuotaError::AdminOnly => ApiError::new(403, error.to_string()),
            QuotaError::NoSuchUser { .. } => ApiError::new(404, error.to_string()),
            QuotaError::Invalid(field_error) => {
                ApiError::invalid(field_error.field.clone(), field_error.message.clone())
            }
            QuotaError::Store(_) => ApiError::internal(error),
        }
    }

    impl From<InstanceError> for ApiError {
        fn from(error: InstanceError) -> Self {
            match error {
                InstanceError::Function(error) => ApiError::from(error),
                InstanceError::Quota(error) => ApiError::from(error),
                InstanceError::NotFound { .. } | InstanceError::NotDeployed { .. } => {
                    ApiError::new(404, error.to_string())
                }
                InstanceError::AdminOnly { .. } => ApiError::new(403, error.to_string()),
                InstanceError::BeingDeleted { .. } => ApiError::new(409, error.to_string()),
                InstanceError::TooManyFollows { .. } => {
                    ApiError { retry_after_s: Some(5), ..ApiError::new(429, error.to_string()) }
                }
                InstanceError::Invalid(field_error) => ApiError::invalid(field_error.field, field_error.message),
                InstanceError::Unsupported(_) => ApiError::invalid("runtime", error.to_string()),
                // The backend's refusal and a full port range are the cluster's or the host's
                // capacity, told in words for users; other runtime failures (files on the host)
                // stay internal.
                InstanceError::Runtime(RuntimeError::Backend { .. } | RuntimeError::Port { .. }) => {
                    ApiError { retry_after_s: Some(10), ..ApiError::new(503, error.to_string()) }
                }
                // A function naming a secret the caller lacks cannot run for them: the request's
                // fault, named by field.
                InstanceError::Secrets(SecretsError::NotFound { .. }) => {
                    ApiError::invalid("secrets", error.to_string())
                }
                InstanceError::Secrets(error) => ApiError::from(error),
                InstanceError::Runtime(_) | InstanceError::Store(_) => ApiError::internal(&error),
            }
        }
    }

    impl From<AsyncError> for ApiError {
        fn from(error: AsyncError) -> Self {
            match error {
                AsyncError::Gateway(error) => ApiError::from(error),
                AsyncError::Invalid(field_error) => {
                    ApiError { status: 400, ..ApiError::invalid(field_error.field, field_error.message) }
                }
                AsyncError::NotFound { .. } => ApiError::new(404, error.to_string()),
                AsyncError::QueueFull { .. } => {
                    ApiError { retry_after_s: Some(10), ..ApiError::new(429, error.to_string()) }
                }
                AsyncError::UploadsBusy => ApiError { retry_after_s: Some(1), ..ApiError::new(429, error.to_string()) },
                AsyncError::BodyBroken(_) => ApiError::new(400, error.to_string()),
                AsyncError::Store(_) | AsyncError::Spool(_) => ApiError::internal(&error),
            }
        }
    }

    impl From<TriggerError> for ApiError {
        fn from(error: TriggerError) -> Self {
            match error {
                TriggerError::Function(error) => ApiError::from(error),
                TriggerError::Invalid(field_error) => ApiError::invalid(field_error.field, field_error.message),
                TriggerError::NotFound { .. } => ApiError::new(404, error.to_string()),
                TriggerError::TooMany { .. } => ApiError::new(409, error.to_string()),
                TriggerError::Store(_) => ApiError::internal(&error),
            }
        }
    }

    impl From<AuthError> for ApiError {
        fn from(error: AuthError) -> Self {
            match &error {
                AuthError::Invalid(field_error) => {
                    ApiError::invalid(field_error.field.clone(), field_error.message.clone())
                }
                AuthError::NameTaken { .. } => ApiError::invalid("name", error.to_string()).with_status(409),
                AuthError::SignupClosed => ApiError::new(403, error.to_string()),
                AuthError::RateLimited { retry_after_s } | AuthError::SignupsLimited { retry_after_s } => {
                    ApiError { retry_after_s: Some(*retry_after_s), ..ApiError::new(429, error.to_string()) }
                }
                AuthError::HashingBusy => ApiError { retry_after_s: Some(1), ..ApiError::new(429, error.to_string()) },
                AuthError::NoSuchToken { .. } => ApiError::new(404, error.to_string()),
                AuthError::Hashing(_) | AuthError::Store(_) => ApiError::internal(&error),
            }
        }
    }

    impl From<SecretsError> for ApiError {
        fn from(error: SecretsError) -> Self {
            match &error {
                SecretsError::Invalid(field_error) => {
                    ApiError::invalid(field_error.field.clone(), field_error.message.clone())
                }
                SecretsError::NotFound { .. } => ApiError::new(404, error.to_string()),
                SecretsError::NotText { .. } => ApiError::invalid("secrets", error.to_string()),
                SecretsError::NotRegistryCredentials { .. } => ApiError::invalid("registry_secret", error.to_string()),
                SecretsError::TooMany | SecretsError::Unreadable { .. } | SecretsError::InUse { .. } => {
                    ApiError::new(409, error.to_string())
                }
                SecretsError::Key { .. }
                | SecretsError::KeyFile { .. }
                | SecretsError::Random
                | SecretsError::Store(_) => ApiError::internal(&error),
            }
        }
    }

    /// The largest error answer a server function gives (an [`ApiError`] as JSON) that
    /// [`server_function_error_status`] reads.
    const SERVER_FUNCTION_ERROR_LIMIT: usize = 64 * 1024;

    /// Gives a server function's error answer its [`ApiError`]'s status (and `Retry-After`),
    /// so browsers and tools see a real 4xx: server_fn answers every error with 500, whether
    /// the function refused or its arguments did not parse. A plain form's redirect back (no
    /// JavaScript) and every other answer pass unchanged.
    pub async fn server_function_error_status(response: Response) -> Response {
        use leptos::server_fn::error::SERVER_FN_ERROR_HEADER;
        if response.status() != StatusCode::INTERNAL_SERVER_ERROR
            || !response.headers().contains_key(SERVER_FN_ERROR_HEADER)
        {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let error = match axum::body::to_bytes(body, SERVER_FUNCTION_ERROR_LIMIT).await {
            Ok(bytes) => match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(error) => error,
                // Not an ApiError: pass the answer on as it came.
                Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
            },
            Err(error) => ApiError::internal(&error),
        };
        let mut answer = error.into_response();
        // server_fn's client knows the body for the function's error by this header.
        if let Some(path) = parts.headers.remove(SERVER_FN_ERROR_HEADER) {
            answer.headers_mut().insert(SERVER_FN_ERROR_HEADER, path);
        }
        answer
    }

    impl ApiError {
        fn with_status(self, status: u16) -> ApiError {
            ApiError { status, ..self }
        }
    }

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            let mut response = (self.status_code(), Json(&self)).into_response();
            if let Some(seconds) = self.retry_after_s
                && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::ApiError;
    use crate::platform::instances::InstanceError;
    use crate::platform::runtime::RuntimeError;

    #[test]
    fn a_runtime_refusal_is_a_503_in_the_backends_words_and_a_host_failure_stays_internal_in_the_answer_and_the_state()
    {
        let refusal = InstanceError::Runtime(RuntimeError::Backend {
            what: "the cluster refused to apply Service f/x: exceeded quota: no-services".into(),
            source: "quota".into(),
        });
        let answer = ApiError::from(refusal);
        assert_eq!((answer.status, answer.retry_after_s), (503, Some(10)));
        assert!(answer.error.contains("exceeded quota: no-services"), "{}", answer.error);

        let host = InstanceError::Runtime(RuntimeError::Files {
            id: "i".into(),
            path: "/srv/kubefn/data/runtime/i".into(),
            source: std::io::Error::other("disk full"),
        });
        let InstanceError::Runtime(failure) = &host else { unreachable!() };
        let state_message = failure.owner_message();
        assert!(!state_message.contains("/srv") && state_message.contains("instance i"), "{state_message}");
        let answer = ApiError::from(host);
        assert_eq!(answer.status, 500);
        assert!(!answer.error.contains("/srv"), "no host path in {}", answer.error);
    }
}
