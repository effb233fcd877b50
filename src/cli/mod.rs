//! kubefn's command line. `kubefn` (or `kubefn serve`) runs the server; every other
//! subcommand is a client of a running kubefn's REST API and gateway, as a user at a terminal
//! or a CI job drives it: `login`, `fn …`, `secret …` and `token …`; and `migrate-db`, which
//! moves an installation's database from SQLite to PostgreSQL.
//!
//! Errors are the API's own (`kubefn: <message> [field] (HTTP status)` on stderr), and the exit
//! code says what kind of failure it was: 1 the API refused or failed, 2 bad usage (clap's own
//! code too), 3 not logged in or kubefn unreachable, 4 a function failed to deploy or answered
//! with an error status. `--output json` prints the API's JSON for scripts.

mod client;
mod credentials;
mod functions;
mod logs;
mod secrets;
#[cfg(test)]
mod tests;

use crate::api::ApiError;
use crate::api::caller::SESSION_COOKIE;
use crate::platform::model::{NewToken, TokenInfo, UserInfo};
use crate::server::Config;
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::ApiClient;
use http::Method;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

pub use functions::FnCommand;
pub use secrets::SecretCommand;

/// The command line: a subcommand, or the server's flags (`kubefn --listen …` serves).
#[derive(Debug, Parser)]
#[command(
    name = "kubefn",
    version,
    about = "Functions-as-a-Service on Kubernetes, with a web UI",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(Box<Config>),
    /// Log in to a kubefn and keep an API token for the other commands.
    Login(LoginArgs),
    /// Functions, and your instances of them.
    Fn {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: FnCommand,
    },
    /// Your secrets, which your instances read as files (and optionally as env).
    Secret {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Copy an installation's database from SQLite to PostgreSQL (stop kubefn first); then
    /// start kubefn with --database-url set to the target.
    MigrateDb(MigrateDbArgs),
    /// Your API tokens.
    Token {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// `kubefn migrate-db`: the two databases.
#[derive(Debug, Args)]
pub struct MigrateDbArgs {
    /// The SQLite database to copy, e.g. `sqlite://data/kubefn.db`.
    #[arg(long)]
    pub from: String,
    /// The PostgreSQL database to fill: it must exist and be empty (kubefn creates the tables).
    #[arg(long)]
    pub to: String,
}

/// Where the client commands send their calls and how they print answers.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The kubefn to call; default: the one `kubefn login` stored.
    #[arg(long, global = true, env = "KUBEFN_URL")]
    pub url: Option<String>,
    /// An API token to use instead of the stored one (for CI).
    #[arg(long, global = true, env = "KUBEFN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `text` for people, `json` (the API's own JSON) for scripts.
    #[arg(long, short, global = true, value_enum, default_value = "text")]
    pub output: Output,
}

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `kubefn login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The kubefn's URL.
    #[arg(long, env = "KUBEFN_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Your user name.
    #[arg(long, short)]
    pub user: String,
    /// Read the password from standard input (for scripts); otherwise it is asked for.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `kubefn token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is shown once.
    Create {
        /// What it is for, e.g. `ci`.
        name: String,
    },
    /// List your API tokens (never their secrets).
    Ls,
    /// Revoke an API token by its id.
    Rm {
        /// The token's id, from `kubefn token ls`.
        id: i64,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API refused or failed; its own message.
    #[error("{}", describe(.0))]
    Api(Box<ApiError>),
    /// The command line or a file it names is wrong.
    #[error("{0}")]
    Usage(String),
    /// No stored login and no token given.
    #[error("not logged in: run kubefn login --url URL --user NAME (or set KUBEFN_TOKEN)")]
    NotLoggedIn,
    /// kubefn did not answer.
    #[error("cannot reach kubefn at {url} ({}); is it running, and is the URL right?", crate::platform::error_chain(source.as_ref()))]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file or terminal failed.
    #[error("{what}: {source}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The function was reached but did not do what was asked (a failed deploy, an error answer).
    #[error("{0}")]
    Function(String),
    /// `kubefn migrate-db` could not open, read or fill a database.
    #[error("{}", crate::platform::error_chain(.0))]
    Database(#[source] crate::platform::store::StoreError),
}

impl CliError {
    fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage(message.into())
    }

    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Api(error) if error.status == 401 => 3,
            CliError::Api(_) => 1,
            CliError::Usage(_) | CliError::Local { .. } => 2,
            CliError::Database(_) => 1,
            CliError::NotLoggedIn | CliError::Unreachable { .. } => 3,
            CliError::Function(_) => 4,
        }
    }
}

/// An API error as one line: the message, the field at fault, the status.
pub(crate) fn describe(error: &ApiError) -> String {
    match &error.field {
        Some(field) if !field.is_empty() && !error.error.contains(field.as_str()) => {
            format!("{} [{field}] (HTTP {})", error.error, error.status)
        }
        _ => format!("{} (HTTP {})", error.error, error.status),
    }
}

/// Runs a client command; prints its error and returns the exit code.
pub async fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Serve(_) => Err(CliError::usage("serve is not a client command")),
        Command::Login(args) => login(args).await,
        Command::Fn { client, command } => match connect(&client) {
            Ok((api, user)) => functions::run(&api, &user, client.output, command).await,
            Err(error) => Err(error),
        },
        Command::Secret { client, command } => match connect(&client) {
            Ok((api, _)) => secrets::run(&api, client.output, command).await,
            Err(error) => Err(error),
        },
        Command::Token { client, command } => match connect(&client) {
            Ok((api, _)) => tokens(&api, client.output, command).await,
            Err(error) => Err(error),
        },
        Command::MigrateDb(args) => migrate_db(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubefn: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Copies a SQLite installation into an empty PostgreSQL database, creating its tables first.
async fn migrate_db(args: MigrateDbArgs) -> Result<(), CliError> {
    use crate::platform::store::Store;
    if !args.from.starts_with("sqlite:") {
        return Err(CliError::usage("--from must be a SQLite URL, e.g. sqlite://data/kubefn.db"));
    }
    // An existing file only: a mistyped path must not quietly copy a new, empty database.
    let path = args.from.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if !std::path::Path::new(path).is_file() {
        return Err(CliError::usage(format!("--from names {path}, which is not a database file")));
    }
    let source = Store::open(&args.from).await.map_err(CliError::Database)?;
    let target = Store::open(&args.to).await.map_err(CliError::Database)?;
    let copied = source.copy_into(&target).await.map_err(CliError::Database)?;
    for (table, rows) in copied {
        println!("{table:<20} {rows:>9} rows");
    }
    println!(
        "done: start kubefn with --database-url set to the PostgreSQL URL, and --secrets-key set to the key its secrets were sealed with (the old data directory's secrets.key, unless you gave one)"
    );
    Ok(())
}

/// A client from the flags, the environment or the stored login, and whose it is (empty when
/// only a token was given: the commands that need the name ask `/me`).
fn connect(args: &ClientArgs) -> Result<(ApiClient, String), CliError> {
    let stored = credentials::load()?;
    let url = args.url.clone().or_else(|| stored.as_ref().map(|c| c.url.clone()));
    let token = args.token.clone().or_else(|| stored.as_ref().map(|c| c.token.clone()));
    let (Some(url), Some(token)) = (url, token) else { return Err(CliError::NotLoggedIn) };
    let user = match (&args.token, stored) {
        (None, Some(stored)) => stored.user,
        _ => String::new(),
    };
    Ok((ApiClient::new(&url, Some(token))?, user))
}

/// Logs in with the password, creates an API token named after this machine, and stores it.
async fn login(args: LoginArgs) -> Result<(), CliError> {
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|source| CliError::Local {
            what: "cannot read the password from standard input".into(),
            source,
        })?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {}: ", args.user))
            .map_err(|source| CliError::Local { what: "cannot read the password".into(), source })?
    } else {
        return Err(CliError::usage("give the password on standard input with --password-stdin"));
    };
    let anonymous = ApiClient::new(&args.url, None)?;
    let body = serde_json::json!({"name": args.user, "password": password});
    let answer = anonymous
        .call(Method::POST, "/api/v1/login", Some(("application/json", body.to_string().into_bytes())), &[])
        .await?;
    if !answer.status.is_success() {
        return Err(client::api_error(&answer));
    }
    let user: UserInfo = answer.decode("the log-in")?;
    let cookie = answer
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            value.split(';').next().filter(|pair| pair.split_once('=').is_some_and(|(name, _)| name == SESSION_COOKIE))
        })
        .map(str::to_string)
        .ok_or_else(|| CliError::usage("kubefn answered the log-in without a session"))?;
    let host = std::fs::read_to_string("/etc/hostname").map(|name| name.trim().to_string()).unwrap_or_default();
    let name = if host.is_empty() { "kubefn CLI".to_string() } else { format!("kubefn CLI on {host}") };
    let token_body = serde_json::json!({"name": name}).to_string().into_bytes();
    let answer = anonymous
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(("application/json", token_body)),
            &[("cookie".to_string(), cookie.clone())],
        )
        .await?;
    if !answer.status.is_success() {
        return Err(client::api_error(&answer));
    }
    let token: NewToken = answer.decode("/api/v1/tokens")?;
    // The session was only the way to the token: end it.
    let _ = anonymous.call(Method::POST, "/api/v1/logout", None, &[("cookie".to_string(), cookie)]).await;
    let stored =
        credentials::Credentials { url: anonymous.base().to_string(), user: user.name.clone(), token: token.token };
    let path = credentials::save(&stored)?;
    eprintln!("Logged in to {} as {}; the API token is in {}.", stored.url, user.name, path.display());
    Ok(())
}

/// `kubefn token …`.
async fn tokens(api: &ApiClient, output: Output, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { name } => {
            let token: serde_json::Value =
                api.json(Method::POST, "/tokens", Some(&serde_json::json!({"name": name}))).await?;
            match output {
                Output::Json => print_json(&token),
                Output::Text => println!("{}", token["token"].as_str().unwrap_or_default()),
            }
        }
        TokenCommand::Ls => {
            let tokens: Vec<TokenInfo> = api.json(Method::GET, "/tokens", None::<&()>).await?;
            match output {
                Output::Json => print_json(&tokens),
                Output::Text => print_table(
                    &["ID", "NAME", "CREATED", "LAST USED"],
                    tokens.iter().map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            t.created_at.format("%Y-%m-%d %H:%M").to_string(),
                            t.last_used_at.map(|at| at.format("%Y-%m-%d %H:%M").to_string()).unwrap_or("-".into()),
                        ]
                    }),
                ),
            }
        }
        TokenCommand::Rm { id } => {
            api.rest(Method::DELETE, &format!("/tokens/{id}"), None::<&()>).await?;
            if output == Output::Text {
                eprintln!("Revoked token {id}.");
            }
        }
    }
    Ok(())
}

/// Prints a value as the API's JSON, indented.
fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("kubefn: cannot print the answer: {error}"),
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect()).chain(rows).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
