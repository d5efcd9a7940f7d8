//! The state commitment: a binary sparse Merkle tree over the hash of each state key.
//!
//! A record sits at the 256-bit path `H(state-key, key)`, read most significant bit first.
//! Three rules fix the tree's shape from the set of records alone, whatever order they were
//! written in:
//!
//! - an empty subtree hashes to [`Hash::ZERO`];
//! - a subtree holding exactly one record is that record's leaf, at whatever depth the subtree
//!   starts (the compressed form of Diem's sparse Merkle tree), so a leaf sits just below the
//!   point where its path parts from every other;
//! - any other subtree is a branch, `H(state-node, left ‖ right)`.
//!
//! A leaf is `H(state-leaf, path ‖ H(state-value, value))`. Binding the path and only the
//! value's hash lets a future proof show a record present, or show another record where an
//! absent key would sit, with hashes alone.
//!
//! A block that changes k of n records rehashes O(k log n) nodes. Nodes are shared between
//! versions through `Arc`, so the root a block *would* produce is computed without touching
//! the committed tree, and cloning a state does not copy its tree.
//!
//! A tree whose leaves are kept in a [`Backing`] (a node's RocksDB) holds only the top of
//! itself in memory: any subtree of at most [`FOLD_MAX`] leaves is kept as its hash alone, and
//! when a change reaches it its leaves are read back, changed and hashed again. Folding changes
//! nothing in the hashes, only what stays in memory: about one node per five records instead
//! of two per record.
//!
//! The leaves of the folded subtrees the last blocks changed are also kept, keyed by the
//! subtree's hash ([`Folds`]): a ledger's blocks keep changing the same records (an author's
//! sequence number, a programme's totals, a vendor's account), and reading their subtrees
//! back was a random seek into RocksDB each, every block. A hash names exactly one set of
//! leaves, so what is kept is never stale, whichever version of the tree asks.

use crate::store::Backing;
use crate::StateError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tally_types::{Domain, Hash};

/// Below this many changes a block's tree update runs on one thread: spawning costs more.
const PARALLEL_CHANGES_MIN: usize = 2048;

/// Below this many folded subtrees to read back, an update reads them on one thread.
const PARALLEL_READS_MIN: usize = 256;

/// The most leaves a subtree may hold to be kept as its hash alone in a backed tree. Larger
/// saves memory; smaller rehashes less when one of its leaves changes.
pub const FOLD_MAX: usize = 16;

/// Folded subtrees whose leaves a backed tree keeps in memory, at most: the last blocks'
/// changes. At most [`FOLD_MAX`] leaves of 64 bytes each, so 8 MiB at the very most.
pub const FOLDS_KEPT_MAX: usize = 8192;

/// A backed tree is loaded in this many slices of the path space, one range read each, so
/// loading never holds more than a slice's leaves at once.
const LOAD_SLICE_BITS: usize = 8;

/// A record's position in the tree.
pub(crate) fn path(key: &[u8]) -> Hash {
    Domain::StateKey.hash(&[key])
}

/// The leaf of a record at `path` holding `value`.
pub(crate) fn leaf_hash(path: &Hash, value: &[u8]) -> Hash {
    let value_hash = Domain::StateValue.hash(&[value]);
    Domain::StateLeaf.hash(&[path.as_bytes(), value_hash.as_bytes()])
}

/// A record as a tree leaf: its path and its leaf hash.
pub fn leaf(key: &[u8], value: &[u8]) -> (Hash, Hash) {
    let path = path(key);
    (path, leaf_hash(&path, value))
}

fn branch_hash(left: &Hash, right: &Hash) -> Hash {
    Domain::StateNode.hash(&[left.as_bytes(), right.as_bytes()])
}

/// One change to the tree: a record's path, and its new leaf hash or `None` for a removal.
pub type Change = (Hash, Option<Hash>);

#[derive(Debug, Clone)]
enum Node {
    Leaf(Arc<Leaf>),
    Branch(Arc<Branch>),
    /// A subtree of 2 to [`FOLD_MAX`] leaves, whose leaves are in the tree's backing.
    Folded(Arc<Hash>),
}

#[derive(Debug, Clone)]
struct Leaf {
    path: Hash,
    hash: Hash,
}

/// Holds at least two leaves below it, or it would have been collapsed into its one leaf.
#[derive(Debug, Clone)]
struct Branch {
    hash: Hash,
    children: [Option<Node>; 2],
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Leaf(l) => l.hash,
            Node::Branch(b) => b.hash,
            Node::Folded(h) => **h,
        }
    }
}

fn hash_of(node: &Option<Node>) -> Hash {
    node.as_ref().map_or(Hash::ZERO, Node::hash)
}

/// Bit `depth` of a path, most significant first.
fn bit(path: &Hash, depth: usize) -> bool {
    path.0[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// Where the paths (sorted) that take the right branch at `depth` begin.
fn split<T>(sorted: &[T], depth: usize, path: impl Fn(&T) -> &Hash) -> usize {
    sorted.partition_point(|t| !bit(path(t), depth))
}

/// The first and last path under the subtree at `depth` that holds `path`.
fn span(path: &Hash, depth: usize) -> (Hash, Hash) {
    let (mut lo, mut hi) = (*path, *path);
    for i in depth..256 {
        let mask = 0x80 >> (i % 8);
        lo.0[i / 8] &= !mask;
        hi.0[i / 8] |= mask;
    }
    (lo, hi)
}

/// Where a backed tree's folded subtrees' leaves come from: the leaves of the subtrees the
/// last blocks built, kept by the subtree's hash, or else the backing.
pub(crate) struct Folds {
    backing: Arc<dyn Backing>,
    kept: Mutex<Kept>,
}

/// Two generations, each of at most half of [`FOLDS_KEPT_MAX`]: a subtree found in the older
/// one moves to the newer, and when the newer is full the older is dropped. Subtrees that
/// every block changes stay; the rest age out without a clock per entry.
#[derive(Default)]
struct Kept {
    newer: HashMap<Hash, Arc<[(Hash, Hash)]>>,
    older: HashMap<Hash, Arc<[(Hash, Hash)]>>,
}

impl Kept {
    fn insert(&mut self, hash: Hash, leaves: Arc<[(Hash, Hash)]>) {
        if self.newer.len() >= FOLDS_KEPT_MAX / 2 {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(hash, leaves);
    }

    /// The leaves kept for `hash`, moved to the newer generation if found in the older.
    fn get(&mut self, hash: &Hash) -> Option<Arc<[(Hash, Hash)]>> {
        if let Some(leaves) = self.newer.get(hash) {
            return Some(leaves.clone());
        }
        let leaves = self.older.remove(hash)?;
        self.insert(*hash, leaves.clone());
        Some(leaves)
    }
}

/// The leaves of the folded subtrees one update reaches, by subtree hash, found before it
/// starts.
type Fetched = HashMap<Hash, Arc<[(Hash, Hash)]>>;

/// What one update of a backed tree reads folded subtrees from.
struct Reads<'a> {
    folds: &'a Folds,
    fetched: Fetched,
}

impl Folds {
    fn new(backing: Arc<dyn Backing>) -> Self {
        Folds {
            backing,
            kept: Mutex::default(),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leaves of every folded subtree of `node` that `changes` reach: the kept ones from
    /// memory, the others from the backing in path order, so that a backing can serve them
    /// all in one pass (two, on two threads, when there are many) instead of one range read
    /// per subtree.
    fn fetch(&self, node: Option<&Node>, changes: &[Change]) -> Result<Reads<'_>, StateError> {
        let mut reached = Vec::new();
        reached_folds(node, changes, 0, &mut reached);
        let mut fetched = Fetched::with_capacity(reached.len());
        let (mut unkept, mut spans) = (Vec::new(), Vec::new());
        {
            let mut kept = self.kept();
            for (hash, depth, path) in reached {
                match kept.get(&hash) {
                    Some(leaves) => {
                        fetched.insert(hash, leaves);
                    }
                    None => {
                        unkept.push(hash);
                        spans.push(span(&path, depth));
                    }
                }
            }
        }
        let read = match spans.len() {
            0 => Vec::new(),
            n if n < PARALLEL_READS_MIN => self.backing.leaves_in(&spans)?,
            n => {
                let (first, second) = both(
                    true,
                    || self.backing.leaves_in(&spans[..n / 2]),
                    || self.backing.leaves_in(&spans[n / 2..]),
                );
                let mut read = first?;
                read.extend(second?);
                read
            }
        };
        if read.len() != spans.len() {
            return Err(StateError::Backing {
                reason: format!(
                    "{} subtrees' leaves asked for, {} read",
                    spans.len(),
                    read.len()
                ),
            });
        }
        for (hash, leaves) in unkept.into_iter().zip(read) {
            fetched.insert(hash, leaves.into());
        }
        Ok(Reads {
            folds: self,
            fetched,
        })
    }

    fn keep(&self, hash: Hash, leaves: &[(Hash, Hash)]) {
        self.kept().insert(hash, leaves.into());
    }
}

/// Whether [`build`] folds small subtrees, and whether it keeps their leaves.
#[derive(Clone, Copy)]
enum Fold<'a> {
    /// Every leaf in memory.
    Never,
    /// Small subtrees as their hash alone: loading a whole tree.
    Small,
    /// Small subtrees as their hash, their leaves kept: the subtrees a block changed.
    Kept(&'a Folds),
}

/// A persistent sparse Merkle tree of leaf hashes.
#[derive(Clone, Default)]
pub(crate) struct Tree {
    root: Option<Node>,
    /// Where folded subtrees' leaves are read back; `None` keeps every leaf in memory.
    folds: Option<Arc<Folds>>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tree({}, {})",
            self.root().short(),
            if self.folds.is_some() {
                "backed"
            } else {
                "in memory"
            }
        )
    }
}

impl Tree {
    /// A tree over `(path, leaf hash)` pairs sorted by path, with no path twice, all in memory.
    pub(crate) fn from_sorted(leaves: &[(Hash, Hash)]) -> Tree {
        Tree {
            root: build(leaves, 0, Fold::Never),
            folds: None,
        }
    }

    /// The tree over the leaves a backing holds, folded: read slice by slice, so memory holds
    /// the folded tree and one slice of leaves.
    pub(crate) fn load(backing: Arc<dyn Backing>) -> Result<Tree, StateError> {
        let root = load_slice(&*backing, Hash::ZERO, 0)?;
        Ok(Tree {
            root,
            folds: Some(Arc::new(Folds::new(backing))),
        })
    }

    /// The root hash: the state root.
    pub(crate) fn root(&self) -> Hash {
        hash_of(&self.root)
    }

    /// This tree with `changes` (sorted by path, no path twice) applied. Untouched subtrees are
    /// shared with `self`, which is left as it was. A backed tree reads the leaves of each
    /// folded subtree a change reaches; the backing must hold this tree's leaves, or already
    /// the changed ones (a change applied twice is applied once).
    pub(crate) fn with(&self, changes: &[Change]) -> Result<Tree, StateError> {
        let reads = reads(self.folds.as_deref(), self.root.as_ref(), changes)?;
        Ok(Tree {
            root: update(self.root.as_ref(), changes, 0, reads.as_ref())?,
            folds: self.folds.clone(),
        })
    }

    /// [`Tree::with`] in place: a branch no other version shares is changed where it is
    /// instead of copied, so a replay that keeps one version neither allocates nor frees the
    /// branches each block passes through. The shape and the hashes are those `with` gives.
    /// A backed tree whose backing fails a read is left part-changed, its hashes stale: use
    /// `with` where the old version must survive an error.
    pub(crate) fn change(&mut self, changes: &[Change]) -> Result<(), StateError> {
        let folds = self.folds.clone();
        let reads = reads(folds.as_deref(), self.root.as_ref(), changes)?;
        update_in_place(&mut self.root, changes, 0, reads.as_ref())
    }
}

/// The folded subtrees' leaves an update of `root` by `changes` needs, for a backed tree.
fn reads<'a>(
    folds: Option<&'a Folds>,
    root: Option<&Node>,
    changes: &[Change],
) -> Result<Option<Reads<'a>>, StateError> {
    folds.map(|f| f.fetch(root, changes)).transpose()
}

fn load_slice(
    backing: &dyn Backing,
    prefix: Hash,
    depth: usize,
) -> Result<Option<Node>, StateError> {
    if depth == LOAD_SLICE_BITS {
        let (from, to) = span(&prefix, depth);
        let leaves = backing.leaves(&from, &to)?;
        return Ok(build(&leaves, depth, Fold::Small));
    }
    let mut right = prefix;
    right.0[depth / 8] |= 0x80 >> (depth % 8);
    let left = load_slice(backing, prefix, depth + 1)?;
    let right = load_slice(backing, right, depth + 1)?;
    Ok(join(left, right))
}

/// `changes` laid over `leaves` (both sorted by path): the leaves of a subtree after them.
fn merged(leaves: &[(Hash, Hash)], changes: &[Change]) -> Vec<(Hash, Hash)> {
    let mut out = Vec::with_capacity(leaves.len() + changes.len());
    let (mut l, mut c) = (leaves.iter().peekable(), changes.iter().peekable());
    loop {
        match (l.peek().copied(), c.peek().copied()) {
            (Some(leaf), Some(change)) if leaf.0 < change.0 => {
                out.push(*leaf);
                l.next();
            }
            (Some(leaf), Some(change)) if leaf.0 == change.0 => {
                l.next();
            }
            (_, Some((path, hash))) => {
                out.extend(hash.map(|h| (*path, h)));
                c.next();
            }
            (Some(leaf), None) => {
                out.push(*leaf);
                l.next();
            }
            (None, None) => return out,
        }
    }
}

/// The folded subtrees of `node` (at `depth`) that `changes` reach, as [`update`] walks to
/// them, in path order: each one's hash, depth and a path under it.
fn reached_folds(
    node: Option<&Node>,
    changes: &[Change],
    depth: usize,
    out: &mut Vec<(Hash, usize, Hash)>,
) {
    let Some(first) = changes.first() else {
        return;
    };
    match node {
        Some(Node::Branch(b)) => {
            let at = split(changes, depth, |c| &c.0);
            reached_folds(b.children[0].as_ref(), &changes[..at], depth + 1, out);
            reached_folds(b.children[1].as_ref(), &changes[at..], depth + 1, out);
        }
        Some(Node::Folded(hash)) => out.push((**hash, depth, first.0)),
        Some(Node::Leaf(_)) | None => {}
    }
}

fn update(
    node: Option<&Node>,
    changes: &[Change],
    depth: usize,
    reads: Option<&Reads>,
) -> Result<Option<Node>, StateError> {
    if changes.is_empty() {
        return Ok(node.cloned());
    }
    let fold = reads.map_or(Fold::Never, |r| Fold::Kept(r.folds));
    match node {
        Some(Node::Branch(b)) => {
            let at = split(changes, depth, |c| &c.0);
            let (left, right) = both(
                changes.len() >= PARALLEL_CHANGES_MIN,
                || update(b.children[0].as_ref(), &changes[..at], depth + 1, reads),
                || update(b.children[1].as_ref(), &changes[at..], depth + 1, reads),
            );
            Ok(join(left?, right?))
        }
        Some(Node::Folded(hash)) => {
            let reads = reads.ok_or_else(|| StateError::Backing {
                reason: "a folded subtree in a tree without a backing".into(),
            })?;
            // `Folds::fetch` walked to every folded subtree this update reaches.
            let leaves = reads
                .fetched
                .get(&**hash)
                .ok_or_else(|| StateError::Backing {
                    reason: "a folded subtree the update did not fetch".into(),
                })?;
            Ok(build(&merged(leaves, changes), depth, fold))
        }
        // The subtree held one record, or none; it now holds whatever the changes leave.
        Some(Node::Leaf(old)) => Ok(build(
            &merged(&[(old.path, old.hash)], changes),
            depth,
            fold,
        )),
        None => Ok(build(&merged(&[], changes), depth, fold)),
    }
}

/// [`update`] in place: the same result, with every unshared branch on the way reused.
fn update_in_place(
    node: &mut Option<Node>,
    changes: &[Change],
    depth: usize,
    reads: Option<&Reads>,
) -> Result<(), StateError> {
    if changes.is_empty() {
        return Ok(());
    }
    // A record overwritten where it sits alone: most changes end so in a large tree.
    if let (Some(Node::Leaf(leaf)), [(path, Some(hash))]) = (&mut *node, changes) {
        if leaf.path == *path {
            Arc::make_mut(leaf).hash = *hash;
            return Ok(());
        }
    }
    let Some(Node::Branch(shared)) = node else {
        *node = update(node.as_ref(), changes, depth, reads)?;
        return Ok(());
    };
    let branch = Arc::make_mut(shared);
    let at = split(changes, depth, |c| &c.0);
    let [left, right] = &mut branch.children;
    let (left, right) = both(
        changes.len() >= PARALLEL_CHANGES_MIN,
        || update_in_place(left, &changes[..at], depth + 1, reads),
        || update_in_place(right, &changes[at..], depth + 1, reads),
    );
    left?;
    right?;
    let [left, right] = &branch.children;
    if collapses(left, right) {
        let [left, right] = std::mem::take(&mut branch.children);
        *node = left.or(right);
    } else {
        branch.hash = branch_hash(&hash_of(left), &hash_of(right));
    }
    Ok(())
}

/// The subtree at `depth` over `leaves` (sorted, all under it), small subtrees folded as
/// `fold` says.
fn build(leaves: &[(Hash, Hash)], depth: usize, fold: Fold<'_>) -> Option<Node> {
    match leaves {
        [] => None,
        [(path, hash)] => Some(Node::Leaf(Arc::new(Leaf {
            path: *path,
            hash: *hash,
        }))),
        _ if leaves.len() <= FOLD_MAX && !matches!(fold, Fold::Never) => {
            let hash = subtree_hash(leaves, depth);
            if let Fold::Kept(folds) = fold {
                folds.keep(hash, leaves);
            }
            Some(Node::Folded(Arc::new(hash)))
        }
        _ => {
            // Distinct paths part before their last bit.
            debug_assert!(depth < 256, "two leaves share a path");
            let at = split(leaves, depth, |l| &l.0);
            let (left, right) = both(
                leaves.len() >= PARALLEL_CHANGES_MIN,
                || build(&leaves[..at], depth + 1, fold),
                || build(&leaves[at..], depth + 1, fold),
            );
            join(left, right)
        }
    }
}

/// The hash of the subtree at `depth` over `leaves`, by the same rules as [`build`], without
/// building it.
fn subtree_hash(leaves: &[(Hash, Hash)], depth: usize) -> Hash {
    match leaves {
        [] => Hash::ZERO,
        [(_, hash)] => *hash,
        _ => {
            let at = split(leaves, depth, |l| &l.0);
            branch_hash(
                &subtree_hash(&leaves[..at], depth + 1),
                &subtree_hash(&leaves[at..], depth + 1),
            )
        }
    }
}

/// The subtree over two halves, collapsed to a lone leaf or to nothing where the rules say so.
fn join(left: Option<Node>, right: Option<Node>) -> Option<Node> {
    if collapses(&left, &right) {
        return left.or(right);
    }
    Some(Node::Branch(Arc::new(Branch {
        hash: branch_hash(&hash_of(&left), &hash_of(&right)),
        children: [left, right],
    })))
}

/// Whether two halves make no branch: both empty, or one lone leaf beside an empty half (the
/// leaf then stands for the whole subtree).
fn collapses(left: &Option<Node>, right: &Option<Node>) -> bool {
    matches!(
        (left, right),
        (None, None) | (Some(Node::Leaf(_)), None) | (None, Some(Node::Leaf(_)))
    )
}

/// Runs both halves, on two threads when there is enough work to pay for the second.
fn both<A: Send, B: Send>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !parallel {
        return (a(), b());
    }
    std::thread::scope(|s| {
        let right = s.spawn(b);
        let left = a();
        // A panic in the second half is a bug in this module; surface it where it happened.
        let right = right
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (left, right)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn leaves_of(map: &BTreeMap<Hash, Hash>) -> Vec<(Hash, Hash)> {
        map.iter().map(|(p, h)| (*p, *h)).collect()
    }

    /// `count` pseudo-random changes, sorted, to the paths of `keys_mask + 1` keys; one in
    /// `removal_mask + 1` removes (a present path or not), the rest insert or overwrite.
    fn random_changes(
        seed: &mut u64,
        count: u64,
        keys_mask: u64,
        removal_mask: u64,
    ) -> Vec<Change> {
        let mut changes = BTreeMap::new();
        for _ in 0..count {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let path = path(&(*seed >> 40 & keys_mask).to_le_bytes());
            let change =
                (*seed >> 20 & removal_mask != 0).then(|| leaf_hash(&path, &seed.to_le_bytes()));
            changes.insert(path, change);
        }
        changes.into_iter().collect()
    }

    /// The leaves after `changes`.
    fn change(map: &mut BTreeMap<Hash, Hash>, changes: &[Change]) {
        for (p, h) in changes {
            match h {
                Some(h) => map.insert(*p, *h),
                None => map.remove(p),
            };
        }
    }

    /// The root recomputed from the leaves up, checking that every branch holds the hash of
    /// its children: a node changed under a version that shares it shows up here.
    fn recomputed(node: Option<&Node>) -> Hash {
        match node {
            None => Hash::ZERO,
            Some(Node::Leaf(l)) => l.hash,
            Some(Node::Folded(h)) => **h,
            Some(Node::Branch(b)) => {
                let hash = branch_hash(
                    &recomputed(b.children[0].as_ref()),
                    &recomputed(b.children[1].as_ref()),
                );
                assert_eq!(hash, b.hash, "a branch's stored hash is its children's");
                hash
            }
        }
    }

    fn path_with_bits(bits: &[bool]) -> Hash {
        let mut p = [0u8; 32];
        for (i, b) in bits.iter().enumerate() {
            if *b {
                p[i / 8] |= 0x80 >> (i % 8);
            }
        }
        Hash(p)
    }

    #[test]
    fn the_shape_follows_the_rules() {
        let h = |n: u8| Domain::TestKey.hash(&[&[n]]);
        assert_eq!(Tree::default().root(), Hash::ZERO);
        // One record: the root is its leaf.
        let a = path_with_bits(&[false, false]);
        assert_eq!(Tree::from_sorted(&[(a, h(1))]).root(), h(1));
        // Two records parting at the second bit both sit under the left half, which is a
        // branch; the right half is empty.
        let b = path_with_bits(&[false, true]);
        let expected = branch_hash(&branch_hash(&h(1), &h(2)), &Hash::ZERO);
        assert_eq!(Tree::from_sorted(&[(a, h(1)), (b, h(2))]).root(), expected);
        // A third record on the right.
        let c = path_with_bits(&[true]);
        let expected = branch_hash(&branch_hash(&h(1), &h(2)), &h(3));
        assert_eq!(
            Tree::from_sorted(&[(a, h(1)), (b, h(2)), (c, h(3))]).root(),
            expected
        );
    }

    #[test]
    fn updates_match_a_tree_built_from_scratch_and_leave_the_old_tree_alone() {
        // A deterministic walk of inserts, overwrites and removals, some of absent paths.
        let mut map = BTreeMap::new();
        let mut tree = Tree::default();
        let mut sole = Tree::default();
        let mut seed = 7u64;
        for round in 0..60u64 {
            let changes = random_changes(&mut seed, (1 + round % 9) * 7, 0x1ff, 3);
            let before = tree.root();
            let next = tree.with(&changes).expect("in memory");
            assert_eq!(tree.root(), before, "the old version is untouched");
            change(&mut map, &changes);
            assert_eq!(next.root(), Tree::from_sorted(&leaves_of(&map)).root());
            // In place, on a copy sharing every node with the old version and on one that
            // shares none of the changed ones.
            let mut shared = tree.clone();
            shared.change(&changes).expect("in memory");
            assert_eq!(shared.root(), next.root());
            assert_eq!(
                recomputed(tree.root.as_ref()),
                before,
                "a shared node is copied, not changed"
            );
            assert_eq!(recomputed(shared.root.as_ref()), next.root());
            tree = next;
            // And on a tree no other version ever shares, changed where it is each round.
            sole.change(&changes).expect("in memory");
            assert_eq!(sole.root(), tree.root(), "round {round}, sole owner");
            assert_eq!(recomputed(sole.root.as_ref()), tree.root());
        }
        assert!(map.len() > 100, "the walk grew a real tree: {}", map.len());
        // Removing everything gives the empty tree back.
        let all: Vec<Change> = map.keys().map(|p| (*p, None)).collect();
        assert_eq!(tree.with(&all).expect("in memory").root(), Hash::ZERO);
        sole.change(&all).expect("in memory");
        assert_eq!(sole.root(), Hash::ZERO);
        assert!(sole.root.is_none());
    }

    #[test]
    fn a_large_update_splits_across_threads_to_the_same_root() {
        let leaves: Vec<(Hash, Hash)> = {
            let mut v: Vec<_> = (0u32..3 * PARALLEL_CHANGES_MIN as u32)
                .map(|i| leaf(&i.to_le_bytes(), b"v"))
                .collect();
            v.sort();
            v
        };
        let (first, second) = leaves.split_at(leaves.len() / 3);
        let changes: Vec<Change> = second.iter().map(|(p, h)| (*p, Some(*h))).collect();
        let grown = Tree::from_sorted(first).with(&changes).expect("in memory");
        assert_eq!(grown.root(), Tree::from_sorted(&leaves).root());
        let mut in_place = Tree::from_sorted(first);
        in_place.change(&changes).expect("in memory");
        assert_eq!(in_place.root(), grown.root());
    }

    /// Leaves kept in a map, as a node keeps them in RocksDB, how many subtrees' reads asked
    /// for them, and how many of those came one at a time rather than in a pass.
    #[derive(Default)]
    struct MapBacking(
        std::sync::Mutex<BTreeMap<Hash, Hash>>,
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    );

    impl MapBacking {
        fn set(&self, changes: &[Change]) {
            change(&mut self.0.lock().expect("unpoisoned"), changes);
        }

        fn reads(&self) -> usize {
            self.1.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn single_reads(&self) -> usize {
            self.2.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn range(&self, from: &Hash, to: &Hash) -> Vec<(Hash, Hash)> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let map = self.0.lock().expect("unpoisoned");
            map.range(*from..=*to).map(|(p, h)| (*p, *h)).collect()
        }
    }

    impl Backing for MapBacking {
        fn record(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
            Ok(None)
        }
        fn records(&self, _: &[u8], _: &[u8]) -> Result<crate::Pairs, StateError> {
            Ok(Vec::new())
        }
        fn leaves(&self, from: &Hash, to: &Hash) -> Result<Vec<(Hash, Hash)>, StateError> {
            self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self.range(from, to))
        }
        fn leaves_in(&self, spans: &[(Hash, Hash)]) -> Result<Vec<Vec<(Hash, Hash)>>, StateError> {
            assert!(
                spans.windows(2).all(|w| w[0].1 < w[1].0),
                "spans in path order, none overlapping"
            );
            Ok(spans
                .iter()
                .map(|(from, to)| self.range(from, to))
                .collect())
        }
    }

    fn count_nodes(node: Option<&Node>) -> usize {
        match node {
            None => 0,
            Some(Node::Leaf(_)) | Some(Node::Folded(_)) => 1,
            Some(Node::Branch(b)) => {
                count_nodes(b.children[0].as_ref()) + count_nodes(b.children[1].as_ref()) + 1
            }
        }
    }

    #[test]
    fn a_backed_tree_folds_small_subtrees_and_keeps_the_same_roots() {
        let backing = Arc::new(MapBacking::default());
        let mut tree = Tree::load(backing.clone()).expect("empty backing");
        let mut sole = Tree::load(backing.clone()).expect("empty backing");
        assert_eq!(tree.root(), Hash::ZERO);
        let mut map = BTreeMap::new();
        let mut seed = 11u64;
        for round in 0..80u64 {
            let changes = random_changes(&mut seed, (1 + round % 13) * 23, 0xfff, 7);
            // The root a block would give, read against the committed leaves...
            let next = tree.with(&changes).expect("backing reads");
            change(&mut map, &changes);
            let full = Tree::from_sorted(&leaves_of(&map));
            assert_eq!(next.root(), full.root(), "round {round}");
            let mut in_place = tree.clone();
            in_place.change(&changes).expect("backing reads");
            assert_eq!(in_place.root(), full.root(), "round {round}, in place");
            // ...and again once storage has written the block: applying twice is applying once.
            backing.set(&changes);
            let again = tree.with(&changes).expect("backing reads");
            assert_eq!(
                again.root(),
                full.root(),
                "round {round}, changes already stored"
            );
            // A backed tree no other version shares, changed in place, folded subtrees and all.
            sole.change(&changes).expect("backing reads");
            assert_eq!(sole.root(), full.root(), "round {round}, sole owner");
            assert_eq!(recomputed(sole.root.as_ref()), full.root());
            tree = next;
        }
        assert!(map.len() > 1000, "the walk grew a real tree: {}", map.len());
        let reloaded = Tree::load(backing.clone()).expect("backing reads");
        assert_eq!(reloaded.root(), tree.root());
        // The folded tree keeps far fewer nodes than there are records.
        let nodes = count_nodes(reloaded.root.as_ref());
        let full_nodes = count_nodes(Tree::from_sorted(&leaves_of(&map)).root.as_ref());
        assert!(
            nodes * 4 < full_nodes,
            "{nodes} nodes folded, {full_nodes} in full"
        );
        // Removing everything gives the empty tree back.
        let all: Vec<Change> = map.keys().map(|p| (*p, None)).collect();
        assert_eq!(tree.with(&all).expect("backing reads").root(), Hash::ZERO);
    }

    /// A backed tree loaded over `count` records at random paths among `keys_mask + 1`, with
    /// its backing and the leaves it holds.
    fn loaded(
        seed: &mut u64,
        count: u64,
        keys_mask: u64,
    ) -> (Arc<MapBacking>, BTreeMap<Hash, Hash>, Tree) {
        let backing = Arc::new(MapBacking::default());
        let mut map = BTreeMap::new();
        let grown = random_changes(seed, count, keys_mask, keys_mask);
        backing.set(&grown);
        change(&mut map, &grown);
        let tree = Tree::load(backing.clone()).expect("backing reads");
        (backing, map, tree)
    }

    #[test]
    fn a_block_reaching_hundreds_of_folded_subtrees_reads_them_in_passes() {
        let mut seed = 23u64;
        let (backing, mut map, mut tree) = loaded(&mut seed, 20_000, 0xfffff);
        let (loading, singles) = (backing.reads(), backing.single_reads());
        // Enough changes to reach well over PARALLEL_READS_MIN folded subtrees, a few removals
        // among them, and some blocks small enough to read on one thread.
        for count in [3000, 40, 1200] {
            let changes = random_changes(&mut seed, count, 0xfffff, 15);
            let before = backing.reads();
            let next = tree.with(&changes).expect("backing reads");
            change(&mut map, &changes);
            assert_eq!(next.root(), Tree::from_sorted(&leaves_of(&map)).root());
            let mut in_place = tree.clone();
            in_place.change(&changes).expect("backing reads");
            assert_eq!(in_place.root(), next.root());
            backing.set(&changes);
            tree = next;
            if count == 3000 {
                assert!(
                    backing.reads() - before > 2 * PARALLEL_READS_MIN,
                    "{} subtrees read",
                    backing.reads() - before
                );
            }
        }
        assert!(backing.reads() > loading);
        assert_eq!(
            backing.single_reads(),
            singles,
            "every subtree read in a pass"
        );
    }

    #[test]
    fn a_subtree_the_last_block_changed_is_not_read_back_again() {
        let mut seed = 5u64;
        let (backing, mut map, tree) = loaded(&mut seed, 4000, 0xffff);
        let loading = backing.reads();
        // One record, changed in block after block: its subtree is read once.
        let hot = path(b"a record every block changes");
        let mut versions = vec![tree];
        for n in 0u8..5 {
            let changes = [(hot, Some(leaf_hash(&hot, &[n])))];
            let next = versions[versions.len() - 1]
                .with(&changes)
                .expect("backing reads");
            backing.set(&changes);
            change(&mut map, &changes);
            assert_eq!(next.root(), Tree::from_sorted(&leaves_of(&map)).root());
            versions.push(next);
        }
        assert_eq!(backing.reads() - loading, 1, "read back once, then kept");
        // Whatever version asks, a subtree's hash names its leaves: an older version with
        // other changes still gets the right root.
        let other = [(hot, None)];
        let mut expected = map.clone();
        change(&mut expected, &other);
        let from_old = versions[2].with(&other).expect("backing reads");
        assert_eq!(
            from_old.root(),
            Tree::from_sorted(&leaves_of(&expected)).root()
        );
    }
}
