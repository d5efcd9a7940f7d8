//! Merkle trees in the style of RFC 9162 (Certificate Transparency v2): leaves and inner nodes
//! are hashed under distinct domains, and the tree over n leaves splits at the largest power of
//! two below n. Used for a block's entries and outcomes (the ledger state has a sparse tree of
//! its own, in tally-state).

use crate::hash::{Domain, Hash};

/// The hash of one leaf's bytes.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Domain::MerkleLeaf.hash(&[leaf])
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Domain::MerkleNode.hash(&[left.as_bytes(), right.as_bytes()])
}

/// The root over already-hashed leaves. The empty tree's root is the hash of nothing under the
/// leaf domain (the same as a tree of one empty leaf, which tally never builds: every leaf it
/// hashes is a non-empty encoding).
pub fn root_of_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Domain::MerkleLeaf.hash(&[]),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(
                &root_of_leaf_hashes(&leaves[..k]),
                &root_of_leaf_hashes(&leaves[k..]),
            )
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The audit path proving leaf `index` is in the tree over `leaves`, leaf-side first.
pub fn inclusion_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut i) = (0usize, leaves.len(), index);
    let mut stack = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if i < k {
            stack.push(root_of_leaf_hashes(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            stack.push(root_of_leaf_hashes(&leaves[lo..lo + k]));
            lo += k;
            i -= k;
        }
    }
    while let Some(h) = stack.pop() {
        path.push(h);
    }
    Some(path)
}

/// Checks an audit path (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    root: &Hash,
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    path: &[Hash],
) -> bool {
    if index >= tree_size {
        return false;
    }
    let (mut fnode, mut snode) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn every_leaf_proves_in_every_size() {
        for n in 1..40 {
            let l = leaves(n);
            let root = root_of_leaf_hashes(&l);
            for i in 0..n {
                let path = inclusion_path(&l, i).unwrap_or_default();
                assert!(
                    verify_inclusion(&root, &l[i], i as u64, n as u64, &path),
                    "n={n} i={i}"
                );
                assert!(
                    !verify_inclusion(&root, &l[(i + 1) % n], i as u64, n as u64, &path) || n == 1
                );
                if !path.is_empty() {
                    assert!(!verify_inclusion(
                        &root,
                        &l[i],
                        i as u64,
                        n as u64,
                        &path[..path.len() - 1]
                    ));
                }
            }
        }
    }

    #[test]
    fn roots_differ_by_order_and_size() {
        let l = leaves(4);
        let mut swapped = l.clone();
        swapped.swap(0, 1);
        assert_ne!(root_of_leaf_hashes(&l), root_of_leaf_hashes(&swapped));
        assert_ne!(root_of_leaf_hashes(&l[..3]), root_of_leaf_hashes(&l));
        assert_ne!(root_of_leaf_hashes(&[]), root_of_leaf_hashes(&l[..1]));
    }
}
