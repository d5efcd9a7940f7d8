//! RocksDB persistence for a tally node.
//!
//! Owns the on-disk layout and the one rule that makes the chain crash-safe: a block, its
//! commit certificate, the outcome of each of its entries, its state changes and the new head
//! are written in ONE synced `WriteBatch`. A crash at any instant leaves either the whole block
//! or none of it, and reopening a data directory resumes exactly at the last committed block.
//!
//! This crate holds no business rules: it stores what tally-state computed, and on reading it
//! back checks that the bytes are what was stored (a block must hash to its index entry, the
//! state must hash to the head's state root).

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Direction,
    IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tally_state::{
    leaf_changes, Backing, Pairs, Rejection, StagedTree, State, StateDiff, StateError,
};
use tally_types::{
    codec, Block, CommitCertificate, EntryId, EntryOutcome, Genesis, Hash, InclusionProof,
    PublicKey, TimestampMs,
};

/// Column families and what each holds.
mod cf {
    /// height (big-endian u64) -> canonical `Block`.
    pub const BLOCKS: &str = "blocks";
    /// height -> canonical `CommitCertificate`.
    pub const CERTIFICATES: &str = "certificates";
    /// block hash -> height.
    pub const BLOCK_INDEX: &str = "block_index";
    /// entry id -> `EntryRecord` (where it is and what happened to it).
    pub const ENTRIES: &str = "entries";
    /// state key -> state value, exactly the pairs of `tally_state::State`.
    pub const STATE: &str = "state";
    /// tree path of a state key -> its leaf hash: the state tree's leaves in path order, read
    /// back whenever a change reaches a subtree the node keeps folded.
    pub const LEAVES: &str = "state_leaves";
    /// What this node signed in consensus, written before a vote leaves the node.
    pub const SAFETY: &str = "safety";
    /// genesis, head.
    pub const META: &str = "meta";
    pub const ALL: [&str; 8] = [
        BLOCKS,
        CERTIFICATES,
        BLOCK_INDEX,
        ENTRIES,
        STATE,
        LEAVES,
        SAFETY,
        META,
    ];
}

/// How much memory RocksDB may use. Both are limits shared by every column family, so
/// RocksDB's memory does not grow with the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Cache of data, index and filter blocks, in bytes.
    pub cache_bytes: usize,
    /// Writes buffered in memtables before they are flushed, in bytes.
    pub write_buffer_bytes: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            cache_bytes: 32 << 20,
            write_buffer_bytes: 32 << 20,
        }
    }
}

const META_GENESIS: &[u8] = b"genesis";
const META_HEAD: &[u8] = b"head";
/// Present once `state_leaves` holds the leaf of every state record: written with genesis, or
/// after deriving the leaves of a directory written before they were kept.
const META_LEAVES: &[u8] = b"leaves";
/// Damage a running node found (its description): the next start repairs the directory.
const META_DAMAGED: &[u8] = b"damaged";
const SAFETY_RECORD: &[u8] = b"record";
const EVIDENCE_PREFIX: &[u8] = b"evidence/";
const PENDING_BLOCK_PREFIX: &[u8] = b"pending-block/";

fn pending_block_key(hash: &Hash) -> Vec<u8> {
    [PENDING_BLOCK_PREFIX, hash.as_bytes().as_slice()].concat()
}

/// Everything that can go wrong reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB refused an operation.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Bytes on disk are not what was written.
    #[error("data directory is corrupt: {0}")]
    Corrupt(String),
    /// The data directory belongs to another chain.
    #[error("data directory holds genesis {stored}, configuration gives {given}")]
    GenesisMismatch {
        /// Hash in the directory.
        stored: String,
        /// Hash configured.
        given: String,
    },
    /// The directory has no genesis yet.
    #[error("data directory has not been initialised with a genesis")]
    NoGenesis,
    /// A path given as a data directory is not one: missing, or holding no chain.
    #[error("{0}")]
    NotADataDirectory(String),
    /// A read failed for a reason other than damage (a full disk, too many open files).
    #[error("cannot read the data directory: {0}")]
    Unreadable(String),
    /// A file-system step of setting a directory aside failed.
    #[error("{path}: {source}")]
    Io {
        /// The path it failed on.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A block that does not extend the head.
    #[error("block {height} does not extend head {head_height} ({reason})")]
    NotNext {
        /// The block's height.
        height: u64,
        /// The head's height.
        head_height: u64,
        /// What is off.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// Whether the bytes on disk are not what was written (a checksum, a decode, a hash or a
    /// link that fails), as opposed to a refusal, a full disk or a lock: damage is what a
    /// node repairs by fetching the chain again.
    pub fn is_damage(&self) -> bool {
        match self {
            StorageError::Corrupt(_) => true,
            StorageError::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            _ => false,
        }
    }
}

/// The last committed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// 0 before any block.
    pub height: u64,
    /// Hash of the head block (the genesis hash at height 0).
    pub hash: Hash,
    /// State root after the head block.
    pub state_root: Hash,
    /// The head block's timestamp (the genesis time at height 0).
    pub timestamp: TimestampMs,
}

/// Where an ordered entry is and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// The block height.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// Accepted, or rejected with a code.
    pub outcome: EntryOutcome,
    /// The full reason when rejected.
    pub rejection: Option<Rejection>,
}

/// A block ready to be written: what consensus decided and what execution produced.
#[derive(Debug)]
pub struct CommitBatch<'a> {
    /// The block.
    pub block: &'a Block,
    /// Its commit certificate.
    pub certificate: &'a CommitCertificate,
    /// Each entry's outcome, in block order.
    pub outcomes: &'a [(EntryId, EntryOutcome)],
    /// Each entry's rejection reason, in block order.
    pub rejections: &'a [Option<Rejection>],
    /// The state changes.
    pub diff: &'a StateDiff,
    /// The state tree after them, staged when the block was built or checked: its changed
    /// leaves are stored beside the records without hashing them again.
    pub staged: &'a StagedTree,
}

/// An open data directory.
/// Cheap to clone: clones share one open database (RocksDB is safe to read and write from
/// several threads), so block sync can read while the node commits.
#[derive(Clone)]
pub struct Store {
    db: std::sync::Arc<DB>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.db.path().display())
    }
}

/// The records and tree leaves of a node's committed state, read straight from its database.
struct StoreBacking(Store);

/// A failed read of the state's store, as the state sees it: damage when the bytes are not
/// what was written, a failure of the store otherwise (a full disk, too many open files),
/// which no repair of the directory would help.
fn backing_error(e: impl Into<StorageError>) -> StateError {
    let e: StorageError = e.into();
    if e.is_damage() {
        StateError::Corrupt {
            key: "state store".into(),
            reason: e.to_string(),
        }
    } else {
        StateError::Backing {
            reason: e.to_string(),
        }
    }
}

fn leaf_value(bytes: &[u8]) -> std::result::Result<Hash, StateError> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash)
        .map_err(|_| StateError::Corrupt {
            key: "state tree leaf".into(),
            reason: format!("{} bytes, not 32", bytes.len()),
        })
}

fn xor_into(acc: &mut (u64, Hash), h: &Hash) {
    acc.0 += 1;
    for (a, b) in acc.1 .0.iter_mut().zip(h.0) {
        *a ^= b;
    }
}

impl Backing for StoreBacking {
    fn record(&self, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, StateError> {
        let store = &self.0;
        let cf = store.cf(cf::STATE).map_err(backing_error)?;
        store.db.get_cf(cf, key).map_err(backing_error)
    }

    fn records(&self, from: &[u8], to: &[u8]) -> std::result::Result<Pairs, StateError> {
        let mut out = Vec::new();
        let store = &self.0;
        let iter = store.db.iterator_cf(
            store.cf(cf::STATE).map_err(backing_error)?,
            IteratorMode::From(from, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(backing_error)?;
            if &*k >= to {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn leaves(&self, from: &Hash, to: &Hash) -> std::result::Result<Vec<(Hash, Hash)>, StateError> {
        Ok(self.leaves_in(&[(*from, *to)])?.pop().unwrap_or_default())
    }

    /// One iterator seeks from span to span: an iterator is a merge over every memtable and
    /// level, costlier to build than a seek.
    fn leaves_in(
        &self,
        spans: &[(Hash, Hash)],
    ) -> std::result::Result<Vec<Vec<(Hash, Hash)>>, StateError> {
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        let store = &self.0;
        let mut iter = store
            .db
            .raw_iterator_cf(store.cf(cf::LEAVES).map_err(backing_error)?);
        let mut out = Vec::with_capacity(spans.len());
        for (from, to) in spans {
            let mut leaves = Vec::new();
            iter.seek(from.as_bytes());
            while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                if k > to.as_bytes().as_slice() {
                    break;
                }
                leaves.push((leaf_value(k)?, leaf_value(v)?));
                iter.next();
            }
            iter.status().map_err(backing_error)?;
            out.push(leaves);
        }
        Ok(out)
    }
}

/// Whether a read goes through the block cache.
#[derive(Debug, Clone, Copy)]
enum Reads {
    /// Through it, as the node reads what it serves and uses.
    Cached,
    /// Past it, as the scrub reads the whole chain once in a while.
    Uncached,
}

fn height_key(h: u64) -> [u8; 8] {
    h.to_be_bytes()
}

fn decode<T: serde::de::DeserializeOwned + Serialize>(what: &str, bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

impl Store {
    /// Opens (creating if needed) a data directory for a node, with the default memory limits.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, MemoryLimits::default())
    }

    /// Opens (creating if needed) a data directory for a node.
    pub fn open_with(path: &Path, limits: MemoryLimits) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A node's open files and memory are bounded; see docs/operator-guide.md. Memtables of
        // all column families together flush at the write-buffer limit, and every block a
        // read touches, index and filter blocks included, goes through one cache. Indexes and
        // filters are partitioned, so a read that misses the cache loads a few KiB of them,
        // not a whole file's.
        opts.set_max_open_files(256);
        opts.set_db_write_buffer_size(limits.write_buffer_bytes);
        opts.set_write_buffer_size((limits.write_buffer_bytes / 4).max(1 << 20));
        opts.set_max_write_buffer_number(2);
        // Most point reads ask for a key the memtable does not hold (an entry id never seen,
        // a record last written long ago): a filter over the memtable's keys answers those
        // without a search of its skip list.
        opts.set_memtable_prefix_bloom_ratio(0.05);
        opts.set_memtable_whole_key_filtering(true);
        let cache = Cache::new_lru_cache(limits.cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        let cfs = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, opts.clone()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self { db: db.into() })
    }

    /// Opens a data directory read-only: for auditors, even while a node runs on it.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StorageError::NotADataDirectory(format!(
                "{} does not exist",
                path.display()
            )));
        }
        if !path.join("CURRENT").exists() {
            return Err(StorageError::NotADataDirectory(format!(
                "{} is not a tally data directory: it holds no chain (a node's `node.data_dir`, or a backup of one, does)",
                path.display()
            )));
        }
        let opts = Options::default();
        // A directory written before a column family existed is still readable.
        let present = DB::list_cf(&opts, path)?;
        let cfs = cf::ALL
            .iter()
            .filter(|name| present.iter().any(|p| p == *name));
        let db = DB::open_cf_for_read_only(&opts, path, cfs, false)?;
        Ok(Self { db: db.into() })
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Corrupt(format!("column family {name} missing")))
    }

    fn synced() -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        wo
    }

    /// Writes genesis and the genesis state into a fresh directory, or checks that an existing
    /// directory holds the same genesis.
    pub fn init_genesis(&self, genesis: &Genesis) -> Result<Head> {
        let given = genesis.hash();
        if let Some(stored) = self.genesis()? {
            let stored = stored.hash();
            if stored != given {
                return Err(StorageError::GenesisMismatch {
                    stored: stored.to_hex(),
                    given: given.to_hex(),
                });
            }
            return self.head();
        }
        let head = Head {
            height: 0,
            hash: given,
            state_root: State::genesis(genesis).root(),
            timestamp: genesis.genesis_time,
        };
        let mut batch = WriteBatch::default();
        let diff = State::genesis_diff(genesis);
        self.put_state_diff(&mut batch, &diff, &leaf_changes(&diff))?;
        let meta = self.cf(cf::META)?;
        batch.put_cf(meta, META_GENESIS, codec::encode(genesis));
        batch.put_cf(meta, META_HEAD, codec::encode(&head));
        batch.put_cf(meta, META_LEAVES, []);
        self.db.write_opt(batch, &Self::synced())?;
        Ok(head)
    }

    /// The genesis this directory was initialised with.
    pub fn genesis(&self) -> Result<Option<Genesis>> {
        match self.db.get_cf(self.cf(cf::META)?, META_GENESIS)? {
            None => Ok(None),
            Some(b) => decode("genesis", &b).map(Some),
        }
    }

    /// The last committed block.
    pub fn head(&self) -> Result<Head> {
        match self.db.get_cf(self.cf(cf::META)?, META_HEAD)? {
            None => Err(StorageError::NoGenesis),
            Some(b) => decode("head", &b),
        }
    }

    /// Commits a block in one synced batch. The block must extend the head.
    pub fn commit_block(&self, c: &CommitBatch<'_>) -> Result<Head> {
        let head = self.head()?;
        let header = &c.block.header;
        let not_next = |reason: String| StorageError::NotNext {
            height: header.height,
            head_height: head.height,
            reason,
        };
        if header.height != head.height + 1 {
            return Err(not_next("height is not head + 1".into()));
        }
        if header.parent != head.hash {
            return Err(not_next(format!(
                "parent {} is not head {}",
                header.parent.short(),
                head.hash.short()
            )));
        }
        let hash = c.block.hash();
        if c.certificate.block_hash != hash || c.certificate.height != header.height {
            return Err(not_next("certificate is for another block".into()));
        }
        if c.outcomes.len() != c.block.entries.len() || c.rejections.len() != c.block.entries.len()
        {
            return Err(not_next("outcomes do not match entries".into()));
        }
        if c.staged.root() != header.state_root || c.staged.leaves().len() != c.diff.len() {
            return Err(not_next(
                "the staged state tree is not the one the header commits to".into(),
            ));
        }
        let new_head = Head {
            height: header.height,
            hash,
            state_root: header.state_root,
            timestamp: header.timestamp,
        };
        let hk = height_key(header.height);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf::BLOCKS)?, hk, codec::encode(c.block));
        batch.put_cf(self.cf(cf::CERTIFICATES)?, hk, codec::encode(c.certificate));
        batch.put_cf(self.cf(cf::BLOCK_INDEX)?, hash.as_bytes(), hk);
        let entries_cf = self.cf(cf::ENTRIES)?;
        for (index, ((id, outcome), rejection)) in c.outcomes.iter().zip(c.rejections).enumerate() {
            let rec = EntryRecord {
                height: header.height,
                index: index as u32,
                outcome: *outcome,
                rejection: rejection.clone(),
            };
            batch.put_cf(entries_cf, id.as_bytes(), codec::encode(&rec));
        }
        self.put_state_diff(&mut batch, c.diff, c.staged.leaves())?;
        batch.put_cf(self.cf(cf::META)?, META_HEAD, codec::encode(&new_head));
        self.db.write_opt(batch, &Self::synced())?;
        Ok(new_head)
    }

    /// A committed block, checked against the hash index on the way out.
    pub fn block(&self, height: u64) -> Result<Option<Block>> {
        self.read_block(height, Reads::Cached)
    }

    fn read_block(&self, height: u64, reads: Reads) -> Result<Option<Block>> {
        let Some(bytes) = self.get(cf::BLOCKS, &height_key(height), reads)? else {
            return Ok(None);
        };
        let block: Block = decode("block", &bytes)?;
        if block.header.height != height {
            return Err(StorageError::Corrupt(format!(
                "block stored at {height} says height {}",
                block.header.height
            )));
        }
        match self.get(cf::BLOCK_INDEX, block.hash().as_bytes(), reads)? {
            Some(h) if h.as_slice() == height_key(height) => Ok(Some(block)),
            _ => Err(StorageError::Corrupt(format!(
                "block at height {height} does not hash to its index entry"
            ))),
        }
    }

    /// The height of a block by hash.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>> {
        match self.db.get_cf(self.cf(cf::BLOCK_INDEX)?, hash.as_bytes())? {
            None => Ok(None),
            Some(b) => {
                let arr: [u8; 8] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("block index value".into()))?;
                Ok(Some(u64::from_be_bytes(arr)))
            }
        }
    }

    /// The commit certificate of a block.
    pub fn certificate(&self, height: u64) -> Result<Option<CommitCertificate>> {
        self.read_certificate(height, Reads::Cached)
    }

    fn read_certificate(&self, height: u64, reads: Reads) -> Result<Option<CommitCertificate>> {
        match self.get(cf::CERTIFICATES, &height_key(height), reads)? {
            None => Ok(None),
            Some(b) => decode("certificate", &b).map(Some),
        }
    }

    /// One value, read through the block cache or past it.
    fn get(&self, name: &str, key: &[u8], reads: Reads) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(name)?;
        Ok(match reads {
            Reads::Cached => self.db.get_cf(cf, key)?,
            Reads::Uncached => {
                let mut ro = rocksdb::ReadOptions::default();
                ro.fill_cache(false);
                self.db.get_cf_opt(cf, key, &ro)?
            }
        })
    }

    /// A committed block with its commit certificate, checked against each other before
    /// either is served or used: the block against its index entry, the certificate against
    /// the block's hash and height. `None` above the head.
    pub fn certified_block(&self, height: u64) -> Result<Option<(Block, CommitCertificate)>> {
        self.read_certified_block(height, Reads::Cached)
    }

    fn read_certified_block(
        &self,
        height: u64,
        reads: Reads,
    ) -> Result<Option<(Block, CommitCertificate)>> {
        let Some(block) = self.read_block(height, reads)? else {
            return Ok(None);
        };
        let certificate = self.read_certificate(height, reads)?.ok_or_else(|| {
            StorageError::Corrupt(format!("block {height}: no commit certificate"))
        })?;
        if certificate.block_hash != block.hash() || certificate.height != height {
            return Err(StorageError::Corrupt(format!(
                "block {height}: its certificate is for another block"
            )));
        }
        Ok(Some((block, certificate)))
    }

    /// Reads back the blocks of heights `from..=to` and checks each against what holds it
    /// in place: its index entry, its commit certificate, its parent's hash, and for the head
    /// the head record. The start-up check and the background scrub run it; an error for
    /// which [`StorageError::is_damage`] holds names what is damaged. Its reads pass the block
    /// cache by, so a scrub does not evict what the node reads often.
    pub fn check_blocks(&self, from: u64, to: u64) -> Result<()> {
        let head = self.head()?;
        let to = to.min(head.height);
        if from > to {
            return Ok(());
        }
        let corrupt =
            |height: u64, what: String| StorageError::Corrupt(format!("block {height}: {what}"));
        let from = from.max(1);
        let mut parent = match from {
            1 => Some(self.genesis()?.ok_or(StorageError::NoGenesis)?.hash()),
            // The block before the range is the index's to vouch for, not read again.
            _ => None,
        };
        for height in from..=to {
            let (block, _) = self
                .read_certified_block(height, Reads::Uncached)?
                .ok_or_else(|| corrupt(height, "missing".into()))?;
            let hash = block.hash();
            // The hash covers the header only: the entries are checked against its root.
            if block.entries.len() as u64 != u64::from(block.header.entry_count)
                || Block::compute_entries_root(&block.entries) != block.header.entries_root
            {
                return Err(corrupt(
                    height,
                    "its entries are not those its header names".into(),
                ));
            }
            let linked = match parent {
                Some(p) => block.header.parent == p,
                None => self.height_of(&block.header.parent)? == Some(height - 1),
            };
            if !linked {
                return Err(corrupt(height, "does not name the block before it".into()));
            }
            if height == head.height
                && (head.hash != hash || head.state_root != block.header.state_root)
            {
                return Err(corrupt(height, "is not the head's block".into()));
            }
            parent = Some(hash);
        }
        Ok(())
    }

    /// Notes damage a running node found, for the next start to repair.
    pub fn mark_damaged(&self, what: &str) -> Result<()> {
        self.db
            .put_cf_opt(self.cf(cf::META)?, META_DAMAGED, what, &Self::synced())?;
        Ok(())
    }

    /// The damage a running node noted, if any.
    pub fn damage_noted(&self) -> Result<Option<String>> {
        Ok(self
            .db
            .get_cf(self.cf(cf::META)?, META_DAMAGED)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Where an ordered entry is and its outcome.
    pub fn entry(&self, id: &EntryId) -> Result<Option<EntryRecord>> {
        match self.db.get_cf(self.cf(cf::ENTRIES)?, id.as_bytes())? {
            None => Ok(None),
            Some(b) => decode("entry record", &b).map(Some),
        }
    }

    /// The inclusion proof of a committed entry, from the stored block, its certificate and the
    /// outcome of every entry in it. `None` when no committed block holds the entry. Reads one
    /// record per entry of that block (a block holds at most `block.entries_max`).
    pub fn inclusion_proof(&self, id: &EntryId) -> Result<Option<InclusionProof>> {
        let Some(rec) = self.entry(id)? else {
            return Ok(None);
        };
        let height = rec.height;
        let corrupt = |what: String| StorageError::Corrupt(format!("block {height}: {what}"));
        let (block, certificate) = self.certified_block(height)?.ok_or_else(|| {
            corrupt(format!(
                "absent, yet entry {} is recorded in it",
                id.short()
            ))
        })?;
        let ids: Vec<EntryId> = block.entries.iter().map(|e| e.id()).collect();
        let entries_cf = self.cf(cf::ENTRIES)?;
        let records = self
            .db
            .multi_get_cf(ids.iter().map(|i| (entries_cf, i.as_bytes())));
        let mut outcomes = Vec::with_capacity(ids.len());
        for (i, got) in ids.iter().zip(records) {
            let bytes = got?.ok_or_else(|| corrupt(format!("no record of entry {}", i.short())))?;
            let r: EntryRecord = decode("entry record", &bytes)?;
            outcomes.push((*i, r.outcome));
        }
        let index = rec.index as usize;
        if ids.get(index) != Some(id) {
            return Err(corrupt(format!(
                "entry {} is recorded at index {index}, which holds another",
                id.short()
            )));
        }
        InclusionProof::build(block.header, &block.entries, &outcomes, certificate, index)
            .map(Some)
            .ok_or_else(|| corrupt("cannot build an audit path".into()))
    }

    /// Adds a state diff to a batch: the records, and the tree leaves they hash to.
    fn put_state_diff(
        &self,
        batch: &mut WriteBatch,
        diff: &StateDiff,
        leaves: &[tally_state::tree::Change],
    ) -> Result<()> {
        let state_cf = self.cf(cf::STATE)?;
        for (k, v) in diff {
            match v {
                Some(v) => batch.put_cf(state_cf, k, v),
                None => batch.delete_cf(state_cf, k),
            }
        }
        let leaves_cf = self.cf(cf::LEAVES)?;
        for (path, leaf) in leaves {
            match leaf {
                Some(leaf) => batch.put_cf(leaves_cf, path.as_bytes(), leaf.as_bytes()),
                None => batch.delete_cf(leaves_cf, path.as_bytes()),
            }
        }
        Ok(())
    }

    /// The committed state, read from this directory as the node needs it: only the top of the
    /// state tree is held in memory. Checks, reading every record once, that the tree's leaves
    /// are those of the records and that the tree hashes to the head's state root.
    pub fn load_state(&self) -> Result<State> {
        let head = self.head()?;
        if self.db.get_cf(self.cf(cf::META)?, META_LEAVES)?.is_none() {
            // Written before the leaves were kept, or stopped while deriving them.
            self.derive_leaves()?;
        }
        let (records, from_records) = self.fold_records()?;
        let (leaves, from_leaves) = self.fold_leaves()?;
        if (records, from_records) != (leaves, from_leaves) {
            return Err(StorageError::Corrupt(format!(
                "the state tree's {leaves} leaves are not those of the {records} state records"
            )));
        }
        let state = State::backed(Arc::new(StoreBacking(self.clone()))).map_err(|e| match e {
            StateError::Backing { reason } => StorageError::Unreadable(reason),
            e => StorageError::Corrupt(e.to_string()),
        })?;
        if state.root() != head.state_root {
            return Err(StorageError::Corrupt(format!(
                "state on disk hashes to {}, head {} says {}",
                state.root().short(),
                head.height,
                head.state_root.short()
            )));
        }
        Ok(state)
    }

    /// Calls `each` with the tree path and leaf hash of every stored state record.
    fn record_leaves(&self, mut each: impl FnMut(Hash, Hash) -> Result<()>) -> Result<()> {
        for item in self
            .db
            .iterator_cf(self.cf(cf::STATE)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let (path, leaf) = tally_state::tree::leaf(&k, &v);
            each(path, leaf)?;
        }
        Ok(())
    }

    /// The number of state records and the XOR of the leaf hashes they give.
    fn fold_records(&self) -> Result<(u64, Hash)> {
        let mut acc = (0u64, Hash::ZERO);
        self.record_leaves(|_, leaf| {
            xor_into(&mut acc, &leaf);
            Ok(())
        })?;
        Ok(acc)
    }

    /// The number of stored leaves and the XOR of their hashes.
    fn fold_leaves(&self) -> Result<(u64, Hash)> {
        let mut acc = (0u64, Hash::ZERO);
        for item in self
            .db
            .iterator_cf(self.cf(cf::LEAVES)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            xor_into(
                &mut acc,
                &leaf_value(&v).map_err(|e| StorageError::Corrupt(e.to_string()))?,
            );
        }
        Ok(acc)
    }

    /// Writes the leaf of every state record, in synced batches, then marks the leaves whole.
    fn derive_leaves(&self) -> Result<()> {
        let leaves_cf = self.cf(cf::LEAVES)?;
        let mut batch = WriteBatch::default();
        // Whatever an interrupted derivation left goes first.
        batch.delete_range_cf(leaves_cf, [0u8; 32], [0xffu8; 32]);
        batch.delete_cf(leaves_cf, [0xffu8; 32]);
        self.record_leaves(|path, leaf| {
            batch.put_cf(leaves_cf, path.as_bytes(), leaf.as_bytes());
            if batch.len() >= 100_000 {
                self.db
                    .write_opt(std::mem::take(&mut batch), &Self::synced())?;
            }
            Ok(())
        })?;
        batch.put_cf(self.cf(cf::META)?, META_LEAVES, []);
        self.db.write_opt(batch, &Self::synced())?;
        Ok(())
    }

    /// Persists this node's consensus safety record before anything it describes is sent, with
    /// the blocks it proposed or locked on that are not kept yet, in one synced write: after a
    /// crash the node reads the record back and never signs a conflicting message, and a block
    /// the record commits it to may be decided from the record alone, when no peer holds it.
    pub fn put_safety_record(&self, bytes: &[u8], keep: &[&Block]) -> Result<()> {
        let cf = self.cf(cf::SAFETY)?;
        let mut batch = WriteBatch::default();
        for block in keep {
            batch.put_cf(cf, pending_block_key(&block.hash()), codec::encode(*block));
        }
        batch.put_cf(cf, SAFETY_RECORD, bytes);
        self.db.write_opt(batch, &Self::synced())?;
        Ok(())
    }

    /// The last persisted safety record.
    pub fn safety_record(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf::SAFETY)?, SAFETY_RECORD)?)
    }

    /// A block kept by [`Store::put_safety_record`], checked against its hash.
    pub fn pending_block(&self, hash: &Hash) -> Result<Option<Block>> {
        match self
            .db
            .get_cf(self.cf(cf::SAFETY)?, pending_block_key(hash))?
        {
            None => Ok(None),
            Some(bytes) => {
                let block: Block = decode("pending block", &bytes)?;
                if block.hash() != *hash {
                    return Err(StorageError::Corrupt(format!(
                        "kept block {} does not hash to its key",
                        hash.short()
                    )));
                }
                Ok(Some(block))
            }
        }
    }

    /// Forgets the given kept blocks once their height is committed: a node that knows what
    /// it kept deletes those keys, where a scan would walk the tombstones of every block
    /// forgotten since the last compaction.
    pub fn forget_pending_blocks<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a Hash>,
    ) -> Result<()> {
        let cf = self.cf(cf::SAFETY)?;
        let mut batch = WriteBatch::default();
        for hash in hashes {
            batch.delete_cf(cf, pending_block_key(hash));
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(())
    }

    /// Forgets every kept block: after a restart, once the next height is committed.
    pub fn clear_pending_blocks(&self) -> Result<()> {
        let cf = self.cf(cf::SAFETY)?;
        let mut batch = WriteBatch::default();
        let iter = self.db.iterator_cf(
            cf,
            IteratorMode::From(PENDING_BLOCK_PREFIX, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(PENDING_BLOCK_PREFIX) {
                break;
            }
            batch.delete_cf(cf, k);
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(())
    }

    /// Keeps proof that `offender` equivocated at `height`: one piece per validator per
    /// height, so a Byzantine validator equivocating in every round cannot grow the store
    /// faster than the chain. Returns whether it is new.
    pub fn put_evidence(&self, offender: &PublicKey, height: u64, bytes: &[u8]) -> Result<bool> {
        let mut key = EVIDENCE_PREFIX.to_vec();
        key.extend_from_slice(&height_key(height));
        key.extend_from_slice(offender.as_bytes());
        let cf = self.cf(cf::SAFETY)?;
        if self.db.get_cf(cf, &key)?.is_some() {
            return Ok(false);
        }
        self.db.put_cf(cf, key, bytes)?;
        Ok(true)
    }

    /// All evidence kept, oldest key first.
    pub fn evidence(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(cf::SAFETY)?,
            IteratorMode::From(EVIDENCE_PREFIX, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(EVIDENCE_PREFIX) {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Writes every column family's memtable out and compacts it: the write-ahead log and
    /// superseded versions of state records are dropped, and what remains is what the chain
    /// costs to keep. Benchmarks measure disk per entry after this.
    pub fn compact(&self) -> Result<()> {
        for name in cf::ALL {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Per column family: its name, the bytes of its table files and of its memtables, as
    /// RocksDB counts them (for `/metrics`: which part of the chain grows).
    pub fn column_family_sizes(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        let mut sizes = Vec::with_capacity(cf::ALL.len());
        for name in cf::ALL {
            let cf = self.cf(name)?;
            let property =
                |p: &str| -> Result<u64> { Ok(self.db.property_int_value_cf(cf, p)?.unwrap_or(0)) };
            sizes.push((
                name,
                property("rocksdb.total-sst-files-size")?,
                property("rocksdb.cur-size-all-mem-tables")?,
            ));
        }
        Ok(sizes)
    }

    /// Writes a copy of the data directory into `dir`, which must not exist, while the node
    /// runs: a RocksDB checkpoint (table files hard-linked when `dir` is on the same file
    /// system, copied otherwise). Every block is committed in one write batch, so the copy
    /// holds whole blocks, up to the head at that moment, with their state.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&*self.db)?.create_checkpoint(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_error(parent))?;
        }
        Ok(())
    }

    /// Bytes the directory's files take on disk (for status and benchmarks).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(self.db.path())
    }
}

/// A path beside `path`, its name followed by `suffix`.
/// The names a set-aside's or a restore's fresh directory waits under, beside the data
/// directory, until [`finish_set_aside`] puts it in place.
const WAITING: [&str; 2] = [".repair", ".restore"];

/// Whether a data directory is at `path`, or one waits beside it for [`finish_set_aside`]:
/// whether there is a safety record a [`restore`] would keep.
pub fn holds_data_dir(path: &Path) -> bool {
    path.join("CURRENT").exists()
        || WAITING
            .iter()
            .any(|suffix| beside(path, suffix).join("CURRENT").exists())
}

fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Moves a data directory aside, under a new name beside it, and puts in its place a fresh
/// directory holding only what this validator signed: its safety record, the blocks the record
/// keeps, and the evidence it holds. The node then fetches the chain again from its peers and
/// checks every block against its certificate, and the record keeps it from signing anything
/// at a height it may already have signed at. Nothing is deleted: the old directory stays for
/// the operator to look at, or to bring back should every peer have lost the chain too (with
/// the fresh directory's `safety` column family copied into it, since the node may have
/// signed newer messages since).
///
/// Fails, changing nothing, when a running node holds the directory or its safety column
/// family cannot be read back whole. Returns where the old directory went.
pub fn set_aside(path: &Path) -> Result<std::path::PathBuf> {
    if !path.join("CURRENT").exists() {
        return Err(StorageError::Corrupt(format!(
            "{} is not a data directory",
            path.display()
        )));
    }
    // Read-write, for its lock: a directory a running node holds is refused. The lock is
    // held until the fresh directory is written, just before the renames.
    let old = Store::open(path)?;
    let kept = safety_pairs(&old)?;
    let fresh = beside(path, ".repair");
    if fresh.exists() {
        // Left by a set-aside stopped before its first rename (the old directory is still in
        // place): it holds nothing the old directory does not.
        std::fs::remove_dir_all(&fresh).map_err(io_error(&fresh))?;
    }
    put_safety_pairs(&Store::open(&fresh)?, &kept)?;
    drop(old);
    swap_in(path, &fresh, "damaged")?.ok_or_else(|| {
        StorageError::Corrupt(format!("{} disappeared while set aside", path.display()))
    })
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Where the directory it replaced went, when there was one.
    pub aside: Option<std::path::PathBuf>,
    /// Whether that directory's safety record (what this validator signed) was carried over.
    pub record_kept: bool,
}

/// Puts a backup ([`Store::checkpoint`]) in the place of the data directory `path`, which
/// must not be in use. What this validator signed since the backup is kept: every record of
/// the old directory's `safety` column family (the safety record, the blocks it keeps, the
/// evidence) is written over the backup's, so the node never signs again where it may have
/// signed. The old directory is moved aside, not deleted. A restore interrupted earlier is
/// completed first, so a retry keeps the record it carried. The caller checks the backup is
/// of the right chain, and decides whether a missing directory (no record to keep) is
/// acceptable.
pub fn restore(path: &Path, backup: &Path) -> Result<Restored> {
    finish_set_aside(path)?;
    if !backup.join("CURRENT").exists() {
        return Err(StorageError::NotADataDirectory(format!(
            "{} is not a backup of a tally data directory (no RocksDB CURRENT file)",
            backup.display()
        )));
    }
    let old = match path.join("CURRENT").exists() {
        true => Some(Store::open(path)?),
        false if path.exists() && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) => {
            return Err(StorageError::NotADataDirectory(format!(
                "{} is not empty and holds no chain; move it away first",
                path.display()
            )))
        }
        false => None,
    };
    let kept = match &old {
        Some(old) => safety_pairs(old)?,
        None => Vec::new(),
    };
    // Built under a name nothing picks up, and renamed `.restore` only once whole and synced
    // with the record in it: [`finish_set_aside`] puts a `.restore` in place.
    let building = beside(path, ".restore.tmp");
    let fresh = beside(path, ".restore");
    for stale in [&building, &fresh] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(io_error(stale))?;
        }
    }
    std::fs::create_dir_all(&building).map_err(io_error(&building))?;
    let mut files = Vec::new();
    for file in std::fs::read_dir(backup).map_err(io_error(backup))? {
        files.push(file.map_err(io_error(backup))?.file_name());
    }
    for name in files {
        let to = building.join(&name);
        std::fs::copy(backup.join(&name), &to).map_err(io_error(&to))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&to))?;
    }
    put_safety_pairs(&Store::open(&building)?, &kept)?;
    std::fs::File::open(&building)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&building))?;
    std::fs::rename(&building, &fresh).map_err(io_error(&building))?;
    drop(old);
    let aside = swap_in(path, &fresh, "before-restore")?;
    Ok(Restored {
        aside,
        record_kept: !kept.is_empty(),
    })
}

/// The `safety` column family's records, in key order.
fn safety_pairs(store: &Store) -> Result<Pairs> {
    let mut kept: Pairs = Vec::new();
    for item in store
        .db
        .iterator_cf(store.cf(cf::SAFETY)?, IteratorMode::Start)
    {
        let (k, v) = item?;
        kept.push((k.into_vec(), v.into_vec()));
    }
    Ok(kept)
}

/// Writes `kept` into `store`'s `safety` column family, in one synced batch.
fn put_safety_pairs(store: &Store, kept: &Pairs) -> Result<()> {
    let cf = store.cf(cf::SAFETY)?;
    let mut batch = WriteBatch::default();
    for (k, v) in kept {
        batch.put_cf(cf, k, v);
    }
    store.db.write_opt(batch, &Store::synced())?;
    Ok(())
}

/// Moves the directory at `path` (if any) aside, under a name ending `.<label>-<time>`, and
/// `fresh` into its place; syncs the parent so both renames last. Returns where the old one
/// went.
fn swap_in(path: &Path, fresh: &Path, label: &str) -> Result<Option<std::path::PathBuf>> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = match path.exists() {
        true => {
            let mut aside = beside(path, &format!(".{label}-{secs}"));
            for n in 1.. {
                if !aside.exists() {
                    break;
                }
                aside = beside(path, &format!(".{label}-{secs}-{n}"));
            }
            std::fs::rename(path, &aside).map_err(io_error(path))?;
            Some(aside)
        }
        false => None,
    };
    std::fs::rename(fresh, path).map_err(io_error(fresh))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_error(parent))?;
    }
    Ok(aside)
}

/// Completes a [`set_aside`] stopped between its two renames, so that a node never starts
/// on an empty directory in place of the fresh one that holds its safety record: also when
/// something (a service manager, a mount) made an empty directory at `path` in between.
pub fn finish_set_aside(path: &Path) -> Result<()> {
    if path.join("CURRENT").exists() {
        return Ok(());
    }
    // A set-aside's fresh directory, or a restore's (`.restore`, made the same way).
    let ready: Vec<std::path::PathBuf> = WAITING
        .into_iter()
        .map(|suffix| beside(path, suffix))
        .filter(|fresh| fresh.join("CURRENT").exists())
        .collect();
    let fresh = match ready.as_slice() {
        [] => return Ok(()),
        [one] => one.clone(),
        _ => {
            return Err(StorageError::NotADataDirectory(format!(
                "{} is missing, and both {} and {} wait to replace it (an interrupted set-aside \
                 and an interrupted restore): move the one you do not want away",
                path.display(),
                ready[0].display(),
                ready[1].display()
            )))
        }
    };
    if path.exists() {
        // Fails, leaving both alone, unless it is empty.
        std::fs::remove_dir(path).map_err(|e| StorageError::Io {
            path: format!(
                "{} (a set-aside or restore was interrupted; its fresh directory is {}; move \
                 whatever is in the first away and start again)",
                path.display(),
                fresh.display()
            ),
            source: e,
        })?;
    }
    std::fs::rename(&fresh, path).map_err(io_error(&fresh))?;
    Ok(())
}

/// The directories earlier set-asides of `path` left beside it.
pub fn set_aside_earlier(path: &Path) -> Vec<std::path::PathBuf> {
    let prefix = beside(path, ".damaged-");
    let Some(prefix) = prefix.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(parent)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_state::{build_block, BuiltBlock, StateRead, Tip};
    use tally_types::{Domain, EntryBody, Keypair, Payload, Role};

    fn genesis(admin: &Keypair, validator: &Keypair) -> Genesis {
        Genesis::one_agency_for_tests("store-test", admin.public(), validator.public())
    }

    /// Builds and commits one block granting a role, as a node would.
    fn commit_next(
        store: &Store,
        state: &mut State,
        admin: &Keypair,
        validator: &Keypair,
        seq: u64,
    ) -> Head {
        let head = store.head().expect("head");
        let g = store.genesis().expect("genesis").expect("present");
        let tip = Tip {
            chain_id: g.chain_id.clone(),
            height: head.height,
            hash: head.hash,
            timestamp: head.timestamp,
        };
        let grantee = Keypair::from_seed_for_tests(100 + seq).public();
        let entry = EntryBody {
            chain_id: g.chain_id.clone(),
            author: admin.public(),
            sequence: seq,
            payload: Payload::GrantRole {
                key: grantee,
                role: Role::Issuer,
            },
        }
        .sign(admin);
        let BuiltBlock {
            block,
            execution,
            staged,
            ..
        } = build_block(
            state,
            &tip,
            TimestampMs(head.timestamp.0 + 1000),
            validator.public(),
            [tally_types::VerifiedEntry::verify(entry).expect("signed")],
        )
        .expect("builds");
        let cert = CommitCertificate::signed_by(&block.header, 0, [validator]);
        let new_head = store
            .commit_block(&CommitBatch {
                block: &block,
                certificate: &cert,
                outcomes: &execution.outcomes,
                rejections: &execution.rejections,
                diff: &execution.diff,
                staged: &staged,
            })
            .expect("commits");
        state
            .apply_staged(&execution.diff, staged)
            .expect("applies");
        new_head
    }

    /// A new data directory initialised from a genesis of `admin` and one `validator`.
    fn new_store(dir: &Path) -> (Store, Keypair, Keypair) {
        let (admin, validator) = (
            Keypair::from_seed_for_tests(1),
            Keypair::from_seed_for_tests(2),
        );
        let store = Store::open(dir).expect("open");
        store
            .init_genesis(&genesis(&admin, &validator))
            .expect("init");
        (store, admin, validator)
    }

    #[test]
    fn reopening_resumes_at_the_last_committed_block_with_the_same_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (admin, validator) = (
            Keypair::from_seed_for_tests(1),
            Keypair::from_seed_for_tests(2),
        );
        let g = genesis(&admin, &validator);
        let head = {
            let store = Store::open(dir.path()).expect("open");
            store.init_genesis(&g).expect("init");
            let mut state = store.load_state().expect("state");
            for seq in 0..3 {
                commit_next(&store, &mut state, &admin, &validator, seq);
            }
            let head = store.head().expect("head");
            assert_eq!(head.state_root, state.root());
            head
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.init_genesis(&g).expect("same genesis"), head);
        assert_eq!(store.head().expect("head"), head);
        assert_eq!(store.load_state().expect("state").root(), head.state_root);
        let block = store.block(3).expect("read").expect("present");
        assert_eq!(block.hash(), head.hash);
        assert_eq!(store.height_of(&head.hash).expect("index"), Some(3));
        let id = block.entries[0].id();
        let rec = store.entry(&id).expect("read").expect("indexed");
        assert_eq!(
            (rec.height, rec.index, rec.outcome),
            (3, 0, EntryOutcome::Accepted)
        );
        assert!(store.certificate(3).expect("read").is_some());
        let ro = Store::open_read_only(dir.path())
            .expect("an auditor can open a live directory read-only");
        assert_eq!(ro.head().expect("head"), head);
    }

    #[test]
    fn a_block_that_does_not_extend_the_head_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, admin, validator) = new_store(dir.path());
        let mut state = store.load_state().expect("state");
        let head1 = commit_next(&store, &mut state, &admin, &validator, 0);
        let block1 = store.block(1).expect("read").expect("present");
        let cert1 = store.certificate(1).expect("read").expect("present");
        let err = store.commit_block(&CommitBatch {
            block: &block1,
            certificate: &cert1,
            outcomes: &[(block1.entries[0].id(), EntryOutcome::Accepted)],
            rejections: &[None],
            diff: &StateDiff::new(),
            staged: &state.stage(&StateDiff::new()).expect("stages"),
        });
        assert!(
            matches!(
                err,
                Err(StorageError::NotNext {
                    height: 1,
                    head_height: 1,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(store.head().expect("head"), head1);
    }

    #[test]
    fn kept_proposals_and_evidence_survive_reopening_and_proposals_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let block = {
            let (store, admin, validator) = new_store(dir.path());
            let mut state = store.load_state().expect("state");
            commit_next(&store, &mut state, &admin, &validator, 0);
            let block = store.block(1).expect("read").expect("present");
            assert!(store
                .put_evidence(&validator.public(), 1, b"proof")
                .expect("evidence"));
            assert!(!store
                .put_evidence(&validator.public(), 1, b"again")
                .expect("evidence"));
            store
                .put_safety_record(b"record", &[&block])
                .expect("record");
            block
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.pending_block(&block.hash()).expect("read"),
            Some(block.clone())
        );
        assert_eq!(store.pending_block(&Hash([1; 32])).expect("read"), None);
        assert_eq!(store.evidence().expect("read"), vec![b"proof".to_vec()]);
        store
            .forget_pending_blocks([&Hash([1; 32])])
            .expect("forget");
        assert!(store.pending_block(&block.hash()).expect("read").is_some());
        store
            .forget_pending_blocks([&block.hash()])
            .expect("forget");
        assert_eq!(store.pending_block(&block.hash()).expect("read"), None);
        store
            .put_safety_record(b"record", &[&block])
            .expect("record");
        store.clear_pending_blocks().expect("clear");
        assert_eq!(store.pending_block(&block.hash()).expect("read"), None);
        // Clearing kept blocks touches neither evidence nor the safety record.
        assert_eq!(store.evidence().expect("read").len(), 1);
        assert_eq!(
            store.safety_record().expect("read"),
            Some(b"record".to_vec())
        );
    }

    #[test]
    fn a_block_that_reads_back_wrong_is_found_and_setting_aside_keeps_only_what_was_signed() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        let block = {
            let (store, admin, validator) = new_store(&dir);
            let mut state = store.load_state().expect("state");
            for seq in 0..4 {
                commit_next(&store, &mut state, &admin, &validator, seq);
            }
            store.check_blocks(1, 4).expect("an intact chain passes");
            // Block 2 replaced by block 3's bytes: it decodes, but says another height.
            let three = store
                .db
                .get_cf(store.cf(cf::BLOCKS).expect("cf"), height_key(3));
            let three = three.expect("read").expect("present");
            store
                .db
                .put_cf(store.cf(cf::BLOCKS).expect("cf"), height_key(2), three)
                .expect("write");
            let err = store.check_blocks(1, 4).expect_err("block 2 is wrong");
            assert!(err.is_damage(), "{err}");
            assert!(err.to_string().contains("block stored at 2"), "{err}");
            // Scrubbing from 3 on does not read block 2's bytes, but a wrong certificate is
            // found.
            store.check_blocks(3, 4).expect("3 and 4 are intact");
            let cert = store.certificate(3).expect("read").expect("present");
            store
                .db
                .put_cf(
                    store.cf(cf::CERTIFICATES).expect("cf"),
                    height_key(4),
                    codec::encode(&cert),
                )
                .expect("write");
            let err = store
                .check_blocks(3, 4)
                .expect_err("certificate 4 is wrong");
            assert!(err.to_string().contains("another block"), "{err}");
            let block = store.block(1).expect("read").expect("present");
            store
                .put_safety_record(b"record", &[&block])
                .expect("record");
            store
                .put_evidence(&validator.public(), 3, b"proof")
                .expect("evidence");
            store.mark_damaged("block 2").expect("note");
            assert_eq!(
                store.damage_noted().expect("read").as_deref(),
                Some("block 2")
            );
            assert!(
                set_aside(&dir).is_err(),
                "a directory held open is not set aside"
            );
            block
        };
        let aside = set_aside(&dir).expect("set aside");
        assert!(aside.join("CURRENT").exists());
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.genesis().expect("read"), None, "the chain is gone");
        assert_eq!(store.damage_noted().expect("read"), None);
        assert_eq!(
            store.safety_record().expect("read"),
            Some(b"record".to_vec())
        );
        assert_eq!(
            store.pending_block(&block.hash()).expect("read"),
            Some(block)
        );
        assert_eq!(store.evidence().expect("read"), vec![b"proof".to_vec()]);
        drop(store);
        // Stopped between its two renames: the next start finds the fresh directory.
        let fresh = beside(&dir, ".repair");
        std::fs::rename(&dir, &fresh).expect("rename");
        finish_set_aside(&dir).expect("finish");
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(
            store.safety_record().expect("read"),
            Some(b"record".to_vec())
        );
    }

    #[test]
    fn a_restore_puts_the_backup_in_place_keeps_the_newer_record_and_a_retry_keeps_it_too() {
        let root = tempfile::tempdir().expect("tempdir");
        let (dir, backup) = (root.path().join("data"), root.path().join("backup"));
        {
            let (store, admin, validator) = new_store(&dir);
            let mut state = store.load_state().expect("state");
            commit_next(&store, &mut state, &admin, &validator, 0);
            store.put_safety_record(b"old record", &[]).expect("record");
            store.checkpoint(&backup).expect("checkpoint");
            commit_next(&store, &mut state, &admin, &validator, 1);
            store.put_safety_record(b"new record", &[]).expect("record");
            store
                .put_evidence(&validator.public(), 2, b"proof")
                .expect("evidence");
            assert!(restore(&dir, &backup).is_err(), "a directory in use");
        }
        let restored = restore(&dir, &backup).expect("restore");
        assert!(restored.record_kept);
        let aside = restored.aside.expect("the old directory moved aside");
        assert_eq!(
            Store::open(&aside)
                .expect("open")
                .head()
                .expect("head")
                .height,
            2
        );
        let check = |why: &str| {
            let store = Store::open(&dir).expect("reopen");
            assert_eq!(
                store.head().expect("head").height,
                1,
                "{why}: the backup's chain"
            );
            assert_eq!(
                store.safety_record().expect("read"),
                Some(b"new record".to_vec()),
                "{why}: the newer record"
            );
            assert_eq!(store.evidence().expect("read"), vec![b"proof".to_vec()]);
        };
        check("restored");
        // Stopped between its two renames, then run again: the first restore is completed,
        // and its record is what the retry keeps.
        std::fs::rename(&dir, beside(&dir, ".restore")).expect("rename");
        let again = restore(&dir, &backup).expect("restore again");
        assert!(again.record_kept);
        check("retried");
        // Onto a missing directory: the backup alone, no record to keep.
        std::fs::remove_dir_all(&dir).expect("remove");
        let bare = restore(&dir, &backup).expect("restore onto nothing");
        assert_eq!(
            bare,
            Restored {
                aside: None,
                record_kept: false
            }
        );
        assert_eq!(
            Store::open(&dir)
                .expect("open")
                .safety_record()
                .expect("read"),
            Some(b"old record".to_vec())
        );
    }

    #[test]
    fn the_state_is_read_from_disk_its_leaves_are_derived_once_and_a_changed_record_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, admin, validator) = new_store(dir.path());
        let mut state = store.load_state().expect("state");
        let g = store.genesis().expect("genesis").expect("present");
        let mut in_memory = State::genesis(&g);
        for seq in 0..4 {
            commit_next(&store, &mut state, &admin, &validator, seq);
            let block = store.block(seq + 1).expect("read").expect("present");
            let exec = tally_state::execute_block(
                &in_memory,
                &tally_state::BlockContext {
                    chain_id: g.chain_id.clone(),
                    height: block.header.height,
                    timestamp: block.header.timestamp,
                },
                &block.entries,
            )
            .expect("replays");
            in_memory.apply(&exec.diff).expect("applies");
        }
        // The node's state reads its records from disk: the same records and root as a replay.
        assert_eq!(
            state.pairs().expect("reads"),
            in_memory.pairs().expect("reads")
        );
        assert_eq!(state.root(), in_memory.root());
        let grantee = Keypair::from_seed_for_tests(102).public();
        assert!(state.key_record(&grantee).expect("reads").is_some());
        let head = store.head().expect("head");

        // A directory written before the leaves were kept gets them on its next load, and so
        // does one whose derivation was cut short.
        let leaves = store.cf(cf::LEAVES).expect("cf");
        let meta = store.cf(cf::META).expect("cf");
        store
            .db
            .delete_range_cf(leaves, &[0u8; 32][..], &[0xffu8; 33][..])
            .expect("delete");
        store.db.delete_cf(meta, META_LEAVES).expect("delete");
        assert_eq!(store.load_state().expect("derived").root(), head.state_root);
        let (first, _) = store
            .db
            .iterator_cf(leaves, IteratorMode::Start)
            .next()
            .expect("a leaf")
            .expect("reads");
        store.db.delete_cf(leaves, &first).expect("delete");
        store.db.put_cf(leaves, [7u8; 32], [7u8; 32]).expect("put");
        store.db.delete_cf(meta, META_LEAVES).expect("delete");
        assert_eq!(
            store.load_state().expect("derived again").root(),
            head.state_root
        );
        // With the leaves marked whole, a missing leaf is damage, not a migration.
        store.db.delete_cf(leaves, &first).expect("delete");
        let err = store.load_state().expect_err("a missing leaf");
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
        store.db.delete_cf(meta, META_LEAVES).expect("delete");
        assert_eq!(store.load_state().expect("derived").root(), head.state_root);

        // A record changed on disk no longer matches its leaf.
        let (k, _) = state.pairs().expect("reads").remove(0);
        store
            .db
            .put_cf(store.cf(cf::STATE).expect("cf"), &k, b"tampered")
            .expect("put");
        let err = store.load_state().expect_err("a changed record");
        assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
    }

    #[test]
    fn leaves_of_many_spans_read_in_one_pass_are_those_read_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let leaves = store.cf(cf::LEAVES).expect("cf");
        let mut model = std::collections::BTreeMap::new();
        let put = |model: &mut std::collections::BTreeMap<Hash, Hash>, path: Hash, leaf: Hash| {
            store.db.put_cf(leaves, path.0, leaf.0).expect("put");
            model.insert(path, leaf);
        };
        let path = |n: u32| Domain::TestKey.hash(&[&n.to_le_bytes()]);
        // Leaves in a flushed file, later ones and deletions in the memtable above it.
        for n in 0..600 {
            put(&mut model, path(n), path(n + 1));
        }
        store.db.flush_cf(leaves).expect("flush");
        for n in 600..900 {
            put(&mut model, path(n), path(n + 1));
        }
        for n in (0..900).step_by(7) {
            store.db.delete_cf(leaves, path(n).0).expect("delete");
            model.remove(&path(n));
        }
        // Spans of half a first byte's paths each, in path order: most hold a few leaves, some
        // none; two more at the very ends of the path space.
        let spans: Vec<(Hash, Hash)> = (1..=255u8)
            .step_by(3)
            .map(|first| {
                let (mut from, mut to) = ([0u8; 32], [0xffu8; 32]);
                from[0] = first;
                to[0] = first;
                to[1] = 0x7f;
                (Hash(from), Hash(to))
            })
            .chain([
                (Hash([0; 32]), Hash([0; 32])),
                (Hash([0xff; 32]), Hash([0xff; 32])),
            ])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // Leaves on the very first and last path of some spans, and just outside them.
        for (from, to) in spans.iter().step_by(5) {
            put(&mut model, *from, path(1_000));
            put(&mut model, *to, path(1_001));
            let mut past = *to;
            if past.0[1] == 0x7f {
                past.0[1] = 0x80;
                past.0[2..].fill(0);
                put(&mut model, past, path(1_002));
            }
        }
        let expected: Vec<Vec<(Hash, Hash)>> = spans
            .iter()
            .map(|(from, to)| model.range(*from..=*to).map(|(p, h)| (*p, *h)).collect())
            .collect();
        let backing = StoreBacking(store.clone());
        assert_eq!(backing.leaves_in(&spans).expect("reads"), expected);
        let one_by_one: Vec<_> = spans
            .iter()
            .map(|(from, to)| backing.leaves(from, to).expect("reads"))
            .collect();
        assert_eq!(one_by_one, expected);
        assert!(expected.iter().filter(|l| l.is_empty()).count() > 2);
        assert!(expected.iter().map(Vec::len).sum::<usize>() > 60);
        assert!(backing.leaves_in(&[]).expect("reads").is_empty());
    }

    #[test]
    fn a_directory_of_another_chain_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _, validator) = new_store(dir.path());
        let other = genesis(&Keypair::from_seed_for_tests(3), &validator);
        assert!(matches!(
            store.init_genesis(&other),
            Err(StorageError::GenesisMismatch { .. })
        ));
    }
}
