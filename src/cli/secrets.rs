//! `kubefn secret …`: the caller's secrets, by name. Values go in (from a file, a literal or
//! standard input) and never come back out: `ls` shows names and dates.

use super::client::{ApiClient, escape};
use super::{CliError, Output, print_json, print_table};
use crate::platform::model::SecretInfo;
use clap::Subcommand;
use http::Method;
use std::io::Read;

/// `kubefn secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret, or replace its value (instances that read it restart with the new one).
    Create {
        /// Its name: lowercase letters, digits and '-'; functions read `/var/openfaas/secrets/NAME`.
        name: String,
        /// Read the value from this file (e.g. a Docker config.json for registry credentials).
        #[arg(long, conflicts_with = "from_literal")]
        from_file: Option<std::path::PathBuf>,
        /// The value itself (it stays in your shell's history: prefer a file or stdin).
        #[arg(long)]
        from_literal: Option<String>,
    },
    /// List your secrets' names (never their values).
    Ls,
    /// Delete a secret.
    Rm {
        /// The secret's name.
        name: String,
    },
}

/// Runs `command` against `api`.
pub(super) async fn run(api: &ApiClient, output: Output, command: SecretCommand) -> Result<(), CliError> {
    match command {
        SecretCommand::Create { name, from_file, from_literal } => {
            let value = match (from_file, from_literal) {
                (Some(path), _) => std::fs::read(&path)
                    .map_err(|error| CliError::usage(format!("cannot read {}: {error}", path.display())))?,
                (None, Some(value)) => value.into_bytes(),
                (None, None) => {
                    let mut value = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut value)
                        .map_err(|error| CliError::usage(format!("cannot read standard input: {error}")))?;
                    value
                }
            };
            let value = String::from_utf8(value).map_err(|_| {
                CliError::usage("a secret's value must be UTF-8 text (encode binary values, e.g. base64)")
            })?;
            let answer = api
                .rest(Method::PUT, &format!("/secrets/{}", escape(&name)), Some(&serde_json::json!({"value": value})))
                .await?;
            let created = answer.status == 201;
            let info: SecretInfo = answer.decode("/secrets")?;
            match output {
                Output::Json => print_json(&info),
                Output::Text => eprintln!("{} secret {}.", if created { "Created" } else { "Replaced" }, info.name),
            }
        }
        SecretCommand::Ls => {
            let secrets: Vec<SecretInfo> = api.json(Method::GET, "/secrets", None::<&()>).await?;
            match output {
                Output::Json => print_json(&secrets),
                Output::Text => print_table(
                    &["NAME", "CREATED", "UPDATED"],
                    secrets.iter().map(|s| {
                        vec![
                            s.name.clone(),
                            s.created_at.format("%Y-%m-%d %H:%M").to_string(),
                            s.updated_at.format("%Y-%m-%d %H:%M").to_string(),
                        ]
                    }),
                ),
            }
        }
        SecretCommand::Rm { name } => {
            api.rest(Method::DELETE, &format!("/secrets/{}", escape(&name)), None::<&()>).await?;
            if output == Output::Text {
                eprintln!("Deleted secret {name}.");
            }
        }
    }
    Ok(())
}
