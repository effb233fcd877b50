//! The keep-alive connections to one replica, on hyper's HTTP/1 connections directly.
//!
//! Why not hyper-util's pooled client: it is built for many hosts (every request hashes a pool
//! key, races a checkout against a lazy connect) and, for HTTP/1, spawns a task per request to
//! put the connection back once it is ready again. A replica is one host, and the gateway knows
//! when an exchange is over (its [`Borrowed`] connection is dropped with the answer), so the
//! connection goes back then, and a task is spawned only when it is not ready yet (a request
//! body still on its way).

use super::UpstreamBody;
use crate::platform::runtime::Endpoint;
use crate::platform::runtime::forwarding::{Dial, TcpDial, UnixDial};
use crate::platform::runtime::unix_upstream::UnixUpstream;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Idle upstream connections are closed after this long (the bootstraps keep them longer).
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why a request did not get an answer from the replica.
type SendError = Box<dyn std::error::Error + Send + Sync>;

/// One replica's idle keep-alive connections, the longest idle first.
pub(super) struct ReplicaConnections {
    endpoint: Endpoint,
    idle: Mutex<VecDeque<IdleConnection>>,
}

/// A connection waiting for its next request.
struct IdleConnection {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// A connection carrying one exchange; it goes back to its replica's idle connections when
/// dropped (with the answer), if it can take another request.
pub(super) struct Borrowed {
    connections: Arc<ReplicaConnections>,
    sender: Option<SendRequest<UpstreamBody>>,
}

impl ReplicaConnections {
    /// No connections yet to the replica at `endpoint`.
    pub(super) fn new(endpoint: Endpoint) -> Arc<ReplicaConnections> {
        Arc::new(ReplicaConnections { endpoint, idle: Mutex::default() })
    }

    /// How many connections wait for a request.
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Sends `request` (its URI in origin form, its Host set) on the connection idle the
    /// shortest time, or on a new one, and returns the answer's head with the connection.
    /// A request an idle connection closed before taking (the replica may close an idle
    /// connection at any moment) is sent again on a new connection.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: http::Request<UpstreamBody>,
    ) -> Result<(http::Response<Incoming>, Borrowed), SendError> {
        if let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.borrowed(sender))),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(error.into_error().into()),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender.send_request(request).await?;
        Ok((response, self.borrowed(sender)))
    }

    fn borrowed(self: &Arc<Self>, sender: SendRequest<UpstreamBody>) -> Borrowed {
        Borrowed { connections: self.clone(), sender: Some(sender) }
    }

    /// The connection idle the shortest time that can take a request; those idle too long
    /// are closed first (dropping a connection's sender ends it) and closed ones passed over.
    fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let mut idle = self.idle.lock();
        while idle.front().is_some_and(|oldest| now.duration_since(oldest.since) >= POOL_IDLE) {
            idle.pop_front();
        }
        while let Some(connection) = idle.pop_back() {
            if connection.sender.is_ready() {
                return Some(connection.sender);
            }
        }
        None
    }

    /// Opens a connection to the replica; its task runs until either side closes it.
    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = ReplicaStream::connect(&self.endpoint).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a connection to a replica ended");
            }
        });
        Ok(sender)
    }

    fn give_back(&self, sender: SendRequest<UpstreamBody>) {
        self.idle.lock().push_back(IdleConnection { sender, since: Instant::now() });
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else { return };
        if sender.is_ready() {
            self.connections.give_back(sender);
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Still finishing its exchange (the rest of the request's body, the end of the
            // answer): it goes back once ready, or is dropped if it closes meanwhile.
            let connections = self.connections.clone();
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    connections.give_back(sender);
                }
            });
        }
    }
}

/// A connection to one replica, over TCP or a Unix socket.
pub(super) enum ReplicaStream {
    Tcp(tokio::net::TcpStream),
    Unix(UnixUpstream),
}

impl ReplicaStream {
    /// Connects to `endpoint`, as the forwarding ports dial replicas.
    pub(super) async fn connect(endpoint: &Endpoint) -> std::io::Result<ReplicaStream> {
        match endpoint {
            Endpoint::Tcp(address) => Ok(ReplicaStream::Tcp(TcpDial.dial(address).await?)),
            Endpoint::Unix(path) => Ok(ReplicaStream::Unix(UnixDial.dial(path).await?)),
        }
    }
}

impl AsyncRead for ReplicaStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReplicaStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            ReplicaStream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ReplicaStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ReplicaStream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            ReplicaStream::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    /// Vectored writes, which both sockets support: without them hyper copies every body chunk
    /// into its own buffer before writing it (a 1 MiB body cost 10% of kubefn's CPU in that
    /// copy alone); with them it hands the kernel the head and the chunks in one `writev`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ReplicaStream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ReplicaStream::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ReplicaStream::Tcp(stream) => stream.is_write_vectored(),
            ReplicaStream::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReplicaStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            ReplicaStream::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReplicaStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            ReplicaStream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A replica on a Unix socket answering `hello` with keep-alive, counting its connections;
    /// `close_after_first` makes it close each connection after one answer without saying so
    /// (as a replica closing an idle connection does, racing the next request).
    async fn replica(close_after_first: bool) -> (Endpoint, Arc<AtomicUsize>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("http.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("a socket");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(read) = stream.read(&mut buffer).await else { return };
                        if read == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..read]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if stream.write_all(answer).await.is_err() || close_after_first {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (Endpoint::Unix(path), accepted, dir)
    }

    fn get() -> http::Request<UpstreamBody> {
        let body = http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync();
        http::Request::builder().uri("/").header(http::header::HOST, "function").body(body).expect("a request")
    }

    async fn exchange(connections: &Arc<ReplicaConnections>) -> Vec<u8> {
        let (response, borrowed) = connections.send(get()).await.expect("an answer");
        let body = response.into_body().collect().await.expect("a body").to_bytes().to_vec();
        drop(borrowed);
        body
    }

    #[tokio::test]
    async fn a_finished_exchange_leaves_its_connection_for_the_next() {
        let (endpoint, accepted, _dir) = replica(false).await;
        let connections = ReplicaConnections::new(endpoint);
        for _ in 0..5 {
            assert_eq!(exchange(&connections).await, b"hello");
            // The connection may need a moment to be ready again; then it is back.
            for _ in 0..100 {
                if connections.idle_count() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "five exchanges in a row share one connection");
        assert_eq!(connections.idle_count(), 1);
    }

    #[tokio::test]
    async fn requests_at_once_get_a_connection_each_and_all_come_back() {
        let (endpoint, accepted, _dir) = replica(false).await;
        let connections = ReplicaConnections::new(endpoint);
        let first = connections.send(get()).await.expect("an answer");
        let second = connections.send(get()).await.expect("an answer");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a connection in use is not shared");
        for (response, borrowed) in [first, second] {
            assert_eq!(response.into_body().collect().await.expect("a body").to_bytes().as_ref(), b"hello");
            drop(borrowed);
        }
        for _ in 0..100 {
            if connections.idle_count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(connections.idle_count(), 2);
    }

    #[tokio::test]
    async fn a_connection_the_replica_closed_is_passed_over_and_the_request_still_answered() {
        let (endpoint, accepted, _dir) = replica(true).await;
        let connections = ReplicaConnections::new(endpoint);
        for _ in 0..3 {
            assert_eq!(exchange(&connections).await, b"hello", "every request is answered");
            // Time for the connection's task to see the replica's close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "each on a new connection");
    }
}
