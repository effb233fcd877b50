//! Rolling a version out: preparing a replica's launch (dependencies, source, sandbox), starting
//! the new replicas beside the serving ones, switching the node port over once they are ready.

use super::*;

/// Starts the replicas of a new version next to the serving ones and switches over once all
/// are ready; records the failure and leaves the serving ones alone when they cannot start.
pub(super) async fn rollout(
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    spec: InstanceSpec,
    fingerprint: String,
    pending: Arc<Mutex<Option<Arc<ReplicaSet>>>>,
) {
    let version = spec.version;
    let fail = |reason: String| {
        let mut state = slot.state.lock();
        if state.fingerprint != fingerprint {
            return;
        }
        slot.logs.push("kubefn", Stream::System, format!("version {version} cannot start: {reason}"));
        let still = state.active.as_ref().map(|a| format!("; version {} keeps serving", a.version)).unwrap_or_default();
        state.failure = Some(format!("version {version} cannot start: {reason}{still}"));
        state.rollout = None;
        state.event("Warning", "RolloutFailed", format!("version {version} cannot start: {reason}"));
    };
    let launch = match prepare_launch(&inner, &slot, &spec).await {
        Ok(launch) => launch,
        Err(reason) => return fail(reason),
    };
    let set = {
        let state = slot.state.lock();
        let set = Arc::new(ReplicaSet::start(
            launch,
            inner.config.restart.clone(),
            slot.logs.clone(),
            state.replicas_wanted(),
        ));
        *pending.lock() = Some(set.clone());
        set
    };
    let mut ready_changes = set.endpoints();
    loop {
        let status = set.status();
        if let Some(reason) = status.failure() {
            let reason = reason.to_string();
            pending.lock().take();
            set.shutdown().await;
            return fail(reason);
        }
        if status.ready >= status.desired {
            break;
        }
        // Woken by a replica becoming ready; the timeout catches failures and scaling.
        let _ = tokio::time::timeout(Duration::from_millis(50), ready_changes.changed()).await;
    }
    let old = {
        let mut state = slot.state.lock();
        if state.fingerprint != fingerprint {
            // Superseded while starting; the newer rollout stops this set.
            return;
        }
        pending.lock().take();
        let feed = tokio::spawn(feed_endpoints(set.endpoints(), slot.endpoints.clone()));
        let old = state.active.replace(Active { version, set: set.clone(), feed }).map(|old| old.set.clone());
        state.draining.extend(old.clone());
        state.rollout = None;
        // Replicas asked for while it started.
        set.scale(state.replicas_wanted());
        let ready = set.status().ready;
        state.event("Normal", "Deployed", format!("version {version} serving with {ready} ready replica(s)"));
        old
    };
    if let Some(old) = old {
        tokio::time::sleep(inner.config.drain).await;
        old.shutdown().await;
        slot.state.lock().draining.retain(|set| !Arc::ptr_eq(set, &old));
    }
}

/// Installs dependencies and writes the version's source; returns how to start a replica.
/// Messages never name kubefn's own directories: they reach the function's owner.
pub(super) async fn prepare_launch(inner: &Inner, slot: &Slot, spec: &InstanceSpec) -> Result<LaunchSpec, String> {
    let function = &spec.spec;
    let deps = inner
        .dependencies
        .ensure(function.runtime, &function.requirements, &slot.logs)
        .await
        .map_err(|e| crate::platform::error_chain(&e))?;
    let config = &inner.config;
    let (program, bootstrap, file) = match function.runtime {
        Language::Python => (&config.python, bootstrap::PYTHON.file, bootstrap::PYTHON.function_file),
        Language::Node => (&config.node, bootstrap::NODE.file, bootstrap::NODE.function_file),
        Language::Image => return Err("image functions need the kubernetes runtime".into()),
    };
    let dir = config.root.join("instances").join(&slot.id).join(format!("v{}", spec.version));
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        let temporary = dir.join(format!(".{file}.tmp"));
        tokio::fs::write(&temporary, &function.source).await?;
        tokio::fs::rename(&temporary, dir.join(file)).await
    };
    if let Err(error) = write.await {
        tracing::error!(instance = %slot.id, dir = %dir.display(), %error, "cannot write a function's source");
        return Err("kubefn cannot write the function's files (its data directory is full or not writable); an admin finds the details in kubefn's log".into());
    }
    let launcher = &inner.launcher;
    let function_bind = Bind::read_only(&dir, inside::FUNCTION);
    let bootstrap_bind = Bind::read_only(config.root.join("bootstrap"), inside::BOOTSTRAP);
    let function_dir = launcher.path(&function_bind);
    let mut binds = vec![bootstrap_bind.clone(), function_bind];
    let deps_seen = deps.map(|deps| {
        let bind = Bind::read_only(deps, inside::DEPS);
        let seen = launcher.path(&bind);
        binds.push(bind);
        seen
    });
    let source = function_dir.join(file);
    let mut env: Vec<(String, String)> = function.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend([
        ("KUBEFN_SOURCE".to_string(), source.display().to_string()),
        ("KUBEFN_HANDLER".to_string(), function.handler.clone().unwrap_or_default()),
        ("KUBEFN_FUNCTION_NAME".to_string(), function.name.clone()),
        ("KUBEFN_MEMORY_LIMIT".to_string(), function.resources.memory_limit.clone()),
        ("KUBEFN_TIMEOUT".to_string(), function.timeout_s.to_string()),
    ]);
    // The instance's user's secrets: files for each replica alone, and the variables asked for
    // (the platform checked those values are text).
    let files: Vec<DataFile> = spec
        .secrets
        .iter()
        .map(|secret| DataFile {
            inside: Path::new(crate::platform::runtime::SECRETS_DIR).join(&secret.name),
            contents: secret.value.as_slice().into(),
        })
        .collect();
    env.extend(
        spec.secrets
            .iter()
            .filter_map(|secret| Some((secret.env.clone()?, String::from_utf8_lossy(&secret.value).into_owned()))),
    );
    // A warm process sees only the bootstraps and its own staging directory, so functions with
    // dependencies or secrets start cold (their dependency directory and secret files are made
    // at start).
    let warm = inner.pool.clone().filter(|_| deps_seen.is_none() && files.is_empty()).map(|pool| WarmStart {
        pool,
        language: function.runtime,
        // `source` and `dir` are the warm process's own staging directory, filled in when one
        // is taken.
        job: Specialization {
            source: file.to_string(),
            handler: function.handler.clone().unwrap_or_default(),
            deps: None,
            env: env.iter().cloned().collect(),
            dir: String::new(),
            timeout_s: function.timeout_s,
        },
        source_dir: dir.clone(),
    });
    if let Some(deps) = &deps_seen {
        env.push(("KUBEFN_DEPS".to_string(), deps.display().to_string()));
    }
    let mut args = Vec::new();
    if function.runtime == Language::Node
        && let Some(limit) = parse_memory_bytes(&function.resources.memory_limit)
    {
        args.push(bootstrap::node_heap_limit_flag(limit));
    }
    args.push(launcher.path(&bootstrap_bind).join(bootstrap).display().to_string());
    Ok(LaunchSpec {
        launcher: launcher.clone(),
        program: program.clone(),
        args,
        env,
        binds,
        files,
        dir: function_dir,
        limits: cgroup_limits(&function.resources, config.pids_limit),
        name_prefix: format!("v{}-", spec.version),
        pid_dir: Some(config.root.join("pids")),
        warm,
    })
}

/// Copies the ready replicas of one set to the node port until the set is replaced.
pub(super) async fn feed_endpoints(mut from: watch::Receiver<Vec<PathBuf>>, to: watch::Sender<Vec<PathBuf>>) {
    loop {
        let ready = from.borrow_and_update().clone();
        to.send_replace(ready);
        if from.changed().await.is_err() {
            return;
        }
    }
}

/// What decides whether replicas must be replaced: everything but replicas and pausing (a
/// replaced secret value too).
pub(super) fn fingerprint(spec: &InstanceSpec) -> String {
    let mut code = spec.spec.clone();
    code.scaling = Default::default();
    code.visibility = Default::default();
    let secrets = crate::platform::runtime::secrets_digest(&spec.secrets);
    let text = serde_json::to_string(&(spec.version, &code, secrets)).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

pub(super) fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(());
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(version: u32) -> InstanceSpec {
        let function = FunctionSpec::new("f", Language::Python, "def handle(req):\n    return req\n");
        InstanceSpec::new("i", "u", version, function)
    }

    #[test]
    fn replicas_are_replaced_for_code_and_settings_not_for_scaling_pausing_or_visibility() {
        let base = spec(1);
        let same = |changed: InstanceSpec| fingerprint(&changed) == fingerprint(&base);
        assert!(same(InstanceSpec { replicas: 4, paused: true, ..base.clone() }));
        let mut scaled = base.clone();
        scaled.spec.scaling.max = 9;
        scaled.spec.visibility = crate::platform::model::Visibility::Public;
        assert!(same(scaled));
        assert!(!same(spec(2)), "a new version");
        let mut env = base.clone();
        env.spec.env.insert("A".into(), "1".into());
        assert!(!same(env), "the environment is the process's");
        let mut source = base.clone();
        source.spec.source.push('\n');
        assert!(!same(source));
        let secret = |value: &[u8]| crate::platform::runtime::SecretValue {
            name: "db".into(),
            env: None,
            value: value.to_vec(),
        };
        let with = |value: &[u8]| InstanceSpec { secrets: vec![secret(value)], ..base.clone() };
        assert!(!same(with(b"a")), "a secret given");
        assert_ne!(fingerprint(&with(b"a")), fingerprint(&with(b"b")), "a secret's value replaced");
    }
}
