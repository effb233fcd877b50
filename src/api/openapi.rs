//! The OpenAPI 3.1 document of kubefn's HTTP API, generated from the code with utoipa.
//!
//! The REST operations are declared on their handlers (`#[utoipa::path]`) and routed with
//! utoipa-axum's `routes!`, which registers a route and its entry together. The gateway's and
//! the health routes are declared here and on their handlers; `tests/rest_api.rs` checks that
//! every route has an entry and every entry a route. Served at `/api/v1/openapi.json`, and as
//! Swagger UI (vendored into the binary) at `/api/docs`.

use super::ApiError;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem, RefOr};
use utoipa::{Modify, OpenApi};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Where Swagger UI shows it.
pub const PAGE_PATH: &str = "/api/docs";

/// The parts of the document that are not REST handlers: what kubefn is, how callers prove who
/// they are, the groups operations are listed in, and the gateway's and health routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kubefn",
        description = "Functions as a service: register Python or Node functions (or images), deploy your own \
                       instance of one, and invoke it through the gateway. Errors are JSON objects with \
                       `error` (what happened and what to do), `status`, and `field` when one field is at \
                       fault. Writes from a browser on another site are refused unless they carry an API \
                       token."
    ),
    modifiers(&Credentials),
    security(("session" = []), ("token" = [])),
    tags(
        (name = "accounts", description = "Sign-up, log-in, the caller, API tokens and quotas"),
        (name = "functions", description = "Registered functions and their immutable versions"),
        (name = "instances", description = "Deployed instances: one per user and function"),
        (name = "triggers", description = "Cron triggers, and the state of async invocations"),
        (name = "secrets", description = "Your secrets: values your functions read as files, never shown back"),
        (name = "gateway", description = "Invoking a function, at once or queued"),
        (name = "operations", description = "Health, readiness and Prometheus metrics"),
    ),
    paths(
        super::gateway::invoke,
        super::gateway::invoke_async,
        super::gateway::metrics,
        super::rest::healthz,
        super::rest::readyz,
    )
)]
struct Declared;

/// The error answers an operation can give; the body says which and why.
#[derive(utoipa::IntoResponses)]
pub enum ApiErrors {
    /// The request is malformed: not JSON, or a path or query value of the wrong type.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// No session and no valid API token.
    #[response(status = 401)]
    Unauthenticated(ApiError),
    /// Not allowed: someone else's function or instance, an admin-only operation, or a write
    /// from another site without an API token.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// No such thing, or one the caller may not see.
    #[response(status = 404)]
    NotFound(ApiError),
    /// The name is taken, or the change conflicts with the current state.
    #[response(status = 409)]
    Conflict(ApiError),
    /// The body is not sent as JSON.
    #[response(status = 415)]
    UnsupportedMediaType(ApiError),
    /// A field is invalid; `field` (and `errors` for several) names it.
    #[response(status = 422)]
    Invalid(ApiError),
    /// Too many requests; `retry_after_s` says when to retry.
    #[response(status = 429)]
    TooMany(ApiError),
    /// kubefn failed; the message carries a reference for its log.
    #[response(status = 500)]
    Internal(ApiError),
}

/// The two ways to authenticate: the session cookie the log-in sets, or an API token.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::caller::SESSION_COOKIE,
                "The session cookie set by POST /api/v1/signup or /api/v1/login",
            ))),
        );
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some("An API token from POST /api/v1/tokens".to_string());
        components.add_security_scheme("token", SecurityScheme::Http(bearer));
    }
}

/// The whole document: the declared parts with the REST operations of `rest` added.
///
/// The gateway's invocation routes are one operation each in code (`…/{path}`, whose `path`
/// may be empty or absent); the document lists `/fn/{user}/{function}` and its form with a
/// trailing slash as well, since OpenAPI paths are matched literally.
pub fn document(rest: Document) -> Document {
    let mut document = Declared::openapi();
    document.merge(rest);
    for prefix in ["/fn", "/async/fn"] {
        let wildcard = format!("{prefix}/{{user}}/{{function}}/{{path}}");
        let Some(item) = document.paths.paths.get(&wildcard).cloned() else { continue };
        let mut root = item;
        for operation in operations(&mut root) {
            if let Some(parameters) = operation.parameters.as_mut() {
                parameters.retain(|parameter| !matches!(parameter, RefOr::T(p) if p.name == "path"));
            }
        }
        document.paths.paths.insert(format!("{prefix}/{{user}}/{{function}}"), root.clone());
        document.paths.paths.insert(format!("{prefix}/{{user}}/{{function}}/"), root);
    }
    unique_operation_ids(&mut document);
    document
}

/// The operations of a path item, whatever their method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .flatten()
    .chain(item.additional_operations.values_mut())
}

/// Gives every operation an id of its own, as OpenAPI requires (clients name their methods
/// by it): the second and later operations with a shared id (one handler on several methods
/// or paths) get `_2`, `_3`, … appended.
fn unique_operation_ids(document: &mut Document) {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            let Some(id) = operation.operation_id.as_mut() else { continue };
            let count = seen.entry(id.clone()).or_default();
            *count += 1;
            if *count > 1 {
                id.push_str(&format!("_{count}"));
            }
        }
    }
}
