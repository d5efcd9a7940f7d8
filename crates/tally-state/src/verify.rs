//! Building and checking blocks: one verifier, written once, for every user.
//!
//! The proposer builds a block with [`build_block`]; every other check of a block (a node
//! receiving it from consensus or block sync, an observer, `tally audit verify` on a copy of the
//! data) goes through [`check_block`] and [`ChainVerifier`]: hash link, height, time, validator
//! set, commit certificate, entries root, every entry's admission (signatures included) and a
//! replay through the state machine to the same outcomes and the same state root.

use crate::execute::{
    execute_candidates, execute_identified, BlockContext, ExecuteError, Execution, Signature,
};
use crate::store::{StagedTree, State, StateRead};
use crate::{Rejection, StateError};
use tally_types::block::{outcomes_root, validators_hash};
use tally_types::keys::{verify_batch, SignatureCheck};
use tally_types::{
    Block, BlockHeader, CommitCertificate, Domain, EntryId, EntryOutcome, Genesis, Hash,
    IdentifiedEntry, Name, PublicKey, SignedEntry, TimestampMs, Unverified, VerifiedEntry,
};

/// Below this many signatures a block's entries are checked on the calling thread: starting
/// threads costs more than it saves.
const PARALLEL_VERIFY_MIN: usize = 64;

/// The cores this process may use, asked of the system once: the answer reads cgroup files,
/// which cost more than checking a small relayed batch of signatures.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Checks entries that arrive together (a batch submission, a relay) on every core, each
/// slice in one batch ([`VerifiedEntry::verify_all`]): verification bounds a node's
/// throughput, and the entries' signatures are independent.
pub fn verify_entries(entries: Vec<IdentifiedEntry>) -> Vec<Result<VerifiedEntry, Unverified>> {
    // A slice's answers are never dropped: each entry must get one, in order. A panic in a
    // check is a bug, and goes on up.
    on_all_cores(entries, VerifiedEntry::verify_all)
        .into_iter()
        .flat_map(|answers| answers.unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect()
}

/// Runs `work` over `items` cut into one slice per core, in order, each on a thread of its
/// own; on this thread alone when there is one core or too few items to be worth threads.
/// Each slice's result is returned as its thread ended, so the caller says what a panic means.
fn on_all_cores<T: Send, R: Send>(
    items: Vec<T>,
    work: impl Fn(Vec<T>) -> R + Sync,
) -> Vec<std::thread::Result<R>> {
    let threads = cores();
    if threads < 2 || items.len() < PARALLEL_VERIFY_MIN {
        return vec![Ok(work(items))];
    }
    let slice = items.len().div_ceil(threads);
    let mut slices = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > slice {
        let tail = rest.split_off(slice);
        slices.push(rest);
        rest = tail;
    }
    slices.push(rest);
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = slices
            .into_iter()
            .map(|part| s.spawn(move || work(part)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

/// Entries whose signatures a node has checked already: a block's entries found here are not
/// checked again. A mempool is one, since it holds only [`VerifiedEntry`]s.
pub trait KnownEntries {
    /// The id of this exact entry, signature included, when it is held as verified: it was
    /// hashed and checked on admission, and is neither hashed nor checked again.
    fn verified_id(&self, entry: &SignedEntry) -> Option<EntryId>;
}

/// Nothing known: every signature of a block is checked (an auditor, a chain copy).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoneKnown;

impl KnownEntries for NoneKnown {
    fn verified_id(&self, _: &SignedEntry) -> Option<EntryId> {
        None
    }
}

/// Whether every entry's signature holds over its id, checked in one batch.
fn batch_valid(entries: &[(&SignedEntry, &EntryId)]) -> bool {
    let checks: Vec<SignatureCheck<'_>> = entries
        .iter()
        .map(|(e, id)| SignatureCheck {
            key: &e.body.author,
            domain: Domain::EntrySignature,
            message: id.as_bytes(),
            signature: &e.signature,
        })
        .collect();
    verify_batch(&checks)
}

/// [`batch_valid`] on every core, in as many slices as the machine has: a block's signatures
/// are independent.
fn batch_valid_on_all_cores(entries: &[(&SignedEntry, &EntryId)]) -> bool {
    on_all_cores(entries.to_vec(), |part| batch_valid(&part))
        .into_iter()
        .all(|valid| valid.unwrap_or(false))
}

/// What a replay needs of a block's entries that the state does not change: their ids (each
/// body hashed once), the root they hash to, and whether their signatures all held. When one
/// did not, the replay checks each at its entry's turn, so that the first bad entry is the one
/// reported, the same on every machine.
#[derive(Debug, Clone)]
struct Found {
    signature: Signature,
    ids: Vec<EntryId>,
    entries_root: Hash,
}

impl Found {
    /// Works it out on this thread, the signatures in one batch.
    fn of(entries: &[SignedEntry]) -> Self {
        let ids: Vec<EntryId> = entries.iter().map(SignedEntry::id).collect();
        let pairs: Vec<(&SignedEntry, &EntryId)> = entries.iter().zip(&ids).collect();
        let valid = batch_valid(&pairs);
        Found::with(entries, ids, valid)
    }

    /// Works it out with the signatures checked on every core, but for those `known` holds.
    fn checking(entries: &[SignedEntry], known: &dyn KnownEntries) -> Self {
        let known: Vec<Option<EntryId>> = entries.iter().map(|e| known.verified_id(e)).collect();
        let ids: Vec<EntryId> = entries
            .iter()
            .zip(&known)
            .map(|(e, id)| id.unwrap_or_else(|| e.id()))
            .collect();
        let unknown: Vec<(&SignedEntry, &EntryId)> = entries
            .iter()
            .zip(&ids)
            .zip(&known)
            .filter(|(_, id)| id.is_none())
            .map(|(pair, _)| pair)
            .collect();
        let valid = batch_valid_on_all_cores(&unknown);
        Found::with(entries, ids, valid)
    }

    fn with(entries: &[SignedEntry], ids: Vec<EntryId>, valid: bool) -> Self {
        Found {
            signature: if valid {
                Signature::Checked
            } else {
                Signature::Check
            },
            ids,
            entries_root: Block::compute_entries_root(entries),
        }
    }
}

/// What a replay is given of a block's entries: worked out already (a [`CheckedBlock`]), or
/// to work out once the cheaper checks of the header have passed.
enum Findings<'a> {
    Ready(&'a Found),
    Later(&'a dyn KnownEntries),
}

/// A block read from a chain copy, with what can be checked of it before its turn: its
/// entries' signatures, their ids and its entries root. None of it depends on the blocks
/// before, so an auditor works it out for the next blocks on other threads, one block per
/// thread, while [`ChainVerifier`] replays the last one.
#[derive(Debug, Clone)]
pub struct CheckedBlock {
    block: Block,
    found: Found,
}

impl CheckedBlock {
    /// Checks what the block shows on its own, on this thread (its signatures in one batch,
    /// which is cheaper per signature the larger it is).
    pub fn new(block: Block) -> Self {
        let found = Found::of(&block.entries);
        CheckedBlock { block, found }
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }
}

/// The chain position a new block extends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    /// The chain id.
    pub chain_id: Name,
    /// Height of the last block (0 at genesis).
    pub height: u64,
    /// Hash of the last block (the genesis hash at height 0).
    pub hash: Hash,
    /// Timestamp of the last block (genesis time at height 0).
    pub timestamp: TimestampMs,
}

impl Tip {
    /// The tip of a chain with no blocks yet.
    pub fn genesis(genesis: &Genesis) -> Self {
        Self {
            chain_id: genesis.chain_id.clone(),
            height: 0,
            hash: genesis.hash(),
            timestamp: genesis.genesis_time,
        }
    }
}

/// A rule of the chain that a block breaks. `rule` is a stable code for scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("height {height}{}: {rule}: {detail}", entry.map(|e| format!(" entry {e}")).unwrap_or_default())]
pub struct Violation {
    /// The block's height.
    pub height: u64,
    /// The entry at fault, when one is.
    pub entry: Option<EntryId>,
    /// Stable code: `chain_id`, `height`, `parent`, `timestamp`, `validators`, `certificate`,
    /// `entry_count`, `entries_root`, `entry_admission`, `outcomes_root`, `state_root`, `state`.
    pub rule: &'static str,
    /// What was found and what was expected.
    pub detail: String,
}

fn violation(height: u64, rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        height,
        entry: None,
        rule,
        detail: detail.into(),
    }
}

/// A block the proposer built, with what executing it produced.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    /// The block, header filled in.
    pub block: Block,
    /// Outcomes, rejections and the state diff.
    pub execution: Execution,
    /// The state tree after the block, for its commit.
    pub staged: StagedTree,
    /// Candidates that could not be ordered, with why (a rotated author, a used sequence).
    pub left_out: Vec<(VerifiedEntry, Rejection)>,
}

/// Builds the next block from candidate entries (in mempool order). Entries that can no longer
/// be ordered are returned with their reason instead of being included.
pub fn build_block(
    state: &State,
    tip: &Tip,
    timestamp: TimestampMs,
    proposer: PublicKey,
    candidates: impl IntoIterator<Item = VerifiedEntry>,
) -> Result<BuiltBlock, StateError> {
    let timestamp = timestamp.max(tip.timestamp);
    let ctx = BlockContext {
        chain_id: tip.chain_id.clone(),
        height: tip.height + 1,
        timestamp,
    };
    let (exec, left_out) = execute_candidates(state, &ctx, candidates)?;
    let staged = state.stage(&exec.diff)?;
    let header = BlockHeader {
        chain_id: tip.chain_id.clone(),
        height: ctx.height,
        parent: tip.hash,
        timestamp,
        proposer,
        entry_count: exec.entries.len() as u32,
        entries_root: Block::compute_entries_root(&exec.entries),
        outcomes_root: outcomes_root(&exec.outcomes),
        state_root: staged.root(),
        validators_hash: validators_hash(&state.validators()?),
    };
    let block = Block {
        header,
        entries: exec.entries.clone(),
    };
    Ok(BuiltBlock {
        block,
        execution: exec,
        staged,
        left_out,
    })
}

/// Checks a block against the chain it claims to extend, replaying its entries. Returns the
/// execution and the state tree after it (to store and apply) when every check holds. Does not
/// check a certificate. The signatures of entries `known` holds are not checked again; the
/// others are, on every core.
pub fn check_block(
    state: &State,
    tip: &Tip,
    block: &Block,
    known: &dyn KnownEntries,
) -> Result<(Execution, StagedTree), Violation> {
    let exec = replay_block(state, tip, block, Findings::Later(known))?;
    let staged = state
        .stage(&exec.diff)
        .map_err(|e| violation(block.header.height, "state", e.to_string()))?;
    check_state_root(&block.header, staged.root())?;
    Ok((exec, staged))
}

/// The state root rule: the header commits to the state the block leaves.
fn check_state_root(header: &BlockHeader, root: Hash) -> Result<(), Violation> {
    if root != header.state_root {
        return Err(violation(
            header.height,
            "state_root",
            format!(
                "replay gives state root {root}, header says {}",
                header.state_root
            ),
        ));
    }
    Ok(())
}

/// Every check of [`check_block`] but the state root, which needs the state after the block:
/// a caller that owns its state can apply the execution in place and then compare.
fn replay_block(
    state: &State,
    tip: &Tip,
    block: &Block,
    findings: Findings<'_>,
) -> Result<Execution, Violation> {
    let h = &block.header;
    let height = h.height;
    if h.chain_id != tip.chain_id {
        return Err(violation(
            height,
            "chain_id",
            format!(
                "block is for chain {}, expected {}",
                h.chain_id, tip.chain_id
            ),
        ));
    }
    if height != tip.height + 1 {
        return Err(violation(
            height,
            "height",
            format!("expected height {}", tip.height + 1),
        ));
    }
    if h.parent != tip.hash {
        return Err(violation(
            height,
            "parent",
            format!("parent {} is not the previous block {}", h.parent, tip.hash),
        ));
    }
    if h.timestamp < tip.timestamp {
        return Err(violation(
            height,
            "timestamp",
            format!(
                "timestamp {} is before the previous block's {}",
                h.timestamp.0, tip.timestamp.0
            ),
        ));
    }
    let validators = state
        .validators()
        .map_err(|e| violation(height, "state", e.to_string()))?;
    if h.validators_hash != validators_hash(&validators) {
        return Err(violation(
            height,
            "validators",
            "validators hash does not match the validator set",
        ));
    }
    if !validators.contains(&h.proposer) {
        return Err(violation(
            height,
            "proposer",
            format!("proposer {} is not a validator", h.proposer.short()),
        ));
    }
    if h.entry_count as usize != block.entries.len() {
        return Err(violation(
            height,
            "entry_count",
            format!(
                "header says {} entries, block has {}",
                h.entry_count,
                block.entries.len()
            ),
        ));
    }
    let worked_out;
    let found = match findings {
        Findings::Ready(found) => found,
        Findings::Later(known) => {
            worked_out = Found::checking(&block.entries, known);
            &worked_out
        }
    };
    if found.entries_root != h.entries_root {
        return Err(violation(
            height,
            "entries_root",
            "entries do not hash to the header's entries root",
        ));
    }
    let ctx = BlockContext {
        chain_id: tip.chain_id.clone(),
        height,
        timestamp: h.timestamp,
    };
    let exec = match execute_identified(state, &ctx, &block.entries, &found.ids, found.signature) {
        Ok(exec) => exec,
        Err(ExecuteError::InvalidBlock(e)) => {
            return Err(Violation {
                height,
                entry: Some(e.entry),
                rule: "entry_admission",
                detail: e.rejection.to_string(),
            })
        }
        Err(ExecuteError::State(e)) => return Err(violation(height, "state", e.to_string())),
    };
    if outcomes_root(&exec.outcomes) != h.outcomes_root {
        return Err(violation(
            height,
            "outcomes_root",
            "replayed outcomes differ from the header's outcomes root",
        ));
    }
    Ok(exec)
}

/// Verifies a chain block by block from genesis, holding the replayed state.
///
/// It applies each block to its state before comparing the state root (in place, which spares
/// a copy of the tree's path to every changed record), so a verifier that found a violation
/// has stopped: its state may hold the block that broke the rule, and every later call returns
/// that violation again.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    state: State,
    tip: Tip,
    entries: u64,
    rejected: u64,
    stopped: Option<Violation>,
}

/// What verifying one block found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSummary {
    /// Entries in the block.
    pub entries: u64,
    /// Of which rejected by a rule (kept as evidence).
    pub rejected: u64,
    /// Each entry's outcome, in block order.
    pub outcomes: Vec<(EntryId, EntryOutcome)>,
}

impl ChainVerifier {
    /// Starts at genesis.
    pub fn new(genesis: &Genesis) -> Self {
        Self {
            state: State::genesis(genesis),
            tip: Tip::genesis(genesis),
            entries: 0,
            rejected: 0,
            stopped: None,
        }
    }

    /// Checks the next block and its certificate, and advances.
    pub fn verify_next(
        &mut self,
        block: &Block,
        cert: &CommitCertificate,
    ) -> Result<BlockSummary, Violation> {
        self.verify(block, Findings::Later(&NoneKnown), cert)
    }

    /// [`ChainVerifier::verify_next`] for a block whose own checks were made beforehand,
    /// say on other threads while the previous block replayed.
    pub fn verify_checked(
        &mut self,
        checked: &CheckedBlock,
        cert: &CommitCertificate,
    ) -> Result<BlockSummary, Violation> {
        self.verify(&checked.block, Findings::Ready(&checked.found), cert)
    }

    fn verify(
        &mut self,
        block: &Block,
        findings: Findings<'_>,
        cert: &CommitCertificate,
    ) -> Result<BlockSummary, Violation> {
        if let Some(v) = &self.stopped {
            return Err(v.clone());
        }
        let checked = self.check_and_apply(block, findings, cert);
        if let Err(v) = &checked {
            self.stopped = Some(v.clone());
        }
        checked
    }

    fn check_and_apply(
        &mut self,
        block: &Block,
        findings: Findings<'_>,
        cert: &CommitCertificate,
    ) -> Result<BlockSummary, Violation> {
        let height = block.header.height;
        let validators = self
            .state
            .validators()
            .map_err(|e| violation(height, "state", e.to_string()))?;
        cert.verify(&block.header, &validators)
            .map_err(|e| violation(height, "certificate", e.to_string()))?;
        let exec = replay_block(&self.state, &self.tip, block, findings)?;
        let rejected = exec.rejections.iter().filter(|r| r.is_some()).count() as u64;
        self.state
            .apply(&exec.diff)
            .map_err(|e| violation(height, "state", e.to_string()))?;
        check_state_root(&block.header, self.state.root())?;
        self.tip = Tip {
            chain_id: self.tip.chain_id.clone(),
            height,
            hash: block.hash(),
            timestamp: block.header.timestamp,
        };
        self.entries += exec.entries.len() as u64;
        self.rejected += rejected;
        Ok(BlockSummary {
            entries: exec.entries.len() as u64,
            rejected,
            outcomes: exec.outcomes,
        })
    }

    /// The replayed state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The last verified block.
    pub fn tip(&self) -> &Tip {
        &self.tip
    }

    /// Entries verified so far, and how many of them were rejected by a rule.
    pub fn counts(&self) -> (u64, u64) {
        (self.entries, self.rejected)
    }
}
