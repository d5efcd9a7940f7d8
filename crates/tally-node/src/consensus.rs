//! The host of the Tendermint core: it turns the core's effects into disk writes, network
//! sends, timers and commits, and the network's messages, timers and submissions into the
//! core's inputs. It runs on one thread of its own, so the core sees one input at a time.
//!
//! A node whose key is not a genesis validator is an observer: it runs no core, follows the
//! chain by the blocks validators push to it and by block sync, verifies every certificate
//! and every block, and serves the API.

use crate::ledger::{now_ms, ProposalError};
use crate::{NodeError, Relayed, Shared};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_consensus::{Core, Effect, Input, Message, Step, Timeout};
use tally_network::{BlockSource, CertifiedBlock, Inbound, NetworkHandle, Request};
use tally_storage::Store;
use tally_types::{codec, Block, EntryId, Hash, IdentifiedEntry, PublicKey, TimestampMs};

/// Proposed blocks held for the current and next height, at most. Each is at most one
/// network frame. When full, the block of the oldest earlier round that is neither locked on
/// nor held as the valid value is forgotten; a proposal whose block is not kept is answered
/// when the proposer sends it again, and until then the core waits for its timeout.
pub const PROPOSED_BLOCKS_MAX: usize = 64;

/// How many rounds ahead of the current one a proposal's block is kept.
const BODY_ROUNDS_AHEAD: u32 = 2;

/// A validator further behind than this many heights is not pushed blocks; it pulls them.
const PUSH_HEIGHTS_MAX: u64 = 16;

/// Most pending entries relayed again: by an observer on each poll, by any node when a
/// validator (re)connects.
const RELAY_AGAIN_MAX: usize = 512;

/// How long a block-sync request may stay unanswered before another is sent: longer than the
/// network's 10 s request timeout, after which it reports the failure anyway.
const SYNC_ANSWER_WAIT: Duration = Duration::from_secs(12);

/// How long a restarted or new validator waits for peers' blocks before it starts voting.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// What wakes the driver.
#[derive(Debug)]
pub enum Event {
    /// Something from the network.
    Net(Inbound),
    /// The API admitted an entry into an empty relay queue (or, without a network, any entry).
    Work,
    /// Stop.
    Stop,
}

impl From<Inbound> for Event {
    fn from(i: Inbound) -> Self {
        Event::Net(i)
    }
}

/// What a node is in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Votes (its key is in the genesis validator set).
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
    /// Consensus messages accepted, and dropped by reason.
    pub messages: tally_consensus::Counters,
    /// Equivocations detected and kept as evidence.
    pub evidence: u64,
    /// Blocks committed from block sync or pushes (not decided here).
    pub synced_blocks: u64,
    /// Blocks received by sync that failed verification.
    pub rejected_blocks: u64,
}

/// Serves block sync from committed storage.
pub struct StoreSource(pub Store);

impl BlockSource for StoreSource {
    fn blocks_from(&self, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock> {
        let mut out = Vec::new();
        let mut used = 0usize;
        let Ok(head) = self.0.head() else {
            return out;
        };
        for h in from_height.max(1)..=head.height {
            let (Ok(Some(block)), Ok(Some(certificate))) = (self.0.block(h), self.0.certificate(h))
            else {
                break;
            };
            let item = CertifiedBlock { block, certificate };
            let size = codec::encoded_len(&item) + 16;
            if used + size > bytes_max && !out.is_empty() {
                break;
            }
            used += size;
            out.push(item);
        }
        out
    }
}

/// What a driver is made of: fixed for the life of the node.
pub struct DriverParts {
    /// The chain.
    pub chain_id: tally_types::Name,
    /// The Tendermint core; `None` for an observer.
    pub core: Option<Core>,
    /// State shared with the API.
    pub shared: Arc<Shared>,
    /// The node's storage (the safety record, kept blocks, evidence).
    pub store: Store,
    /// The network, absent for a lone validator.
    pub net: Option<NetworkHandle>,
    /// This node's key.
    pub me: PublicKey,
    /// The validator set.
    pub validators: Vec<PublicKey>,
    /// Observers to push each committed block to.
    pub observers: Vec<PublicKey>,
    /// How often to feed `Input::Tick`.
    pub tick: Duration,
    /// The least time between commits before a proposal is built (batching).
    pub interval: Duration,
    /// Largest batch of blocks pushed or served at once, in bytes.
    pub sync_bytes_max: usize,
}

/// The driver: its fixed parts and what changes as it runs.
pub struct Driver {
    parts: DriverParts,
    timers: BTreeMap<(Instant, u64), Timeout>,
    timer_seq: u64,
    /// Proposed blocks by hash, with the (height, round) whose proposal brought them.
    bodies: HashMap<Hash, (Block, (u64, u32))>,
    /// Verifications the core asked for whose block has not arrived yet.
    awaiting_body: HashMap<Hash, u64>,
    /// Blocks whose timestamp is still too far ahead of this node's clock, checked again
    /// each tick: a verdict that depends on the clock is never final.
    too_early: HashMap<Hash, u64>,
    /// When each lagging validator was last sent blocks unasked.
    pushed: HashMap<PublicKey, Instant>,
    last_relay: Instant,
    executions: HashMap<Hash, crate::ledger::Executed>,
    /// The entries of the blocks checked at this height: their signatures were checked with
    /// the block, so a relay that brings one later is not checked again.
    proposed: HashSet<EntryId>,
    /// Blocks kept on disk for the safety record since the last commit; `None` after a start,
    /// when blocks kept before it may still be there.
    kept: Option<HashSet<Hash>>,
    want_proposal: Option<(u64, u32)>,
    last_commit: Instant,
    next_sync_peer: usize,
    last_sync_ask: Option<Instant>,
    /// When the block-sync request now waiting for its answer was sent. One at a time: each
    /// answer holds up to 4 MiB of blocks, and a node that is behind hears "the others are
    /// ahead" from every vote, so asking again each time would stack answers that it
    /// decodes and then mostly discards, while its peers read and send them.
    sync_in_flight: Option<Instant>,
    voting: bool,
    start_by: Instant,
    status: ConsensusStatus,
}

impl Driver {
    /// A driver that has not started voting yet.
    pub fn new(parts: DriverParts) -> Self {
        let role = if parts.core.is_some() {
            Role::Validator
        } else {
            Role::Observer
        };
        let status = ConsensusStatus {
            role,
            height: 0,
            round: 0,
            step: None,
            voting: false,
            messages: Default::default(),
            evidence: parts.store.evidence().map(|e| e.len() as u64).unwrap_or(0),
            synced_blocks: 0,
            rejected_blocks: 0,
        };
        // Alone, or without peers, there is nothing to catch up from.
        let alone = parts.validators.len() == 1 || parts.net.is_none();
        // Blocks this validator proposed or locked on before a restart: it must be able to
        // send them with its re-proposal, or a network where all restarted could never see
        // the value it is locked on again.
        let mut bodies = HashMap::new();
        if let Some(core) = &parts.core {
            for (round, hash) in [core.locked(), core.valid(), core.own_proposal()]
                .into_iter()
                .flatten()
            {
                if let Ok(Some(block)) = parts.store.pending_block(&hash) {
                    bodies.insert(hash, (block, (core.height(), round)));
                }
            }
        }
        Driver {
            parts,
            timers: BTreeMap::new(),
            timer_seq: 0,
            bodies,
            awaiting_body: HashMap::new(),
            too_early: HashMap::new(),
            pushed: HashMap::new(),
            last_relay: Instant::now(),
            executions: HashMap::new(),
            proposed: HashSet::new(),
            kept: None,
            want_proposal: None,
            last_commit: Instant::now(),
            next_sync_peer: 0,
            last_sync_ask: None,
            sync_in_flight: None,
            voting: false,
            start_by: if alone {
                Instant::now()
            } else {
                Instant::now() + CATCH_UP_WAIT
            },
            status,
        }
    }

    /// Runs until stopped. An error stops the node.
    pub fn run(mut self, events: Receiver<Event>) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + self.parts.tick;
        loop {
            if self.parts.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = Instant::now();
            if !self.voting && now >= self.start_by {
                self.start_voting()?;
            }
            while let Some((&(at, seq), _)) = self.timers.first_key_value() {
                if at > now {
                    break;
                }
                if let Some(t) = self.timers.remove(&(at, seq)) {
                    self.input(Input::Timeout(t))?;
                }
            }
            if now >= next_tick {
                next_tick = now + self.parts.tick;
                self.on_tick()?;
            }
            let relayed = self.parts.shared.flush_relays();
            if matches!(relayed, Relayed::Sent) && self.voting {
                // The entries just relayed may have made an author's entries orderable.
                self.signal_work()?;
            }
            self.try_propose()?;
            self.publish_status();
            let mut wake = next_tick;
            if let Relayed::Due(due) = relayed {
                wake = wake.min(due);
            }
            if let Some((&(at, _), _)) = self.timers.first_key_value() {
                wake = wake.min(at);
            }
            if !self.voting {
                wake = wake.min(self.start_by);
            }
            if self.want_proposal.is_some() {
                let due = self.proposal_due();
                if due > Instant::now() {
                    wake = wake.min(due);
                }
            }
            let wait = wake.saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Ok(e) => self.event(e)?,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn start_voting(&mut self) -> Result<(), NodeError> {
        self.voting = true;
        if self.parts.core.is_some() {
            tracing::info!("consensus started");
            self.input(Input::Start)?;
            self.signal_work()?;
        }
        Ok(())
    }

    /// Whether an entry could go into the next block now. An entry waiting behind a gap in
    /// its author's sequence is not work: it must not make the network build empty blocks.
    fn has_orderable_work(&self) -> Result<bool, NodeError> {
        let l = self.parts.shared.ledger()?;
        Ok(!l.mempool().candidates(l.state(), 1)?.is_empty())
    }

    /// Tells the core there is work, when it does not know yet and there is.
    fn signal_work(&mut self) -> Result<(), NodeError> {
        if self.parts.core.as_ref().is_none_or(Core::has_work) {
            return Ok(());
        }
        if self.has_orderable_work()? {
            self.input(Input::Work)?;
        }
        Ok(())
    }

    fn on_tick(&mut self) -> Result<(), NodeError> {
        if self.parts.core.is_some() {
            if self.voting {
                self.input(Input::Tick)?;
                self.recheck_too_early()?;
            }
            // Hand pending entries to the other validators again, in case a relay was lost.
            if self.last_relay.elapsed() >= Duration::from_secs(2) {
                self.last_relay = Instant::now();
                self.parts.shared.relay_pending(RELAY_AGAIN_MAX)?;
            }
        } else {
            // Observers poll now and then in case a push was lost, and hand their pending
            // entries to the validators again in case a relay was lost.
            let due = self
                .last_sync_ask
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            if due {
                self.ask_sync();
                self.parts.shared.relay_pending(RELAY_AGAIN_MAX)?;
            }
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        if let Some(core) = &self.parts.core {
            self.status.height = core.height();
            self.status.round = core.round();
            self.status.step = Some(core.step());
            self.status.messages = core.counters().clone();
        } else if let Ok(l) = self.parts.shared.ledger() {
            self.status.height = l.head().height + 1;
        }
        self.status.voting = self.voting && self.parts.core.is_some();
        if let Ok(mut s) = self.parts.shared.consensus.lock() {
            *s = self.status.clone();
        }
    }

    fn event(&mut self, e: Event) -> Result<(), NodeError> {
        match e {
            Event::Work => {
                if self.voting {
                    self.signal_work()?;
                }
            }
            Event::Stop => {}
            Event::Net(Inbound::Request { from, request }) => match request {
                Request::Consensus { message, block } => {
                    if !self.parts.validators.contains(&from) || self.parts.core.is_none() {
                        return Ok(());
                    }
                    if let (Some(block), Message::Proposal(p)) = (block, message.as_ref()) {
                        self.keep_body(*block, p)?;
                    }
                    if self.voting {
                        self.input(Input::Message(*message))?;
                    }
                }
                Request::Entries(entries) => {
                    // Relays repeat (every pending entry is relayed again now and then) and
                    // race the proposals that carry their entries, so under load many arrive
                    // after this node has checked the entry in a proposed block or committed
                    // it: those cost a lookup, not a signature check. No more are checked
                    // than the room they can claim in the mempool; the rest would be refused,
                    // and a proposal that carries one has it checked then.
                    let (claim, mut fresh) = {
                        let ledger = self.parts.shared.ledger()?;
                        let occupancy = ledger.mempool().occupancy();
                        let room = occupancy.room();
                        let mut fresh = Vec::new();
                        for e in entries {
                            if fresh.len() == room {
                                break;
                            }
                            let e = IdentifiedEntry::new(e);
                            if !self.proposed.contains(&e.id()) && ledger.awaits_admission(&e)? {
                                fresh.push(e);
                            }
                        }
                        (occupancy.claim(fresh.len()), fresh)
                    };
                    fresh.truncate(claim.entries());
                    // Checked on all cores outside the ledger lock; a bad one is refused on
                    // admission with its reason.
                    let checked = tally_state::verify_entries(fresh);
                    let mut admitted = false;
                    let mut ledger = self.parts.shared.ledger()?;
                    for checked in checked {
                        admitted |= ledger.submit(checked).is_ok();
                    }
                    drop((ledger, claim));
                    if admitted && self.voting {
                        self.signal_work()?;
                    }
                }
                Request::Push(blocks) => {
                    self.apply_blocks(from, blocks)?;
                }
                Request::Blocks { .. } => {} // answered by the network task
            },
            Event::Net(Inbound::Blocks { from, blocks }) => {
                self.sync_in_flight = None;
                let empty = blocks.is_empty();
                if self.apply_blocks(from, blocks)? {
                    // More may follow: keep asking the same peer until it has nothing new.
                    self.ask_blocks(from)?;
                } else if empty && !self.voting {
                    // A peer has nothing beyond our head: we are caught up.
                    self.start_voting()?;
                }
            }
            Event::Net(Inbound::BlocksFailed { .. }) => self.sync_in_flight = None,
            Event::Net(Inbound::Connected(peer)) => {
                if self.parts.validators.contains(&peer) {
                    self.ask_blocks(peer)?;
                    // A validator that was away missed the relays of what is pending.
                    self.parts.shared.relay_pending(RELAY_AGAIN_MAX)?;
                }
            }
            Event::Net(Inbound::Disconnected(_)) => {}
        }
        Ok(())
    }

    /// Keeps the block a proposal carries when it is the block the proposal names, for a
    /// height being decided. Only the round's proposer's signed proposal brings a block, one
    /// block per round, so a Byzantine validator cannot fill the store with blocks nobody
    /// proposed.
    fn keep_body(&mut self, block: Block, p: &tally_consensus::Proposal) -> Result<(), NodeError> {
        let Some(core) = &self.parts.core else {
            return Ok(());
        };
        let h = block.header.height;
        // Rounds far ahead are refused: a Byzantine proposer owns every n-th round, and must
        // not be able to take the room the current round's block needs.
        let round_limit = if h == core.height() {
            core.round().saturating_add(BODY_ROUNDS_AHEAD)
        } else {
            BODY_ROUNDS_AHEAD
        };
        let slot_taken = self
            .bodies
            .values()
            .any(|(_, slot)| *slot == (p.height, p.round));
        if self.bodies.contains_key(&p.block_hash)
            || slot_taken
            || block.hash() != p.block_hash
            || p.height != h
            || !(core.height()..=core.height() + 1).contains(&h)
            || p.round > round_limit
            || core.validators().proposer(p.height, p.round) != &p.proposer
            || p.verify(&self.parts.chain_id).is_err()
        {
            return Ok(());
        }
        if self.bodies.len() >= PROPOSED_BLOCKS_MAX {
            // Make room by forgetting the block of the oldest earlier round this validator is
            // neither locked on nor holds as its valid value.
            let keep: Vec<Hash> = [core.locked(), core.valid()]
                .into_iter()
                .flatten()
                .map(|(_, h)| h)
                .collect();
            let current = (core.height(), core.round());
            let oldest = self
                .bodies
                .iter()
                .filter(|(hash, (_, slot))| !keep.contains(hash) && *slot < current)
                .min_by_key(|(_, (_, slot))| *slot)
                .map(|(hash, _)| *hash);
            match oldest {
                Some(hash) => {
                    self.bodies.remove(&hash);
                }
                None => return Ok(()),
            }
        }
        self.bodies
            .insert(p.block_hash, (block, (p.height, p.round)));
        if let Some(height) = self.awaiting_body.remove(&p.block_hash) {
            if let Some(valid) = self.verify_body(height, p.block_hash) {
                self.input(Input::BlockVerified {
                    height,
                    block_hash: p.block_hash,
                    valid,
                })?;
            }
        }
        Ok(())
    }

    /// Checks again the blocks that were too far ahead of this node's clock.
    fn recheck_too_early(&mut self) -> Result<(), NodeError> {
        let Some(height) = self.parts.core.as_ref().map(Core::height) else {
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
    /// `None` while its timestamp is too far ahead of this node's clock: that is checked
    /// again each tick rather than judged for good.
    fn verify_body(&mut self, height: u64, block_hash: Hash) -> Option<bool> {
        let verdict = match self.bodies.get(&block_hash) {
            Some((block, _)) if block.header.height == height => match self.parts.shared.ledger() {
                Ok(l) => l.verify_proposal(block),
                Err(e) => Err(ProposalError::Invalid(e.to_string())),
            },
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
            Err(ProposalError::Invalid(why)) => {
                tracing::warn!(height, block = %block_hash.short(), %why, "proposed block is invalid");
                Some(false)
            }
        }
    }

    /// A proposed block by hash: received with a proposal, or kept on disk before a restart.
    fn body(&self, hash: &Hash) -> Option<Block> {
        match self.bodies.get(hash) {
            Some((b, _)) => Some(b.clone()),
            None => self.parts.store.pending_block(hash).ok().flatten(),
        }
    }

    /// Verifies and commits blocks from sync or a push, in height order. Returns whether the
    /// chain grew.
    fn apply_blocks(
        &mut self,
        from: PublicKey,
        blocks: Vec<CertifiedBlock>,
    ) -> Result<bool, NodeError> {
        let mut synced_to = None;
        for CertifiedBlock { block, certificate } in blocks {
            let mut ledger = self.parts.shared.ledger()?;
            let next = ledger.head().height + 1;
            if block.header.height < next {
                continue;
            }
            if block.header.height > next {
                break;
            }
            match ledger.verify_synced(&block, &certificate) {
                Ok(exec) => {
                    let head = ledger.commit(&block, &certificate, exec)?;
                    self.status.synced_blocks += 1;
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
            return Ok(false);
        };
        self.after_commit(height);
        // The core learns of it even before it votes, so it starts at the right height.
        self.input(Input::Synced { height })?;
        if self.voting {
            self.signal_work()?;
        }
        Ok(true)
    }

    fn after_commit(&mut self, height: u64) {
        self.bodies.retain(|_, (b, _)| b.header.height > height);
        self.awaiting_body.retain(|_, h| *h > height);
        let forgotten = match self.kept.take() {
            Some(kept) => self.parts.store.forget_pending_blocks(&kept),
            None => self.parts.store.clear_pending_blocks(),
        };
        if let Err(e) = forgotten {
            tracing::warn!(error = %e, "could not clear kept proposals");
        }
        self.kept = Some(HashSet::new());
        self.executions.clear();
        self.proposed.clear();
        self.want_proposal = None;
        self.last_commit = Instant::now();
    }

    /// Asks the next validator (round robin) for blocks after our head, at most once a tick
    /// and only when no request is waiting for its answer.
    fn ask_sync(&mut self) {
        if self
            .last_sync_ask
            .is_some_and(|t| t.elapsed() < self.parts.tick)
        {
            return;
        }
        if self.parts.net.is_none() {
            return;
        }
        let peers: Vec<PublicKey> = self
            .parts
            .validators
            .iter()
            .copied()
            .filter(|v| *v != self.parts.me)
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.next_sync_peer % peers.len()];
        if let Ok(true) = self.ask_blocks(peer) {
            self.next_sync_peer = self.next_sync_peer.wrapping_add(1);
            self.last_sync_ask = Some(Instant::now());
        }
    }

    /// Asks a peer for the blocks after our head, unless a request is still waiting for its
    /// answer. Says whether it asked.
    fn ask_blocks(&mut self, peer: PublicKey) -> Result<bool, NodeError> {
        if self
            .sync_in_flight
            .is_some_and(|t| t.elapsed() < SYNC_ANSWER_WAIT)
        {
            return Ok(false);
        }
        let Some(net) = &self.parts.net else {
            return Ok(false);
        };
        let next = self.parts.shared.ledger()?.head().height + 1;
        net.ask_blocks(peer, next);
        self.sync_in_flight = Some(Instant::now());
        Ok(true)
    }

    /// When the next block may be proposed: one block interval after the last block was
    /// built, by its timestamp, so the interval paces blocks rather than adding idle time
    /// after each commit. A proposer whose clock runs behind the last one's waits at most an
    /// interval after the commit.
    fn proposal_due(&self) -> Instant {
        match self.parts.shared.ledger() {
            Ok(ledger) => self.proposal_due_after(ledger.head().timestamp),
            Err(_) => self.last_commit + self.parts.interval,
        }
    }

    /// [`Driver::proposal_due`] for a head built at `built`, for a caller already holding the
    /// ledger.
    fn proposal_due_after(&self, built: TimestampMs) -> Instant {
        let after_commit = self.last_commit + self.parts.interval;
        let interval_ms = self.parts.interval.as_millis() as u64;
        let wait_ms = built
            .0
            .saturating_add(interval_ms)
            .saturating_sub(now_ms().0);
        after_commit.min(Instant::now() + Duration::from_millis(wait_ms))
    }

    /// Builds the proposal the core asked for once there is something to propose and the
    /// block interval has passed since the last block was built (so entries batch into
    /// blocks).
    fn try_propose(&mut self) -> Result<(), NodeError> {
        let Some((height, round)) = self.want_proposal else {
            return Ok(());
        };
        let Some(core) = &self.parts.core else {
            return Ok(());
        };
        if core.height() != height || core.round() != round {
            self.want_proposal = None;
            return Ok(());
        }
        let built = {
            let mut ledger = self.parts.shared.ledger()?;
            let due = self.proposal_due_after(ledger.head().timestamp) <= Instant::now();
            if !due && !ledger.batch_full() && round == 0 {
                return Ok(());
            }
            // In a later round the network is waiting on this proposer: propose even an empty
            // block rather than let the round time out.
            ledger.build_proposal(self.parts.me, round > 0)?
        };
        let Some((block, exec)) = built else {
            return Ok(());
        };
        let block_hash = block.hash();
        self.want_proposal = None;
        self.bodies.insert(block_hash, (block, (height, round)));
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
            let Some(core) = self.parts.core.as_mut() else {
                return Ok(());
            };
            for effect in core.handle(input) {
                self.effect(effect, &mut queue)?;
            }
        }
        Ok(())
    }

    fn send(&self, to: Option<PublicKey>, message: Message) {
        let Some(net) = &self.parts.net else { return };
        let block = match &message {
            Message::Proposal(p) => self.body(&p.block_hash).map(Box::new),
            Message::Vote(_) => None,
        };
        let request = Request::Consensus {
            message: Box::new(message),
            block,
        };
        match to {
            Some(to) => net.send(to, request),
            None => net.send_all(
                self.parts
                    .validators
                    .iter()
                    .filter(|v| **v != self.parts.me),
                &request,
            ),
        }
    }

    fn effect(&mut self, effect: Effect, queue: &mut VecDeque<Input>) -> Result<(), NodeError> {
        match effect {
            Effect::Persist(record) => {
                // A value this validator proposed or locked on may be decided from its record
                // after a crash (alone, nobody else holds it): its block is kept first.
                let mut keep: Vec<Hash> = record
                    .locked
                    .iter()
                    .chain(record.valid.iter())
                    .map(|(_, h)| *h)
                    .collect();
                for m in &record.signed {
                    if let Message::Proposal(p) = m {
                        keep.push(p.block_hash);
                    }
                }
                keep.sort_unstable();
                keep.dedup();
                keep.retain(|h| {
                    !self.kept.as_ref().is_some_and(|k| k.contains(h))
                        && self.bodies.contains_key(h)
                });
                let blocks: Vec<&Block> = keep
                    .iter()
                    .filter_map(|h| self.bodies.get(h).map(|(block, _)| block))
                    .collect();
                // Durable before anything it records is sent: the blocks and the record go in
                // one synced write.
                self.parts
                    .store
                    .put_safety_record(&codec::encode(&record), &blocks)?;
                if let Some(kept) = &mut self.kept {
                    kept.extend(keep);
                }
            }
            Effect::Broadcast(m) => self.send(None, m),
            Effect::Send { to, message } => self.send(Some(to), message),
            Effect::Schedule { timeout, after_ms } => {
                self.timer_seq += 1;
                let at = Instant::now() + Duration::from_millis(after_ms);
                self.timers.insert((at, self.timer_seq), timeout);
            }
            Effect::RequestProposal { height, round } => {
                self.want_proposal = Some((height, round));
            }
            Effect::VerifyBlock { height, block_hash } => {
                if !self.bodies.contains_key(&block_hash) {
                    if let Some(block) = self.parts.store.pending_block(&block_hash)? {
                        self.bodies.insert(block_hash, (block, (height, u32::MAX)));
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
                    // Answered when the block arrives (the proposer re-sends it each tick);
                    // until then the core waits, and its timeout moves it on.
                    self.awaiting_body.insert(block_hash, height);
                }
            }
            Effect::Commit { certificate } => {
                let hash = certificate.block_hash;
                let held = match self.bodies.get(&hash) {
                    Some((block, _)) => Some(block.clone()),
                    None => self.parts.store.pending_block(&hash)?,
                };
                let Some(block) = held else {
                    // Decided by the others while this node lacked the block: sync fetches it.
                    tracing::warn!(height = certificate.height, block = %hash.short(), "decided a block this node does not hold; syncing");
                    self.ask_sync();
                    return Ok(());
                };
                let head = {
                    let mut ledger = self.parts.shared.ledger()?;
                    let exec = match self.executions.remove(&hash) {
                        Some(e) => e,
                        None => ledger.verify_synced(&block, &certificate).map_err(|e| {
                            NodeError::Corrupt(format!("decided block fails to replay: {e}"))
                        })?,
                    };
                    ledger.commit(&block, &certificate, exec)?
                };
                if let Some(net) = &self.parts.net {
                    net.send_all(
                        &self.parts.observers,
                        &Request::Push(vec![CertifiedBlock { block, certificate }]),
                    );
                }
                self.after_commit(head.height);
                if self.has_orderable_work()? {
                    queue.push_back(Input::Work);
                }
            }
            Effect::Evidence(e) => {
                let bytes = codec::encode(&e);
                if self
                    .parts
                    .store
                    .put_evidence(&e.offender(), e.height(), &bytes)?
                {
                    tracing::warn!(offender = %e.offender().short(), height = e.height(), "validator equivocated; evidence kept");
                    self.status.evidence += 1;
                }
            }
            Effect::Behind { height } => {
                tracing::info!(height, "validators are ahead; syncing");
                self.ask_sync();
            }
            Effect::PeerBehind { validator, height } => {
                // Help a validator a few heights behind, at most once a second: one far behind
                // pulls by sync itself, and an old vote replayed by someone else must not set
                // off a stream of pushes.
                let head = self.parts.shared.ledger()?.head().height;
                let recent = self
                    .pushed
                    .get(&validator)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                if recent || height.saturating_add(PUSH_HEIGHTS_MAX) < head {
                    return Ok(());
                }
                self.pushed.insert(validator, Instant::now());
                let blocks = StoreSource(self.parts.store.clone())
                    .blocks_from(height, self.parts.sync_bytes_max);
                if let (Some(net), false) = (&self.parts.net, blocks.is_empty()) {
                    net.send(validator, Request::Push(blocks));
                }
            }
        }
        Ok(())
    }
}
