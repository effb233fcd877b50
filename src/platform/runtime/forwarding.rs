//! A stable listener of kubefn's that forwards each TCP connection to one of an instance's ready
//! replicas, round-robin, trying the next one when a replica has just gone away: the local
//! runtime's "node ports" (replicas on Unix socket files) and the kubernetes runtime's port-forwards
//! (pods reached through the apiserver). While no replica is ready it holds a connection for a
//! while and signals demand (scale from zero). It counts connections, which the autoscaler, the
//! idle check and the latency samples read.

use super::unix_upstream::UnixUpstream;
use parking_lot::Mutex;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Why a node port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ForwardingError {
    /// Every port of the range is taken.
    #[error("no free port in {start}..={end}; widen the node port range or stop some instances")]
    RangeExhausted {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
    /// The listener failed for another reason.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address tried.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What went through a node port: connections open now, the last time
/// one opened or closed, and a signal raised when one arrives while no replica is ready.
#[derive(Debug)]
pub struct Traffic {
    open: AtomicUsize,
    last_activity: Mutex<Instant>,
    demand: Notify,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic { open: AtomicUsize::new(0), last_activity: Mutex::new(Instant::now()), demand: Notify::new() }
    }
}

impl Traffic {
    /// Connections being served (or held) now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How long no connection opened or closed (zero while one is open).
    pub fn idle_for(&self, now: Instant) -> Duration {
        if self.open() > 0 {
            return Duration::ZERO;
        }
        now.saturating_duration_since(*self.last_activity.lock())
    }

    /// Resolves when a connection arrives while no replica is ready.
    pub async fn demanded(&self) {
        self.demand.notified().await;
    }

    /// Records a request that reached the instance some other way than through a forwarding
    /// port (kubefn inside the cluster dials the replicas itself).
    pub fn touch(&self) {
        *self.last_activity.lock() = Instant::now();
    }

    /// Signals that a request waits for a replica ([`Traffic::demanded`] resolves).
    pub fn demand(&self) {
        self.demand.notify_one();
    }
}

/// Counts one connection (through a forwarding port) or one request (the gateway dialing a
/// replica itself) as open until dropped, so the instance is not idle meanwhile and the
/// autoscaler sees it in flight. (How long invocations take is the gateway's to measure.)
#[derive(Debug)]
pub struct OpenTraffic {
    traffic: Arc<Traffic>,
}

impl OpenTraffic {
    /// Counts one more open connection or request on `traffic`.
    pub fn new(traffic: Arc<Traffic>) -> OpenTraffic {
        traffic.open.fetch_add(1, Ordering::Relaxed);
        traffic.touch();
        OpenTraffic { traffic }
    }
}

impl Drop for OpenTraffic {
    fn drop(&mut self) {
        self.traffic.open.fetch_sub(1, Ordering::Relaxed);
        self.traffic.touch();
    }
}

/// How a forwarding port reaches one replica.
pub trait Dial: Send + Sync + 'static {
    /// What names a replica (an address, a pod).
    type Endpoint: Clone + Send + Sync + 'static;
    /// The connection to it.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a connection to `endpoint`.
    fn dial(&self, endpoint: &Self::Endpoint) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// Replicas listening on TCP addresses (the local runtime's processes).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDial;

impl Dial for TcpDial {
    type Endpoint = SocketAddr;
    type Stream = TcpStream;

    async fn dial(&self, endpoint: &SocketAddr) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(endpoint).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Replicas listening on Unix socket files (the local runtime's sandboxed processes, which
/// have no network of their own).
#[derive(Clone, Copy, Debug, Default)]
pub struct UnixDial;

impl Dial for UnixDial {
    type Endpoint = std::path::PathBuf;
    type Stream = UnixUpstream;

    async fn dial(&self, endpoint: &std::path::PathBuf) -> std::io::Result<UnixUpstream> {
        let stream = tokio::net::UnixStream::connect(endpoint).await?;
        // A Unix socket holds only its send buffer in flight (212,992 bytes by default, where
        // loopback TCP grows to megabytes), so a large body crossed it in many small handoffs,
        // each waking the replica and then kubefn again: 1 MiB bodies went 30% slower than over
        // TCP to the same bootstrap. A larger buffer lets a whole body cross at once. Best
        // effort: the kernel caps it at `net.core.wmem_max`, and a smaller one still works.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(UNIX_SEND_BUFFER);
        UnixUpstream::new(stream)
    }
}

/// The send buffer asked for on connections to a replica's Unix socket: a 1 MiB body in one go.
const UNIX_SEND_BUFFER: usize = 1 << 20;

/// A listening port; dropping it stops listening and frees the port.
#[derive(Debug)]
pub struct ForwardingPort {
    address: SocketAddr,
    traffic: Arc<Traffic>,
    task: JoinHandle<()>,
}

impl Drop for ForwardingPort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ForwardingPort {
    /// Listens on the first free port of `range` on `host`, forwarding to `endpoints`.
    pub async fn bind_in_range(
        host: std::net::IpAddr,
        range: RangeInclusive<u16>,
        endpoints: watch::Receiver<Vec<SocketAddr>>,
        hold: Duration,
    ) -> Result<ForwardingPort, ForwardingError> {
        ForwardingPort::bind_in_range_with(host, range, endpoints, TcpDial, hold).await
    }

    /// As [`ForwardingPort::bind_in_range`], reaching replicas through `dial`.
    pub async fn bind_in_range_with<D: Dial>(
        host: std::net::IpAddr,
        range: RangeInclusive<u16>,
        endpoints: watch::Receiver<Vec<D::Endpoint>>,
        dial: D,
        hold: Duration,
    ) -> Result<ForwardingPort, ForwardingError> {
        let dial = Arc::new(dial);
        for port in range.clone() {
            let address = SocketAddr::new(host, port);
            match TcpListener::bind(address).await {
                Ok(listener) => return Ok(ForwardingPort::serve_shared(listener, endpoints, dial, hold)),
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(source) => return Err(ForwardingError::Bind { address, source }),
            }
        }
        Err(ForwardingError::RangeExhausted { start: *range.start(), end: *range.end() })
    }

    /// Forwards connections accepted by `listener`.
    pub fn serve(listener: TcpListener, endpoints: watch::Receiver<Vec<SocketAddr>>, hold: Duration) -> ForwardingPort {
        ForwardingPort::serve_shared(listener, endpoints, Arc::new(TcpDial), hold)
    }

    /// As [`ForwardingPort::serve`], reaching replicas through `dial`.
    pub fn serve_with<D: Dial>(
        listener: TcpListener,
        endpoints: watch::Receiver<Vec<D::Endpoint>>,
        dial: D,
        hold: Duration,
    ) -> ForwardingPort {
        ForwardingPort::serve_shared(listener, endpoints, Arc::new(dial), hold)
    }

    fn serve_shared<D: Dial>(
        listener: TcpListener,
        endpoints: watch::Receiver<Vec<D::Endpoint>>,
        dial: Arc<D>,
        hold: Duration,
    ) -> ForwardingPort {
        // The listener's own address cannot be unknown once bound; fall back to unspecified just in case.
        let address = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let next = Arc::new(AtomicUsize::new(0));
        let traffic = Arc::new(Traffic::default());
        let counted = traffic.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let connection = OpenTraffic::new(counted.clone());
                let endpoints = endpoints.clone();
                let next = next.clone();
                let dial = dial.clone();
                tokio::spawn(async move { forward(client, endpoints, &*dial, next, hold, connection).await });
            }
        });
        ForwardingPort { address, traffic, task }
    }

    /// Its traffic counters and demand signal.
    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }

    /// Stops listening and returns once the port is free.
    pub async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Where the node port listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn forward<D: Dial>(
    client: TcpStream,
    mut endpoints: watch::Receiver<Vec<D::Endpoint>>,
    dial: &D,
    next: Arc<AtomicUsize>,
    hold: Duration,
    connection: OpenTraffic,
) {
    let _ = client.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let candidates = endpoints.borrow_and_update().clone();
        if candidates.is_empty() {
            connection.traffic.demand.notify_one();
            // Hold the connection until a replica is ready or the hold time is up.
            if tokio::time::timeout_at(deadline, endpoints.changed()).await.map_or(true, |changed| changed.is_err()) {
                return;
            }
            continue;
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..candidates.len() {
            let target = &candidates[(start + offset) % candidates.len()];
            if let Ok(upstream) = dial.dial(target).await {
                relay(client, upstream).await;
                return;
            }
        }
        // Every listed replica refused: the list is stale; wait for the next update.
        if tokio::time::timeout_at(deadline, endpoints.changed()).await.map_or(true, |changed| changed.is_err()) {
            return;
        }
    }
}

/// How long the answer may still flow after the client closed its side.
const LINGER: Duration = Duration::from_secs(2);

/// Copies both ways until the replica closes, or until [`LINGER`] after the client closed: a
/// port-forward through the apiserver never passes the pod's close on, so waiting for it alone
/// would keep the connection (and its count) open forever once the client has gone.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(mut client: TcpStream, upstream: S) {
    use tokio::io::AsyncWriteExt;
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_client = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let to_upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    tokio::pin!(to_client, to_upstream);
    tokio::select! {
        _ = &mut to_client => {}
        _ = &mut to_upstream => {
            let _ = tokio::time::timeout(LINGER, &mut to_client).await;
        }
    }
}

/// The port range of node ports, as Kubernetes' default.
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    let n = socket.read(&mut buffer).await.unwrap_or(0);
                    let _ =
                        socket.write_all(format!("{tag}:{}", String::from_utf8_lossy(&buffer[..n])).as_bytes()).await;
                });
            }
        });
        address
    }

    async fn ask(address: SocketAddr, message: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(message.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn connections_to_a_unix_socket_hold_a_large_body_in_flight() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("replica.sock");
        let _listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let stream = UnixDial.dial(&path).await.expect("dial");
        // Linux doubles what it is asked for, up to twice net.core.wmem_max.
        let ceiling = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(UNIX_SEND_BUFFER);
        let held = socket2::SockRef::from(&stream).send_buffer_size().expect("SO_SNDBUF");
        assert!(held >= UNIX_SEND_BUFFER.min(ceiling), "a send buffer of {held} bytes");
    }

    #[tokio::test]
    async fn balances_round_robin_and_skips_dead_endpoints() {
        let a = echo_server("a").await;
        let b = echo_server("b").await;
        let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let (_tx, rx) = watch::channel(vec![a, dead, b]);
        let port =
            ForwardingPort::serve(TcpListener::bind("127.0.0.1:0").await.expect("bind"), rx, Duration::from_secs(1));
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(ask(port.address(), "hi").await);
        }
        seen.sort();
        assert_eq!(seen, vec!["a:hi", "b:hi", "b:hi"], "the dead endpoint's turn goes to the next one");
    }

    #[tokio::test]
    async fn holds_connections_until_a_replica_is_ready() {
        let (tx, rx) = watch::channel(Vec::new());
        let port =
            ForwardingPort::serve(TcpListener::bind("127.0.0.1:0").await.expect("bind"), rx, Duration::from_secs(10));
        let waiting = tokio::spawn(ask(port.address(), "early"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        tx.send_replace(vec![echo_server("late").await]);
        assert_eq!(waiting.await.expect("task"), "late:early");
    }

    #[tokio::test]
    async fn counts_connections_and_signals_demand_while_no_replica_is_ready() {
        let (tx, rx) = watch::channel(Vec::new());
        let port =
            ForwardingPort::serve(TcpListener::bind("127.0.0.1:0").await.expect("bind"), rx, Duration::from_secs(10));
        let traffic = port.traffic();
        let demanded = tokio::spawn({
            let traffic = traffic.clone();
            async move { traffic.demanded().await }
        });
        let waiting = tokio::spawn(ask(port.address(), "cold"));
        tokio::time::timeout(Duration::from_secs(5), demanded).await.expect("demand signalled").expect("task");
        assert_eq!(traffic.open(), 1);
        assert_eq!(traffic.idle_for(Instant::now()), Duration::ZERO, "not idle while a connection is open");
        tx.send_replace(vec![echo_server("warm").await]);
        assert_eq!(waiting.await.expect("task"), "warm:cold");
        for _ in 0..100 {
            if traffic.open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(traffic.open(), 0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(traffic.idle_for(Instant::now()) >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_connection_no_replica_takes_in_time_is_closed_and_counted() {
        let (_tx, rx) = watch::channel(Vec::new());
        let port =
            ForwardingPort::serve(TcpListener::bind("127.0.0.1:0").await.expect("bind"), rx, Duration::from_millis(50));
        let mut client = TcpStream::connect(port.address()).await.expect("connect");
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "closed without an answer");
        for _ in 0..100 {
            if port.traffic().open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(port.traffic().open(), 0, "closed and no longer counted");
    }

    #[tokio::test]
    async fn dropping_frees_the_port_and_a_range_skips_taken_ports() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let first = taken.local_addr().expect("addr").port();
        let (_tx, rx) = watch::channel(Vec::new());
        let range = first..=first.saturating_add(20);
        let port =
            ForwardingPort::bind_in_range([127, 0, 0, 1].into(), range.clone(), rx.clone(), Duration::from_secs(1))
                .await
                .expect("bind");
        assert_ne!(port.address().port(), first);
        let freed = port.address();
        drop(port);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        TcpListener::bind(freed).await.expect("the node port's port is free again");
        let exhausted =
            ForwardingPort::bind_in_range([127, 0, 0, 1].into(), first..=first, rx, Duration::from_secs(1)).await;
        assert!(matches!(exhausted, Err(ForwardingError::RangeExhausted { .. })));
    }
}
