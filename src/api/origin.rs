//! Where a browser request comes from, and the guard against requests that another site makes
//! with the user's kubefn cookie (cross-site request forgery).
//!
//! The session cookie's `SameSite=Lax` is not enough on its own: every port of a host is the
//! same *site*, so a page served on a function's node port (`127.0.0.1:30001`) could post a form
//! to kubefn (`127.0.0.1:3000`) and the browser would send the cookie along. Browsers say where
//! a request comes from in `Sec-Fetch-Site` (and, older ones, in `Origin`), so kubefn:
//! - refuses writes (any method but GET, HEAD and OPTIONS) from another origin unless they carry
//!   an API token, which another page cannot attach without a CORS preflight kubefn never
//!   grants ([`refuse_cross_origin_writes`]);
//! - never lets the session authenticate an invocation another origin makes (the gateway asks
//!   [`session_untrusted`]): such a call is anonymous, so private functions refuse it.

use super::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, Method};

/// Where a request says it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOrigin {
    /// kubefn's own pages, or the user typing the address (`Sec-Fetch-Site: none`).
    Own,
    /// Another origin: another site, or another port of this host.
    Other,
    /// Nothing says: a client that is not a browser (curl, the CLI, a webhook sender).
    Unstated,
}

/// Where the request comes from, by `Sec-Fetch-Site` (every current browser sends it), else by
/// `Origin` compared with `Host`.
pub fn request_origin(headers: &HeaderMap) -> RequestOrigin {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return match site.trim().to_ascii_lowercase().as_str() {
            "same-origin" | "none" => RequestOrigin::Own,
            _ => RequestOrigin::Other,
        };
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return RequestOrigin::Unstated;
    };
    // `Origin: null` comes from sandboxed frames, data: URLs and redirects across origins.
    let origin_authority =
        origin.to_str().ok().and_then(|text| text.parse::<http::Uri>().ok()).and_then(|uri| uri.authority().cloned());
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    match (origin_authority, host) {
        (Some(authority), Some(host)) if authority.as_str().eq_ignore_ascii_case(host.trim()) => RequestOrigin::Own,
        _ => RequestOrigin::Other,
    }
}

/// Whether the method changes something (everything but GET, HEAD and OPTIONS; server functions
/// are POSTs, reads included, and are guarded all the same).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Invocations (`/fn/…`, `/async/fn/…`) may come from anywhere: a public function is for other
/// sites too. The gateway ignores the session of those from another origin instead.
fn is_invocation(path: &str) -> bool {
    path.starts_with("/fn/") || path.starts_with("/async/fn/")
}

/// Whether the session cookie must not vouch for this request: a browser says another origin
/// made it, and it carries no API token (which another page could not have attached).
pub fn session_untrusted(headers: &HeaderMap) -> bool {
    !headers.contains_key(AUTHORIZATION) && request_origin(headers) == RequestOrigin::Other
}

/// Whether a request must be refused as a cross-origin write.
pub fn is_forged_write(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    is_write(method) && !is_invocation(path) && session_untrusted(headers)
}

/// The router layer: answers 403 to a write another origin makes without an API token, before
/// any handler (or server function) runs.
pub async fn refuse_cross_origin_writes(request: Request, next: Next) -> Response {
    if is_forged_write(request.method(), request.uri().path(), request.headers()) {
        return ApiError::new(
            403,
            "kubefn refuses changes requested by another site or port (cross-site request forgery); \
             use kubefn's own pages, or call the API with an API token",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (http::header::HeaderName::from_static(name), http::HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn sec_fetch_site_decides_when_present() {
        assert_eq!(request_origin(&headers(&[("sec-fetch-site", "same-origin")])), RequestOrigin::Own);
        assert_eq!(request_origin(&headers(&[("sec-fetch-site", "none")])), RequestOrigin::Own);
        // Another port of the same host is the same site, and still another origin.
        assert_eq!(
            request_origin(&headers(&[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://127.0.0.1:3000"),
                ("host", "127.0.0.1:3000")
            ])),
            RequestOrigin::Other
        );
        assert_eq!(request_origin(&headers(&[("sec-fetch-site", "cross-site")])), RequestOrigin::Other);
    }

    #[test]
    fn origin_is_compared_with_host_otherwise() {
        assert_eq!(
            request_origin(&headers(&[("origin", "http://127.0.0.1:3000"), ("host", "127.0.0.1:3000")])),
            RequestOrigin::Own
        );
        assert_eq!(
            request_origin(&headers(&[("origin", "https://kubefn.example.com"), ("host", "KUBEFN.example.com")])),
            RequestOrigin::Own
        );
        assert_eq!(
            request_origin(&headers(&[("origin", "http://127.0.0.1:30001"), ("host", "127.0.0.1:3000")])),
            RequestOrigin::Other
        );
        assert_eq!(request_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:3000")])), RequestOrigin::Other);
        assert_eq!(request_origin(&headers(&[("origin", "http://127.0.0.1:3000")])), RequestOrigin::Other);
        assert_eq!(request_origin(&headers(&[("host", "127.0.0.1:3000")])), RequestOrigin::Unstated);
    }

    #[test]
    fn only_cross_origin_writes_without_a_token_are_forged() {
        let other = headers(&[("sec-fetch-site", "same-site")]);
        assert!(is_forged_write(&Method::POST, "/api/v1/tokens", &other));
        assert!(is_forged_write(&Method::DELETE, "/api/v1/functions/f", &other));
        assert!(is_forged_write(&Method::POST, "/api/deploy_function123", &other));
        assert!(!is_forged_write(&Method::GET, "/api/v1/tokens", &other));
        assert!(!is_forged_write(&Method::POST, "/fn/alice/echo", &other));
        assert!(!is_forged_write(&Method::POST, "/async/fn/alice/echo/x", &other));
        let with_token = headers(&[("sec-fetch-site", "cross-site"), ("authorization", "Bearer kfn_x")]);
        assert!(!is_forged_write(&Method::POST, "/api/v1/tokens", &with_token));
        assert!(!is_forged_write(&Method::POST, "/api/v1/tokens", &headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!is_forged_write(&Method::POST, "/api/v1/tokens", &HeaderMap::new()));
    }
}
