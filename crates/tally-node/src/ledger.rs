//! The node's view of the chain: committed state, storage, mempool and recent rejections, and
//! the step that turns pending entries into a committed block.

use crate::config::NodeConfig;
use crate::consensus::Finality;
use crate::mempool::{InsertError, Mempool};
use crate::NodeError;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};
use tally_state::{build_block, Rejection, Signatures, State, StateRead, Tip};
use tally_storage::{CommitBatch, EntryRecord, Head, Store};
use tally_types::{EntryId, Genesis, RejectCode, SignedEntry, TimestampMs};

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
    store: Store,
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

fn now_ms() -> TimestampMs {
    TimestampMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

impl Ledger {
    /// Opens the data directory, initialising it from genesis when new, and reloads the state
    /// (checked against the head's state root).
    pub fn open(config: &NodeConfig, genesis: Genesis) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.node.data_dir).map_err(|e| {
            NodeError::Config(format!(
                "cannot create {}: {e}",
                config.node.data_dir.display()
            ))
        })?;
        let store = Store::open(&config.node.data_dir)?;
        store.init_genesis(&genesis)?;
        let head = store.head()?;
        let state = store.load_state()?;
        let tip = Tip {
            chain_id: genesis.chain_id.clone(),
            height: head.height,
            hash: head.hash,
            timestamp: head.timestamp,
        };
        Ok(Self {
            genesis,
            store,
            state,
            tip,
            head,
            mempool: Mempool::new(config.mempool.clone()),
            rejections: RecentRejections {
                max: config.api.recent_rejections_max,
                order: VecDeque::new(),
                by_id: HashMap::new(),
            },
            block_entries_max: config.block.entries_max,
        })
    }

    /// The committed state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last committed block.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Whether a full block's worth of entries is waiting.
    pub fn batch_full(&self) -> bool {
        self.mempool.len() >= self.block_entries_max
    }

    /// Admits a submitted entry to the mempool, remembering a refusal for status queries.
    pub fn submit(&mut self, entry: SignedEntry) -> Result<EntryId, SubmitError> {
        let id = entry.id();
        if let Some(rec) = self.store.entry(&id)? {
            return Err(Rejection::new(
                RejectCode::DuplicateEntry,
                format!("entry {} is already in block {}", id.short(), rec.height),
            )
            .into());
        }
        match self
            .mempool
            .insert(&self.state, &self.genesis.chain_id, entry)
        {
            Ok(id) => Ok(id),
            Err(InsertError::Rejected(r)) => {
                self.rejections.insert(id, r.clone());
                Err(SubmitError::Rejected(r))
            }
            Err(InsertError::State(e)) => Err(SubmitError::Node(e.into())),
        }
    }

    /// Where an entry stands.
    pub fn status(&self, id: &EntryId) -> Result<EntryStatus, NodeError> {
        if let Some(rec) = self.store.entry(id)? {
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

    /// Builds, certifies and commits one block from the mempool. Returns the new head, or
    /// `None` when nothing could be ordered.
    pub fn produce(
        &mut self,
        finality: &mut dyn Finality,
        proposer: tally_types::PublicKey,
    ) -> Result<Option<Head>, NodeError> {
        let candidates = self
            .mempool
            .candidates(&self.state, self.block_entries_max)?;
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut authors: BTreeSet<_> = candidates.iter().map(|e| e.body.author).collect();
        let tally_state::BuiltBlock {
            block,
            execution: exec,
            left_out,
        } = build_block(
            &self.state,
            &self.tip,
            now_ms(),
            proposer,
            candidates,
            Signatures::AlreadyVerified,
        )?;
        for (entry, reason) in left_out {
            tracing::info!(entry = %entry.id().short(), %reason, "entry left out of block");
            self.mempool.remove(&entry);
            self.rejections.insert(entry.id(), reason);
        }
        if block.entries.is_empty() {
            return Ok(None);
        }
        let certificate = finality.certify(&self.store, &block)?;
        let head = self.store.commit_block(&CommitBatch {
            block: &block,
            certificate: &certificate,
            outcomes: &exec.outcomes,
            rejections: &exec.rejections,
            diff: &exec.diff,
        })?;
        self.state.apply(&exec.diff);
        debug_assert_eq!(
            self.state.root(),
            head.state_root,
            "applied state must match the committed header"
        );
        // Rotations create new authors whose pending entries may now be orderable.
        for e in &block.entries {
            if let tally_types::Payload::RotateKey { new_key, .. } = e.body.payload {
                authors.insert(new_key);
            }
        }
        let ordered: HashSet<EntryId> = exec.outcomes.iter().map(|(id, _)| *id).collect();
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
        tracing::info!(height = head.height, hash = %head.hash.short(), entries = block.entries.len(), rejected, "committed block");
        Ok(Some(head))
    }

    /// The next sequence number an author should sign, counting its pending entries.
    pub fn next_sequence(&self, author: &tally_types::PublicKey) -> Result<Option<u64>, NodeError> {
        Ok(self
            .state
            .key_record(author)?
            .map(|r| self.mempool.next_sequence(author, r.next_sequence)))
    }
}
