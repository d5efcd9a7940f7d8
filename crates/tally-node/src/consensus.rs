//! The seam where block production meets agreement.
//!
//! A node builds a block from its mempool and hands it to a [`Finality`], which returns the
//! commit certificate once the validator set has decided it. With one validator this is
//! [`SoloValidator`]: the single vote is the quorum. The BFT engine (Tendermint, next issue)
//! implements the same seam for n = 3f + 1 validators; the rest of the node does not change.

use crate::NodeError;
use serde::{Deserialize, Serialize};
use tally_storage::Store;
use tally_types::{codec, Block, CommitCertificate, Hash, Keypair, Name};

/// Turns a proposed block into a committed one.
pub trait Finality: Send {
    /// Returns the commit certificate for `block` once decided.
    fn certify(&mut self, store: &Store, block: &Block) -> Result<CommitCertificate, NodeError>;
}

/// What this validator last signed. Persisted, synced, before the signature exists, so a
/// restarted node can never sign a second, different block at the same height and round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyRecord {
    /// Height voted at.
    pub height: u64,
    /// Round voted in.
    pub round: u32,
    /// Block voted for.
    pub block_hash: Hash,
}

/// The only validator of a one-validator chain.
pub struct SoloValidator {
    key: Keypair,
    chain_id: Name,
}

impl SoloValidator {
    /// Checks this key is the whole validator set.
    pub fn new(
        key: Keypair,
        chain_id: Name,
        validators: &[tally_types::PublicKey],
    ) -> Result<Self, NodeError> {
        if validators != [key.public()] {
            return Err(NodeError::Config(format!(
                "this build runs a chain of one validator; genesis names {} validators and this node's key {} {}",
                validators.len(),
                key.public().short(),
                if validators.contains(&key.public()) { "is one of them" } else { "is not among them" }
            )));
        }
        Ok(Self { key, chain_id })
    }
}

impl Finality for SoloValidator {
    fn certify(&mut self, store: &Store, block: &Block) -> Result<CommitCertificate, NodeError> {
        let height = block.header.height;
        let block_hash = block.hash();
        let previous: Option<SafetyRecord> = match store.safety_record()? {
            Some(bytes) => Some(
                codec::decode(&bytes)
                    .map_err(|e| NodeError::Corrupt(format!("safety record: {e}")))?,
            ),
            None => None,
        };
        // A crash after voting but before committing leaves a vote for a block that is gone
        // from the mempool's point of view. Voting for a different block at that height is only
        // safe in a later round, as in Tendermint.
        let round = match previous {
            Some(p) if p.height == height && p.block_hash == block_hash => p.round,
            Some(p) if p.height == height => p.round + 1,
            Some(p) if p.height > height => {
                return Err(NodeError::Corrupt(format!(
                    "safety record is at height {}, head is below {height}",
                    p.height
                )))
            }
            _ => 0,
        };
        let record = SafetyRecord {
            height,
            round,
            block_hash,
        };
        store.put_safety_record(&codec::encode(&record))?;
        let vote =
            CommitCertificate::sign_vote(&self.key, &self.chain_id, height, round, &block_hash);
        Ok(CommitCertificate {
            height,
            round,
            block_hash,
            signatures: vec![vote],
        })
    }
}
