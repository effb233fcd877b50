//! `kubefn fn …`: register and edit functions from source files, deploy and wait for your
//! instance, invoke it with standard input as the body, follow its logs, and change it.

use super::client::{ApiClient, escape};
use super::logs::{last_log_lines, print_logs};
use super::{CliError, Output, print_json, print_table};
use crate::platform::model::{FunctionSummary, InstanceInfo, InstanceState, UserInfo};
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Value, json};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `kubefn fn …`.
#[derive(Debug, Subcommand)]
pub enum FnCommand {
    /// List the functions you may see.
    Ls,
    /// Show a function: its current version, settings and versions.
    Get { name: String },
    /// Register a function from a source file (the runtime follows from .py, .js, .cjs or .mjs).
    Register(SourceArgs),
    /// Store a new version from a source file; settings you leave out stay as they are.
    Edit(SourceArgs),
    /// Deploy your instance of a function.
    Deploy {
        name: String,
        /// Show progress until it is Ready, or its failure with the last log lines.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Call an instance with standard input as the body and print its answer.
    Invoke {
        name: String,
        /// Whose instance (default: yours).
        #[arg(long)]
        user: Option<String>,
        /// The HTTP method.
        #[arg(long, short = 'X', default_value = "POST")]
        method: String,
        /// The path the function sees, with its query string.
        #[arg(long, default_value = "")]
        path: String,
        /// A request header, as NAME:VALUE (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Print your instance's logs.
    Logs {
        name: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
    },
    /// Set your instance's replica count.
    Scale { name: String, replicas: u32 },
    /// Pause your instance (no replicas, settings kept).
    Pause { name: String },
    /// Resume your paused instance.
    Resume { name: String },
    /// Make an earlier version of a function current again.
    Rollback { name: String, version: u32 },
    /// Delete your instance of a function.
    Undeploy { name: String },
    /// Unregister a function (refused while instances of it exist).
    Delete { name: String },
}

/// A function's source and the settings `register` and `edit` take.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The source file (`-`: standard input); none for an image function.
    pub file: Option<PathBuf>,
    /// The function's name; default: the file's name without its extension.
    #[arg(long)]
    pub name: Option<String>,
    /// python, node or image; default: from the file's extension.
    #[arg(long)]
    pub runtime: Option<String>,
    /// The entry point; default: detected by the bootstrap.
    #[arg(long)]
    pub handler: Option<String>,
    /// A container image (for `--runtime image`).
    #[arg(long)]
    pub image: Option<String>,
    /// A requirements.txt or package.json file.
    #[arg(long)]
    pub requirements: Option<PathBuf>,
    /// An environment variable as NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// public or private.
    #[arg(long)]
    pub visibility: Option<String>,
    /// A secret of yours the function reads, as NAME, or NAME=ENV to get it as a variable too
    /// (repeatable; replaces the list).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Image functions: the secret holding the registry credentials to pull the image with.
    #[arg(long)]
    pub registry_secret: Option<String>,
}

/// Runs one `kubefn fn` command as `user` (empty: ask kubefn who the token is).
pub async fn run(api: &ApiClient, user: &str, output: Output, command: FnCommand) -> Result<(), CliError> {
    match command {
        FnCommand::Ls => {
            let functions: Vec<FunctionSummary> = api.json(Method::GET, "/functions", None::<&()>).await?;
            match output {
                Output::Json => print_json(&functions),
                Output::Text => print_table(
                    &["NAME", "OWNER", "RUNTIME", "VISIBILITY", "VERSION"],
                    functions.iter().map(|f| {
                        let runtime: &str = f.runtime.into();
                        let visibility: &str = f.visibility.into();
                        vec![f.name.clone(), f.owner.clone(), runtime.into(), visibility.into(), f.version.to_string()]
                    }),
                ),
            }
        }
        FnCommand::Get { name } => {
            let detail: Value = api.json(Method::GET, &function_path(&name), None::<&()>).await?;
            match output {
                Output::Json => print_json(&detail),
                Output::Text => {
                    println!(
                        "{} by {}, version {} of {}",
                        detail["name"], detail["owner"], detail["version"], detail["latest_version"]
                    );
                    print_json(&detail["spec"]);
                }
            }
        }
        FnCommand::Register(args) => {
            let spec = args.spec(json!({}))?;
            let detail: Value = api.json(Method::POST, "/functions", Some(&spec)).await?;
            report(
                output,
                &detail,
                &format!("Registered {} (version 1).", detail["name"].as_str().unwrap_or_default()),
            );
        }
        FnCommand::Edit(args) => {
            let name =
                args.name.clone().or_else(|| args.file_stem()).ok_or_else(|| {
                    CliError::usage("name the function with --name (or a source file named after it)")
                })?;
            let current: Value = api.json(Method::GET, &function_path(&name), None::<&()>).await?;
            let spec = args.spec(current["spec"].clone())?;
            let detail: Value = api.json(Method::PUT, &function_path(&name), Some(&spec)).await?;
            report(output, &detail, &format!("Stored version {} of {name}.", detail["version"]));
        }
        FnCommand::Deploy { name, wait, timeout } => {
            let instance: InstanceInfo =
                api.json(Method::POST, &format!("{}/deploy", function_path(&name)), None::<&()>).await?;
            let instance = if wait { wait_ready(api, instance, Duration::from_secs(timeout)).await? } else { instance };
            let gateway = format!("{}{}", api.base(), instance.urls.gateway);
            report(output, &instance, &format!("{} is {:?}: {gateway}", instance.id, instance.state));
        }
        FnCommand::Invoke { name, user: whose, method, path, headers } => {
            let whose = match whose {
                Some(whose) => whose,
                None => me(api, user).await?,
            };
            invoke(api, output, &whose, &name, &method, &path, &headers).await?;
        }
        FnCommand::Logs { name, follow } => {
            let instance = my_instance(api, user, &name).await?;
            print_logs(api, output, &instance.id, follow).await?;
        }
        FnCommand::Scale { name, replicas } => {
            let id = my_instance(api, user, &name).await?.id;
            let body = json!({"replicas": replicas});
            let instance: Value = api.json(Method::POST, &format!("/instances/{id}/scale"), Some(&body)).await?;
            report(output, &instance, &format!("{name}: {replicas} replicas asked for."));
        }
        FnCommand::Pause { name } => change(api, user, output, &name, "pause", "Paused").await?,
        FnCommand::Resume { name } => change(api, user, output, &name, "resume", "Resumed").await?,
        FnCommand::Rollback { name, version } => {
            let body = json!({"version": version});
            let detail: Value =
                api.json(Method::POST, &format!("{}/rollback", function_path(&name)), Some(&body)).await?;
            report(output, &detail, &format!("{name} is at version {version} again."));
        }
        FnCommand::Undeploy { name } => {
            let answer = api.rest(Method::DELETE, &format!("{}/deploy", function_path(&name)), None::<&()>).await?;
            // 202: its replicas are still stopping. Wait for them, so that what comes next
            // (`fn delete`, a new deploy) finds the instance gone.
            if answer.status.as_u16() == 202 {
                let instance: InstanceInfo = answer.decode("the undeploy")?;
                wait_gone(api, &instance.id, Duration::from_secs(120)).await?;
            }
            if output == Output::Text {
                eprintln!("Your instance of {name} is deleted.");
            }
        }
        FnCommand::Delete { name } => {
            api.rest(Method::DELETE, &function_path(&name), None::<&()>).await?;
            if output == Output::Text {
                eprintln!("Unregistered {name}.");
            }
        }
    }
    Ok(())
}

/// The REST path of a function, its name escaped.
fn function_path(name: &str) -> String {
    format!("/functions/{}", escape(name))
}

/// Prints an answer as JSON, or a line for people.
fn report(output: Output, value: &impl serde::Serialize, line: &str) {
    match output {
        Output::Json => print_json(value),
        Output::Text => println!("{line}"),
    }
}

impl SourceArgs {
    fn file_stem(&self) -> Option<String> {
        self.file.as_ref().filter(|f| f.as_os_str() != "-")?.file_stem().map(|s| s.to_string_lossy().into_owned())
    }

    /// `base` (the current spec, or `{}`) with what the arguments give.
    pub(super) fn spec(&self, mut base: Value) -> Result<Value, CliError> {
        let fields =
            base.as_object_mut().ok_or_else(|| CliError::usage("kubefn answered a function without a spec"))?;
        if let Some(file) = &self.file {
            fields.insert("source".into(), Value::String(read_text(file)?));
            if self.runtime.is_none() && !fields.contains_key("runtime") {
                let extension = file.extension().and_then(|e| e.to_str()).unwrap_or_default();
                let runtime = match extension {
                    "py" => "python",
                    "js" | "cjs" | "mjs" => "node",
                    _ => {
                        return Err(CliError::usage(format!(
                            "cannot tell the runtime of {} from its extension: name it .py or .js, or give --runtime",
                            file.display()
                        )));
                    }
                };
                fields.insert("runtime".into(), runtime.into());
            }
        }
        if let Some(name) = self.name.clone().or_else(|| self.file_stem()) {
            fields.insert("name".into(), name.into());
        }
        for (key, value) in [
            ("runtime", &self.runtime),
            ("handler", &self.handler),
            ("image", &self.image),
            ("visibility", &self.visibility),
            ("registry_secret", &self.registry_secret),
        ] {
            if let Some(value) = value {
                fields.insert(key.into(), value.clone().into());
            }
        }
        if let Some(file) = &self.requirements {
            fields.insert("requirements".into(), read_text(file)?.into());
        }
        if !self.env.is_empty() {
            let env = fields.entry("env").or_insert_with(|| json!({}));
            for pair in &self.env {
                let (key, value) =
                    pair.split_once('=').ok_or_else(|| CliError::usage(format!("--env {pair:?}: give NAME=VALUE")))?;
                env[key] = value.into();
            }
        }
        if !self.secrets.is_empty() {
            let secrets: Vec<Value> = self
                .secrets
                .iter()
                .map(|secret| match secret.split_once('=') {
                    Some((name, env)) => json!({"name": name, "env": env}),
                    None => json!({"name": secret}),
                })
                .collect();
            fields.insert("secrets".into(), secrets.into());
        }
        if !fields.contains_key("name") {
            return Err(CliError::usage("name the function with --name (or give a source file named after it)"));
        }
        Ok(base)
    }
}

/// A text file's contents, `-` for standard input.
fn read_text(path: &PathBuf) -> Result<String, CliError> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Local { what: "cannot read standard input".into(), source })?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|source| CliError::Local { what: format!("cannot read {}", path.display()), source })
}

/// The caller's user name: the stored login's, or kubefn's answer for the token.
async fn me(api: &ApiClient, user: &str) -> Result<String, CliError> {
    if !user.is_empty() {
        return Ok(user.to_string());
    }
    let me: UserInfo = api.json(Method::GET, "/me", None::<&()>).await?;
    Ok(me.name)
}

/// The caller's instance of `function`.
async fn my_instance(api: &ApiClient, user: &str, function: &str) -> Result<InstanceInfo, CliError> {
    let user = me(api, user).await?;
    let instances: Vec<InstanceInfo> = api.json(Method::GET, "/instances", None::<&()>).await?;
    instances.into_iter().find(|i| i.function == function && i.user == user).ok_or_else(|| {
        CliError::Api(Box::new(crate::api::ApiError::new(
            404,
            format!("you have no instance of {function}; deploy one with kubefn fn deploy {function}"),
        )))
    })
}

/// Pauses or resumes the caller's instance.
async fn change(
    api: &ApiClient,
    user: &str,
    output: Output,
    name: &str,
    action: &str,
    done: &str,
) -> Result<(), CliError> {
    let id = my_instance(api, user, name).await?.id;
    let instance: Value = api.json(Method::POST, &format!("/instances/{id}/{action}"), None::<&()>).await?;
    report(output, &instance, &format!("{done} your instance of {name}."));
    Ok(())
}

/// Polls the instance until it is Ready, printing each change on stderr; its failure comes
/// with the last lines of its log.
async fn wait_ready(api: &ApiClient, mut instance: InstanceInfo, timeout: Duration) -> Result<InstanceInfo, CliError> {
    let started = Instant::now();
    let mut shown = String::new();
    loop {
        let line = format!(
            "{:?}: {}/{} replicas ready{}",
            instance.state,
            instance.replicas.ready,
            instance.replicas.desired,
            if instance.message.is_empty() { String::new() } else { format!(" ({})", instance.message) }
        );
        if line != shown {
            eprintln!("{} {line}", instance.id);
            shown = line;
        }
        match instance.state {
            InstanceState::Ready => return Ok(instance),
            InstanceState::Failed => {
                let lines = last_log_lines(api, &instance.id, 10).await.unwrap_or_default();
                return Err(CliError::Function(format!(
                    "the deploy of {} failed: {}{}",
                    instance.function,
                    instance.message,
                    if lines.is_empty() { String::new() } else { format!("\nlast log lines:\n{}", lines.join("\n")) }
                )));
            }
            _ if started.elapsed() > timeout => {
                return Err(CliError::Function(format!(
                    "{} is still {:?} after {} s; kubefn fn logs {} shows why",
                    instance.id,
                    instance.state,
                    timeout.as_secs(),
                    instance.function
                )));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        instance = api.json(Method::GET, &format!("/instances/{}", escape(&instance.id)), None::<&()>).await?;
    }
}

/// Polls until the instance is gone (404).
async fn wait_gone(api: &ApiClient, id: &str, timeout: Duration) -> Result<(), CliError> {
    let started = Instant::now();
    loop {
        match api.rest(Method::GET, &format!("/instances/{}", escape(id)), None::<&()>).await {
            Err(CliError::Api(error)) if error.status == 404 => return Ok(()),
            Err(error) => return Err(error),
            Ok(_) if started.elapsed() > timeout => {
                return Err(CliError::Function(format!("{id} is still being deleted after {} s", timeout.as_secs())));
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Calls `/fn/{user}/{name}/{path}` with standard input as the body and prints the answer; an
/// error status is exit code 4 (the function's) or the API's error (kubefn's refusal).
async fn invoke(
    api: &ApiClient,
    output: Output,
    user: &str,
    name: &str,
    method: &str,
    path: &str,
    headers: &[String],
) -> Result<(), CliError> {
    let method: Method =
        method.parse().map_err(|_| CliError::usage(format!("--method {method:?} is not an HTTP method")))?;
    let mut body = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|source| CliError::Local { what: "cannot read standard input".into(), source })?;
    }
    let mut extra = Vec::new();
    let mut content_type = "application/octet-stream".to_string();
    for header in headers {
        let (key, value) =
            header.split_once(':').ok_or_else(|| CliError::usage(format!("--header {header:?}: give NAME:VALUE")))?;
        if key.trim().eq_ignore_ascii_case("content-type") {
            content_type = value.trim().to_string();
        } else {
            extra.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    let target = format!("/fn/{}/{}/{}", escape(user), escape(name), path.trim_start_matches('/'));
    let answer = api.call(method, &target, Some((&content_type, body)), &extra).await?;
    let status = answer.status.as_u16();
    // kubefn's own refusals (no such instance, not allowed, over a limit) are its JSON errors
    // and carry the status they are answered with; anything else is the function's answer.
    if let Ok(error) = serde_json::from_slice::<crate::api::ApiError>(&answer.body)
        && error.status == status
        && status >= 400
    {
        return Err(CliError::Api(Box::new(error)));
    }
    match output {
        Output::Json => print_json(&json!({
            "status": status,
            "headers": answer.headers.iter().map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or_default().to_string()))).collect::<serde_json::Map<_, _>>(),
            "body": String::from_utf8_lossy(&answer.body),
        })),
        Output::Text => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&answer.body).and_then(|()| stdout.flush());
        }
    }
    if status >= 400 {
        return Err(CliError::Function(format!("{name} answered HTTP {status}")));
    }
    Ok(())
}
