//! A field day with the connection gone: two devices redeem the same voucher offline, the node
//! comes back, each device syncs its outbox (one redemption commits with its receipt, the
//! conflicting one is rejected as over balance and kept as evidence), sequence numbers stay
//! consistent across online and offline use, a damaged outbox is reported with its readable
//! entries kept, and the day is reconciled from the auditor's own replay, against the node and
//! against a node that lies about one figure.

mod common;

use common::{CmdOut, Devnet};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// A node's API behind a proxy that adds 1 to the first programme's `redeemed`: a node that
/// lies about one figure. Serves until dropped.
struct LyingProxy {
    base: String,
    stop: Arc<AtomicBool>,
}

impl LyingProxy {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, flag) = (upstream.to_string(), stop.clone());
        std::thread::spawn(move || {
            let agent = common::agent();
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(n) if n > 2 => continue,
                        _ => break,
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, mut body) = match agent.get(&format!("{upstream}{path}")).call() {
                    Ok(r) => (200, r.into_string().unwrap_or_default()),
                    Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
                    Err(_) => (502, String::new()),
                };
                if path == "/v1/programmes" {
                    let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if let Some(r) = v["programmes"][0]["redeemed"].as_u64() {
                        v["programmes"][0]["redeemed"] = (r + 1).into();
                    }
                    body = v.to_string();
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { base, stop }
    }
}

impl Drop for LyingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
    let proxy = LyingProxy::start(&net.base);
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
