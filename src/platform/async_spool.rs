//! Where queued async requests keep their bodies: one file per invocation in a directory of
//! kubefn's data dir, written as the upload arrives and read back as a stream for each attempt,
//! so no body is ever whole in memory. A body is on disk (and synced) before its invocation is
//! stored, so a 202 means it survives a crash; it is deleted when the invocation finishes.
//! Files that no unfinished invocation names (a crash between the write and the insert) are
//! swept when the worker starts.

use futures::{Stream, StreamExt};
use hyper::body::Bytes;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much of a body is read from disk at a time when it is sent.
const CHUNK: usize = 64 * 1024;
/// The suffix of a body still being received.
const PARTIAL: &str = ".partial";

/// Why a body could not be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The body is longer than it may be.
    #[error("the request body is longer than {limit} bytes")]
    TooLarge {
        /// The most it may hold.
        limit: u64,
    },
    /// The client's upload broke off.
    #[error("the request body broke off while it was being received")]
    Broken(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The spool directory could not be written or read.
    #[error("cannot {action} {path}; check that kubefn's data directory is writable and has room")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The spool directory; cheap to clone.
#[derive(Clone, Debug)]
pub struct AsyncSpool {
    /// `None`: bodies go into the database with their invocations ([`AsyncSpool::in_database`]).
    dir: Option<PathBuf>,
}

/// A body as [`AsyncSpool::receive`] kept it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedBody {
    /// Its length in bytes.
    pub bytes: u64,
    /// The body itself when it goes into the database with its invocation; `None` when it is in
    /// the spool directory.
    pub inline: Option<Vec<u8>>,
}

impl AsyncSpool {
    /// The spool in `dir`, made (readable by kubefn alone) if missing.
    pub fn open(dir: PathBuf) -> Result<AsyncSpool, SpoolError> {
        let io = |source| SpoolError::Io { action: "create the async spool directory", path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io)?;
        Ok(AsyncSpool { dir: Some(dir) })
    }

    /// No directory: each body is kept in the database with its invocation, so any kubefn
    /// process on a shared database can work it (several processes on PostgreSQL). A body is
    /// then whole in memory while it is received and sent, up to its function's body limit.
    pub fn in_database() -> AsyncSpool {
        AsyncSpool { dir: None }
    }

    /// The file holding invocation `id`'s body, when bodies are kept in a directory. Ids are
    /// UUIDs kubefn makes, never user input.
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(id))
    }

    /// Takes `body` as invocation `id`'s, refusing it past `limit` bytes. In a directory, the
    /// file is complete and synced when this returns, and nothing is left when it fails or is
    /// dropped half-way (the client went away); otherwise the body is returned to be stored.
    pub async fn receive<S, E>(&self, id: &str, body: S, limit: u64) -> Result<ReceivedBody, SpoolError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(dir) = &self.dir else {
            let mut kept = Vec::new();
            let mut body = std::pin::pin!(within_limit(body, limit));
            while let Some(chunk) = body.next().await {
                kept.extend_from_slice(&chunk?);
            }
            return Ok(ReceivedBody { bytes: kept.len() as u64, inline: Some(kept) });
        };
        let partial = Partial(dir.join(format!("{id}{PARTIAL}")));
        let bytes = write_at_most(&partial.0, body, limit).await?;
        let path = dir.join(id);
        tokio::fs::rename(&partial.0, &path).await.map_err(|source| SpoolError::Io {
            action: "keep the async request body",
            path,
            source,
        })?;
        Ok(ReceivedBody { bytes, inline: None })
    }

    /// Invocation `id`'s body, as a stream of chunks read from disk.
    pub async fn body(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>, SpoolError> {
        let path = self.path(id).unwrap_or_default();
        let file = tokio::fs::File::open(&path).await.map_err(|source| SpoolError::Io {
            action: "read the async request body",
            path,
            source,
        })?;
        Ok(futures::stream::try_unfold(file, |mut file| async move {
            let mut chunk = vec![0; CHUNK];
            let read = file.read(&mut chunk).await?;
            chunk.truncate(read);
            Ok((read > 0).then(|| (Bytes::from(chunk), file)))
        }))
    }

    /// Deletes invocation `id`'s body, if it is there.
    pub async fn remove(&self, id: &str) {
        let Some(path) = self.path(id) else { return };
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(id, %error, "cannot delete a finished async request body"),
        }
    }

    /// Deletes every file but the bodies of `unfinished` (partial uploads included); how many.
    pub async fn sweep(&self, unfinished: &HashSet<String>) -> Result<usize, SpoolError> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let io = |source| SpoolError::Io { action: "list the async spool directory", path: dir.clone(), source };
        let mut entries = tokio::fs::read_dir(dir).await.map_err(io)?;
        let mut deleted = 0;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !unfinished.contains(&name) && tokio::fs::remove_file(entry.path()).await.is_ok() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// A body being received: deleted when dropped, which after the rename finds nothing.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams `body` into a new file at `path`, failing past `limit` bytes; the bytes written.
async fn write_at_most<S, E>(path: &Path, body: S, limit: u64) -> Result<u64, SpoolError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = |action| move |source| SpoolError::Io { action, path: path.to_path_buf(), source };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io("create"))?;
    let mut written: u64 = 0;
    let mut body = std::pin::pin!(within_limit(body, limit));
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io("write"))?;
    }
    file.sync_all().await.map_err(io("sync"))?;
    Ok(written)
}

/// `body`'s chunks, ending in an error past `limit` bytes or where the upload broke off.
fn within_limit<S, E>(body: S, limit: u64) -> impl Stream<Item = Result<Bytes, SpoolError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.scan(0u64, move |taken, chunk| {
        let checked = chunk.map_err(|e| SpoolError::Broken(e.into())).and_then(|chunk| {
            *taken = taken.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if *taken > limit { Err(SpoolError::TooLarge { limit }) } else { Ok(chunk) }
        });
        std::future::ready(Some(checked))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    async fn read_back(spool: &AsyncSpool, id: &str) -> Vec<u8> {
        let mut body = std::pin::pin!(spool.body(id).await.expect("body"));
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.expect("chunk"));
        }
        all
    }

    #[tokio::test]
    async fn a_body_is_kept_whole_and_read_back_in_chunks() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = AsyncSpool::open(dir.path().join("spool")).expect("spool");
        assert_eq!(spool.receive("a", chunks(&["hello ", "world"]), 11).await.expect("kept").bytes, 11);
        assert_eq!(read_back(&spool, "a").await, b"hello world");
        let big = vec![7u8; CHUNK * 2 + 5];
        let one = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(big.clone()))]);
        spool.receive("b", one, u64::MAX).await.expect("kept");
        assert_eq!(read_back(&spool, "b").await, big);
        spool.remove("a").await;
        spool.remove("a").await;
        assert!(!spool.path("a").expect("a directory").exists());
    }

    #[tokio::test]
    async fn a_body_past_its_limit_or_broken_off_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = AsyncSpool::open(dir.path().to_path_buf()).expect("spool");
        let refused = spool.receive("long", chunks(&["12345", "6"]), 5).await.expect_err("too long");
        assert!(matches!(refused, SpoolError::TooLarge { limit: 5 }), "{refused}");
        let broken = futures::stream::iter([Ok(Bytes::from_static(b"part")), Err(std::io::Error::other("reset"))]);
        assert!(matches!(spool.receive("broken", broken, 100).await, Err(SpoolError::Broken(_))));
        let never_ends = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"part"))])
            .chain(futures::stream::pending());
        let cut =
            tokio::time::timeout(std::time::Duration::from_millis(50), spool.receive("cut", never_ends, 100)).await;
        assert!(cut.is_err(), "the client went away half-way");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "no file, partial or whole, is left");
    }

    #[tokio::test]
    async fn in_the_database_a_body_is_returned_whole_within_its_limit() {
        let spool = AsyncSpool::in_database();
        let kept = spool.receive("a", chunks(&["hello ", "world"]), 11).await.expect("kept");
        assert_eq!(kept, ReceivedBody { bytes: 11, inline: Some(b"hello world".to_vec()) });
        let refused = spool.receive("long", chunks(&["12345", "6"]), 5).await.expect_err("too long");
        assert!(matches!(refused, SpoolError::TooLarge { limit: 5 }), "{refused}");
        assert_eq!(spool.sweep(&HashSet::new()).await.expect("nothing to sweep"), 0);
    }

    #[tokio::test]
    async fn a_sweep_keeps_only_the_unfinished_bodies() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = AsyncSpool::open(dir.path().to_path_buf()).expect("spool");
        for id in ["waiting", "orphan"] {
            spool.receive(id, chunks(&["x"]), 1).await.expect("kept");
        }
        std::fs::write(dir.path().join(format!("cut{PARTIAL}")), b"half").expect("a partial upload");
        let unfinished = HashSet::from(["waiting".to_string()]);
        assert_eq!(spool.sweep(&unfinished).await.expect("sweep"), 2);
        assert!(spool.path("waiting").expect("a directory").exists());
        assert!(!spool.path("orphan").expect("a directory").exists());
    }
}
