//! Hostile and broken input against a live node's HTTP API: every kind of refusal gets its
//! stable status and code, nothing refused reaches a block, nothing accepted before is
//! disturbed, the node keeps running, and the chain still verifies.

mod common;

use common::{sign, Devnet, CHAIN_ID};
use serde_json::Value;
use std::time::Duration;
use tally_types::{
    CivilDate, Commitment, Keypair, Name, Payload, PublicKey, RegistryEvent, SubjectToken,
    TimestampMs,
};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn issue_payload(subject: u8, amount: u64) -> Payload {
    Payload::IssueVoucher {
        programme: Name::new("food-2026").expect("name"),
        subject: SubjectToken::derive(b"bad-input-test-secret-0123456789", &[subject])
            .expect("token"),
        amount,
        expires_at: TimestampMs(now_ms() + 7 * 86_400_000),
        dedup: None,
    }
}

fn assert_refused(out: &common::HttpOut, status: u16, code: &str, what: &str) {
    assert_eq!(out.status, status, "{what}: {}", out.json);
    assert_eq!(out.error_code(), code, "{what}: {}", out.json);
    assert!(
        out.json["error"]["detail"].is_string(),
        "{what}: every error has a detail: {}",
        out.json
    );
}

/// POSTs to /v1/entries over a bare connection (headers, then each piece of the body 200 ms
/// after the last, then `end`) and returns what the node answers, read until it closes or
/// 10 s pass. A write that fails fails the test: the node must not cut a client off mid-body.
fn raw_post(base: &str, header: &str, pieces: &[&[u8]], end: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the node");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let head = format!(
        "POST /v1/entries HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n{header}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).expect("send the head");
    for piece in pieces {
        conn.write_all(piece).expect("send a piece of the body");
        std::thread::sleep(Duration::from_millis(200));
    }
    conn.write_all(end).expect("send the end of the body");
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn bad_input_is_refused_and_harms_nothing() {
    let mut net = Devnet::start();
    let api = net.api();
    net.grant("issuer", "issuer");
    net.grant("registrar", "registrar");
    net.create_programme("food-2026", 100000);

    // A voucher issued by an entry built and signed here, sent as JSON.
    let issuer = net.keypair("issuer");
    let seq = api.next_sequence(&issuer.public());
    let good = sign(&issuer, CHAIN_ID, seq, issue_payload(1, 777));
    let out = api.submit_json(&good);
    assert_eq!(out.status, 202, "{}", out.json);
    let voucher_id = good.id().to_hex();
    assert_eq!(out.json["id"], voucher_id.as_str());
    assert_eq!(out.json["status"], "pending");
    let rec = api.wait_entry(&voucher_id, WAIT);
    assert_eq!(rec["status"], "committed", "{rec}");
    let voucher_height = rec["height"].as_u64().expect("height");

    // A second one sent in the canonical binary encoding.
    let good2 = sign(&issuer, CHAIN_ID, seq + 1, issue_payload(2, 555));
    let out = api.submit_bytes(&good2);
    assert_eq!(out.status, 202, "{}", out.json);
    let rec2 = api.wait_entry(&good2.id().to_hex(), WAIT);
    assert_eq!(rec2["status"], "committed", "{rec2}");

    let before = api.status();
    let voucher_before = api
        .get(&format!("/v1/vouchers/{voucher_id}"))
        .expect("voucher");
    assert_eq!(voucher_before["remaining"], 777);
    let programme_before = api.get("/v1/programmes/food-2026").expect("programme");
    let issuer_next = api.next_sequence(&issuer.public());
    assert_eq!(issuer_next, seq + 2);

    // Re-submitting an entry already in a block.
    assert_refused(
        &api.submit_json(&good),
        409,
        "duplicate_entry",
        "replayed entry",
    );
    assert_refused(
        &api.submit_bytes(&good2),
        409,
        "duplicate_entry",
        "replayed binary entry",
    );

    // Malformed JSON, JSON that is not an entry, and a JSON entry with a broken field.
    for (body, what) in [
        (&b"{not json"[..], "broken JSON"),
        (&b""[..], "empty JSON body"),
        (&b"{\"foo\": 1}"[..], "JSON that is not an entry"),
        (&b"[1, 2, 3]"[..], "a JSON array"),
        (&b"\xff\xfe\x00garbage"[..], "binary sent as JSON"),
    ] {
        assert_refused(&api.post("application/json", body), 400, "malformed", what);
    }
    let mut v: Value = serde_json::to_value(&good).expect("json");
    v["body"]["author"] = Value::String("zz".repeat(32));
    assert_refused(
        &api.post("application/json", v.to_string().as_bytes()),
        400,
        "malformed",
        "non-hex author",
    );
    let mut v: Value = serde_json::to_value(&good).expect("json");
    v["body"]["chain_id"] = Value::String("Amina Yusuf".into());
    assert_refused(
        &api.post("application/json", v.to_string().as_bytes()),
        400,
        "malformed",
        "free text where an identifier belongs",
    );

    // Malformed, truncated, padded and oversized binary.
    let fresh = sign(&issuer, CHAIN_ID, issuer_next, issue_payload(3, 10));
    let bytes = fresh.to_bytes();
    let mut padded = bytes.clone();
    padded.push(0);
    for (body, what) in [
        (vec![], "empty body"),
        (vec![0xde, 0xad, 0xbe, 0xef], "four random bytes"),
        (bytes[..bytes.len() / 2].to_vec(), "truncated to half"),
        (bytes[..bytes.len() - 1].to_vec(), "one byte short"),
        (padded, "one trailing byte"),
        (vec![0xff; 3000], "over the 2048-byte entry limit"),
    ] {
        assert_refused(
            &api.post("application/octet-stream", &body),
            400,
            "malformed",
            what,
        );
    }
    // The variant tag of the payload is out of range.
    let mut bad_tag = bytes.clone();
    // chain id: 8-byte length + text; author 32; sequence 8; then the payload's u32 tag.
    let tag_at = 8 + CHAIN_ID.len() + 32 + 8;
    bad_tag[tag_at..tag_at + 4].copy_from_slice(&999u32.to_le_bytes());
    assert_refused(
        &api.post("application/octet-stream", &bad_tag),
        400,
        "malformed",
        "unknown payload variant",
    );
    // A well-formed encoding of an entry that breaks its own payload checks.
    let zero = sign(&issuer, CHAIN_ID, issuer_next, issue_payload(3, 0));
    // docs/api.md: payload checks are refused with 422 `malformed`.
    assert_refused(&api.submit_bytes(&zero), 422, "malformed", "zero amount");

    // Wrong chain.
    let other = sign(&issuer, "other-chain", issuer_next, issue_payload(3, 10));
    assert_refused(&api.submit_bytes(&other), 422, "wrong_chain", "other chain");
    // The refusal is remembered for the submitter.
    let st = api
        .get(&format!("/v1/entries/{}", other.id()))
        .expect("refusal remembered");
    assert_eq!(st["status"], "rejected", "{st}");
    assert_eq!(st["reason"]["code"], "wrong_chain", "{st}");

    // Bad signatures: a flipped signature byte, a body changed after signing, another key's
    // signature, and an all-zero signature.
    let mut flipped = fresh.clone();
    flipped.signature.0[10] ^= 0x01;
    assert_refused(
        &api.submit_bytes(&flipped),
        422,
        "bad_signature",
        "flipped signature byte",
    );
    let mut flipped_json = fresh.clone();
    flipped_json.signature.0[63] ^= 0x80;
    assert_refused(
        &api.submit_json(&flipped_json),
        422,
        "bad_signature",
        "flipped signature byte (JSON)",
    );
    let mut changed = fresh.clone();
    changed.body.payload = issue_payload(3, 1_000_000);
    assert_refused(
        &api.submit_bytes(&changed),
        422,
        "bad_signature",
        "body changed after signing",
    );
    let mut body_byte = fresh.to_bytes();
    let last = body_byte.len() - 64 - 2; // inside the payload, before the signature
    body_byte[last] ^= 0x01;
    let out = api.post("application/octet-stream", &body_byte);
    // Refused by whichever check sees it first: the decoder (400), the payload's own checks
    // (here the expiry's top byte, which puts it past 2^53: 422 malformed), or the signature.
    assert!(
        out.status == 422 && ["bad_signature", "malformed"].contains(&out.error_code())
            || out.status == 400 && out.error_code() == "malformed",
        "flipped body byte: {}",
        out.json
    );
    let stranger = Keypair::generate().expect("key");
    let mut forged = fresh.clone();
    forged.signature = sign(&stranger, CHAIN_ID, issuer_next, issue_payload(3, 10)).signature;
    assert_refused(
        &api.submit_bytes(&forged),
        422,
        "bad_signature",
        "signed by another key",
    );
    let mut zero_sig = fresh.clone();
    zero_sig.signature = tally_types::Signature([0u8; 64]);
    assert_refused(
        &api.submit_bytes(&zero_sig),
        422,
        "bad_signature",
        "zero signature",
    );

    // Unknown author, and an author that is not even a valid curve point.
    let unknown = sign(&stranger, CHAIN_ID, 0, issue_payload(4, 10));
    assert_refused(
        &api.submit_bytes(&unknown),
        422,
        "unknown_author",
        "unregistered key",
    );
    let mut weak = unknown.clone();
    weak.body.author = PublicKey([0u8; 32]);
    let out = api.submit_bytes(&weak);
    assert_eq!(out.status, 422, "{}", out.json);
    assert!(
        ["bad_signature", "unknown_author"].contains(&out.error_code()),
        "{}",
        out.json
    );

    // Sequence numbers: reused, reused while pending, far in the future.
    let stale = sign(&issuer, CHAIN_ID, seq, issue_payload(5, 10));
    assert_refused(
        &api.submit_bytes(&stale),
        422,
        "stale_sequence",
        "reused sequence",
    );
    let future = sign(
        &issuer,
        CHAIN_ID,
        issuer_next + 1_000_000,
        issue_payload(5, 10),
    );
    assert_refused(
        &api.submit_bytes(&future),
        422,
        "future_sequence",
        "far-future sequence",
    );
    let huge = sign(&issuer, CHAIN_ID, u64::MAX, issue_payload(5, 10));
    assert_refused(
        &api.submit_bytes(&huge),
        422,
        "future_sequence",
        "sequence u64::MAX",
    );

    // A CLI signer with a used sequence number.
    let out = net.signed(
        "issuer",
        &[
            "voucher",
            "issue",
            "--programme",
            "food-2026",
            "--subject",
            &"ab".repeat(32),
            "--amount",
            "5",
            "--expires",
            "+1d",
            "--sequence",
            "0",
        ],
    );
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.json["reason"]["code"], "stale_sequence", "{out}");
    // A CLI signer whose key is not registered: a tool error (exit 2), nothing submitted.
    let stray = net.dir.path().join("stray.key");
    net.cli(&["keys", "new", "--out", stray.to_str().expect("utf8")])
        .ok();
    let out = common::run_tally(&[
        "voucher",
        "issue",
        "--programme",
        "food-2026",
        "--subject",
        &"ab".repeat(32),
        "--amount",
        "5",
        "--expires",
        "+1d",
        "--json",
        "--key",
        stray.to_str().expect("utf8"),
        "--node",
        &net.base,
    ]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("not registered"), "{out}");
    // Bad arguments are tool errors too.
    let out = net.signed(
        "issuer",
        &[
            "voucher",
            "issue",
            "--programme",
            "food 2026",
            "--subject",
            "nothex",
            "--amount",
            "5",
            "--expires",
            "+1d",
        ],
    );
    assert_eq!(out.code, 2, "{out}");

    // Oversized bodies: 100 KiB of binary, and of JSON.
    let big = vec![0u8; 100 * 1024];
    assert_refused(
        &api.post("application/octet-stream", &big),
        413,
        "body_too_large",
        "100 KiB binary body",
    );
    let big_json = format!("{{\"pad\": \"{}\"}}", "x".repeat(100 * 1024));
    assert_refused(
        &api.post("application/json", big_json.as_bytes()),
        413,
        "body_too_large",
        "100 KiB JSON body",
    );
    // Nearly 1 MiB through a raw connection, in chunks with no declared length, the first
    // 32 KiB (over the limit) a moment before the rest: a node that answered at the limit and
    // closed would fail the later writes; this one reads it all, then answers.
    let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
    let first = chunk.repeat(2);
    let rest = chunk.repeat(58);
    let answer = raw_post(
        &net.base,
        "Transfer-Encoding: chunked",
        &[first.as_bytes(), rest.as_bytes()],
        b"0\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "960 KiB chunked: {answer}"
    );
    assert!(
        answer.contains("body_too_large"),
        "960 KiB chunked: {answer}"
    );
    // A body that declares more than the node would drain is refused before it is sent, at
    // once (not after the drain's 5 s).
    let asked = std::time::Instant::now();
    let answer = raw_post(&net.base, "Content-Length: 4194304", &[], b"");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "4 MiB declared: {answer}"
    );
    assert!(
        answer.contains("body_too_large"),
        "4 MiB declared: {answer}"
    );
    // At the limit (api.body_bytes_max, 16384 by default) the body is read and refused as
    // no entry; one byte more is too large.
    assert_refused(
        &api.post("application/octet-stream", &[0u8; 16384]),
        400,
        "malformed",
        "a body at the limit",
    );
    assert_refused(
        &api.post("application/octet-stream", &[0u8; 16385]),
        413,
        "body_too_large",
        "a body one byte over the limit",
    );
    // Under the API limit but a signature of the wrong length: malformed, not a crash.
    let mut v: Value = serde_json::to_value(&fresh).expect("json");
    v["signature"] = Value::String("ab".repeat(5_000));
    assert_refused(
        &api.post("application/json", v.to_string().as_bytes()),
        400,
        "malformed",
        "10 kB signature",
    );

    // Bad query paths.
    for path in [
        "/v1/entries/not-hex",
        "/v1/keys/xyz",
        "/v1/vouchers/12",
        "/v1/blocks/minus-one",
    ] {
        let out = api.try_get(path).expect("reachable");
        assert_eq!(out.status, 400, "{path}: {}", out.json);
        assert_eq!(out.error_code(), "malformed", "{path}: {}", out.json);
    }
    let out = api.try_get("/v1/nothing-here").expect("reachable");
    assert_eq!(out.status, 404, "{}", out.json);
    assert_eq!(out.error_code(), "not_found", "{}", out.json);

    // Nothing refused reached the mempool or a block; everything accepted is untouched.
    assert!(net.node_alive(), "node survived\n{}", net.log());
    let after = api.status();
    assert_eq!(after["mempool_entries"], 0, "{after}");
    assert!(
        after["height"].as_u64() >= before["height"].as_u64(),
        "{before} -> {after}"
    );
    assert_eq!(
        after["height"], before["height"],
        "no refused entry produced a block: {before} -> {after}"
    );
    assert_eq!(after["state_root"], before["state_root"]);
    assert_eq!(
        api.get(&format!("/v1/vouchers/{voucher_id}")),
        Some(voucher_before.clone())
    );
    assert_eq!(api.get("/v1/programmes/food-2026"), Some(programme_before));
    assert_eq!(api.next_sequence(&issuer.public()), issuer_next);
    let rec = api.wait_entry(&voucher_id, WAIT);
    assert_eq!(rec["height"], voucher_height, "{rec}");
    assert_eq!(rec["status"], "committed", "{rec}");

    // Missing role: the issuer is no registrar, the registrar no issuer. The node may refuse
    // these at the door (422) or order them and reject them in a block as evidence (so a
    // device's later entries are not stranded); either way nothing changes but sequences.
    let birth = Payload::RegisterBirth {
        subject: SubjectToken::derive(b"bad-input-test-secret-0123456789", b"child")
            .expect("token"),
        event: RegistryEvent {
            record: Commitment::commit(&[7u8; 32], b"record").expect("commit"),
            date: CivilDate::new(2020, 1, 1).expect("date"),
            jurisdiction: Name::new("district-07").expect("name"),
        },
    };
    let registrar = net.keypair("registrar");
    let reg_next = api.next_sequence(&registrar.public());
    let mut ordered_missing_role = 0u64;
    for (entry, json, what) in [
        (
            sign(&issuer, CHAIN_ID, issuer_next, birth),
            false,
            "issuer registering a birth",
        ),
        (
            sign(&registrar, CHAIN_ID, reg_next, issue_payload(6, 10)),
            true,
            "registrar issuing a voucher",
        ),
    ] {
        let out = if json {
            api.submit_json(&entry)
        } else {
            api.submit_bytes(&entry)
        };
        if out.status == 202 {
            let rec = api.wait_entry(&entry.id().to_hex(), WAIT);
            assert_eq!(rec["status"], "rejected", "{what}: {rec}");
            assert_eq!(rec["reason"]["code"], "missing_role", "{what}: {rec}");
            assert!(rec["height"].is_u64(), "{what}: {rec}");
            ordered_missing_role += 1;
        } else {
            assert_refused(&out, 422, "missing_role", what);
        }
    }
    // Through the CLI too: exit 1 with the code.
    let out = net.signed(
        "registrar",
        &[
            "voucher",
            "issue",
            "--programme",
            "food-2026",
            "--subject",
            &"ab".repeat(32),
            "--amount",
            "5",
            "--expires",
            "+1d",
        ],
    );
    if net.missing_role(&out) {
        ordered_missing_role += 1;
    }
    assert!(net.node_alive(), "node survived\n{}", net.log());
    if ordered_missing_role == 0 {
        assert_eq!(api.status()["state_root"], before["state_root"]);
    }
    assert_eq!(
        api.get(&format!("/v1/vouchers/{voucher_id}")),
        Some(voucher_before.clone())
    );
    let fresh = if api.next_sequence(&issuer.public()) == issuer_next {
        fresh
    } else {
        sign(
            &issuer,
            CHAIN_ID,
            api.next_sequence(&issuer.public()),
            issue_payload(3, 10),
        )
    };

    // An offline backlog arriving out of order: the later entry waits, pending, for the gap.
    let gap_seq = fresh.body.sequence + 1;
    let later = sign(&issuer, CHAIN_ID, gap_seq, issue_payload(8, 20));
    let out = api.submit_bytes(&later);
    assert_eq!(out.status, 202, "{}", out.json);
    assert_refused(
        &api.submit_bytes(&later),
        409,
        "duplicate_entry",
        "same entry while pending",
    );
    let rival = sign(&issuer, CHAIN_ID, gap_seq, issue_payload(9, 20));
    assert_refused(
        &api.submit_json(&rival),
        422,
        "stale_sequence",
        "another entry at a pending sequence",
    );
    std::thread::sleep(Duration::from_millis(300));
    let st = api
        .get(&format!("/v1/entries/{}", later.id()))
        .expect("pending entry known");
    assert_eq!(st["status"], "pending", "waits for the gap: {st}");
    assert_eq!(api.status()["mempool_entries"], 1);

    // The node still takes good entries: the fresh one, never admitted so far, commits now,
    // and the one behind it follows.
    let out = api.submit_bytes(&fresh);
    assert_eq!(out.status, 202, "{}", out.json);
    let rec = api.wait_entry(&fresh.id().to_hex(), WAIT);
    assert_eq!(rec["status"], "committed", "{rec}");
    let rec_later = api.wait_entry(&later.id().to_hex(), WAIT);
    assert_eq!(rec_later["status"], "committed", "{rec_later}");
    assert!(rec_later["height"].as_u64() >= rec["height"].as_u64());
    assert_eq!(api.next_sequence(&issuer.public()), gap_seq + 1);
    let v = api
        .get(&format!("/v1/vouchers/{voucher_id}"))
        .expect("voucher");
    assert_eq!(v["remaining"], 777);
    assert!(net.node_alive(), "node survived\n{}", net.log());
    assert!(
        !net.log().contains("panicked"),
        "no panic in the node log\n{}",
        net.log()
    );

    assert_eq!(net.stop_node(), 0, "clean shutdown\n{}", net.log());
    let audit = net.audit_ok();
    // grants (2), programme, four issues, and any missing-role entries kept as evidence.
    assert_eq!(audit["entries"], 7 + ordered_missing_role, "{audit}");
    assert_eq!(audit["rejected_entries"], ordered_missing_role, "{audit}");
}

/// Makes `issuer` an issuer and opens programme `food-2026`; the issuer's key and next
/// sequence number.
fn issuing(net: &Devnet) -> (Keypair, u64) {
    net.grant("issuer", "issuer");
    net.create_programme("food-2026", 100000);
    let issuer = net.keypair("issuer");
    let seq = net.api().next_sequence(&issuer.public());
    (issuer, seq)
}

/// POSTs a batch to /v1/entries/batch; panics on transport failure.
fn post_batch(api: &common::Api, content_type: &str, body: &[u8]) -> common::HttpOut {
    api.try_post_to("/v1/entries/batch", content_type, body)
        .unwrap_or_else(|e| panic!("POST /v1/entries/batch: {e}"))
}

/// The status of each result of a batch: `pending`, or the refusal's code.
fn batch_answers(out: &common::HttpOut) -> Vec<String> {
    assert_eq!(out.status, 200, "{}", out.json);
    out.json["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", out.json))
        .iter()
        .map(|r| match r["status"].as_str() {
            Some("pending") => "pending".to_string(),
            Some("refused") => r["error"]["code"].as_str().expect("a code").to_string(),
            _ => panic!("unexpected result {r}"),
        })
        .collect()
}

#[test]
fn a_batch_is_admitted_entry_by_entry_and_refused_whole_only_when_unreadable() {
    let mut net = Devnet::start();
    let api = net.api();
    let (issuer, seq) = issuing(&net);
    let entry = |n: u64, subject: u8| sign(&issuer, CHAIN_ID, seq + n, issue_payload(subject, 10));
    let committed = entry(0, 1);
    assert_eq!(api.submit_bytes(&committed).status, 202);
    assert_eq!(
        api.wait_entry(&committed.id().to_hex(), WAIT)["status"],
        "committed"
    );
    let status = api.status();
    let max = status["limits"]["batch_entries_max"]
        .as_u64()
        .expect("the node says how many entries a batch may hold") as usize;
    assert_eq!(max, 256, "the default: {status}");

    // One author's next three sequence numbers in one batch, with refusals between them: each
    // entry is judged on its own, in the order sent, and answered in that order.
    let mut forged = entry(2, 3);
    forged.signature.0[5] ^= 1;
    let other_chain = sign(&issuer, "other-chain", seq + 2, issue_payload(4, 10));
    let good = [entry(1, 2), entry(2, 5), entry(3, 6)];
    let batch = [
        good[0].clone(),
        forged.clone(),
        committed.clone(),
        other_chain.clone(),
        good[1].clone(),
        good[1].clone(),
        good[2].clone(),
    ];
    let out = post_batch(
        &api,
        "application/octet-stream",
        &tally_types::encode_entries(&batch),
    );
    assert_eq!(
        batch_answers(&out),
        [
            "pending",
            "bad_signature",
            "duplicate_entry",
            "wrong_chain",
            "pending",
            "duplicate_entry",
            "pending"
        ],
        "{}",
        out.json
    );
    for (r, e) in out.json["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(&batch)
    {
        assert_eq!(r["id"], e.id().to_hex().as_str(), "{r}");
    }
    for e in &good {
        let rec = api.wait_entry(&e.id().to_hex(), WAIT);
        assert_eq!(rec["status"], "committed", "{rec}");
    }
    // A refusal in a batch is remembered as one on its own would be.
    let st = api
        .get(&format!("/v1/entries/{}", other_chain.id()))
        .expect("refusal remembered");
    assert_eq!(st["reason"]["code"], "wrong_chain", "{st}");

    // As JSON too; and an empty batch is a batch of none.
    let next = [entry(4, 7), entry(5, 8)];
    let out = post_batch(
        &api,
        "application/json",
        &serde_json::to_vec(&next).expect("JSON"),
    );
    assert_eq!(batch_answers(&out), ["pending", "pending"], "{}", out.json);
    assert!(batch_answers(&post_batch(&api, "application/octet-stream", b"")).is_empty());
    assert!(batch_answers(&post_batch(&api, "application/json", b"[]")).is_empty());
    for e in &next {
        assert_eq!(
            api.wait_entry(&e.id().to_hex(), WAIT)["status"],
            "committed"
        );
    }

    // Unreadable batches are refused whole: the good entry before the fault is not admitted.
    let fresh = entry(6, 9);
    let framed = tally_types::encode_entries(&[fresh.clone(), entry(7, 10)]);
    let mut bad_length = framed.clone();
    let second = 4 + fresh.to_bytes().len();
    bad_length[second..second + 4].copy_from_slice(&5000u32.to_le_bytes());
    let mut bad_byte = framed.clone();
    bad_byte[second + 4 + 8 + CHAIN_ID.len() + 32 + 8] = 0xee;
    for (body, fault, what) in [
        (framed[..framed.len() - 1].to_vec(), "entry 1", "cut short"),
        (bad_length, "entry 1", "a frame over the entry limit"),
        (bad_byte, "entry 1", "an unknown payload variant"),
        (framed[..3].to_vec(), "entry 0", "three bytes"),
    ] {
        let out = post_batch(&api, "application/octet-stream", &body);
        assert_refused(&out, 400, "malformed", what);
        let detail = out.json["error"]["detail"].as_str().expect("detail");
        assert!(detail.starts_with(fault), "{what}: {detail}");
    }
    for (body, what) in [
        (&b"{\"not\": \"an array\"}"[..], "a JSON object"),
        (&b"[1, 2]"[..], "an array of numbers"),
        (&b"[{"[..], "broken JSON"),
    ] {
        assert_refused(
            &post_batch(&api, "application/json", body),
            400,
            "malformed",
            what,
        );
    }
    // One entry more than the node takes in a batch.
    let many: Vec<_> = (0..=max as u64).map(|n| entry(6 + n, 11)).collect();
    assert_refused(
        &post_batch(
            &api,
            "application/octet-stream",
            &tally_types::encode_entries(&many),
        ),
        413,
        "body_too_large",
        "257 entries",
    );
    assert_refused(
        &post_batch(
            &api,
            "application/json",
            &serde_json::to_vec(&many).expect("JSON"),
        ),
        413,
        "body_too_large",
        "257 entries as JSON",
    );
    assert_eq!(
        api.get(&format!("/v1/entries/{}", fresh.id())),
        None,
        "nothing of a refused batch was admitted"
    );
    assert_eq!(api.status()["mempool_entries"], 0);
    assert!(net.node_alive(), "node survived\n{}", net.log());
    assert_eq!(net.stop_node(), 0, "clean shutdown\n{}", net.log());
    let audit = net.audit_ok();
    // The grant, the programme, and the six issues admitted one by one or in batches.
    assert_eq!(audit["entries"], 8, "{audit}");
    assert_eq!(audit["rejected_entries"], 0, "{audit}");
}

/// Refusals are remembered for `GET /v1/entries/{id}` only for entries a registered key signed:
/// a copy with a bad signature never makes the genuine entry read as refused, and junk that
/// costs no signature check, or is signed by keys made up for it, cannot push out the refusals
/// an honest submitter comes back to read.
#[test]
fn only_refusals_of_members_signed_entries_are_remembered_and_junk_cannot_push_them_out() {
    let mut net = Devnet::create();
    net.configure_api("recent_rejections_max = 50\n");
    net.start_node();
    let api = net.api();
    let (issuer, seq) = issuing(&net);

    // An honest device's mistake, remembered: signed by a member, for another chain.
    let mistake = sign(&issuer, "other-chain", seq, issue_payload(1, 10));
    assert_refused(
        &api.submit_bytes(&mistake),
        422,
        "wrong_chain",
        "other chain",
    );
    let remembered = format!("/v1/entries/{}", mistake.id());
    assert_eq!(
        api.get(&remembered).expect("remembered")["reason"]["code"],
        "wrong_chain"
    );

    // A copy of a not yet submitted entry with a bad signature: refused, not remembered, so
    // the genuine entry is unknown until it arrives, and then pending as ever.
    let genuine = sign(&issuer, CHAIN_ID, seq, issue_payload(2, 10));
    let mut copy = genuine.clone();
    copy.signature.0[7] ^= 0x01;
    assert_refused(&api.submit_bytes(&copy), 422, "bad_signature", "bad copy");
    assert_eq!(api.get(&format!("/v1/entries/{}", genuine.id())), None);

    // Four times the memory's size of junk, in batches: used sequence numbers (refused with
    // no signature check), bad signatures, and entries signed by keys nobody registered.
    let admin = net.keypair("admin");
    let strangers: Vec<Keypair> = (0..4)
        .map(|i| Keypair::from_seed_for_tests(7_000 + i))
        .collect();
    let mut junk = Vec::new();
    for n in 0..200u64 {
        let subject = (n % 250) as u8;
        junk.push(match n % 3 {
            0 => sign(&admin, CHAIN_ID, 0, issue_payload(subject, 10 + n)),
            1 => {
                let mut e = sign(&issuer, CHAIN_ID, seq + 1 + n, issue_payload(subject, 10));
                e.signature.0[0] ^= 0x01;
                e
            }
            _ => sign(
                &strangers[(n % 4) as usize],
                CHAIN_ID,
                n,
                issue_payload(subject, 10),
            ),
        });
    }
    for chunk in junk.chunks(50) {
        let out = post_batch(
            &api,
            "application/octet-stream",
            &tally_types::encode_entries(chunk),
        );
        for code in batch_answers(&out) {
            assert!(
                ["stale_sequence", "bad_signature", "unknown_author"].contains(&code.as_str()),
                "{code}"
            );
        }
    }
    for e in &junk {
        assert_eq!(
            api.get(&format!("/v1/entries/{}", e.id())),
            None,
            "junk is not remembered"
        );
    }
    assert_eq!(
        api.get(&remembered).expect("still remembered")["reason"]["code"],
        "wrong_chain",
        "the honest refusal survives the junk"
    );

    // The genuine entry is admitted and committed as if no copy had come first.
    let out = api.submit_bytes(&genuine);
    assert_eq!(out.status, 202, "{}", out.json);
    let rec = api.wait_entry(&genuine.id().to_hex(), WAIT);
    assert_eq!(rec["status"], "committed", "{rec}");
    net.stop_node();
}

/// The refusals the HTTP framework makes on its own come in the documented error shape too.
#[test]
fn the_http_layers_own_refusals_come_in_the_error_shape() {
    let mut net = Devnet::start();
    let api = net.api();
    // A route asked with the wrong method: 405, saying which methods it takes.
    let out = api.try_get("/v1/entries").expect("an answer");
    assert_refused(&out, 405, "method_not_allowed", "GET on a POST route");
    // A path that is not UTF-8 once percent-decoded.
    let out = api.try_get("/v1/entries/%FF%FE").expect("an answer");
    assert_refused(&out, 400, "malformed", "path not UTF-8");
    // No such route (the router's own fallback).
    let out = api.try_get("/v2/anything").expect("an answer");
    assert_refused(&out, 404, "not_found", "no such route");
    net.stop_node();
}

/// A flood of entries with bad signatures, in batches, costs the node one signature check per
/// entry: once a batch has failed, entries are checked one by one for a while, instead of in a
/// batch that fails and then one by one again.
#[test]
fn a_flood_of_bad_signatures_costs_one_check_per_entry() {
    let mut net = Devnet::start();
    let api = net.api();
    let (issuer, seq) = issuing(&net);
    let flood: Vec<_> = (0..3_000u64)
        .map(|n| {
            let mut e = sign(&issuer, CHAIN_ID, seq + n % 200, issue_payload(1, 1 + n));
            // In S, which stays canonical: the signature decodes, and only the check fails.
            e.signature.0[40] ^= 0x01;
            e
        })
        .collect();
    let before = api.status()["signature_verifications"]
        .as_u64()
        .expect("count");
    for chunk in flood.chunks(250) {
        let out = post_batch(
            &api,
            "application/octet-stream",
            &tally_types::encode_entries(chunk),
        );
        assert!(batch_answers(&out).iter().all(|c| c == "bad_signature"));
    }
    let checks = api.status()["signature_verifications"]
        .as_u64()
        .expect("count")
        - before;
    let per_entry = checks as f64 / flood.len() as f64;
    eprintln!("{checks} signature checks for {} bad entries", flood.len());
    assert!(
        per_entry <= 1.2,
        "{checks} signature checks for {} bad entries ({per_entry:.2} each)",
        flood.len()
    );
    net.stop_node();
}
