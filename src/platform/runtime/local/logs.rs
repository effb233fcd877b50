//! Replica output: a bounded in-memory ring of tagged lines that readers can also follow live.

use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A line kubefn itself wrote about the replica (start, exit, restart).
    System,
}

/// One line of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When kubefn read it.
    pub at: DateTime<Utc>,
    /// The replica it came from (`r0`, `r1`, …).
    pub replica: String,
    /// The pipe.
    pub stream: Stream,
    /// The text, without the line ending.
    pub text: String,
}

/// The recent output of one instance; cheap to clone, shared by its replicas and readers.
#[derive(Clone, Debug)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<LogLine>>>,
    capacity: usize,
    live: broadcast::Sender<LogLine>,
}

impl LogBuffer {
    /// A buffer keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> LogBuffer {
        let (live, _) = broadcast::channel(1024);
        LogBuffer { lines: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(4096)))), capacity: capacity.max(1), live }
    }

    /// Appends a line, dropping the oldest when full, and hands it to followers.
    pub fn push(&self, replica: &str, stream: Stream, text: impl Into<String>) {
        let line = LogLine { at: Utc::now(), replica: replica.to_string(), stream, text: text.into() };
        {
            let mut lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        // No followers is fine: the line is in the ring.
        let _ = self.live.send(line);
    }

    /// Copies every line of a child's pipe into the buffer until the pipe closes.
    pub async fn collect(self, pipe: impl tokio::io::AsyncRead + Unpin, replica: String, stream: Stream) {
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(pipe));
        while let Ok(Some(line)) = lines.next_line().await {
            self.push(&replica, stream, line);
        }
    }

    /// The buffered lines, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }

    /// The last `count` lines of one stream of one replica (for failure reasons).
    pub fn tail(&self, replica: &str, stream: Stream, count: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut tail: Vec<String> =
            lines.iter().rev().filter(|l| l.replica == replica && l.stream == stream).take(count).map(|l| l.text.clone()).collect();
        tail.reverse();
        tail
    }

    /// The buffered lines and a receiver of every later line, taken together so none is lost
    /// or seen twice between the two.
    pub fn follow(&self) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let receiver = self.live.subscribe();
        (lines.iter().cloned().collect(), receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_lines() {
        let logs = LogBuffer::new(3);
        for i in 0..5 {
            logs.push("r0", Stream::Stdout, format!("line {i}"));
        }
        let texts: Vec<String> = logs.snapshot().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["line 2", "line 3", "line 4"]);
    }

    #[test]
    fn tail_picks_one_replica_and_stream() {
        let logs = LogBuffer::new(10);
        logs.push("r0", Stream::Stderr, "a");
        logs.push("r1", Stream::Stderr, "b");
        logs.push("r0", Stream::Stdout, "c");
        logs.push("r0", Stream::Stderr, "d");
        assert_eq!(logs.tail("r0", Stream::Stderr, 5), vec!["a", "d"]);
        assert_eq!(logs.tail("r0", Stream::Stderr, 1), vec!["d"]);
    }

    #[tokio::test]
    async fn followers_get_the_backlog_then_new_lines_exactly_once() {
        let logs = LogBuffer::new(10);
        logs.push("r0", Stream::Stdout, "old");
        let (backlog, mut live) = logs.follow();
        logs.push("r1", Stream::Stdout, "new");
        assert_eq!(backlog.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), vec!["old"]);
        let next = live.recv().await.expect("live line");
        assert_eq!((next.replica.as_str(), next.text.as_str()), ("r1", "new"));
        assert!(live.try_recv().is_err());
    }
}
