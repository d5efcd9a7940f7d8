//! The vocabulary every other tally crate speaks: keys, entries, blocks, certificates, genesis,
//! canonical encoding and domain-separated hashing.
//!
//! This crate does no I/O. Everything here is a value that can be encoded, hashed, signed and
//! checked in isolation, so the same code serves the node, the auditor's CLI and the tests.

pub mod block;
pub mod bytes;
pub mod codec;
pub mod entry;
pub mod genesis;
pub mod hash;
pub mod keys;
pub mod merkle;
pub mod name;
pub mod proof;
pub mod receipt;
pub mod time;
pub mod token;

pub use block::{
    Block, BlockHeader, CertificateError, CommitCertificate, CommitSignature, EntryOutcome,
    RejectCode,
};
pub use codec::{decode, encode, CodecError};
pub use entry::{
    decode_entries, encode_entries, frame_entries, EntriesFormatError, EntryBody, EntryFormatError,
    EntryId, IdentifiedEntry, Payload, ReasonCode, RegistryEvent, RegistryKind, Role, SignedEntry,
    Unverified, VerifiedEntry, AMOUNT_MAX, ENTRY_BYTES_MAX,
};
pub use genesis::{AgencyGenesis, Genesis, GenesisError, ValidatorGenesis};
pub use hash::{Domain, Hash};
pub use keys::{
    verifications, verify_batch, KeyError, Keypair, PublicKey, Signature, SignatureCheck,
};
pub use name::{Name, NameError};
pub use proof::{InclusionProof, ProofError, ProvenEntry, PROOF_BYTES_MAX, PROOF_VERSION};
pub use receipt::{CheckedReceipt, HeldTokens, Receipt, ReceiptError, Withheld};
pub use time::{CivilDate, TimestampMs};
pub use token::{Commitment, DedupToken, SubjectToken};
