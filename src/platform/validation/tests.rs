//! Unit tests of the parent module.

use super::*;
use crate::platform::model::Visibility;

fn python(name: &str) -> FunctionSpec {
    FunctionSpec {
        handler: Some("handle".into()),
        visibility: Visibility::Public,
        ..FunctionSpec::new(name, Language::Python, "def handle(req):\n    return req\n")
    }
}

fn fields(spec: &FunctionSpec) -> Vec<String> {
    check_function_spec(spec).into_iter().map(|e| e.field).collect()
}

#[test]
fn a_plain_python_function_is_valid() {
    assert_eq!(fields(&python("hello")), Vec::<String>::new());
}

#[test]
fn names_must_be_dns_labels_of_at_most_40() {
    for bad in ["", "Hello", "-x", "x-", "9lives", "a_b", "a.b", &"a".repeat(41)] {
        assert_eq!(fields(&python(bad)), vec!["name"], "{bad:?}");
    }
    for good in ["a", "hello-world", "f2", &"a".repeat(40)] {
        assert!(fields(&python(good)).is_empty(), "{good:?}");
    }
}

#[test]
fn cpu_quantities_parse_to_millicores() {
    assert_eq!(parse_cpu_millis("100m"), Some(100));
    assert_eq!(parse_cpu_millis("0.5"), Some(500));
    assert_eq!(parse_cpu_millis(".25"), Some(250));
    assert_eq!(parse_cpu_millis("+2"), Some(2000));
    assert_eq!(parse_cpu_millis("1.5"), Some(1500));
    assert_eq!(parse_cpu_millis("4.35"), Some(4350));
    assert_eq!(parse_cpu_millis("1e3"), Some(1_000_000));
    assert_eq!(parse_cpu_millis("5E-1"), Some(500));
    // Finer than a millicore rounds up, as the API server rounds it.
    assert_eq!(parse_cpu_millis("1.2345"), Some(1235));
    assert_eq!(parse_cpu_millis("1.5m"), Some(2));
    assert_eq!(parse_cpu_millis("250000u"), Some(250));
    for bad in ["", "m", "-1", "abc", ".", "inf", "+inf", "NaN", "1e3m", "1e", "1e400", "2 cores", "0x10"] {
        assert_eq!(parse_cpu_millis(bad), None, "{bad:?}");
    }
}

#[test]
fn memory_quantities_parse_to_bytes() {
    assert_eq!(parse_memory_bytes("128Mi"), Some(128 << 20));
    assert_eq!(parse_memory_bytes("1Gi"), Some(1 << 30));
    assert_eq!(parse_memory_bytes("1.5Gi"), Some(3 << 29));
    assert_eq!(parse_memory_bytes("1G"), Some(1_000_000_000));
    assert_eq!(parse_memory_bytes("64k"), Some(64_000));
    assert_eq!(parse_memory_bytes("1e3"), Some(1_000));
    assert_eq!(parse_memory_bytes("1.5e9"), Some(1_500_000_000));
    assert_eq!(parse_memory_bytes("1048576"), Some(1 << 20));
    assert_eq!(parse_memory_bytes("0.5"), Some(1));
    for bad in ["", "Mi", "12MB", "-1Mi", "12 Mi", "1e3Ki", "Infinity", "1Mi ", "9Ei"] {
        assert_eq!(parse_memory_bytes(bad), None, "{bad:?}");
    }
}

#[test]
fn requests_may_not_exceed_limits() {
    let mut spec = python("f");
    spec.resources.cpu = "2".into();
    spec.resources.memory = "1Gi".into();
    assert_eq!(fields(&spec), vec!["resources.cpu", "resources.memory"]);
}

#[test]
fn bad_quantities_name_their_field() {
    let mut spec = python("f");
    spec.resources.cpu_limit = "lots".into();
    spec.resources.memory_limit = "1Mi".into();
    assert_eq!(fields(&spec), vec!["resources.cpu_limit", "resources.memory_limit"]);
}

#[test]
fn image_references() {
    for good in [
        "python:3.12-slim",
        "nginx",
        "library/nginx:latest",
        "ghcr.io/org/app:v1.2.3",
        "localhost:5000/app",
        "registry.example.com:443/team/app_name__x:tag",
        "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert!(is_image_reference(good), "{good}");
    }
    for bad in [
        "",
        "UPPER",
        "app:",
        "app::1",
        "a b",
        "/app",
        "app/",
        "host:port/app",
        "host:/app",
        "app@sha256:short",
        "-app",
        "app:-tag",
    ] {
        assert!(!is_image_reference(bad), "{bad}");
    }
}

#[test]
fn image_functions_need_an_image_and_no_source() {
    let mut spec = python("img");
    spec.runtime = Language::Image;
    assert_eq!(fields(&spec), vec!["image", "source"]);
    spec.source.clear();
    spec.image = Some("nginx:1.27".into());
    spec.service.port = Some(8080);
    assert!(fields(&spec).is_empty());
}

#[test]
fn source_is_required_and_bounded() {
    let mut spec = python("f");
    spec.source = "  \n".into();
    assert_eq!(fields(&spec), vec!["source"]);
    spec.source = "x".repeat(MAX_SOURCE_BYTES + 1);
    assert_eq!(fields(&spec), vec!["source"]);
    spec.source = "x".repeat(MAX_SOURCE_BYTES);
    assert!(fields(&spec).is_empty());
}

#[test]
fn env_names_are_checked_and_reserved_ones_refused() {
    let mut spec = python("f");
    spec.env.insert("GOOD_1".into(), "v".into());
    spec.env.insert("1BAD".into(), "v".into());
    spec.env.insert("PORT".into(), "1".into());
    spec.env.insert("KUBEFN_X".into(), "1".into());
    assert_eq!(fields(&spec), vec!["env.1BAD", "env.KUBEFN_X", "env.PORT"]);
}

#[test]
fn scaling_bounds() {
    let mut spec = python("f");
    spec.scaling.min = 3;
    spec.scaling.max = 2;
    assert_eq!(fields(&spec), vec!["scaling.min"]);
    spec.scaling.min = 0;
    spec.scaling.max = 0;
    assert_eq!(fields(&spec), vec!["scaling.max"]);
    spec.scaling.max = 2;
    spec.scaling.target_cpu_percent = Some(0);
    assert_eq!(fields(&spec), vec!["scaling.target_cpu_percent"]);
    spec.scaling.target_cpu_percent = None;
    spec.scaling.scale_to_zero_after_s = Some(5);
    assert_eq!(fields(&spec), vec!["scaling.scale_to_zero_after_s"]);
    spec.scaling.scale_to_zero_after_s = Some(60);
    spec.scaling.min = 1;
    assert_eq!(fields(&spec), vec!["scaling.min"]);
}

#[test]
fn external_name_only_with_its_service_type() {
    let mut spec = python("f");
    spec.service.kind = ServiceKind::ExternalName;
    assert_eq!(fields(&spec), vec!["service.external_name"]);
    spec.service.external_name = Some("api.example.com".into());
    assert!(fields(&spec).is_empty());
    spec.service.kind = ServiceKind::ClusterIP;
    assert_eq!(fields(&spec), vec!["service.external_name"]);
}

#[test]
fn node_requirements_must_be_a_package_json_object() {
    let mut spec = python("f");
    spec.runtime = Language::Node;
    spec.source = "module.exports = async () => 'hi'".into();
    spec.requirements = "express==4".into();
    assert_eq!(fields(&spec), vec!["requirements"]);
    spec.requirements = r#"{"dependencies": {"express": "^4"}}"#.into();
    assert!(fields(&spec).is_empty());
}

#[test]
fn python_requirements_name_packages_only() {
    for good in [
        "",
        "requests==2.32.3\n# a comment\nflask>=3,<4  # web\n",
        "uvicorn[standard]~=0.30",
        "numpy; python_version >= \"3.9\"",
        "six==1.16.0 --hash=sha256:abc",
    ] {
        assert_eq!(check_python_requirements(good), Ok(()), "{good}");
    }
    for (bad, says) in [
        ("-r /proc/self/environ", "the option -r"),
        ("-c constraints.txt", "the option -c"),
        ("-e git+https://example.com/x.git", "the option -e"),
        ("-i https://evil.example/simple", "the option -i"),
        ("--index-url=https://evil.example/simple", "the option --index-url"),
        ("--extra-index-url https://evil.example/simple", "the option --extra-index-url"),
        ("-f /srv/wheels", "the option -f"),
        ("--find-links /srv/wheels", "the option --find-links"),
        ("--trusted-host evil.example", "the option --trusted-host"),
        ("requests\n./local/package", "line 2"),
        ("/abs/path/pkg.whl", "local paths and URLs"),
        ("pkg @ https://evil.example/pkg.tar.gz", "local paths and URLs"),
        ("https://evil.example/pkg.tar.gz", "local paths and URLs"),
        ("file:///etc/passwd", "local paths and URLs"),
        ("pkg==1.0 -r other.txt", "only --hash"),
        ("pkg==${SECRET}", "variables"),
    ] {
        let error = check_python_requirements(bad).expect_err(bad);
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn package_json_dependencies_come_from_the_registry() {
    for good in [r#"{}"#, r#"{"dependencies": {"express": "^4.19.2", "@scope/pkg": "1.x", "alias": "npm:lodash@4"}}"#] {
        assert_eq!(check_package_json(good), Ok(()), "{good}");
    }
    for bad in [
        r#"{"dependencies": {"x": "file:../../data"}}"#,
        r#"{"dependencies": {"x": "link:/etc"}}"#,
        r#"{"dependencies": {"x": "git+https://example.com/x.git"}}"#,
        r#"{"dependencies": {"x": "git://example.com/x.git"}}"#,
        r#"{"dependencies": {"x": "github:user/repo"}}"#,
        r#"{"dependencies": {"x": "user/repo"}}"#,
        r#"{"dependencies": {"x": "https://evil.example/x.tgz"}}"#,
        r#"{"optionalDependencies": {"x": "/abs/dir"}}"#,
        r#"{"dependencies": {"x": 1}}"#,
        r#"{"workspaces": ["packages/*"]}"#,
    ] {
        assert!(check_package_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn handler_names() {
    for good in ["handle", "main.handler", "_x", "hello_world2"] {
        assert!(is_handler_name(good), "{good}");
    }
    for bad in ["", "1x", "a..b", "a b", "a-b", "a."] {
        assert!(!is_handler_name(bad), "{bad}");
    }
}

#[test]
fn passwords() {
    assert_eq!(check_password("short").map_err(|e| e.field), Err("password".to_string()));
    assert!(check_password("long enough").is_ok());
    assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
}
