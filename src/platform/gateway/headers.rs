//! What the gateway does to headers on the way up and back: hop-by-hop ones dropped, the client named, upgrades kept, and the answer confined.

use super::*;

/// The protocol a request asks to upgrade to (`Connection: upgrade` with `Upgrade: …`).
pub(super) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_options(headers).any(|option| option.eq_ignore_ascii_case("upgrade"));
    if asks { headers.get(http::header::UPGRADE).cloned() } else { None }
}

/// The options the `Connection` headers list (`keep-alive`, `upgrade`, header names, …).
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// `X-Forwarded-For`, as a constant: looking a header up by a `&str` parses the name every time.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The request as the function gets it: hop-by-hop headers and kubefn's credentials dropped,
/// the client and the original host named in `X-Forwarded-*`, `Host: function`.
pub(super) fn prepare_upstream(headers: &mut HeaderMap, client: Option<IpAddr>) {
    let host = headers.get(http::header::HOST).cloned();
    strip_hop_by_hop(headers);
    // Credentials for kubefn are not the function's business.
    headers.remove(http::header::COOKIE);
    headers.remove(http::header::AUTHORIZATION);
    if let Some(client) = client {
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {client}"),
            None => client.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(X_FORWARDED_FOR, value);
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

/// Drops the headers that describe one hop (RFC 9110 §7.6.1) and those `Connection` names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // This runs twice per call, and most requests and answers carry none of these headers, or
    // only `Connection: keep-alive`: one pass over the names (no hashing) finds that out.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Headers named in Connection are hop-by-hop too (read before Connection itself goes).
    // The usual options (`keep-alive`, `upgrade`) are in the fixed list already, so nothing is
    // parsed or allocated for them.
    let named: Vec<HeaderName> = connection_options(headers)
        .filter(|option| !HOP_BY_HOP.iter().any(|name| option.eq_ignore_ascii_case(name.as_str())))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}
