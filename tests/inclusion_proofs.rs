//! Inclusion proofs end to end: a real node serves the proof of a committed entry and of an entry
//! a rule rejected, `tally audit proof` writes it, and `tally audit check-proof` checks it with
//! the node stopped, holding only the genesis file. Tampered, truncated and foreign-chain proofs
//! fail with the check that names what is wrong.

mod common;

use common::{CmdOut, Devnet};
use std::path::{Path, PathBuf};

fn fetch(net: &Devnet, entry: &str, file: &str) -> (CmdOut, PathBuf) {
    let path = net.dir.path().join(file);
    let out = net.query(&[
        "audit",
        "proof",
        entry,
        "--out",
        path.to_str().expect("utf8"),
    ]);
    (out, path)
}

fn check(proof: &Path, genesis: &Path) -> CmdOut {
    common::run_tally(&[
        "audit",
        "check-proof",
        proof.to_str().expect("utf8"),
        "--genesis",
        genesis.to_str().expect("utf8"),
        "--json",
    ])
}

fn check_fails(net: &Devnet, bytes: &[u8], file: &str, genesis: &Path, check_name: &str) {
    let path = net.write_file(file, bytes);
    let out = check(&path, genesis);
    assert_eq!(out.code, 1, "{file} must fail: {out}");
    assert_eq!(out.json["ok"], false, "{out}");
    assert_eq!(out.json["check"], check_name, "{file}: {out}");
    assert!(
        out.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{out}"
    );
}

#[test]
fn proofs_check_offline_and_tampering_names_the_failed_check() {
    let mut net = Devnet::start();
    let grant = net.grant("issuer", "issuer");
    net.create_programme("food-2026", 1_000_000);
    let again = net.try_create_programme("food-2026", 5);
    let rejected = net.rejected(&again, "programme_exists");

    // The node serves proofs over its API; an unknown id is a 404, a bad one a 400.
    let api = net.api();
    let served = api
        .get(&format!("/v1/entries/{grant}/proof"))
        .expect("proof of a committed entry");
    assert_eq!(served["outcome"], "accepted", "{served}");
    let unknown = "ab".repeat(32);
    assert!(api.get(&format!("/v1/entries/{unknown}/proof")).is_none());
    let bad = api.try_get("/v1/entries/xyz/proof").expect("reachable");
    assert_eq!((bad.status, bad.error_code()), (400, "malformed"));
    let out = net.query(&[
        "audit",
        "proof",
        &unknown,
        "--out",
        net.dir.path().join("none.proof").to_str().expect("utf8"),
    ]);
    assert_eq!(out.code, 1, "no proof for an unknown entry: {out}");

    let (out, grant_proof) = fetch(&net, &grant, "grant.proof");
    let fetched = out.ok().clone();
    assert_eq!(fetched["entry"], grant.as_str(), "{out}");
    assert_eq!(fetched["height"], served["height"], "{out}");
    let (out, rejected_proof) = fetch(&net, &rejected, "rejected.proof");
    out.ok();

    // Offline: the node is gone, the genesis file is all the checker has.
    net.stop_node();
    let out = check(&grant_proof, &net.genesis);
    let ok = out.ok();
    assert_eq!(ok["ok"], true, "{out}");
    assert_eq!(ok["entry"], grant.as_str(), "{out}");
    assert_eq!(ok["kind"], "grant_role", "{out}");
    assert_eq!(ok["outcome"], "accepted", "{out}");
    assert_eq!(ok["height"], fetched["height"], "{out}");
    assert_eq!(
        (ok["signers"].clone(), ok["validators"].clone()),
        (1.into(), 1.into())
    );
    let out = check(&rejected_proof, &net.genesis);
    assert_eq!(out.ok()["outcome"]["rejected"], "programme_exists", "{out}");

    // The human form names the entry and its outcome.
    let human = common::run_tally(&[
        "audit",
        "check-proof",
        grant_proof.to_str().expect("utf8"),
        "--genesis",
        net.genesis.to_str().expect("utf8"),
    ]);
    assert_eq!(human.code, 0, "{human}");
    assert!(
        human.stdout.starts_with(&format!("OK entry {grant}")),
        "{human}"
    );

    let bytes = std::fs::read(&grant_proof).expect("read proof");
    // The certificate's last signature is the file's last 64 bytes.
    let mut sig = bytes.clone();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    check_fails(&net, &sig, "sig.proof", &net.genesis, "certificate");
    // The entry starts after the one-byte version: its chain id's length, then its name.
    let mut entry = bytes.clone();
    entry[12] ^= 0x20;
    check_fails(&net, &entry, "entry.proof", &net.genesis, "chain");
    check_fails(
        &net,
        &bytes[..bytes.len() - 10],
        "truncated.proof",
        &net.genesis,
        "format",
    );
    let mut longer = bytes.clone();
    longer.push(0);
    check_fails(&net, &longer, "longer.proof", &net.genesis, "format");
    let other = net.other_genesis("other-chain");
    check_fails(&net, &bytes, "foreign.proof", &other, "chain");

    // A missing file is the tool's failure (exit 2), not a verdict on a proof.
    let out = check(&net.dir.path().join("absent.proof"), &net.genesis);
    assert_eq!(out.code, 2, "{out}");
}
