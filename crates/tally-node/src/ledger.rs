//! The node's view of the chain: committed state, storage, mempool and recent rejections, and
//! the step that turns pending entries into a committed block.

use crate::config::{ApiSection, BlockSection, MempoolSection, NodeConfig};
use crate::engine::Disk;
use crate::mempool::{InsertError, Mempool};
use crate::NodeError;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use tally_state::{
    build_block, check_block, Execution, Rejection, StagedTree, State, StateRead, Tip,
};
use tally_storage::{CommitBatch, EntryRecord, Head};
use tally_types::{
    Block, CommitCertificate, EntryId, Genesis, IdentifiedEntry, RejectCode, TimestampMs,
    Unverified, VerifiedEntry,
};

/// A block's execution with the state tree it leaves: what building or checking the block
/// worked out, kept for its commit, which stores the one and applies the other.
pub type Executed = (Execution, StagedTree);

/// How far ahead of this node's clock a proposed block's timestamp may be. Expiry rules read
/// block time, so a proposer must not be able to move it far into the future.
pub const CLOCK_DRIFT_MAX_MS: u64 = 10_000;

/// Why a proposed block is not (yet) acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalError {
    /// Its timestamp is too far ahead of this node's clock: it may become acceptable once
    /// the clock catches up, so it must not be judged invalid for good.
    TooEarly {
        /// How long until it is within the drift limit.
        wait_ms: u64,
    },
    /// Its entries do not hash to its header's entries root. The header is the proposer's
    /// (it hashes to the signed proposal's block hash), but the entries may not be: a peer
    /// can send other entries under it, and this node's mempool can hold another signature
    /// over the same entry body. So this says nothing of the block itself, only that its
    /// entries are still to be found.
    EntriesDiffer,
    /// It does not extend the head or does not replay to what it claims.
    Invalid(String),
}

/// Rejections of entries that never reached a block, kept so a submitter can ask later.
#[derive(Debug)]
struct RecentRejections {
    max: usize,
    order: VecDeque<EntryId>,
    by_id: HashMap<EntryId, Rejection>,
}

impl RecentRejections {
    fn insert(&mut self, id: EntryId, r: Rejection) {
        if self.by_id.insert(id, r).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

/// Where an entry stands, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryStatus {
    /// In the mempool.
    Pending,
    /// In a block (accepted or rejected by a rule: see the record's outcome).
    Ordered(EntryRecord),
    /// Refused before ordering.
    Refused(Rejection),
    /// Never seen (or its refusal was forgotten).
    Unknown,
}

/// Why a submission was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Refused, with a reason for the submitter.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The node could not read its own data.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl From<tally_storage::StorageError> for SubmitError {
    fn from(e: tally_storage::StorageError) -> Self {
        SubmitError::Node(e.into())
    }
}

/// Committed chain plus pending work.
pub struct Ledger {
    /// The genesis document.
    pub genesis: Genesis,
    disk: Box<dyn Disk>,
    state: State,
    tip: Tip,
    head: Head,
    mempool: Mempool,
    rejections: RecentRejections,
    block_entries_max: usize,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger(height {})", self.head.height)
    }
}

/// What a ledger holds at most, from the node's config.
#[derive(Debug, Clone)]
pub struct LedgerLimits {
    /// The mempool's bounds.
    pub mempool: MempoolSection,
    /// Refusals remembered for status queries (`api.recent_rejections_max`).
    pub recent_rejections_max: usize,
    /// Entries in one block (`block.entries_max`).
    pub block_entries_max: usize,
}

impl LedgerLimits {
    /// The limits a config sets.
    pub fn of(config: &NodeConfig) -> Self {
        LedgerLimits {
            mempool: config.mempool.clone(),
            recent_rejections_max: config.api.recent_rejections_max,
            block_entries_max: config.block.entries_max,
        }
    }
}

impl Default for LedgerLimits {
    fn default() -> Self {
        LedgerLimits {
            mempool: MempoolSection::default(),
            recent_rejections_max: ApiSection::default().recent_rejections_max,
            block_entries_max: BlockSection::default().entries_max,
        }
    }
}

impl Ledger {
    /// A ledger over a disk holding `head` and the `state` it leaves.
    pub fn new(
        limits: LedgerLimits,
        genesis: Genesis,
        disk: Box<dyn Disk>,
        state: State,
        head: Head,
    ) -> Self {
        let tip = Tip {
            chain_id: genesis.chain_id.clone(),
            height: head.height,
            hash: head.hash,
            timestamp: head.timestamp,
        };
        Self {
            genesis,
            disk,
            state,
            tip,
            head,
            mempool: Mempool::new(limits.mempool),
            rejections: RecentRejections {
                max: limits.recent_rejections_max,
                order: VecDeque::new(),
                by_id: HashMap::new(),
            },
            block_entries_max: limits.block_entries_max,
        }
    }

    /// The committed state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// What the ledger reads and writes durably.
    pub fn disk(&self) -> &dyn Disk {
        self.disk.as_ref()
    }

    /// The last committed block.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Most entries in one block (`block.entries_max`, which every node of a chain shares):
    /// a proposed block holding more is not taken.
    pub fn block_entries_max(&self) -> usize {
        self.block_entries_max
    }

    /// Whether a full block's worth of entries is waiting.
    pub fn batch_full(&self) -> bool {
        self.mempool.len() >= self.block_entries_max
    }

    /// Admits a submitted entry to the mempool, remembering a refusal for status queries.
    /// Callers check the signature before taking the ledger lock
    /// ([`tally_state::verify_entries`]) and pass what they found, so submissions on many
    /// connections are verified in parallel.
    pub fn submit(
        &mut self,
        checked: Result<VerifiedEntry, Unverified>,
    ) -> Result<EntryId, SubmitError> {
        let (id, author) = match &checked {
            Ok(e) => (e.id(), Some(e.entry().body.author)),
            Err(bad) => (bad.id, None),
        };
        let refused = match self
            .mempool
            .insert(&self.state, &self.genesis.chain_id, checked)
        {
            Ok(id) => return Ok(id),
            Err(InsertError::Rejected(r)) => r,
            Err(InsertError::State(e)) => return Err(SubmitError::Node(e.into())),
        };
        let signed_by_member = match author {
            Some(author) => self
                .state
                .key_record(&author)
                .map_err(|e| SubmitError::Node(e.into()))?
                .is_some(),
            None => false,
        };
        Err(SubmitError::Rejected(self.refused(
            &id,
            refused,
            signed_by_member,
        )?))
    }

    /// The refusal a submission gets whatever its signature ([`Mempool::refusal_unchecked`]),
    /// worded as [`Ledger::submit`] would (and not remembered: its signature was not checked).
    /// A caller asks before it checks the signature, and checks only when this says `None`.
    pub fn refusal_unchecked(
        &mut self,
        entry: &IdentifiedEntry,
    ) -> Result<Option<Rejection>, NodeError> {
        let refused = self
            .mempool
            .refusal_unchecked(&self.state, &self.genesis.chain_id, entry)?;
        refused
            .map(|r| self.refused(&entry.id(), r, false))
            .transpose()
    }

    /// Whether a relayed entry is worth a signature check: [`Mempool::refusal_unchecked`]
    /// finds no reason to refuse it, so nothing is looked up or remembered to say why.
    pub fn awaits_admission(&self, entry: &IdentifiedEntry) -> Result<bool, NodeError> {
        Ok(self
            .mempool
            .refusal_unchecked(&self.state, &self.genesis.chain_id, entry)?
            .is_none())
    }

    /// Says why an entry was refused, and remembers it for status queries only when it was
    /// signed by a key this chain registered and its signature held (`signed_by_member`). The
    /// id is the hash of the body alone, so a copy with a bad signature would otherwise make the
    /// genuine entry read as refused; and junk that costs no signature check, or is signed by
    /// keys made up for it, would push out the refusals honest submitters come back to read.
    fn refused(
        &mut self,
        id: &EntryId,
        refused: Rejection,
        signed_by_member: bool,
    ) -> Result<Rejection, NodeError> {
        // An entry in a block used its author's sequence number (and its author may have
        // retired since), so the mempool refused it for that: the block index is read only
        // then, to say it is in a block (read for every submission, it cost a tenth of a
        // node's CPU under load).
        if matches!(
            refused.code,
            RejectCode::StaleSequence | RejectCode::RetiredKey
        ) {
            if let Some(rec) = self.disk.entry(id)? {
                return Ok(Rejection::new(
                    RejectCode::DuplicateEntry,
                    format!("entry {} is already in block {}", id.short(), rec.height),
                ));
            }
        }
        // "Later" is no reason to keep: the submitter sends the entry again.
        if signed_by_member && refused.code != RejectCode::MempoolFull {
            self.rejections.insert(*id, refused.clone());
        }
        Ok(refused)
    }

    /// Where an entry stands.
    pub fn status(&self, id: &EntryId) -> Result<EntryStatus, NodeError> {
        if let Some(rec) = self.disk.entry(id)? {
            return Ok(EntryStatus::Ordered(rec));
        }
        if self.mempool.contains(id) {
            return Ok(EntryStatus::Pending);
        }
        Ok(match self.rejections.by_id.get(id) {
            Some(r) => EntryStatus::Refused(r.clone()),
            None => EntryStatus::Unknown,
        })
    }

    /// The committed head as the next block must extend it.
    pub fn tip(&self) -> &Tip {
        &self.tip
    }

    /// Builds the next block from the mempool on the committed head. Returns `None` when
    /// nothing can be ordered, unless `allow_empty` (a later round must propose something).
    pub fn build_proposal(
        &mut self,
        proposer: tally_types::PublicKey,
        allow_empty: bool,
        now: TimestampMs,
    ) -> Result<Option<(Block, Executed)>, NodeError> {
        let candidates = self
            .mempool
            .candidates(&self.state, self.block_entries_max)?;
        if candidates.is_empty() && !allow_empty {
            return Ok(None);
        }
        let tally_state::BuiltBlock {
            block,
            execution,
            staged,
            left_out,
        } = build_block(&self.state, &self.tip, now, proposer, candidates)?;
        for (entry, reason) in left_out {
            let id = entry.id();
            tracing::info!(entry = %id.short(), %reason, "entry left out of block");
            self.mempool.remove(&entry, &id);
            self.rejections.insert(id, reason);
        }
        if block.entries.is_empty() && !allow_empty {
            return Ok(None);
        }
        Ok(Some((block, (execution, staged))))
    }

    /// Checks a block another validator proposed: it must extend the committed head, carry a
    /// timestamp no further than [`CLOCK_DRIFT_MAX_MS`] ahead of this node's clock, and replay
    /// to exactly the roots it claims. Every entry's signature is checked once on this node:
    /// entries this node's mempool already holds were checked on admission, the rest here.
    pub fn verify_proposal(
        &self,
        block: &Block,
        now: TimestampMs,
    ) -> Result<Executed, ProposalError> {
        let ahead = block.header.timestamp.0.saturating_sub(now.0);
        if ahead > CLOCK_DRIFT_MAX_MS {
            return Err(ProposalError::TooEarly {
                wait_ms: ahead - CLOCK_DRIFT_MAX_MS,
            });
        }
        check_block(&self.state, &self.tip, block, &self.mempool).map_err(|v| {
            if v.rule == "entries_root" {
                ProposalError::EntriesDiffer
            } else {
                ProposalError::Invalid(v.to_string())
            }
        })
    }

    /// Checks a block received by sync: its certificate against the validator set, then the
    /// block itself as [`Ledger::verify_proposal`] does, minus the clock (it is history). A
    /// validator that fell behind under load holds most of the block's entries already.
    pub fn verify_synced(
        &self,
        block: &Block,
        certificate: &CommitCertificate,
    ) -> Result<Executed, String> {
        let validators = self.state.validators().map_err(|e| e.to_string())?;
        certificate
            .verify(&block.header, &validators)
            .map_err(|e| format!("certificate: {e}"))?;
        check_block(&self.state, &self.tip, block, &self.mempool).map_err(|v| v.to_string())
    }

    /// Commits a decided block with its certificate, in one synced write, and prunes the
    /// mempool of what it ordered.
    pub fn commit(
        &mut self,
        block: &Block,
        certificate: &CommitCertificate,
        (exec, staged): Executed,
    ) -> Result<Head, NodeError> {
        let head = self.disk.commit_block(&CommitBatch {
            block,
            certificate,
            outcomes: &exec.outcomes,
            rejections: &exec.rejections,
            diff: &exec.diff,
            staged: &staged,
        })?;
        self.state.apply_staged(&exec.diff, staged)?;
        // The header's state root is the staged tree's (storage checked it); recomputing it
        // over the whole state costs O(state) per block, so only test builds do it again.
        debug_assert_eq!(
            self.state.root(),
            head.state_root,
            "state after block {} does not match its header",
            head.height
        );
        let mut authors: BTreeSet<_> = block.entries.iter().map(|e| e.body.author).collect();
        // Rotations create new authors whose pending entries may now be orderable.
        for e in &block.entries {
            if let tally_types::Payload::RotateKey { new_key, .. } = e.body.payload {
                authors.insert(new_key);
            }
        }
        let ordered: HashSet<EntryId> = exec.outcomes.iter().map(|(id, _)| *id).collect();
        // The outcomes name the block's entries in order (storage refused the block
        // otherwise), with the ids execution worked out.
        for (entry, (id, _)) in block.entries.iter().zip(&exec.outcomes) {
            if let Some(displaced) = self.mempool.remove(entry, id) {
                let reason = Rejection::new(
                    RejectCode::StaleSequence,
                    format!(
                        "sequence {} was used by entry {} in block {}",
                        entry.body.sequence,
                        id.short(),
                        head.height
                    ),
                );
                self.rejections.insert(displaced.id(), reason);
            }
        }
        for (entry, retired) in self.mempool.prune(&self.state, authors)? {
            let id = entry.id();
            if ordered.contains(&id) {
                continue;
            }
            let reason = if retired {
                Rejection::new(
                    RejectCode::RetiredKey,
                    "the author key was rotated away before this entry was ordered",
                )
            } else {
                Rejection::new(
                    RejectCode::StaleSequence,
                    format!("sequence {} was used by another entry", entry.body.sequence),
                )
            };
            self.rejections.insert(id, reason);
        }
        self.tip = Tip {
            chain_id: self.tip.chain_id.clone(),
            height: head.height,
            hash: head.hash,
            timestamp: head.timestamp,
        };
        self.head = head.clone();
        let rejected = exec.rejections.iter().filter(|r| r.is_some()).count();
        tracing::info!(height = head.height, hash = %head.hash.short(), round = certificate.round, entries = block.entries.len(), rejected, "committed block");
        Ok(head)
    }

    /// The next sequence number an author should sign, counting its pending entries.
    pub fn next_sequence(&self, author: &tally_types::PublicKey) -> Result<Option<u64>, NodeError> {
        Ok(self
            .state
            .key_record(author)?
            .map(|r| self.mempool.next_sequence(author, r.next_sequence)))
    }
}
