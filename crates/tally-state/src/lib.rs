//! The deterministic tally state machine: what the ledger holds, and every rule an entry must
//! meet to change it.
//!
//! This crate knows nothing of networking, consensus, clocks or disks. Given the same state and
//! the same block, every node and every auditor computes the same outcomes, the same diff and
//! the same state root; that is what lets an auditor replay the chain and catch a node that lies.

pub mod execute;
pub mod records;
pub mod report;
pub mod store;
pub mod tree;
pub mod verify;

pub use execute::{
    admit, execute_block, execute_candidates, execute_verified, refusal_of_unverified, AdmitError,
    BlockContext, ExecuteError, Execution, InvalidBlock,
};
pub use report::{Finding, Reconciliation, Report};
pub use store::{leaf_changes, Backing, Pairs, StagedTree, State, StateDiff, StateRead};
pub use verify::{
    build_block, check_block, cores, verify_entries, BlockSummary, BuiltBlock, ChainVerifier,
    CheckedBlock, KnownEntries, NoneKnown, Tip, Violation,
};

use serde::{Deserialize, Serialize};
use tally_types::{Hash, RejectCode};

/// Why an entry was refused: a stable code and a message naming the rule and the values
/// ("voucher 81f3a2c0 has 1200 left; redemption asks 1500").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Rejection {
    /// The stable code.
    pub code: RejectCode,
    /// The rule and the values, for a person.
    pub detail: String,
}

impl Rejection {
    /// A rejection with its code and message.
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// The state could not be read: a record does not decode, or its store failed. Never caused by
/// an entry; it means the data directory is damaged or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The store behind a backed state failed to read.
    #[error("state store: {reason}")]
    Backing {
        /// What the store said.
        reason: String,
    },
    /// A stored record does not decode.
    #[error("state record {key} is corrupt: {reason}")]
    Corrupt {
        /// The key, hex.
        key: String,
        /// What failed.
        reason: String,
    },
    /// A staged state tree was offered to a state other than the one it was staged on: the
    /// block it was worked out for is not the next one. A node's own bookkeeping is wrong.
    #[error("a state tree staged on root {staged} was offered to the state at root {now}")]
    Stale {
        /// The root it was staged on.
        staged: Hash,
        /// The state's root now.
        now: Hash,
    },
}
