//! Unit tests of the parent module.

use super::*;

#[test]
fn the_limit_grows_with_ready_replicas_and_the_wait_for_a_cold_start_is_bounded() {
    assert_eq!(admission_limit(0, 3), 0, "no limit");
    assert_eq!(admission_limit(5, 3), 15);
    assert_eq!(admission_limit(5, 0), 5, "as many as the first replica takes");
    assert_eq!(admission_limit(0, 0), COLD_START_QUEUE, "a cold start never queues without bound");
    assert_eq!(admission_limit(5000, 0), COLD_START_QUEUE);
}

#[test]
fn the_upstream_uri_keeps_the_rest_of_the_path_and_the_query() {
    assert_eq!(upstream_uri("", None).expect("uri"), "/");
    assert_eq!(upstream_uri("/a/b", Some("x=1&y=2")).expect("uri"), "/a/b?x=1&y=2");
    assert_eq!(upstream_uri("a", None).expect("uri"), "/a");
    assert_eq!(upstream_uri_of("/report?full=1").expect("uri"), "/report?full=1");
    assert_eq!(upstream_uri_of("report").expect("uri"), "/report");
}

#[test]
fn hop_by_hop_headers_and_kubefn_credentials_stay_behind() {
    let mut headers = HeaderMap::new();
    headers.insert("connection", HeaderValue::from_static("keep-alive, x-private , X-Shouting"));
    headers.insert("x-private", HeaderValue::from_static("secret"));
    headers.insert("x-shouting", HeaderValue::from_static("secret too"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert("cookie", HeaderValue::from_static("kubefn_session=abc"));
    headers.insert("authorization", HeaderValue::from_static("Bearer kfn_x"));
    headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    headers.insert("host", HeaderValue::from_static("kubefn.example"));
    headers.insert("x-custom", HeaderValue::from_static("kept"));
    prepare_upstream(&mut headers, Some(IpAddr::from([127, 0, 0, 1])));
    for gone in ["x-private", "x-shouting", "keep-alive", "cookie", "authorization"] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(headers["x-forwarded-host"], "kubefn.example");
    assert_eq!(headers["x-custom"], "kept");
    assert!(!headers.contains_key("connection"), "the upstream connection is the gateway's to keep");
}

/// A header map of `pairs` (lowercase names), in order (a repeated name appends).
pub(super) fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    headers
}

/// The names `headers` keeps once its hop-by-hop headers are stripped.
fn kept_after_stripping(mut headers: HeaderMap) -> Vec<String> {
    strip_hop_by_hop(&mut headers);
    headers.keys().map(|name| name.as_str().to_string()).collect()
}

#[test]
fn an_answers_hop_by_hop_headers_go_whichever_tokens_connection_carries() {
    // What Node's http module sends with every answer.
    let node = header_map(&[("connection", "Keep-Alive"), ("keep-alive", "timeout=5"), ("content-length", "5")]);
    assert_eq!(kept_after_stripping(node), ["content-length"]);
    // `close` and the listed names beside one that is only hop-by-hop because it is named.
    let named = header_map(&[
        ("connection", "close, upgrade"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("x-kept", "1"),
    ]);
    assert_eq!(kept_after_stripping(named), ["x-kept"]);
    // Nothing hop-by-hop: nothing changes.
    let plain = header_map(&[("content-type", "text/plain"), ("x-hop", "not named, so kept")]);
    let mut stripped = plain.clone();
    strip_hop_by_hop(&mut stripped);
    assert_eq!(stripped, plain);
}

#[test]
fn a_functions_answer_cannot_script_kubefns_origin_or_set_its_cookies() {
    let mut headers = HeaderMap::new();
    headers.append("set-cookie", HeaderValue::from_static("kubefn_session=planted; Path=/"));
    headers.append("set-cookie", HeaderValue::from_static("other=1"));
    headers.insert("content-security-policy", HeaderValue::from_static("script-src *"));
    headers.insert("content-type", HeaderValue::from_static("text/html"));
    confine_answer(&mut headers);
    assert!(!headers.contains_key("set-cookie"));
    assert_eq!(headers["content-security-policy"], "sandbox", "the function's own policy cannot loosen it");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-type"], "text/html");
}
