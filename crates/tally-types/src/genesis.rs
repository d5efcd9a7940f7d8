//! The genesis document: the chain id, the founding agencies with their admin keys, and the
//! validator set. Every node and every auditor starts from the same file; its hash is the parent
//! of block 1, so a chain cannot be checked against the wrong genesis by accident.

use crate::codec;
use crate::hash::{Domain, Hash};
use crate::keys::PublicKey;
use crate::name::Name;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Most agencies a genesis may name.
pub const AGENCIES_MAX: usize = 64;
/// Most validators a genesis may name.
pub const VALIDATORS_MAX: usize = 64;
/// Most admin keys per agency in genesis.
pub const ADMINS_PER_AGENCY_MAX: usize = 16;

/// A founding agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgencyGenesis {
    /// The agency's identifier (e.g. `wfp`, `unhcr`, `ministry-interior`).
    pub id: Name,
    /// Keys that hold the admin role from the start.
    pub admins: Vec<PublicKey>,
}

/// A validator in the initial set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorGenesis {
    /// The agency that runs it.
    pub agency: Name,
    /// Its consensus signing key (also its network identity).
    pub key: PublicKey,
}

/// The genesis document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The chain id every entry must carry.
    pub chain_id: Name,
    /// The chain's start; block timestamps are never earlier.
    pub genesis_time: TimestampMs,
    /// The founding agencies.
    pub agencies: Vec<AgencyGenesis>,
    /// The initial validator set.
    pub validators: Vec<ValidatorGenesis>,
}

/// Why a genesis document is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// Structural problem, described.
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

impl Genesis {
    /// One agency, `wfp`, with one admin key and one validator, at a fixed time: the smallest
    /// chain, for tests and benchmarks; never for real use.
    pub fn one_agency_for_tests(chain_id: &str, admin: PublicKey, validator: PublicKey) -> Self {
        let wfp = Name::new("wfp").expect("a valid name");
        Genesis {
            chain_id: Name::new(chain_id).expect("a valid chain id"),
            genesis_time: TimestampMs(1_800_000_000_000),
            agencies: vec![AgencyGenesis {
                id: wfp.clone(),
                admins: vec![admin],
            }],
            validators: vec![ValidatorGenesis {
                agency: wfp,
                key: validator,
            }],
        }
    }

    /// The hash that block 1 links to.
    pub fn hash(&self) -> Hash {
        Domain::Genesis.hash(&[&codec::encode(self)])
    }

    /// The validator keys, in genesis order.
    pub fn validator_keys(&self) -> Vec<PublicKey> {
        self.validators.iter().map(|v| v.key).collect()
    }

    /// Checks the document is internally consistent.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let bad = |m: String| Err(GenesisError::Invalid(m));
        if self.agencies.is_empty() || self.agencies.len() > AGENCIES_MAX {
            return bad(format!(
                "needs 1 to {AGENCIES_MAX} agencies, has {}",
                self.agencies.len()
            ));
        }
        if self.validators.is_empty() || self.validators.len() > VALIDATORS_MAX {
            return bad(format!(
                "needs 1 to {VALIDATORS_MAX} validators, has {}",
                self.validators.len()
            ));
        }
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for a in &self.agencies {
            if !ids.insert(&a.id) {
                return bad(format!("agency {} appears twice", a.id));
            }
            if a.admins.is_empty() || a.admins.len() > ADMINS_PER_AGENCY_MAX {
                return bad(format!(
                    "agency {} needs 1 to {ADMINS_PER_AGENCY_MAX} admin keys",
                    a.id
                ));
            }
            for k in &a.admins {
                if !keys.insert(*k) {
                    return bad(format!("admin key {k} appears twice"));
                }
                if k.check_signing_key().is_err() {
                    return bad(format!(
                        "admin key {k} of agency {} cannot sign: not a point of the ed25519 prime-order group",
                        a.id
                    ));
                }
            }
        }
        let mut vkeys = BTreeSet::new();
        for v in &self.validators {
            if !ids.contains(&v.agency) {
                return bad(format!(
                    "validator {} names unknown agency {}",
                    v.key, v.agency
                ));
            }
            if !vkeys.insert(v.key) {
                return bad(format!("validator key {} appears twice", v.key));
            }
            if v.key.check_signing_key().is_err() {
                return bad(format!(
                    "validator key {} cannot sign: not a point of the ed25519 prime-order group",
                    v.key
                ));
            }
            if keys.contains(&v.key) {
                return bad(format!(
                    "validator key {} is also an admin key; use separate keys",
                    v.key
                ));
            }
        }
        Ok(())
    }
}
