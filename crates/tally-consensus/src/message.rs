//! The two signed messages of Tendermint: a proposal and a vote.
//!
//! A precommit for a block is signed over exactly the bytes of a commit vote
//! ([`CommitCertificate::vote_message`] under [`Domain::CommitVote`]), so 2f+1 precommits *are*
//! a commit certificate: nothing is re-signed after the decision. Prevotes and nil precommits
//! are signed under their own domain, so no vote can be passed off as a commit.

use serde::{Deserialize, Serialize};
use tally_types::{
    codec, CommitCertificate, CommitSignature, Domain, Hash, KeyError, Keypair, Name, PublicKey,
    Signature,
};

/// Where a validator is within a round. Ordered: propose < prevote < precommit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Waiting for the round's proposal.
    Propose,
    /// Prevoted; waiting for prevotes.
    Prevote,
    /// Precommitted; waiting for precommits.
    Precommit,
}

/// The two voting phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    /// First phase: "this proposal is valid and I am not locked on another".
    Prevote,
    /// Second phase: "2f+1 prevoted this value; I lock on it".
    Precommit,
}

/// A validator's signed vote for a block, or for nil (`block: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The height voted at.
    pub height: u64,
    /// The round voted in.
    pub round: u32,
    /// The block hash, or `None` for nil.
    pub block: Option<Hash>,
    /// The voter.
    pub validator: PublicKey,
    /// The voter's signature (see [`Vote::signed_bytes`]).
    pub signature: Signature,
}

impl Vote {
    /// The domain and bytes a vote's signature covers.
    pub fn signed_bytes(
        chain_id: &Name,
        kind: VoteKind,
        height: u64,
        round: u32,
        block: Option<&Hash>,
    ) -> (Domain, Vec<u8>) {
        match (kind, block) {
            (VoteKind::Precommit, Some(b)) => (
                Domain::CommitVote,
                CommitCertificate::vote_message(chain_id, height, round, b),
            ),
            _ => (
                Domain::ConsensusVote,
                codec::encode(&(chain_id, kind, height, round, block)),
            ),
        }
    }

    /// Signs a vote.
    pub fn sign(
        key: &Keypair,
        chain_id: &Name,
        kind: VoteKind,
        height: u64,
        round: u32,
        block: Option<Hash>,
    ) -> Vote {
        let (domain, bytes) = Self::signed_bytes(chain_id, kind, height, round, block.as_ref());
        Vote {
            kind,
            height,
            round,
            block,
            validator: key.public(),
            signature: key.sign(domain, &bytes),
        }
    }

    /// Checks the signature (strictly) for `chain_id`.
    pub fn verify(&self, chain_id: &Name) -> Result<(), KeyError> {
        let (domain, bytes) = Self::signed_bytes(
            chain_id,
            self.kind,
            self.height,
            self.round,
            self.block.as_ref(),
        );
        self.validator.verify(domain, &bytes, &self.signature)
    }

    /// The commit signature this vote carries, when it is a precommit for a block.
    pub fn commit_signature(&self) -> Option<CommitSignature> {
        match (self.kind, self.block) {
            (VoteKind::Precommit, Some(_)) => Some(CommitSignature {
                validator: self.validator,
                signature: self.signature,
            }),
            _ => None,
        }
    }
}

/// A proposer's signed proposal of a block for one height and round. `pol_round` is the round
/// in which the proposer saw 2f+1 prevotes for this block (its "valid round"), if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The height proposed for.
    pub height: u64,
    /// The round proposed in.
    pub round: u32,
    /// The proposed block.
    pub block_hash: Hash,
    /// The proof-of-lock round (the paper's `validRound`), or `None` for −1.
    pub pol_round: Option<u32>,
    /// The proposer.
    pub proposer: PublicKey,
    /// The proposer's signature.
    pub signature: Signature,
}

impl Proposal {
    fn signed_bytes(
        chain_id: &Name,
        height: u64,
        round: u32,
        block_hash: &Hash,
        pol_round: Option<u32>,
    ) -> Vec<u8> {
        codec::encode(&(chain_id, height, round, block_hash, pol_round))
    }

    /// Signs a proposal.
    pub fn sign(
        key: &Keypair,
        chain_id: &Name,
        height: u64,
        round: u32,
        block_hash: Hash,
        pol_round: Option<u32>,
    ) -> Proposal {
        let bytes = Self::signed_bytes(chain_id, height, round, &block_hash, pol_round);
        Proposal {
            height,
            round,
            block_hash,
            pol_round,
            proposer: key.public(),
            signature: key.sign(Domain::Proposal, &bytes),
        }
    }

    /// Checks the signature (strictly) for `chain_id`.
    pub fn verify(&self, chain_id: &Name) -> Result<(), KeyError> {
        let bytes = Self::signed_bytes(
            chain_id,
            self.height,
            self.round,
            &self.block_hash,
            self.pol_round,
        );
        self.proposer
            .verify(Domain::Proposal, &bytes, &self.signature)
    }
}

/// Anything a validator signs and sends to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A proposal.
    Proposal(Proposal),
    /// A prevote or precommit.
    Vote(Vote),
}

impl Message {
    /// The height the message is for.
    pub fn height(&self) -> u64 {
        match self {
            Message::Proposal(p) => p.height,
            Message::Vote(v) => v.height,
        }
    }

    /// The round the message is for.
    pub fn round(&self) -> u32 {
        match self {
            Message::Proposal(p) => p.round,
            Message::Vote(v) => v.round,
        }
    }

    /// Who signed it.
    pub fn signer(&self) -> PublicKey {
        match self {
            Message::Proposal(p) => p.proposer,
            Message::Vote(v) => v.validator,
        }
    }

    /// Checks the signature for `chain_id`.
    pub fn verify(&self, chain_id: &Name) -> Result<(), KeyError> {
        match self {
            Message::Proposal(p) => p.verify(chain_id),
            Message::Vote(v) => v.verify(chain_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Name {
        Name::new("test-chain").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn precommit_for_a_block_is_a_commit_signature() {
        let key = Keypair::from_seed_for_tests(3);
        let block = Hash([7; 32]);
        let vote = Vote::sign(&key, &chain(), VoteKind::Precommit, 9, 2, Some(block));
        let cert = CommitCertificate {
            height: 9,
            round: 2,
            block_hash: block,
            signatures: vote.commit_signature().into_iter().collect(),
        };
        assert_eq!(
            cert.verify_for(&chain(), 9, &block, &[key.public()]),
            Ok(())
        );
    }

    #[test]
    fn a_prevote_never_verifies_as_a_precommit_or_on_another_chain() {
        let key = Keypair::from_seed_for_tests(3);
        let block = Some(Hash([7; 32]));
        let prevote = Vote::sign(&key, &chain(), VoteKind::Prevote, 9, 2, block);
        assert!(prevote.verify(&chain()).is_ok());
        let mut as_precommit = prevote.clone();
        as_precommit.kind = VoteKind::Precommit;
        assert!(as_precommit.verify(&chain()).is_err());
        let other = Name::new("other-chain").unwrap_or_else(|e| panic!("{e}"));
        assert!(prevote.verify(&other).is_err());
        let mut nil = prevote;
        nil.block = None;
        assert!(nil.verify(&chain()).is_err());
    }

    #[test]
    fn a_proposal_binds_its_round_and_pol_round() {
        let key = Keypair::from_seed_for_tests(4);
        let p = Proposal::sign(&key, &chain(), 3, 1, Hash([1; 32]), Some(0));
        assert!(p.verify(&chain()).is_ok());
        let mut q = p.clone();
        q.pol_round = None;
        assert!(q.verify(&chain()).is_err());
        let mut q = p;
        q.round = 2;
        assert!(q.verify(&chain()).is_err());
    }
}
