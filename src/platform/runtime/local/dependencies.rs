//! Declared dependencies, installed once per content and reused: requirements.txt with
//! `pip install --target`, package.json with `npm install`. Each distinct (runtime, text) pair
//! gets one directory under the cache, named by its SHA-256, filled in a scratch directory and
//! renamed into place only when the install succeeded, so a crash never leaves half an install
//! that looks finished. The install's output goes to the instance's logs, tagged `install`.

use super::logs::{LogBuffer, Stream};
use crate::platform::model::Runtime;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::process::Command;

/// The log tag of install output.
pub const INSTALL_TAG: &str = "install";
const DONE_MARKER: &str = ".kubefn-installed";

/// Why dependencies could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum DependencyError {
    /// The installer ran and failed.
    #[error("installing the {runtime} dependencies failed ({status}); fix the requirements. Last output:\n{last_output}")]
    Install {
        /// `python` or `node`.
        runtime: &'static str,
        /// How the installer exited.
        status: String,
        /// Its last lines of output.
        last_output: String,
    },
    /// The installer could not be started.
    #[error("cannot run {program} to install dependencies; is it installed?")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cache directory could not be written.
    #[error("cannot prepare the dependency cache at {path}")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The dependency cache; cheap to clone.
#[derive(Clone, Debug)]
pub struct DependencyCache {
    root: PathBuf,
    in_progress: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl DependencyCache {
    /// A cache under `root` (created when first needed).
    pub fn new(root: impl Into<PathBuf>) -> DependencyCache {
        DependencyCache { root: root.into(), in_progress: Arc::default() }
    }

    /// The directory to put on the bootstrap's `KUBEFN_DEPS`, installing first if needed;
    /// `None` when nothing is declared or the runtime takes no dependencies.
    pub async fn ensure(&self, runtime: Runtime, requirements: &str, logs: &LogBuffer) -> Result<Option<PathBuf>, DependencyError> {
        if requirements.trim().is_empty() || runtime == Runtime::Image {
            return Ok(None);
        }
        let key = cache_key(runtime, requirements);
        let dir = self.root.join(&key);
        let deps = deps_dir(runtime, &dir);
        // One install per key at a time; others wait and then find it done.
        let lock = {
            let mut in_progress = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
            in_progress.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if dir.join(DONE_MARKER).exists() {
            logs.push(INSTALL_TAG, Stream::System, format!("dependencies {key} already installed; reusing them"));
            return Ok(Some(deps));
        }
        let scratch = self.root.join(format!(".partial-{key}"));
        let cache_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DependencyError::Cache { path, source }
        };
        if scratch.exists() {
            tokio::fs::remove_dir_all(&scratch).await.map_err(cache_error(&scratch))?;
        }
        tokio::fs::create_dir_all(&scratch).await.map_err(cache_error(&scratch))?;
        logs.push(INSTALL_TAG, Stream::System, format!("installing {} dependencies ({key})", runtime.as_str()));
        install(runtime, requirements, &scratch, logs).await?;
        tokio::fs::write(scratch.join(DONE_MARKER), b"").await.map_err(cache_error(&scratch))?;
        tokio::fs::rename(&scratch, &dir).await.map_err(cache_error(&dir))?;
        logs.push(INSTALL_TAG, Stream::System, format!("dependencies {key} installed"));
        Ok(Some(deps))
    }
}

/// `python-<hash>` / `node-<hash>`: the same text installs once, whichever function declares it.
fn cache_key(runtime: Runtime, requirements: &str) -> String {
    let digest = Sha256::digest(format!("{}\0{requirements}", runtime.as_str()).as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", runtime.as_str())
}

fn deps_dir(runtime: Runtime, dir: &Path) -> PathBuf {
    match runtime {
        Runtime::Node => dir.join("node_modules"),
        Runtime::Python | Runtime::Image => dir.to_path_buf(),
    }
}

async fn install(runtime: Runtime, requirements: &str, scratch: &Path, logs: &LogBuffer) -> Result<(), DependencyError> {
    let started_at = chrono::Utc::now();
    let mut command = match runtime {
        Runtime::Python => {
            let file = scratch.join("requirements.txt");
            write_file(&file, requirements).await?;
            let mut command = Command::new("python3");
            command.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--target"]).arg(scratch).arg("-r").arg(&file);
            command
        }
        Runtime::Node => {
            write_file(&scratch.join("package.json"), requirements).await?;
            let mut command = Command::new("npm");
            command.args(["install", "--omit=dev", "--no-audit", "--no-fund", "--no-package-lock"]).current_dir(scratch);
            command
        }
        Runtime::Image => return Ok(()),
    };
    let program = if runtime == Runtime::Python { "python3 -m pip" } else { "npm" };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DependencyError::Spawn { program: program.into(), source })?;
    let pipes: Vec<_> = [
        child.stdout.take().map(|pipe| tokio::spawn(logs.clone().collect(pipe, INSTALL_TAG.into(), Stream::Stdout))),
        child.stderr.take().map(|pipe| tokio::spawn(logs.clone().collect(pipe, INSTALL_TAG.into(), Stream::Stderr))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let status = child.wait().await.map_err(|source| DependencyError::Spawn { program: program.into(), source })?;
    for pipe in pipes {
        let _ = pipe.await;
    }
    if status.success() {
        return Ok(());
    }
    let mut last: Vec<String> = logs.tail(INSTALL_TAG, Stream::Stderr, 8, started_at);
    if last.is_empty() {
        last = logs.tail(INSTALL_TAG, Stream::Stdout, 8, started_at);
    }
    Err(DependencyError::Install { runtime: runtime.as_str(), status: status.to_string(), last_output: last.join("\n") })
}

async fn write_file(path: &Path, text: &str) -> Result<(), DependencyError> {
    tokio::fs::write(path, text).await.map_err(|source| DependencyError::Cache { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal pure-Python wheel, so pip installs without any index.
    fn write_wheel(dir: &Path) -> PathBuf {
        let path = dir.join("kubefngreet-1.0-py3-none-any.whl");
        let file = std::fs::File::create(&path).expect("wheel");
        let mut zip = ZipWriter::new(file);
        zip.add("kubefngreet/__init__.py", "WORD = 'from-a-wheel'\n");
        zip.add("kubefngreet-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: kubefngreet\nVersion: 1.0\n");
        zip.add("kubefngreet-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: kubefn-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n");
        zip.add("kubefngreet-1.0.dist-info/RECORD", "");
        zip.finish();
        path
    }

    #[tokio::test]
    async fn python_requirements_install_once_per_content() {
        let dir = tempfile::tempdir().expect("temp");
        let wheels = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels).expect("wheels dir");
        write_wheel(&wheels);
        let requirements = format!("--no-index\n--find-links {}\nkubefngreet==1.0\n", wheels.display());
        let cache = DependencyCache::new(dir.path().join("cache"));
        let logs = LogBuffer::new(1000);

        let installed = cache.ensure(Runtime::Python, &requirements, &logs).await.expect("install").expect("a directory");
        assert!(installed.join("kubefngreet/__init__.py").exists());
        assert!(logs.snapshot().iter().any(|l| l.replica == INSTALL_TAG && l.text.contains("Successfully installed kubefngreet-1.0")));

        // Twice at once and once more: one directory, reused.
        let (a, b) = tokio::join!(cache.ensure(Runtime::Python, &requirements, &logs), cache.ensure(Runtime::Python, &requirements, &logs));
        assert_eq!(a.expect("a"), Some(installed.clone()));
        assert_eq!(b.expect("b"), Some(installed.clone()));
        let reused = logs.snapshot().iter().filter(|l| l.text.contains("already installed")).count();
        assert_eq!(reused, 2);
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("cache")).expect("cache").collect();
        assert_eq!(entries.len(), 1, "no scratch directories are left");

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
        let cache = DependencyCache::new(dir.path().join("cache"));
        let logs = LogBuffer::new(1000);
        let error = cache.ensure(Runtime::Python, "--no-index\nsurely-not-a-real-package-kubefn==9.9\n", &logs).await.expect_err("fails");
        let message = error.to_string();
        assert!(message.contains("installing the python dependencies failed"), "{message}");
        assert!(message.contains("surely-not-a-real-package-kubefn"), "{message}");
        let finished: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .expect("cache")
            .filter_map(Result::ok)
            .filter(|e| e.path().join(DONE_MARKER).exists())
            .collect();
        assert!(finished.is_empty());
    }

    #[tokio::test]
    async fn node_package_json_installs_into_node_modules() {
        let dir = tempfile::tempdir().expect("temp");
        let package = dir.path().join("greeting-lib");
        std::fs::create_dir_all(&package).expect("package dir");
        std::fs::write(package.join("package.json"), r#"{"name": "greeting-lib", "version": "1.0.0", "main": "index.js"}"#).expect("package.json");
        std::fs::write(package.join("index.js"), "module.exports = 'from-npm';").expect("index.js");
        let requirements = format!(r#"{{"dependencies": {{"greeting-lib": "file:{}"}}}}"#, package.display());
        let cache = DependencyCache::new(dir.path().join("cache"));
        let installed = cache.ensure(Runtime::Node, &requirements, &LogBuffer::new(100)).await.expect("install").expect("dir");
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
        let cache = DependencyCache::new(dir.path().join("cache"));
        assert_eq!(cache.ensure(Runtime::Python, "  \n", &LogBuffer::new(10)).await.expect("ok"), None);
        assert!(!dir.path().join("cache").exists());
    }

    #[test]
    fn keys_depend_on_runtime_and_content() {
        assert_eq!(cache_key(Runtime::Python, "a"), cache_key(Runtime::Python, "a"));
        assert_ne!(cache_key(Runtime::Python, "a"), cache_key(Runtime::Python, "b"));
        assert_ne!(cache_key(Runtime::Python, "a"), cache_key(Runtime::Node, "a"));
        assert!(cache_key(Runtime::Node, "x").starts_with("node-"));
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
}
