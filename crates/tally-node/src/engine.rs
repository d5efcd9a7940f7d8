//! The node's engine: every decision a node takes, as plain data driven from outside.
//!
//! It owns the Tendermint core, the ledger (committed state, mempool, recent refusals), the
//! proposed blocks it holds, the relay queue, block sync's bookkeeping, its timers and its
//! status. The shell around it (the consensus thread in [`crate::consensus`], the API
//! handlers, the simulation in the tests) feeds it events and carries out what it asks:
//!
//! - **in:** [`Engine::handle`] for an [`Event`] (a peer's message, relayed entries whose
//!   signatures the shell checked, blocks from sync or a push, a connection, new work) and
//!   [`Engine::poll`] when time has passed; [`Engine::submit`] for what the API admits.
//! - **out:** [`Engine::ready`] hands over the [`Action`]s to carry out (sends, block-sync
//!   requests), in order; [`Engine::wake_at`] says when to poll again.
//!
//! It reads no clock ([`Now`] comes with every call), opens no socket and starts no thread.
//! What must be durable before the engine goes on (the safety record before a vote, a block
//! before it counts as committed) it writes through the [`Disk`] it is given, synchronously,
//! as raft-rs's `RawNode` reads through its `Storage`: a vote is handed out to be sent only
//! after the write that makes it safe has returned. The node's disk is RocksDB; the tests'
//! is memory ([`crate::memdisk`]).
//!
//! A node whose key is not in the validator set is an observer: it runs no core, follows
//! the chain by the blocks validators push to it and by block sync, verifies every
//! certificate and every block, and serves the API.

use crate::ledger::{Executed, Ledger, ProposalError, SubmitError};
use crate::NodeError;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use tally_consensus::{Core, Effect, Input, Message, SafetyRecord, Step, Timeout, Timeouts};
use tally_network::{CertifiedBlock, ProposedBlock, ProposedEntry, Request};
use tally_state::{Rejection, StateRead};
use tally_storage::{CommitBatch, EntryRecord, Head, StorageError};
use tally_types::{
    codec, Block, BlockHeader, CommitCertificate, EntryId, Hash, IdentifiedEntry, Keypair,
    PublicKey, SignedEntry, TimestampMs, Unverified, VerifiedEntry,
};

/// Proposed blocks held for the current and next height, at most, whole or still waiting
/// for entries ([`Request::FetchEntries`]). Each is at most one network frame. When full,
/// the block of the oldest earlier round that is neither locked on nor held as the valid
/// value is forgotten; a proposal whose block is not kept is answered when the proposer
/// sends it again, and until then the core waits for its timeout.
pub const PROPOSED_BLOCKS_MAX: usize = 64;

/// How many rounds ahead of the current one a proposal's block is kept.
const BODY_ROUNDS_AHEAD: u32 = 2;

/// How long a validator waits for the entries of a proposed block it asked for before it
/// asks again, of the next validator in turn; and the least time between two answers to one
/// validator for one block. The core's propose timeout bounds the whole wait: a block still
/// missing entries then is prevoted nil like a block that never came.
pub const FETCH_AGAIN_MS: u64 = 250;

/// A validator further behind than this many heights is not pushed blocks; it pulls them.
const PUSH_HEIGHTS_MAX: u64 = 16;

/// How often, at most, a lagging validator is pushed blocks unasked: one far behind pulls by
/// sync itself, and an old vote replayed by someone else must not set off a stream of pushes.
const PUSH_AGAIN_MS: u64 = 1_000;

/// Most pending entries relayed again: by an observer on each poll, by any node when a
/// validator (re)connects.
const RELAY_AGAIN_MAX: usize = 512;

/// How often pending entries are relayed again, in case a relay was lost to a full queue or
/// a validator that was down; and how often an observer asks for blocks in case a push was
/// lost.
const RELAY_AGAIN_MS: u64 = 2_000;

/// How long a block-sync request may stay unanswered before another is sent: longer than the
/// network's 10 s request timeout, after which it reports the failure anyway.
const SYNC_ANSWER_WAIT_MS: u64 = 12_000;

/// How long a validator that has committed nothing waits before it asks a peer whether
/// there are newer blocks. In an idle network nothing else would tell it that it missed the
/// last blocks (its block-sync request was lost, or the votes that decided them): nobody
/// votes until there is work, so nobody sees it lag.
const IDLE_SYNC_MS: u64 = 5_000;

/// How long a restarted or new validator waits for peers' blocks before it starts voting,
/// and how long after a sync answer that brought many blocks: a node still fetching the chain
/// must not vote at heights the others decided long ago.
const CATCH_UP_WAIT_MS: u64 = 3_000;

/// A sync answer with more blocks than this, or with several filling more than half of the
/// answer's byte limit, says the node is still catching up; so do f+1 validators signing more
/// than this many heights above its chain. A shorter answer may still come while the others
/// commit, so waiting for an empty one could wait forever on a busy chain.
const CAUGHT_UP_BLOCKS: u64 = 8;

/// Most bytes of entries in one relay request: well inside the smallest
/// `network.request_bytes_max` a config may set (64 KiB), so a batch always fits a frame.
pub const RELAY_BATCH_BYTES_MAX: usize = 48 * 1024;

/// Most entries waiting to be relayed; past it an entry goes out with the periodic relay of
/// pending entries.
pub const RELAY_QUEUE_MAX: usize = 8_192;

/// How long an admitted entry may wait to be relayed with the ones admitted after it. Each
/// relay is one request to every other validator, so relaying entries one by one as they are
/// admitted costs a stream and its frames per entry and peer; a short wait batches them, and
/// is small beside the block interval an entry waits for anyway.
pub const RELAY_WAIT_MS: u64 = 10;

/// The two clocks the engine reads, handed in with every call so that a simulation can run
/// it in virtual time. Timers and waits use the monotonic one; block timestamps, and the
/// check that a proposed block is not from the future, use the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a clock that never goes back (since the shell started).
    pub mono_ms: u64,
    /// The wall clock.
    pub wall: TimestampMs,
}

/// What the engine reads, and the writes it must see done before it goes on: a commit (the
/// next height is checked against the state it leaves) and evidence. Each has returned,
/// durable, before the engine acts on it; a failed write stops the node (the engine returns
/// the error). The safety record is written by the shell ([`Action::Persist`]), so that its
/// fsync holds no lock the API needs.
pub trait Disk: Send {
    /// Commits a decided block with its state changes in one synced write.
    fn commit_block(&self, batch: &CommitBatch<'_>) -> Result<Head, StorageError>;
    /// Where a committed entry is.
    fn entry(&self, id: &EntryId) -> Result<Option<EntryRecord>, StorageError>;
    /// Committed blocks with their certificates from `from_height` on, within `bytes_max`
    /// (the first always), for a lagging validator or an observer.
    fn blocks_from(&self, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock>;
    /// A block kept by [`Action::Persist`].
    fn pending_block(&self, hash: &Hash) -> Result<Option<Block>, StorageError>;
    /// Keeps evidence of an equivocation, one per validator and height; says whether it is
    /// new.
    fn put_evidence(
        &self,
        offender: &PublicKey,
        height: u64,
        evidence: &[u8],
    ) -> Result<bool, StorageError>;
}

/// The blocks of `blocks`, in order, as many as fit `bytes_max` in a sync answer or a push
/// (each counted with its frame's overhead), and the first always: what every
/// [`Disk::blocks_from`] hands out. `blocks` is read no further than needed.
pub fn within_bytes(
    blocks: impl IntoIterator<Item = CertifiedBlock>,
    bytes_max: usize,
) -> Vec<CertifiedBlock> {
    let mut out = Vec::new();
    let mut used = 0usize;
    for item in blocks {
        let size = codec::encoded_len(&item) + 16;
        if used + size > bytes_max && !out.is_empty() {
            break;
        }
        used += size;
        out.push(item);
    }
    out
}

/// What an engine is told once, at its start.
pub struct EngineConfig {
    /// This node's key: it signs votes when the state names it a validator.
    pub key: Keypair,
    /// The core's timeouts.
    pub timeouts: Timeouts,
    /// Observers to push each committed block to.
    pub observers: Vec<PublicKey>,
    /// Whether there is a network at all (a lone validator has none).
    pub networked: bool,
    /// How often the core is ticked (re-sends, sync checks).
    pub tick_ms: u64,
    /// The least time between blocks before a proposal is built (batching).
    pub interval_ms: u64,
    /// Largest batch of blocks pushed at once, in bytes.
    pub sync_bytes_max: usize,
    /// Evidence of equivocation held when the node started, for the status.
    pub evidence_held: u64,
}

/// Something that happened, for the engine to act on.
#[derive(Debug)]
pub enum Event {
    /// A consensus message from a peer, with the block when it is a proposal.
    Message {
        /// The sending node.
        from: PublicKey,
        /// The message (the core checks its signature).
        message: Box<Message>,
        /// The proposed block.
        block: Option<Box<ProposedBlock>>,
    },
    /// A validator asks for entries of a proposed block it lacks.
    Fetch {
        /// The asking node.
        from: PublicKey,
        /// The proposed block.
        block: Hash,
        /// The entries wanted; empty: all.
        ids: Vec<EntryId>,
    },
    /// Entries of a proposed block this node asked for.
    Fetched {
        /// The answering node.
        from: PublicKey,
        /// The proposed block.
        block: Hash,
        /// The entries.
        entries: Vec<SignedEntry>,
    },
    /// Entries a peer relayed, checked by the shell: picked by [`Engine::relayed_to_check`]
    /// and verified outside any lock the engine is under.
    Entries(Vec<Result<VerifiedEntry, Unverified>>),
    /// Blocks a peer answered a block-sync request with (empty: it has nothing newer).
    Blocks {
        /// The peer asked.
        from: PublicKey,
        /// Its blocks, oldest first.
        blocks: Vec<CertifiedBlock>,
    },
    /// A block-sync request failed.
    BlocksFailed,
    /// Blocks a peer pushed unasked.
    Push {
        /// The pushing peer.
        from: PublicKey,
        /// Its blocks, oldest first.
        blocks: Vec<CertifiedBlock>,
    },
    /// A peer connected.
    Connected(PublicKey),
    /// Entries were admitted through [`Engine::submit`].
    Work,
}

/// Something the shell must do for the engine, in the order given: a send that follows a
/// [`Action::Persist`] must not leave before that write is durable.
#[derive(Debug)]
pub enum Action {
    /// Write the safety record, with the blocks it commits this validator to that are not
    /// kept yet, in one synced write, before carrying out any later action. After a crash
    /// the node reads the record back and never signs a conflicting message; a block it
    /// locked on or proposed may be decided from the record alone, when no peer holds it.
    Persist {
        /// The height the record is for.
        height: u64,
        /// The encoded [`SafetyRecord`].
        record: Vec<u8>,
        /// Blocks to keep beside it.
        keep: Vec<Block>,
    },
    /// Forget kept blocks: their height is committed. `None`: every kept block (after a
    /// restart, when it is not known which were kept).
    ForgetKept(Option<Vec<Hash>>),
    /// Send a request to each of these nodes.
    Send {
        /// The recipients.
        to: Vec<PublicKey>,
        /// What to send.
        request: Request,
        /// Only to those connected now: the message is worth nothing later, and another copy
        /// follows (relays are repeated).
        connected_only: bool,
    },
    /// Ask a peer for committed blocks from a height on; the answer comes back as
    /// [`Event::Blocks`] or [`Event::BlocksFailed`].
    AskBlocks {
        /// The peer.
        peer: PublicKey,
        /// The first height wanted.
        from_height: u64,
    },
}

/// What a node is in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Votes (its key is in the validator set).
    Validator,
    /// Follows and verifies the chain; serves the API.
    Observer,
}

/// The consensus part of `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ConsensusStatus {
    /// Validator or observer.
    pub role: Role,
    /// The height being decided (validators).
    pub height: u64,
    /// Its current round.
    pub round: u32,
    /// The step in that round.
    pub step: Option<Step>,
    /// Whether the core has started voting (after the catch-up wait).
    pub voting: bool,
    /// The height of a safety record kept through a reset or repair, above the chain this
    /// node holds: it signs nothing until block sync brings it there.
    pub record_ahead: Option<u64>,
    /// Consensus messages accepted, and dropped by reason.
    pub messages: tally_consensus::Counters,
    /// Equivocations detected and kept as evidence.
    pub evidence: u64,
    /// Blocks committed from block sync or pushes (not decided here).
    pub synced_blocks: u64,
    /// Blocks received by sync that failed verification.
    pub rejected_blocks: u64,
    /// Entries of proposed blocks this validator asked for ([`Request::FetchEntries`]): those
    /// it lacked, counted the first time it asked, and every entry of a block whose entries
    /// did not hash to its root. Beside the entries committed, it says how often a proposal's
    /// entries were not here by relay first.
    pub entries_fetched: u64,
    /// The highest height f+1 validators were seen at (so an honest one reached it): a node
    /// whose chain is well below it is catching up.
    pub peers_at: u64,
    /// Milliseconds since this node last committed a block (or started), as of the last
    /// publication; readers outside the engine recompute it from `last_commit_mono_ms`, so a
    /// stuck consensus thread shows as an ever older commit.
    pub since_commit_ms: u64,
    /// When this node last committed a block (or started), on the node's monotonic clock.
    #[serde(skip)]
    pub last_commit_mono_ms: u64,
    /// Whether this node is still fetching blocks the others have decided: before it votes,
    /// while a block-sync answer lately said more is waiting, or while f+1 validators are
    /// more than [`CAUGHT_UP_HEIGHTS`] heights ahead.
    pub catching_up: bool,
    /// Entries committed in blocks since the node started, rejected ones included.
    pub entries_committed: u64,
    /// Of those, the ones recorded as rejected, by code.
    pub entries_rejected: BTreeMap<&'static str, u64>,
    /// How long entries admitted at this node waited for the block that committed them.
    #[serde(skip)]
    pub commit_latency: LatencyHistogram,
}

/// A node more than this many heights below what f+1 validators reached is catching up.
pub const CAUGHT_UP_HEIGHTS: u64 = 2;

/// Upper bounds, in milliseconds, of [`LatencyHistogram`]'s buckets: from a healthy
/// loopback commit (tens of ms) to a field device's wait through a partition.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// The time from an entry's admission at this node to the commit of its block: what a
/// submitter waits for. Plain counts, so the engine keeps it without a clock of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Entries per bucket of [`LATENCY_BOUNDS_MS`] (not cumulative); the last counts those
    /// above the highest bound.
    pub buckets: [u64; LATENCY_BOUNDS_MS.len() + 1],
    /// Sum of every wait, in milliseconds.
    pub sum_ms: u64,
    /// Entries observed.
    pub count: u64,
}

impl LatencyHistogram {
    /// Counts one wait.
    pub fn observe(&mut self, ms: u64) {
        let at = LATENCY_BOUNDS_MS.partition_point(|&bound| bound < ms);
        self.buckets[at] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }
}

/// Entries admitted and waiting to be relayed, and since when the oldest has waited.
#[derive(Default)]
struct RelayQueue {
    entries: Vec<VerifiedEntry>,
    since_ms: Option<u64>,
}

/// A proposed block this node holds whole.
struct Body {
    block: Block,
    /// The (height, round) whose proposal brought it.
    slot: (u64, u32),
    /// Whether it came from the proposer of that round (built here, kept on disk, or sent by
    /// the round's proposer), rather than forwarded by another validator: until it is
    /// checked, the proposer's own copy replaces a forwarded one.
    from_proposer: bool,
}

/// A proposed block whose entries are not all here yet.
struct Assembly {
    header: BlockHeader,
    entries: Vec<Option<SignedEntry>>,
    /// The entries still wanted, by id, with where each goes.
    missing: HashMap<EntryId, Vec<usize>>,
    /// Every entry is wanted, in block order: the entries found here did not hash to the
    /// entries root. Any validator's answer that does is taken.
    whole: bool,
    slot: (u64, u32),
    /// Whether the proposal came from its proposer (a forwarded one may name entries the
    /// proposer never put in it; the proposer's own then replaces it).
    from_proposer: bool,
    asked_ms: u64,
    asks: usize,
}

/// What [`Engine::submit`] answers.
#[derive(Debug)]
pub struct Submitted {
    /// Each entry's verdict, in the order given.
    pub answers: Vec<Result<EntryId, Rejection>>,
    /// Whether the shell should hand the engine [`Event::Work`]: the relay queue was empty,
    /// so nothing else will make the engine look at it soon.
    pub wake: bool,
}

/// The engine. See the module's documentation.
pub struct Engine {
    config: EngineConfig,
    ledger: Ledger,
    core: Option<Core>,
    /// The validator set, read from the state after each commit.
    validators: Vec<PublicKey>,
    now: Now,
    timers: BTreeMap<(u64, u64), Timeout>,
    timer_seq: u64,
    next_tick_ms: u64,
    /// Proposed blocks held whole, by hash.
    bodies: HashMap<Hash, Body>,
    /// Proposed blocks waiting for entries, by hash.
    assemblies: HashMap<Hash, Assembly>,
    /// Entries this node knows the other validators were sent by relay (it relayed them, or
    /// one relayed them to it): its proposals name them by id. Pruned after commits to what
    /// the mempool still holds.
    relayed: HashSet<EntryId>,
    /// When each validator was last answered entries of each block.
    fetch_answered: HashMap<(PublicKey, Hash), u64>,
    /// Verifications the core asked for whose block has not arrived yet.
    awaiting_body: HashMap<Hash, u64>,
    /// Blocks whose timestamp is still too far ahead of this node's clock, checked again
    /// each tick: a verdict that depends on the clock is never final.
    too_early: HashMap<Hash, u64>,
    /// When each lagging validator was last sent blocks unasked.
    pushed: HashMap<PublicKey, u64>,
    last_relay_ms: u64,
    relay_queue: RelayQueue,
    executions: HashMap<Hash, crate::ledger::Executed>,
    /// The entries of the blocks checked at this height: their signatures were checked with
    /// the block, so a relay that brings one later is not checked again.
    proposed: HashSet<EntryId>,
    /// Blocks kept on disk for the safety record since the last commit; `None` after a start,
    /// when blocks kept before it may still be there.
    kept: Option<HashSet<Hash>>,
    want_proposal: Option<(u64, u32)>,
    last_commit_ms: u64,
    next_sync_peer: usize,
    last_sync_ask_ms: Option<u64>,
    /// When the block-sync request now waiting for its answer was sent. One at a time: each
    /// answer holds up to 4 MiB of blocks, and a node that is behind hears "the others are
    /// ahead" from every vote, so asking again each time would stack answers that it
    /// decodes and then mostly discards, while its peers read and send them.
    sync_in_flight_ms: Option<u64>,
    voting: bool,
    start_by_ms: u64,
    /// When a sync answer last said this node is still catching up ([`CAUGHT_UP_BLOCKS`]).
    last_long_answer_ms: Option<u64>,
    /// The highest height f+1 validators were seen at (so at least one honest one reached
    /// it): before voting, from the heights of what they send; once voting, as the core
    /// reports it ([`Effect::Behind`]).
    others_at: u64,
    /// Before voting: the highest height each validator has sent a message for.
    peer_heights: HashMap<PublicKey, u64>,
    /// When each entry admitted here and not committed yet was admitted, for the commit
    /// latency; pruned to the mempool now and then, as `relayed` is.
    admitted_at: HashMap<EntryId, u64>,
    status: ConsensusStatus,
    actions: Vec<Action>,
}

impl Engine {
    /// An engine over a ledger opened on its disk, with the safety record that disk holds.
    /// The state says whether this node is a validator; a validator that is not alone waits
    /// a little for its peers' blocks before it votes.
    pub fn new(
        config: EngineConfig,
        ledger: Ledger,
        record: Option<SafetyRecord>,
        now: Now,
    ) -> Result<Self, NodeError> {
        let validators = ledger.state().validators()?;
        let me = config.key.public();
        let core = if validators.contains(&me) {
            let set = tally_consensus::ValidatorSet::new(&validators)
                .map_err(|e| NodeError::Config(e.to_string()))?;
            Some(
                Core::new(
                    ledger.genesis.chain_id.clone(),
                    Keypair::from_secret_bytes(&config.key.secret_bytes()),
                    set,
                    config.timeouts,
                    ledger.head().height,
                    record,
                )
                .map_err(|e| NodeError::Corrupt(e.to_string()))?,
            )
        } else {
            None
        };
        let status = ConsensusStatus {
            role: if core.is_some() {
                Role::Validator
            } else {
                Role::Observer
            },
            height: ledger.head().height + 1,
            round: 0,
            step: None,
            voting: false,
            record_ahead: core.as_ref().and_then(Core::record_ahead),
            messages: Default::default(),
            evidence: config.evidence_held,
            synced_blocks: 0,
            rejected_blocks: 0,
            entries_fetched: 0,
            peers_at: 0,
            since_commit_ms: 0,
            last_commit_mono_ms: now.mono_ms,
            catching_up: false,
            entries_committed: 0,
            entries_rejected: BTreeMap::new(),
            commit_latency: LatencyHistogram::default(),
        };
        if let Some(record) = status.record_ahead {
            tracing::warn!(record, head = ledger.head().height, "this validator's safety record is ahead of its chain (the chain was set aside, or restored from a backup); it signs nothing until block sync reaches that height");
        }
        // Alone, or without peers, there is nothing to catch up from.
        let alone = validators.len() == 1 || !config.networked;
        let next_tick_ms = now.mono_ms + config.tick_ms;
        let start_by_ms = if alone {
            now.mono_ms
        } else {
            now.mono_ms + CATCH_UP_WAIT_MS
        };
        let mut engine = Engine {
            config,
            ledger,
            core,
            validators,
            now,
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_tick_ms,
            bodies: HashMap::new(),
            assemblies: HashMap::new(),
            relayed: HashSet::new(),
            fetch_answered: HashMap::new(),
            awaiting_body: HashMap::new(),
            too_early: HashMap::new(),
            pushed: HashMap::new(),
            last_relay_ms: now.mono_ms,
            relay_queue: RelayQueue::default(),
            executions: HashMap::new(),
            proposed: HashSet::new(),
            kept: None,
            want_proposal: None,
            last_commit_ms: now.mono_ms,
            next_sync_peer: 0,
            last_sync_ask_ms: None,
            sync_in_flight_ms: None,
            voting: false,
            start_by_ms,
            last_long_answer_ms: None,
            others_at: 0,
            peer_heights: HashMap::new(),
            admitted_at: HashMap::new(),
            status,
            actions: Vec::new(),
        };
        engine.load_kept_bodies();
        engine.publish_status();
        Ok(engine)
    }

    /// Reads back the blocks this validator proposed or locked on before a restart, which its
    /// safety record keeps: it must be able to send them with its re-proposal, or a network
    /// where all restarted could never see the value it is locked on again.
    fn load_kept_bodies(&mut self) {
        let Some(core) = &self.core else {
            return;
        };
        let slots: Vec<_> = [core.locked(), core.valid(), core.own_proposal()]
            .into_iter()
            .flatten()
            .filter(|(_, hash)| !self.bodies.contains_key(hash))
            .map(|(round, hash)| ((core.height(), round), hash))
            .collect();
        for (slot, hash) in slots {
            if let Some(block) = kept_block(self.ledger.disk(), &hash) {
                self.bodies.insert(
                    hash,
                    Body {
                        block,
                        slot,
                        from_proposer: true,
                    },
                );
            }
        }
    }

    /// The committed chain, the state and the mempool.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The validator set at the current height.
    pub fn validators(&self) -> &[PublicKey] {
        &self.validators
    }

    /// Validator or observer.
    pub fn role(&self) -> Role {
        self.status.role
    }

    /// The consensus status as of the last call.
    pub fn status(&self) -> &ConsensusStatus {
        &self.status
    }

    /// The actions decided since the last call, to carry out in order. Of several safety
    /// records, only the last is written, where the first stood (see [`coalesce_persists`]).
    pub fn ready(&mut self) -> Vec<Action> {
        let mut actions = std::mem::take(&mut self.actions);
        coalesce_persists(&mut actions);
        actions
    }

    /// When the engine next has something to do unprompted (a timer, a tick, a relay, a
    /// proposal), on the monotonic clock: the shell calls [`Engine::poll`] then, or sooner.
    pub fn wake_at(&self) -> u64 {
        let mut wake = self.next_tick_ms;
        if let Some(since) = self.relay_queue.since_ms {
            wake = wake.min(since + RELAY_WAIT_MS);
        }
        if let Some((&(at, _), _)) = self.timers.first_key_value() {
            wake = wake.min(at);
        }
        if !self.voting {
            wake = wake.min(self.start_by_ms);
        }
        if self.want_proposal.is_some() {
            let due = self.proposal_due();
            if due > self.now.mono_ms {
                wake = wake.min(due);
            }
        }
        wake
    }

    /// Acts on an event, then on whatever time has made due ([`Engine::poll`]).
    pub fn handle(&mut self, now: Now, event: Event) -> Result<(), NodeError> {
        self.now = now;
        self.event(event)?;
        self.poll(now)
    }

    /// Acts on what time has made due: the start of voting, timers, the tick, the relay of
    /// queued entries, the proposal the core asked for.
    pub fn poll(&mut self, now: Now) -> Result<(), NodeError> {
        self.now = now;
        if !self.voting && now.mono_ms >= self.start_by_ms {
            let head = self.ledger.head().height;
            match self.last_long_answer_ms {
                Some(t) if now.mono_ms < t + CATCH_UP_WAIT_MS => {
                    self.start_by_ms = t + CATCH_UP_WAIT_MS;
                }
                // Honest validators sign far above this node's chain: sync is not done.
                _ if self.others_at > head + 1 + CAUGHT_UP_BLOCKS => {
                    self.start_by_ms = now.mono_ms + self.config.tick_ms;
                    self.ask_sync();
                }
                _ => self.start_voting()?,
            }
        }
        while let Some((&(at, seq), _)) = self.timers.first_key_value() {
            if at > now.mono_ms {
                break;
            }
            if let Some(t) = self.timers.remove(&(at, seq)) {
                self.input(Input::Timeout(t))?;
            }
        }
        if now.mono_ms >= self.next_tick_ms {
            self.next_tick_ms = now.mono_ms + self.config.tick_ms;
            self.on_tick()?;
        }
        if self.flush_relays() && self.voting {
            // The entries just relayed may have made an author's entries orderable.
            self.signal_work()?;
        }
        self.try_propose()?;
        self.publish_status();
        Ok(())
    }

    /// The refusal a submission gets whatever its signature: asked before the signature is
    /// checked, which is done only when this says `None`.
    pub fn refusal_unchecked(
        &mut self,
        entry: &IdentifiedEntry,
    ) -> Result<Option<Rejection>, NodeError> {
        self.ledger.refusal_unchecked(entry)
    }

    /// Admits entries whose signatures the caller checked, in order, and queues those
    /// admitted for relay to the validators.
    pub fn submit(
        &mut self,
        now: Now,
        checked: Vec<Result<VerifiedEntry, Unverified>>,
    ) -> Result<Submitted, NodeError> {
        self.now = now;
        let mut answers = Vec::with_capacity(checked.len());
        let mut admitted = Vec::new();
        for checked in checked {
            let relay = checked.as_ref().ok().cloned();
            answers.push(match self.ledger.submit(checked) {
                Ok(id) => {
                    admitted.extend(relay);
                    self.admitted_at.insert(id, now.mono_ms);
                    Ok(id)
                }
                Err(SubmitError::Rejected(r)) => Err(r),
                Err(SubmitError::Node(e)) => return Err(e),
            });
        }
        let wake = self.queue_relay(admitted);
        Ok(Submitted { answers, wake })
    }

    /// Of the entries a peer relayed, those worth a signature check, up to the room left in
    /// the mempool. Relays repeat (every pending entry is relayed again now and then) and
    /// race the proposals that carry their entries, so under load many arrive after this
    /// node checked the entry in a proposed block or committed it: those cost a lookup, not
    /// a signature check. The rest would be refused; a proposal that carries one has it
    /// checked then.
    pub fn relayed_to_check(
        &self,
        entries: Vec<SignedEntry>,
    ) -> Result<Vec<IdentifiedEntry>, NodeError> {
        let room = self.ledger.mempool().occupancy().room();
        let mut fresh = Vec::new();
        for e in entries {
            if fresh.len() == room {
                break;
            }
            let e = IdentifiedEntry::new(e);
            if !self.proposed.contains(&e.id()) && self.ledger.awaits_admission(&e)? {
                fresh.push(e);
            }
        }
        Ok(fresh)
    }

    /// Queues admitted entries for relay. Says whether the queue was empty (or there is no
    /// network, when admitted entries are work at once).
    fn queue_relay(&mut self, entries: Vec<VerifiedEntry>) -> bool {
        if entries.is_empty() {
            return false;
        }
        if !self.config.networked {
            return true;
        }
        let queue = &mut self.relay_queue;
        let was_empty = queue.entries.is_empty();
        let room = RELAY_QUEUE_MAX.saturating_sub(queue.entries.len());
        queue.entries.extend(entries.into_iter().take(room));
        queue.since_ms.get_or_insert(self.now.mono_ms);
        was_empty
    }

    /// Relays the queued entries once the oldest has waited [`RELAY_WAIT_MS`]. Says whether
    /// it did.
    fn flush_relays(&mut self) -> bool {
        match self.relay_queue.since_ms {
            Some(since) if since + RELAY_WAIT_MS <= self.now.mono_ms => {}
            _ => return false,
        }
        self.relay_queue.since_ms = None;
        let queued = std::mem::take(&mut self.relay_queue.entries);
        self.relay(queued);
        true
    }

    /// Sends entries to every other validator connected, in batches that fit a frame. From
    /// then on this node's proposals name them by id.
    fn relay(&mut self, entries: Vec<VerifiedEntry>) {
        if !self.config.networked || entries.is_empty() {
            return;
        }
        let to = self.other_validators();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for e in entries {
            self.relayed.insert(e.id());
            let e = e.into_entry();
            let size = codec::encoded_len(&e);
            if !batch.is_empty() && bytes + size > RELAY_BATCH_BYTES_MAX {
                let full = std::mem::take(&mut batch);
                self.send_connected(to.clone(), Request::Entries(full));
                bytes = 0;
            }
            batch.push(e);
            bytes += size;
        }
        self.send_connected(to, Request::Entries(batch));
    }

    /// Relays up to `max` pending entries again.
    fn relay_pending(&mut self, max: usize) -> Result<(), NodeError> {
        let pending = self.ledger.mempool().candidates(self.ledger.state(), max)?;
        self.relay(pending);
        Ok(())
    }

    fn send_connected(&mut self, to: Vec<PublicKey>, request: Request) {
        self.actions.push(Action::Send {
            to,
            request,
            connected_only: true,
        });
    }

    fn other_validators(&self) -> Vec<PublicKey> {
        let me = self.config.key.public();
        self.validators
            .iter()
            .copied()
            .filter(|v| *v != me)
            .collect()
    }

    /// Notes that validator `from` sent a message for `height` (the connection proves who it
    /// is; the message is not checked yet), and moves [`Engine::others_at`] to the height f+1
    /// validators have reached: one Byzantine validator naming absurd heights cannot hold
    /// this node back.
    fn note_peer_height(&mut self, from: PublicKey, height: u64) {
        let seen = self.peer_heights.entry(from).or_insert(height);
        *seen = (*seen).max(height);
        let needed = self.validators.len().saturating_sub(1) / 3 + 1;
        let mut heights: Vec<u64> = self.peer_heights.values().copied().collect();
        if heights.len() >= needed {
            heights.sort_unstable_by(|a, b| b.cmp(a));
            self.others_at = self.others_at.max(heights[needed - 1]);
        }
    }

    fn start_voting(&mut self) -> Result<(), NodeError> {
        self.peer_heights = HashMap::new();
        self.voting = true;
        if self.core.is_some() {
            tracing::info!("consensus started");
            self.input(Input::Start)?;
            self.signal_work()?;
        }
        Ok(())
    }

    /// Whether an entry could go into the next block now. An entry waiting behind a gap in
    /// its author's sequence is not work: it must not make the network build empty blocks,
    /// nor make a node look stalled.
    pub fn has_orderable_work(&self) -> Result<bool, NodeError> {
        let l = &self.ledger;
        Ok(!l.mempool().candidates(l.state(), 1)?.is_empty())
    }

    /// Tells the core there is work, when it does not know yet and there is.
    fn signal_work(&mut self) -> Result<(), NodeError> {
        if self.core.as_ref().is_none_or(Core::has_work) {
            return Ok(());
        }
        if self.has_orderable_work()? {
            self.input(Input::Work)?;
        }
        Ok(())
    }

    fn on_tick(&mut self) -> Result<(), NodeError> {
        if self.core.is_some() {
            if self.voting {
                self.input(Input::Tick)?;
                self.recheck_too_early()?;
            }
            self.ask_again();
            let quiet_since = self.last_commit_ms.max(self.last_sync_ask_ms.unwrap_or(0));
            if self.now.mono_ms >= quiet_since + IDLE_SYNC_MS {
                self.ask_sync();
            }
            // Hand pending entries to the other validators again, in case a relay was lost.
            if self.now.mono_ms >= self.last_relay_ms + RELAY_AGAIN_MS {
                self.last_relay_ms = self.now.mono_ms;
                self.relay_pending(RELAY_AGAIN_MAX)?;
            }
        } else {
            // Observers poll now and then in case a push was lost, and hand their pending
            // entries to the validators again in case a relay was lost; each on its own
            // clock, since a poll waits while a request is unanswered.
            let poll_due = self
                .last_sync_ask_ms
                .is_none_or(|t| self.now.mono_ms >= t + RELAY_AGAIN_MS);
            if poll_due {
                self.ask_sync();
            }
            if self.now.mono_ms >= self.last_relay_ms + RELAY_AGAIN_MS {
                self.last_relay_ms = self.now.mono_ms;
                self.relay_pending(RELAY_AGAIN_MAX)?;
            }
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        if let Some(core) = &self.core {
            self.status.height = core.height();
            self.status.round = core.round();
            self.status.step = Some(core.step());
            self.status.messages = core.counters().clone();
        } else {
            self.status.height = self.ledger.head().height + 1;
        }
        self.status.voting = self.voting && self.core.as_ref().is_some_and(Core::started);
        self.status.record_ahead = self.core.as_ref().and_then(Core::record_ahead);
        let head = self.ledger.head().height;
        self.status.peers_at = self.others_at;
        self.status.since_commit_ms = self.now.mono_ms.saturating_sub(self.last_commit_ms);
        self.status.last_commit_mono_ms = self.last_commit_ms;
        let told_more = self
            .last_long_answer_ms
            .is_some_and(|t| self.now.mono_ms < t + CATCH_UP_WAIT_MS);
        self.status.catching_up = (self.core.is_some() && !self.status.voting)
            || told_more
            || self.others_at > head + CAUGHT_UP_HEIGHTS;
    }

    fn event(&mut self, e: Event) -> Result<(), NodeError> {
        match e {
            Event::Work => {
                if self.voting {
                    self.signal_work()?;
                }
            }
            Event::Message {
                from,
                message,
                block,
            } => {
                if !self.validators.contains(&from) || self.core.is_none() {
                    return Ok(());
                }
                if let (Some(block), Message::Proposal(p)) = (block, message.as_ref()) {
                    self.take_proposed(from, *block, p)?;
                }
                if self.voting {
                    self.input(Input::Message(*message))?;
                } else {
                    self.note_peer_height(from, message.height());
                }
            }
            Event::Entries(checked) => {
                let mut admitted = Vec::new();
                for checked in checked {
                    if let Ok(id) = self.ledger.submit(checked) {
                        // The peer that relayed it relayed it to every validator.
                        self.relayed.insert(id);
                        admitted.push(id);
                    }
                }
                if !admitted.is_empty() {
                    self.fill_admitted(&admitted)?;
                    if self.voting {
                        self.signal_work()?;
                    }
                }
            }
            Event::Fetch { from, block, ids } => self.answer_fetch(from, block, ids),
            Event::Fetched {
                from,
                block,
                entries,
            } => self.fetched(from, block, entries)?,
            Event::Push { from, blocks } => {
                self.apply_blocks(from, blocks)?;
            }
            Event::Blocks { from, blocks } => {
                self.sync_in_flight_ms = None;
                let empty = blocks.is_empty();
                let (committed, bytes) = self.apply_blocks(from, blocks)?;
                // One block may fill an answer by itself: only several say more are coming.
                if committed > CAUGHT_UP_BLOCKS
                    || (committed > 1 && bytes > self.config.sync_bytes_max / 2)
                {
                    self.last_long_answer_ms = Some(self.now.mono_ms);
                }
                if committed > 0 {
                    // More may follow: keep asking the same peer until it has nothing new.
                    self.ask_blocks(from);
                } else if empty && !self.voting {
                    // A peer has nothing beyond our head: we are caught up.
                    self.start_voting()?;
                }
            }
            Event::BlocksFailed => self.sync_in_flight_ms = None,
            Event::Connected(peer) => {
                if self.validators.contains(&peer) {
                    self.ask_blocks(peer);
                    // A validator that was away missed the relays of what is pending.
                    self.relay_pending(RELAY_AGAIN_MAX)?;
                }
            }
        }
        Ok(())
    }

    /// Takes the block a proposal carries when it is the block the proposal names, for a
    /// height being decided: whole when every entry it names by id is in the mempool, else
    /// as an [`Assembly`] that asks for the rest. Only the round's proposer's signed proposal
    /// brings a block, one block per round, so a Byzantine validator cannot fill memory with
    /// blocks nobody proposed.
    fn take_proposed(
        &mut self,
        from: PublicKey,
        proposed: ProposedBlock,
        p: &tally_consensus::Proposal,
    ) -> Result<(), NodeError> {
        let Some(core) = &self.core else {
            return Ok(());
        };
        let h = proposed.header.height;
        // Rounds far ahead are refused: a Byzantine proposer owns every n-th round, and must
        // not be able to take the room the current round's block needs.
        let round_limit = if h == core.height() {
            core.round().saturating_add(BODY_ROUNDS_AHEAD)
        } else {
            BODY_ROUNDS_AHEAD
        };
        let from_proposer = from == p.proposer;
        // A proposal forwarded by a peer may carry or name entries its proposer never put in
        // the block; the proposer's own copy replaces what that brought, until it is checked.
        let forwarded_held = self
            .assemblies
            .get(&p.block_hash)
            .map(|a| !a.from_proposer)
            .or_else(|| {
                self.bodies
                    .get(&p.block_hash)
                    .map(|b| !b.from_proposer && !self.executions.contains_key(&p.block_hash))
            });
        let replaces = from_proposer && forwarded_held == Some(true);
        let slot_taken = self
            .bodies
            .values()
            .map(|b| b.slot)
            .chain(self.assemblies.values().map(|a| a.slot))
            .any(|slot| slot == (p.height, p.round));
        let taken = self.bodies.contains_key(&p.block_hash) || slot_taken;
        if (taken && !replaces)
            || proposed.entries.len() != proposed.header.entry_count as usize
            || proposed.entries.len() > self.ledger.block_entries_max()
            || proposed.hash() != p.block_hash
            || p.height != h
            || !(core.height()..=core.height() + 1).contains(&h)
            || p.round > round_limit
            || core.validators().proposer(p.height, p.round) != &p.proposer
            || p.verify(&self.ledger.genesis.chain_id).is_err()
        {
            return Ok(());
        }
        if !replaces && !self.make_room() {
            return Ok(());
        }
        let slot = (p.height, p.round);
        let mut entries = Vec::with_capacity(proposed.entries.len());
        let mut missing: HashMap<EntryId, Vec<usize>> = HashMap::new();
        for (at, e) in proposed.entries.into_iter().enumerate() {
            match e {
                ProposedEntry::Full(e) => entries.push(Some(*e)),
                ProposedEntry::Held(id) => {
                    let held = self.ledger.mempool().get(&id);
                    if held.is_none() {
                        missing.entry(id).or_default().push(at);
                    }
                    entries.push(held.map(|e| e.entry().clone()));
                }
            }
        }
        let assembly = Assembly {
            header: proposed.header,
            entries,
            missing,
            whole: false,
            slot,
            from_proposer,
            asked_ms: self.now.mono_ms,
            asks: 0,
        };
        self.bodies.remove(&p.block_hash);
        self.assemblies.remove(&p.block_hash);
        if assembly.missing.is_empty() {
            return self.assembled(p.block_hash, assembly);
        }
        self.assemblies.insert(p.block_hash, assembly);
        self.ask_entries(p.block_hash);
        Ok(())
    }

    /// Makes room for one more proposed block, by forgetting the block of the oldest earlier
    /// round this validator is neither locked on nor holds as its valid value. Says whether
    /// there is room.
    fn make_room(&mut self) -> bool {
        let Some(core) = &self.core else {
            return false;
        };
        if self.bodies.len() + self.assemblies.len() < PROPOSED_BLOCKS_MAX {
            return true;
        }
        let keep: Vec<Hash> = [core.locked(), core.valid()]
            .into_iter()
            .flatten()
            .map(|(_, h)| h)
            .collect();
        let current = (core.height(), core.round());
        let oldest = self
            .bodies
            .iter()
            .map(|(hash, b)| (hash, b.slot))
            .chain(self.assemblies.iter().map(|(hash, a)| (hash, a.slot)))
            .filter(|(hash, slot)| !keep.contains(hash) && *slot < current)
            .min_by_key(|(_, slot)| *slot)
            .map(|(hash, _)| *hash);
        match oldest {
            Some(hash) => {
                self.bodies.remove(&hash);
                self.assemblies.remove(&hash);
                true
            }
            None => false,
        }
    }

    /// Holds a proposed block whole, and answers the core's check of it if it waited.
    fn hold_body(&mut self, hash: Hash, body: Body) -> Result<(), NodeError> {
        self.bodies.insert(hash, body);
        if let Some(height) = self.awaiting_body.remove(&hash) {
            if let Some(valid) = self.verify_body(height, hash) {
                self.input(Input::BlockVerified {
                    height,
                    block_hash: hash,
                    valid,
                })?;
            }
        }
        Ok(())
    }

    /// A finished assembly as a block held whole.
    fn assembled(&mut self, hash: Hash, a: Assembly) -> Result<(), NodeError> {
        let block = Block {
            header: a.header,
            entries: a.entries.into_iter().flatten().collect(),
        };
        let body = Body {
            block,
            slot: a.slot,
            from_proposer: a.from_proposer,
        };
        self.hold_body(hash, body)
    }

    /// Asks for the entries an assembly lacks: the block's proposer first, then, each time
    /// again, the next validator in turn (any validator that holds the block can answer, and
    /// a re-proposed block's builder may be down).
    fn ask_entries(&mut self, hash: Hash) {
        let me = self.config.key.public();
        let validators = self.validators.clone();
        let Some(a) = self.assemblies.get_mut(&hash) else {
            return;
        };
        let proposer = a.header.proposer;
        let to = if validators.len() < 2 {
            proposer
        } else {
            let first = validators.iter().position(|v| *v == proposer).unwrap_or(0);
            let others: Vec<PublicKey> = (0..validators.len())
                .map(|k| validators[(first + k) % validators.len()])
                .filter(|v| *v != me)
                .collect();
            others
                .get(a.asks % others.len().max(1))
                .copied()
                .unwrap_or(proposer)
        };
        let ids: Vec<EntryId> = if a.whole {
            Vec::new()
        } else {
            a.missing.keys().copied().collect()
        };
        if a.asks == 0 {
            self.status.entries_fetched += if a.whole {
                a.entries.len() as u64
            } else {
                ids.len() as u64
            };
        }
        a.asks += 1;
        a.asked_ms = self.now.mono_ms;
        self.actions.push(Action::Send {
            to: vec![to],
            request: Request::FetchEntries { block: hash, ids },
            connected_only: true,
        });
    }

    /// Asks again for what assemblies still lack, once [`FETCH_AGAIN_MS`] has passed.
    fn ask_again(&mut self) {
        let due: Vec<Hash> = self
            .assemblies
            .iter()
            .filter(|(_, a)| self.now.mono_ms >= a.asked_ms + FETCH_AGAIN_MS)
            .map(|(hash, _)| *hash)
            .collect();
        for hash in due {
            self.ask_entries(hash);
        }
    }

    /// Answers a validator's request for entries of a proposed block this node holds whole,
    /// at most once per block in [`FETCH_AGAIN_MS`]. Asked for every entry, it sends them all
    /// in block order; else those asked for that the block has. An answer is no bigger than
    /// the block, which fit a frame.
    fn answer_fetch(&mut self, from: PublicKey, block: Hash, ids: Vec<EntryId>) {
        if !self.validators.contains(&from) || !self.config.networked {
            return;
        }
        let Some(body) = self.bodies.get(&block) else {
            return;
        };
        // A whole block is sent only once this node has seen it replay (it built it or
        // checked it), so it never passes on entries that do not make the block.
        if ids.len() > body.block.entries.len()
            || (ids.is_empty() && !self.executions.contains_key(&block))
        {
            return;
        }
        let now = self.now.mono_ms;
        if self
            .fetch_answered
            .get(&(from, block))
            .is_some_and(|t| now < t + FETCH_AGAIN_MS / 2)
        {
            return;
        }
        let entries: Vec<SignedEntry> = if ids.is_empty() {
            body.block.entries.clone()
        } else {
            let wanted: HashSet<EntryId> = ids.into_iter().collect();
            let ids = self.entry_ids(&block, &body.block.entries);
            body.block
                .entries
                .iter()
                .zip(ids)
                .filter(|(_, id)| wanted.contains(id))
                .map(|(e, _)| e.clone())
                .collect()
        };
        self.fetch_answered.insert((from, block), now);
        self.actions.push(Action::Send {
            to: vec![from],
            request: Request::Fetched { block, entries },
            connected_only: true,
        });
    }

    /// Puts the entries a peer answered into the assembly that asked for them.
    fn fetched(
        &mut self,
        from: PublicKey,
        hash: Hash,
        entries: Vec<SignedEntry>,
    ) -> Result<(), NodeError> {
        if !self.validators.contains(&from) {
            return Ok(());
        }
        let Some(a) = self.assemblies.get_mut(&hash) else {
            return Ok(());
        };
        if entries.len() > a.entries.len() {
            return Ok(());
        }
        if a.whole {
            // The entries root authenticates a whole answer, whoever sends it.
            if entries.len() != a.entries.len()
                || Block::compute_entries_root(&entries) != a.header.entries_root
            {
                return Ok(());
            }
            a.entries = entries.into_iter().map(Some).collect();
        } else {
            for e in entries {
                if let Some(at) = a.missing.remove(&e.id()) {
                    for at in at {
                        a.entries[at] = Some(e.clone());
                    }
                }
            }
            if !a.missing.is_empty() {
                return Ok(());
            }
        }
        match self.assemblies.remove(&hash) {
            Some(a) => self.assembled(hash, a),
            None => Ok(()),
        }
    }

    /// Fills assemblies with entries just admitted (a relay that raced the proposal): a
    /// lookup per admitted entry and assembly, whatever the assemblies lack.
    fn fill_admitted(&mut self, admitted: &[EntryId]) -> Result<(), NodeError> {
        if self.assemblies.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        let mempool = self.ledger.mempool();
        for (hash, a) in &mut self.assemblies {
            if a.whole {
                continue;
            }
            for id in admitted {
                let (Some(at), Some(e)) = (a.missing.get(id), mempool.get(id)) else {
                    continue;
                };
                for &k in at {
                    a.entries[k] = Some(e.entry().clone());
                }
                a.missing.remove(id);
            }
            if a.missing.is_empty() {
                done.push(*hash);
            }
        }
        for hash in done {
            if let Some(a) = self.assemblies.remove(&hash) {
                self.assembled(hash, a)?;
            }
        }
        Ok(())
    }

    /// Asks for every entry of a held block whose entries do not hash to its header's entries
    /// root. The header is the one the proposal signed; the entries came from this node's
    /// mempool (which can hold another valid signature over the same body) or from a peer
    /// that can lie. So the block is not judged on them: it waits, like a block that has not
    /// arrived, for entries that hash to the root, from any validator, and until then the
    /// core's timeout moves the round on.
    fn want_whole(&mut self, hash: Hash, height: u64) {
        let Some(body) = self.bodies.remove(&hash) else {
            return;
        };
        tracing::info!(height, block = %hash.short(), "a proposed block's entries found here do not hash to its entries root; asking for them");
        let n = body.block.entries.len();
        let assembly = Assembly {
            header: body.block.header,
            entries: vec![None; n],
            missing: HashMap::new(),
            whole: true,
            slot: body.slot,
            from_proposer: body.from_proposer,
            asked_ms: self.now.mono_ms,
            asks: 0,
        };
        self.assemblies.insert(hash, assembly);
        self.too_early.remove(&hash);
        self.awaiting_body.insert(hash, height);
        self.ask_entries(hash);
    }

    /// Checks again the blocks that were too far ahead of this node's clock.
    fn recheck_too_early(&mut self) -> Result<(), NodeError> {
        let Some(height) = self.core.as_ref().map(Core::height) else {
            return Ok(());
        };
        self.too_early.retain(|_, h| *h == height);
        let waiting: Vec<Hash> = self.too_early.keys().copied().collect();
        for hash in waiting {
            if let Some(valid) = self.verify_body(height, hash) {
                self.too_early.remove(&hash);
                self.input(Input::BlockVerified {
                    height,
                    block_hash: hash,
                    valid,
                })?;
            }
        }
        Ok(())
    }

    /// Replays a held proposed block on the committed state (the paper's `valid(v)`).
    /// `None` while its timestamp is too far ahead of this node's clock (checked again each
    /// tick rather than judged for good), and while its entries are being fetched.
    fn verify_body(&mut self, height: u64, block_hash: Hash) -> Option<bool> {
        if self.assemblies.contains_key(&block_hash) {
            return None;
        }
        let verdict = match self.bodies.get(&block_hash) {
            Some(body) if body.block.header.height == height => {
                self.ledger.verify_proposal(&body.block, self.now.wall)
            }
            _ => Err(ProposalError::Invalid(
                "the block is for another height".to_string(),
            )),
        };
        match verdict {
            Ok(exec) => {
                self.proposed
                    .extend(exec.0.outcomes.iter().map(|(id, _)| *id));
                self.executions.insert(block_hash, exec);
                Some(true)
            }
            Err(ProposalError::TooEarly { wait_ms }) => {
                tracing::info!(height, block = %block_hash.short(), wait_ms, "proposed block is ahead of this node's clock; waiting");
                if self.too_early.len() < PROPOSED_BLOCKS_MAX {
                    self.too_early.insert(block_hash, height);
                }
                None
            }
            Err(ProposalError::EntriesDiffer) => {
                self.want_whole(block_hash, height);
                None
            }
            Err(ProposalError::Invalid(why)) => {
                tracing::warn!(height, block = %block_hash.short(), %why, "proposed block is invalid");
                Some(false)
            }
        }
    }

    /// A proposed block by hash: received with a proposal, or kept on disk before a restart.
    fn body(&self, hash: &Hash) -> Option<Block> {
        match self.bodies.get(hash) {
            Some(b) => Some(b.block.clone()),
            None => kept_block(self.ledger.disk(), hash),
        }
    }

    /// The ids of a proposed block's entries, in order: from the block's replay when this
    /// node built or checked it, else hashed.
    fn entry_ids(&self, hash: &Hash, entries: &[SignedEntry]) -> Vec<EntryId> {
        match self.executions.get(hash) {
            Some((exec, _)) if exec.outcomes.len() == entries.len() => {
                exec.outcomes.iter().map(|(id, _)| *id).collect()
            }
            _ => entries.iter().map(SignedEntry::id).collect(),
        }
    }

    /// A proposed block as this node sends it with a proposal: each entry it knows the
    /// validators were relayed by id, the rest in full.
    fn proposed_form(&self, hash: &Hash) -> Option<ProposedBlock> {
        let block = self.body(hash)?;
        let ids = self.entry_ids(hash, &block.entries);
        let entries = block
            .entries
            .into_iter()
            .zip(ids)
            .map(|(e, id)| {
                if self.relayed.contains(&id) {
                    ProposedEntry::Held(id)
                } else {
                    ProposedEntry::Full(Box::new(e))
                }
            })
            .collect();
        Some(ProposedBlock {
            header: block.header,
            entries,
        })
    }

    /// Verifies and commits blocks from sync or a push, in height order. Returns how many
    /// it committed, and their bytes as they travelled.
    fn apply_blocks(
        &mut self,
        from: PublicKey,
        blocks: Vec<CertifiedBlock>,
    ) -> Result<(u64, usize), NodeError> {
        let mut synced_to = None;
        let (mut committed, mut bytes) = (0, 0);
        for CertifiedBlock { block, certificate } in blocks {
            let next = self.ledger.head().height + 1;
            if block.header.height < next {
                continue;
            }
            if block.header.height > next {
                break;
            }
            match self.ledger.verify_synced(&block, &certificate) {
                Ok(exec) => {
                    bytes += codec::encoded_len(&block) + codec::encoded_len(&certificate);
                    let head = self.commit(&block, &certificate, exec)?;
                    self.status.synced_blocks += 1;
                    committed += 1;
                    synced_to = Some(head.height);
                }
                Err(why) => {
                    self.status.rejected_blocks += 1;
                    tracing::warn!(peer = %from.short(), height = block.header.height, %why, "refused a synced block");
                    break;
                }
            }
        }
        let Some(height) = synced_to else {
            return Ok((0, 0));
        };
        self.after_commit()?;
        // The core learns of it even before it votes, so it starts at the right height.
        self.input(Input::Synced { height })?;
        // A safety record kept through a reset may have just been taken up: its blocks.
        self.load_kept_bodies();
        if self.voting {
            self.signal_work()?;
        }
        Ok((committed, bytes))
    }

    /// Commits a checked block, counting its entries and how long those admitted here waited.
    fn commit(
        &mut self,
        block: &Block,
        certificate: &CommitCertificate,
        exec: Executed,
    ) -> Result<Head, NodeError> {
        let ids: Vec<EntryId> = exec.0.outcomes.iter().map(|(id, _)| *id).collect();
        let rejected: Vec<&'static str> = exec
            .0
            .rejections
            .iter()
            .flatten()
            .map(|r| r.code.as_str())
            .collect();
        let head = self.ledger.commit(block, certificate, exec)?;
        let status = &mut self.status;
        status.entries_committed += ids.len() as u64;
        for code in rejected {
            *status.entries_rejected.entry(code).or_default() += 1;
        }
        for id in &ids {
            if let Some(at) = self.admitted_at.remove(id) {
                status
                    .commit_latency
                    .observe(self.now.mono_ms.saturating_sub(at));
            }
        }
        Ok(head)
    }

    fn after_commit(&mut self) -> Result<(), NodeError> {
        let height = self.ledger.head().height;
        self.bodies.retain(|_, b| b.block.header.height > height);
        self.assemblies.retain(|_, a| a.header.height > height);
        self.fetch_answered.clear();
        self.awaiting_body.retain(|_, h| *h > height);
        // Committed entries leave the mempool; the set follows it in bulk, now and then.
        let mempool = self.ledger.mempool();
        if self.relayed.len() > mempool.len() + RELAY_QUEUE_MAX {
            self.relayed.retain(|id| mempool.contains(id));
        }
        if self.admitted_at.len() > mempool.len() + RELAY_QUEUE_MAX {
            self.admitted_at.retain(|id, _| mempool.contains(id));
        }
        // The blocks a record ahead of the chain keeps are needed when sync reaches it.
        if self
            .core
            .as_ref()
            .is_none_or(|c| c.record_ahead().is_none())
        {
            let forget = self.kept.take().map(|kept| kept.into_iter().collect());
            self.actions.push(Action::ForgetKept(forget));
            self.kept = Some(HashSet::new());
        }
        self.executions.clear();
        self.proposed.clear();
        self.want_proposal = None;
        self.last_commit_ms = self.now.mono_ms;
        self.validators = self.ledger.state().validators()?;
        Ok(())
    }

    /// Asks the next validator (round robin) for blocks after our head, at most once a tick
    /// and only when no request is waiting for its answer.
    fn ask_sync(&mut self) {
        if self
            .last_sync_ask_ms
            .is_some_and(|t| self.now.mono_ms < t + self.config.tick_ms)
        {
            return;
        }
        let peers = self.other_validators();
        if peers.is_empty() || !self.config.networked {
            return;
        }
        let peer = peers[self.next_sync_peer % peers.len()];
        if self.ask_blocks(peer) {
            self.next_sync_peer = self.next_sync_peer.wrapping_add(1);
            self.last_sync_ask_ms = Some(self.now.mono_ms);
        }
    }

    /// Asks a peer for the blocks after our head, unless a request is still waiting for its
    /// answer. Says whether it asked.
    fn ask_blocks(&mut self, peer: PublicKey) -> bool {
        if !self.config.networked
            || self
                .sync_in_flight_ms
                .is_some_and(|t| self.now.mono_ms < t + SYNC_ANSWER_WAIT_MS)
        {
            return false;
        }
        self.actions.push(Action::AskBlocks {
            peer,
            from_height: self.ledger.head().height + 1,
        });
        self.sync_in_flight_ms = Some(self.now.mono_ms);
        true
    }

    /// When the next block may be proposed, on the monotonic clock: one block interval after
    /// the last block was built, by its timestamp, so the interval paces blocks rather than
    /// adding idle time after each commit. A proposer whose clock runs behind the last one's
    /// waits at most an interval after the commit.
    fn proposal_due(&self) -> u64 {
        let after_commit = self.last_commit_ms + self.config.interval_ms;
        let wait_ms = self
            .ledger
            .head()
            .timestamp
            .0
            .saturating_add(self.config.interval_ms)
            .saturating_sub(self.now.wall.0);
        after_commit.min(self.now.mono_ms + wait_ms)
    }

    /// Builds the proposal the core asked for once there is something to propose and the
    /// block interval has passed since the last block was built (so entries batch into
    /// blocks).
    fn try_propose(&mut self) -> Result<(), NodeError> {
        let Some((height, round)) = self.want_proposal else {
            return Ok(());
        };
        let Some(core) = &self.core else {
            return Ok(());
        };
        if core.height() != height || core.round() != round {
            self.want_proposal = None;
            return Ok(());
        }
        let due = self.proposal_due() <= self.now.mono_ms;
        if !due && !self.ledger.batch_full() && round == 0 {
            return Ok(());
        }
        // In a later round the network is waiting on this proposer: propose even an empty
        // block rather than let the round time out.
        let me = self.config.key.public();
        let Some((block, exec)) = self.ledger.build_proposal(me, round > 0, self.now.wall)? else {
            return Ok(());
        };
        let block_hash = block.hash();
        self.want_proposal = None;
        let body = Body {
            block,
            slot: (height, round),
            from_proposer: true,
        };
        self.bodies.insert(block_hash, body);
        self.executions.insert(block_hash, exec);
        self.input(Input::ProposalValue {
            height,
            round,
            block_hash,
        })
    }

    /// Feeds the core and carries out its effects, in order, feeding back the answers.
    fn input(&mut self, first: Input) -> Result<(), NodeError> {
        let mut queue = VecDeque::from([first]);
        while let Some(input) = queue.pop_front() {
            let Some(core) = self.core.as_mut() else {
                return Ok(());
            };
            for effect in core.handle(input) {
                self.effect(effect, &mut queue)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, to: Option<PublicKey>, message: Message) {
        if !self.config.networked {
            return;
        }
        let block = match &message {
            Message::Proposal(p) => self.proposed_form(&p.block_hash).map(Box::new),
            Message::Vote(_) => None,
        };
        let to = match to {
            Some(to) => vec![to],
            None => self.other_validators(),
        };
        self.actions.push(Action::Send {
            to,
            request: Request::Consensus {
                message: Box::new(message),
                block,
            },
            connected_only: false,
        });
    }

    fn effect(&mut self, effect: Effect, queue: &mut VecDeque<Input>) -> Result<(), NodeError> {
        match effect {
            Effect::Persist(record) => self.persist(&record),
            Effect::Broadcast(m) => self.send(None, m),
            Effect::Send { to, message } => self.send(Some(to), message),
            Effect::Schedule { timeout, after_ms } => {
                self.timer_seq += 1;
                let at = self.now.mono_ms + after_ms;
                self.timers.insert((at, self.timer_seq), timeout);
            }
            Effect::RequestProposal { height, round } => {
                self.want_proposal = Some((height, round));
            }
            Effect::VerifyBlock { height, block_hash } => {
                if !self.bodies.contains_key(&block_hash) {
                    if let Some(block) = self.ledger.disk().pending_block(&block_hash)? {
                        let body = Body {
                            block,
                            slot: (height, u32::MAX),
                            from_proposer: true,
                        };
                        self.bodies.insert(block_hash, body);
                        self.assemblies.remove(&block_hash);
                    }
                }
                if self.bodies.contains_key(&block_hash) {
                    if let Some(valid) = self.verify_body(height, block_hash) {
                        queue.push_back(Input::BlockVerified {
                            height,
                            block_hash,
                            valid,
                        });
                    }
                } else if self.awaiting_body.len() < PROPOSED_BLOCKS_MAX {
                    // Answered when the block arrives (the proposer re-sends it each tick)
                    // or its missing entries do; until then the core waits, and its
                    // timeout moves it on.
                    self.awaiting_body.insert(block_hash, height);
                }
            }
            Effect::Commit { certificate } => {
                let hash = certificate.block_hash;
                let Some(block) = self.body(&hash) else {
                    // Decided by the others while this node lacked the block: sync fetches it.
                    tracing::warn!(height = certificate.height, block = %hash.short(), "decided a block this node does not hold; syncing");
                    self.ask_sync();
                    return Ok(());
                };
                let exec = match self.executions.remove(&hash) {
                    Some(e) => e,
                    None => self
                        .ledger
                        .verify_synced(&block, &certificate)
                        .map_err(|e| {
                            NodeError::Corrupt(format!("decided block fails to replay: {e}"))
                        })?,
                };
                self.commit(&block, &certificate, exec)?;
                if self.config.networked && !self.config.observers.is_empty() {
                    self.actions.push(Action::Send {
                        to: self.config.observers.clone(),
                        request: Request::Push(vec![CertifiedBlock { block, certificate }]),
                        connected_only: false,
                    });
                }
                self.after_commit()?;
                if self.has_orderable_work()? {
                    queue.push_back(Input::Work);
                }
            }
            Effect::Evidence(e) => {
                let bytes = codec::encode(&e);
                if self
                    .ledger
                    .disk()
                    .put_evidence(&e.offender(), e.height(), &bytes)?
                {
                    tracing::warn!(offender = %e.offender().short(), height = e.height(), "validator equivocated; evidence kept");
                    self.status.evidence += 1;
                }
            }
            Effect::Behind { height } => {
                self.others_at = self.others_at.max(height);
                tracing::info!(height, "validators are ahead; syncing");
                self.ask_sync();
            }
            Effect::PeerBehind { validator, height } => {
                // Help a validator a few heights behind, now and then.
                let head = self.ledger.head().height;
                let recent = self
                    .pushed
                    .get(&validator)
                    .is_some_and(|t| self.now.mono_ms < t + PUSH_AGAIN_MS);
                if recent || height.saturating_add(PUSH_HEIGHTS_MAX) < head {
                    return Ok(());
                }
                self.pushed.insert(validator, self.now.mono_ms);
                let blocks = self
                    .ledger
                    .disk()
                    .blocks_from(height, self.config.sync_bytes_max);
                if self.config.networked && !blocks.is_empty() {
                    self.actions.push(Action::Send {
                        to: vec![validator],
                        request: Request::Push(blocks),
                        connected_only: false,
                    });
                }
            }
        }
        Ok(())
    }

    /// Hands the shell a safety record to make durable before anything it records is sent.
    /// A value this validator proposed or locked on may be decided from its record after a
    /// crash (alone, nobody else holds it): its block goes into the same synced write.
    fn persist(&mut self, record: &SafetyRecord) {
        let mut hashes: Vec<Hash> = record
            .locked
            .iter()
            .chain(record.valid.iter())
            .map(|(_, h)| *h)
            .collect();
        for m in &record.signed {
            if let Message::Proposal(p) = m {
                hashes.push(p.block_hash);
            }
        }
        hashes.sort_unstable();
        hashes.dedup();
        let mut keep = Vec::new();
        for h in hashes {
            if self.kept.as_ref().is_some_and(|k| k.contains(&h)) {
                continue;
            }
            if let Some(body) = self.bodies.get(&h) {
                keep.push(body.block.clone());
                if let Some(kept) = &mut self.kept {
                    kept.insert(h);
                }
            }
        }
        self.actions.push(Action::Persist {
            height: record.height,
            record: codec::encode(record),
            keep,
        });
    }
}

/// A block kept with the safety record, or `None` when it is not there or does not read
/// back: the node then goes on without it (a decided block it lacks is fetched by sync) rather
/// than stop on one damaged kept block.
fn kept_block(disk: &dyn Disk, hash: &Hash) -> Option<Block> {
    match disk.pending_block(hash) {
        Ok(block) => block,
        Err(e) => {
            tracing::warn!(block = %hash.short(), error = %e, "a kept block does not read back; going on without it");
            None
        }
    }
}

/// Makes one synced write of the safety records of one height in a batch of actions. A later
/// record of the same height is a later state of the same validator (a round no lower): it
/// holds every message of the earlier one that can still matter, since a restored core never
/// goes back to an earlier round. So writing the last record where the first stood, with
/// every block any of them keeps, still makes what each send says durable before it leaves,
/// in one fsync: a proposer's proposal and its prevote come out of one input, and cost one
/// write. A record is never moved ahead of another height's (a node that decided a height
/// whose block it lacks must not be found, after a crash, with a record above its head) nor
/// past a [`Action::ForgetKept`], which could delete a block the moved record keeps.
fn coalesce_persists(actions: &mut Vec<Action>) {
    let mut out: Vec<Action> = Vec::with_capacity(actions.len());
    // Where, in `out`, the record now being coalesced stands.
    let mut open: Option<usize> = None;
    for action in actions.drain(..) {
        match action {
            Action::Persist {
                height,
                record,
                keep,
            } => {
                let same_height = open.and_then(|at| match &mut out[at] {
                    Action::Persist {
                        height: h,
                        record: r,
                        keep: k,
                    } if *h == height => Some((r, k)),
                    _ => None,
                });
                match same_height {
                    Some((r, k)) => {
                        *r = record;
                        for block in keep {
                            if !k.iter().any(|b| b.header == block.header) {
                                k.push(block);
                            }
                        }
                    }
                    None => {
                        open = Some(out.len());
                        out.push(Action::Persist {
                            height,
                            record,
                            keep,
                        });
                    }
                }
            }
            Action::ForgetKept(hashes) => {
                open = None;
                out.push(Action::ForgetKept(hashes));
            }
            other => out.push(other),
        }
    }
    *actions = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persist(record: u8) -> Action {
        at_height(1, record)
    }

    fn at_height(height: u64, record: u8) -> Action {
        Action::Persist {
            height,
            record: vec![record],
            keep: Vec::new(),
        }
    }

    fn ask(from_height: u64) -> Action {
        Action::AskBlocks {
            peer: Keypair::from_seed_for_tests(1).public(),
            from_height,
        }
    }

    /// The shape of a batch: P(record) for a safety record, A(height) for another action,
    /// F for forgetting kept blocks.
    fn shape(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Persist { record, .. } => format!("P{}", record[0]),
                Action::AskBlocks { from_height, .. } => format!("A{from_height}"),
                Action::ForgetKept(_) => "F".to_string(),
                Action::Send { .. } => "S".to_string(),
            })
            .collect()
    }

    #[test]
    fn the_last_record_is_written_where_the_first_stood() {
        let mut actions = vec![persist(1), ask(1), persist(2), ask(2), persist(3), ask(3)];
        coalesce_persists(&mut actions);
        assert_eq!(shape(&actions), ["P3", "A1", "A2", "A3"]);
    }

    #[test]
    fn no_record_moves_past_a_forget() {
        let mut actions = vec![
            persist(1),
            ask(1),
            persist(2),
            Action::ForgetKept(None),
            persist(3),
            ask(3),
            persist(4),
        ];
        coalesce_persists(&mut actions);
        assert_eq!(shape(&actions), ["P2", "A1", "F", "P4", "A3"]);
        let mut alone = vec![ask(1), persist(1), ask(2)];
        coalesce_persists(&mut alone);
        assert_eq!(shape(&alone), ["A1", "P1", "A2"]);
    }

    #[test]
    fn no_record_moves_ahead_of_another_heights() {
        let mut actions = vec![
            at_height(5, 1),
            ask(1),
            at_height(5, 2),
            at_height(6, 3),
            ask(2),
            at_height(6, 4),
        ];
        coalesce_persists(&mut actions);
        assert_eq!(shape(&actions), ["P2", "A1", "P4", "A2"]);
    }
}
