//! Unit tests of the parent module.

use super::*;
use std::io::Write;

/// A minimal pure-Python wheel, so pip installs without any index.
fn write_wheel(dir: &Path) -> PathBuf {
    let path = dir.join("kubefngreet-1.0-py3-none-any.whl");
    let file = std::fs::File::create(&path).expect("wheel");
    let mut zip = ZipWriter::new(file);
    zip.add("kubefngreet/__init__.py", "WORD = 'from-a-wheel'\n");
    zip.add("kubefngreet-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: kubefngreet\nVersion: 1.0\n");
    zip.add(
        "kubefngreet-1.0.dist-info/WHEEL",
        "Wheel-Version: 1.0\nGenerator: kubefn-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    zip.add("kubefngreet-1.0.dist-info/RECORD", "");
    zip.finish();
    path
}

fn cache(dir: &Path, env: Vec<(String, String)>, binds: Vec<Bind>) -> DependencyCache {
    let launcher = crate::platform::runtime::local::launch::for_tests(dir);
    let mut settings = InstallerSettings::from_environment(crate::platform::runtime::local::launch::python_executable(
        Path::new("python3"),
    ));
    settings.env = env;
    settings.binds = binds;
    DependencyCache::new(dir.join("cache"), launcher, settings)
}

#[tokio::test]
async fn python_requirements_install_once_per_content() {
    let dir = tempfile::tempdir().expect("temp");
    let wheels = dir.path().join("wheels");
    std::fs::create_dir_all(&wheels).expect("wheels dir");
    write_wheel(&wheels);
    // The admin's local wheel directory, as PIP_FIND_LINKS in kubefn's environment gives it.
    let env = vec![("PIP_NO_INDEX".into(), "1".into()), ("PIP_FIND_LINKS".into(), wheels.display().to_string())];
    let cache = cache(dir.path(), env, vec![Bind::read_only(&wheels, &wheels)]);
    let requirements = "kubefngreet==1.0\n";
    let logs = LogBuffer::new(1000);

    let installed = cache.ensure(Language::Python, requirements, &logs).await.expect("install").expect("a directory");
    assert!(installed.join("kubefngreet/__init__.py").exists());
    assert!(
        logs.snapshot()
            .iter()
            .any(|l| l.replica == INSTALL_TAG && l.text.contains("Successfully installed kubefngreet-1.0")),
        "{:?}",
        logs.snapshot()
    );

    // Twice at once and once more: one directory, reused.
    let (a, b) = tokio::join!(
        cache.ensure(Language::Python, requirements, &logs),
        cache.ensure(Language::Python, requirements, &logs)
    );
    assert_eq!(a.expect("a"), Some(installed.clone()));
    assert_eq!(b.expect("b"), Some(installed.clone()));
    let reused = logs.snapshot().iter().filter(|l| l.text.contains("already installed")).count();
    assert_eq!(reused, 2);
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("cache")).expect("cache").collect();
    assert_eq!(entries.len(), 1, "no scratch directories are left");

    // Installed files belong to root and nobody else may write them.
    for path in [installed.clone(), installed.join("kubefngreet/__init__.py")] {
        let metadata = std::fs::metadata(&path).expect("metadata");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&metadata), 0, "{}", path.display());
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o022, 0, "{}", path.display());
    }

    // The bootstrap imports from it.
    let output = std::process::Command::new("python3")
        .args(["-c", "import kubefngreet; print(kubefngreet.WORD)"])
        .env("PYTHONPATH", &installed)
        .output()
        .expect("python");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "from-a-wheel");
}

#[tokio::test]
async fn a_failing_install_says_why_and_leaves_nothing_that_looks_installed() {
    let dir = tempfile::tempdir().expect("temp");
    let cache = cache(dir.path(), vec![("PIP_NO_INDEX".into(), "1".into())], Vec::new());
    let logs = LogBuffer::new(1000);
    let error =
        cache.ensure(Language::Python, "surely-not-a-real-package-kubefn==9.9\n", &logs).await.expect_err("fails");
    let message = error.to_string();
    assert!(message.contains("installing the python dependencies failed"), "{message}");
    assert!(message.contains("surely-not-a-real-package-kubefn"), "{message}");
    assert!(!message.contains(&dir.path().display().to_string()), "no host paths: {message}");
    let finished: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .expect("cache")
        .filter_map(Result::ok)
        .filter(|e| e.path().join(DONE_MARKER).exists())
        .collect();
    assert!(finished.is_empty());
}

#[tokio::test]
async fn an_install_past_its_time_limit_is_stopped() {
    let dir = tempfile::tempdir().expect("temp");
    // A registry that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let index = format!("http://127.0.0.1:{}/simple", silent.local_addr().expect("addr").port());
    let mut cache =
        cache(dir.path(), vec![("PIP_INDEX_URL".into(), index), ("PIP_TIMEOUT".into(), "60".into())], Vec::new());
    Arc::make_mut(&mut cache.settings).timeout = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let error = cache.ensure(Language::Python, "requests==2.32.3\n", &LogBuffer::new(100)).await.expect_err("stopped");
    assert!(matches!(error, DependencyError::Timeout { seconds: 3, .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    drop(silent);
}

/// A one-package npm registry on loopback (npm reads package metadata and a tarball).
fn npm_registry(dir: &Path) -> (std::process::Child, String) {
    let root = dir.join("registry");
    let package = dir.join("package");
    std::fs::create_dir_all(root.join("tarballs")).expect("registry");
    std::fs::create_dir_all(&package).expect("package");
    std::fs::write(package.join("package.json"), r#"{"name": "greeting-lib", "version": "1.0.0", "main": "index.js", "scripts": {"postinstall": "touch /tmp/postinstall-ran && exit 1"}}"#).expect("package.json");
    std::fs::write(package.join("index.js"), "module.exports = 'from-npm';").expect("index.js");
    let tarball = root.join("tarballs/greeting-lib-1.0.0.tgz");
    let tar = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir)
        .arg("package")
        .status()
        .expect("tar");
    assert!(tar.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let metadata = format!(
        r#"{{"name": "greeting-lib", "dist-tags": {{"latest": "1.0.0"}}, "versions": {{"1.0.0": {{"name": "greeting-lib", "version": "1.0.0", "main": "index.js", "scripts": {{"postinstall": "exit 1"}}, "dist": {{"tarball": "{url}/tarballs/greeting-lib-1.0.0.tgz"}}}}}}}}"#
    );
    std::fs::write(root.join("greeting-lib"), metadata).expect("metadata");
    let server = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("registry server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, url)
}

#[tokio::test]
async fn node_package_json_installs_into_node_modules_without_running_scripts() {
    let dir = tempfile::tempdir().expect("temp");
    let (mut registry, url) = npm_registry(dir.path());
    let cache = cache(dir.path(), vec![("npm_config_registry".into(), url)], Vec::new());
    let logs = LogBuffer::new(100);
    let installed = cache.ensure(Language::Node, r#"{"dependencies": {"greeting-lib": "1.0.0"}}"#, &logs).await;
    let _ = registry.kill();
    let installed = installed.unwrap_or_else(|e| panic!("install: {e}: {:?}", logs.snapshot())).expect("dir");
    assert!(installed.ends_with("node_modules"));
    let output = std::process::Command::new("node")
        .args(["-e", "console.log(require('greeting-lib'))"])
        .env("NODE_PATH", &installed)
        .output()
        .expect("node");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "from-npm");
}

#[tokio::test]
async fn nothing_declared_means_nothing_installed() {
    let dir = tempfile::tempdir().expect("temp");
    let cache = cache(dir.path(), Vec::new(), Vec::new());
    assert_eq!(cache.ensure(Language::Python, "  \n", &LogBuffer::new(10)).await.expect("ok"), None);
    assert!(!dir.path().join("cache").exists());
}

#[test]
fn keys_depend_on_runtime_and_content() {
    assert_eq!(cache_key(Language::Python, "a"), cache_key(Language::Python, "a"));
    assert_ne!(cache_key(Language::Python, "a"), cache_key(Language::Python, "b"));
    assert_ne!(cache_key(Language::Python, "a"), cache_key(Language::Node, "a"));
    assert!(cache_key(Language::Node, "x").starts_with("node-"));
}

/// Just enough of the zip format (stored, no compression) to write a wheel.
struct ZipWriter<W: Write> {
    out: W,
    offset: u32,
    central: Vec<u8>,
    count: u16,
}

impl<W: Write> ZipWriter<W> {
    fn new(out: W) -> Self {
        ZipWriter { out, offset: 0, central: Vec::new(), count: 0 }
    }

    fn add(&mut self, name: &str, content: &str) {
        let (name, data) = (name.as_bytes(), content.as_bytes());
        let crc = crc32(data);
        let size = u32::try_from(data.len()).expect("small");
        let name_len = u16::try_from(name.len()).expect("short");
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&name_len.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name);
        self.out.write_all(&local).expect("write");
        self.out.write_all(data).expect("write");
        self.central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        self.central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        self.central.extend_from_slice(&crc.to_le_bytes());
        self.central.extend_from_slice(&size.to_le_bytes());
        self.central.extend_from_slice(&size.to_le_bytes());
        self.central.extend_from_slice(&name_len.to_le_bytes());
        self.central.extend_from_slice(&[0; 12]);
        self.central.extend_from_slice(&self.offset.to_le_bytes());
        self.central.extend_from_slice(name);
        self.offset += u32::try_from(local.len()).expect("small") + size;
        self.count += 1;
    }

    fn finish(mut self) {
        let central_size = u32::try_from(self.central.len()).expect("small");
        self.out.write_all(&self.central).expect("write");
        let mut end = Vec::new();
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0, 0, 0, 0]);
        end.extend_from_slice(&self.count.to_le_bytes());
        end.extend_from_slice(&self.count.to_le_bytes());
        end.extend_from_slice(&central_size.to_le_bytes());
        end.extend_from_slice(&self.offset.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&end).expect("write");
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
