//! The shell around the [`Engine`]: one thread that owns the clocks and the network handle,
//! hands the engine what arrives and what time has made due, and carries out what it
//! asks. RocksDB is the engine's [`Disk`].

use crate::engine::{within_bytes, Action, Disk, Event, Now};
use crate::{NodeError, Shared};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tally_network::{BlockSource, CertifiedBlock, Inbound, NetworkHandle, Request};
use tally_storage::{CommitBatch, EntryRecord, Head, StorageError, Store};
use tally_types::{Block, EntryId, Hash, PublicKey, TimestampMs};

/// What wakes the consensus thread.
#[derive(Debug)]
pub enum Wake {
    /// Something from the network.
    Net(Inbound),
    /// The API admitted entries into an empty relay queue (or, without a network, any entry).
    Work,
    /// Stop.
    Stop,
}

impl From<Inbound> for Wake {
    fn from(i: Inbound) -> Self {
        Wake::Net(i)
    }
}

/// This node's wall clock.
pub fn now_ms() -> TimestampMs {
    TimestampMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// The engine's clocks, read from this machine.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    /// A monotonic clock that starts now.
    pub fn new() -> Self {
        Clock {
            started: Instant::now(),
        }
    }

    /// Both clocks, now.
    pub fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall: now_ms(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves block sync from committed storage.
pub struct StoreSource(pub Store);

impl BlockSource for StoreSource {
    fn blocks_from(&self, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock> {
        blocks_from(&self.0, from_height, bytes_max)
    }
}

fn blocks_from(store: &Store, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock> {
    let Ok(head) = store.head() else {
        return Vec::new();
    };
    let stored = (from_height.max(1)..=head.height).map_while(|h| match store.certified_block(h) {
        Ok(Some((block, certificate))) => Some(CertifiedBlock { block, certificate }),
        Ok(None) => None,
        Err(e) => {
            // The answer stops before it; the scrub finds the damage and the node repairs it.
            tracing::warn!(height = h, error = %e, "a stored block does not read back; not served");
            None
        }
    });
    within_bytes(stored, bytes_max)
}

impl Disk for Store {
    fn commit_block(&self, batch: &CommitBatch<'_>) -> Result<Head, StorageError> {
        Store::commit_block(self, batch)
    }

    fn entry(&self, id: &EntryId) -> Result<Option<EntryRecord>, StorageError> {
        Store::entry(self, id)
    }

    fn blocks_from(&self, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock> {
        blocks_from(self, from_height, bytes_max)
    }

    fn pending_block(&self, hash: &Hash) -> Result<Option<Block>, StorageError> {
        Store::pending_block(self, hash)
    }

    fn put_evidence(
        &self,
        offender: &PublicKey,
        height: u64,
        evidence: &[u8],
    ) -> Result<bool, StorageError> {
        Store::put_evidence(self, offender, height, evidence)
    }
}

/// Runs the engine until stopped. An error stops the node.
pub fn run(
    shared: Arc<Shared>,
    net: Option<NetworkHandle>,
    wakes: Receiver<Wake>,
) -> Result<(), NodeError> {
    let clock = shared.clock;
    // Events waiting for the engine, oldest first: one per turn, each under the lock on its
    // own, so API requests wait for one event at most.
    let mut pending: VecDeque<Event> = VecDeque::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (actions, wake_at) = {
            let mut engine = shared.engine()?;
            let now = clock.now();
            match pending.pop_front() {
                Some(e) => engine.handle(now, e)?,
                None => engine.poll(now)?,
            }
            shared.publish_status(engine.status());
            (engine.ready(), engine.wake_at())
        };
        carry_out(&shared.store, net.as_ref(), actions)?;
        if !pending.is_empty() {
            continue;
        }
        let wait = Duration::from_millis(wake_at.saturating_sub(clock.now().mono_ms));
        match wakes.recv_timeout(wait) {
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Wake::Work) => pending.push_back(Event::Work),
            Ok(Wake::Net(inbound)) => pending.extend(from_network(&shared, inbound)?),
        }
    }
}

/// The engine's events for what the network delivered. Relayed entries have their signatures
/// checked here, on all cores and outside the engine's lock, after the engine has picked the
/// ones worth checking; the room they take in the mempool is claimed meanwhile. Blocks from
/// sync or a push are handed over one at a time, so that a batch of several MiB is not
/// replayed and committed in one hold of the lock the API needs.
fn from_network(shared: &Shared, inbound: Inbound) -> Result<Vec<Event>, NodeError> {
    Ok(match inbound {
        Inbound::Request { from, request } => match request {
            Request::Consensus { message, block } => vec![Event::Message {
                from,
                message,
                block,
            }],
            Request::Entries(entries) => {
                let (claim, mut fresh) = {
                    let engine = shared.engine()?;
                    let fresh = engine.relayed_to_check(entries)?;
                    (
                        engine.ledger().mempool().occupancy().claim(fresh.len()),
                        fresh,
                    )
                };
                fresh.truncate(claim.entries());
                let checked = tally_state::verify_entries(fresh);
                let mut engine = shared.engine()?;
                engine.handle(shared.clock.now(), Event::Entries(checked))?;
                drop(claim);
                // Admitted entries are in the mempool now; what the engine decided goes out
                // with the next turn of the loop.
                Vec::new()
            }
            Request::Push(blocks) => blocks
                .into_iter()
                .map(|b| Event::Push {
                    from,
                    blocks: vec![b],
                })
                .collect(),
            Request::FetchEntries { block, ids } => vec![Event::Fetch { from, block, ids }],
            Request::Fetched { block, entries } => vec![Event::Fetched {
                from,
                block,
                entries,
            }],
            Request::Blocks { .. } => Vec::new(), // answered by the network task
        },
        Inbound::Blocks { from, mut blocks } => {
            // All but the last as pushes; the last as the answer, which says whether to ask
            // for more.
            let last = blocks.pop();
            let mut events: Vec<Event> = blocks
                .into_iter()
                .map(|b| Event::Push {
                    from,
                    blocks: vec![b],
                })
                .collect();
            events.push(Event::Blocks {
                from,
                blocks: last.into_iter().collect(),
            });
            events
        }
        Inbound::BlocksFailed { .. } => vec![Event::BlocksFailed],
        Inbound::Connected(peer) => vec![Event::Connected(peer)],
        Inbound::Disconnected(_) => Vec::new(),
    })
}

/// Carries out the engine's actions in order: a send never leaves before the safety record
/// written ahead of it is durable. Writes happen here, outside the engine's lock, so API
/// requests do not wait for the safety record's fsync.
fn carry_out(
    store: &Store,
    net: Option<&NetworkHandle>,
    actions: Vec<Action>,
) -> Result<(), NodeError> {
    for action in actions {
        match action {
            Action::Persist { record, keep, .. } => {
                let keep: Vec<&Block> = keep.iter().collect();
                store.put_safety_record(&record, &keep)?;
            }
            Action::ForgetKept(hashes) => {
                let forgotten = match hashes {
                    Some(hashes) => store.forget_pending_blocks(&hashes),
                    None => store.clear_pending_blocks(),
                };
                if let Err(e) = forgotten {
                    tracing::warn!(error = %e, "could not clear kept proposals");
                }
            }
            Action::Send {
                to,
                request,
                connected_only,
            } => {
                let Some(net) = net else { continue };
                let to: Vec<PublicKey> = if connected_only {
                    let connected = net.connected();
                    to.into_iter().filter(|k| connected.contains(k)).collect()
                } else {
                    to
                };
                match to.as_slice() {
                    [] => {}
                    [one] => net.send(*one, request),
                    many => net.send_all(many.iter(), &request),
                }
            }
            Action::AskBlocks { peer, from_height } => {
                if let Some(net) = net {
                    net.ask_blocks(peer, from_height);
                }
            }
        }
    }
    Ok(())
}
