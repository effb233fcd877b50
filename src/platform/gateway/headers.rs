//! What the gateway does to headers on the way up and back: hop-by-hop ones dropped, the client named, upgrades kept, and the answer confined.

use super::*;

/// The protocol a request asks to upgrade to (`Connection: upgrade` with `Upgrade: …`).
pub(super) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")));
    if asks { headers.get(http::header::UPGRADE).cloned() } else { None }
}

pub(super) fn prepare_upstream(headers: &mut HeaderMap, client: Option<IpAddr>) {
    let host = headers.get(http::header::HOST).cloned();
    strip_hop_by_hop(headers);
    // Credentials for kubefn are not the function's business.
    headers.remove(http::header::COOKIE);
    headers.remove(http::header::AUTHORIZATION);
    if let Some(client) = client {
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {client}"),
            None => client.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    headers.insert(http::header::HOST, HeaderValue::from_static("function"));
}

/// What every answer of a function gets on its way to the client. It is served on kubefn's own
/// origin, so it must not run script there (`Content-Security-Policy: sandbox` gives it an
/// opaque origin: no access to kubefn's cookies, storage or same-origin API calls), must not be
/// sniffed into another type, and must not set cookies on kubefn's site (a function could
/// otherwise plant a session of its choosing).
pub(super) fn confine_answer(headers: &mut HeaderMap) {
    headers.remove(http::header::SET_COOKIE);
    headers.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too (read before Connection itself goes).
    // Nothing is allocated for the usual request, which names none: this runs twice per call.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}
