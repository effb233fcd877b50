//! Per-user secrets against the real kubefn binary on the local runtime, in its sandbox: set
//! through the REST API, read by the replicas of instances whose function names them (as files
//! at /var/openfaas/secrets/NAME and as variables), from the *instance's* user, never shown
//! back, never on disk in the clear, and never visible to another user, another function or
//! another instance. Bad input is refused by field and changes nothing.

use process::{Server, free_port, sandbox_available};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

const ALICE_VALUE: &str = "alice-hunter2-5f0c";
const BOB_VALUE: &str = "bob-other-value-91ad";
const ROTATED: &str = "alice-rotated-77e3";

/// A function that reports what it can see of the secret `db-password`.
const READER: &str = r#"import json, os

def handle(req):
    path = '/var/openfaas/secrets/db-password'
    seen = {'env': os.environ.get('DB_PASSWORD'), 'dir': os.environ.get('KUBEFN_SECRETS_DIR')}
    try:
        with open(path) as f:
            seen['file'] = f.read()
    except OSError as error:
        seen['file_error'] = type(error).__name__
    try:
        with open(path, 'w') as f:
            f.write('changed')
        seen['written'] = True
    except OSError:
        seen['written'] = False
    return json.dumps(seen)
"#;

/// A function that names no secret and looks for one anyway: every file it can see outside
/// the system directories, and every process's environment and command line it can read.
const SNOOP: &str = r#"import glob, json, os

def handle(req):
    paths = glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline')
    for top in ['/var', '/tmp', '/kubefn', '/run', '/home', '/root', '/dev/shm']:
        for root, dirs, files in os.walk(top):
            paths += [os.path.join(root, name) for name in files]
    found = []
    for path in paths:
        try:
            with open(path, 'rb') as f:
                if req.encode() in f.read(1 << 20):
                    found.append(path)
        except OSError:
            pass
    return json.dumps({'secrets_dir': os.path.exists('/var/openfaas/secrets'), 'found': found})
"#;

fn reader(visibility: &str) -> Value {
    json!({"name": "reader", "runtime": "python", "source": READER, "visibility": visibility,
           "secrets": [{"name": "db-password", "env": "DB_PASSWORD"}]})
}

fn put(server: &Server, cookie: &str, name: &str, value: &str) -> process::Answer {
    server.request("PUT", &format!("/api/v1/secrets/{name}"), Some(cookie), Some(&json!({"value": value}).to_string()))
}

/// Invokes until the answer's JSON satisfies `done` (a rollout replaces replicas), or panics.
fn invoke_until(server: &Server, cookie: &str, user: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = server.invoke(cookie, user, "reader", "");
        let seen: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        if answer.status == 200 && done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{user}'s reader never {what}: {} {}", answer.status, answer.body);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else { continue };
        if metadata.is_dir() {
            pending.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|entry| entry.path()));
        } else if metadata.is_file()
            && std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn secrets_reach_only_their_own_users_instances_and_never_come_back_out() {
    if !sandbox_available() {
        return;
    }
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::start(data.path(), free_port());
    let alice = server.sign_up("alice");
    let bob = server.sign_up("bob");

    // Set, listed by name only; anonymous callers and other users see nothing.
    let created = put(&server, &alice, "db-password", ALICE_VALUE);
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(!created.body.contains(ALICE_VALUE), "the value is never sent back: {}", created.body);
    let listed = server.request("GET", "/api/v1/secrets", Some(&alice), None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json().as_array().map(|l| l.len()), Some(1), "{}", listed.body);
    assert_eq!(listed.json()[0]["name"], "db-password");
    assert!(!listed.body.contains(ALICE_VALUE), "{}", listed.body);
    assert_eq!(server.request("GET", "/api/v1/secrets", None, None).status, 401);
    assert_eq!(server.request("GET", "/api/v1/secrets", Some(&bob), None).body, "[]", "bob sees none of alice's");
    let bob_delete = server.request("DELETE", "/api/v1/secrets/db-password", Some(&bob), None);
    assert_eq!(bob_delete.status, 404, "bob cannot delete alice's: {}", bob_delete.body);

    // Bad input: refused by field, and nothing changes.
    for (name, value, field) in [
        ("Bad_Name", "v", "name"),
        ("a".repeat(64).as_str(), "v", "name"),
        ("big", &"x".repeat(64 * 1024 + 1), "value"),
    ] {
        let refused = put(&server, &alice, name, value);
        assert_eq!((refused.status, refused.json()["field"].as_str()), (422, Some(field)), "{name}: {}", refused.body);
    }
    let unknown = server.request("PUT", "/api/v1/secrets/x", Some(&alice), Some(r#"{"value": "v", "extra": 1}"#));
    assert!((400..500).contains(&unknown.status), "an unknown field: {} {}", unknown.status, unknown.body);
    let still = server.request("GET", "/api/v1/secrets", Some(&alice), None).json();
    assert_eq!(still.as_array().map(|l| l.len()), Some(1), "nothing changed: {still}");
    for (secrets, field) in [
        (json!([{"name": "../etc/passwd"}]), "secrets[0].name"),
        (json!([{"name": "db-password", "env": "KUBEFN_SOCKET"}]), "secrets[0].env"),
        (json!([{"name": "db-password"}, {"name": "db-password"}]), "secrets[1].name"),
    ] {
        let spec = json!({"name": "bad", "runtime": "python", "source": READER, "secrets": secrets});
        let refused = server.request("POST", "/api/v1/functions", Some(&alice), Some(&spec.to_string()));
        assert_eq!((refused.status, refused.json()["field"].as_str()), (422, Some(field)), "{}", refused.body);
    }

    // Alice's instance reads hers as a read-only file and as the variable it asked for.
    let instance = server.deploy(&alice, &reader("public"));
    server.instance_in_state(&alice, &instance, "Ready");
    let seen = invoke_until(&server, &alice, "alice", "read the secret", |seen| seen["file"] == ALICE_VALUE);
    assert_eq!(seen["env"], ALICE_VALUE, "{seen}");
    assert_eq!(seen["dir"], "/var/openfaas/secrets", "{seen}");
    assert_eq!(seen["written"], false, "the file is read-only: {seen}");
    let function = server.request("GET", "/api/v1/functions/reader", Some(&alice), None);
    assert!(!function.body.contains(ALICE_VALUE), "the spec names secrets, never values: {}", function.body);

    // Bob may deploy alice's public function, but it gets *his* secret, never hers: without
    // one of that name the deploy is refused by field and nothing is recorded.
    let deploy = server.request("POST", "/api/v1/functions/reader/deploy", Some(&bob), None);
    assert_eq!((deploy.status, deploy.json()["field"].as_str()), (422, Some("secrets")), "{}", deploy.body);
    assert!(deploy.body.contains("db-password") && !deploy.body.contains(ALICE_VALUE), "{}", deploy.body);
    assert_eq!(put(&server, &bob, "db-password", BOB_VALUE).status, 201);
    let bobs = server.request("POST", "/api/v1/functions/reader/deploy", Some(&bob), None);
    assert_eq!(bobs.status, 201, "{}", bobs.body);
    let seen = invoke_until(&server, &bob, "bob", "read his secret", |seen| seen["file"] == BOB_VALUE);
    assert_eq!(seen["env"], BOB_VALUE, "bob's instance has bob's secret: {seen}");
    let seen = invoke_until(&server, &alice, "alice", "kept hers", |seen| seen["file"] == ALICE_VALUE);
    assert_eq!(seen["env"], ALICE_VALUE);

    // Another of alice's functions, naming no secret, finds none anywhere it can look.
    let snoop = json!({"name": "snoop", "runtime": "python", "source": SNOOP, "timeout_s": 60});
    let snoop_id = server.deploy(&alice, &snoop);
    server.instance_in_state(&alice, &snoop_id, "Ready");
    let looked = server.invoke(&alice, "alice", "snoop", ALICE_VALUE);
    assert_eq!(looked.status, 200, "{}", looked.body);
    assert_eq!(looked.json(), json!({"secrets_dir": false, "found": []}), "{}", looked.body);

    // At rest: nowhere in kubefn's data directory in the clear (database, logs, run files).
    let leaked = files_containing(data.path(), ALICE_VALUE.as_bytes());
    assert!(leaked.is_empty(), "the value is in the clear in {leaked:?}");

    // Replacing the value rolls the instances that read it.
    assert_eq!(put(&server, &alice, "db-password", ROTATED).status, 200);
    let seen = invoke_until(&server, &alice, "alice", "read the new value", |seen| seen["file"] == ROTATED);
    assert_eq!(seen["env"], ROTATED);

    // A secret an instance reads cannot be deleted (it could not restart): refused, naming
    // the function. A new version naming a secret alice lacks does not take: the running
    // version keeps serving and the instance says what is missing.
    let in_use = server.request("DELETE", "/api/v1/secrets/db-password", Some(&alice), None);
    assert_eq!(in_use.status, 409, "{}", in_use.body);
    assert!(in_use.body.contains("reader"), "{}", in_use.body);
    let mut wanting = reader("public");
    wanting["secrets"] = json!([{"name": "db-password", "env": "DB_PASSWORD"}, {"name": "api-key"}]);
    let updated = server.request("PUT", "/api/v1/functions/reader", Some(&alice), Some(&wanting.to_string()));
    assert_eq!(updated.status, 200, "{}", updated.body);
    let waiting = server.instance_until(&alice, &instance, "a missing secret is named", |i| {
        i["message"].as_str().is_some_and(|m| m.contains("api-key"))
    });
    assert_eq!(waiting["serving_version"], 1, "the old version keeps serving: {waiting}");
    assert_eq!(server.invoke(&alice, "alice", "reader", "").status, 200, "and answering");
    assert_eq!(put(&server, &alice, "api-key", "k").status, 201);
    server
        .instance_until(&alice, &instance, "version 2 serving", |i| i["serving_version"] == 2 && i["state"] == "Ready");
}

/// The README's secrets example, run as it stands by `sh -e` with the kubefn binary on PATH,
/// logged in as a new user.
#[test]
fn the_readme_secrets_example_runs_with_the_cli() {
    if !sandbox_available() {
        return;
    }
    let data = tempfile::tempdir().expect("data dir");
    let server = Server::start(data.path(), free_port());
    server.sign_up("carol");
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let block = readme.split("<!-- secrets-example -->\n```sh\n").nth(1).expect("the README's secrets example");
    let example = block.split("\n```").next().expect("its end");
    let url = format!("http://127.0.0.1:{}", server.port);
    let script = format!(
        "echo carol-password | kubefn login --url {url} --user carol --password-stdin\n{example}\nkubefn secret ls -o json\n"
    );
    let home = tempfile::tempdir().expect("home");
    let run = process::run_shell(&script, home.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the README's secrets example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("hunter2 hunter2"), "the function read it from its file and its variable: {stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("db-password ")), "secret ls lists it: {stdout}");
    assert_eq!(stdout.matches("hunter2").count(), 2, "only the function's answer shows the value: {stdout}");
    assert!(stdout.trim_end().ends_with("[]"), "secret rm deleted it: {stdout}");
    assert!(stderr.contains("Created secret db-password."), "{stderr}");
}
