//! Receipts end to end: a real node commits a voucher issue and a redemption, `tally receipt
//! fetch` writes the text and the PNG QR code, an independent QR decoder reads the PNG, and
//! `tally receipt check` verifies each form with the node stopped. The issue's receipt holds no
//! person token and checks only when the beneficiary's tokens are given.

mod common;

use common::{CmdOut, Devnet};
use std::path::Path;

fn check(file: &Path, genesis: &Path, extra: &[&str]) -> CmdOut {
    let mut args = vec![
        "receipt",
        "check",
        file.to_str().expect("utf8"),
        "--genesis",
        genesis.to_str().expect("utf8"),
        "--json",
    ];
    args.extend_from_slice(extra);
    common::run_tally(&args)
}

fn failed(out: &CmdOut, check_name: &str) {
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.json["ok"], false, "{out}");
    assert_eq!(out.json["check"], check_name, "{out}");
}

/// Decodes the one QR code in a PNG with rqrr, a decoder independent of the encoder.
fn decode_png(path: &Path) -> String {
    let img = image::open(path).expect("PNG opens").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in {}", path.display());
    grids[0].decode().expect("the QR code decodes").1
}

#[test]
fn receipts_render_as_text_and_qr_and_check_offline() {
    let mut net = Devnet::start_aid(&[], 100_000);
    let (subject, dedup) = net.derive_tokens("case-0042");
    let voucher = net.committed(&net.issue_voucher(&subject, 5000, "+7d", Some(&dedup)));
    let redemption = net.committed(&net.redeem_voucher(&voucher, 3000, "till-7-0001"));
    let over = net.rejected(
        &net.redeem_voucher(&voucher, 2500, "till-7-0002"),
        "over_balance",
    );

    let dir = net.dir.path().to_path_buf();
    let fetch = |entry: &str, name: &str| {
        let text = dir.join(format!("{name}.txt"));
        let png = dir.join(format!("{name}.png"));
        let out = net.query(&[
            "receipt",
            "fetch",
            entry,
            "--out",
            text.to_str().expect("utf8"),
            "--png",
            png.to_str().expect("utf8"),
        ]);
        let v = out.ok().clone();
        (v, text, png)
    };
    let (issued, issue_txt, issue_png) = fetch(&voucher, "issue");
    let (redeemed, redeem_txt, redeem_png) = fetch(&redemption, "redeem");
    let (_, over_txt, _) = fetch(&over, "over");
    assert_eq!(issued["withheld"]["subject"], true, "{issued}");
    assert_eq!(issued["withheld"]["dedup"], true, "{issued}");
    let grant = net.grant("attester", "attester");
    let out = net.query(&["receipt", "fetch", &grant]);
    assert_eq!(out.code, 1, "no receipt for a role grant: {out}");

    // The independent decoder reads exactly the payload line the CLI printed.
    for (png, v) in [(&redeem_png, &redeemed), (&issue_png, &issued)] {
        let content = decode_png(png);
        assert_eq!(content, v["payload"].as_str().expect("payload"));
        assert!(content.starts_with("TALLY1:"));
    }
    // No person token in any form of the issue's receipt.
    let issue_text = std::fs::read_to_string(&issue_txt).expect("text receipt");
    for token in [&subject, &dedup] {
        assert!(!issue_text.contains(token.as_str()), "{issue_text}");
        assert!(!issued.to_string().contains(token.as_str()), "{issued}");
    }
    assert!(issue_text.contains("amount 5000"), "{issue_text}");

    // Offline from here: only the genesis file.
    net.stop_node();
    let decoded = net.write_file("decoded.txt", decode_png(&redeem_png).as_bytes());
    for file in [&redeem_txt, &redeem_png, &decoded] {
        let out = check(file, &net.genesis, &[]);
        let v = out.ok();
        assert_eq!(v["entry"], redemption.as_str(), "{out}");
        assert_eq!(v["kind"], "redeem_voucher", "{out}");
        assert_eq!(v["outcome"], "accepted", "{out}");
    }
    let out = check(&over_txt, &net.genesis, &[]);
    assert_eq!(out.ok()["outcome"]["rejected"], "over_balance", "{out}");

    // The issue's receipt needs the beneficiary's tokens, and only theirs.
    failed(&check(&issue_png, &net.genesis, &[]), "token_needed");
    let out = check(
        &issue_png,
        &net.genesis,
        &["--subject", &subject, "--dedup", &dedup],
    );
    assert_eq!(out.ok()["entry"], voucher.as_str(), "{out}");
    let (other_subject, _) = net.derive_tokens("case-0043");
    failed(
        &check(
            &issue_txt,
            &net.genesis,
            &["--subject", &other_subject, "--dedup", &dedup],
        ),
        "entry_path",
    );

    // A printed amount that is not the proven one; a receipt for another chain; a changed
    // payload; a file that is no receipt.
    let text = std::fs::read_to_string(&redeem_txt).expect("text receipt");
    let forged = net.write_file(
        "forged.txt",
        text.replace("amount 3000", "amount 9000").as_bytes(),
    );
    failed(&check(&forged, &net.genesis, &[]), "summary");
    let other = net.other_genesis("other-chain");
    failed(&check(&redeem_txt, &other, &[]), "chain");
    let last = text.trim_end().len() - 1;
    let mut bytes = text.clone().into_bytes();
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    let out = check(&net.write_file("changed.txt", &bytes), &net.genesis, &[]);
    assert_eq!(out.code, 1, "{out}");
    failed(
        &check(&net.write_file("junk.txt", b"hello"), &net.genesis, &[]),
        "format",
    );
}
