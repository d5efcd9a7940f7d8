//! Tendermint consensus for tally validators, as a pure state machine.
//!
//! The [`Core`] owns no thread, socket, clock or file: the host feeds it [`Input`]s (a message
//! arrived, a timeout expired, the proposed block was built or verified) and carries out the
//! [`Effect`]s it returns (persist the safety record, broadcast, schedule a timeout, commit).
//! That is what lets `tests/simulation.rs` drive thousands of seeded runs, with message loss,
//! partitions, crashes and Byzantine validators, deterministically and in virtual time, against
//! the same code the node runs.
//!
//! The protocol is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT
//! consensus" (2018). docs/consensus.md maps each line of the paper to this crate and states the
//! safety and liveness argument.

mod core;
mod log;
pub mod message;
pub mod validators;

pub use crate::core::{
    Core, Counters, Effect, Evidence, Input, SafetyRecord, Timeout, FUTURE_ROUNDS_MAX,
    LEFT_ROUNDS_KEPT,
};
pub use message::{Message, Proposal, Step, Vote, VoteKind};
pub use validators::ValidatorSet;

use serde::{Deserialize, Serialize};

/// Why a core cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// The validator set is unusable.
    #[error("validator set: {0}")]
    ValidatorSet(String),
    /// This node's key is not in the validator set (run it as an observer instead).
    #[error("key {0} is not in the validator set")]
    NotAValidator(String),
    /// The safety record holds messages this key did not sign for its height and round.
    #[error("safety record holds messages not signed by this validator at its height and round")]
    ForeignRecord,
}

/// The round timeouts. Each grows linearly with the round so that, once the network is timely
/// again, some round lasts long enough for every honest validator to take part; all return to
/// their base at the next height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Wait for a proposal in round 0.
    pub propose_ms: u64,
    /// Wait for more prevotes after 2f+1 arrived without agreement.
    pub prevote_ms: u64,
    /// Wait for more precommits after 2f+1 arrived without a decision.
    pub precommit_ms: u64,
    /// Added to each timeout per round.
    pub delta_ms: u64,
    /// No timeout grows beyond this.
    pub max_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            propose_ms: 1_000,
            prevote_ms: 500,
            precommit_ms: 500,
            delta_ms: 500,
            max_ms: 60_000,
        }
    }
}

impl Timeouts {
    /// The delay of `step`'s timeout in `round`.
    pub fn after_ms(&self, step: Step, round: u32) -> u64 {
        let base = match step {
            Step::Propose => self.propose_ms,
            Step::Prevote => self.prevote_ms,
            Step::Precommit => self.precommit_ms,
        };
        base.saturating_add(self.delta_ms.saturating_mul(u64::from(round)))
            .min(self.max_ms)
    }
}
