//! An instance's logs from the cluster: every pod of the instance (and its dependency install),
//! pods that appear later joining a follow, each line tagged with its pod and time. A follow
//! that the apiserver ends (EOF, a restart of the connection) reconnects with `sinceTime` and
//! skips what it already delivered, so no line comes twice.

use super::manifests::{CONTAINER, INSTALL_CONTAINER};
use crate::platform::model::LogEntry;
use chrono::{DateTime, Utc};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube::runtime::reflector::Store;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where one followed container's lines stopped: the last time stamp and how many lines carried
/// it (time stamps are not unique; a reconnect from that second skips exactly those).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    last: Option<DateTime<Utc>>,
    at_last: usize,
}

impl Cursor {
    /// A cursor delivering lines from `since` on.
    pub fn since(since: Option<DateTime<Utc>>) -> Cursor {
        Cursor { last: since.map(|s| s - chrono::Duration::nanoseconds(1)), at_last: 0 }
    }

    /// Whether a line stamped `at` is new (and, if so, records it). `seen_at_same` counts the
    /// lines stamped `at` met so far in this connection.
    pub fn admit(&mut self, at: DateTime<Utc>, seen_at_same: usize) -> bool {
        match self.last {
            Some(last) if at < last => false,
            Some(last) if at == last && seen_at_same <= self.at_last => false,
            Some(last) if at == last => {
                self.at_last = seen_at_same;
                true
            }
            _ => {
                self.last = Some(at);
                self.at_last = 1;
                true
            }
        }
    }

    /// The `sinceTime` to reconnect with (whole seconds, as the API takes it).
    pub fn reconnect_from(&self) -> Option<DateTime<Utc>> {
        self.last
    }
}

/// Splits a line the apiserver sent with `timestamps=true` into its time and text.
pub fn parse_line(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let (stamp, text) = line.split_once(' ').unwrap_or((line, ""));
    let at = DateTime::parse_from_rfc3339(stamp).ok()?.with_timezone(&Utc);
    Some((at, text))
}

/// The pods of an instance the store holds now.
fn pods_of(store: &Store<Pod>, namespace: &str, instance: &str) -> Vec<String> {
    store
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            p.metadata.labels.as_ref().and_then(|l| l.get(super::names::INSTANCE)).is_some_and(|i| i == instance)
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Sends `instance`'s lines to `sender` (from `since` on); with `follow`, keeps going, joining
/// new pods as the store shows them, until the receiver is dropped.
pub async fn run(
    api: Api<Pod>,
    store: Store<Pod>,
    namespace: String,
    instance: String,
    follow: bool,
    since: Option<DateTime<Utc>>,
    sender: mpsc::Sender<LogEntry>,
) {
    if !follow {
        let mut lines = Vec::new();
        for pod in pods_of(&store, &namespace, &instance) {
            for container in [INSTALL_CONTAINER, CONTAINER] {
                lines.extend(fetch(&api, &pod, container, since).await);
            }
        }
        lines.sort_by_key(|l| l.at);
        for line in lines {
            if sender.send(line).await.is_err() {
                return;
            }
        }
        return;
    }
    let mut followed: HashSet<String> = HashSet::new();
    loop {
        for pod in pods_of(&store, &namespace, &instance) {
            if followed.insert(pod.clone()) {
                for container in [INSTALL_CONTAINER, CONTAINER] {
                    tokio::spawn(follow_container(
                        api.clone(),
                        store.clone(),
                        pod.clone(),
                        container,
                        since,
                        sender.clone(),
                    ));
                }
            }
        }
        tokio::select! {
            _ = sender.closed() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn tag(pod: &str, container: &str) -> String {
    if container == CONTAINER { pod.to_string() } else { format!("{pod}/install") }
}

async fn fetch(api: &Api<Pod>, pod: &str, container: &str, since: Option<DateTime<Utc>>) -> Vec<LogEntry> {
    let params = LogParams {
        container: Some(container.into()),
        timestamps: true,
        since_time: since.and_then(super::to_timestamp),
        ..LogParams::default()
    };
    let Ok(text) = api.logs(pod, &params).await else { return Vec::new() };
    let mut cursor = Cursor::since(since);
    let mut same = (None, 0);
    text.lines().filter_map(|line| entry(&mut cursor, &mut same, pod, container, line)).collect()
}

fn entry(
    cursor: &mut Cursor,
    same: &mut (Option<DateTime<Utc>>, usize),
    pod: &str,
    container: &str,
    line: &str,
) -> Option<LogEntry> {
    let (at, text) = parse_line(line)?;
    if same.0 == Some(at) {
        same.1 += 1;
    } else {
        *same = (Some(at), 1);
    }
    cursor.admit(at, same.1).then(|| LogEntry {
        at,
        replica: tag(pod, container),
        stream: "stdout".into(),
        text: text.to_string(),
    })
}

/// Follows one container until its pod is gone or nobody listens, reconnecting after each EOF.
async fn follow_container(
    api: Api<Pod>,
    store: Store<Pod>,
    pod: String,
    container: &'static str,
    since: Option<DateTime<Utc>>,
    sender: mpsc::Sender<LogEntry>,
) {
    let mut cursor = Cursor::since(since);
    loop {
        let params = LogParams {
            container: Some(container.into()),
            follow: true,
            timestamps: true,
            since_time: cursor.reconnect_from().and_then(super::to_timestamp),
            ..LogParams::default()
        };
        if let Ok(stream) = api.log_stream(&pod, &params).await {
            let mut lines = stream.lines();
            let mut same = (None, 0);
            loop {
                tokio::select! {
                    _ = sender.closed() => return,
                    line = lines.try_next() => match line {
                        Ok(Some(line)) => {
                            if let Some(entry) = entry(&mut cursor, &mut same, &pod, container, &line)
                                && sender.send(entry).await.is_err()
                            {
                                return;
                            }
                        }
                        _ => break,
                    },
                }
            }
        }
        let gone = !store
            .state()
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(pod.as_str()) && p.metadata.deletion_timestamp.is_none());
        if gone || sender.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc)
    }

    #[test]
    fn lines_split_into_time_and_text() {
        let (when, text) = parse_line("2026-11-22T11:26:10.123456789Z hello world").expect("line");
        assert_eq!(when, at("2026-11-22T11:26:10.123456789Z"));
        assert_eq!(text, "hello world");
        assert_eq!(parse_line("2026-11-22T11:26:10Z").expect("empty line").1, "");
        assert!(parse_line("no time here").is_none());
    }

    #[test]
    fn a_reconnect_skips_what_was_delivered_even_with_equal_time_stamps() {
        let mut cursor = Cursor::since(None);
        let t1 = at("2026-11-22T11:00:00Z");
        let t2 = at("2026-11-22T11:00:01Z");
        // First connection: a, b (same second), c.
        assert!(cursor.admit(t1, 1));
        assert!(cursor.admit(t1, 2));
        assert!(cursor.admit(t2, 1));
        // Reconnect from t2: the server sends c again, then d at the same second, then e.
        assert_eq!(cursor.reconnect_from(), Some(t2));
        assert!(!cursor.admit(t2, 1), "c was delivered");
        assert!(cursor.admit(t2, 2), "d is new");
        assert!(cursor.admit(at("2026-11-22T11:00:02Z"), 1));
        // A server that resends older lines is ignored.
        assert!(!cursor.admit(t1, 1));
    }

    #[test]
    fn since_includes_lines_at_exactly_that_time() {
        let t = at("2026-11-22T11:00:00Z");
        let mut cursor = Cursor::since(Some(t));
        assert!(!cursor.admit(at("2026-11-22T10:59:59Z"), 1));
        assert!(cursor.admit(t, 1));
    }
}
