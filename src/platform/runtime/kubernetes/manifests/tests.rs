//! Unit tests of the parent module.

use super::*;

#[test]
fn without_the_pod_network_only_kubefn_may_connect_and_without_a_proxy_nothing_in_its_namespace_is_reachable() {
    let policy = isolation_policy("fns", &NetworkIsolation::default(), &PackageAccess::default());
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
    assert_eq!(ingress.len(), 1, "{ingress:#?}");
    assert_eq!(ingress[0]["from"][0]["namespaceSelector"]["matchLabels"][names::NAMESPACE_NAME], "kubefn-system");
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 2, "DNS and public addresses: {egress:#?}");
    assert!(!egress.iter().any(|rule| rule.to_string().contains("kubefn-system")));
}

#[test]
fn a_package_egress_at_an_address_is_let_through_on_its_port_alone() {
    let at = |proxy: &str| {
        let packages = PackageAccess { proxy: Some(proxy.into()), ..PackageAccess::default() };
        isolation_policy("fns", &NetworkIsolation::default(), &packages)["spec"]["egress"][1].clone()
    };
    let outside = at("http://10.250.3.1:41234");
    assert_eq!(outside["ports"], json!([{ "protocol": "TCP", "port": 41234 }]));
    assert_eq!(outside["to"][0]["namespaceSelector"]["matchLabels"][names::NAMESPACE_NAME], "kubefn-system");
    assert_eq!(outside["to"][1], json!({ "ipBlock": { "cidr": "10.250.3.1/32" } }));
    assert_eq!(at("http://[fd00::7]:3128")["to"][1], json!({ "ipBlock": { "cidr": "fd00::7/128" } }));
    let inside = at("http://kubefn.kubefn-system.svc:3128");
    assert_eq!(inside["to"].as_array().map(Vec::len), Some(1), "a name is kubefn's namespace alone: {inside}");
}
use crate::platform::model::{Language, ServiceSpec};

/// A fluent fixture: an instance of a function, changed field by field.
struct Fixture(InstanceSpec);

impl Fixture {
    fn python() -> Fixture {
        let spec = FunctionSpec {
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            ..FunctionSpec::new("hello", Language::Python, "def handle(req):\n    return 'hi'\n")
        };
        Fixture(InstanceSpec::new("3f2c1d7e-8a9b-4c5d-9e0f-112233445566", "alice", 2, spec))
    }
    fn with(mut self, change: impl FnOnce(&mut InstanceSpec)) -> Fixture {
        change(&mut self.0);
        self
    }
    fn build(&self) -> Manifests {
        build(&self.0, "kubefn-functions", &PodSettings::default(), None).expect("manifests")
    }
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("json")
}

#[test]
fn every_object_is_named_labelled_and_in_the_namespace() {
    let m = Fixture::python().build();
    assert_eq!(m.name, "hello-alice");
    let metas = [
        json_of(&m.config_map.as_ref().expect("config map").metadata),
        json_of(&m.deployment.metadata),
        json_of(&m.service.metadata),
        json_of(&m.autoscaler.as_ref().expect("hpa").metadata),
    ];
    for meta in &metas {
        let name = meta["name"].as_str().expect("name");
        assert!(names::is_dns1123_label(name), "{name}");
        assert_eq!(meta["namespace"], "kubefn-functions");
        assert_eq!(meta["labels"][names::MANAGED_BY], "kubefn");
        assert_eq!(meta["labels"][names::INSTANCE], "3f2c1d7e-8a9b-4c5d-9e0f-112233445566");
        assert_eq!(meta["labels"][names::FUNCTION], "hello");
        assert_eq!(meta["labels"][names::USER], "alice");
        // Kubernetes' recommended labels, for kubectl and dashboards.
        assert_eq!(meta["labels"]["app.kubernetes.io/name"], "hello");
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "hello-alice");
        assert_eq!(meta["labels"]["app.kubernetes.io/version"], "2");
        assert_eq!(meta["labels"]["app.kubernetes.io/component"], "function");
        assert_eq!(meta["labels"]["app.kubernetes.io/part-of"], "kubefn");
        for value in meta["labels"].as_object().expect("labels").values() {
            assert!(names::is_label_value(value.as_str().expect("text")), "{value}");
        }
    }
    assert_eq!(metas[0]["name"], "hello-alice-v2");
    assert_eq!(metas[0]["labels"][names::VERSION], "2");
}

#[test]
fn the_selector_matches_the_pod_template_and_the_service_selects_the_same_pods() {
    let m = Fixture::python().build();
    let deployment = json_of(&m.deployment);
    let selector = deployment["spec"]["selector"]["matchLabels"].as_object().expect("selector");
    let template = deployment["spec"]["template"]["metadata"]["labels"].as_object().expect("template labels");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(template.get(key), Some(value), "{key}");
    }
    // The selector is immutable in Kubernetes: it must not name the version.
    assert!(!selector.contains_key(names::VERSION));
    assert_eq!(template[names::VERSION], "2");
    let service = json_of(&m.service);
    assert_eq!(service["spec"]["selector"].as_object().expect("service selector"), selector);
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn the_pod_runs_the_bootstrap_from_the_config_map_as_nobody_with_probes_and_limits() {
    let m = Fixture::python().build();
    let config_map = m.config_map.as_ref().expect("config map");
    let data = config_map.data.as_ref().expect("data");
    assert_eq!(data["bootstrap.py"], bootstrap::PYTHON.source);
    assert!(data["function.py"].contains("def handle"));
    assert_eq!(config_map.immutable, Some(true));
    let d = json_of(&m.deployment);
    assert!(d["spec"].get("replicas").is_none(), "the Deployment must leave replicas to the HPA and scale calls");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65534);
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "hello-alice-v2");
    assert!(pod.get("initContainers").is_none(), "no dependencies, no init container");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "python:3.12-slim");
    assert_eq!(c["command"], json!(["python3", "/kubefn/code/bootstrap.py"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/_/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/_/health");
    assert_eq!(
        c["lifecycle"]["preStop"]["sleep"]["seconds"], 2,
        "a stopping replica serves until its endpoint is gone everywhere"
    );
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(
        c.get("envFrom").is_none() && pod["volumes"].as_array().is_some_and(|v| v.len() == 2),
        "no secrets named, none given"
    );
    assert!(m.secret.is_none() && m.registry_secret.is_none());
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("n").to_string(), e["value"].as_str().expect("v").to_string()))
        .collect();
    assert_eq!(env[0], ("GREETING".into(), "hi".into()), "the user's variables come first");
    assert!(env.contains(&("PORT".into(), "8080".into())));
    assert!(env.contains(&("KUBEFN_SOURCE".into(), "/kubefn/code/function.py".into())));
    assert!(!env.iter().any(|(k, _)| k == "KUBEFN_DEPS"));
}

#[test]
fn declared_dependencies_are_installed_by_an_init_container_into_a_shared_volume() {
    let m = Fixture::python().with(|i| i.spec.requirements = "requests==2.32.3\n".into()).build();
    let d = json_of(&m.deployment);
    let pod = &d["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], INSTALL_CONTAINER);
    assert!(init["command"].as_array().expect("command").iter().any(|a| a == "--target"));
    assert_eq!(init["volumeMounts"][1]["mountPath"], "/kubefn/deps");
    let main = &pod["containers"][0];
    assert!(
        main["env"].as_array().expect("env").iter().any(|e| e["name"] == "KUBEFN_DEPS" && e["value"] == "/kubefn/deps")
    );
    assert_eq!(m.config_map.expect("cm").data.expect("data")["requirements.txt"], "requests==2.32.3\n");

    let node = Fixture::python()
        .with(|i| {
            i.spec.runtime = Language::Node;
            i.spec.source = "module.exports = async () => 'hi'".into();
            i.spec.requirements = r#"{"dependencies": {"left-pad": "1.3.0"}}"#.into();
        })
        .build();
    let d = json_of(&node.deployment);
    let main = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(main["image"], "node:22-slim");
    assert_eq!(main["command"], json!(["node", "--max-old-space-size=192", "/kubefn/code/bootstrap.js"]));
    assert!(main["env"].as_array().expect("env").iter().any(|e| e["value"] == "/kubefn/deps/node_modules"));
    assert!(
        d["spec"]["template"]["spec"]["initContainers"][0]["command"][2]
            .as_str()
            .expect("sh -c")
            .contains("npm install")
    );
}

#[test]
fn image_functions_use_their_image_and_port_without_a_config_map() {
    let m = Fixture::python()
        .with(|i| {
            i.spec.runtime = Language::Image;
            i.spec.source.clear();
            i.spec.image = Some("ghcr.io/example/echo:1.0".into());
            i.spec.service = ServiceSpec { kind: ServiceKind::ClusterIP, external_name: None, port: Some(9000) };
        })
        .build();
    assert!(m.config_map.is_none());
    let d = json_of(&m.deployment);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/example/echo:1.0");
    assert_eq!(c["ports"][0]["containerPort"], 9000);
    assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], "http");
    assert!(c.get("command").is_none());
    assert_eq!(json_of(&m.service)["spec"]["type"], "ClusterIP");
}

#[test]
fn service_types_and_a_kept_node_port() {
    let fixture = Fixture::python();
    let kept = build(&fixture.0, "ns", &PodSettings::default(), Some(31234)).expect("manifests");
    assert_eq!(json_of(&kept.service)["spec"]["ports"][0]["nodePort"], 31234);
    let external = Fixture::python()
        .with(|i| {
            i.spec.service = ServiceSpec {
                kind: ServiceKind::ExternalName,
                external_name: Some("api.example.com".into()),
                port: None,
            }
        })
        .build();
    let service = json_of(&external.service);
    assert_eq!(service["spec"]["externalName"], "api.example.com");
    assert!(service["spec"].get("selector").is_none());
}

#[test]
fn the_autoscaler_targets_the_deployment_with_the_policy() {
    let m = Fixture::python()
        .with(|i| {
            i.spec.scaling.min = 2;
            i.spec.scaling.max = 7;
            i.spec.scaling.target_memory_percent = Some(80);
        })
        .build();
    let hpa = json_of(&m.autoscaler.expect("hpa"));
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "hello-alice");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 7);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(hpa["spec"]["metrics"][1]["resource"]["name"], "memory");

    let fixed = Fixture::python().with(|i| i.spec.scaling.target_cpu_percent = None).build();
    assert!(fixed.autoscaler.is_none(), "no target, no HPA");
    let pinned = Fixture::python().with(|i| i.spec.scaling.max = 1).build();
    assert!(pinned.autoscaler.is_none(), "min = max leaves nothing to scale");
}

#[test]
fn the_fingerprint_follows_every_change() {
    let a = Fixture::python().build();
    assert_eq!(a.fingerprint, Fixture::python().build().fingerprint);
    assert_ne!(a.fingerprint, Fixture::python().with(|i| i.version = 3).build().fingerprint);
    assert_ne!(a.fingerprint, Fixture::python().with(|i| i.paused = true).build().fingerprint);
    assert_ne!(a.fingerprint, Fixture::python().with(|i| i.spec.resources.cpu = "200m".into()).build().fingerprint);
}

#[test]
fn placement_reads_labels_and_tolerations_and_names_what_is_wrong() {
    let selector = Placement::parse_node_selector("pool=functions, zone = a").expect("labels");
    assert_eq!(selector.get("pool").map(String::as_str), Some("functions"));
    assert_eq!(selector.get("zone").map(String::as_str), Some("a"));
    assert!(Placement::parse_node_selector("").expect("none").is_empty());
    assert!(Placement::parse_node_selector("pool").unwrap_err().to_string().starts_with("node selector: \"pool\""));

    let tolerations =
        Placement::parse_tolerations("dedicated=functions:NoSchedule,gpu,spot:NoExecute").expect("tolerations");
    assert_eq!(
        tolerations[0],
        Toleration { key: "dedicated".into(), value: Some("functions".into()), effect: Some("NoSchedule".into()) }
    );
    assert_eq!(tolerations[1], Toleration { key: "gpu".into(), value: None, effect: None });
    assert_eq!(tolerations[2].effect.as_deref(), Some("NoExecute"));
    assert!(Placement::parse_tolerations("a:Sometimes").is_err());
    assert!(Placement::parse_tolerations("=x").is_err());
}

#[test]
fn placement_reaches_every_pod_of_the_instance() {
    let placement = Placement {
        node_selector: [("pool".to_string(), "functions".to_string())].into(),
        tolerations: Placement::parse_tolerations("dedicated=functions:NoSchedule,gpu").expect("tolerations"),
    };
    for fixture in
        [Fixture::python(), Fixture::python().with(|i| i.spec.image = Some("ghcr.io/example/echo:1.0".into()))]
    {
        let manifests =
            build(&fixture.0, "ns", &PodSettings { placement: placement.clone(), ..PodSettings::default() }, None)
                .expect("manifests");
        let pod = serde_json::to_value(&manifests.deployment).expect("json")["spec"]["template"]["spec"].clone();
        assert_eq!(pod["nodeSelector"], json!({ "pool": "functions" }));
        assert_eq!(
            pod["tolerations"],
            json!([
                { "key": "dedicated", "operator": "Equal", "value": "functions", "effect": "NoSchedule" },
                { "key": "gpu", "operator": "Exists" },
            ])
        );
    }
    let plain = build(&Fixture::python().0, "ns", &PodSettings::default(), None).expect("manifests");
    let pod = serde_json::to_value(&plain.deployment).expect("json")["spec"]["template"]["spec"].clone();
    assert!(pod.get("nodeSelector").is_none() && pod.get("tolerations").is_none());
}

#[test]
fn the_objects_kept_for_a_namespace_carry_the_recommended_labels_as_kubefn_s_own() {
    let policy = isolation_policy("fns", &NetworkIsolation::default(), &PackageAccess::default());
    let labels = &policy["metadata"]["labels"];
    assert_eq!(labels[names::MANAGED_BY], "kubefn");
    assert_eq!(labels["app.kubernetes.io/name"], "kubefn");
    assert_eq!(labels["app.kubernetes.io/component"], "isolation");
    assert_eq!(labels["app.kubernetes.io/part-of"], "kubefn");
    assert_eq!(labels["app.kubernetes.io/version"], env!("CARGO_PKG_VERSION"));
    for value in labels.as_object().expect("labels").values() {
        assert!(names::is_label_value(value.as_str().expect("text")), "{value}");
    }
}

#[test]
fn named_secrets_become_a_secret_mounted_read_only_with_variables_and_a_digest_that_rolls_the_pods() {
    use crate::platform::runtime::SecretValue;
    let secret = |name: &str, env: Option<&str>, value: &[u8]| SecretValue {
        name: name.into(),
        env: env.map(str::to_string),
        value: value.to_vec(),
    };
    let with = |value: &[u8]| {
        Fixture::python().with(|i| {
            i.secrets = vec![secret("db-password", Some("DB_PASSWORD"), value), secret("tls-key", None, b"k")]
        })
    };
    let m = with(b"hunter2").build();
    let object = json_of(&m.secret.as_ref().expect("a Secret").0);
    assert_eq!(object["metadata"]["name"], "hello-alice-secrets");
    assert_eq!(object["metadata"]["labels"][names::INSTANCE], "3f2c1d7e-8a9b-4c5d-9e0f-112233445566");
    assert_eq!(object["data"]["db-password"], "aHVudGVyMg==", "base64 of the value");
    assert!(!format!("{m:?}").contains("aHVudGVyMg") && !format!("{m:?}").contains("hunter2"), "never in Debug");
    let d = json_of(&m.deployment);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let volume = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "secrets").expect("volume");
    assert_eq!(volume["secret"], json!({ "secretName": "hello-alice-secrets", "defaultMode": 0o444 }));
    assert!(
        c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&json!({ "name": "secrets", "mountPath": "/var/openfaas/secrets", "readOnly": true }))
    );
    let env = c["env"].as_array().expect("env");
    assert!(env.contains(&json!({ "name": "DB_PASSWORD", "valueFrom": { "secretKeyRef": { "name": "hello-alice-secrets", "key": "db-password" } } })));
    assert!(!d.to_string().contains("hunter2"), "the value is only in the Secret");
    let digest = |m: &Manifests| {
        json_of(&m.deployment)["spec"]["template"]["metadata"]["annotations"][secrets::DIGEST_ANNOTATION].clone()
    };
    assert!(digest(&m).is_string());
    assert_ne!(digest(&m), digest(&with(b"other").build()), "a replaced value changes the pod template");
    assert_ne!(m.fingerprint, with(b"other").build().fingerprint);
}

#[test]
fn registry_credentials_become_an_image_pull_secret() {
    use crate::platform::runtime::SecretValue;
    let config = br#"{"auths":{"registry.example.com":{"auth":"dTpw"}}}"#;
    let m = Fixture::python()
        .with(|i| {
            i.spec.runtime = Language::Image;
            i.spec.image = Some("registry.example.com/team/app:1".into());
            i.registry_credentials = Some(SecretValue { name: "regcred".into(), env: None, value: config.to_vec() });
        })
        .build();
    let object = json_of(&m.registry_secret.as_ref().expect("a pull Secret").0);
    assert_eq!(object["metadata"]["name"], "hello-alice-registry");
    assert_eq!(object["type"], "kubernetes.io/dockerconfigjson");
    assert!(object["data"][".dockerconfigjson"].is_string());
    let d = json_of(&m.deployment);
    assert_eq!(d["spec"]["template"]["spec"]["imagePullSecrets"], json!([{ "name": "hello-alice-registry" }]));
}
