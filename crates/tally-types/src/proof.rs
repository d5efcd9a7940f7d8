//! Inclusion proofs: everything a person needs to check, holding only the genesis file, that one
//! entry was committed by the validators and what its outcome was.
//!
//! A proof carries the signed entry, its audit path to the header's entries root, its outcome
//! and that outcome's audit path to the header's outcomes root, the block header, and the commit
//! certificate. Checking it needs no node: the certificate's signers must be a quorum of the
//! validator set the header names, and that set must be the genesis set. The validator set is
//! fixed at genesis on this chain (no entry kind changes it), so the chain of set changes a
//! checker must walk from genesis to the block's height is empty, and the proof carries none.
//!
//! The canonical encoding of a proof is its file format: decoding refuses trailing and
//! non-canonical bytes, and every other byte is bound by a hash or a signature, so a proof with
//! any byte changed fails one named check.

use crate::block::{entries_root_leaf, outcomes_root_leaf, validators_hash};
use crate::block::{BlockHeader, CertificateError, CommitCertificate, EntryOutcome};
use crate::codec::{self, CodecError};
use crate::entry::{EntryId, SignedEntry};
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::merkle;
use crate::name::Name;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};

/// The format version this code writes and reads. A checker refuses versions it does not know
/// rather than guess at their meaning.
pub const PROOF_VERSION: u8 = 1;

/// The largest encoded proof a checker reads. A proof holds one entry (at most 2048 bytes), two
/// audit paths of at most 32 hashes, a header and at most 64 validator signatures: about 11 KiB.
pub const PROOF_BYTES_MAX: usize = 64 * 1024;

/// Proof that one entry was committed in a certified block, with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// [`PROOF_VERSION`] when written.
    pub version: u8,
    /// The entry, exactly as its author signed it.
    pub entry: SignedEntry,
    /// Its position in the block.
    pub index: u32,
    /// Audit path from the entry's leaf to `header.entries_root`, leaf side first.
    pub entry_path: Vec<Hash>,
    /// Accepted, or rejected by a rule (a rejected entry is still ordered and kept as evidence).
    pub outcome: EntryOutcome,
    /// Audit path from the outcome's leaf to `header.outcomes_root`, leaf side first.
    pub outcome_path: Vec<Hash>,
    /// The block's header.
    pub header: BlockHeader,
    /// The validators' commit certificate for the header.
    pub certificate: CommitCertificate,
}

/// What a checked proof establishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenEntry {
    /// The chain.
    pub chain_id: Name,
    /// The entry's id.
    pub entry_id: EntryId,
    /// The block that holds it.
    pub height: u64,
    /// Its position in that block.
    pub index: u32,
    /// The block's hash.
    pub block_hash: Hash,
    /// The block's timestamp.
    pub timestamp: TimestampMs,
    /// What executing it did.
    pub outcome: EntryOutcome,
    /// How many validators signed the certificate, of how many.
    pub signers: usize,
    /// The validator set's size.
    pub validators: usize,
}

/// The first check a proof failed. Each names one check, so a person can tell a tampered entry
/// from a forged certificate from a proof for another chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Larger than [`PROOF_BYTES_MAX`].
    #[error("proof is {0} bytes; the limit is {PROOF_BYTES_MAX}")]
    TooLarge(usize),
    /// Not the canonical encoding of a proof.
    #[error("not a proof: {0}")]
    Format(#[from] CodecError),
    /// Written in a format version this checker does not know.
    #[error("proof format version {0}; this checker reads version {PROOF_VERSION}")]
    Version(u8),
    /// The header or the entry names another chain than the genesis.
    #[error("{what} names chain {found}, the genesis is for chain {expected}")]
    WrongChain {
        /// `header` or `entry`.
        what: &'static str,
        /// The chain named.
        found: Name,
        /// The genesis chain.
        expected: Name,
    },
    /// The header names a validator set other than the one in force at its height.
    #[error("header commits to validator set {found}; the set in force at height {height} is {expected}")]
    ValidatorSet {
        /// The block's height.
        height: u64,
        /// What the header says.
        found: Hash,
        /// The genesis set's hash.
        expected: Hash,
    },
    /// The certificate does not prove that a quorum committed the header.
    #[error("commit certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The index lies outside the block.
    #[error("index {index} is outside the block's {count} entries")]
    Index {
        /// The proof's index.
        index: u32,
        /// The header's entry count.
        count: u32,
    },
    /// The entry and its path do not lead to the header's entries root.
    #[error("the entry at index {0} with this path does not hash to the header's entries root")]
    EntryPath(u32),
    /// The author's signature over the entry does not verify.
    #[error("the entry's signature by its author does not verify")]
    EntrySignature,
    /// The outcome and its path do not lead to the header's outcomes root.
    #[error("outcome {0:?} with this path does not hash to the header's outcomes root")]
    OutcomePath(EntryOutcome),
}

impl ProofError {
    /// A stable name for the check that failed, for scripts and JSON output.
    pub fn check(&self) -> &'static str {
        match self {
            ProofError::TooLarge(_) | ProofError::Format(_) => "format",
            ProofError::Version(_) => "version",
            ProofError::WrongChain { .. } => "chain",
            ProofError::ValidatorSet { .. } => "validator_set",
            ProofError::Certificate(_) => "certificate",
            ProofError::Index { .. } => "index",
            ProofError::EntryPath(_) => "entry_path",
            ProofError::EntrySignature => "entry_signature",
            ProofError::OutcomePath(_) => "outcome_path",
        }
    }
}

impl InclusionProof {
    /// Builds the proof for the entry at `index` of a committed block. `outcomes` are every
    /// entry's outcome in block order, as committed. `None` when the index is outside the block
    /// or the outcomes do not match the entries.
    pub fn build(
        header: BlockHeader,
        entries: &[SignedEntry],
        outcomes: &[(EntryId, EntryOutcome)],
        certificate: CommitCertificate,
        index: usize,
    ) -> Option<Self> {
        if outcomes.len() != entries.len() {
            return None;
        }
        let entry_leaves: Vec<Hash> = entries.iter().map(entries_root_leaf).collect();
        let outcome_leaves: Vec<Hash> = outcomes
            .iter()
            .map(|(id, o)| outcomes_root_leaf(id, o))
            .collect();
        Some(Self {
            version: PROOF_VERSION,
            entry: entries.get(index)?.clone(),
            index: u32::try_from(index).ok()?,
            entry_path: merkle::inclusion_path(&entry_leaves, index)?,
            outcome: outcomes.get(index)?.1,
            outcome_path: merkle::inclusion_path(&outcome_leaves, index)?,
            header,
            certificate,
        })
    }

    /// The file format: the canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads the file format, refusing oversized, trailing and non-canonical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() > PROOF_BYTES_MAX {
            return Err(ProofError::TooLarge(bytes.len()));
        }
        Ok(codec::decode(bytes)?)
    }

    /// Checks the proof against the genesis the checker trusts, cheapest checks first and the
    /// signatures last.
    pub fn verify(&self, genesis: &Genesis) -> Result<ProvenEntry, ProofError> {
        if self.version != PROOF_VERSION {
            return Err(ProofError::Version(self.version));
        }
        let h = &self.header;
        for (what, found) in [
            ("header", &h.chain_id),
            ("entry", &self.entry.body.chain_id),
        ] {
            if *found != genesis.chain_id {
                return Err(ProofError::WrongChain {
                    what,
                    found: found.clone(),
                    expected: genesis.chain_id.clone(),
                });
            }
        }
        let validators = genesis.validator_keys();
        let expected = validators_hash(&validators);
        if h.validators_hash != expected {
            return Err(ProofError::ValidatorSet {
                height: h.height,
                found: h.validators_hash,
                expected,
            });
        }
        if self.index >= h.entry_count {
            return Err(ProofError::Index {
                index: self.index,
                count: h.entry_count,
            });
        }
        let (index, count) = (u64::from(self.index), u64::from(h.entry_count));
        let entry_leaf = entries_root_leaf(&self.entry);
        if !merkle::verify_inclusion(&h.entries_root, &entry_leaf, index, count, &self.entry_path) {
            return Err(ProofError::EntryPath(self.index));
        }
        let outcome_leaf = outcomes_root_leaf(&self.entry.id(), &self.outcome);
        if !merkle::verify_inclusion(
            &h.outcomes_root,
            &outcome_leaf,
            index,
            count,
            &self.outcome_path,
        ) {
            return Err(ProofError::OutcomePath(self.outcome));
        }
        self.certificate.verify(h, &validators)?;
        self.entry
            .verify_signature()
            .map_err(|_| ProofError::EntrySignature)?;
        Ok(ProvenEntry {
            chain_id: h.chain_id.clone(),
            entry_id: self.entry.id(),
            height: h.height,
            index: self.index,
            block_hash: h.hash(),
            timestamp: h.timestamp,
            outcome: self.outcome,
            signers: self.certificate.signatures.len(),
            validators: validators.len(),
        })
    }
}
