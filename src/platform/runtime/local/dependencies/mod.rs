//! Declared dependencies, installed once per content and reused: requirements.txt with
//! `pip install --target`, package.json with `npm install --ignore-scripts`. Each distinct
//! (runtime, text) pair gets one directory under the cache, named by its SHA-256, filled in a
//! scratch directory and renamed into place only when the install succeeded, so a crash never
//! leaves half an install that looks finished. The install's output goes to the instance's
//! logs, tagged `install`.
//!
//! Installers run in the [sandbox](super::sandbox) like function code (a package's build step
//! is code too), with a time limit, a clean environment and the host network (they need the
//! registries). They see only their scratch directory; once finished it is taken back (owned by
//! root, read-only to everyone else), so no function can change a dependency another uses.
//! What may be declared at all is checked at registration
//! ([`crate::platform::validation`]): no installer options, local paths or URLs.

use super::cgroups::Limits;
use super::launch::Launcher;
use super::logs::{LogBuffer, Stream};
use super::sandbox::{Bind, Confined, Network, Program, inside};
use crate::platform::model::Language;
use crate::platform::model::Named;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The log tag of install output.
pub const INSTALL_TAG: &str = "install";
const DONE_MARKER: &str = ".kubefn-installed";

/// Why dependencies could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum DependencyError {
    /// The installer ran and failed.
    #[error(
        "installing the {runtime} dependencies failed ({status}); fix the requirements. Last output:\n{last_output}"
    )]
    Install {
        /// `python` or `node`.
        runtime: &'static str,
        /// How the installer exited.
        status: String,
        /// Its last lines of output.
        last_output: String,
    },
    /// The installer ran past its time limit.
    #[error(
        "installing the {runtime} dependencies took longer than {seconds} s and was stopped; declare fewer or smaller packages"
    )]
    Timeout {
        /// `python` or `node`.
        runtime: &'static str,
        /// The limit.
        seconds: u64,
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
    #[error("cannot prepare the dependency cache (see kubefn's log for the directory)")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How installers run: the interpreter, settings an admin gave kubefn (a package index, a
/// local wheel directory) and their limits.
#[derive(Clone, Debug)]
pub struct InstallerSettings {
    /// The Python interpreter whose pip installs (the one replicas run).
    pub python: PathBuf,
    /// npm.
    pub npm: PathBuf,
    /// How long one install may take.
    pub timeout: Duration,
    /// Extra environment for installers (e.g. `PIP_INDEX_URL`, `npm_config_registry`).
    pub env: Vec<(String, String)>,
    /// Directories installers may read (e.g. a `PIP_FIND_LINKS` directory).
    pub binds: Vec<Bind>,
    /// The limits of an installer process.
    pub limits: Limits,
}

impl InstallerSettings {
    /// Installer variables an admin may set in kubefn's environment: package indexes and
    /// registries, passed to installers (local directories among them bound read-only).
    pub const PASSED_VARIABLES: &'static [&'static str] = &[
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS",
        "PIP_NO_INDEX",
        "PIP_TRUSTED_HOST",
        "npm_config_registry",
    ];

    /// The admin's installer variables ([`Self::PASSED_VARIABLES`]) set in kubefn's environment;
    /// the Kubernetes runtime passes them to the dependency installs of pods as well.
    pub fn passed_environment() -> Vec<(String, String)> {
        Self::PASSED_VARIABLES
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_string(), value)))
            .collect()
    }

    /// Settings for `python`, with the admin's installer variables from kubefn's environment.
    pub fn from_environment(python: PathBuf) -> InstallerSettings {
        let env = Self::passed_environment();
        let binds = env
            .iter()
            .filter(|(name, _)| name == "PIP_FIND_LINKS")
            .flat_map(|(_, value)| value.split_whitespace().map(PathBuf::from).collect::<Vec<_>>())
            .filter(|path| path.is_absolute() && path.is_dir())
            .map(|path| Bind::read_only(path.clone(), path))
            .collect();
        InstallerSettings {
            python,
            npm: PathBuf::from("npm"),
            timeout: Duration::from_secs(300),
            env,
            binds,
            limits: Limits { cpu_millis: None, memory_bytes: Some(1 << 30), pids: Some(512) },
        }
    }
}

/// The dependency cache; cheap to clone.
#[derive(Clone, Debug)]
pub struct DependencyCache {
    root: PathBuf,
    launcher: Arc<Launcher>,
    settings: Arc<InstallerSettings>,
    in_progress: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl DependencyCache {
    /// A cache under `root` (created when first needed) whose installers `launcher` confines.
    pub fn new(root: impl Into<PathBuf>, launcher: Arc<Launcher>, settings: InstallerSettings) -> DependencyCache {
        DependencyCache { root: root.into(), launcher, settings: Arc::new(settings), in_progress: Arc::default() }
    }

    /// The directory to put on the bootstrap's `KUBEFN_DEPS`, installing first if needed;
    /// `None` when nothing is declared or the runtime takes no dependencies.
    pub async fn ensure(
        &self,
        runtime: Language,
        requirements: &str,
        logs: &LogBuffer,
    ) -> Result<Option<PathBuf>, DependencyError> {
        if requirements.trim().is_empty() || runtime == Language::Image {
            return Ok(None);
        }
        let key = cache_key(runtime, requirements);
        let dir = self.root.join(&key);
        let deps = deps_dir(runtime, &dir);
        // One install per key at a time; others wait and then find it done.
        let lock = {
            let mut in_progress = self.in_progress.lock();
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
        let installed = self.install(runtime, requirements, &scratch, logs).await;
        // The installer's temporary files and cache go first, so taking back does not walk them.
        for leftover in [".tmp", ".npm-cache"] {
            let _ = tokio::fs::remove_dir_all(scratch.join(leftover)).await;
        }
        // Whatever happened, nothing in the scratch directory stays writable by function code.
        let taken_back = self.launcher.isolation().take_back(&scratch).map_err(cache_error(&scratch));
        installed?;
        taken_back?;
        tokio::fs::write(scratch.join(DONE_MARKER), b"").await.map_err(cache_error(&scratch))?;
        tokio::fs::rename(&scratch, &dir).await.map_err(cache_error(&dir))?;
        logs.push(INSTALL_TAG, Stream::System, format!("dependencies {key} installed"));
        Ok(Some(deps))
    }
}

/// `python-<hash>` / `node-<hash>`: the same text installs once, whichever function declares it.
fn cache_key(runtime: Language, requirements: &str) -> String {
    let digest = Sha256::digest(format!("{}\0{requirements}", runtime.as_str()).as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", runtime.as_str())
}

fn deps_dir(runtime: Language, dir: &Path) -> PathBuf {
    match runtime {
        Language::Node => dir.join("node_modules"),
        Language::Python | Language::Image => dir.to_path_buf(),
    }
}

impl DependencyCache {
    /// Runs the installer in the sandbox, writing into `scratch` only.
    async fn install(
        &self,
        runtime: Language,
        requirements: &str,
        scratch: &Path,
        logs: &LogBuffer,
    ) -> Result<(), DependencyError> {
        let started_at = chrono::Utc::now();
        let settings = &self.settings;
        let isolation = self.launcher.isolation();
        let target = Bind::writable(scratch, inside::INSTALL);
        let seen = isolation.path(&target);
        let (program, args, display): (&Path, Vec<String>, &str) = match runtime {
            Language::Python => {
                write_file(&scratch.join("requirements.txt"), requirements).await?;
                let args =
                    ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-cache-dir", "--target"]
                        .map(String::from)
                        .into_iter()
                        .chain([
                            seen.display().to_string(),
                            "-r".into(),
                            seen.join("requirements.txt").display().to_string(),
                        ])
                        .collect();
                (&settings.python, args, "pip")
            }
            Language::Node => {
                write_file(&scratch.join("package.json"), requirements).await?;
                // No package's install scripts run: dependencies are files, not programs.
                let args = [
                    "install",
                    "--omit=dev",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--no-package-lock",
                    "--cache",
                ]
                .map(String::from)
                .into_iter()
                .chain([seen.join(".npm-cache").display().to_string()])
                .collect();
                (&settings.npm, args, "npm")
            }
            Language::Image => return Ok(()),
        };
        let cache_error = |source| DependencyError::Cache { path: scratch.to_path_buf(), source };
        let scratch_tmp = scratch.join(".tmp");
        tokio::fs::create_dir_all(&scratch_tmp).await.map_err(cache_error)?;
        isolation.hand_over(scratch).map_err(cache_error)?;
        isolation.hand_over(&scratch_tmp).map_err(cache_error)?;
        let mut env = self.launcher.environment(&settings.env);
        // Packages unpack in the scratch directory, not in the small private /tmp.
        env.push(("TMPDIR".into(), seen.join(".tmp").display().to_string()));
        let mut binds = settings.binds.clone();
        binds.push(target);
        let cgroup = match self.launcher.cgroups() {
            Some(cgroups) => Some(
                super::launch::create_cgroup(cgroups, &settings.limits)
                    .map_err(|source| DependencyError::Spawn { program: display.into(), source })?,
            ),
            None => None,
        };
        let mut child = isolation
            .spawn(&Confined {
                program: Program { path: program, args: &args, env: &env, binds: &binds, files: &[], workdir: &seen },
                network: Network::Host,
                cgroup: cgroup.as_ref(),
            })
            .map_err(|source| DependencyError::Spawn { program: display.into(), source })?;
        let pipes: Vec<_> = [
            child
                .stdout
                .take()
                .map(|pipe| tokio::spawn(logs.clone().collect(pipe, INSTALL_TAG.into(), Stream::Stdout))),
            child
                .stderr
                .take()
                .map(|pipe| tokio::spawn(logs.clone().collect(pipe, INSTALL_TAG.into(), Stream::Stderr))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let status = match tokio::time::timeout(settings.timeout, child.wait()).await {
            Ok(status) => status.map_err(|source| DependencyError::Spawn { program: display.into(), source })?,
            Err(_) => {
                if let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                    super::supervisor::signal_group(group, libc::SIGKILL);
                }
                let _ = child.wait().await;
                if let Some(cgroup) = &cgroup {
                    cgroup.kill_all();
                }
                return Err(DependencyError::Timeout {
                    runtime: runtime.as_str(),
                    seconds: settings.timeout.as_secs(),
                });
            }
        };
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
        Err(DependencyError::Install {
            runtime: runtime.as_str(),
            status: status.to_string(),
            last_output: last.join("\n"),
        })
    }
}

async fn write_file(path: &Path, text: &str) -> Result<(), DependencyError> {
    tokio::fs::write(path, text).await.map_err(|source| DependencyError::Cache { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests;
