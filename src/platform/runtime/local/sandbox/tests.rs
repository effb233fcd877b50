//! The sandbox's bwrap arguments, as text.

use super::*;

fn sandbox() -> Sandbox {
    Sandbox {
        bwrap: "/usr/bin/bwrap".into(),
        setpriv: "/usr/bin/setpriv".into(),
        settings: SandboxSettings::default(),
        system: vec!["/opt/python".into()],
    }
}

#[test]
fn replicas_get_no_network_and_only_their_binds() {
    let binds = [
        Bind::read_only("/data/runtime/instances/i/v1", inside::FUNCTION),
        Bind::writable("/data/runtime/run/p1", inside::RUN),
    ];
    let files =
        [DataFile { inside: "/var/openfaas/secrets/db-password".into(), contents: b"hunter2".as_slice().into() }];
    let args = sandbox().arguments(
        &Confined {
            program: Program {
                path: Path::new("/usr/bin/python3"),
                args: &["/kubefn/bootstrap/bootstrap.py".to_string()],
                env: &[],
                binds: &binds,
                files: &files,
                workdir: Path::new(inside::FUNCTION),
            },
            network: Network::None,
            cgroup: None,
        },
        &[9],
    );
    let text = args.join(" ");
    assert!(
        text.contains("--perms 0755 --dir /var --perms 0755 --dir /var/openfaas --perms 0755 --dir /var/openfaas/secrets --perms 0444 --ro-bind-data 9 /var/openfaas/secrets/db-password"),
        "a secret is a read-only file from its descriptor, in directories made for it: {text}"
    );
    assert!(!text.contains("hunter2"), "a secret's value is never an argument: {text}");
    assert!(text.contains("--unshare-net"), "{text}");
    assert!(text.contains("--unshare-pid"), "{text}");
    assert!(text.contains("--ro-bind /data/runtime/instances/i/v1 /kubefn/function"), "{text}");
    assert!(text.contains("--bind /data/runtime/run/p1 /kubefn/run"), "{text}");
    assert!(text.contains("--ro-bind /opt/python /opt/python"), "{text}");
    assert!(
        text.contains("--size 67108864 --tmpfs /tmp --perms 0755 --dir /kubefn --ro-bind"),
        "binds come after /tmp: {text}"
    );
    assert_eq!(text.matches("--dir /kubefn ").count(), 1, "{text}");
    assert!(text.contains("--reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- /usr/bin/python3 /kubefn/bootstrap/bootstrap.py"), "{text}");
    assert!(
        !text.contains("/data/kubefn.db") && !text.contains(" /data "),
        "kubefn's data directory is never bound whole: {text}"
    );
}

#[test]
fn installs_share_the_host_network() {
    let args = sandbox().arguments(
        &Confined {
            program: Program {
                path: Path::new("/usr/bin/npm"),
                args: &[],
                env: &[],
                binds: &[],
                files: &[],
                workdir: Path::new(inside::INSTALL),
            },
            network: Network::Host,
            cgroup: None,
        },
        &[],
    );
    assert!(!args.iter().any(|a| a == "--unshare-net"));
}

#[test]
fn interpreters_outside_usr_are_bound_by_their_prefix() {
    let dir = tempfile::tempdir().expect("temp");
    let bin = dir.path().join("versions/3.11/bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::write(bin.join("python3"), "").expect("file");
    assert_eq!(
        install_prefix(&bin.join("python3")),
        Some(std::fs::canonicalize(dir.path().join("versions/3.11")).expect("real"))
    );
    assert_eq!(install_prefix(Path::new("/usr/bin/env")), None);
}

#[test]
fn single_user_mode_uses_host_paths() {
    let isolation = Isolation::SingleUser { open_files: 1024 };
    let bind = Bind::read_only("/data/x", inside::FUNCTION);
    assert_eq!(isolation.path(&bind), PathBuf::from("/data/x"));
    assert!(isolation.describe().contains("not sandboxed"));
}
