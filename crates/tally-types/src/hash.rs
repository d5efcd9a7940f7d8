//! SHA-256 with a distinct domain-separation prefix for every kind of thing hashed, so that the
//! bytes of one kind (say, an entry) can never be passed off as another (say, a block header).

use sha2::{Digest, Sha256};

crate::fixed_bytes!(
    /// A SHA-256 digest.
    Hash,
    32
);

impl Hash {
    /// The all-zero hash: the state tree's empty subtree and an empty state's root, never the
    /// hash of any real value.
    pub const ZERO: Hash = Hash([0u8; 32]);
}

/// Every kind of thing tally hashes. The tag is fed to SHA-256 before the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// An entry's identity: the signed content without the signature.
    EntryId,
    /// The message an entry's author signs (the entry id under this tag).
    EntrySignature,
    /// A block header.
    BlockHeader,
    /// The message a validator signs to commit a block.
    CommitVote,
    /// A leaf of a Merkle tree (RFC 9162 uses a 0x00 prefix; the tag plays that role).
    MerkleLeaf,
    /// An inner node of a Merkle tree (RFC 9162 uses 0x01).
    MerkleNode,
    /// A leaf of the state tree: a record's path and its value's hash.
    StateLeaf,
    /// A state key, hashed to the record's path in the state tree.
    StateKey,
    /// A state record's value, hashed into its leaf.
    StateValue,
    /// A branch of the state tree over its two halves.
    StateNode,
    /// The outcome (accepted or rejected with reason) of one entry in a block.
    EntryOutcome,
    /// The genesis document.
    Genesis,
    /// An off-chain record committed with a salt.
    RecordCommitment,
    /// A proof that the holder of a new key agrees to a key rotation.
    KeyRotation,
    /// A consensus vote that is not a commit vote: a prevote, or a precommit for nil.
    ConsensusVote,
    /// A proposer's signed proposal of a block for a height and round.
    Proposal,
    /// Reserved for equivocation evidence; nothing is hashed under it (a node keeps evidence by
    /// offender and height). Kept so that the tag can never be given to another use.
    Evidence,
    /// Keys derived from a public label for devnets and tests (never for a real chain).
    TestKey,
}

impl Domain {
    /// The prefix bytes. Each is distinct and none is a prefix of another (they all end in NUL).
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Domain::EntryId => b"tally/v1/entry-id\0",
            Domain::EntrySignature => b"tally/v1/entry-signature\0",
            Domain::BlockHeader => b"tally/v1/block-header\0",
            Domain::CommitVote => b"tally/v1/commit-vote\0",
            Domain::MerkleLeaf => b"tally/v1/merkle-leaf\0",
            Domain::MerkleNode => b"tally/v1/merkle-node\0",
            Domain::StateLeaf => b"tally/v1/state-leaf\0",
            Domain::StateKey => b"tally/v1/state-key\0",
            Domain::StateValue => b"tally/v1/state-value\0",
            Domain::StateNode => b"tally/v1/state-node\0",
            Domain::EntryOutcome => b"tally/v1/entry-outcome\0",
            Domain::Genesis => b"tally/v1/genesis\0",
            Domain::RecordCommitment => b"tally/v1/record-commitment\0",
            Domain::KeyRotation => b"tally/v1/key-rotation\0",
            Domain::ConsensusVote => b"tally/v1/consensus-vote\0",
            Domain::Proposal => b"tally/v1/proposal\0",
            Domain::Evidence => b"tally/v1/evidence\0",
            Domain::TestKey => b"tally/v1/test-key\0",
        }
    }

    /// Hashes the concatenation of `parts` under this domain.
    pub fn hash(self, parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        h.update(self.tag());
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Domain; 18] = [
        Domain::EntryId,
        Domain::EntrySignature,
        Domain::BlockHeader,
        Domain::CommitVote,
        Domain::MerkleLeaf,
        Domain::MerkleNode,
        Domain::StateLeaf,
        Domain::StateKey,
        Domain::StateValue,
        Domain::StateNode,
        Domain::EntryOutcome,
        Domain::Genesis,
        Domain::RecordCommitment,
        Domain::KeyRotation,
        Domain::ConsensusVote,
        Domain::Proposal,
        Domain::Evidence,
        Domain::TestKey,
    ];

    #[test]
    fn domains_are_distinct_and_prefix_free() {
        for (i, a) in ALL.iter().enumerate() {
            for (j, b) in ALL.iter().enumerate() {
                if i != j {
                    assert!(!b.tag().starts_with(a.tag()), "{a:?} is a prefix of {b:?}");
                    assert_ne!(a.hash(&[b"x"]), b.hash(&[b"x"]));
                }
            }
        }
    }

    #[test]
    fn hex_round_trip_and_rejects_wrong_length() {
        let h = Domain::EntryId.hash(&[b"abc"]);
        assert_eq!(h.to_hex().parse::<Hash>(), Ok(h));
        assert!("abcd".parse::<Hash>().is_err());
        assert!("zz".repeat(32).parse::<Hash>().is_err());
    }
}
