//! The peer-to-peer transport of a tally node: libp2p over TCP, encrypted and authenticated
//! with noise, multiplexed with yamux.
//!
//! Each node's libp2p identity is its ed25519 node key, so a peer id *is* a validator's or an
//! observer's public key. Only peers on the allowlist (the genesis validators plus the
//! observers named in the config) may connect; any other is refused after the noise handshake
//! and counted. The validator set is small and every validator connects to every other, so
//! messages are sent directly to each peer rather than gossiped: one hop, no mesh to tune,
//! and no peer can delay another's message by sitting in the middle. Sends that are lost while
//! a peer is away are made good by the consensus core's re-sends and by block sync.
//!
//! One-way messages (consensus, relayed entries, pushed blocks) go on one long-lived stream
//! per peer ([`messages`]); block sync, which needs an answer, is a request-response protocol.
//! Both carry [`wire::Request`]s; every frame has an explicit size limit, and every queue
//! between the network and the node is bounded.

pub mod gate;
pub mod messages;
pub mod summary;
pub mod wire;

use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::Transport as _;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, connection_limits, identity, Multiaddr, PeerId, StreamProtocol};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use tally_types::{Keypair, Name, PublicKey};
use tokio::sync::{mpsc, watch};
pub use wire::{CertifiedBlock, Envelope, ProposedBlock, ProposedEntry, Request, Response};

/// Block-sync requests served at once (each reads up to `SYNC_ANSWER_BYTES_MAX` from disk).
pub const SYNC_SERVES_MAX: usize = 4;

/// Most bytes of blocks in one block-sync answer (or `response_bytes_max`, if smaller), beyond
/// its first block. An answer is read, encoded, sent and decoded whole, so it takes several
/// times its size in memory on both sides; a smaller one costs only one more round trip per
/// few blocks.
pub const SYNC_ANSWER_BYTES_MAX: usize = 4 << 20;

/// Block-sync requests in flight per connection; the limit caps what one peer can make a
/// node buffer at once.
pub const CONCURRENT_STREAMS_MAX: usize = 128;

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A key could not be turned into a libp2p identity.
    #[error("key: {0}")]
    Key(String),
    /// The transport could not be built or could not listen.
    #[error("transport: {0}")]
    Transport(String),
}

/// An error and its causes on one line. libp2p's transport errors print nothing of their own
/// (an address already in use is only in their source), and an operator needs the cause.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.is_empty() {
        format!("{error:?}")
    } else {
        text
    }
}

/// Limits of the network layer. Each is documented in node-config/node.example.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request frame (a proposal with its full block must fit).
    pub request_bytes_max: usize,
    /// Largest response frame (one batch of synced blocks).
    pub response_bytes_max: usize,
    /// Messages waiting for the node; beyond this, new ones are dropped and counted.
    pub inbound_queue_max: usize,
    /// Messages waiting to be written to each peer, and commands waiting for the network
    /// task. A peer's messages are also bounded in bytes: twice `request_bytes_max`.
    pub outbound_queue_max: usize,
    /// Established connections per peer.
    pub connections_per_peer_max: u32,
    /// What a connection may hold before it has proven an allowed key ([`gate`]).
    pub gate: gate::GateLimits,
}

/// How long refusals of one kind are summarised in one log line ([`summary`]).
pub const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// The log of refused incoming connections: the gate (which alone knows why it refused one)
/// and the network task (which hears of the rest) share it.
fn refusal_log() -> summary::SummaryLog {
    summary::SummaryLog::new(
        "refused a connection",
        "refused more connections",
        REFUSALS_LOGGED_EVERY,
    )
}

/// Where to find a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// Its node key.
    pub key: PublicKey,
    /// Its listening address.
    pub addr: SocketAddr,
}

/// What the network needs to start.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The chain; requests for another are refused.
    pub chain_id: Name,
    /// Where to listen for peers.
    pub listen: SocketAddr,
    /// Peers to keep a connection to.
    pub dial: Vec<PeerAddress>,
    /// Every key allowed to connect (validators and observers), dialled or not.
    pub allowed: Vec<PublicKey>,
    /// Size and queue limits.
    pub limits: Limits,
}

/// What arrives for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A request from a peer (consensus, entry or pushed blocks).
    Request {
        /// The sending node's key.
        from: PublicKey,
        /// What it sent.
        request: Request,
    },
    /// An answer to [`NetworkHandle::ask_blocks`].
    Blocks {
        /// Who answered.
        from: PublicKey,
        /// The blocks, oldest first.
        blocks: Vec<CertifiedBlock>,
    },
    /// A [`NetworkHandle::ask_blocks`] that will not be answered: the peer refused, timed out
    /// or went away.
    BlocksFailed {
        /// Who was asked.
        from: PublicKey,
    },
    /// A peer connected.
    Connected(PublicKey),
    /// A peer's last connection closed.
    Disconnected(PublicKey),
}

/// Answers block-sync requests from committed storage.
pub trait BlockSource: Send + Sync + 'static {
    /// Committed blocks from `from_height` on, oldest first, whose encoding fits `bytes_max`;
    /// the first block always (the node's config makes every frame limit hold a full block).
    fn blocks_from(&self, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock>;
}

/// What the network has dropped or refused, for the status API.
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    wrong_chain: AtomicU64,
    malformed_or_oversized: AtomicU64,
    inbound_queue_full: AtomicU64,
    outbound_queue_full: AtomicU64,
    refused_connections: AtomicU64,
    refused_unknown_key: AtomicU64,
    refused_over_limit: AtomicU64,
    handshakes_evicted: AtomicU64,
    handshakes_timed_out: AtomicU64,
    handshakes_failed: AtomicU64,
    send_failures: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// Requests received from allowed peers.
    pub received: u64,
    /// Requests for another chain, refused.
    pub wrong_chain: u64,
    /// Frames that did not decode or exceeded the size limits.
    pub malformed_or_oversized: u64,
    /// Requests dropped because the node's queue was full.
    pub inbound_queue_full: u64,
    /// Sends dropped because the network task's queue was full.
    pub outbound_queue_full: u64,
    /// Incoming connections refused or dropped before they joined, for any of the reasons
    /// below.
    pub refused_connections: u64,
    /// Handshakes completed with a key that is not on the allowlist.
    pub refused_unknown_key: u64,
    /// Connections from an allowed peer beyond the established-connection limits.
    pub refused_over_limit: u64,
    /// Connections dropped before their handshake completed, to make room for newer ones
    /// ([`gate`]).
    pub handshakes_evicted: u64,
    /// Connections whose handshake did not complete within the timeout.
    pub handshakes_timed_out: u64,
    /// Handshakes that failed: not the protocol, garbage, or closed half-way.
    pub handshakes_failed: u64,
    /// Requests that failed to reach a peer (down, timed out).
    pub send_failures: u64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an incoming connection refused for the reason `kind` counts.
    fn refuse(&self, kind: &AtomicU64) {
        Self::bump(kind);
        Self::bump(&self.refused_connections);
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            received: g(&self.received),
            wrong_chain: g(&self.wrong_chain),
            malformed_or_oversized: g(&self.malformed_or_oversized),
            inbound_queue_full: g(&self.inbound_queue_full),
            outbound_queue_full: g(&self.outbound_queue_full),
            refused_connections: g(&self.refused_connections),
            refused_unknown_key: g(&self.refused_unknown_key),
            refused_over_limit: g(&self.refused_over_limit),
            handshakes_evicted: g(&self.handshakes_evicted),
            handshakes_timed_out: g(&self.handshakes_timed_out),
            handshakes_failed: g(&self.handshakes_failed),
            send_failures: g(&self.send_failures),
        }
    }
}

enum Command {
    AskBlocks { to: PublicKey, from_height: u64 },
}

/// The node's side of the network: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    /// Each known peer's message queue ([`messages`]).
    queues: Arc<HashMap<PublicKey, messages::PeerQueue>>,
    chain_id: Name,
    frame_bytes_max: usize,
    counters: Arc<Counters>,
    connected: watch::Receiver<BTreeSet<PublicKey>>,
    local: PublicKey,
}

impl NetworkHandle {
    /// Sends `request` to one peer. Never blocks: when the peer's queue is full the send is
    /// dropped and counted (consensus re-sends; entries are relayed by every node that has
    /// them).
    pub fn send(&self, to: PublicKey, request: Request) {
        self.send_all([&to], &request);
    }

    /// Sends `request` to each of `peers` (this node excluded), encoded once.
    pub fn send_all<'a>(&self, peers: impl IntoIterator<Item = &'a PublicKey>, request: &Request) {
        let mut frame = None;
        for p in peers {
            let Some(queue) = self.queues.get(p).filter(|_| *p != self.local) else {
                continue;
            };
            let frame = match &frame {
                Some(f) => f,
                None => match messages::frame(&self.chain_id, request, self.frame_bytes_max) {
                    Ok(f) => frame.insert(Arc::new(f)),
                    Err(e) => {
                        Counters::bump(&self.counters.send_failures);
                        tracing::warn!(kind = request.kind(), error = %e, "message not sent");
                        return;
                    }
                },
            };
            if !queue.push(frame.clone()) {
                Counters::bump(&self.counters.outbound_queue_full);
            }
        }
    }

    /// Asks `to` for committed blocks from `from_height`; the answer arrives as
    /// [`Inbound::Blocks`].
    pub fn ask_blocks(&self, to: PublicKey, from_height: u64) {
        if to != self.local {
            self.enqueue(Command::AskBlocks { to, from_height });
        }
    }

    fn enqueue(&self, c: Command) {
        if self.commands.try_send(c).is_err() {
            Counters::bump(&self.counters.outbound_queue_full);
        }
    }

    /// Peers with an open connection.
    pub fn connected(&self) -> BTreeSet<PublicKey> {
        self.connected.borrow().clone()
    }

    /// Drop and refusal counts.
    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }
}

/// The running network task.
pub struct Network {
    /// Where peers can reach this node (the config may ask for port 0).
    pub listen_addr: SocketAddr,
    /// The handle.
    pub handle: NetworkHandle,
    task: tokio::task::JoinHandle<()>,
    /// The message streams' writers and readers.
    streams: tokio::task::JoinSet<()>,
}

impl Network {
    /// Stops the tasks and closes every connection.
    pub async fn shutdown(mut self) {
        drop(self.handle);
        self.task.abort();
        let _ = self.task.await;
        self.streams.shutdown().await;
    }
}

/// The libp2p peer id of a tally node key.
pub fn peer_id(key: &PublicKey) -> Result<PeerId, NetworkError> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .map_err(|e| NetworkError::Key(format!("{}: {e}", key.short())))?;
    Ok(identity::PublicKey::from(pk).to_peer_id())
}

/// The tally key a peer id stands for, in hex, for log lines: an ed25519 peer id holds its
/// public key. Anything else is shown as libp2p prints it.
pub(crate) fn key_of(peer: &PeerId) -> String {
    libp2p::multihash::Multihash::<64>::from_bytes(&peer.to_bytes())
        .ok()
        .filter(|h| h.code() == 0)
        .and_then(|h| identity::PublicKey::try_decode_protobuf(h.digest()).ok())
        .and_then(|k| k.try_into_ed25519().ok())
        .map(|k| PublicKey(k.to_bytes()).to_hex())
        .unwrap_or_else(|| peer.to_string())
}

/// A connection's remote address, as `ip:port` when it is one.
pub(crate) fn addr_of(addr: &Multiaddr) -> String {
    socket_addr(addr).map_or_else(|| addr.to_string(), |a| a.to_string())
}

fn multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    rpc: request_response::Behaviour<wire::Codec>,
    streams: libp2p_stream::Behaviour,
}

/// The request an envelope carries when it is for this chain. Every envelope read, by either
/// protocol, is counted received here, and one for another chain is counted and dropped.
fn for_chain(counters: &Counters, chain_id: &Name, envelope: Envelope) -> Option<Request> {
    Counters::bump(&counters.received);
    if envelope.chain_id != *chain_id {
        Counters::bump(&counters.wrong_chain);
        return None;
    }
    Some(envelope.request)
}

/// Hands what arrived to the node, or counts it dropped when the node's queue is full.
fn deliver<T: From<Inbound>>(inbound: &SyncSender<T>, counters: &Counters, item: Inbound) {
    match inbound.try_send(T::from(item)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => Counters::bump(&counters.inbound_queue_full),
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// Starts listening and dialling. Must be called inside a tokio runtime.
pub async fn start<T: From<Inbound> + Send + 'static>(
    config: NetworkConfig,
    key: &Keypair,
    source: Arc<dyn BlockSource>,
    inbound: SyncSender<T>,
) -> Result<Network, NetworkError> {
    let identity = identity::Keypair::ed25519_from_bytes(*key.secret_bytes())
        .map_err(|e| NetworkError::Key(e.to_string()))?;
    let mut peers: HashMap<PeerId, PublicKey> = HashMap::new();
    for k in config
        .allowed
        .iter()
        .chain(config.dial.iter().map(|p| &p.key))
    {
        peers.insert(peer_id(k)?, *k);
    }
    let limits = config.limits;
    let counters = Arc::new(Counters::default());
    let allowed_peers = peers.keys().copied().collect();
    let gate_counters = counters.clone();
    let refusals = refusal_log();
    let gate_log = refusals.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<gate::Gate, Box<dyn std::error::Error + Send + Sync>> {
                let authenticated = libp2p::tcp::tokio::Transport::new(
                    libp2p::tcp::Config::default().nodelay(true),
                )
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(libp2p::noise::Config::new(key)?)
                .multiplex(libp2p::yamux::Config::default())
                // The gate bounds incoming handshakes itself, and counts those it cuts.
                .outbound_timeout(limits.gate.handshake_timeout)
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed();
                Ok(gate::Gate::new(
                    authenticated,
                    limits.gate,
                    allowed_peers,
                    gate_counters,
                    gate_log,
                ))
            },
        )
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_behaviour(|_| {
            let mut allow = allow_block_list::Behaviour::default();
            for p in peers.keys() {
                allow.allow_peer(*p);
            }
            let connection_limits = connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(limits.connections_per_peer_max))
                .with_max_established(Some(
                    (peers.len() as u32 + 1) * limits.connections_per_peer_max,
                ));
            Behaviour {
                allow,
                limits: connection_limits::Behaviour::new(connection_limits),
                rpc: request_response::Behaviour::with_codec(
                    wire::Codec {
                        request_bytes_max: limits.request_bytes_max,
                        response_bytes_max: limits.response_bytes_max,
                        counters: counters.clone(),
                    },
                    [(StreamProtocol::new(wire::PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(CONCURRENT_STREAMS_MAX),
                ),
                streams: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| NetworkError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        // The swarm's own limit on setting up a connection, past the gate's: the gate's fires
        // first, and is counted.
        .with_connection_timeout(limits.gate.handshake_timeout + Duration::from_secs(1))
        .build();
    swarm
        .listen_on(multiaddr(config.listen))
        .map_err(|e| NetworkError::Transport(with_sources(&e)))?;
    // The first event is the bound address (port 0 becomes a real port).
    let listen_addr = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                if let Some(a) = socket_addr(&address) {
                    break a;
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(NetworkError::Transport(with_sources(&error)))
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                return Err(NetworkError::Transport(format!(
                    "listener closed: {reason:?}"
                )))
            }
            _ => {}
        }
    };
    let (tx, rx) = mpsc::channel(limits.outbound_queue_max);
    let (connected, connected_rx) = watch::channel(BTreeSet::new());
    let mut control = swarm.behaviour().streams.new_control();
    let incoming = control
        .accept(StreamProtocol::new(wire::MESSAGE_PROTOCOL))
        .map_err(|e| NetworkError::Transport(e.to_string()))?;
    let mut streams = tokio::task::JoinSet::new();
    streams.spawn(
        messages::Readers {
            chain_id: config.chain_id.clone(),
            peers: peers.clone(),
            frame_bytes_max: limits.request_bytes_max,
            inbound: inbound.clone(),
            counters: counters.clone(),
        }
        .run(incoming),
    );
    let queue_bytes_max = limits.request_bytes_max.saturating_mul(2);
    let queues = peers
        .iter()
        .filter(|(_, k)| **k != key.public())
        .map(|(peer, k)| {
            let queue = messages::start_writer(
                &mut streams,
                *peer,
                *k,
                control.clone(),
                connected_rx.clone(),
                counters.clone(),
                (limits.outbound_queue_max, queue_bytes_max),
            );
            (*k, queue)
        })
        .collect();
    let handle = NetworkHandle {
        commands: tx,
        queues: Arc::new(queues),
        chain_id: config.chain_id.clone(),
        frame_bytes_max: limits.request_bytes_max,
        counters: counters.clone(),
        connected: connected_rx,
        local: key.public(),
    };
    let task = Task {
        swarm,
        chain_id: config.chain_id,
        peers,
        dial: config
            .dial
            .iter()
            .filter_map(|p| Some((peer_id(&p.key).ok()?, multiaddr(p.addr))))
            .collect(),
        limits,
        source,
        inbound,
        counters,
        connected,
        blocks_asked: HashMap::new(),
        serving: tokio::task::JoinSet::new(),
        refusals,
    };
    tracing::info!(%listen_addr, peers = task.dial.len(), "network listening");
    let task = tokio::spawn(task.run(rx));
    Ok(Network {
        listen_addr,
        handle,
        task,
        streams,
    })
}

struct Task<T> {
    swarm: libp2p::Swarm<Behaviour>,
    chain_id: Name,
    peers: HashMap<PeerId, PublicKey>,
    dial: Vec<(PeerId, Multiaddr)>,
    limits: Limits,
    source: Arc<dyn BlockSource>,
    inbound: SyncSender<T>,
    counters: Arc<Counters>,
    connected: watch::Sender<BTreeSet<PublicKey>>,
    blocks_asked: HashMap<OutboundRequestId, PublicKey>,
    serving: tokio::task::JoinSet<(ResponseChannel<Response>, Vec<CertifiedBlock>)>,
    /// Refused connections, logged a few lines per interval however many there are.
    refusals: summary::SummaryLog,
}

impl<T: From<Inbound> + Send + 'static> Task<T> {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.redial();
        let mut redial = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => self.command(c),
                    None => break,
                },
                e = self.swarm.select_next_some() => self.event(e),
                Some(served) = self.serving.join_next(), if !self.serving.is_empty() => {
                    if let Ok((channel, blocks)) = served {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rpc
                            .send_response(channel, Response::Blocks(blocks));
                    }
                }
                _ = redial.tick() => {
                    self.redial();
                    self.refusals.summarise();
                }
            }
        }
    }

    /// Keeps a connection to every peer to dial.
    fn redial(&mut self) {
        for (peer, addr) in self.dial.clone() {
            if !self.swarm.is_connected(&peer) {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    if !matches!(e, DialError::DialPeerConditionFalse(_)) {
                        let key = self.peers.get(&peer).map(ToString::to_string);
                        tracing::debug!(peer = key.as_deref(), addr = %addr_of(&addr), error = %e, "dial failed");
                    }
                }
            }
        }
    }

    fn peer_of(&self, key: &PublicKey) -> Option<PeerId> {
        self.peers
            .iter()
            .find_map(|(p, k)| (k == key).then_some(*p))
    }

    fn envelope(&self, request: Request) -> Envelope {
        Envelope {
            chain_id: self.chain_id.clone(),
            request,
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::AskBlocks { to, from_height } => {
                if let Some(peer) = self.peer_of(&to) {
                    let env = self.envelope(Request::Blocks { from_height });
                    let id = self.swarm.behaviour_mut().rpc.send_request(&peer, env);
                    self.blocks_asked.insert(id, to);
                }
            }
        }
    }

    fn deliver(&self, item: Inbound) {
        deliver(&self.inbound, &self.counters, item);
    }

    fn set_connected(&self, key: PublicKey, up: bool) {
        self.connected.send_modify(|c| {
            if up {
                c.insert(key);
            } else {
                c.remove(&key);
            }
        });
        self.deliver(if up {
            Inbound::Connected(key)
        } else {
            Inbound::Disconnected(key)
        });
    }

    fn event(&mut self, e: SwarmEvent<BehaviourEvent>) {
        match e {
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(e)) => self.rpc(e),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                if let (Some(key), 1) = (self.peers.get(&peer_id), num_established.get()) {
                    let (addr, dialled) =
                        (addr_of(endpoint.get_remote_address()), endpoint.is_dialer());
                    tracing::info!(peer = %key, %addr, dialled, "peer connected");
                    self.set_connected(*key, true);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                endpoint,
                cause,
                ..
            } => {
                if let Some(key) = self.peers.get(&peer_id) {
                    let addr = addr_of(endpoint.get_remote_address());
                    let cause = cause.map(|c| with_sources(&c));
                    tracing::info!(peer = %key, %addr, cause = cause.as_deref(), "peer disconnected");
                    self.set_connected(*key, false);
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => self.refused(&error),
            _ => {}
        }
    }

    /// Counts and logs a connection refused after the gate let it through: an allowed peer
    /// over its connection limits. The gate counts and logs what it refuses itself, and every
    /// other failed incoming connection is one of those.
    fn refused(&mut self, error: &ListenError) {
        if let ListenError::Denied { .. } = error {
            self.counters.refuse(&self.counters.refused_over_limit);
            self.refusals.note("over_limit", &with_sources(error));
        }
    }

    /// Reads the blocks a peer asked for on the blocking pool, so that disk reads for sync
    /// never hold up consensus traffic; at most [`SYNC_SERVES_MAX`] at once, beyond which the
    /// request is refused (the peer asks again on a later tick).
    fn serve_blocks(&mut self, channel: ResponseChannel<Response>, from_height: u64) {
        if self.serving.len() >= SYNC_SERVES_MAX {
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, Response::Refused);
            return;
        }
        let source = self.source.clone();
        let bytes_max = (self.limits.response_bytes_max - 64).min(SYNC_ANSWER_BYTES_MAX);
        self.serving.spawn_blocking(move || {
            let blocks = source.blocks_from(from_height, bytes_max);
            (channel, blocks)
        });
    }

    fn rpc(&mut self, e: request_response::Event<Envelope, Response>) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let request = for_chain(&self.counters, &self.chain_id, request);
                    let Some(from) = self.peers.get(&peer).copied() else {
                        return; // the allowlist makes this unreachable
                    };
                    let response = match request {
                        None => Response::Refused,
                        Some(Request::Blocks { from_height }) => {
                            self.serve_blocks(channel, from_height);
                            return;
                        }
                        Some(request) => {
                            self.deliver(Inbound::Request { from, request });
                            Response::Ack
                        }
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .rpc
                        .send_response(channel, response);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let (Some(from), Response::Blocks(blocks)) =
                        (self.blocks_asked.remove(&request_id), response)
                    {
                        self.deliver(Inbound::Blocks { from, blocks });
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(from) = self.blocks_asked.remove(&request_id) {
                    self.deliver(Inbound::BlocksFailed { from });
                }
                Counters::bump(&self.counters.send_failures);
                tracing::debug!(peer = %key_of(&peer), error = %error, "request failed");
            }
            request_response::Event::InboundFailure { error, peer, .. } => {
                tracing::debug!(peer = %key_of(&peer), error = %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
