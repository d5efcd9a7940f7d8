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

use std::sync::Arc;
use tally_types::{Domain, Hash};

/// Below this many changes a block's tree update runs on one thread: spawning costs more.
const PARALLEL_CHANGES_MIN: usize = 2048;

/// A record's position in the tree.
pub(crate) fn path(key: &[u8]) -> Hash {
    Domain::StateKey.hash(&[key])
}

/// The leaf of a record at `path` holding `value`.
pub(crate) fn leaf_hash(path: &Hash, value: &[u8]) -> Hash {
    let value_hash = Domain::StateValue.hash(&[value]);
    Domain::StateLeaf.hash(&[path.as_bytes(), value_hash.as_bytes()])
}

fn branch_hash(left: &Hash, right: &Hash) -> Hash {
    Domain::StateNode.hash(&[left.as_bytes(), right.as_bytes()])
}

/// One change to the tree: a record's path, and its new leaf hash or `None` for a removal.
pub(crate) type Change = (Hash, Option<Hash>);

#[derive(Debug, Clone)]
enum Node {
    Leaf(Arc<Leaf>),
    Branch(Arc<Branch>),
}

#[derive(Debug)]
struct Leaf {
    path: Hash,
    hash: Hash,
}

/// Holds at least two leaves below it, or it would have been collapsed into its one leaf.
#[derive(Debug)]
struct Branch {
    hash: Hash,
    children: [Option<Node>; 2],
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Leaf(l) => l.hash,
            Node::Branch(b) => b.hash,
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

/// A persistent sparse Merkle tree of leaf hashes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tree {
    root: Option<Node>,
}

impl Tree {
    /// A tree over `(path, leaf hash)` pairs sorted by path, with no path twice.
    pub(crate) fn from_sorted(leaves: &[(Hash, Hash)]) -> Tree {
        Tree {
            root: build(leaves, 0),
        }
    }

    /// The root hash: the state root.
    pub(crate) fn root(&self) -> Hash {
        hash_of(&self.root)
    }

    /// This tree with `changes` (sorted by path, no path twice) applied. Untouched subtrees are
    /// shared with `self`, which is left as it was.
    pub(crate) fn with(&self, changes: &[Change]) -> Tree {
        Tree {
            root: update(self.root.as_ref(), changes, 0),
        }
    }
}

fn update(node: Option<&Node>, changes: &[Change], depth: usize) -> Option<Node> {
    if changes.is_empty() {
        return node.cloned();
    }
    match node {
        Some(Node::Branch(b)) => {
            let at = split(changes, depth, |c| &c.0);
            let (left, right) = both(
                changes.len() >= PARALLEL_CHANGES_MIN,
                || update(b.children[0].as_ref(), &changes[..at], depth + 1),
                || update(b.children[1].as_ref(), &changes[at..], depth + 1),
            );
            join(left, right)
        }
        Some(Node::Leaf(old)) => {
            // The subtree held one record; it now holds whatever the changes leave of it.
            let mut leaves: Vec<(Hash, Hash)> = changes
                .iter()
                .filter_map(|(p, h)| h.map(|h| (*p, h)))
                .collect();
            if let Err(at) = changes.binary_search_by(|c| c.0.cmp(&old.path)) {
                let at = at - changes[..at].iter().filter(|c| c.1.is_none()).count();
                leaves.insert(at, (old.path, old.hash));
            }
            build(&leaves, depth)
        }
        None => {
            let leaves: Vec<(Hash, Hash)> = changes
                .iter()
                .filter_map(|(p, h)| h.map(|h| (*p, h)))
                .collect();
            build(&leaves, depth)
        }
    }
}

fn build(leaves: &[(Hash, Hash)], depth: usize) -> Option<Node> {
    match leaves {
        [] => None,
        [(path, hash)] => Some(Node::Leaf(Arc::new(Leaf {
            path: *path,
            hash: *hash,
        }))),
        _ => {
            // Distinct paths part before their last bit.
            debug_assert!(depth < 256, "two leaves share a path");
            let at = split(leaves, depth, |l| &l.0);
            let (left, right) = both(
                leaves.len() >= PARALLEL_CHANGES_MIN,
                || build(&leaves[..at], depth + 1),
                || build(&leaves[at..], depth + 1),
            );
            join(left, right)
        }
    }
}

/// The subtree over two halves, collapsed to a lone leaf or to nothing where the rules say so.
fn join(left: Option<Node>, right: Option<Node>) -> Option<Node> {
    match (&left, &right) {
        (None, None) => None,
        (Some(Node::Leaf(_)), None) => left,
        (None, Some(Node::Leaf(_))) => right,
        _ => Some(Node::Branch(Arc::new(Branch {
            hash: branch_hash(&hash_of(&left), &hash_of(&right)),
            children: [left, right],
        }))),
    }
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
        let mut seed = 7u64;
        for round in 0..60u64 {
            let mut changes = BTreeMap::new();
            for _ in 0..(1 + round % 9) * 7 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let path = path(&(seed >> 40 & 0x1ff).to_le_bytes());
                let change = (seed >> 20 & 3 != 0).then(|| leaf_hash(&path, &seed.to_le_bytes()));
                changes.insert(path, change);
            }
            let changes: Vec<Change> = changes.into_iter().collect();
            let before = tree.root();
            let next = tree.with(&changes);
            assert_eq!(tree.root(), before, "the old version is untouched");
            for (p, h) in &changes {
                match h {
                    Some(h) => map.insert(*p, *h),
                    None => map.remove(p),
                };
            }
            assert_eq!(next.root(), Tree::from_sorted(&leaves_of(&map)).root());
            tree = next;
        }
        assert!(map.len() > 100, "the walk grew a real tree: {}", map.len());
        // Removing everything gives the empty tree back.
        let all: Vec<Change> = map.keys().map(|p| (*p, None)).collect();
        assert_eq!(tree.with(&all).root(), Hash::ZERO);
    }

    #[test]
    fn a_large_update_splits_across_threads_to_the_same_root() {
        let leaves: Vec<(Hash, Hash)> = {
            let mut v: Vec<_> = (0u32..3 * PARALLEL_CHANGES_MIN as u32)
                .map(|i| {
                    let p = path(&i.to_le_bytes());
                    (p, leaf_hash(&p, b"v"))
                })
                .collect();
            v.sort();
            v
        };
        let (first, second) = leaves.split_at(leaves.len() / 3);
        let grown = Tree::from_sorted(first).with(
            &second
                .iter()
                .map(|(p, h)| (*p, Some(*h)))
                .collect::<Vec<_>>(),
        );
        assert_eq!(grown.root(), Tree::from_sorted(&leaves).root());
    }
}
