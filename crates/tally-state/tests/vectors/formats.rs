//! The files of tally's binary formats (every file of `docs/vectors/` but `state.json`).
//!
//! Every vector is recomputed here from the fixed inputs of [`crate::fixtures`] (test keys from
//! `Keypair::from_seed_for_tests`, fixed names, secrets and timestamps; ed25519 signatures are
//! deterministic) and compared with the committed file. A change to an encoding, a hash or a
//! domain tag therefore fails this test until the specification and the vectors are updated
//! together.

use crate::fixtures::{
    commitment, create_programme, date, dedup, event, key, name, sample_genesis, subject,
    AGENCY_SECRET, AUTHOR_SEED, CHAIN_ID, CONSORTIUM_SECRET, DAY, DEDUPS, GENESIS_TIME,
    NEW_KEY_SEED, RECORDS, SALT, SECOND_ADMIN_SEED, SIGNER_SEEDS, STAFF_SEED, SUBJECTS,
    UNHCR_ADMIN_SEED, VALIDATOR_SEEDS, VENDOR_SEED,
};
use crate::json::{hx, json, obj, publish_or_check, Node};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Debug;
use tally_types::block::{
    entries_root_leaf, outcomes_root, outcomes_root_leaf, quorum, validators_hash,
};
use tally_types::codec::{decode, encode};
use tally_types::entry::key_rotation_message;
use tally_types::merkle;
use tally_types::receipt::{base45, RECEIPT_PREFIX, RECEIPT_VERSION};
use tally_types::token::DedupToken;
use tally_types::{
    encode_entries, Block, BlockHeader, CommitCertificate, Domain, EntryBody, EntryId,
    EntryOutcome, Hash, HeldTokens, InclusionProof, Keypair, Payload, PublicKey, ReasonCode,
    Receipt, RegistryKind, RejectCode, Role, SignedEntry, TimestampMs, PROOF_VERSION,
};

// ---------------------------------------------------------------------------------------------
// Enumerating the implementation's enums, so that a new variant cannot go unpublished.

/// Every variant of a field-less enum, by decoding its 4-byte variant index from 0 up until
/// the decoder refuses one.
fn fieldless_variants<T: DeserializeOwned + Serialize>() -> Vec<(u32, T)> {
    (0u32..)
        .map_while(|i| decode::<T>(&i.to_le_bytes()).ok().map(|v| (i, v)))
        .collect()
}

/// The number of variants of `Payload`, as its decoder states it when given an index past the
/// last one (serde's derived message: "expected variant index 0 <= i < N").
pub(crate) fn payload_variant_count() -> u32 {
    let message = match decode::<Payload>(&u32::MAX.to_le_bytes()) {
        Ok(p) => panic!("variant index {} decoded as {p:?}", u32::MAX),
        Err(e) => e.to_string(),
    };
    let tail = message
        .split("0 <= i < ")
        .nth(1)
        .unwrap_or_else(|| panic!("no variant count in the decoder's message {message:?}"));
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("no variant count in {message:?}: {e}"))
}

/// The variant index of each payload kind. The match is exhaustive, so a new kind does not
/// compile until it is given its index here, and `entries_json` then fails until it also has
/// a sample entry.
pub(crate) fn payload_index(p: &Payload) -> u32 {
    match p {
        Payload::GrantRole { .. } => 0,
        Payload::RevokeRole { .. } => 1,
        Payload::RotateKey { .. } => 2,
        Payload::CreateProgramme { .. } => 3,
        Payload::IssueVoucher { .. } => 4,
        Payload::RedeemVoucher { .. } => 5,
        Payload::RevokeVoucher { .. } => 6,
        Payload::ExpireVoucher { .. } => 7,
        Payload::SettleVendor { .. } => 8,
        Payload::Attest { .. } => 9,
        Payload::RevokeAttestation { .. } => 10,
        Payload::SuspendAttestation { .. } => 11,
        Payload::ReinstateAttestation { .. } => 12,
        Payload::RegisterBirth { .. } => 13,
        Payload::RegisterDeath { .. } => 14,
        Payload::RegisterMarriage { .. } => 15,
        Payload::RegisterDivorce { .. } => 16,
        Payload::RegisterTitle { .. } => 17,
        Payload::TransferTitle { .. } => 18,
        Payload::AmendRecord { .. } => 19,
    }
}

/// The domain after `d` in declaration order. Exhaustive, so a new domain does not compile
/// until it is placed here, and so is published.
fn next_domain(d: Domain) -> Option<Domain> {
    use Domain::*;
    match d {
        EntryId => Some(EntrySignature),
        EntrySignature => Some(BlockHeader),
        BlockHeader => Some(CommitVote),
        CommitVote => Some(MerkleLeaf),
        MerkleLeaf => Some(MerkleNode),
        MerkleNode => Some(StateLeaf),
        StateLeaf => Some(StateKey),
        StateKey => Some(StateValue),
        StateValue => Some(StateNode),
        StateNode => Some(EntryOutcome),
        EntryOutcome => Some(Genesis),
        Genesis => Some(RecordCommitment),
        RecordCommitment => Some(KeyRotation),
        KeyRotation => Some(ConsensusVote),
        ConsensusVote => Some(Proposal),
        Proposal => Some(Evidence),
        Evidence => Some(TestKey),
        TestKey => None,
    }
}

fn all_domains() -> Vec<Domain> {
    std::iter::successors(Some(Domain::EntryId), |d| next_domain(*d)).collect()
}

// ---------------------------------------------------------------------------------------------
// The fixed inputs of these files alone (the shared ones are in fixtures.rs).

/// The block's commit round.
const ROUND: u32 = 1;
/// The sample entries (by index in entries.json) that make up the sample block.
const BLOCK_ENTRIES: std::ops::Range<usize> = 3..9;
/// The entry the inclusion proof is for, by position in the block.
const PROOF_INDEX: usize = 2;

/// One entry of every payload kind, in variant order, signed by the author with sequence
/// numbers 0, 1, 2, ...; later entries refer to earlier ones by id.
fn sample_entries() -> Vec<SignedEntry> {
    let author = key(AUTHOR_SEED);
    let chain = name(CHAIN_ID);
    let mut entries: Vec<SignedEntry> = Vec::new();
    let id = |entries: &[SignedEntry], i: usize| -> EntryId { entries[i].id() };
    let programme = name("food-2027-01");
    let vendor = key(VENDOR_SEED).public();
    let staff = key(STAFF_SEED).public();
    let expires = TimestampMs(GENESIS_TIME.0 + 60 * DAY);
    for i in 0.. {
        let payload = match i {
            0 => Payload::GrantRole {
                key: staff,
                role: Role::Issuer,
            },
            1 => Payload::RevokeRole {
                key: staff,
                role: Role::Redeemer,
            },
            2 => {
                let new_key = key(NEW_KEY_SEED);
                Payload::RotateKey {
                    new_key: new_key.public(),
                    new_key_proof: new_key.sign(
                        Domain::KeyRotation,
                        &key_rotation_message(&chain, &author.public()),
                    ),
                }
            }
            3 => create_programme(&programme),
            4 => Payload::IssueVoucher {
                programme: programme.clone(),
                subject: subject(SUBJECTS[0]),
                amount: 2_500,
                expires_at: expires,
                dedup: Some(dedup(DEDUPS[0])),
            },
            5 => Payload::RedeemVoucher {
                voucher: id(&entries, 4),
                amount: 1_000,
                vendor,
                reference: name("till-0001"),
            },
            6 => Payload::RevokeVoucher {
                voucher: id(&entries, 4),
                reason: ReasonCode::Fraud,
            },
            7 => Payload::ExpireVoucher {
                voucher: id(&entries, 4),
            },
            8 => Payload::SettleVendor {
                programme: programme.clone(),
                vendor,
                amount: 1_000,
                reference: name("pay-0001"),
            },
            9 => Payload::Attest {
                subject: subject(SUBJECTS[1]),
                claim: name("refugee-status"),
                evidence: commitment(RECORDS[0]),
                expires_at: TimestampMs(GENESIS_TIME.0 + 365 * DAY),
            },
            10 => Payload::RevokeAttestation {
                attestation: id(&entries, 9),
                reason: ReasonCode::ClericalError,
            },
            11 => Payload::SuspendAttestation {
                attestation: id(&entries, 9),
                reason: ReasonCode::UnderReview,
            },
            12 => Payload::ReinstateAttestation {
                attestation: id(&entries, 9),
            },
            13 => Payload::RegisterBirth {
                subject: subject(SUBJECTS[2]),
                event: event(RECORDS[1], "2027-01-10"),
            },
            14 => Payload::RegisterDeath {
                subject: subject(SUBJECTS[3]),
                event: event(RECORDS[2], "2027-01-11"),
            },
            15 => Payload::RegisterMarriage {
                spouse_a: subject(SUBJECTS[1]),
                spouse_b: subject(SUBJECTS[4]),
                event: event(RECORDS[3], "2027-01-12"),
            },
            16 => Payload::RegisterDivorce {
                marriage: id(&entries, 15),
                event: event(RECORDS[4], "2027-01-13"),
            },
            17 => Payload::RegisterTitle {
                parcel: name("parcel-0042"),
                holder: subject(SUBJECTS[1]),
                event: event(RECORDS[5], "2027-01-14"),
            },
            18 => Payload::TransferTitle {
                parcel: name("parcel-0042"),
                from: subject(SUBJECTS[1]),
                to: subject(SUBJECTS[4]),
                event: event(RECORDS[6], "2027-01-15"),
            },
            19 => Payload::AmendRecord {
                original: id(&entries, 13),
                reason: ReasonCode::DocumentReplaced,
                event: event(RECORDS[7], "2027-01-09"),
            },
            _ => break,
        };
        assert_eq!(
            payload.check_well_formed(),
            Ok(()),
            "sample {i} is well formed"
        );
        let body = EntryBody {
            chain_id: chain.clone(),
            author: author.public(),
            sequence: i,
            payload,
        };
        entries.push(body.sign(&author));
    }
    entries
}

/// The outcomes of the block's entries: chosen to show each encoding, not the result of
/// executing the entries.
fn sample_outcomes() -> [EntryOutcome; 6] {
    [
        EntryOutcome::Accepted,
        EntryOutcome::Accepted,
        EntryOutcome::Accepted,
        EntryOutcome::Rejected(RejectCode::UnknownVoucher),
        EntryOutcome::Rejected(RejectCode::NotExpired),
        EntryOutcome::Rejected(RejectCode::OverSettlement),
    ]
}

/// The sample block (height 1 of the sample genesis), its entries' outcomes and its commit
/// certificate.
struct SampleBlock {
    block: Block,
    outcomes: Vec<(EntryId, EntryOutcome)>,
    certificate: CommitCertificate,
}

fn sample_block() -> SampleBlock {
    let genesis = sample_genesis();
    let entries = sample_entries()[BLOCK_ENTRIES].to_vec();
    let outcomes: Vec<(EntryId, EntryOutcome)> = entries
        .iter()
        .map(SignedEntry::id)
        .zip(sample_outcomes())
        .collect();
    assert_eq!(outcomes.len(), entries.len());
    let header = BlockHeader {
        chain_id: genesis.chain_id.clone(),
        height: 1,
        parent: genesis.hash(),
        timestamp: TimestampMs(GENESIS_TIME.0 + 60_000),
        proposer: key(VALIDATOR_SEEDS[0]).public(),
        entry_count: u32::try_from(entries.len()).expect("a few entries"),
        entries_root: Block::compute_entries_root(&entries),
        outcomes_root: outcomes_root(&outcomes),
        // Computed by tally-state from the ledger state; a placeholder here.
        state_root: Hash([0xab; 32]),
        validators_hash: validators_hash(&genesis.validator_keys()),
    };
    let signers: Vec<Keypair> = SIGNER_SEEDS.iter().map(|s| key(*s)).collect();
    let certificate = CommitCertificate::signed_by(&header, ROUND, &signers);
    assert_eq!(
        certificate.verify(&header, &genesis.validator_keys()),
        Ok(()),
        "the sample certificate is a quorum"
    );
    SampleBlock {
        block: Block { header, entries },
        outcomes,
        certificate,
    }
}

/// The canonical bytes of `value`, checked to decode back to it.
fn canonical<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Vec<u8> {
    let bytes = encode(value);
    assert_eq!(
        decode::<T>(&bytes).as_ref(),
        Ok(value),
        "the canonical bytes of {value:?} decode back to it"
    );
    bytes
}

/// The exact bytes ed25519 signs for a message under a domain: the tag, then the message.
fn signed_message(domain: Domain, message: &[u8]) -> Vec<u8> {
    [domain.tag(), message].concat()
}

// ---------------------------------------------------------------------------------------------
// The files.

#[test]
fn keys_json() {
    let mut seeds = vec![
        (
            AUTHOR_SEED,
            "wfp admin in genesis; author of every sample entry",
        ),
        (
            UNHCR_ADMIN_SEED,
            "unhcr admin in genesis; in state.json, author of entries on wfp's keys and programme",
        ),
        (
            NEW_KEY_SEED,
            "the key the rotate_key entry rotates to (in state.json, the wfp admin's)",
        ),
        (
            STAFF_SEED,
            "the staff key of grant_role and revoke_role; issuer, redeemer, attester and registrar in state.json",
        ),
        (
            VENDOR_SEED,
            "the vendor of redeem_voucher and settle_vendor",
        ),
        (
            SECOND_ADMIN_SEED,
            "a wfp key state.json makes an admin (an author there)",
        ),
    ];
    for s in VALIDATOR_SEEDS {
        let signs = if SIGNER_SEEDS.contains(&s) {
            "validator in genesis; signs the sample commit certificate"
        } else {
            "validator in genesis; does not sign the sample certificate"
        };
        seeds.push((s, signs));
    }
    let keys: Vec<Node> = seeds
        .into_iter()
        .map(|(seed, role)| {
            let k = key(seed);
            let secret = *k.secret_bytes();
            let mut expected = [0u8; 32];
            expected[..8].copy_from_slice(&seed.to_le_bytes());
            expected[8..16].copy_from_slice(b"tallytst");
            assert_eq!(secret, expected, "the test key derivation is as published");
            obj! {
                "seed" => seed,
                "role" => role,
                "secret_key" => hx(secret),
                "public_key" => k.public(),
            }
        })
        .collect();
    publish_or_check(
        "keys.json",
        obj! {
            "about" => "The ed25519 test keys every other vector file uses. secret_key is the \
                        32-byte RFC 8032 private key (seed): the seed number as 8 bytes \
                        little-endian, then the ASCII bytes \"tallytst\", then 16 zero bytes \
                        (Keypair::from_seed_for_tests). public_key is its RFC 8032 public key. \
                        Never use these keys on a real chain.",
            "keys" => keys,
        },
    );
}

#[test]
fn tokens_json() {
    let subjects: Vec<Node> = SUBJECTS
        .iter()
        .map(|r| obj! { "reference" => *r, "token" => subject(r).0 })
        .collect();
    let dedups: Vec<Node> = DEDUPS
        .iter()
        .map(|r| obj! { "reference" => *r, "token" => dedup(r).0 })
        .collect();
    let commitments: Vec<Node> = RECORDS
        .iter()
        .map(|r| obj! { "record" => *r, "commitment" => commitment(r).0 })
        .collect();
    publish_or_check(
        "tokens.json",
        obj! {
            "about" => "Subject tokens, dedup tokens and record commitments used by the sample \
                        entries. subject token = HMAC-SHA256(key = agency_secret, message = \
                        \"tally/v1/subject-token\\0\" || reference); dedup token = \
                        HMAC-SHA256(key = consortium_secret, message = \
                        \"tally/v1/dedup-token\\0\" || reference); commitment = \
                        SHA-256(\"tally/v1/record-commitment\\0\" || u64-le(len(salt)) || salt \
                        || record). Secrets and salts must be at least 16 bytes. Strings are \
                        given as text and are hashed as their UTF-8 bytes.",
            "agency_secret" => String::from_utf8_lossy(AGENCY_SECRET).into_owned(),
            "agency_secret_hex" => hx(AGENCY_SECRET),
            "consortium_secret" => String::from_utf8_lossy(CONSORTIUM_SECRET).into_owned(),
            "consortium_secret_hex" => hx(CONSORTIUM_SECRET),
            "salt" => String::from_utf8_lossy(SALT).into_owned(),
            "salt_hex" => hx(SALT),
            "subject_tokens" => subjects,
            "dedup_tokens" => dedups,
            "commitments" => commitments,
        },
    );
}

#[test]
fn primitives_json() {
    /// One value: its type, its JSON form and its canonical bytes.
    fn v<T: Serialize + DeserializeOwned + PartialEq + Debug>(ty: &str, value: &T) -> Node {
        obj! { "type" => ty, "value" => json(value), "bytes" => hx(canonical(value)) }
    }
    let k = key(AUTHOR_SEED).public();
    let sig = key(AUTHOR_SEED).sign(Domain::EntrySignature, &[0u8; 32]);
    let values = vec![
        v("u8", &1u8),
        v("u32", &0x0102_0304u32),
        v("u64", &0x0102_0304_0506_0708u64),
        v("bool", &false),
        v("bool", &true),
        v("TimestampMs", &GENESIS_TIME),
        v("CivilDate", &date("2027-01-10")),
        v("Name", &name("wfp")),
        v("Name", &name("food-2027-01")),
        v("Hash", &Hash::ZERO),
        v("PublicKey", &k),
        v("Signature", &sig),
        v("Option<DedupToken>", &None::<DedupToken>),
        v("Option<DedupToken>", &Some(dedup(DEDUPS[0]))),
        v("Vec<PublicKey>", &Vec::<PublicKey>::new()),
        v("Vec<PublicKey>", &vec![k, key(UNHCR_ADMIN_SEED).public()]),
        v("Role", &Role::Issuer),
        v("ReasonCode", &ReasonCode::Fraud),
        v("EntryOutcome", &EntryOutcome::Accepted),
        v(
            "EntryOutcome",
            &EntryOutcome::Rejected(RejectCode::OverBudget),
        ),
        v("RegistryEvent", &event(RECORDS[1], "2027-01-10")),
    ];
    publish_or_check(
        "primitives.json",
        obj! {
            "about" => "How each building block of tally's canonical encoding is written \
                        (bincode 2, little-endian, fixed-width integers). value is the JSON \
                        form (the API's), bytes the canonical encoding. Integers: u8 1 byte, \
                        u32 4 bytes, u64 8 bytes, all little-endian. bool: 1 byte, 0x00 or \
                        0x01. TimestampMs: u64. CivilDate: u32 of the decimal number YYYYMMDD. \
                        Name (and any string): u64 byte length, then UTF-8 bytes. Hash, \
                        PublicKey, Signature and tokens: their raw 32 or 64 bytes, no length. \
                        Option: 0x00 for none, 0x01 then the value. Vec: u64 item count, then \
                        the items. Enum: u32 variant index, then the variant's fields. Struct \
                        and tuple: the fields in order, nothing between them.",
            "values" => values,
        },
    );
}

#[test]
fn domains_json() {
    let domains = all_domains();
    let tags: std::collections::BTreeSet<&[u8]> = domains.iter().map(|d| d.tag()).collect();
    assert_eq!(tags.len(), domains.len(), "domain tags are distinct");
    let domains: Vec<Node> = domains
        .into_iter()
        .map(|d| {
            let tag = d.tag();
            obj! {
                "name" => format!("{d:?}"),
                "tag" => std::str::from_utf8(tag).expect("tags are ASCII"),
                "tag_hex" => hx(tag),
                "tag_length" => tag.len(),
                "hash_of_empty" => d.hash(&[]),
                "hash_of_abc" => d.hash(&[b"abc"]),
            }
        })
        .collect();
    publish_or_check(
        "domains.json",
        obj! {
            "about" => "Every hash domain. A domain hash is SHA-256(tag || content): the tag's \
                        bytes (ASCII, ending in one NUL byte, shown as \\u0000) are fed to \
                        SHA-256 before the content, with no length or separator. hash_of_empty \
                        hashes no content; hash_of_abc the three ASCII bytes \"abc\".",
            "domains" => domains,
        },
    );
}

#[test]
fn reject_codes_json() {
    let codes = fieldless_variants::<RejectCode>();
    assert!(!codes.is_empty());
    let codes: Vec<Node> = codes
        .into_iter()
        .map(|(index, code)| {
            assert_eq!(
                json(&code).into_value(),
                Value::String(code.as_str().to_string()),
                "the JSON name of {code:?} is its as_str"
            );
            let outcome = EntryOutcome::Rejected(code);
            obj! {
                "index" => index,
                "name" => code.as_str(),
                "outcome_bytes" => hx(canonical(&outcome)),
            }
        })
        .collect();
    publish_or_check(
        "reject_codes.json",
        obj! {
            "about" => "Every RejectCode: index is its variant index (written as 4 bytes \
                        little-endian), name its stable name in the API, the CLI and JSON. \
                        outcome_bytes is the canonical encoding of EntryOutcome::Rejected(code): \
                        the outcome's variant index 1 as u32, then the code's index as u32. \
                        EntryOutcome::Accepted encodes as accepted_bytes.",
            "accepted_bytes" => hx(canonical(&EntryOutcome::Accepted)),
            "codes" => codes,
        },
    );
}

#[test]
fn enums_json() {
    fn table<T: DeserializeOwned + Serialize>() -> Vec<Node> {
        fieldless_variants::<T>()
            .into_iter()
            .map(|(index, v)| obj! { "index" => index, "name" => json(&v) })
            .collect()
    }
    let roles = table::<Role>();
    assert_eq!(roles.len(), Role::ALL.len(), "every role is listed");
    let reasons = table::<ReasonCode>();
    assert_eq!(
        reasons.len(),
        ReasonCode::ALL.len(),
        "every reason is listed"
    );
    let entries = sample_entries();
    let kinds: Vec<Node> = entries
        .iter()
        .map(|e| {
            let p = &e.body.payload;
            obj! {
                "index" => payload_index(p),
                "kind" => p.kind(),
                "required_role" => p.required_role().map_or("none", Role::as_str),
            }
        })
        .collect();
    publish_or_check(
        "enums.json",
        obj! {
            "about" => "Variant indices of tally's enums. An enum value is encoded as its \
                        variant index, a u32 (4 bytes little-endian), followed by the variant's \
                        fields if it has any. name is the JSON form (snake_case). payload_kinds \
                        are the variants of Payload; registry_kinds are used by the ledger \
                        state's records (tally-state), not by entries.",
            "payload_kinds" => kinds,
            "roles" => roles,
            "reason_codes" => reasons,
            "registry_kinds" => table::<RegistryKind>(),
            "entry_outcomes" => vec![
                obj! { "index" => 0u32, "name" => "accepted", "fields" => "none" },
                obj! { "index" => 1u32, "name" => "rejected", "fields" => "RejectCode" },
            ],
        },
    );
}

#[test]
fn entries_json() {
    let entries = sample_entries();
    let count = payload_variant_count();
    assert_eq!(
        entries.len(),
        count as usize,
        "one sample entry per Payload variant: add a sample to sample_entries()"
    );
    let author = key(AUTHOR_SEED).public();
    let items: Vec<Node> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = &e.body.payload;
            let index = payload_index(p);
            assert_eq!(index as usize, i, "samples are in variant order");
            let payload_bytes = canonical(p);
            assert_eq!(
                payload_bytes[..4],
                index.to_le_bytes(),
                "variant index of {i}"
            );
            let body_bytes = canonical(&e.body);
            let id = e.body.id();
            assert_eq!(id, Domain::EntryId.hash(&[&body_bytes]));
            assert_eq!(e.verify_signature(), Ok(()));
            let signed = canonical(e);
            assert_eq!(signed, [&body_bytes[..], e.signature.as_bytes()].concat());
            assert_eq!(SignedEntry::from_bytes(&signed).as_ref(), Ok(e));
            let leaf = entries_root_leaf(e);
            assert_eq!(leaf, merkle::leaf_hash(&signed));
            let mut fields = vec![
                ("kind".to_string(), Node::from(p.kind())),
                ("variant_index".to_string(), Node::from(index)),
                ("body".to_string(), json(&e.body)),
                ("payload_bytes".to_string(), hx(&payload_bytes)),
                ("body_bytes".to_string(), hx(&body_bytes)),
                ("entry_id".to_string(), Node::from(id)),
                (
                    "signed_message".to_string(),
                    hx(signed_message(Domain::EntrySignature, id.as_bytes())),
                ),
                ("signature".to_string(), Node::from(e.signature)),
                ("signed_entry_bytes".to_string(), hx(&signed)),
                ("entries_root_leaf".to_string(), Node::from(leaf)),
            ];
            if let Payload::RotateKey {
                new_key,
                new_key_proof,
            } = p
            {
                let message = key_rotation_message(&e.body.chain_id, &author);
                assert_eq!(
                    new_key.verify(Domain::KeyRotation, &message, new_key_proof),
                    Ok(())
                );
                fields.push((
                    "key_rotation".to_string(),
                    obj! {
                        "message" => hx(&message),
                        "signed_message" => hx(signed_message(Domain::KeyRotation, &message)),
                        "new_key_seed" => NEW_KEY_SEED,
                    },
                ));
            }
            Node::Obj(fields)
        })
        .collect();
    let batch: Vec<&SignedEntry> = entries[..3].iter().collect();
    publish_or_check(
        "entries.json",
        obj! {
            "about" => "One signed entry of every payload kind, in variant order, all by the \
                        key of seed 1 (keys.json) on chain tally-vectors, sequence numbers 0, \
                        1, 2, ...; tokens and commitments are from tokens.json. body is the \
                        entry body in its JSON form. payload_bytes: the canonical encoding of \
                        the payload alone (it is the tail of body_bytes). body_bytes: canonical \
                        encoding of the body (chain_id, author, sequence, payload). entry_id = \
                        SHA-256(\"tally/v1/entry-id\\0\" || body_bytes). signed_message: the \
                        exact bytes ed25519 (RFC 8032, pure) signs: \
                        \"tally/v1/entry-signature\\0\" || entry_id. signed_entry_bytes = \
                        body_bytes || signature (64 bytes). entries_root_leaf = \
                        SHA-256(\"tally/v1/merkle-leaf\\0\" || signed_entry_bytes). For \
                        rotate_key, key_rotation.message is the canonical encoding of the \
                        tuple (chain_id, old key), signed by the new key under \
                        \"tally/v1/key-rotation\\0\". batch is the framing of \
                        POST /v1/entries/batch for the first three entries: each entry as a u32 \
                        little-endian length, then its signed_entry_bytes.",
            "chain_id" => CHAIN_ID,
            "author_seed" => AUTHOR_SEED,
            "author" => author,
            "entries" => items,
            "batch" => obj! {
                "entries" => vec![Node::from(0u32), Node::from(1u32), Node::from(2u32)],
                "bytes" => hx(encode_entries(&batch)),
            },
        },
    );
}

#[test]
fn genesis_json() {
    let genesis = sample_genesis();
    let bytes = canonical(&genesis);
    assert_eq!(genesis.hash(), Domain::Genesis.hash(&[&bytes]));
    let keys = genesis.validator_keys();
    let mut sorted = keys.clone();
    sorted.sort();
    let sorted_bytes = encode(&sorted);
    assert_eq!(
        validators_hash(&keys),
        Domain::Genesis.hash(&[b"validators", &sorted_bytes])
    );
    publish_or_check(
        "genesis.json",
        obj! {
            "about" => "A genesis document with two agencies and four validators (keys from \
                        keys.json). genesis is its JSON form (the genesis file), genesis_bytes \
                        its canonical encoding, genesis_hash = SHA-256(\"tally/v1/genesis\\0\" \
                        || genesis_bytes): the parent of block 1. validators_hash = \
                        SHA-256(\"tally/v1/genesis\\0\" || ASCII \"validators\" || \
                        sorted_validators_bytes), where sorted_validators_bytes is the canonical \
                        encoding of the list of validator keys sorted bytewise ascending (u64 \
                        count, then 32 bytes per key).",
            "genesis" => json(&genesis),
            "genesis_bytes" => hx(&bytes),
            "genesis_hash" => genesis.hash(),
            "validator_keys_sorted" => sorted.iter().map(|k| Node::from(*k)).collect::<Vec<_>>(),
            "sorted_validators_bytes" => hx(&sorted_bytes),
            "validators_hash" => validators_hash(&keys),
            "quorum" => quorum(keys.len()),
        },
    );
}

#[test]
fn blocks_json() {
    let SampleBlock {
        block,
        outcomes,
        certificate,
    } = sample_block();
    let header = &block.header;
    let header_bytes = canonical(header);
    assert_eq!(header.hash(), Domain::BlockHeader.hash(&[&header_bytes]));
    let leaves: Vec<Hash> = block.entries.iter().map(entries_root_leaf).collect();
    assert_eq!(merkle::root_of_leaf_hashes(&leaves), header.entries_root);
    let entries: Vec<Node> = block
        .entries
        .iter()
        .zip(BLOCK_ENTRIES)
        .zip(&leaves)
        .map(|((e, i), leaf)| {
            obj! {
                "entries_json_index" => i,
                "entry_id" => e.id(),
                "entries_root_leaf" => *leaf,
            }
        })
        .collect();
    let outcome_items: Vec<Node> = outcomes
        .iter()
        .map(|(id, o)| {
            let bytes = canonical(o);
            let leaf = outcomes_root_leaf(id, o);
            assert_eq!(leaf, Domain::EntryOutcome.hash(&[id.as_bytes(), &bytes]));
            obj! {
                "entry_id" => *id,
                "outcome" => json(o),
                "outcome_bytes" => hx(&bytes),
                "outcomes_root_leaf" => leaf,
            }
        })
        .collect();
    let message =
        CommitCertificate::vote_message(&header.chain_id, header.height, ROUND, &header.hash());
    let signatures: Vec<Node> = certificate
        .signatures
        .iter()
        .zip(SIGNER_SEEDS)
        .map(|(s, seed)| {
            assert_eq!(s.validator, key(seed).public());
            obj! {
                "validator_seed" => seed,
                "validator" => s.validator,
                "signature" => s.signature,
                "commit_signature_bytes" => hx(canonical(s)),
            }
        })
        .collect();
    let empty: [SignedEntry; 0] = [];
    publish_or_check(
        "blocks.json",
        obj! {
            "about" => "Block 1 of the chain of genesis.json: six entries of entries.json, their \
                        outcomes, the header and a commit certificate by three of the four \
                        validators. The outcomes are chosen to show the encodings, not computed \
                        by executing the entries; state_root is a placeholder (tally-state \
                        computes it). header is the header in its JSON form, header_bytes its \
                        canonical encoding, block_hash = SHA-256(\"tally/v1/block-header\\0\" || \
                        header_bytes). Merkle trees follow RFC 9162 with domain tags in place \
                        of its 0x00/0x01 prefixes: entries_root is the tree over the entries' \
                        entries_root_leaf; an inner node is \
                        SHA-256(\"tally/v1/merkle-node\\0\" || left || right); the tree over n > 1 \
                        leaves splits at the largest power of two below n; a tree of one leaf \
                        is that leaf; the empty tree is SHA-256(\"tally/v1/merkle-leaf\\0\") \
                        (empty_entries_root). outcomes_root is the same tree over \
                        outcomes_root_leaf = SHA-256(\"tally/v1/entry-outcome\\0\" || entry_id || \
                        outcome_bytes). The certificate: vote_message is the canonical encoding \
                        of the tuple (chain_id, height u64, round u32, block_hash); each \
                        validator signs vote_signed_message = \"tally/v1/commit-vote\\0\" || \
                        vote_message with ed25519; certificate_bytes is the canonical encoding \
                        of the certificate (height, round, block_hash, signatures as a list of \
                        (validator, signature)). block_bytes is the canonical encoding of the \
                        block (header, then the list of signed entries).",
            "chain_id" => CHAIN_ID,
            "entries" => entries,
            "entries_root" => header.entries_root,
            "empty_entries_root" => Block::compute_entries_root(&empty),
            "outcomes" => outcome_items,
            "outcomes_root" => header.outcomes_root,
            "header" => json(header),
            "header_bytes" => hx(&header_bytes),
            "block_hash" => header.hash(),
            "certificate" => obj! {
                "height" => certificate.height,
                "round" => certificate.round,
                "block_hash" => certificate.block_hash,
                "vote_message" => hx(&message),
                "vote_signed_message" => hx(signed_message(Domain::CommitVote, &message)),
                "signatures" => signatures,
                "certificate_bytes" => hx(canonical(&certificate)),
            },
            "block_bytes" => hx(canonical(&block)),
        },
    );
}

#[test]
fn proofs_json() {
    let genesis = sample_genesis();
    let SampleBlock {
        block,
        outcomes,
        certificate,
    } = sample_block();
    let proof = |index: usize| {
        InclusionProof::build(
            block.header.clone(),
            &block.entries,
            &outcomes,
            certificate.clone(),
            index,
        )
        .expect("the index is inside the block")
    };
    let paths: Vec<Node> = (0..block.entries.len())
        .map(|i| {
            let p = proof(i);
            assert!(p.verify(&genesis).is_ok(), "proof {i} verifies");
            let hashes = |path: &[Hash]| path.iter().map(|h| Node::from(*h)).collect::<Vec<_>>();
            obj! {
                "index" => i,
                "entry_path" => hashes(&p.entry_path),
                "outcome_path" => hashes(&p.outcome_path),
            }
        })
        .collect();
    let p = proof(PROOF_INDEX);
    assert_eq!(p.version, PROOF_VERSION);
    let proof_bytes = canonical(&p);
    assert_eq!(InclusionProof::from_bytes(&proof_bytes).as_ref(), Ok(&p));

    let receipt = |index: usize, tokens: HeldTokens| {
        let r = Receipt::new(proof(index)).expect("an issue or a redemption");
        assert_eq!(r.version, RECEIPT_VERSION);
        let bytes = canonical(&r);
        let line = r.payload_line();
        assert_eq!(line, format!("{RECEIPT_PREFIX}{}", base45::encode(&bytes)));
        let summary = r.summary();
        assert!(
            r.verify(&genesis, &tokens, Some(&summary)).is_ok(),
            "receipt {index} verifies"
        );
        obj! {
            "block_index" => index,
            "kind" => r.proof.entry.body.payload.kind(),
            "withheld" => json(&r.withheld),
            "receipt_bytes" => hx(&bytes),
            "payload_line" => line,
            "text" => r.to_text(),
        }
    };
    let issue = receipt(
        1,
        HeldTokens {
            subject: Some(subject(SUBJECTS[0])),
            dedup: Some(dedup(DEDUPS[0])),
        },
    );
    let redeem = receipt(2, HeldTokens::default());
    publish_or_check(
        "proofs.json",
        obj! {
            "about" => "Inclusion proofs and receipts for the block of blocks.json, checkable \
                        against genesis.json. paths gives, for every position in the block, the \
                        RFC 9162 audit path (leaf side first) of the entry's entries_root_leaf \
                        to entries_root and of its outcomes_root_leaf to outcomes_root. \
                        proof_bytes is the canonical encoding of the inclusion proof (the proof \
                        file format) for block position proof_index: version (u8, 1 byte), \
                        signed entry, index (u32), entry_path (list of hashes), outcome, \
                        outcome_path, header, certificate. A receipt is the canonical encoding \
                        of (version u8, withheld {subject bool, dedup bool}, inclusion proof) \
                        in which the issue's withheld person tokens are replaced by 32 zero \
                        bytes; payload_line is \"TALLY1:\" and receipt_bytes in base45 (RFC \
                        9285); text is the printed receipt (summary lines, then the payload \
                        line). The issue receipt checks with the subject and dedup tokens of \
                        case-001 (tokens.json).",
            "paths" => paths,
            "proof_index" => PROOF_INDEX,
            "proof_version" => PROOF_VERSION,
            "proof_bytes" => hx(&proof_bytes),
            "receipts" => vec![issue, redeem],
        },
    );
}
