//! The fixed inputs every file is computed from: test keys, names, secrets, salt, timestamps
//! and the genesis of genesis.json (which state.json builds on).

use tally_types::entry::RegistryEvent;
use tally_types::token::{Commitment, DedupToken, SubjectToken};
use tally_types::{
    AgencyGenesis, CivilDate, Genesis, Keypair, Name, Payload, TimestampMs, ValidatorGenesis,
};

pub(crate) const CHAIN_ID: &str = "tally-vectors";
/// 2027-01-15T08:00:00Z.
pub(crate) const GENESIS_TIME: TimestampMs = TimestampMs(1_800_000_000_000);
pub(crate) const DAY: u64 = TimestampMs::DAY_MS;

/// The wfp admin: author of every sample entry of entries.json, and of the admin entries of
/// state.json.
pub(crate) const AUTHOR_SEED: u64 = 1;
/// The unhcr admin: in genesis, and in state.json the author of entries refused as foreign.
pub(crate) const UNHCR_ADMIN_SEED: u64 = 2;
/// The key the author rotates to in the `rotate_key` entry (in state.json, too).
pub(crate) const NEW_KEY_SEED: u64 = 3;
/// A wfp staff key: the staff key of `grant_role` and `revoke_role` in entries.json; issuer,
/// redeemer, attester and registrar in state.json.
pub(crate) const STAFF_SEED: u64 = 4;
/// The vendor of `redeem_voucher` and `settle_vendor`.
pub(crate) const VENDOR_SEED: u64 = 5;
/// A wfp key state.json registers as an admin, which revokes its own admin role and is made
/// an admin again.
pub(crate) const SECOND_ADMIN_SEED: u64 = 6;
/// The four validators, in genesis order.
pub(crate) const VALIDATOR_SEEDS: [u64; 4] = [11, 12, 13, 14];
/// The validators that sign the commit certificates (a quorum of 3 of 4).
pub(crate) const SIGNER_SEEDS: [u64; 3] = [11, 12, 13];

pub(crate) const AGENCY_SECRET: &[u8] = b"vectors-agency-secret-0001";
pub(crate) const CONSORTIUM_SECRET: &[u8] = b"vectors-consortium-secret-0001";
pub(crate) const SALT: &[u8] = b"vectors-salt-0001";

/// Subject references used by the sample entries.
pub(crate) const SUBJECTS: [&str; 5] = ["case-001", "case-002", "case-003", "case-004", "case-005"];
/// Dedup references used by the sample entries.
pub(crate) const DEDUPS: [&str; 1] = ["case-001"];
/// Off-chain records committed to by the sample entries.
pub(crate) const RECORDS: [&str; 8] = [
    "evidence-001",
    "birth-001",
    "death-001",
    "marriage-001",
    "divorce-001",
    "title-001",
    "transfer-001",
    "amendment-001",
];

pub(crate) fn key(seed: u64) -> Keypair {
    Keypair::from_seed_for_tests(seed)
}

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

pub(crate) fn date(s: &str) -> CivilDate {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

pub(crate) fn subject(reference: &str) -> SubjectToken {
    SubjectToken::derive(AGENCY_SECRET, reference.as_bytes()).expect("the secret is long enough")
}

pub(crate) fn dedup(reference: &str) -> DedupToken {
    DedupToken::derive(CONSORTIUM_SECRET, reference.as_bytes()).expect("the secret is long enough")
}

pub(crate) fn commitment(record: &str) -> Commitment {
    Commitment::commit(SALT, record.as_bytes()).expect("the salt is long enough")
}

/// The programme both files open: 90 days from genesis.
pub(crate) fn create_programme(programme: &Name) -> Payload {
    Payload::CreateProgramme {
        programme: programme.clone(),
        unit: name("KES"),
        budget: 5_000_000,
        valid_from: GENESIS_TIME,
        valid_until: TimestampMs(GENESIS_TIME.0 + 90 * DAY),
        assistance: name("food-basket"),
        period: name("2027-01"),
    }
}

pub(crate) fn event(record: &str, day: &str) -> RegistryEvent {
    RegistryEvent {
        record: commitment(record),
        date: date(day),
        jurisdiction: name("district-07"),
    }
}

/// Two agencies (wfp, unhcr) with one admin each, and four validators, two per agency.
pub(crate) fn sample_genesis() -> Genesis {
    let genesis = Genesis {
        chain_id: name(CHAIN_ID),
        genesis_time: GENESIS_TIME,
        agencies: vec![
            AgencyGenesis {
                id: name("wfp"),
                admins: vec![key(AUTHOR_SEED).public()],
            },
            AgencyGenesis {
                id: name("unhcr"),
                admins: vec![key(UNHCR_ADMIN_SEED).public()],
            },
        ],
        validators: VALIDATOR_SEEDS
            .iter()
            .zip(["wfp", "wfp", "unhcr", "unhcr"])
            .map(|(seed, agency)| ValidatorGenesis {
                agency: name(agency),
                key: key(*seed).public(),
            })
            .collect(),
    };
    assert_eq!(genesis.validate(), Ok(()), "the sample genesis is valid");
    genesis
}
