//! A [`Disk`] in memory, for driving engines without RocksDB: in unit tests and in seeded
//! simulations, where a "crash" drops an engine and a restart builds a new one from what its
//! disk holds. Clones share one disk, so the test keeps a handle while the engine owns one.

use crate::engine::{within_bytes, Disk};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tally_network::CertifiedBlock;
use tally_state::{State, StateDiff, StateError};
use tally_storage::{CommitBatch, EntryRecord, Head, StorageError};
use tally_types::{Block, EntryId, Genesis, Hash, PublicKey};

/// What a [`MemDisk`] holds: what RocksDB would, as plain maps.
#[derive(Debug)]
struct Held {
    genesis_head: Head,
    blocks: Vec<CertifiedBlock>,
    heads: Vec<Head>,
    entries: HashMap<EntryId, EntryRecord>,
    diffs: Vec<StateDiff>,
    safety_record: Option<Vec<u8>>,
    pending: HashMap<Hash, Block>,
    evidence: BTreeMap<(u64, PublicKey), Vec<u8>>,
    synced_writes: u64,
}

/// A disk in memory. See the module's documentation.
#[derive(Debug, Clone)]
pub struct MemDisk {
    genesis: Genesis,
    held: Arc<Mutex<Held>>,
}

impl MemDisk {
    /// A disk holding only the genesis state.
    pub fn new(genesis: Genesis) -> Self {
        let state = State::genesis(&genesis);
        let head = Head {
            height: 0,
            hash: genesis.hash(),
            state_root: state.root(),
            timestamp: genesis.genesis_time,
        };
        MemDisk {
            genesis,
            held: Arc::new(Mutex::new(Held {
                genesis_head: head,
                blocks: Vec::new(),
                heads: Vec::new(),
                entries: HashMap::new(),
                diffs: Vec::new(),
                safety_record: None,
                pending: HashMap::new(),
                evidence: BTreeMap::new(),
                synced_writes: 0,
            })),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the chain and keeps what a validator signed (the safety record, the blocks it
    /// keeps, evidence), as `tally node reset` and the repair of a damaged directory do.
    pub fn reset_chain(&self) {
        let mut held = self.held();
        held.blocks.clear();
        held.heads.clear();
        held.entries.clear();
        held.diffs.clear();
    }

    /// The committed head.
    pub fn head(&self) -> Head {
        let held = self.held();
        held.heads.last().unwrap_or(&held.genesis_head).clone()
    }

    /// The committed state, rebuilt from genesis and every block's changes, as a restarted
    /// node loads it.
    pub fn state(&self) -> Result<State, StateError> {
        let mut state = State::genesis(&self.genesis);
        for diff in &self.held().diffs {
            state.apply(diff)?;
        }
        Ok(state)
    }

    /// The committed blocks with their certificates, oldest first.
    pub fn blocks(&self) -> Vec<CertifiedBlock> {
        self.held().blocks.clone()
    }

    /// The last safety record written.
    pub fn safety_record(&self) -> Option<Vec<u8>> {
        self.held().safety_record.clone()
    }

    /// How many synced writes were made: commits and safety records.
    pub fn synced_writes(&self) -> u64 {
        self.held().synced_writes
    }

    /// Evidence held.
    pub fn evidence(&self) -> usize {
        self.held().evidence.len()
    }

    /// Carries out [`crate::engine::Action::Persist`].
    pub fn put_safety_record(&self, record: &[u8], keep: &[Block]) {
        let mut held = self.held();
        for block in keep {
            held.pending.insert(block.hash(), block.clone());
        }
        held.safety_record = Some(record.to_vec());
        held.synced_writes += 1;
    }

    /// Carries out [`crate::engine::Action::ForgetKept`].
    pub fn forget_kept(&self, hashes: Option<&[Hash]>) {
        let mut held = self.held();
        match hashes {
            Some(hashes) => {
                for h in hashes {
                    held.pending.remove(h);
                }
            }
            None => held.pending.clear(),
        }
    }
}

impl Disk for MemDisk {
    fn commit_block(&self, c: &CommitBatch<'_>) -> Result<Head, StorageError> {
        let head = self.head();
        let header = &c.block.header;
        if header.height != head.height + 1 || header.parent != head.hash {
            return Err(StorageError::NotNext {
                height: header.height,
                head_height: head.height,
                reason: "does not extend the head".into(),
            });
        }
        if c.staged.root() != header.state_root {
            return Err(StorageError::NotNext {
                height: header.height,
                head_height: head.height,
                reason: "the staged state tree is not the one the header commits to".into(),
            });
        }
        let new_head = Head {
            height: header.height,
            hash: c.block.hash(),
            state_root: header.state_root,
            timestamp: header.timestamp,
        };
        let mut held = self.held();
        for (index, ((id, outcome), rejection)) in c.outcomes.iter().zip(c.rejections).enumerate() {
            held.entries.insert(
                *id,
                EntryRecord {
                    height: header.height,
                    index: index as u32,
                    outcome: *outcome,
                    rejection: rejection.clone(),
                },
            );
        }
        held.blocks.push(CertifiedBlock {
            block: c.block.clone(),
            certificate: c.certificate.clone(),
        });
        held.diffs.push(c.diff.clone());
        held.heads.push(new_head.clone());
        held.synced_writes += 1;
        Ok(new_head)
    }

    fn entry(&self, id: &EntryId) -> Result<Option<EntryRecord>, StorageError> {
        Ok(self.held().entries.get(id).cloned())
    }

    fn blocks_from(&self, from_height: u64, bytes_max: usize) -> Vec<CertifiedBlock> {
        let held = self.held();
        let from = usize::try_from(from_height.max(1) - 1).unwrap_or(usize::MAX);
        within_bytes(held.blocks.iter().skip(from).cloned(), bytes_max)
    }

    fn pending_block(&self, hash: &Hash) -> Result<Option<Block>, StorageError> {
        Ok(self.held().pending.get(hash).cloned())
    }

    fn put_evidence(
        &self,
        offender: &PublicKey,
        height: u64,
        evidence: &[u8],
    ) -> Result<bool, StorageError> {
        let mut held = self.held();
        if held.evidence.contains_key(&(height, *offender)) {
            return Ok(false);
        }
        held.evidence.insert((height, *offender), evidence.to_vec());
        Ok(true)
    }
}
