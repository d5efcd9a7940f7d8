//! The ledger state as one ordered key/value map, its tables, and its commitment.
//!
//! Every record lives under a one-byte table prefix. Keeping the state a plain ordered map makes
//! three things simple and obviously deterministic: the per-block diff that storage writes in
//! the same batch as the block, the state root (a sparse Merkle tree keyed by each record's
//! key, [`crate::tree`]), and reloading from disk.
//!
//! The map lives in one of two places. An auditor's replay and the tests keep it in memory. A
//! node keeps it in its RocksDB ([`Backing`]): the records and the tree's leaves are read from
//! there, only the top of the tree stays in memory, and a node's memory does not grow with the
//! number of records.

use crate::records::*;
use crate::tree::{self, Change, Tree};
use crate::StateError;
use serde::{de::DeserializeOwned, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use tally_types::{codec, EntryId, Genesis, Hash, Name, PublicKey, SubjectToken};

/// Changes made by one block: a new value, or `None` for a deletion.
pub type StateDiff = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// State records, `(key, value)`, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Table prefixes. Stable: they are part of the state commitment.
pub(crate) mod table {
    pub const KEY: u8 = 0x01;
    pub const AGENCY: u8 = 0x02;
    pub const PROGRAMME: u8 = 0x03;
    pub const VOUCHER: u8 = 0x04;
    pub const REDEMPTION_REF: u8 = 0x05;
    pub const DEDUP: u8 = 0x06;
    pub const VENDOR_ACCOUNT: u8 = 0x07;
    pub const SETTLEMENT_REF: u8 = 0x08;
    pub const ATTESTATION: u8 = 0x09;
    pub const REGISTRY_RECORD: u8 = 0x0a;
    pub const SUBJECT: u8 = 0x0b;
    pub const TITLE: u8 = 0x0c;
    pub const VALIDATORS: u8 = 0x0d;
}

/// Builds a key from a table prefix and parts. Variable-length parts (names) end with a NUL,
/// which no [`Name`] contains, so distinct part lists never produce the same key.
pub(crate) fn key(table: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![table];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub(crate) fn name_part(n: &Name) -> Vec<u8> {
    let mut v = n.as_str().as_bytes().to_vec();
    v.push(0);
    v
}

/// Read access to state records, shared by the committed state and the executor's overlay.
pub trait StateRead {
    /// The raw value under a key.
    fn raw(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError>;

    /// Decodes the record under a key. Records are only ever written by the state machine's
    /// own encoding, so they are decoded without the canonicity check untrusted bytes get.
    fn typed<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.raw(key)? {
            None => Ok(None),
            Some(bytes) => codec::decode_own(&bytes)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    key: hex_key(key),
                    reason: e.to_string(),
                }),
        }
    }

    /// A registered key.
    fn key_record(&self, k: &PublicKey) -> Result<Option<KeyRecord>, StateError> {
        self.typed(&key(table::KEY, &[k.as_bytes()]))
    }
    /// An agency.
    fn agency(&self, id: &Name) -> Result<Option<AgencyRecord>, StateError> {
        self.typed(&key(table::AGENCY, &[&name_part(id)]))
    }
    /// A programme.
    fn programme(&self, id: &Name) -> Result<Option<Programme>, StateError> {
        self.typed(&key(table::PROGRAMME, &[&name_part(id)]))
    }
    /// A voucher.
    fn voucher(&self, id: &EntryId) -> Result<Option<Voucher>, StateError> {
        self.typed(&key(table::VOUCHER, &[id.as_bytes()]))
    }
    /// What a programme owes a vendor.
    fn vendor_account(
        &self,
        programme: &Name,
        vendor: &PublicKey,
    ) -> Result<Option<VendorAccount>, StateError> {
        self.typed(&key(
            table::VENDOR_ACCOUNT,
            &[&name_part(programme), vendor.as_bytes()],
        ))
    }
    /// An attestation.
    fn attestation(&self, id: &EntryId) -> Result<Option<Attestation>, StateError> {
        self.typed(&key(table::ATTESTATION, &[id.as_bytes()]))
    }
    /// A civil-registry record.
    fn registry_record(&self, id: &EntryId) -> Result<Option<RegistryRecord>, StateError> {
        self.typed(&key(table::REGISTRY_RECORD, &[id.as_bytes()]))
    }
    /// What the registry knows of a subject.
    fn subject(&self, s: &SubjectToken) -> Result<Option<SubjectRecord>, StateError> {
        self.typed(&key(table::SUBJECT, &[s.0.as_bytes()]))
    }
    /// A land title.
    fn title(&self, parcel: &Name) -> Result<Option<Title>, StateError> {
        self.typed(&key(table::TITLE, &[&name_part(parcel)]))
    }
    /// The current validator set.
    fn validators(&self) -> Result<Vec<PublicKey>, StateError> {
        Ok(self
            .typed(&key(table::VALIDATORS, &[]))?
            .unwrap_or_default())
    }
}

pub(crate) fn hex_key(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a node's committed records and the leaves of its state tree are read from: its
/// RocksDB, which storage writes in the same batch as each block. A state backed by one keeps
/// only the top of its tree in memory.
pub trait Backing: Send + Sync {
    /// The committed value under a key.
    fn record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// The committed records with keys in `from..to`, in key order.
    fn records(&self, from: &[u8], to: &[u8]) -> Result<Pairs, StateError>;
    /// The committed tree leaves, `(path, leaf hash)`, with paths in `from..=to`, in path order.
    fn leaves(&self, from: &Hash, to: &Hash) -> Result<Vec<(Hash, Hash)>, StateError>;
    /// [`Backing::leaves`] for each of `spans` (in path order, none overlapping): a block's
    /// update reads hundreds of subtrees at once, and a backing can serve them in one pass.
    fn leaves_in(&self, spans: &[(Hash, Hash)]) -> Result<Vec<Vec<(Hash, Hash)>>, StateError> {
        spans
            .iter()
            .map(|(from, to)| self.leaves(from, to))
            .collect()
    }
}

#[derive(Clone)]
enum Records {
    Memory(BTreeMap<Vec<u8>, Vec<u8>>),
    Backed(Arc<dyn Backing>),
}

/// The committed ledger state after some height.
pub struct State {
    records: Records,
    tree: Tree,
}

/// A block's changes to the state tree, worked out once against one committed state: checking
/// the block against its header needs the root, storage needs the changed leaves, and the
/// committed state needs the tree. Committing the block consumes it
/// ([`State::apply_staged`]), so no changed leaf is hashed twice; a state that has moved on
/// since refuses it.
#[derive(Debug, Clone)]
pub struct StagedTree {
    base: Hash,
    changes: Vec<Change>,
    tree: Tree,
}

impl StagedTree {
    /// The state root after the block.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Each changed record's tree path and new leaf hash (`None` for a removal), in path
    /// order: what storage keeps beside the records.
    pub fn leaves(&self) -> &[Change] {
        &self.changes
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            records: Records::Memory(BTreeMap::new()),
            tree: Tree::default(),
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.records {
            Records::Memory(kv) => {
                write!(f, "State({} records in memory, {:?})", kv.len(), self.tree)
            }
            Records::Backed(_) => write!(f, "State(backed, {:?})", self.tree),
        }
    }
}

/// A clone of a backed state reads the same store: it is a view of the committed state, not a
/// copy to apply blocks to.
impl Clone for State {
    fn clone(&self) -> Self {
        State {
            records: self.records.clone(),
            tree: self.tree.clone(),
        }
    }
}

impl StateRead for State {
    fn raw(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        match &self.records {
            Records::Memory(kv) => Ok(kv.get(key).map(|v| Cow::Borrowed(v.as_slice()))),
            Records::Backed(b) => Ok(b.record(key)?.map(Cow::Owned)),
        }
    }
}

/// A diff as tree changes: each key's path and new leaf hash (`None` for a removal), in path
/// order. Storage keeps the leaves of a backed state from these.
pub fn leaf_changes(diff: &StateDiff) -> Vec<Change> {
    let mut changes: Vec<Change> = diff
        .iter()
        .map(|(k, v)| {
            let path = tree::path(k);
            (path, v.as_ref().map(|v| tree::leaf_hash(&path, v)))
        })
        .collect();
    changes.sort_unstable_by_key(|c| c.0);
    changes
}

impl State {
    /// The state a chain starts from: the founding agencies, their admin keys, the validators.
    pub fn genesis(genesis: &Genesis) -> Self {
        let mut s = State::default();
        s.apply(&Self::genesis_diff(genesis))
            .expect("a state in memory cannot fail to read");
        s
    }

    /// The records of the genesis state, as a diff from nothing.
    pub fn genesis_diff(genesis: &Genesis) -> StateDiff {
        let mut diff = StateDiff::new();
        for a in &genesis.agencies {
            let rec = AgencyRecord {
                admins: a.admins.len() as u32,
            };
            diff.insert(
                key(table::AGENCY, &[&name_part(&a.id)]),
                Some(codec::encode(&rec)),
            );
            for k in &a.admins {
                let rec = KeyRecord {
                    agency: a.id.clone(),
                    roles: [tally_types::Role::Admin].into(),
                    next_sequence: 0,
                    retired_for: None,
                };
                diff.insert(key(table::KEY, &[k.as_bytes()]), Some(codec::encode(&rec)));
            }
        }
        diff.insert(
            key(table::VALIDATORS, &[]),
            Some(codec::encode(&genesis.validator_keys())),
        );
        diff
    }

    /// Rebuilds a state in memory from stored pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        let kv: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().collect();
        let mut leaves: Vec<(Hash, Hash)> = kv.iter().map(|(k, v)| tree::leaf(k, v)).collect();
        leaves.sort_unstable_by_key(|l| l.0);
        let tree = Tree::from_sorted(&leaves);
        State {
            records: Records::Memory(kv),
            tree,
        }
    }

    /// The state a backing holds, with the top of its tree loaded: a node's state, read from
    /// its data directory.
    pub fn backed(backing: Arc<dyn Backing>) -> Result<Self, StateError> {
        Ok(State {
            tree: Tree::load(backing.clone())?,
            records: Records::Backed(backing),
        })
    }

    /// Applies a block's diff. A backed state reads its records from the backing, so the diff
    /// must already be written there (storage writes it with the block); only the tree
    /// changes here.
    pub fn apply(&mut self, diff: &StateDiff) -> Result<(), StateError> {
        let changes = leaf_changes(diff);
        // A tree in memory cannot fail to change, so it changes in place. A backed one reads
        // its backing and could fail halfway: it is replaced only once it changed.
        match self.records {
            Records::Memory(_) => self.tree.change(&changes)?,
            Records::Backed(_) => self.tree = self.tree.with(&changes)?,
        }
        self.apply_records(diff);
        Ok(())
    }

    /// [`State::apply`] with the tree [`State::stage`] worked out for this diff when the block
    /// was built or checked. Refused if this state has moved on since.
    pub fn apply_staged(&mut self, diff: &StateDiff, staged: StagedTree) -> Result<(), StateError> {
        if staged.base != self.tree.root() {
            return Err(StateError::Stale {
                staged: staged.base,
                now: self.tree.root(),
            });
        }
        self.tree = staged.tree;
        self.apply_records(diff);
        Ok(())
    }

    fn apply_records(&mut self, diff: &StateDiff) {
        if let Records::Memory(kv) = &mut self.records {
            for (k, v) in diff {
                match v {
                    Some(v) => kv.insert(k.clone(), v.clone()),
                    None => kv.remove(k),
                };
            }
        }
    }

    /// The state commitment: the root of the sparse Merkle tree of every record
    /// ([`crate::tree`]).
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The tree this state would have after `diff`, without applying it: a block is checked
    /// against its header before anything is changed. Costs O(diff × log state).
    pub fn stage(&self, diff: &StateDiff) -> Result<StagedTree, StateError> {
        let changes = leaf_changes(diff);
        let tree = self.tree.with(&changes)?;
        Ok(StagedTree {
            base: self.tree.root(),
            changes,
            tree,
        })
    }

    /// The records with keys in `from..to`, in key order.
    fn scan(&self, from: &[u8], to: &[u8]) -> Result<Pairs, StateError> {
        match &self.records {
            Records::Memory(kv) => Ok(kv
                .range(from.to_vec()..to.to_vec())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            Records::Backed(b) => b.records(from, to),
        }
    }

    /// Every (key, value) pair in key order (for tests and tools; a node's state is large).
    pub fn pairs(&self) -> Result<Pairs, StateError> {
        self.scan(&[], &[u8::MAX])
    }

    /// Every programme, in id order (for listings and audits).
    pub fn programmes(&self) -> Result<Vec<(Name, Programme)>, StateError> {
        let mut out = Vec::new();
        for (k, v) in self.scan(&[table::PROGRAMME], &[table::PROGRAMME + 1])? {
            let name_bytes = &k[1..k.len().saturating_sub(1)];
            let name = std::str::from_utf8(name_bytes)
                .ok()
                .and_then(|s| Name::new(s).ok())
                .ok_or_else(|| StateError::Corrupt {
                    key: hex_key(&k),
                    reason: "bad programme key".into(),
                })?;
            let p = codec::decode_own(&v).map_err(|e| StateError::Corrupt {
                key: hex_key(&k),
                reason: e.to_string(),
            })?;
            out.push((name, p));
        }
        Ok(out)
    }

    /// Every voucher, in id order (for invariant checks and audits).
    pub fn vouchers(&self) -> Result<Vec<(EntryId, Voucher)>, StateError> {
        let mut out = Vec::new();
        for (k, v) in self.scan(&[table::VOUCHER], &[table::VOUCHER + 1])? {
            let mut id = [0u8; 32];
            if k.len() != 33 {
                return Err(StateError::Corrupt {
                    key: hex_key(&k),
                    reason: "bad voucher key".into(),
                });
            }
            id.copy_from_slice(&k[1..]);
            let voucher = codec::decode_own(&v).map_err(|e| StateError::Corrupt {
                key: hex_key(&k),
                reason: e.to_string(),
            })?;
            out.push((Hash(id), voucher));
        }
        Ok(out)
    }
}

/// Writes buffered over a base state: a block layer, and on top an entry layer that is kept
/// when an entry is accepted and dropped when it is rejected, so a rejected entry leaves no
/// trace but its sequence number.
pub(crate) struct Overlay<'a> {
    base: &'a State,
    block: StateDiff,
    entry: StateDiff,
}

impl StateRead for Overlay<'_> {
    fn raw(&self, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>, StateError> {
        match self.entry.get(key).or_else(|| self.block.get(key)) {
            Some(v) => Ok(v.as_deref().map(Cow::Borrowed)),
            None => self.base.raw(key),
        }
    }
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(base: &'a State) -> Self {
        Self {
            base,
            block: StateDiff::new(),
            entry: StateDiff::new(),
        }
    }

    pub(crate) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.entry.insert(key, Some(codec::encode(value)));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.entry.insert(key, None);
    }

    pub(crate) fn keep_entry(&mut self) {
        let entry = std::mem::take(&mut self.entry);
        self.block.extend(entry);
    }

    pub(crate) fn drop_entry(&mut self) {
        self.entry.clear();
    }

    pub(crate) fn into_diff(mut self) -> StateDiff {
        self.drop_entry();
        self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_tree_is_the_applied_tree_and_a_moved_state_refuses_it() {
        let mut s = State::from_pairs((0u8..20).map(|i| (vec![i], vec![i; 3])));
        let mut diff = StateDiff::new();
        diff.insert(vec![0], None);
        diff.insert(vec![5], Some(vec![9]));
        diff.insert(vec![7, 1], Some(vec![1]));
        diff.insert(vec![30], Some(vec![2]));
        diff.insert(vec![31], None);
        // A tree staged on one state is refused once that state has moved on.
        let mut other = s.clone();
        let mut small = StateDiff::new();
        small.insert(vec![3], Some(vec![4]));
        let stale = other.stage(&diff).expect("in memory");
        other.apply(&small).expect("in memory");
        let rebuilt = State::from_pairs(other.pairs().expect("in memory"));
        assert_eq!(other.root(), rebuilt.root());
        assert_eq!(
            other.raw(&[3]).expect("in memory").as_deref(),
            Some(&[4u8][..])
        );
        let before = other.root();
        assert!(matches!(
            other.apply_staged(&diff, stale),
            Err(StateError::Stale { .. })
        ));
        assert_eq!(other.root(), before, "a refused tree changes nothing");

        let staged = s.stage(&diff).expect("in memory");
        let predicted = staged.root();
        assert_eq!(staged.leaves(), leaf_changes(&diff).as_slice());
        let mut by_apply = s.clone();
        by_apply.apply(&diff).expect("in memory");
        s.apply_staged(&diff, staged).expect("staged on this state");
        assert_eq!(predicted, s.root());
        assert_eq!(by_apply.root(), s.root());
        assert_eq!(
            by_apply.pairs().expect("in memory"),
            s.pairs().expect("in memory")
        );
        let rebuilt = State::from_pairs(s.pairs().expect("in memory"));
        assert_eq!(rebuilt.root(), s.root());
        assert_eq!(
            State::default()
                .stage(&StateDiff::new())
                .expect("in memory")
                .root(),
            State::default().root()
        );
    }
}
