//! The command line's pure parts: parsing, the spec a source file and flags make, escaping,
//! and how an API error reads.

use super::client::escape;
use super::functions::{FnCommand, SourceArgs};
use super::{Cli, CliError, Command, describe};
use crate::api::ApiError;
use clap::Parser;
use serde_json::json;

fn source_args(args: &[&str]) -> SourceArgs {
    let cli = Cli::try_parse_from([&["kubefn", "fn", "register"], args].concat()).expect("parses");
    match cli.command {
        Some(Command::Fn { command: FnCommand::Register(args), .. }) => args,
        other => panic!("not a register: {other:?}"),
    }
}

#[test]
fn no_subcommand_or_serve_flags_mean_the_server() {
    let cli = Cli::try_parse_from(["kubefn", "--listen", "127.0.0.1:4000"]).expect("parses");
    assert!(cli.command.is_none());
    assert_eq!(cli.serve.listen.port(), 4000);
    assert!(matches!(Cli::try_parse_from(["kubefn", "serve"]).expect("parses").command, Some(Command::Serve(_))));
    // Server flags and client subcommands do not mix.
    assert!(Cli::try_parse_from(["kubefn", "--listen", "127.0.0.1:4000", "fn", "ls"]).is_err());
}

#[test]
fn the_runtime_follows_from_the_extension_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("dir");
    for (file, runtime) in [("hello.py", "python"), ("hello.js", "node"), ("hello.mjs", "node"), ("hello.cjs", "node")]
    {
        let path = dir.path().join(file);
        std::fs::write(&path, "source").expect("write");
        let spec = source_args(&[path.to_str().expect("utf-8")]).spec(json!({})).expect("a spec");
        assert_eq!(spec, json!({"name": "hello", "runtime": runtime, "source": "source"}), "{file}");
    }
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "x").expect("write");
    let refused = source_args(&[text.to_str().expect("utf-8")]).spec(json!({}));
    assert!(matches!(refused, Err(CliError::Usage(ref m)) if m.contains("--runtime")), "{refused:?}");
    let spec = source_args(&[
        text.to_str().expect("utf-8"),
        "--runtime",
        "python",
        "--name",
        "other",
        "-e",
        "A=1",
        "-e",
        "B=x=y",
        "--visibility",
        "public",
    ])
    .spec(json!({}))
    .expect("a spec");
    assert_eq!(spec["runtime"], "python");
    assert_eq!(spec["name"], "other");
    assert_eq!(spec["env"], json!({"A": "1", "B": "x=y"}));
    assert_eq!(spec["visibility"], "public");
}

#[test]
fn an_edit_keeps_what_the_flags_leave_out() {
    let current = json!({"name": "hello", "runtime": "python", "source": "old", "env": {"KEEP": "1"}, "timeout_s": 9});
    let spec = source_args(&["--name", "hello", "-e", "NEW=2"]).spec(current).expect("a spec");
    assert_eq!(
        spec,
        json!({"name": "hello", "runtime": "python", "source": "old", "env": {"KEEP": "1", "NEW": "2"}, "timeout_s": 9})
    );
    let refused = source_args(&["--name", "hello", "-e", "NOEQUALS"]).spec(json!({}));
    assert!(matches!(refused, Err(CliError::Usage(ref m)) if m.contains("NAME=VALUE")), "{refused:?}");
}

#[test]
fn path_segments_are_escaped() {
    assert_eq!(escape("hello-1.x_~"), "hello-1.x_~");
    assert_eq!(escape("a/b c?"), "a%2Fb%20c%3F");
}

#[test]
fn errors_read_as_the_api_words_them_with_their_exit_codes() {
    let invalid = ApiError::invalid("resources.cpu", "cpu must be a quantity such as 250m");
    assert_eq!(describe(&invalid), "cpu must be a quantity such as 250m [resources.cpu] (HTTP 422)");
    let named = ApiError::invalid("name", "name: must be a DNS-1123 label");
    assert_eq!(describe(&named), "name: must be a DNS-1123 label (HTTP 422)");
    assert_eq!(CliError::Api(Box::new(invalid)).exit_code(), 1);
    assert_eq!(CliError::Api(Box::new(ApiError::unauthenticated())).exit_code(), 3);
    assert_eq!(CliError::NotLoggedIn.exit_code(), 3);
    assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    assert_eq!(CliError::Function("x".into()).exit_code(), 4);
}
