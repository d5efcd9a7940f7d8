//! The validator set of a height: who may vote, how many make a quorum, who proposes.

use crate::ConsensusError;
use tally_types::block::quorum;
use tally_types::PublicKey;

/// A validator set with equal voting power. Sorted, so every node derives the same proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    keys: Vec<PublicKey>,
}

impl ValidatorSet {
    /// Refuses an empty set or a key named twice.
    pub fn new(keys: &[PublicKey]) -> Result<Self, ConsensusError> {
        let mut sorted = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        if sorted.is_empty() {
            return Err(ConsensusError::ValidatorSet("the set is empty".into()));
        }
        if sorted.len() != keys.len() {
            return Err(ConsensusError::ValidatorSet(
                "a validator is named twice".into(),
            ));
        }
        Ok(Self { keys: sorted })
    }

    /// The keys, sorted.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// n.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: an empty set is refused at construction.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` may vote.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.binary_search(key).is_ok()
    }

    /// f: the most Byzantine validators the set tolerates, floor((n-1)/3).
    pub fn faults_tolerated(&self) -> usize {
        (self.keys.len() - 1) / 3
    }

    /// 2f+1 (more precisely n - f): any two quorums share an honest validator.
    pub fn quorum(&self) -> usize {
        quorum(self.keys.len())
    }

    /// f+1: at least one of any f+1 validators is honest.
    pub fn one_honest(&self) -> usize {
        self.faults_tolerated() + 1
    }

    /// The proposer of `round` at `height`: round robin over the sorted set, shifted by height
    /// so that round 0 of successive heights rotates through every validator.
    pub fn proposer(&self, height: u64, round: u32) -> &PublicKey {
        let n = self.keys.len() as u64;
        let index = (height % n + u64::from(round) % n) % n;
        &self.keys[index as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_types::Keypair;

    fn keys(n: u64) -> Vec<PublicKey> {
        (0..n)
            .map(|i| Keypair::from_seed_for_tests(i).public())
            .collect()
    }

    #[test]
    fn thresholds_for_common_sizes() {
        for (n, f, q) in [(1, 0, 1), (4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)] {
            let set = ValidatorSet::new(&keys(n)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((set.faults_tolerated(), set.quorum()), (f, q), "n = {n}");
            // Two quorums overlap in more than f validators.
            assert!(2 * q > n as usize + f);
        }
    }

    #[test]
    fn every_validator_proposes_in_turn() {
        let set = ValidatorSet::new(&keys(4)).unwrap_or_else(|e| panic!("{e}"));
        let by_round: Vec<_> = (0..4).map(|r| *set.proposer(10, r)).collect();
        let by_height: Vec<_> = (10..14).map(|h| *set.proposer(h, 0)).collect();
        for list in [by_round, by_height] {
            let mut sorted = list.clone();
            sorted.sort();
            assert_eq!(sorted, set.keys());
        }
        assert_eq!(
            set.proposer(u64::MAX, u32::MAX),
            set.proposer(u64::MAX, u32::MAX)
        );
    }

    #[test]
    fn refuses_empty_and_repeated_sets() {
        assert!(ValidatorSet::new(&[]).is_err());
        let k = keys(1)[0];
        assert!(ValidatorSet::new(&[k, k]).is_err());
    }
}
