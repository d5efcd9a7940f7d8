//! A field day with the connection gone: two devices redeem the same voucher offline, the node
//! comes back, each device syncs its outbox (one redemption commits with its receipt, the
//! conflicting one is rejected as over balance and kept as evidence), sequence numbers stay
//! consistent across online and offline use, a damaged outbox is reported with its readable
//! entries kept, and the day is reconciled from the auditor's own replay, against the node and
//! against a node that lies about one figure.

mod common;

use common::{CmdOut, Devnet};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn outbox_cmd(net: &Devnet, verb: &str, signer: &str, outbox: &Path) -> CmdOut {
    let key = net.key(signer).to_str().expect("utf8").to_string();
    let mut args = vec![
        "outbox",
        verb,
        "--key",
        &key,
        "--outbox",
        outbox.to_str().expect("utf8"),
        "--json",
    ];
    if verb != "status" {
        args.extend(["--node", &net.base]);
    }
    net.cli(&args)
}

/// A redemption by a device that keeps an outbox: signed with no node (`--offline`) and queued,
/// or sent online.
fn redeem(
    net: &Devnet,
    signer: &str,
    outbox: &Path,
    offline: bool,
    (voucher, amount, reference): (&str, u64, &str),
) -> CmdOut {
    let dir = outbox.to_str().expect("utf8");
    let mut extra = vec!["--outbox", dir];
    if offline {
        extra.push("--offline");
    }
    net.redeem_as(signer, voucher, amount, reference, &extra)
}

fn queued_sequence(out: &CmdOut) -> u64 {
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json["status"], "queued", "{out}");
    out.json["sequence"].as_u64().expect("sequence")
}

fn report(net: &Devnet, node: &str) -> CmdOut {
    common::run_tally(&[
        "audit",
        "report",
        "--node",
        node,
        "--genesis",
        net.genesis.to_str().expect("utf8"),
        "--json",
    ])
}

fn programme_figures(report: &Value) -> Value {
    report["programmes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["programme"] == "food-2026"))
        .cloned()
        .unwrap_or_else(|| panic!("food-2026 in {report}"))
}

/// A node that lies about one figure: it adds 1 to the first programme's `redeemed`.
fn lie_about_redeemed(path: &str, answer: &mut Value) {
    if path == "/v1/programmes" {
        if let Some(r) = answer["programmes"][0]["redeemed"].as_u64() {
            answer["programmes"][0]["redeemed"] = (r + 1).into();
        }
    }
}

#[test]
fn an_offline_day_syncs_conflicts_and_reconciles() {
    // Two field devices: the redeemer's, and a second one whose key (attester) also redeems.
    let mut net = Devnet::start_aid(&[("attester", "redeemer")], 100_000);
    let (subject, dedup) = net.derive_tokens("case-0100");
    let voucher = net.committed(&net.issue_voucher(&subject, 5000, "+7d", Some(&dedup)));
    let dir: PathBuf = net.dir.path().to_path_buf();
    let (dev_a, dev_b) = (dir.join("device-a"), dir.join("device-b"));

    // Offline signing needs an outbox prepared while connected.
    let out = redeem(&net, "redeemer", &dev_a, true, (&voucher, 1, "too-early"));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("outbox prepare"), "{out}");
    assert_eq!(
        outbox_cmd(&net, "prepare", "redeemer", &dev_a).ok()["next_sequence"],
        0
    );
    assert_eq!(
        outbox_cmd(&net, "prepare", "attester", &dev_b).ok()["next_sequence"],
        0
    );
    // Online use of a key with an outbox moves the device's sequence on.
    net.committed(&redeem(
        &net,
        "redeemer",
        &dev_a,
        false,
        (&voucher, 1000, "a-0"),
    ));

    // The node goes away mid-day.
    net.stop_node();
    let a1 = redeem(&net, "redeemer", &dev_a, true, (&voucher, 3000, "a-1"));
    let a2 = redeem(&net, "redeemer", &dev_a, true, (&voucher, 1000, "a-2"));
    assert_eq!((queued_sequence(&a1), queued_sequence(&a2)), (1, 2));
    // The other device redeems the same voucher: together they ask more than it holds.
    let b1 = redeem(&net, "attester", &dev_b, true, (&voucher, 4000, "b-1"));
    assert_eq!(queued_sequence(&b1), 0);
    let status = outbox_cmd(&net, "status", "redeemer", &dev_a);
    assert_eq!(
        status.ok()["waiting"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // The node comes back. Online signing waits until the outbox is sent.
    net.start_node();
    let out = redeem(&net, "redeemer", &dev_a, false, (&voucher, 1, "a-x"));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("outbox sync"), "{out}");

    let sync_a = outbox_cmd(&net, "sync", "redeemer", &dev_a);
    let v = sync_a.ok();
    assert_eq!(v["committed"], 2, "{sync_a}");
    for e in v["entries"].as_array().expect("entries") {
        assert_eq!(e["status"], "committed", "{sync_a}");
        let receipt = PathBuf::from(e["receipt"].as_str().expect("receipt written"));
        let check = net.cli(&[
            "receipt",
            "check",
            receipt.to_str().expect("utf8"),
            "--genesis",
            net.genesis.to_str().expect("utf8"),
            "--json",
        ]);
        assert_eq!(check.ok()["entry"], e["id"], "{check}");
    }
    let sync_b = outbox_cmd(&net, "sync", "attester", &dev_b);
    assert_eq!(
        sync_b.code, 1,
        "a conflicting redemption is reported: {sync_b}"
    );
    let e = &sync_b.json["entries"][0];
    assert_eq!(e["status"], "rejected", "{sync_b}");
    assert_eq!(e["reason"]["code"], "over_balance", "{sync_b}");
    assert!(e["height"].as_u64().is_some(), "kept as evidence: {sync_b}");
    assert!(e["receipt"].is_string(), "{sync_b}");
    let v: Value = net.query(&["voucher", "show", &voucher]).ok().clone();
    assert_eq!(
        (v["redeemed"].clone(), v["remaining"].clone()),
        (5000.into(), 0.into())
    );

    // Online and offline numbers continue from each other.
    let status = outbox_cmd(&net, "status", "redeemer", &dev_a);
    assert_eq!(status.ok()["next_sequence"], 3, "{status}");
    let (s2, d2) = net.derive_tokens("case-0101");
    let voucher2 = net.committed(&net.issue_voucher(&s2, 1000, "+7d", Some(&d2)));
    let online = redeem(&net, "redeemer", &dev_a, false, (&voucher2, 100, "a-3"));
    net.committed(&online);
    let a4 = redeem(&net, "redeemer", &dev_a, true, (&voucher2, 100, "a-4"));
    assert_eq!(queued_sequence(&a4), 4);
    assert_eq!(
        outbox_cmd(&net, "sync", "redeemer", &dev_a).ok()["committed"],
        1
    );

    // A power cut tears the last record: the damage is reported, the entry before it kept.
    let a5 = redeem(&net, "redeemer", &dev_a, true, (&voucher2, 50, "a-5"));
    let a6 = redeem(&net, "redeemer", &dev_a, true, (&voucher2, 60, "a-6"));
    assert_eq!((queued_sequence(&a5), queued_sequence(&a6)), (5, 6));
    let file = PathBuf::from(a6.json["outbox"].as_str().expect("outbox path"));
    let bytes = std::fs::read(&file).expect("outbox file");
    std::fs::write(&file, &bytes[..bytes.len() - 9]).expect("tear the outbox");
    let status = outbox_cmd(&net, "status", "redeemer", &dev_a);
    assert_eq!(status.code, 1, "damage is reported: {status}");
    assert_eq!(status.json["waiting"][0]["sequence"], 5, "{status}");
    assert_eq!(status.json["waiting"].as_array().map(Vec::len), Some(1));
    assert!(status.json["damage"][0]["reason"].is_string(), "{status}");
    let sync = outbox_cmd(&net, "sync", "redeemer", &dev_a);
    assert_eq!(sync.code, 1, "{sync}");
    assert_eq!(sync.json["entries"][0]["status"], "committed", "{sync}");
    assert_eq!(
        sync.json["damage"].as_array().map(Vec::len),
        Some(1),
        "{sync}"
    );

    // Reconcile from the auditor's own replay of the node's blocks, checked against the node.
    let out = report(&net, &net.base);
    let r = out.ok();
    assert_eq!(r["ok"], true, "{out}");
    let p = programme_figures(r);
    assert_eq!(p["issued"], 6000, "{out}");
    assert_eq!(p["redeemed"], 5250, "{out}");
    assert_eq!(p["owed"], 5250, "{out}");
    assert_eq!(p["outstanding"], 750, "{out}");
    let vendors = r["vendors"].as_array().expect("vendors");
    assert_eq!(vendors.len(), 1, "{out}");
    assert_eq!(vendors[0]["redeemed"], 5250, "{out}");

    // A node that lies about one figure is caught, with exit 1.
    let proxy = common::Proxy::start(&net.base, lie_about_redeemed);
    let out = report(&net, &proxy.base);
    assert_eq!(out.code, 1, "{out}");
    let findings = out.json["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{out}");
    assert_eq!(findings[0]["figure"], "redeemed", "{out}");
    assert_eq!(
        (
            findings[0]["replayed"].clone(),
            findings[0]["reported"].clone()
        ),
        (5250.into(), 5251.into())
    );
    drop(proxy);

    // Offline, from a copy of the data: the same figures, as CSV and as a table.
    net.stop_node();
    let data = net.data_dir.to_str().expect("utf8").to_string();
    let genesis = net.genesis.to_str().expect("utf8").to_string();
    let offline_report = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "report",
            "--data-dir",
            &data,
            "--genesis",
            &genesis,
        ];
        args.extend_from_slice(extra);
        net.cli(&args)
    };
    let csv = offline_report(&["--csv"]);
    assert_eq!(csv.code, 0, "{csv}");
    let mut lines = csv.stdout.lines();
    assert!(lines
        .next()
        .is_some_and(|h| h.starts_with("row,programme,vendor,period")));
    let programme_row = csv
        .stdout
        .lines()
        .find(|l| l.starts_with("programme,food-2026,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert_eq!(
        programme_row,
        "programme,food-2026,,,USD,100000,6000,5250,0,0,750,0,5250,,,,"
    );
    let table = offline_report(&[]);
    assert_eq!(table.code, 0, "{table}");
    assert!(table.stdout.contains("No findings"), "{table}");
}

/// On a field link each round trip is seconds: signing asks the node once (chain id and next
/// sequence together), then posts; waiting for the block is polling after that. A key rotation,
/// whose proof binds the chain id, costs no more.
#[test]
fn signing_asks_the_node_once_before_the_post() {
    let net = Devnet::start();
    let proxy = common::Proxy::start(&net.base, |_, _| {});
    let signed_via_proxy = |signer: &str, args: &[&str]| {
        let key = net.key(signer).to_str().expect("utf8").to_string();
        let mut all = args.to_vec();
        all.extend(["--key", &key, "--node", &proxy.base, "--json"]);
        net.cli(&all)
    };
    let admin = net.pk("admin").to_string();
    let issuer = net.pk("issuer").to_string();

    let out = signed_via_proxy(
        "admin",
        &["role", "grant", "--to", &issuer, "--role", "issuer"],
    );
    net.committed(&out);
    let requests = proxy.take_requests();
    assert_eq!(
        requests[..2],
        [
            format!("GET /v1/keys/{admin}/signing"),
            "POST /v1/entries".to_string()
        ],
        "{requests:?}"
    );
    assert!(
        requests[2..]
            .iter()
            .all(|r| r.starts_with("GET /v1/entries/")),
        "after the post, only the entry's status is polled: {requests:?}"
    );

    let new_key = net.dir.path().join("issuer-2.key");
    net.cli(&["keys", "new", "--out", new_key.to_str().expect("utf8")])
        .ok();
    let out = signed_via_proxy(
        "issuer",
        &[
            "keys",
            "rotate",
            "--new-key",
            new_key.to_str().expect("utf8"),
            "--no-wait",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        proxy.take_requests(),
        [
            format!("GET /v1/keys/{issuer}/signing"),
            "POST /v1/entries".to_string()
        ]
    );

    // An unregistered key learns which chain does not know it, from the same one request.
    let stranger = net.dir.path().join("stranger.key");
    net.cli(&["keys", "new", "--out", stranger.to_str().expect("utf8")])
        .ok();
    let out = net.cli(&[
        "role",
        "grant",
        "--to",
        &issuer,
        "--role",
        "issuer",
        "--key",
        stranger.to_str().expect("utf8"),
        "--node",
        &proxy.base,
    ]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("not registered on chain test-chain"),
        "{out}"
    );
    assert_eq!(proxy.take_requests().len(), 1);
}
