//! The messages received for one height, by round: the paper's "message log".
//!
//! The first message per (round, kind, validator) is always kept. A second, different one is
//! equivocation and is returned as evidence. A conflicting *vote* is also kept, and counted for
//! its value, when that value is nil or a block proposed at this height: the paper's log holds
//! every message, and counting an equivocator once per value it signed cannot break safety (two
//! quorums still share an honest validator), while ignoring it can leave honest validators
//! unable to see the proof of lock another honest validator holds. Anything else is dropped, so
//! each slot holds at most one vote per proposed value plus nil.

use crate::message::{Message, Proposal, Vote, VoteKind};
use std::collections::BTreeMap;
use tally_types::{Hash, PublicKey};

/// What inserting a message did.
#[derive(Debug)]
pub(crate) enum Insert {
    /// First of its kind: now counted.
    New,
    /// Byte-identical to one already held.
    Duplicate,
    /// The same signer already signed something different here: evidence against it. The
    /// first message stays; the second is kept only as described in the module docs.
    Conflict(Message),
}

#[derive(Debug, Default)]
pub(crate) struct RoundLog {
    pub(crate) proposal: Option<Proposal>,
    prevotes: BTreeMap<PublicKey, Vec<Vote>>,
    precommits: BTreeMap<PublicKey, Vec<Vote>>,
}

impl RoundLog {
    fn votes(&self, kind: VoteKind) -> &BTreeMap<PublicKey, Vec<Vote>> {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    fn votes_mut(&mut self, kind: VoteKind) -> &mut BTreeMap<PublicKey, Vec<Vote>> {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }
}

/// Messages of one height.
#[derive(Debug, Default)]
pub(crate) struct HeightLog {
    rounds: BTreeMap<u32, RoundLog>,
}

impl HeightLog {
    /// Whether this exact message is already held (checked before paying for a signature check).
    pub(crate) fn holds(&self, m: &Message) -> bool {
        let Some(r) = self.rounds.get(&m.round()) else {
            return false;
        };
        match m {
            Message::Proposal(p) => r.proposal.as_ref() == Some(p),
            Message::Vote(v) => r
                .votes(v.kind)
                .get(&v.validator)
                .is_some_and(|vs| vs.contains(v)),
        }
    }

    pub(crate) fn insert(&mut self, m: Message) -> Insert {
        let proposed = |log: &HeightLog, b: &Option<Hash>| {
            b.is_none_or(|b| log.proposals().any(|p| p.block_hash == b))
        };
        let admissible = match &m {
            Message::Vote(v) => proposed(self, &v.block),
            Message::Proposal(_) => false,
        };
        let r = self.rounds.entry(m.round()).or_default();
        match m {
            Message::Proposal(p) => match &r.proposal {
                None => {
                    r.proposal = Some(p);
                    Insert::New
                }
                Some(old) if *old == p => Insert::Duplicate,
                Some(old) => Insert::Conflict(Message::Proposal(old.clone())),
            },
            Message::Vote(v) => {
                let votes = r.votes_mut(v.kind).entry(v.validator).or_default();
                match votes.first() {
                    None => {
                        votes.push(v);
                        Insert::New
                    }
                    Some(_) if votes.contains(&v) => Insert::Duplicate,
                    Some(first) => {
                        let first = Message::Vote(first.clone());
                        if admissible && !votes.iter().any(|o| o.block == v.block) {
                            votes.push(v);
                        }
                        Insert::Conflict(first)
                    }
                }
            }
        }
    }

    pub(crate) fn proposal(&self, round: u32) -> Option<&Proposal> {
        self.rounds.get(&round).and_then(|r| r.proposal.as_ref())
    }

    /// Every proposal held, by round.
    pub(crate) fn proposals(&self) -> impl Iterator<Item = &Proposal> {
        self.rounds.values().filter_map(|r| r.proposal.as_ref())
    }

    /// Votes of `kind` in `round` for exactly `block` (`None` counts nil votes).
    pub(crate) fn count_for(&self, kind: VoteKind, round: u32, block: Option<&Hash>) -> usize {
        self.rounds.get(&round).map_or(0, |r| {
            r.votes(kind)
                .values()
                .filter(|vs| vs.iter().any(|v| v.block.as_ref() == block))
                .count()
        })
    }

    /// Votes of `kind` in `round` for anything, nil included.
    pub(crate) fn count_any(&self, kind: VoteKind, round: u32) -> usize {
        self.rounds.get(&round).map_or(0, |r| r.votes(kind).len())
    }

    /// The precommits for `block` in `round`, sorted by validator.
    pub(crate) fn precommits_for(&self, round: u32, block: &Hash) -> Vec<&Vote> {
        self.votes_for(VoteKind::Precommit, round, block)
    }

    fn votes_for(&self, kind: VoteKind, round: u32, block: &Hash) -> Vec<&Vote> {
        self.rounds.get(&round).map_or_else(Vec::new, |r| {
            r.votes(kind)
                .values()
                .filter_map(|vs| vs.iter().find(|v| v.block.as_ref() == Some(block)))
                .collect()
        })
    }

    /// The prevotes for `block` in `round` (the proof of lock a re-proposal relies on).
    pub(crate) fn prevotes_for(&self, round: u32, block: &Hash) -> Vec<&Vote> {
        self.votes_for(VoteKind::Prevote, round, block)
    }

    /// The messages `signer` signed in `rounds`, oldest round first.
    pub(crate) fn own(&self, signer: &PublicKey, rounds: std::ops::Range<u32>) -> Vec<Message> {
        let mut out = Vec::new();
        for (_, r) in self.rounds.range(rounds) {
            out.extend(
                r.proposal
                    .iter()
                    .filter(|p| p.proposer == *signer)
                    .cloned()
                    .map(Message::Proposal),
            );
            for votes in [&r.prevotes, &r.precommits] {
                out.extend(
                    votes
                        .get(signer)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .map(Message::Vote),
                );
            }
        }
        out
    }

    /// How many messages are held.
    pub(crate) fn len(&self) -> usize {
        self.rounds
            .values()
            .map(|r| {
                usize::from(r.proposal.is_some())
                    + r.prevotes.values().map(Vec::len).sum::<usize>()
                    + r.precommits.values().map(Vec::len).sum::<usize>()
            })
            .sum()
    }

    /// Every message held, for replay into the next height.
    pub(crate) fn into_messages(self) -> Vec<Message> {
        let mut out = Vec::new();
        for (_, r) in self.rounds {
            out.extend(r.proposal.map(Message::Proposal));
            out.extend(r.prevotes.into_values().flatten().map(Message::Vote));
            out.extend(r.precommits.into_values().flatten().map(Message::Vote));
        }
        out
    }
}
