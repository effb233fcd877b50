//! The server's settings as the command line gives them.

use super::*;

#[test]
fn the_otlp_endpoint_is_an_http_url_or_refused_by_name() {
    let parse = |endpoint: &str| Config::try_parse_from(["kubefn", "--otlp-endpoint", endpoint]);
    let config = parse("http://otel-collector.observability:4318").expect("valid");
    assert_eq!(config.otlp_endpoint.as_deref(), Some("http://otel-collector.observability:4318"));
    for bad in ["https://collector:4318", "collector:4318", "http://", "http://bad host"] {
        let error = parse(bad).expect_err(bad).to_string();
        assert!(error.contains("--otlp-endpoint") && error.contains("OTLP/HTTP collector"), "{error}");
    }
    assert_eq!(Config::try_parse_from(["kubefn"]).expect("defaults").otlp_endpoint, None, "off by default");
}
