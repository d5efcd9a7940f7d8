//! The published test vectors of tally's state commitment (`docs/vectors/state.json`),
//! checked against the implementation.
//!
//! Starts from the genesis of `docs/vectors/genesis.json` (the same test keys and fields as
//! `crates/tally-types/tests/spec_vectors.rs`), builds the genesis state as a node does
//! ([`State::genesis`]), then builds three blocks of real entries with [`build_block`], checks
//! each with [`check_block`] and a [`ChainVerifier`], and records every state record each
//! block changed with its tree path, value hash and leaf hash, and the header's state root.
//! A reference implementation of the tree rules below recomputes every root from the records
//! alone. The committed file is compared by JSON value, as spec_vectors.rs compares its files.
//! After a deliberate change, update `docs/specification.md` and regenerate:
//!
//! ```text
//! TALLY_WRITE_VECTORS=1 cargo test --workspace --test state_vectors
//! ```

use serde::Serialize;
use serde_json::Value;
use tally_state::records::{
    AgencyRecord, Attestation, KeyRecord, Programme, RegistryRecord, SubjectRecord, Title,
    VendorAccount, Voucher,
};
use tally_state::{
    build_block, check_block, leaf_changes, tree, ChainVerifier, NoneKnown, State, StateDiff, Tip,
};
use tally_types::codec::{decode, encode};
use tally_types::entry::RegistryEvent;
use tally_types::{
    AgencyGenesis, CommitCertificate, Commitment, DedupToken, Domain, EntryBody, EntryId,
    EntryOutcome, Genesis, Hash, Keypair, Name, Payload, PublicKey, Role, SignedEntry,
    SubjectToken, TimestampMs, ValidatorGenesis, VerifiedEntry,
};

// ---------------------------------------------------------------------------------------------
// Writing and comparing the file: a minimal copy of the helpers of
// crates/tally-types/tests/spec_vectors.rs (test files of two crates cannot share code).

const WRITE_VAR: &str = "TALLY_WRITE_VECTORS";
const REGENERATE: &str = "TALLY_WRITE_VECTORS=1 cargo test --workspace --test state_vectors";
const FILE: &str = "state.json";

/// A JSON document whose objects keep their fields in the order written (serde_json's own
/// `Value` sorts them), so the file reads top-down; its scalars are serde_json values.
enum Node {
    Val(Value),
    Arr(Vec<Node>),
    Obj(Vec<(&'static str, Node)>),
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Val(v) => v.serialize(s),
            Node::Arr(items) => s.collect_seq(items),
            Node::Obj(fields) => s.collect_map(fields.iter().map(|(k, v)| (k, v))),
        }
    }
}

macro_rules! scalars {
    ($($t:ty),*) => { $(impl From<$t> for Node {
        fn from(v: $t) -> Self {
            Node::Val(Value::from(v))
        }
    })* };
}
scalars!(&str, String, u64, usize);

impl From<Hash> for Node {
    fn from(v: Hash) -> Self {
        Node::from(v.to_hex())
    }
}
impl From<PublicKey> for Node {
    fn from(v: PublicKey) -> Self {
        Node::from(v.to_hex())
    }
}
impl<T: Into<Node>> From<Option<T>> for Node {
    fn from(v: Option<T>) -> Self {
        v.map_or(Node::Val(Value::Null), Into::into)
    }
}
impl From<Vec<Node>> for Node {
    fn from(v: Vec<Node>) -> Self {
        Node::Arr(v)
    }
}

/// An object, its fields in the order given.
macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => { Node::Obj(vec![$(($k, Node::from($v))),*]) };
}

/// Bytes as lower-case hex.
fn hx(bytes: impl AsRef<[u8]>) -> Node {
    Node::from(hex::encode(bytes))
}

/// Writes the document when [`WRITE_VAR`] is `1`; otherwise compares the committed file with
/// it by JSON value and fails at the first field that differs.
fn publish_or_check(doc: &Node) {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors/state.json");
    let text = serde_json::to_string_pretty(doc).expect("a vector document serializes") + "\n";
    if std::env::var(WRITE_VAR).is_ok_and(|v| v == "1") {
        std::fs::write(file, text).expect("docs/vectors/state.json can be written");
        eprintln!("wrote docs/vectors/{FILE}");
        return;
    }
    let committed = std::fs::read_to_string(file).unwrap_or_else(|e| {
        panic!("cannot read docs/vectors/{FILE} ({e}); generate it with `{REGENERATE}`")
    });
    let committed: Value = serde_json::from_str(&committed).unwrap_or_else(|e| {
        panic!("docs/vectors/{FILE} is not valid JSON ({e}); regenerate it with `{REGENERATE}`")
    });
    if let Some((field, what)) = diff_node("", doc, &committed) {
        let field = if field.is_empty() {
            "(top level)"
        } else {
            &field
        };
        panic!(
            "docs/vectors/{FILE} does not match what the implementation computes.\n\
             First difference, at field `{field}`: {what}.\n\
             The state commitment has changed. If the change is deliberate, update \
             docs/specification.md to describe it and regenerate the vectors with\n    \
             {REGENERATE}\n\
             If it is not, the implementation has broken the published format."
        );
    }
}

fn field_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// At most 32 characters of `s` from character `from`, for a failure message.
fn excerpt(s: &str, from: usize) -> String {
    let start = from.saturating_sub(8);
    let cut: String = s.chars().skip(start).take(32).collect();
    let before = if start > 0 { "..." } else { "" };
    let after = if start + 32 < s.chars().count() {
        "..."
    } else {
        ""
    };
    format!("{before}{cut}{after}")
}

/// Describes two values that differ; for strings (mostly hex), where they first differ.
fn describe(computed: &Value, committed: &Value) -> String {
    if let (Value::String(a), Value::String(b)) = (computed, committed) {
        let at = a
            .chars()
            .zip(b.chars())
            .position(|(x, y)| x != y)
            .unwrap_or(a.chars().count().min(b.chars().count()));
        return format!(
            "the strings first differ at character {at} (byte {} if hex); the code computes \
             {:?} ({} characters), the file has {:?} ({} characters)",
            at / 2,
            excerpt(a, at),
            a.chars().count(),
            excerpt(b, at),
            b.chars().count(),
        );
    }
    format!("the code computes {computed}, the file has {committed}")
}

/// The first field (as `blocks[1].changes[0].leaf`) where the committed JSON differs from the
/// computed document, in the document's order, and how it differs.
fn diff_node(path: &str, node: &Node, committed: &Value) -> Option<(String, String)> {
    match (node, committed) {
        (Node::Obj(fields), Value::Object(map)) => {
            for (k, v) in fields {
                let Some(c) = map.get(*k) else {
                    return Some((
                        field_path(path, k),
                        "the field is missing from the file".into(),
                    ));
                };
                if let Some(d) = diff_node(&field_path(path, k), v, c) {
                    return Some(d);
                }
            }
            let extra = map.keys().find(|k| !fields.iter().any(|(f, _)| f == k))?;
            Some((
                field_path(path, extra),
                "the file has this field; the code computes none".into(),
            ))
        }
        (Node::Arr(items), Value::Array(found)) => {
            for (i, (item, c)) in items.iter().zip(found).enumerate() {
                if let Some(d) = diff_node(&format!("{path}[{i}]"), item, c) {
                    return Some(d);
                }
            }
            (items.len() != found.len()).then(|| {
                let (a, b) = (items.len(), found.len());
                (
                    path.to_string(),
                    format!("the code computes {a} items, the file has {b}"),
                )
            })
        }
        (Node::Val(v), c) if v == c => None,
        (node, c) => {
            let computed = serde_json::to_value(node).expect("a node serializes");
            Some((path.to_string(), describe(&computed, c)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fixed inputs: those of spec_vectors.rs (keys.json, tokens.json, genesis.json).

const CHAIN_ID: &str = "tally-vectors";
const GENESIS_TIME: TimestampMs = TimestampMs(1_800_000_000_000);
const DAY: u64 = TimestampMs::DAY_MS;
/// The wfp admin.
const ADMIN_SEED: u64 = 1;
const UNHCR_ADMIN_SEED: u64 = 2;
/// A wfp staff key: issuer, redeemer, attester and registrar.
const STAFF_SEED: u64 = 4;
const VENDOR_SEED: u64 = 5;
const VALIDATOR_SEEDS: [u64; 4] = [11, 12, 13, 14];
const SIGNER_SEEDS: [u64; 3] = [11, 12, 13];
const AGENCY_SECRET: &[u8] = b"vectors-agency-secret-0001";
const CONSORTIUM_SECRET: &[u8] = b"vectors-consortium-secret-0001";
const SALT: &[u8] = b"vectors-salt-0001";

fn key(seed: u64) -> Keypair {
    Keypair::from_seed_for_tests(seed)
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn subject(reference: &str) -> SubjectToken {
    SubjectToken::derive(AGENCY_SECRET, reference.as_bytes()).expect("the secret is long enough")
}

fn dedup(reference: &str) -> DedupToken {
    DedupToken::derive(CONSORTIUM_SECRET, reference.as_bytes()).expect("the secret is long enough")
}

fn commitment(record: &str) -> Commitment {
    Commitment::commit(SALT, record.as_bytes()).expect("the salt is long enough")
}

fn sample_genesis() -> Genesis {
    let genesis = Genesis {
        chain_id: name(CHAIN_ID),
        genesis_time: GENESIS_TIME,
        agencies: vec![
            AgencyGenesis {
                id: name("wfp"),
                admins: vec![key(ADMIN_SEED).public()],
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
    assert_eq!(genesis.validate(), Ok(()));
    genesis
}

/// The blocks' entries: `(author seed, sequence, payload)`, filled with earlier entries' ids.
fn block_payloads(block: usize, ids: &[EntryId]) -> Vec<(u64, u64, Payload)> {
    let programme = name("food-2027-01");
    let vendor = key(VENDOR_SEED).public();
    let staff = key(STAFF_SEED).public();
    let grant = |seq, k, role| (ADMIN_SEED, seq, Payload::GrantRole { key: k, role });
    match block {
        1 => vec![
            grant(0, staff, Role::Issuer),
            grant(1, staff, Role::Redeemer),
            grant(2, staff, Role::Attester),
            grant(3, staff, Role::Registrar),
            grant(4, vendor, Role::Vendor),
            (
                ADMIN_SEED,
                5,
                Payload::CreateProgramme {
                    programme: programme.clone(),
                    unit: name("KES"),
                    budget: 5_000_000,
                    valid_from: GENESIS_TIME,
                    valid_until: TimestampMs(GENESIS_TIME.0 + 90 * DAY),
                    assistance: name("food-basket"),
                    period: name("2027-01"),
                },
            ),
        ],
        2 => vec![
            (
                STAFF_SEED,
                0,
                Payload::IssueVoucher {
                    programme,
                    subject: subject("case-001"),
                    amount: 2_500,
                    expires_at: TimestampMs(GENESIS_TIME.0 + 60 * DAY),
                    dedup: Some(dedup("case-001")),
                },
            ),
            (
                STAFF_SEED,
                1,
                Payload::Attest {
                    subject: subject("case-002"),
                    claim: name("refugee-status"),
                    evidence: commitment("evidence-001"),
                    expires_at: TimestampMs(GENESIS_TIME.0 + 365 * DAY),
                },
            ),
            (
                STAFF_SEED,
                2,
                Payload::RegisterBirth {
                    subject: subject("case-003"),
                    event: RegistryEvent {
                        record: commitment("birth-001"),
                        date: "2027-01-10".parse().expect("a date"),
                        jurisdiction: name("district-07"),
                    },
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
                (ADMIN_SEED, 6, settle(1_000)),
                // Rejected (nothing more is owed): it changes only its author's sequence.
                (ADMIN_SEED, 7, settle(1)),
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
                let seed = [ADMIN_SEED, STAFF_SEED]
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
    let published: Value = serde_json::from_str(include_str!("../../../docs/vectors/genesis.json"))
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
    publish_or_check(&doc);
}
