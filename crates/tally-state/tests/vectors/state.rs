//! The file of tally's state commitment (`docs/vectors/state.json`).
//!
//! Starts from the genesis of `docs/vectors/genesis.json` (the same fixtures as
//! [`crate::formats`]), builds the genesis state as a node does ([`State::genesis`]), then
//! builds three blocks of real entries with [`build_block`], checks each with [`check_block`]
//! and a [`ChainVerifier`], and records every state record each block changed with its tree
//! path, value hash and leaf hash, and the header's state root. A reference implementation of
//! the tree rules below recomputes every root from the records alone.

use crate::fixtures::{
    commitment, create_programme, dedup, event, key, name, sample_genesis, subject, AUTHOR_SEED,
    CHAIN_ID, DAY, DEDUPS, GENESIS_TIME, RECORDS, SIGNER_SEEDS, STAFF_SEED, SUBJECTS,
    VALIDATOR_SEEDS, VENDOR_SEED,
};
use crate::json::{hx, obj, publish_or_check, Node};
use serde_json::Value;
use tally_state::records::{
    AgencyRecord, Attestation, KeyRecord, Programme, RegistryRecord, SubjectRecord, Title,
    VendorAccount, Voucher,
};
use tally_state::{
    build_block, check_block, leaf_changes, tree, ChainVerifier, NoneKnown, State, StateDiff, Tip,
};
use tally_types::codec::{decode, encode};
use tally_types::{
    CommitCertificate, Domain, EntryBody, EntryId, EntryOutcome, Genesis, Hash, Keypair, Name,
    Payload, PublicKey, Role, SignedEntry, TimestampMs, VerifiedEntry,
};

// ---------------------------------------------------------------------------------------------
// The entries of the three blocks.

/// The blocks' entries: `(author seed, sequence, payload)`, filled with earlier entries' ids.
fn block_payloads(block: usize, ids: &[EntryId]) -> Vec<(u64, u64, Payload)> {
    let programme = name("food-2027-01");
    let vendor = key(VENDOR_SEED).public();
    let staff = key(STAFF_SEED).public();
    let grant = |seq, k, role| (AUTHOR_SEED, seq, Payload::GrantRole { key: k, role });
    match block {
        1 => vec![
            grant(0, staff, Role::Issuer),
            grant(1, staff, Role::Redeemer),
            grant(2, staff, Role::Attester),
            grant(3, staff, Role::Registrar),
            grant(4, vendor, Role::Vendor),
            (AUTHOR_SEED, 5, create_programme(&programme)),
        ],
        2 => vec![
            (
                STAFF_SEED,
                0,
                Payload::IssueVoucher {
                    programme,
                    subject: subject(SUBJECTS[0]),
                    amount: 2_500,
                    expires_at: TimestampMs(GENESIS_TIME.0 + 60 * DAY),
                    dedup: Some(dedup(DEDUPS[0])),
                },
            ),
            (
                STAFF_SEED,
                1,
                Payload::Attest {
                    subject: subject(SUBJECTS[1]),
                    claim: name("refugee-status"),
                    evidence: commitment(RECORDS[0]),
                    expires_at: TimestampMs(GENESIS_TIME.0 + 365 * DAY),
                },
            ),
            (
                STAFF_SEED,
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
                (
                    STAFF_SEED,
                    3,
                    Payload::RedeemVoucher {
                        voucher: ids[6],
                        amount: 1_000,
                        vendor,
                        reference: name("till-0001"),
                    },
                ),
                (AUTHOR_SEED, 6, settle(1_000)),
                // Rejected (nothing more is owed): it changes only its author's sequence.
                (AUTHOR_SEED, 7, settle(1)),
            ]
        }
        _ => Vec::new(),
    }
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

/// A record (or a deletion) as published: key, value, path, value hash, leaf hash.
fn record(key: &[u8], value: Option<&[u8]>) -> Node {
    let path = Domain::StateKey.hash(&[key]);
    let value_hash = value.map(|v| Domain::StateValue.hash(&[v]));
    let leaf = value_hash.map(|h| Domain::StateLeaf.hash(&[path.as_bytes(), h.as_bytes()]));
    if let Some(v) = value {
        assert_eq!(tree::leaf(key, v), (path, leaf.expect("a value")));
    }
    obj! {
        "table" => table(key, value),
        "key" => hx(key),
        "value" => value.map(hx),
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
    let mut ids: Vec<EntryId> = Vec::new();
    let mut out = Vec::new();
    for height in 1..=3 {
        let entries: Vec<SignedEntry> = block_payloads(height, &ids)
            .into_iter()
            .map(|(seed, sequence, payload)| {
                let body = EntryBody {
                    chain_id: name(CHAIN_ID),
                    author: key(seed).public(),
                    sequence,
                    payload,
                };
                body.sign(&key(seed))
            })
            .collect();
        ids.extend(entries.iter().map(SignedEntry::id));
        let verified = entries
            .iter()
            .map(|e| VerifiedEntry::verify(e.clone()).expect("signed"));
        let timestamp = TimestampMs(GENESIS_TIME.0 + height as u64 * 60_000);
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
        let entry_nodes: Vec<Node> = block
            .entries
            .iter()
            .zip(&exec.outcomes)
            .map(|(e, (id, o))| {
                let seed = [AUTHOR_SEED, STAFF_SEED]
                    .into_iter()
                    .find(|s| key(*s).public() == e.body.author)
                    .expect("a known author");
                obj! {
                    "author_seed" => seed,
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
                    records it wrote (a null value is a deletion), in key order, and state_root \
                    is its header's, the root of the whole state after it. A rejected entry \
                    changes only its author's key record (its sequence number). tree_examples \
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
