//! The door of the peer port: what a connection may hold before it has proven an allowed key.
//!
//! Until its noise handshake completes, a connection is anonymous: a stranger's idle TCP
//! connection looks the same as a validator's. Refusing new connections once a fixed number are
//! waiting (libp2p's pending-connection limit) lets anyone who holds that many idle connections
//! keep every validator out. The gate makes room instead. Connections are grouped by source
//! address (an IPv4 address, or an IPv6 /64, which one host can fill); when an address holds its
//! share, its own oldest waiting connection is dropped for the new one, and when the port holds
//! its total, the oldest connection of the address holding the most is. An honest handshake takes
//! a few round trips, so holding connections idle gains an attacker nothing: to crowd out a peer
//! at its own address it must open connections faster than its share per handshake time, and it
//! cannot crowd out a peer at another address at all. Each waiting connection is also dropped
//! after the handshake timeout, and one that proves a key not on the allowlist is refused at once.

use crate::summary::SummaryLog;
use crate::Counters;
use futures::future::BoxFuture;
use futures::FutureExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::Transport;
use libp2p::{Multiaddr, PeerId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a connection that has not proven an allowed key may hold. Each is documented in
/// node-config/node.example.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Time from accepting a connection to its proving an allowed key.
    pub handshake_timeout: Duration,
    /// Connections waiting for their handshake, in all.
    pub unproven_max: usize,
    /// Connections waiting for their handshake from one source address.
    pub unproven_per_address_max: usize,
}

impl Default for GateLimits {
    /// A handshake takes a few round trips: 5 s leaves room for slow links. 256 places, 32 per
    /// address, hold every validator and observer of a network many times over.
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            unproven_max: 256,
            unproven_per_address_max: 32,
        }
    }
}

/// Why the gate dropped an incoming connection before it joined the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A newer connection needed its place before its handshake completed.
    #[error("dropped before its handshake completed, to make room for a newer connection")]
    Evicted,
    /// The handshake did not complete within the timeout.
    #[error("handshake not completed within the timeout")]
    TimedOut,
    /// The handshake completed with a key that is not on the allowlist.
    #[error("proved a key that is not on the allowlist")]
    UnknownKey,
}

impl Refusal {
    /// The kind it is logged and summarised under.
    fn kind(self) -> &'static str {
        match self {
            Refusal::Evicted => "evicted",
            Refusal::TimedOut => "timed_out",
            Refusal::UnknownKey => "unknown_key",
        }
    }
}

/// The source a connection counts against: IPv6 hosts are given a /64 each, so one host's
/// addresses count as one.
fn source_of(addr: &Multiaddr) -> Option<IpAddr> {
    crate::socket_addr(addr).map(|a| match a.ip() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    })
}

/// The connections waiting for their handshake, oldest first.
#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, (Option<IpAddr>, oneshot::Sender<()>)>,
    per_source: HashMap<Option<IpAddr>, usize>,
}

impl Waiting {
    /// Takes a place for a connection from `source`, dropping the connection the limits say
    /// must go (its own future counts it, so a connection is counted once however it ends).
    /// Returns the place and the signal that it was taken back.
    fn admit(
        &mut self,
        source: Option<IpAddr>,
        limits: &GateLimits,
    ) -> (u64, oneshot::Receiver<()>) {
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        let over_share = from_source >= limits.unproven_per_address_max.max(1);
        if over_share || self.by_age.len() >= limits.unproven_max.max(1) {
            // The oldest connection of its own address, or, when the port is full, the oldest of
            // any address holding the most (ties go by age, never by hashing order).
            let most = self.per_source.values().copied().max();
            let goes = |s: &Option<IpAddr>| {
                if over_share {
                    *s == source
                } else {
                    self.per_source.get(s).copied() == most
                }
            };
            let oldest = self
                .by_age
                .iter()
                .find_map(|(place, (s, _))| goes(s).then_some(*place));
            if let Some(place) = oldest {
                // Dropping the sender wakes the connection's future, which then gives up.
                self.release(place);
            }
        }
        let place = self.next;
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.by_age.insert(place, (source, tx));
        *self.per_source.entry(source).or_default() += 1;
        (place, rx)
    }

    fn release(&mut self, place: u64) {
        if let Some((source, _)) = self.by_age.remove(&place) {
            if let Some(n) = self.per_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&source);
                }
            }
        }
    }
}

/// Gives a connection's place back when its handshake ends, however it ends.
struct Place {
    waiting: Arc<Mutex<Waiting>>,
    place: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.release(self.place);
        }
    }
}

type Output = (PeerId, StreamMuxerBox);

/// The authenticated, multiplexed transport with the gate in front of its incoming side.
/// Dials pass through untouched: a dialled peer's key is named in advance.
pub struct Gate {
    inner: Boxed<Output>,
    limits: GateLimits,
    allowed: Arc<HashSet<PeerId>>,
    counters: Arc<Counters>,
    log: SummaryLog,
    waiting: Arc<Mutex<Waiting>>,
}

impl Gate {
    /// The gate in front of `inner`, letting in only `allowed` keys. It counts its refusals in
    /// `counters` and logs them through `log`: only it knows why it refused.
    pub(crate) fn new(
        inner: Boxed<Output>,
        limits: GateLimits,
        allowed: HashSet<PeerId>,
        counters: Arc<Counters>,
        log: SummaryLog,
    ) -> Self {
        Self {
            inner,
            limits,
            allowed: Arc::new(allowed),
            counters,
            log,
            waiting: Arc::default(),
        }
    }

    fn admit(
        &self,
        upgrade: BoxFuture<'static, io::Result<Output>>,
        send_back_addr: &Multiaddr,
    ) -> BoxFuture<'static, io::Result<Output>> {
        let source = source_of(send_back_addr);
        let (place, evicted) = match self.waiting.lock() {
            Ok(mut w) => w.admit(source, &self.limits),
            Err(_) => {
                return futures::future::ready(Err(io::Error::other("gate poisoned"))).boxed()
            }
        };
        let place = Place {
            waiting: self.waiting.clone(),
            place,
        };
        let allowed = self.allowed.clone();
        let counters = self.counters.clone();
        let log = self.log.clone();
        let timeout = self.limits.handshake_timeout;
        let from = crate::addr_of(send_back_addr);
        async move {
            let _place = place;
            // The log line names where the connection came from, and the key it proved.
            let refused = |r: Refusal, key: Option<&PeerId>| {
                let key = key.map(|k| format!(", key {}", crate::key_of(k)));
                log.note(
                    r.kind(),
                    &format!("{r} (from {from}{})", key.unwrap_or_default()),
                );
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, r))
            };
            tokio::select! {
                // An evicted connection whose handshake also ended is counted as evicted.
                biased;
                _ = evicted => {
                    counters.refuse(&counters.handshakes_evicted);
                    refused(Refusal::Evicted, None)
                }
                done = tokio::time::timeout(timeout, upgrade) => match done {
                    Err(_) => {
                        counters.refuse(&counters.handshakes_timed_out);
                        refused(Refusal::TimedOut, None)
                    }
                    Ok(Ok((peer, muxer))) if allowed.contains(&peer) => Ok((peer, muxer)),
                    Ok(Ok((peer, _))) => {
                        counters.refuse(&counters.refused_unknown_key);
                        refused(Refusal::UnknownKey, Some(&peer))
                    }
                    Ok(Err(e)) => {
                        counters.refuse(&counters.handshakes_failed);
                        log.note("failed", &format!("{e} (from {from})"));
                        Err(e)
                    }
                },
            }
        }
        .boxed()
    }
}

impl Transport for Gate {
    type Output = Output;
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, io::Result<Output>>;
    type Dial = <Boxed<Output> as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            }) => {
                let upgrade = this.admit(upgrade, &send_back_addr);
                Poll::Ready(TransportEvent::Incoming {
                    listener_id,
                    upgrade,
                    local_addr,
                    send_back_addr,
                })
            }
            Poll::Ready(other) => Poll::Ready(other.map_upgrade(|u| u.boxed())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GateLimits = GateLimits {
        handshake_timeout: Duration::from_secs(1),
        unproven_max: 4,
        unproven_per_address_max: 2,
    };

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn an_address_over_its_share_loses_its_own_oldest_connection() {
        let mut w = Waiting::default();
        let (_, mut first) = w.admit(ip(1), &LIMITS);
        let (_, mut second) = w.admit(ip(1), &LIMITS);
        let (_, mut other) = w.admit(ip(2), &LIMITS);
        let (_, mut third) = w.admit(ip(1), &LIMITS);
        assert!(first
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        for still in [&mut second, &mut other, &mut third] {
            assert_eq!(still.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        }
        assert_eq!(w.per_source.get(&ip(1)), Some(&2));
    }

    #[test]
    fn a_full_port_drops_the_oldest_connection_of_the_address_holding_most() {
        let mut w = Waiting::default();
        let (_, mut a1) = w.admit(ip(1), &LIMITS);
        let (_, mut b1) = w.admit(ip(2), &LIMITS);
        let (_, mut b2) = w.admit(ip(2), &LIMITS);
        let (_, mut c1) = w.admit(ip(3), &LIMITS);
        // The port is full (4): the newcomer from a fourth address costs 2 its oldest.
        let (_, mut d1) = w.admit(ip(4), &LIMITS);
        assert_eq!(b1.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        for still in [&mut a1, &mut b2, &mut c1, &mut d1] {
            assert_eq!(still.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        }
        assert_eq!(w.by_age.len(), 4);
    }

    #[test]
    fn among_addresses_holding_as_many_the_oldest_connection_goes() {
        let mut w = Waiting::default();
        let mut waiting: Vec<_> = (1..=4).map(|n| w.admit(ip(n), &LIMITS).1).collect();
        // Four addresses with one each fill the port: a fifth costs the first comer its place,
        // whatever order the addresses hash in.
        let (_, mut fifth) = w.admit(ip(5), &LIMITS);
        assert_eq!(
            waiting[0].try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        for still in waiting.iter_mut().skip(1).chain([&mut fifth]) {
            assert_eq!(still.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        }
    }

    #[test]
    fn a_place_given_back_frees_its_address_share() {
        let mut w = Waiting::default();
        let (p, _rx) = w.admit(ip(1), &LIMITS);
        w.release(p);
        assert!(w.per_source.is_empty() && w.by_age.is_empty());
        assert_eq!(
            source_of(&"/ip6/2001:db8::1:2/tcp/1".parse().expect("address")),
            source_of(&"/ip6/2001:db8::9:9/tcp/2".parse().expect("address"))
        );
    }
}
