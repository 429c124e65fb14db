//! Who holds the xDS port's connection slots, and for how long.
//!
//! A connection is *unproven* until one of its streams is let in by authentication (with
//! authentication off, until it opens any stream). Unproven connections have a pool of their
//! own ([`Limit::UnauthenticatedConnections`]), apart from the proven ones
//! ([`Limit::Connections`]), so clients without credentials cannot take the slots that
//! authenticated proxies need. When that pool is full, a newcomer takes the place of the
//! oldest unproven connection of the address holding the most of them: a flood from a few
//! addresses then costs those addresses, not a newcomer from another one.
//!
//! A connection with no stream holding it (an authenticated one; with authentication off, any)
//! is closed after [`Limit::UnauthenticatedGrace`]: gRPC health calls and refused streams do
//! not keep a connection, and its slot, for as long as it answers pings.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::limits::{Limit, Limits};
use super::metrics::PortMetrics;
use crate::lock::lock;

/// Every open connection, by pool and by peer address.
pub struct Connections {
    state: Mutex<State>,
    limits: Limits,
    metrics: PortMetrics,
}

#[derive(Default)]
struct State {
    proven: usize,
    unproven: usize,
    peers: HashMap<Option<IpAddr>, Peer>,
    next_id: u64,
}

#[derive(Default)]
struct Peer {
    open: usize,
    /// This address's unproven connections, oldest first, with what closes each.
    unproven: VecDeque<(u64, Arc<Notify>)>,
}

/// One connection's place on the port, given back when the connection ends.
pub struct Slot {
    connections: Arc<Connections>,
    peer: Option<IpAddr>,
    id: u64,
    /// Changed only under the state's lock.
    proven: std::sync::atomic::AtomicBool,
    /// Notified when a newcomer takes this unproven connection's place.
    evicted: Arc<Notify>,
    /// Streams holding the connection open.
    held: watch::Sender<u32>,
}

/// A stream holding its connection open, until it is dropped with the stream.
pub struct Held(watch::Sender<u32>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.send_modify(|held| *held -= 1);
    }
}

impl Connections {
    pub fn new(limits: Limits, metrics: PortMetrics) -> Arc<Self> {
        Arc::new(Self { state: Mutex::default(), limits, metrics })
    }

    /// A place for a new connection from `peer`, unproven, or the limit that refuses it.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, Limit> {
        let mut state = lock(&self.state);
        let own = state.peers.get(&peer).map_or((0, 0), |p| (p.open, p.unproven.len()));
        if peer.is_some() && own.0 >= self.limits.usize(Limit::ConnectionsPerPeer) {
            return Err(Limit::ConnectionsPerPeer);
        }
        if state.unproven >= self.limits.usize(Limit::UnauthenticatedConnections) {
            let largest = state.peers.iter_mut().max_by_key(|(_, p)| p.unproven.len()).map(|(_, p)| p);
            let Some(largest) = largest.filter(|p| p.unproven.len() > own.1) else {
                return Err(Limit::UnauthenticatedConnections);
            };
            if let Some((_, close)) = largest.unproven.pop_front() {
                close.notify_one();
                state.unproven -= 1;
                self.metrics.limit_hits.hit(Limit::UnauthenticatedConnections);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = Arc::new(Notify::new());
        let entry = state.peers.entry(peer).or_default();
        entry.open += 1;
        entry.unproven.push_back((id, evicted.clone()));
        state.unproven += 1;
        self.metrics.connections.inc();
        self.metrics.unauthenticated_connections.set(state.unproven as i64);
        Ok(Slot {
            connections: self.clone(),
            peer,
            id,
            proven: Default::default(),
            evicted,
            held: watch::Sender::new(0),
        })
    }
}

impl Slot {
    /// Moves the connection to the proven pool, once: its first stream was let in. Refused
    /// when that pool is full.
    pub fn prove(&self) -> Result<(), Limit> {
        use std::sync::atomic::Ordering::Relaxed;
        let connections = &self.connections;
        let mut state = lock(&connections.state);
        if self.proven.load(Relaxed) {
            return Ok(());
        }
        if state.proven >= connections.limits.usize(Limit::Connections) {
            return Err(Limit::Connections);
        }
        if take_unproven(&mut state, self.peer, self.id) {
            state.unproven -= 1;
        }
        state.proven += 1;
        self.proven.store(true, Relaxed);
        connections.metrics.unauthenticated_connections.set(state.unproven as i64);
        Ok(())
    }

    /// Marks a stream as holding the connection open while it lasts.
    pub fn hold(&self) -> Held {
        self.held.send_modify(|held| *held += 1);
        Held(self.held.clone())
    }

    /// Resolves once the connection has had no stream holding it for `grace`, counted from
    /// now or from when its last such stream ends.
    pub async fn idle(&self, grace: Duration) {
        let mut held = self.held.subscribe();
        loop {
            // The sender lives in `self`, so these waits end only by the condition.
            let _ = held.wait_for(|held| *held == 0).await;
            if tokio::time::timeout(grace, held.wait_for(|held| *held > 0)).await.is_err() {
                return;
            }
        }
    }

    /// Resolves once a newcomer has taken this unproven connection's place.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let connections = &self.connections;
        let mut state = lock(&connections.state);
        if self.proven.load(std::sync::atomic::Ordering::Relaxed) {
            state.proven -= 1;
        } else if take_unproven(&mut state, self.peer, self.id) {
            state.unproven -= 1;
        }
        if let Some(peer) = state.peers.get_mut(&self.peer) {
            peer.open -= 1;
            if peer.open == 0 {
                state.peers.remove(&self.peer);
            }
        }
        connections.metrics.connections.dec();
        connections.metrics.unauthenticated_connections.set(state.unproven as i64);
    }
}

/// Takes connection `id` out of its address's unproven list; `false` when it is not there
/// (it was evicted, and counted out then).
fn take_unproven(state: &mut State, peer: Option<IpAddr>, id: u64) -> bool {
    let Some(list) = state.peers.get_mut(&peer).map(|p| &mut p.unproven) else { return false };
    let Some(at) = list.iter().position(|(held, _)| *held == id) else { return false };
    list.remove(at);
    true
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn pool(unproven: u64, proven: u64) -> Arc<Connections> {
        let limits = Limits::default()
            .with(Limit::UnauthenticatedConnections, unproven)
            .with(Limit::Connections, proven)
            .with(Limit::ConnectionsPerPeer, 100);
        Connections::new(limits, PortMetrics::default())
    }

    fn addr(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    #[tokio::test]
    async fn a_full_unproven_pool_makes_room_for_another_address_at_the_expense_of_the_largest_holder() {
        let connections = pool(4, 10);
        let flood: Vec<Slot> = (0..4).map(|_| connections.admit(addr(2)).unwrap()).collect();
        assert_eq!(connections.admit(addr(2)).err(), Some(Limit::UnauthenticatedConnections), "the holder itself");
        let newcomer = connections.admit(addr(3)).expect("another address gets in");
        tokio::time::timeout(Duration::from_secs(1), flood[0].evicted()).await.expect("the oldest of the flood goes");
        // The newcomer, holding one, is never the one to go while the flood holds more.
        let _more = connections.admit(addr(4)).unwrap();
        let _more = connections.admit(addr(5)).unwrap();
        assert!(newcomer.prove().is_ok());
        drop(flood);
        assert_eq!(lock(&connections.state).unproven, 2);
        assert_eq!(connections.metrics.connections.get(), 3);
    }

    #[tokio::test]
    async fn proven_connections_leave_the_unproven_pool_and_are_bounded_apart() {
        let connections = pool(2, 1);
        let first = connections.admit(addr(2)).unwrap();
        let second = connections.admit(addr(2)).unwrap();
        first.prove().unwrap();
        assert_eq!(second.prove(), Err(Limit::Connections));
        let _third = connections.admit(addr(2)).expect("the proven one left the unproven pool");
        drop(first);
        second.prove().unwrap();
        assert_eq!(lock(&connections.state).proven, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_after_the_grace_without_a_stream_holding_it() {
        let connections = pool(2, 2);
        let slot = connections.admit(addr(2)).unwrap();
        let held = slot.hold();
        let grace = Duration::from_secs(10);
        assert!(tokio::time::timeout(Duration::from_secs(60), slot.idle(grace)).await.is_err(), "held");
        drop(held);
        let started = tokio::time::Instant::now();
        slot.idle(grace).await;
        assert_eq!(started.elapsed(), grace);
    }
}
