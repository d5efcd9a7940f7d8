//! Fuzz targets: one per kind of bytes tally reads from someone it does not trust (a peer, a
//! client, a file, a person) or from a disk that may lie. Each takes any bytes and panics only
//! when tally breaks a promise about them: a value that does not survive its other encoding
//! (JSON, a receipt's text), or a panic anywhere on the way (a decoder, a checked signature,
//! a verified proof, a parsed config, a consensus core taking up a safety record). A refusal
//! is never a finding. That accepted bytes are the bytes tally would write is
//! `codec::decode`'s own check, so the targets do not repeat it.
//!
//! The test suite runs every target over its corpus (`fuzz/corpus/<target>/`) and over a few
//! thousand seeded mutations of it ([`mutate`]); `cargo xtask fuzz` runs them for hours under
//! AFL++, guided by coverage (docs/fuzzing.md).

use futures::executor::block_on;
use libp2p::request_response::Codec as _;
use std::sync::OnceLock;
use tally_network::wire::{Codec, PROTOCOL};
use tally_types::{
    codec, decode_entries, Block, CommitCertificate, Genesis, HeldTokens, InclusionProof,
    PublicKey, Receipt, SignedEntry,
};

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory and the campaign command use.
pub const TARGETS: &[(&str, Target)] = &[
    ("entry", entry),
    ("block", block),
    ("certificate", certificate),
    ("frame", frame),
    ("proof", proof),
    ("receipt", receipt),
    ("api_body", api_body),
    ("config", config),
    ("genesis", genesis),
    ("safety_record", safety_record),
];

/// The target of that name.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Most entries the `api_body` target reads from one batch, as `api.batch_entries_max` would.
const BATCH_ENTRIES_MAX: usize = 64;

/// Frames the `frame` target reads, at most: the smallest limit a config may set.
const FRAME_BYTES_MAX: usize = 64 * 1024;

/// The genesis of the specification's vectors (docs/vectors/genesis.json) and its validators:
/// proofs, receipts and certificates are checked against a real chain, so that a mutation of a
/// real one reaches the deep checks rather than the first refusal.
fn vectors_genesis() -> &'static (Genesis, Vec<PublicKey>) {
    static GENESIS: OnceLock<(Genesis, Vec<PublicKey>)> = OnceLock::new();
    GENESIS.get_or_init(|| {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/vectors/genesis.json"))
                .expect("docs/vectors/genesis.json is JSON");
        let hex_bytes = json["genesis_bytes"]
            .as_str()
            .expect("genesis_bytes is a string");
        let genesis: Genesis =
            codec::decode(&hex::decode(hex_bytes).expect("genesis_bytes is hex"))
                .expect("the vectors' genesis decodes");
        let validators = genesis.validator_keys();
        (genesis, validators)
    })
}

/// A signed entry as a peer relays it or a device submits it.
pub fn entry(data: &[u8]) {
    let Ok(e) = SignedEntry::from_bytes(data) else {
        return;
    };
    let _ = e.verify_signature();
    let _ = e.body.payload.check_well_formed();
    same_in_json(&e);
}

/// An entry's JSON form (the API's other body format) must read back as the same entry.
fn same_in_json(e: &SignedEntry) {
    let json = serde_json::to_vec(e).expect("an entry serialises to JSON");
    let back: SignedEntry = serde_json::from_slice(&json).unwrap_or_else(|err| {
        panic!(
            "an entry's JSON does not read back ({err}): {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(&back, e, "an entry's JSON reads back as another entry");
}

/// A block as block sync and pushes carry it.
pub fn block(data: &[u8]) {
    let Ok(b) = codec::decode::<Block>(data) else {
        return;
    };
    let _ = b.hash();
    let _ = Block::compute_entries_root(&b.entries);
    for e in &b.entries {
        let _ = e.id();
        same_in_json(e);
    }
}

/// A commit certificate, checked against the vectors' validators for the block it names.
pub fn certificate(data: &[u8]) {
    let Ok(c) = codec::decode::<CommitCertificate>(data) else {
        return;
    };
    let (genesis, validators) = vectors_genesis();
    let _ = c.verify_for(&genesis.chain_id, c.height, &c.block_hash, validators);
}

/// What a peer sends on the peer port: a length-prefixed frame holding a request (block sync,
/// or any message of the message stream) or a block-sync response, read by the codec the node
/// uses; a consensus message in it is checked as the core would.
pub fn frame(data: &[u8]) {
    let mut codec = Codec {
        request_bytes_max: FRAME_BYTES_MAX,
        response_bytes_max: FRAME_BYTES_MAX,
        ..Codec::default()
    };
    let protocol = libp2p::StreamProtocol::new(PROTOCOL);
    let cursor = || futures::io::Cursor::new(data);
    if let Ok(envelope) = block_on(codec.read_request(&protocol, &mut cursor())) {
        if let tally_network::Request::Consensus { message, .. } = &envelope.request {
            let _ = message.verify(&envelope.chain_id);
        }
    }
    let _ = block_on(codec.read_response(&protocol, &mut cursor()));
}

/// An inclusion proof file, verified against the vectors' genesis.
pub fn proof(data: &[u8]) {
    let Ok(p) = InclusionProof::from_bytes(data) else {
        return;
    };
    let _ = p.verify(&vectors_genesis().0);
}

/// A receipt: its bytes (what its QR code holds), or its text (the printed slip, typed or
/// scanned back).
pub fn receipt(data: &[u8]) {
    let genesis = &vectors_genesis().0;
    if let Ok(r) = Receipt::from_bytes(data) {
        let text = r.to_text();
        let (back, printed) = Receipt::from_text(&text)
            .unwrap_or_else(|e| panic!("a receipt's text does not read back ({e}):\n{text}"));
        assert_eq!(
            back.to_bytes(),
            data,
            "a receipt's text reads back as another"
        );
        let _ = r.verify(genesis, &HeldTokens::default(), Some(&printed));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((r, printed)) = Receipt::from_text(text) {
            let _ = r.verify(genesis, &HeldTokens::default(), Some(&printed));
        }
    }
}

/// A body of `POST /v1/entries` or `POST /v1/entries/batch`, in either format, as the API
/// reads it; the first byte picks which.
pub fn api_body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => entry(body),
        1 => {
            if let Ok(entries) = decode_entries(body, BATCH_ENTRIES_MAX) {
                assert!(entries.len() <= BATCH_ENTRIES_MAX);
                for e in &entries {
                    same_in_json(e);
                }
            }
        }
        2 => {
            if let Ok(e) = serde_json::from_slice::<SignedEntry>(body) {
                same_in_binary(&e);
            }
        }
        _ => {
            if let Ok(entries) = serde_json::from_slice::<Vec<SignedEntry>>(body) {
                for e in entries.iter().take(BATCH_ENTRIES_MAX) {
                    same_in_binary(e);
                }
            }
        }
    }
}

/// An entry read from JSON must be one its canonical bytes give back.
fn same_in_binary(e: &SignedEntry) {
    let bytes = e.to_bytes();
    if bytes.len() > tally_types::ENTRY_BYTES_MAX {
        // The API refuses it by its size (`within_limit`) before anything else.
        return;
    }
    match SignedEntry::from_bytes(&bytes) {
        Ok(back) => assert_eq!(&back, e, "an entry's bytes read back as another entry"),
        Err(err) => panic!("an entry read from JSON has bytes that do not read back: {err}"),
    }
    let _ = e.verify_signature();
}

/// A node's config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = toml::from_str::<tally_config::NodeConfig>(text) {
        let _ = c.validate();
    }
}

/// A genesis file (TOML), as `tally node run` and `tally audit verify` read it.
pub fn genesis(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(g) = toml::from_str::<Genesis>(text) {
        if g.validate().is_ok() {
            let _ = g.hash();
            let _ = g.validator_keys();
        }
    }
}

/// The validator of the vectors' genesis whose records the `safety_record` target reads
/// (docs/vectors/keys.json: seed 11).
const SAFETY_RECORD_KEY_SEED: u64 = 11;

/// A consensus safety record read back from disk (a repair carries it into a fresh
/// directory), taken up by a validator of the vectors' genesis whose chain is at height 1:
/// the record may be behind, at or ahead of it, and sync then carries the core to it.
pub fn safety_record(data: &[u8]) {
    let Ok(record) = tally_consensus::SafetyRecord::decode(data) else {
        return;
    };
    let (genesis, validators) = vectors_genesis();
    let Ok(set) = tally_consensus::ValidatorSet::new(validators) else {
        return;
    };
    let height = record.height;
    let Ok(mut core) = tally_consensus::Core::new(
        genesis.chain_id.clone(),
        tally_types::Keypair::from_seed_for_tests(SAFETY_RECORD_KEY_SEED),
        set,
        tally_consensus::Timeouts::default(),
        1,
        Some(record),
    ) else {
        return;
    };
    let _ = core.handle(tally_consensus::Input::Start);
    let _ = core.handle(tally_consensus::Input::Synced {
        height: height.saturating_sub(1),
    });
    let _ = core.handle(tally_consensus::Input::Tick);
}

/// A seeded mutation of `input`, the kind AFL++ starts with (bit flips, interesting bytes and
/// lengths, removed, repeated and spliced runs), for the suite's brief runs, which have no
/// coverage to guide them. `rng` is any 64-bit state; it is advanced.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut u64) -> Vec<u8> {
    let mut next = |n: usize| -> usize {
        // xorshift64*: small, fast, and the same on every machine.
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    };
    let mut out = input.to_vec();
    for _ in 0..=next(4) {
        let len = out.len();
        match next(7) {
            0 if len > 0 => {
                let i = next(len);
                out[i] ^= 1 << next(8);
            }
            1 if len > 0 => {
                const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x20, 0x22];
                let i = next(len);
                out[i] = INTERESTING[next(INTERESTING.len())];
            }
            2 if len >= 4 => {
                // A length or count: bincode's are little-endian u64s, frames' u32s.
                const LENGTHS: [u32; 6] = [0, 1, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff];
                let i = next(len - 3);
                out[i..i + 4].copy_from_slice(&LENGTHS[next(LENGTHS.len())].to_le_bytes());
            }
            3 if len > 0 => {
                let i = next(len);
                let n = 1 + next((len - i).min(16));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = next(len);
                let n = 1 + next((len - i).min(16));
                let run: Vec<u8> = out[i..i + n].to_vec();
                let at = next(len + 1);
                out.splice(at..at, run);
            }
            5 if !other.is_empty() => {
                let from = next(other.len());
                let n = 1 + next((other.len() - from).min(64));
                let at = next(len + 1);
                let cut = (at + n).min(len);
                out.splice(at..cut, other[from..from + n].iter().copied());
            }
            _ => {
                let at = next(len + 1);
                out.insert(at, next(256) as u8);
            }
        }
    }
    out
}

/// The seed corpus: real values of every kind each target reads, from the specification's
/// vectors (docs/vectors/) and the example configs, so fuzzing starts from what tally writes.
/// `cargo run -p tally-fuzz --bin tally-fuzz-seeds` writes them under `fuzz/corpus/`; the
/// suite checks that the corpus holds every one.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use tally_network::{CertifiedBlock, Envelope, ProposedBlock, Request, Response};
    use tally_types::{Hash, Keypair};
    let json = |text: &str| -> serde_json::Value {
        serde_json::from_str(text).expect("the vectors are JSON")
    };
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        hex::decode(v.as_str().expect("a hex string")).expect("hex")
    };
    let entries = json(include_str!("../../../docs/vectors/entries.json"));
    let blocks = json(include_str!("../../../docs/vectors/blocks.json"));
    let proofs = json(include_str!("../../../docs/vectors/proofs.json"));
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut signed = Vec::new();
    for e in entries["entries"].as_array().expect("entries") {
        let kind = e["kind"].as_str().expect("kind");
        let b = bytes(&e["signed_entry_bytes"]);
        signed.push(SignedEntry::from_bytes(&b).expect("a vector entry decodes"));
        out.push(("entry", kind.to_string(), b.clone()));
        out.push((
            "api_body",
            format!("binary-{kind}"),
            [&[0u8][..], &b].concat(),
        ));
        let e = signed.last().expect("just pushed");
        let as_json = serde_json::to_vec(e).expect("JSON");
        out.push((
            "api_body",
            format!("json-{kind}"),
            [&[2u8][..], &as_json].concat(),
        ));
    }
    let batch = bytes(&entries["batch"]["bytes"]);
    out.push((
        "api_body",
        "binary-batch".into(),
        [&[1u8][..], &batch].concat(),
    ));
    let as_json = serde_json::to_vec(&signed[..4]).expect("JSON");
    out.push((
        "api_body",
        "json-batch".into(),
        [&[3u8][..], &as_json].concat(),
    ));

    let block_bytes = bytes(&blocks["block_bytes"]);
    let cert_bytes = bytes(&blocks["certificate"]["certificate_bytes"]);
    out.push(("block", "vectors".into(), block_bytes.clone()));
    out.push(("certificate", "vectors".into(), cert_bytes.clone()));
    out.push(("proof", "vectors".into(), bytes(&proofs["proof_bytes"])));
    for (i, r) in proofs["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .enumerate()
    {
        out.push(("receipt", format!("bytes-{i}"), bytes(&r["receipt_bytes"])));
        let text = r["text"].as_str().expect("text");
        out.push(("receipt", format!("text-{i}"), text.as_bytes().to_vec()));
    }

    let block: Block = codec::decode(&block_bytes).expect("the vector block decodes");
    let certificate: CommitCertificate =
        codec::decode(&cert_bytes).expect("the vector certificate decodes");
    let chain_id = vectors_genesis().0.chain_id.clone();
    let validator = Keypair::from_seed_for_tests(11);
    let vote = tally_consensus::Vote::sign(
        &validator,
        &chain_id,
        tally_consensus::VoteKind::Prevote,
        1,
        0,
        Some(block.hash()),
    );
    let proposal = tally_consensus::Proposal::sign(&validator, &chain_id, 1, 0, block.hash(), None);
    let certified = CertifiedBlock {
        block: block.clone(),
        certificate,
    };
    let requests = [
        (
            "vote",
            Request::Consensus {
                message: Box::new(tally_consensus::Message::Vote(vote)),
                block: None,
            },
        ),
        (
            "proposal",
            Request::Consensus {
                message: Box::new(tally_consensus::Message::Proposal(proposal)),
                block: Some(Box::new(ProposedBlock::full(block.clone()))),
            },
        ),
        ("entries", Request::Entries(signed[..3].to_vec())),
        ("blocks", Request::Blocks { from_height: 1 }),
        ("push", Request::Push(vec![certified.clone()])),
        (
            "fetch-entries",
            Request::FetchEntries {
                block: block.hash(),
                ids: signed[..2].iter().map(SignedEntry::id).collect(),
            },
        ),
        (
            "fetched",
            Request::Fetched {
                block: Hash::ZERO,
                entries: signed[..2].to_vec(),
            },
        ),
    ];
    let framed = |body: Vec<u8>| [&(body.len() as u32).to_le_bytes()[..], &body].concat();
    for (name, request) in requests {
        let envelope = Envelope {
            chain_id: chain_id.clone(),
            request,
        };
        out.push((
            "frame",
            format!("request-{name}"),
            framed(codec::encode(&envelope)),
        ));
    }
    for (name, response) in [
        ("ack", Response::Ack),
        ("blocks", Response::Blocks(vec![certified])),
        ("refused", Response::Refused),
    ] {
        out.push((
            "frame",
            format!("response-{name}"),
            framed(codec::encode(&response)),
        ));
    }

    out.push((
        "genesis",
        "four-validators".into(),
        include_str!("../../../node-config/four-validators/genesis.toml")
            .as_bytes()
            .to_vec(),
    ));
    let signer = Keypair::from_seed_for_tests(SAFETY_RECORD_KEY_SEED);
    for (name, height) in [("at-the-chain", 2), ("ahead-of-the-chain", 3)] {
        let vote = |kind, round, block| {
            tally_consensus::Message::Vote(tally_consensus::Vote::sign(
                &signer, &chain_id, kind, height, round, block,
            ))
        };
        let record = tally_consensus::SafetyRecord {
            height,
            round: 1,
            step: tally_consensus::Step::Prevote,
            locked: None,
            valid: None,
            signed: vec![vote(
                tally_consensus::VoteKind::Prevote,
                1,
                Some(block.hash()),
            )],
            proof_of_lock: Vec::new(),
            left: vec![vote(tally_consensus::VoteKind::Precommit, 0, None)],
        };
        out.push((
            "safety_record",
            name.into(),
            tally_types::codec::encode(&record),
        ));
    }
    for (name, text) in [
        (
            "example",
            include_str!("../../../node-config/node.example.toml"),
        ),
        (
            "four-validators-1",
            include_str!("../../../node-config/four-validators/node-1/node.toml"),
        ),
    ] {
        out.push(("config", name.to_string(), text.as_bytes().to_vec()));
    }
    out
}
