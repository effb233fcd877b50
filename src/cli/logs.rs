//! Reading an instance's log stream (server-sent events, one JSON entry each) for
//! `kubefn fn logs` and for the last lines `fn deploy --wait` shows with a failure.

use super::client::{Answer, ApiClient, api_error, escape};
use super::{CliError, Output};
use crate::platform::model::LogEntry;
use http::Method;
use http_body_util::BodyExt;
use std::io::Write;

/// The last `count` lines of an instance's log.
pub async fn last_log_lines(api: &ApiClient, id: &str, count: usize) -> Result<Vec<String>, CliError> {
    let mut lines = Vec::new();
    read_logs(api, id, false, |entry| lines.push(entry.text)).await?;
    Ok(lines.split_off(lines.len().saturating_sub(count)))
}

/// Prints the instance's log, following it when asked.
pub async fn print_logs(api: &ApiClient, output: Output, id: &str, follow: bool) -> Result<(), CliError> {
    read_logs(api, id, follow, |entry| {
        let line = match output {
            Output::Json => serde_json::to_string(&entry).unwrap_or_default(),
            Output::Text => entry.text,
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the command; nothing to report.
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    })
    .await
}

/// Reads the instance's log stream (server-sent events, one JSON entry each).
async fn read_logs(api: &ApiClient, id: &str, follow: bool, mut each: impl FnMut(LogEntry)) -> Result<(), CliError> {
    let path = format!("/api/v1/instances/{}/logs?follow={follow}", escape(id));
    let response = api.send(Method::GET, &path, None, &[]).await?;
    if !response.status().is_success() {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(api_error(&Answer { status: parts.status, headers: parts.headers, body }));
    }
    let mut body = response.into_body();
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|source| CliError::Unreachable { url: api.base().to_string(), source: Box::new(source) })?;
        let Some(data) = frame.data_ref() else { continue };
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let data: Vec<&str> =
                event.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim_start).collect();
            if let Ok(entry) = serde_json::from_str::<LogEntry>(&data.join("\n")) {
                each(entry);
            }
        }
    }
    Ok(())
}
