//! How the gateway reaches replicas: straight to each ready replica's own socket (a local
//! replica's Unix socket, a pod's address), with a keep-alive pool per replica, choosing the
//! replica with the fewest requests outstanding. No relay sits between the gateway and a
//! replica, except kubefn's port-forward from outside a cluster, which is one endpoint.

use super::*;
use crate::platform::runtime::forwarding::{Dial, OpenTraffic, TcpDial, UnixDial};
use crate::platform::runtime::unix_upstream::UnixUpstream;
use crate::platform::runtime::{Endpoint, Route};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Idle upstream connections are closed after this long (the bootstraps keep them longer).
const POOL_IDLE: Duration = Duration::from_secs(30);

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

impl hyper_util::client::legacy::connect::Connection for ReplicaStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// Dials one replica whatever the request's URI says (the URI only names the pool).
#[derive(Clone)]
pub(super) struct ReplicaConnector(Arc<Endpoint>);

impl tower::Service<Uri> for ReplicaConnector {
    type Response = hyper_util::rt::TokioIo<ReplicaStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let endpoint = self.0.clone();
        Box::pin(async move { ReplicaStream::connect(&endpoint).await.map(hyper_util::rt::TokioIo::new) })
    }
}

/// The client of one replica: its keep-alive connections and its requests outstanding.
struct ReplicaPool {
    client: Client<ReplicaConnector, UpstreamBody>,
    outstanding: Arc<AtomicUsize>,
}

/// The pools of one instance's replicas, each kept while its replica is ready. A replica's
/// endpoint is its own: a local replica's socket file is new with each process, a pod's
/// address is the pod's; so a restarted or replaced replica gets a new pool, and pooled
/// connections never reach a replica on its way out.
#[derive(Default)]
pub(super) struct InstancePools {
    replicas: HashMap<Endpoint, ReplicaPool>,
    /// Where the search for the least busy replica starts, in turn, so ties spread out.
    turn: usize,
}

/// A request to a replica, counted until dropped: on the replica (how busy it is, for the
/// balancing) and on the instance's traffic (idle detection, requests in flight).
pub struct Outstanding {
    replica: Arc<AtomicUsize>,
    _traffic: Option<OpenTraffic>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.replica.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replica a request goes to, its pooled client and the count that holds it outstanding.
pub(super) struct Chosen {
    pub(super) endpoint: Endpoint,
    pub(super) client: Client<ReplicaConnector, UpstreamBody>,
    pub(super) outstanding: Outstanding,
}

impl InstancePools {
    /// The replica of `route` with the fewest requests outstanding (the first in turn among
    /// equals), with its pool; pools of replicas no longer in the route are dropped. `None`
    /// for an empty route.
    pub(super) fn choose(&mut self, route: Route) -> Option<Chosen> {
        if self.replicas.len() != route.replicas.len() || !route.replicas.iter().all(|r| self.replicas.contains_key(r))
        {
            self.replicas.retain(|endpoint, _| route.replicas.contains(endpoint));
        }
        let count = route.replicas.len();
        if count == 0 {
            return None;
        }
        self.turn = self.turn.wrapping_add(1);
        let mut best: Option<(&Endpoint, usize)> = None;
        for offset in 0..count {
            let endpoint = &route.replicas[(self.turn + offset) % count];
            let busy = self.replicas.get(endpoint).map_or(0, |pool| pool.outstanding.load(Ordering::Relaxed));
            if best.is_none_or(|(_, least)| busy < least) {
                best = Some((endpoint, busy));
            }
        }
        let endpoint = best?.0.clone();
        let pool = self.replicas.entry(endpoint.clone()).or_insert_with(|| ReplicaPool {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .build(ReplicaConnector(Arc::new(endpoint.clone()))),
            outstanding: Arc::default(),
        });
        pool.outstanding.fetch_add(1, Ordering::Relaxed);
        let outstanding = Outstanding { replica: pool.outstanding.clone(), _traffic: route.in_flight };
        Some(Chosen { endpoint, client: pool.client.clone(), outstanding })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ports: &[u16]) -> Route {
        Route {
            replicas: ports.iter().map(|p| Endpoint::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], *p)))).collect(),
            in_flight: None,
        }
    }

    fn port(chosen: &Chosen) -> u16 {
        match &chosen.endpoint {
            Endpoint::Tcp(address) => address.port(),
            Endpoint::Unix(_) => 0,
        }
    }

    #[tokio::test]
    async fn requests_go_to_the_replica_with_the_fewest_outstanding() {
        let mut pools = InstancePools::default();
        let first = pools.choose(route(&[1, 2, 3])).expect("a replica");
        let second = pools.choose(route(&[1, 2, 3])).expect("a replica");
        let third = pools.choose(route(&[1, 2, 3])).expect("a replica");
        let mut busy = [port(&first), port(&second), port(&third)];
        busy.sort_unstable();
        assert_eq!(busy, [1, 2, 3], "three requests in flight spread over three replicas");
        let freed = port(&second);
        drop(second);
        for _ in 0..3 {
            let next = pools.choose(route(&[1, 2, 3])).expect("a replica");
            assert_eq!(port(&next), freed, "the one idle replica is chosen while the others are busy");
        }
    }

    #[tokio::test]
    async fn equals_take_turns_and_gone_replicas_lose_their_pools() {
        let mut pools = InstancePools::default();
        let turns: std::collections::HashSet<u16> =
            (0..4).map(|_| port(&pools.choose(route(&[1, 2])).expect("a replica"))).collect();
        assert_eq!(turns.len(), 2, "idle replicas take turns");
        let only = pools.choose(route(&[2])).expect("a replica");
        assert_eq!(port(&only), 2);
        assert_eq!(pools.replicas.len(), 1, "the pool of the replica that left is dropped");
        let _ = pools.choose(route(&[3])).expect("a replica");
        assert!(
            pools.replicas.contains_key(&route(&[3]).replicas[0]),
            "a new replica (a restart, a rollout) gets a new pool"
        );
        assert_eq!(pools.replicas.len(), 1, "and the pool of the one it replaced goes");
        assert!(pools.choose(route(&[])).is_none(), "no replica, no choice");
    }
}
