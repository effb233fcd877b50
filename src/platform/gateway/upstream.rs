//! How the gateway reaches replicas: straight to each ready replica's own socket (a local
//! replica's Unix socket, a pod's address), with a keep-alive pool per replica, choosing the
//! replica with the fewest requests outstanding. No relay sits between the gateway and a
//! replica, except kubefn's port-forward from outside a cluster, which is one endpoint.

use super::connections::{Borrowed, ReplicaConnections};
use super::*;
use crate::platform::runtime::forwarding::OpenTraffic;
use crate::platform::runtime::{Endpoint, Route};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One replica's keep-alive connections and its requests outstanding.
struct ReplicaPool {
    connections: Arc<ReplicaConnections>,
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
    /// The connection the request went on, back to the replica's idle ones with the answer.
    pub(super) connection: Option<Borrowed>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.replica.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replica a request goes to, its connections and the count that holds it outstanding.
pub(super) struct Chosen {
    pub(super) endpoint: Endpoint,
    pub(super) connections: Arc<ReplicaConnections>,
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
            connections: ReplicaConnections::new(endpoint.clone()),
            outstanding: Arc::default(),
        });
        pool.outstanding.fetch_add(1, Ordering::Relaxed);
        let outstanding =
            Outstanding { replica: pool.outstanding.clone(), _traffic: route.in_flight, connection: None };
        Some(Chosen { endpoint, connections: pool.connections.clone(), outstanding })
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
