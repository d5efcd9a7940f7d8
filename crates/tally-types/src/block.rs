//! Blocks, their outcomes and commit certificates.
//!
//! A block header commits to the block's entries, to the outcome of each entry (accepted, or
//! rejected with a reason: a well-formed entry that breaks a rule still consumes its sequence
//! number and is kept as evidence), and to the full ledger state after the block. A commit
//! certificate is a quorum of validator signatures over (chain id, height, round, block hash).

use crate::codec;
use crate::entry::{EntryId, SignedEntry};
use crate::hash::{Domain, Hash};
use crate::keys::{Keypair, PublicKey, Signature};
use crate::merkle;
use crate::name::Name;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The fixed header of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The chain.
    pub chain_id: Name,
    /// 1 for the first block after genesis.
    pub height: u64,
    /// Hash of the previous header, or the genesis hash for height 1.
    pub parent: Hash,
    /// Set by the proposer; never earlier than the parent's. Expiry rules read this, never a clock.
    pub timestamp: TimestampMs,
    /// The validator that proposed the block.
    pub proposer: PublicKey,
    /// Number of entries in the block.
    pub entry_count: u32,
    /// Merkle root over the leaf hashes of the signed entries' canonical bytes.
    pub entries_root: Hash,
    /// Merkle root over the outcome of each entry, in block order.
    pub outcomes_root: Hash,
    /// Root of the authenticated ledger state after applying this block.
    pub state_root: Hash,
    /// Hash of the validator set that must certify this block.
    pub validators_hash: Hash,
}

impl BlockHeader {
    /// The block hash: what validators sign and what the next block links to.
    pub fn hash(&self) -> Hash {
        Domain::BlockHeader.hash(&[&codec::encode(self)])
    }
}

/// A header and its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The entries in execution order.
    pub entries: Vec<SignedEntry>,
}

impl Block {
    /// The block hash (the header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The Merkle root the header must carry for these entries.
    pub fn compute_entries_root(entries: &[SignedEntry]) -> Hash {
        let leaves: Vec<Hash> = entries.iter().map(entries_root_leaf).collect();
        merkle::root_of_leaf_hashes(&leaves)
    }
}

/// Every reason an entry can be refused, as a stable code. The same code reaches the API's JSON,
/// the CLI's message and the block's outcome record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Bytes or JSON that do not form an entry, or a payload that fails its own checks.
    Malformed,
    /// Signed for another chain.
    WrongChain,
    /// The signature does not verify.
    BadSignature,
    /// The author key is not registered on the ledger.
    UnknownAuthor,
    /// The author key was rotated away and can sign nothing more.
    RetiredKey,
    /// The author lacks the role the entry needs.
    MissingRole,
    /// The sequence number was already used.
    StaleSequence,
    /// The sequence number skips ahead of the author's next one by more than the node holds.
    FutureSequence,
    /// The node's mempool is full.
    MempoolFull,
    /// The same entry was already received.
    DuplicateEntry,
    /// The target key belongs to another agency.
    ForeignKey,
    /// The key to rotate to is already registered.
    KeyInUse,
    /// The agency would be left without any admin.
    LastAdmin,
    /// A programme with this id exists.
    ProgrammeExists,
    /// No such programme.
    UnknownProgramme,
    /// The programme, voucher, attestation or record belongs to another agency than the author's.
    ForeignAgency,
    /// Outside the programme's validity window.
    OutsideWindow,
    /// Issuing would take the programme over its budget.
    OverBudget,
    /// The voucher's expiry is in the past or beyond the programme's end.
    BadExpiry,
    /// The subject already received this assistance this period.
    DuplicateAssistance,
    /// No such voucher.
    UnknownVoucher,
    /// Redeeming more than the voucher has left.
    OverBalance,
    /// The voucher or attestation has expired.
    Expired,
    /// The voucher or attestation was revoked.
    Revoked,
    /// Not expired yet (for closing a voucher as expired).
    NotExpired,
    /// The redemption or settlement reference was already used.
    DuplicateReference,
    /// The vendor key does not hold the vendor role in the programme's agency.
    NotVendor,
    /// Settling more than the vendor is owed.
    OverSettlement,
    /// No such attestation.
    UnknownAttestation,
    /// The attestation is not in a state that allows this (e.g. reinstate when not suspended).
    WrongStatus,
    /// No such registry record, or not of the kind required.
    UnknownRecord,
    /// The subject already has this record (a second birth).
    AlreadyRecorded,
    /// The subject is recorded as dead.
    SubjectDead,
    /// The subject is already married.
    AlreadyMarried,
    /// The marriage is already dissolved.
    NotMarried,
    /// The parcel already has a title.
    TitleExists,
    /// The parcel has no title.
    UnknownTitle,
    /// The transfer's `from` is not the title's current holder.
    NotHolder,
    /// The event date lies after the block's date.
    FutureDate,
}

impl RejectCode {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        // serde's rename gives the same string; kept as a match so it costs no allocation.
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::WrongChain => "wrong_chain",
            RejectCode::BadSignature => "bad_signature",
            RejectCode::UnknownAuthor => "unknown_author",
            RejectCode::RetiredKey => "retired_key",
            RejectCode::MissingRole => "missing_role",
            RejectCode::StaleSequence => "stale_sequence",
            RejectCode::FutureSequence => "future_sequence",
            RejectCode::MempoolFull => "mempool_full",
            RejectCode::DuplicateEntry => "duplicate_entry",
            RejectCode::ForeignKey => "foreign_key",
            RejectCode::KeyInUse => "key_in_use",
            RejectCode::LastAdmin => "last_admin",
            RejectCode::ProgrammeExists => "programme_exists",
            RejectCode::UnknownProgramme => "unknown_programme",
            RejectCode::ForeignAgency => "foreign_agency",
            RejectCode::OutsideWindow => "outside_window",
            RejectCode::OverBudget => "over_budget",
            RejectCode::BadExpiry => "bad_expiry",
            RejectCode::DuplicateAssistance => "duplicate_assistance",
            RejectCode::UnknownVoucher => "unknown_voucher",
            RejectCode::OverBalance => "over_balance",
            RejectCode::Expired => "expired",
            RejectCode::Revoked => "revoked",
            RejectCode::NotExpired => "not_expired",
            RejectCode::DuplicateReference => "duplicate_reference",
            RejectCode::NotVendor => "not_vendor",
            RejectCode::OverSettlement => "over_settlement",
            RejectCode::UnknownAttestation => "unknown_attestation",
            RejectCode::WrongStatus => "wrong_status",
            RejectCode::UnknownRecord => "unknown_record",
            RejectCode::AlreadyRecorded => "already_recorded",
            RejectCode::SubjectDead => "subject_dead",
            RejectCode::AlreadyMarried => "already_married",
            RejectCode::NotMarried => "not_married",
            RejectCode::TitleExists => "title_exists",
            RejectCode::UnknownTitle => "unknown_title",
            RejectCode::NotHolder => "not_holder",
            RejectCode::FutureDate => "future_date",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What executing one entry of a block did. Committed in the header's outcomes root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryOutcome {
    /// Applied to the state.
    Accepted,
    /// Ordered and sequence-consuming, but refused by a business rule; the state is unchanged
    /// except for the author's sequence.
    Rejected(RejectCode),
}

/// One leaf of the entries tree: the hash of the signed entry's canonical bytes, signature
/// included, so a proof shows exactly what the author signed.
pub fn entries_root_leaf(entry: &SignedEntry) -> Hash {
    merkle::leaf_hash(&entry.to_bytes())
}

/// The Merkle root over the outcomes of a block's entries, each bound to its entry id.
pub fn outcomes_root(outcomes: &[(EntryId, EntryOutcome)]) -> Hash {
    let leaves: Vec<Hash> = outcomes
        .iter()
        .map(|(id, o)| outcomes_root_leaf(id, o))
        .collect();
    merkle::root_of_leaf_hashes(&leaves)
}

/// One leaf of the outcomes tree: the outcome bound to the entry it belongs to, so a proof
/// cannot pair one entry with another's outcome.
pub fn outcomes_root_leaf(id: &EntryId, outcome: &EntryOutcome) -> Hash {
    Domain::EntryOutcome.hash(&[id.as_bytes(), &codec::encode(outcome)])
}

/// One validator's signature in a commit certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSignature {
    /// The validator's consensus key.
    pub validator: PublicKey,
    /// Its signature over the commit vote message.
    pub signature: Signature,
}

/// Proof that a quorum of the validator set committed a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// The block's height.
    pub height: u64,
    /// The consensus round the block was decided in.
    pub round: u32,
    /// The block's hash.
    pub block_hash: Hash,
    /// At least a quorum of distinct validators' signatures.
    pub signatures: Vec<CommitSignature>,
}

/// Why a certificate does not prove a commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// For another block or height.
    #[error("certificate is for height {cert_height} block {cert_block}, expected height {height} block {block}")]
    WrongBlock {
        /// Certificate's height.
        cert_height: u64,
        /// Certificate's block, short form.
        cert_block: String,
        /// Expected height.
        height: u64,
        /// Expected block, short form.
        block: String,
    },
    /// Signed by a key outside the validator set.
    #[error("signature by {0}, which is not in the validator set")]
    NotAValidator(String),
    /// The same validator signed twice.
    #[error("validator {0} appears twice")]
    DuplicateSigner(String),
    /// A signature does not verify.
    #[error("signature by validator {0} does not verify")]
    BadSignature(String),
    /// Too few distinct validators.
    #[error("{got} distinct validator signatures; a quorum of {needed} of {total} is required")]
    NoQuorum {
        /// Valid distinct signers.
        got: usize,
        /// Quorum size.
        needed: usize,
        /// Validator set size.
        total: usize,
    },
}

/// The quorum for `n` validators: 2f+1 where f = floor((n-1)/3) is the most faults tolerated.
pub fn quorum(n: usize) -> usize {
    n - n.saturating_sub(1) / 3
}

/// The hash that commits to a validator set (sorted keys).
pub fn validators_hash(validators: &[PublicKey]) -> Hash {
    let mut sorted = validators.to_vec();
    sorted.sort();
    Domain::Genesis.hash(&[b"validators", &codec::encode(&sorted)])
}

impl CommitCertificate {
    /// The message a validator signs to commit `block_hash` at `height` in `round`.
    pub fn vote_message(chain_id: &Name, height: u64, round: u32, block_hash: &Hash) -> Vec<u8> {
        codec::encode(&(chain_id, height, round, block_hash))
    }

    /// Signs a commit vote (used by validators and by tests).
    pub fn sign_vote(
        key: &Keypair,
        chain_id: &Name,
        height: u64,
        round: u32,
        block_hash: &Hash,
    ) -> CommitSignature {
        CommitSignature {
            validator: key.public(),
            signature: key.sign(
                Domain::CommitVote,
                &Self::vote_message(chain_id, height, round, block_hash),
            ),
        }
    }

    /// A certificate for `header`, signed in `round` by each of `keys`. The consensus core
    /// assembles its own from the votes it gathers; this one serves a chain written without a
    /// network (`tally bench chain`) and tests.
    pub fn signed_by<'a>(
        header: &BlockHeader,
        round: u32,
        keys: impl IntoIterator<Item = &'a Keypair>,
    ) -> Self {
        let hash = header.hash();
        CommitCertificate {
            height: header.height,
            round,
            block_hash: hash,
            signatures: keys
                .into_iter()
                .map(|k| Self::sign_vote(k, &header.chain_id, header.height, round, &hash))
                .collect(),
        }
    }

    /// Checks that this certificate proves `header` was committed by a quorum of `validators`.
    pub fn verify(
        &self,
        header: &BlockHeader,
        validators: &[PublicKey],
    ) -> Result<(), CertificateError> {
        self.verify_for(&header.chain_id, header.height, &header.hash(), validators)
    }

    /// Checks that this certificate proves the block `block_hash` was committed at `height` of
    /// `chain_id` by a quorum of `validators`. For holders of a hash without its header.
    pub fn verify_for(
        &self,
        chain_id: &Name,
        height: u64,
        block_hash: &Hash,
        validators: &[PublicKey],
    ) -> Result<(), CertificateError> {
        if self.height != height || self.block_hash != *block_hash {
            return Err(CertificateError::WrongBlock {
                cert_height: self.height,
                cert_block: self.block_hash.short(),
                height,
                block: block_hash.short(),
            });
        }
        let set: BTreeSet<&PublicKey> = validators.iter().collect();
        let mut seen = BTreeSet::new();
        let message = Self::vote_message(chain_id, self.height, self.round, &self.block_hash);
        for s in &self.signatures {
            if !set.contains(&s.validator) {
                return Err(CertificateError::NotAValidator(s.validator.short()));
            }
            if !seen.insert(s.validator) {
                return Err(CertificateError::DuplicateSigner(s.validator.short()));
            }
            s.validator
                .verify(Domain::CommitVote, &message, &s.signature)
                .map_err(|_| CertificateError::BadSignature(s.validator.short()))?;
        }
        let needed = quorum(set.len());
        if seen.len() < needed {
            return Err(CertificateError::NoQuorum {
                got: seen.len(),
                needed,
                total: set.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_sizes() {
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 10].map(quorum),
            [1, 2, 3, 3, 4, 5, 5, 7]
        );
    }

    fn header() -> BlockHeader {
        BlockHeader {
            chain_id: Name::new("c").unwrap_or_else(|e| panic!("{e}")),
            height: 5,
            parent: Hash::ZERO,
            timestamp: TimestampMs(1),
            proposer: Keypair::from_seed_for_tests(1).public(),
            entry_count: 0,
            entries_root: Block::compute_entries_root(&[]),
            outcomes_root: outcomes_root(&[]),
            state_root: Hash::ZERO,
            validators_hash: Hash::ZERO,
        }
    }

    #[test]
    fn certificate_needs_a_quorum_of_distinct_members() {
        let keys: Vec<Keypair> = (0..4).map(Keypair::from_seed_for_tests).collect();
        let set: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let h = header();
        let sign = |k: &Keypair| CommitCertificate::sign_vote(k, &h.chain_id, 5, 0, &h.hash());
        let mut cert = CommitCertificate {
            height: 5,
            round: 0,
            block_hash: h.hash(),
            signatures: vec![],
        };
        cert.signatures = keys[..2].iter().map(sign).collect();
        assert!(matches!(
            cert.verify(&h, &set),
            Err(CertificateError::NoQuorum {
                got: 2,
                needed: 3,
                ..
            })
        ));
        cert.signatures.push(sign(&keys[0]));
        assert!(matches!(
            cert.verify(&h, &set),
            Err(CertificateError::DuplicateSigner(_))
        ));
        cert.signatures.pop();
        cert.signatures
            .push(sign(&Keypair::from_seed_for_tests(99)));
        assert!(matches!(
            cert.verify(&h, &set),
            Err(CertificateError::NotAValidator(_))
        ));
        cert.signatures.pop();
        cert.signatures.push(sign(&keys[2]));
        assert_eq!(cert.verify(&h, &set), Ok(()));
        cert.round = 1;
        assert!(matches!(
            cert.verify(&h, &set),
            Err(CertificateError::BadSignature(_))
        ));
    }
}
