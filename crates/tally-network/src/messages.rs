//! One-way messages (consensus, relayed entries, pushed blocks) on one long-lived stream per
//! peer and direction.
//!
//! A request-response exchange per message opened a substream, negotiated its protocol, set a
//! timer for its timeout and sent an answer nobody needed: at a block every 50 ms, votes twice
//! per block and relays every 10 ms to every peer, that was most of a validator's network CPU
//! at moderate load. Here each node keeps, for each peer, a queue and a task that writes the
//! queue's frames to one stream, as many as are waiting in one write; the peer reads frames
//! off it in order until the stream or the connection ends. A message that cannot be written
//! (the peer is away, the stream broke, the write timed out) is dropped and counted, as a
//! failed request was: consensus re-sends and block sync make good what is lost.

use crate::wire::{self, Envelope, EnvelopeRef, Request};
use crate::{deliver, for_chain, Counters, Inbound};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_types::{codec, Name, PublicKey};
use tokio::sync::{mpsc, watch};

/// How long opening a stream, or writing to one, may take before the messages are dropped
/// and the stream opened again for the next.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long messages wait for a peer that is not connected (being dialled, or away) before
/// they are dropped.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Most bytes of waiting frames gathered into one write (a larger single frame goes alone).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Inbound message streams a peer may hold open at once. A node opens one to each peer and
/// opens another only when the last broke, so more than a few is a misbehaving peer.
pub const MESSAGE_STREAMS_PER_PEER_MAX: usize = 4;

fn protocol() -> StreamProtocol {
    StreamProtocol::new(wire::MESSAGE_PROTOCOL)
}

/// The sending side of one peer's queue: frames and the bytes they hold.
#[derive(Clone)]
pub(crate) struct PeerQueue {
    frames: mpsc::Sender<Arc<Vec<u8>>>,
    /// Bytes queued and not yet taken by the writer; bounded by `bytes_max`.
    queued: Arc<AtomicUsize>,
    bytes_max: usize,
}

impl PeerQueue {
    /// Queues a frame, or says it was dropped because the queue is full or gone.
    pub(crate) fn push(&self, frame: Arc<Vec<u8>>) -> bool {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before + len > self.bytes_max || self.frames.try_send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Frames one envelope for every peer it goes to: encoded once, however many peers.
pub(crate) fn frame(chain_id: &Name, request: &Request, max: usize) -> std::io::Result<Vec<u8>> {
    wire::framed(&codec::encode(&EnvelopeRef { chain_id, request }), max)
}

/// Starts the writer for one peer and returns its queue. The writer stops when every copy of
/// the queue is dropped.
pub(crate) fn start_writer(
    tasks: &mut tokio::task::JoinSet<()>,
    peer: PeerId,
    key: PublicKey,
    control: libp2p_stream::Control,
    connected: watch::Receiver<BTreeSet<PublicKey>>,
    counters: Arc<Counters>,
    (frames_max, bytes_max): (usize, usize),
) -> PeerQueue {
    let (tx, rx) = mpsc::channel(frames_max);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        peer,
        key,
        control,
        connected,
        counters,
        queued: queued.clone(),
        stream: None,
        away: false,
    };
    tasks.spawn(writer.run(rx));
    PeerQueue {
        frames: tx,
        queued,
        bytes_max,
    }
}

struct Writer {
    peer: PeerId,
    key: PublicKey,
    control: libp2p_stream::Control,
    connected: watch::Receiver<BTreeSet<PublicKey>>,
    counters: Arc<Counters>,
    queued: Arc<AtomicUsize>,
    stream: Option<libp2p::Stream>,
    /// The peer stayed away for [`CONNECT_WAIT`]: its messages are dropped at once until
    /// it is connected again, so a long outage neither stalls the queue nor floods the peer
    /// with old messages when it returns.
    away: bool,
}

impl Writer {
    async fn run(mut self, mut frames: mpsc::Receiver<Arc<Vec<u8>>>) {
        while let Some(first) = frames.recv().await {
            // Everything waiting goes in one write: one yamux frame and one TCP send for a
            // tick's votes and relays instead of one each.
            let mut count = 1;
            let mut taken = first.len();
            let mut batch = match Arc::try_unwrap(first) {
                Ok(bytes) => bytes,
                Err(shared) => shared.to_vec(),
            };
            while batch.len() < WRITE_BATCH_BYTES {
                let Ok(next) = frames.try_recv() else { break };
                count += 1;
                taken += next.len();
                batch.extend_from_slice(&next);
            }
            self.queued.fetch_sub(taken, Ordering::Relaxed);
            if let Err(e) = self.write(&batch).await {
                self.stream = None;
                if self.away {
                    // Whatever else is queued went stale waiting for the peer.
                    while let Ok(stale) = frames.try_recv() {
                        self.queued.fetch_sub(stale.len(), Ordering::Relaxed);
                        count += 1;
                    }
                }
                for _ in 0..count {
                    Counters::bump(&self.counters.send_failures);
                }
                tracing::debug!(peer = %self.key.short(), error = %e, "messages not sent");
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.connected.borrow().contains(&self.key) {
            self.away = false;
        } else {
            // A stream is opened on a connection the network task made: opening one without
            // would dial the peer with no address.
            self.stream = None;
            let key = self.key;
            let up = self.connected.wait_for(|c| c.contains(&key));
            let wait = if self.away {
                Duration::ZERO
            } else {
                CONNECT_WAIT
            };
            match tokio::time::timeout(wait, up).await {
                Ok(Ok(_)) => self.away = false,
                _ => {
                    self.away = true;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "peer not connected",
                    ));
                }
            }
        }
        // A stream kept from before can be dead (its connection closed while another one to
        // the same peer stayed up, or the peer refused it): one fresh stream gets a second try.
        let kept = self.stream.is_some();
        match self.write_on_stream(bytes).await {
            Err(_) if kept => {
                self.stream = None;
                self.write_on_stream(bytes).await
            }
            done => done,
        }
    }

    async fn write_on_stream(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = match self.stream.as_mut() {
            Some(s) => s,
            None => {
                // The peer's reader answers a new stream with one byte: libp2p-stream drops an
                // inbound stream its acceptor is not ready for, and frames written into one
                // that was dropped would be lost without an error here.
                let open = async {
                    let mut s = self
                        .control
                        .open_stream(self.peer, protocol())
                        .await
                        .map_err(std::io::Error::other)?;
                    let mut accepted = [0u8; 1];
                    s.read_exact(&mut accepted).await?;
                    Ok::<_, std::io::Error>(s)
                };
                self.stream.insert(within_write_timeout(open).await?)
            }
        };
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        within_write_timeout(write).await
    }
}

/// `io`, or a timed-out error once [`WRITE_TIMEOUT`] has passed.
async fn within_write_timeout<T>(
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(WRITE_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// What a reader needs to hand messages to the node.
pub(crate) struct Readers<T> {
    pub(crate) chain_id: Name,
    pub(crate) peers: HashMap<PeerId, PublicKey>,
    pub(crate) frame_bytes_max: usize,
    pub(crate) inbound: SyncSender<T>,
    pub(crate) counters: Arc<Counters>,
}

impl<T: From<Inbound> + Send + 'static> Readers<T> {
    /// Accepts peers' message streams and reads each on a task of its own, until `incoming`
    /// ends (the swarm is gone). Dropping this future stops every reader.
    pub(crate) async fn run(self, mut incoming: libp2p_stream::IncomingStreams) {
        let this = Arc::new(self);
        let mut readers = tokio::task::JoinSet::new();
        let open: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    // The allowlist refuses connections from anyone else.
                    let Some(from) = this.peers.get(&peer).copied() else { continue };
                    let Some(guard) = StreamGuard::take(&open, peer) else {
                        tracing::warn!(peer = %from.short(), "refused a message stream: too many open");
                        continue;
                    };
                    readers.spawn(this.clone().read(from, stream, guard));
                }
                Some(_) = readers.join_next(), if !readers.is_empty() => {}
            }
        }
    }

    async fn read(
        self: Arc<Self>,
        from: PublicKey,
        mut stream: libp2p::Stream,
        _guard: StreamGuard,
    ) {
        // Tells the writer its stream was accepted (see `Writer::write_on_stream`).
        if stream.write_all(&[1]).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        loop {
            let bytes = match wire::read_frame(&mut stream, self.frame_bytes_max).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    // An oversized frame's body is not read, so the stream is at an unknown
                    // place: it ends, and the peer opens another with its next message.
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        Counters::bump(&self.counters.malformed_or_oversized);
                    }
                    tracing::debug!(peer = %from.short(), error = %e, "message stream ended");
                    return;
                }
            };
            // A whole frame that does not decode is skipped: the next one starts after it.
            let Ok(envelope) = wire::decode::<Envelope>(&bytes) else {
                Counters::bump(&self.counters.malformed_or_oversized);
                continue;
            };
            let Some(request) = for_chain(&self.counters, &self.chain_id, envelope) else {
                continue;
            };
            match request {
                // Sync asks for an answer, so it goes by request-response only.
                Request::Blocks { .. } => {
                    Counters::bump(&self.counters.malformed_or_oversized);
                }
                request => deliver(
                    &self.inbound,
                    &self.counters,
                    Inbound::Request { from, request },
                ),
            }
        }
    }
}

/// One open inbound stream of a peer, counted while it lives.
struct StreamGuard {
    open: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl StreamGuard {
    fn take(open: &Arc<Mutex<HashMap<PeerId, usize>>>, peer: PeerId) -> Option<StreamGuard> {
        let mut counts = open.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(peer).or_default();
        if *count >= MESSAGE_STREAMS_PER_PEER_MAX {
            return None;
        }
        *count += 1;
        Some(StreamGuard {
            open: open.clone(),
            peer,
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}
