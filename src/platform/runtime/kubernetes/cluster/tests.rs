//! Unit tests of the parent module.

use super::*;

#[test]
fn events_are_matched_to_the_instance_by_object_name() {
    assert!(about("hello-alice", "Deployment", "hello-alice"));
    assert!(about("hello-alice", "ReplicaSet", "hello-alice-7d9f8c6b5"));
    assert!(about("hello-alice", "Pod", "hello-alice-7d9f8c6b5-x2k4p"));
    assert!(about("hello-alice", "HorizontalPodAutoscaler", "hello-alice"));
    assert!(!about("hello-alice", "Pod", "hello-alice-bob-7d9f8c6b5-x2k4p"), "another instance's pod");
    assert!(!about("hello-alice", "Deployment", "hello-alice-bob"));
    assert!(!about("hello", "ReplicaSet", "hello-alice-7d9f8c6b5"));
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
