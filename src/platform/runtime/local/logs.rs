//! Replica output: a bounded in-memory ring of tagged lines that readers can also follow live,
//! optionally copied to a file on disk that is rotated when it grows past a size.

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
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

impl Stream {
    /// `stdout`, `stderr` or `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
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
    file: Option<Arc<Mutex<LogFile>>>,
}

/// The on-disk copy: appended to, and renamed to `<path>.1` (replacing the previous one) once it
/// holds `max_bytes`, so at most twice that stays on disk.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    written: u64,
    file: Option<std::fs::File>,
}

/// Reads back one line as [`LogFile`] writes it: `time replica stream text`.
fn parse_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(4, ' ');
    let at = DateTime::parse_from_rfc3339(parts.next()?).ok()?.with_timezone(&Utc);
    let replica = parts.next()?.to_string();
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        "system" => Stream::System,
        _ => return None,
    };
    Some(LogLine { at, replica, stream, text: parts.next().unwrap_or_default().to_string() })
}

impl LogFile {
    fn append(&mut self, line: &LogLine) {
        if self.written >= self.max_bytes {
            self.file = None;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = std::fs::rename(&self.path, rotated);
            self.written = 0;
        }
        if self.file.is_none() {
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
            self.written = self.file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        }
        let text = format!("{} {} {} {}\n", line.at.to_rfc3339(), line.replica, line.stream.as_str(), line.text);
        // A full disk must not stop the function; the in-memory ring still has the line.
        if let Some(file) = &mut self.file
            && file.write_all(text.as_bytes()).is_ok()
        {
            self.written += text.len() as u64;
        }
    }
}

impl LogBuffer {
    /// A buffer keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> LogBuffer {
        let (live, _) = broadcast::channel(1024);
        LogBuffer {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(4096)))),
            capacity: capacity.max(1),
            live,
            file: None,
        }
    }

    /// A buffer keeping the last `capacity` lines in memory and every line in the file at
    /// `path`, rotated at `max_bytes`. Lines already in the file (from before a restart of
    /// kubefn) are loaded first, so the instance's history survives it.
    pub fn with_file(capacity: usize, path: PathBuf, max_bytes: u64) -> LogBuffer {
        let mut buffer = LogBuffer::new(capacity);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut lines = buffer.lines.lock();
            let earlier: Vec<LogLine> = text.lines().filter_map(parse_line).collect();
            lines.extend(earlier.into_iter().rev().take(buffer.capacity).rev());
        }
        buffer.file = Some(Arc::new(Mutex::new(LogFile { path, max_bytes: max_bytes.max(1), written: 0, file: None })));
        buffer
    }

    /// Appends a line, dropping the oldest when full, and hands it to followers.
    pub fn push(&self, replica: &str, stream: Stream, text: impl Into<String>) {
        let line = LogLine { at: Utc::now(), replica: replica.to_string(), stream, text: text.into() };
        {
            let mut lines = self.lines.lock();
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        if let Some(file) = &self.file {
            file.lock().append(&line);
        }
        // No followers is fine: the line is in the ring.
        let _ = self.live.send(line);
    }

    /// Copies every line of a child's pipe into the buffer until the pipe closes.
    pub async fn collect(self, pipe: impl tokio::io::AsyncRead + Unpin, replica: String, stream: Stream) {
        let mut lines = BoundedLines::new(pipe);
        while let Ok(Some(line)) = lines.next_line().await {
            self.push(&replica, stream, line);
        }
    }

    /// The buffered lines, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.lines.lock().iter().cloned().collect()
    }

    /// The last `count` lines of one stream of one replica written at or after `since` (the
    /// output of its latest run, for failure reasons).
    pub fn tail(&self, replica: &str, stream: Stream, count: usize, since: DateTime<Utc>) -> Vec<String> {
        let lines = self.lines.lock();
        let mut tail: Vec<String> = lines
            .iter()
            .rev()
            .take_while(|l| l.at >= since)
            .filter(|l| l.replica == replica && l.stream == stream)
            .take(count)
            .map(|l| l.text.clone())
            .collect();
        tail.reverse();
        tail
    }

    /// The buffered lines and a receiver of every later line, taken together so none is lost
    /// or seen twice between the two.
    pub fn follow(&self) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let lines = self.lines.lock();
        let receiver = self.live.subscribe();
        (lines.iter().cloned().collect(), receiver)
    }
}

/// The longest line kept, in bytes; the rest of a longer line is dropped and the line says so.
/// (Container runtimes split at the same 16 KiB, so a Kubernetes log line is no longer.)
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Lines of a pipe, each at most [`MAX_LINE_BYTES`]: a function printing gigabytes without a
/// newline costs kubefn 16 KiB, not all its memory (tokio's `lines()` would buffer it whole).
pub struct BoundedLines<R> {
    reader: tokio::io::BufReader<R>,
}

impl<R: tokio::io::AsyncRead + Unpin> BoundedLines<R> {
    /// The lines of `pipe`.
    pub fn new(pipe: R) -> BoundedLines<R> {
        BoundedLines { reader: tokio::io::BufReader::new(pipe) }
    }

    /// The next line without its ending (invalid UTF-8 replaced), cut to [`MAX_LINE_BYTES`] with
    /// a note when longer; `None` at the end of the pipe.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        use tokio::io::AsyncBufReadExt;
        let mut line = Vec::new();
        let mut dropped = 0usize;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if line.is_empty() && dropped == 0 {
                    return Ok(None);
                }
                break;
            }
            let (chunk, found_end) = match available.iter().position(|b| *b == b'\n') {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            dropped += chunk.len().saturating_sub(room);
            let consumed = chunk.len() + usize::from(found_end);
            self.reader.consume(consumed);
            if found_end {
                break;
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(&line).into_owned();
        if dropped > 0 {
            text.push_str(&format!(
                " … [line cut: {dropped} more bytes dropped; lines are kept up to {} KiB]",
                MAX_LINE_BYTES / 1024
            ));
        }
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_and_said_to_be() {
        let mut input = b"short\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 5000));
        input.extend_from_slice(b"\nnext\nno ending");
        let mut lines = BoundedLines::new(&input[..]);
        assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("short"));
        let long = lines.next_line().await.expect("read").expect("a line");
        assert!(long.starts_with(&"x".repeat(MAX_LINE_BYTES)), "the start is kept");
        assert!(
            long.ends_with("[line cut: 5000 more bytes dropped; lines are kept up to 16 KiB]"),
            "{}",
            &long[MAX_LINE_BYTES..]
        );
        assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("next"));
        assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("no ending"));
        assert_eq!(lines.next_line().await.expect("read"), None);
    }

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
        let start = DateTime::<Utc>::MIN_UTC;
        assert_eq!(logs.tail("r0", Stream::Stderr, 5, start), vec!["a", "d"]);
        assert_eq!(logs.tail("r0", Stream::Stderr, 1, start), vec!["d"]);
        let later = Utc::now();
        logs.push("r0", Stream::Stderr, "e");
        assert_eq!(logs.tail("r0", Stream::Stderr, 5, later), vec!["e"], "only lines of the latest run");
    }

    #[test]
    fn the_file_copy_is_rotated_at_its_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("instance.log");
        let logs = LogBuffer::with_file(2, path.clone(), 200);
        for i in 0..10 {
            logs.push("r0", Stream::Stdout, format!("line {i} {}", "x".repeat(40)));
        }
        let current = std::fs::read_to_string(&path).expect("current file");
        let rotated = std::fs::read_to_string(dir.path().join("instance.log.1")).expect("rotated file");
        assert!(current.ends_with(&format!("r0 stdout line 9 {}\n", "x".repeat(40))), "{current}");
        assert!(rotated.contains("line 5") || rotated.contains("line 6"), "{rotated}");
        assert!(current.len() + rotated.len() < 600, "bounded: {} + {}", current.len(), rotated.len());
        assert_eq!(logs.snapshot().len(), 2, "the ring keeps its own bound");

        // A new buffer on the same file (kubefn restarted) starts with its last lines.
        let reopened = LogBuffer::with_file(3, path, 200);
        let texts: Vec<String> = reopened.snapshot().into_iter().map(|l| l.text).collect();
        assert_eq!(texts.last().map(String::as_str), Some(format!("line 9 {}", "x".repeat(40)).as_str()));
        assert!(!texts.is_empty() && texts.len() <= 3, "{texts:?}");
        assert_eq!(reopened.snapshot()[0].replica, "r0");
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
