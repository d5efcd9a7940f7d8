//! The file of tally's state commitment (`docs/vectors/state.json`).
//!
//! Starts from the genesis of `docs/vectors/genesis.json` (the same fixtures as
//! [`crate::formats`]), builds the genesis state as a node does ([`State::genesis`]), then
//! builds seven blocks of real entries with [`build_block`] (every payload kind accepted at
//! least once, and rejections by rules), checks each with [`check_block`]
//! and a [`ChainVerifier`], and records every state record each block changed with its tree
//! path, value hash and leaf hash, and the header's state root. A reference implementation of
//! the tree rules below recomputes every root from the records alone.

use crate::fixtures::{
    commitment, create_programme, dedup, event, key, name, sample_genesis, subject, AUTHOR_SEED,
    CHAIN_ID, DAY, DEDUPS, GENESIS_TIME, NEW_KEY_SEED, RECORDS, SECOND_ADMIN_SEED, SIGNER_SEEDS,
    STAFF_SEED, SUBJECTS, UNHCR_ADMIN_SEED, VALIDATOR_SEEDS, VENDOR_SEED,
};
use crate::formats::{payload_index, payload_variant_count};
use crate::json::{hx, obj, publish_or_check, Node};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tally_state::records::{
    AgencyRecord, Attestation, KeyRecord, Programme, RegistryRecord, SubjectRecord, Title,
    VendorAccount, Voucher,
};
use tally_state::{
    build_block, check_block, leaf_changes, tree, ChainVerifier, NoneKnown, State, StateDiff, Tip,
};
use tally_types::codec::{decode, encode};
use tally_types::entry::key_rotation_message;
use tally_types::token::DedupToken;
use tally_types::{
    CommitCertificate, Domain, EntryBody, EntryId, EntryOutcome, Genesis, Hash, Keypair, Name,
    Payload, PublicKey, ReasonCode, Role, SignedEntry, TimestampMs, VerifiedEntry,
};

// ---------------------------------------------------------------------------------------------
// The entries of the blocks.

/// How many blocks the file holds.
const BLOCKS: usize = 7;

/// The ids of the entries of earlier blocks, by `(author seed, sequence)`.
type Ids = BTreeMap<(u64, u64), EntryId>;

/// The blocks' entries: `(author seed, sequence, payload)`, filled with earlier entries' ids.
/// Blocks 1 to 3 set the chain up; blocks 4 to 7 give every other payload kind, accepted at
/// least once, and rejections by rules of several kinds (each changes only its author's
/// sequence).
fn block_payloads(block: usize, ids: &Ids) -> Vec<(u64, u64, Payload)> {
    let programme = name("food-2027-01");
    let vendor = key(VENDOR_SEED).public();
    let staff = key(STAFF_SEED).public();
    let id = |seed: u64, sequence: u64| ids[&(seed, sequence)];
    let grant = |seed, seq, k, role| (seed, seq, Payload::GrantRole { key: k, role });
    let issue = |seq, reference: &str, amount, expires_at, dedup: Option<DedupToken>| {
        (
            STAFF_SEED,
            seq,
            Payload::IssueVoucher {
                programme: programme.clone(),
                subject: subject(reference),
                amount,
                expires_at,
                dedup,
            },
        )
    };
    let redeem = |seq, voucher, amount, reference: &str| {
        (
            STAFF_SEED,
            seq,
            Payload::RedeemVoucher {
                voucher,
                amount,
                vendor,
                reference: name(reference),
            },
        )
    };
    let staff_entry = |seq, payload| (STAFF_SEED, seq, payload);
    // The voucher and the attestation of block 2.
    let voucher = || id(STAFF_SEED, 0);
    let attestation = || id(STAFF_SEED, 1);
    match block {
        1 => vec![
            grant(AUTHOR_SEED, 0, staff, Role::Issuer),
            grant(AUTHOR_SEED, 1, staff, Role::Redeemer),
            grant(AUTHOR_SEED, 2, staff, Role::Attester),
            grant(AUTHOR_SEED, 3, staff, Role::Registrar),
            grant(AUTHOR_SEED, 4, vendor, Role::Vendor),
            (AUTHOR_SEED, 5, create_programme(&programme)),
        ],
        2 => vec![
            issue(
                0,
                SUBJECTS[0],
                2_500,
                TimestampMs(GENESIS_TIME.0 + 60 * DAY),
                Some(dedup(DEDUPS[0])),
            ),
            staff_entry(
                1,
                Payload::Attest {
                    subject: subject(SUBJECTS[1]),
                    claim: name("refugee-status"),
                    evidence: commitment(RECORDS[0]),
                    expires_at: TimestampMs(GENESIS_TIME.0 + 365 * DAY),
                },
            ),
            staff_entry(
                2,
                Payload::RegisterBirth {
                    subject: subject(SUBJECTS[2]),
                    event: event(RECORDS[1], "2027-01-10"),
                },
            ),
        ],
        3 => {
            let settle = |amount| Payload::SettleVendor {
                programme: programme.clone(),
                vendor,
                amount,
                reference: name("pay-0001"),
            };
            vec![
                redeem(3, voucher(), 1_000, "till-0001"),
                (AUTHOR_SEED, 6, settle(1_000)),
                // Rejected (nothing more is owed): it changes only its author's sequence.
                (AUTHOR_SEED, 7, settle(1)),
            ]
        }
        // Keys and roles; vouchers issued, redeemed, revoked in the block that issued them.
        4 => {
            let second_admin = key(SECOND_ADMIN_SEED).public();
            let revoke = |seed, seq, k, role| (seed, seq, Payload::RevokeRole { key: k, role });
            let expires = TimestampMs(GENESIS_TIME.0 + 60 * DAY);
            // Lapses at block 5's timestamp.
            let lapsing = issue(5, SUBJECTS[4], 400, block_time(5), None);
            let lapsing_id = id_of(&lapsing);
            let mistaken = issue(8, SUBJECTS[1], 300, expires, Some(dedup(SUBJECTS[1])));
            let mistaken_id = id_of(&mistaken);
            vec![
                // A role the key holds: accepted, nothing changes but sequence numbers.
                grant(AUTHOR_SEED, 8, staff, Role::Issuer),
                // A key not yet registered, as an admin: the agency's admin count grows.
                grant(AUTHOR_SEED, 9, second_admin, Role::Admin),
                // A validator key: rejected key_in_use.
                grant(
                    AUTHOR_SEED,
                    10,
                    key(VALIDATOR_SEEDS[0]).public(),
                    Role::Vendor,
                ),
                // A key of another agency: rejected foreign_key.
                grant(UNHCR_ADMIN_SEED, 0, staff, Role::Issuer),
                // The new admin, registered above, revokes its own admin role.
                revoke(SECOND_ADMIN_SEED, 0, second_admin, Role::Admin),
                // The agency's only admin key: rejected last_admin.
                revoke(AUTHOR_SEED, 11, key(AUTHOR_SEED).public(), Role::Admin),
                // A role the key does not hold: rejected wrong_status.
                revoke(AUTHOR_SEED, 12, vendor, Role::Redeemer),
                issue(4, SUBJECTS[3], 700, expires, Some(dedup(SUBJECTS[3]))),
                lapsing,
                redeem(6, lapsing_id, 150, "till-0002"),
                // Before its expiry: rejected not_expired.
                staff_entry(
                    7,
                    Payload::ExpireVoucher {
                        voucher: lapsing_id,
                    },
                ),
                // A vendor key holds no issuer role: rejected missing_role.
                (
                    VENDOR_SEED,
                    0,
                    Payload::IssueVoucher {
                        programme: programme.clone(),
                        subject: subject(SUBJECTS[0]),
                        amount: 1,
                        expires_at: expires,
                        dedup: None,
                    },
                ),
                // Issued with a dedup token and revoked as a clerical error in the same block:
                // its de-duplication claim is written, then deleted.
                mistaken,
                staff_entry(
                    9,
                    Payload::RevokeVoucher {
                        voucher: mistaken_id,
                        reason: ReasonCode::ClericalError,
                    },
                ),
            ]
        }
        // Vouchers closed; an attestation suspended, reinstated and revoked; a key rotation.
        5 => {
            let new_key = key(NEW_KEY_SEED);
            let chain = name(CHAIN_ID);
            vec![
                staff_entry(
                    10,
                    Payload::ExpireVoucher {
                        voucher: id(STAFF_SEED, 5),
                    },
                ),
                // Closed as expired: rejected expired.
                redeem(11, id(STAFF_SEED, 5), 1, "till-0003"),
                // Never redeemed, with a dedup token: its committed claim is deleted.
                staff_entry(
                    12,
                    Payload::RevokeVoucher {
                        voucher: id(STAFF_SEED, 4),
                        reason: ReasonCode::ClericalError,
                    },
                ),
                // Partly redeemed: revoked, its claim kept.
                staff_entry(
                    13,
                    Payload::RevokeVoucher {
                        voucher: voucher(),
                        reason: ReasonCode::ClericalError,
                    },
                ),
                staff_entry(
                    14,
                    Payload::SuspendAttestation {
                        attestation: attestation(),
                        reason: ReasonCode::UnderReview,
                    },
                ),
                // Already suspended: rejected wrong_status.
                staff_entry(
                    15,
                    Payload::SuspendAttestation {
                        attestation: attestation(),
                        reason: ReasonCode::Fraud,
                    },
                ),
                staff_entry(
                    16,
                    Payload::ReinstateAttestation {
                        attestation: attestation(),
                    },
                ),
                staff_entry(
                    17,
                    Payload::RevokeAttestation {
                        attestation: attestation(),
                        reason: ReasonCode::Fraud,
                    },
                ),
                // Revoked: rejected revoked.
                staff_entry(
                    18,
                    Payload::ReinstateAttestation {
                        attestation: attestation(),
                    },
                ),
                // The wfp admin's key is replaced by the new key.
                (
                    AUTHOR_SEED,
                    13,
                    Payload::RotateKey {
                        new_key: new_key.public(),
                        new_key_proof: new_key.sign(
                            Domain::KeyRotation,
                            &key_rotation_message(&chain, &key(AUTHOR_SEED).public()),
                        ),
                    },
                ),
                // To a registered key: rejected key_in_use.
                staff_entry(
                    19,
                    Payload::RotateKey {
                        new_key: vendor,
                        new_key_proof: key(VENDOR_SEED)
                            .sign(Domain::KeyRotation, &key_rotation_message(&chain, &staff)),
                    },
                ),
            ]
        }
        // The civil registry: a marriage ended by a death, a title registered, transferred and
        // amended.
        6 => {
            let parcel = name("parcel-0001");
            let [_, s2, s3, s4, s5] = SUBJECTS.map(subject);
            let marriage = staff_entry(
                20,
                Payload::RegisterMarriage {
                    spouse_a: s3,
                    spouse_b: s5,
                    event: event(RECORDS[3], "2027-01-12"),
                },
            );
            let marriage_id = id_of(&marriage);
            let title = staff_entry(
                22,
                Payload::RegisterTitle {
                    parcel: parcel.clone(),
                    holder: s3,
                    event: event(RECORDS[5], "2027-01-11"),
                },
            );
            let title_id = id_of(&title);
            vec![
                // The rotated-away key: rejected retired_key.
                grant(NEW_KEY_SEED, 0, key(AUTHOR_SEED).public(), Role::Vendor),
                // A registered key with no role, as an admin: the admin count grows again.
                grant(
                    NEW_KEY_SEED,
                    1,
                    key(SECOND_ADMIN_SEED).public(),
                    Role::Admin,
                ),
                marriage,
                // A spouse married: rejected already_married.
                staff_entry(
                    21,
                    Payload::RegisterMarriage {
                        spouse_a: s2,
                        spouse_b: s5,
                        event: event("marriage-002", "2027-01-13"),
                    },
                ),
                title,
                // Not the holder: rejected not_holder.
                staff_entry(
                    23,
                    Payload::TransferTitle {
                        parcel: parcel.clone(),
                        from: s5,
                        to: s2,
                        event: event(RECORDS[6], "2027-01-13"),
                    },
                ),
                staff_entry(
                    24,
                    Payload::TransferTitle {
                        parcel: parcel.clone(),
                        from: s3,
                        to: s5,
                        event: event(RECORDS[6], "2027-01-13"),
                    },
                ),
                // Ends the marriage above for both spouses.
                staff_entry(
                    25,
                    Payload::RegisterDeath {
                        subject: s5,
                        event: event(RECORDS[2], "2027-01-14"),
                    },
                ),
                // Dissolved by the death: rejected not_married.
                staff_entry(
                    26,
                    Payload::RegisterDivorce {
                        marriage: marriage_id,
                        event: event(RECORDS[4], "2027-01-15"),
                    },
                ),
                // Dead, with no birth record: rejected subject_dead.
                staff_entry(
                    27,
                    Payload::RegisterBirth {
                        subject: s5,
                        event: event("birth-002", "2027-01-01"),
                    },
                ),
                // After the block's date (2027-01-15): rejected future_date.
                staff_entry(
                    28,
                    Payload::RegisterBirth {
                        subject: s4,
                        event: event("birth-003", "2027-01-16"),
                    },
                ),
                staff_entry(
                    29,
                    Payload::AmendRecord {
                        original: title_id,
                        reason: ReasonCode::ClericalError,
                        event: event(RECORDS[7], "2027-01-15"),
                    },
                ),
            ]
        }
        // A second marriage and its divorce; an amendment amended; a dead holder's transfer.
        7 => {
            let parcel = name("parcel-0001");
            let [s1, _, s3, s4, s5] = SUBJECTS.map(subject);
            let marriage = staff_entry(
                30,
                Payload::RegisterMarriage {
                    spouse_a: s3,
                    spouse_b: s1,
                    event: event("marriage-002", "2027-01-15"),
                },
            );
            let marriage_id = id_of(&marriage);
            vec![
                marriage,
                staff_entry(
                    31,
                    Payload::RegisterDivorce {
                        marriage: marriage_id,
                        event: event(RECORDS[4], "2027-01-15"),
                    },
                ),
                staff_entry(
                    32,
                    Payload::AmendRecord {
                        original: id(STAFF_SEED, 29),
                        reason: ReasonCode::DocumentReplaced,
                        event: event("amendment-002", "2027-01-15"),
                    },
                ),
                // A dead holder's title may be transferred.
                staff_entry(
                    33,
                    Payload::TransferTitle {
                        parcel,
                        from: s5,
                        to: s4,
                        event: event("transfer-002", "2027-01-15"),
                    },
                ),
                // A role the key holds, of a key no other entry of the block writes: its
                // record is written with the value it had.
                grant(NEW_KEY_SEED, 2, vendor, Role::Vendor),
                // Another agency's programme: rejected foreign_agency.
                (
                    UNHCR_ADMIN_SEED,
                    1,
                    Payload::SettleVendor {
                        programme,
                        vendor,
                        amount: 1,
                        reference: name("pay-0002"),
                    },
                ),
            ]
        }
        _ => Vec::new(),
    }
}

/// The seed of an author of the blocks.
fn seed_of(author: &PublicKey) -> u64 {
    [
        AUTHOR_SEED,
        UNHCR_ADMIN_SEED,
        NEW_KEY_SEED,
        STAFF_SEED,
        VENDOR_SEED,
        SECOND_ADMIN_SEED,
    ]
    .into_iter()
    .find(|s| key(*s).public() == *author)
    .expect("a known author")
}

/// The signed entry of `(author seed, sequence, payload)`.
fn signed((seed, sequence, payload): (u64, u64, Payload)) -> SignedEntry {
    let body = EntryBody {
        chain_id: name(CHAIN_ID),
        author: key(seed).public(),
        sequence,
        payload,
    };
    body.sign(&key(seed))
}

/// The id of the entry `(author seed, sequence, payload)`, for a later entry of its block.
fn id_of(entry: &(u64, u64, Payload)) -> EntryId {
    signed(entry.clone()).id()
}

/// Block `height`'s timestamp: a minute per block after genesis.
fn block_time(height: usize) -> TimestampMs {
    TimestampMs(GENESIS_TIME.0 + height as u64 * 60_000)
}

// ---------------------------------------------------------------------------------------------
// Records and the tree.

/// Whether `key` after its table byte is the parts of `layout` in order: a name ending in NUL
/// (0) or that many fixed bytes.
fn laid_out(mut rest: &[u8], layout: &[usize]) -> bool {
    for part in layout {
        let len = match part {
            0 => match rest.iter().position(|b| *b == 0) {
                Some(nul)
                    if std::str::from_utf8(&rest[..nul]).is_ok_and(|s| Name::new(s).is_ok()) =>
                {
                    nul + 1
                }
                _ => return false,
            },
            n => *n,
        };
        if rest.len() < len {
            return false;
        }
        rest = &rest[len..];
    }
    rest.is_empty()
}

/// The table a key's first byte names, checking the key's layout and that the value decodes
/// canonically to the table's record type.
fn table(key: &[u8], value: Option<&[u8]>) -> &'static str {
    fn is<T: serde::de::DeserializeOwned + serde::Serialize>(v: Option<&[u8]>) {
        if let Some(v) = v {
            decode::<T>(v).unwrap_or_else(|e| panic!("{}: {e}", std::any::type_name::<T>()));
        }
    }
    let ((), table, layout): ((), &str, &[usize]) = match key[0] {
        0x01 => (is::<KeyRecord>(value), "key", &[32]),
        0x02 => (is::<AgencyRecord>(value), "agency", &[0]),
        0x03 => (is::<Programme>(value), "programme", &[0]),
        0x04 => (is::<Voucher>(value), "voucher", &[32]),
        0x05 => (is::<EntryId>(value), "redemption_ref", &[32, 0]),
        0x06 => (is::<EntryId>(value), "dedup", &[0, 0, 32]),
        0x07 => (is::<VendorAccount>(value), "vendor_account", &[0, 32]),
        0x08 => (is::<EntryId>(value), "settlement_ref", &[0, 32, 0]),
        0x09 => (is::<Attestation>(value), "attestation", &[32]),
        0x0a => (is::<RegistryRecord>(value), "registry_record", &[32]),
        0x0b => (is::<SubjectRecord>(value), "subject", &[32]),
        0x0c => (is::<Title>(value), "title", &[0]),
        0x0d => (is::<Vec<PublicKey>>(value), "validators", &[]),
        t => panic!("no vector yet for table {t:#04x}: add it here"),
    };
    assert!(
        laid_out(&key[1..], layout),
        "the layout of {table} key {key:02x?}"
    );
    table
}

/// A record as published: key, value, path, value hash, leaf hash; a deletion has a null value
/// and no value hash or leaf.
fn record(key: &[u8], value: Option<&[u8]>) -> Node {
    let path = Domain::StateKey.hash(&[key]);
    let Some(v) = value else {
        return obj! {
            "table" => table(key, None),
            "key" => hx(key),
            "value" => None::<Node>,
            "path" => path,
        };
    };
    let value_hash = Domain::StateValue.hash(&[v]);
    let leaf = Domain::StateLeaf.hash(&[path.as_bytes(), value_hash.as_bytes()]);
    assert_eq!(tree::leaf(key, v), (path, leaf));
    obj! {
        "table" => table(key, value),
        "key" => hx(key),
        "value" => hx(v),
        "path" => path,
        "value_hash" => value_hash,
        "leaf" => leaf,
    }
}

fn records_of(diff: &StateDiff) -> Vec<Node> {
    diff.iter().map(|(k, v)| record(k, v.as_deref())).collect()
}

/// Bit `depth` of a path, most significant bit of byte 0 first.
fn bit(path: &Hash, depth: usize) -> bool {
    path.0[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// The tree rules, written again from the specification: the root over `(path, leaf)` sorted
/// by path, at `depth`; `shape` names each leaf by its index in `names` order.
fn reference_root(
    leaves: &[(Hash, Hash)],
    depth: usize,
    names: &[Hash],
    branches: &mut Vec<Node>,
) -> (Hash, String) {
    match leaves {
        [] => (Hash::ZERO, "empty".into()),
        [(path, leaf)] => {
            let i = names.iter().position(|p| p == path).unwrap_or(usize::MAX);
            (*leaf, format!("leaf{i}"))
        }
        _ => {
            let at = leaves.partition_point(|(p, _)| !bit(p, depth));
            let (left, l) = reference_root(&leaves[..at], depth + 1, names, branches);
            let (right, r) = reference_root(&leaves[at..], depth + 1, names, branches);
            let hash = Domain::StateNode.hash(&[left.as_bytes(), right.as_bytes()]);
            branches
                .push(obj! { "depth" => depth, "left" => left, "right" => right, "hash" => hash });
            (hash, format!("branch({l}, {r})"))
        }
    }
}

/// The root of a state's records, recomputed by [`reference_root`] and by
/// [`State::from_pairs`], both checked against `root`.
fn check_root(state: &State, root: Hash) {
    let pairs = state.pairs().expect("in memory");
    let mut leaves: Vec<(Hash, Hash)> = pairs.iter().map(|(k, v)| tree::leaf(k, v)).collect();
    leaves.sort();
    assert_eq!(reference_root(&leaves, 0, &[], &mut Vec::new()).0, root);
    assert_eq!(State::from_pairs(pairs).root(), root);
}

// ---------------------------------------------------------------------------------------------
// The file.

fn outcome(o: &EntryOutcome) -> String {
    match o {
        EntryOutcome::Accepted => "accepted".into(),
        EntryOutcome::Rejected(code) => format!("rejected: {}", code.as_str()),
    }
}

fn blocks(genesis: &Genesis) -> Vec<Node> {
    let mut state = State::genesis(genesis);
    let mut tip = Tip::genesis(genesis);
    let mut verifier = ChainVerifier::new(genesis);
    let mut ids = Ids::new();
    let mut accepted = BTreeSet::new();
    let mut out = Vec::new();
    for height in 1..=BLOCKS {
        let entries: Vec<SignedEntry> = block_payloads(height, &ids)
            .into_iter()
            .map(signed)
            .collect();
        for e in &entries {
            let seed = seed_of(&e.body.author);
            assert!(ids.insert((seed, e.body.sequence), e.id()).is_none());
        }
        let verified = entries
            .iter()
            .map(|e| VerifiedEntry::verify(e.clone()).expect("signed"));
        let timestamp = block_time(height);
        let proposer = key(VALIDATOR_SEEDS[0]).public();
        let built = build_block(&state, &tip, timestamp, proposer, verified).expect("in memory");
        assert!(built.left_out.is_empty(), "every entry is ordered");
        let block = built.block;
        let header = &block.header;
        // The block checks as every other node checks it, and as an auditor replays it.
        let (exec, staged) = check_block(&state, &tip, &block, &NoneKnown).expect("a sound block");
        assert_eq!(exec.diff, built.execution.diff);
        assert_eq!(staged.root(), header.state_root);
        assert_eq!(staged.leaves(), leaf_changes(&exec.diff).as_slice());
        let signers: Vec<Keypair> = SIGNER_SEEDS.iter().map(|s| key(*s)).collect();
        let certificate = CommitCertificate::signed_by(header, 1, &signers);
        verifier
            .verify_next(&block, &certificate)
            .expect("the chain verifies");
        state
            .apply_staged(&exec.diff, staged)
            .expect("staged on this state");
        assert_eq!(state.root(), header.state_root);
        assert_eq!(verifier.state().root(), header.state_root);
        check_root(&state, header.state_root);
        accepted.extend(
            block
                .entries
                .iter()
                .zip(&exec.outcomes)
                .filter(|(_, (_, o))| *o == EntryOutcome::Accepted)
                .map(|(e, _)| payload_index(&e.body.payload)),
        );
        let entry_nodes: Vec<Node> = block
            .entries
            .iter()
            .zip(&exec.outcomes)
            .map(|(e, (id, o))| {
                obj! {
                    "author_seed" => seed_of(&e.body.author),
                    "sequence" => e.body.sequence,
                    "kind" => e.body.payload.kind(),
                    "entry_id" => *id,
                    "outcome" => outcome(o),
                    "signed_entry_bytes" => hx(encode(e)),
                }
            })
            .collect();
        out.push(obj! {
            "height" => header.height,
            "timestamp" => header.timestamp.0,
            "proposer_seed" => VALIDATOR_SEEDS[0],
            "entries" => entry_nodes,
            "changes" => records_of(&exec.diff),
            "state_root" => header.state_root,
            "block_hash" => block.hash(),
        });
        tip = Tip {
            chain_id: tip.chain_id.clone(),
            height: header.height,
            hash: block.hash(),
            timestamp: header.timestamp,
        };
    }
    assert_eq!(
        accepted.len(),
        payload_variant_count() as usize,
        "every payload kind is accepted in some block: add one to block_payloads()"
    );
    out
}

/// Trees over 1, 2 and 3 hand-made records, with their branches and shape.
fn tree_examples() -> Vec<Node> {
    let all: [(&[u8], &[u8]); 3] = [
        (b"\x01alpha", b"one"),
        (b"\x02beta", b"two"),
        (b"\x03gamma", b"three"),
    ];
    (1..=3)
        .map(|n| {
            let records = &all[..n];
            let state = State::from_pairs(records.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
            let names: Vec<Hash> = records.iter().map(|(k, v)| tree::leaf(k, v).0).collect();
            let mut leaves: Vec<(Hash, Hash)> = records.iter().map(|(k, v)| tree::leaf(k, v)).collect();
            leaves.sort();
            let mut branches = Vec::new();
            let (root, shape) = reference_root(&leaves, 0, &names, &mut branches);
            assert_eq!(root, state.root(), "the tree rules as published");
            let records: Vec<Node> = records
                .iter()
                .map(|(k, v)| {
                    let path = Domain::StateKey.hash(&[k]);
                    let value_hash = Domain::StateValue.hash(&[v]);
                    obj! {
                        "key" => hx(k),
                        "value" => hx(v),
                        "path" => path,
                        "path_first_bits" => (0..8).map(|d| if bit(&path, d) { '1' } else { '0' }).collect::<String>(),
                        "value_hash" => value_hash,
                        "leaf" => tree::leaf(k, v).1,
                    }
                })
                .collect();
            obj! { "records" => records, "shape" => shape, "branches" => branches, "root" => root }
        })
        .collect()
}

#[test]
fn state_json() {
    let genesis = sample_genesis();
    // The genesis of genesis.json, exactly.
    let published: Value =
        serde_json::from_str(include_str!("../../../../docs/vectors/genesis.json"))
            .expect("docs/vectors/genesis.json is JSON");
    assert_eq!(
        published["genesis_hash"],
        genesis.hash().to_hex(),
        "the genesis here is the one of docs/vectors/genesis.json"
    );
    assert_eq!(State::default().root(), Hash::ZERO);
    let state = State::genesis(&genesis);
    let diff = State::genesis_diff(&genesis);
    check_root(&state, state.root());
    assert_eq!(
        State::from_pairs(
            diff.iter()
                .map(|(k, v)| (k.clone(), v.clone().expect("no deletion")))
        )
        .root(),
        state.root()
    );
    let doc = obj! {
        "about" => "The state commitment over the chain of genesis.json (keys from keys.json, \
                    tokens and commitments as in tokens.json). The state is a set of records \
                    (key bytes, value bytes); a record's value is the canonical encoding of its \
                    table's record type. path = SHA-256(\"tally/v1/state-key\\0\" || key); \
                    value_hash = SHA-256(\"tally/v1/state-value\\0\" || value); leaf = \
                    SHA-256(\"tally/v1/state-leaf\\0\" || path || value_hash). The state root is \
                    the root of a binary sparse Merkle tree over the leaves, placed by their \
                    256-bit path read most significant bit first (bit 0 is the top bit of the \
                    path's first byte; 0 goes left, 1 right): an empty subtree is 32 zero bytes, \
                    a subtree holding one leaf is that leaf (at whatever depth), any other \
                    subtree is SHA-256(\"tally/v1/state-node\\0\" || left || right). \
                    empty_state_root is the root of no records. genesis.records are the records \
                    a node writes at genesis; genesis.state_root their root (no header carries \
                    it). Each of blocks is built by a proposer from the entries shown (in that \
                    order; signed_entry_bytes is each entry's canonical encoding) on the state \
                    the blocks before it left, and replayed by a verifier: changes are the \
                    records its entries wrote (specification section 13), in key order, each \
                    with the value last written (a null value, with no value_hash or leaf, is \
                    a deletion): a record written \
                    with the value it had is listed, and one written and deleted within the \
                    block is listed as a deletion. state_root is its header's, the root of the \
                    whole state after it. A rejected entry changes only its author's key record \
                    (its sequence number). The blocks have every payload kind accepted at least \
                    once and rejections by rules of several kinds. tree_examples \
                    are trees over 1, 2 and 3 hand-made records: shape names each leaf by its \
                    index in records; branches are listed children first with their depth \
                    (the root is at depth 0).",
        "chain_id" => CHAIN_ID,
        "genesis_hash" => genesis.hash(),
        "empty_state_root" => State::default().root(),
        "genesis" => obj! {
            "records" => records_of(&diff),
            "state_root" => state.root(),
        },
        "blocks" => blocks(&genesis),
        "tree_examples" => tree_examples(),
    };
    publish_or_check("state.json", doc);
}
