//! Unit tests of the parent module.

use super::*;
use k8s_metrics::v1beta1::PodMetrics;

#[test]
fn events_are_grouped_by_namespace_and_the_instance_objects_name() {
    let event = |kind: &str, name: &str| Event {
        involved_object: k8s_openapi::api::core::v1::ObjectReference {
            kind: Some(kind.into()),
            name: Some(name.into()),
            namespace: Some("fns".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    for (kind, name) in [
        ("Deployment", "hello-alice"),
        ("ReplicaSet", "hello-alice-7d9f8c6b5"),
        ("Pod", "hello-alice-7d9f8c6b5-x2k4p"),
        ("HorizontalPodAutoscaler", "hello-alice"),
        ("Service", "hello-alice"),
    ] {
        assert_eq!(event_group(&event(kind, name)).as_deref(), Some("fns/hello-alice"), "{kind} {name}");
    }
    assert_eq!(event_group(&event("Pod", "hello-alice-bob-7d9f8c6b5-x2k4p")).as_deref(), Some("fns/hello-alice-bob"));
    assert_eq!(event_group(&event("Deployment", "hello-alice-bob")).as_deref(), Some("fns/hello-alice-bob"));
    assert_eq!(event_group(&event("ReplicaSet", "hello-alice-7d9f8c6b5")).as_deref(), Some("fns/hello-alice"));
    assert_eq!(event_group(&event("Node", "node-1")), None, "not an instance's object");
}

#[test]
fn pod_metrics_become_millicores_and_bytes() {
    let metrics: PodMetrics = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "hello-alice-1-a", "labels": { names::INSTANCE: "id-1" } },
        "timestamp": "2026-11-22T17:16:33Z",
        "window": "10s",
        "containers": [
            { "name": "function", "usage": { "cpu": "12500000n", "memory": "2048Ki" } },
            { "name": "sidecar", "usage": { "cpu": "1m", "memory": "1M" } },
        ],
    }))
    .expect("PodMetrics");
    let usage = pod_usage(&metrics);
    assert_eq!(usage.instance.as_deref(), Some("id-1"));
    assert_eq!(usage.usage.cpu_millicores, Some(13.5));
    assert_eq!(usage.usage.memory_bytes, 2048 * 1024 + 1_000_000);
    assert_eq!(parse_cpu_millicores("2"), Some(2000.0));
    assert_eq!(parse_cpu_millicores("250m"), Some(250.0));
    assert_eq!(parse_cpu_millicores("x"), None);
}

#[test]
fn kubefn_owns_only_its_namespaces() {
    assert!(Scope::Shared("kubefn-functions".into()).owns("kubefn-functions"));
    assert!(!Scope::Shared("kubefn-functions".into()).owns("kubefn-functions-2"));
    assert!(Scope::PerUser("kubefn-u-".into()).owns("kubefn-u-alice"));
    assert!(!Scope::PerUser("kubefn-u-".into()).owns("kubefn-functions"));
}

#[test]
fn selectors_match_label_sets() {
    let labels = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
    assert!(matches(Some(&labels), &parse_selector("a=1,b=2")));
    assert!(!matches(Some(&labels), &parse_selector("a=1,b=3")));
    assert!(!matches(None, &parse_selector("a=1")));
}
