//! The aid workflow end to end, through the `tally` CLI only: roles, a programme, tokens derived
//! off chain, vouchers issued with de-duplication, redeemed, refused, revoked, settled to the
//! vendor, and finally the whole chain re-verified offline by `tally audit verify`.

mod common;

use common::{CmdOut, Devnet};
use serde_json::Value;

fn settle(net: &Devnet, amount: u64, reference: &str) -> CmdOut {
    let amount = amount.to_string();
    let vendor = net.pk("vendor").to_string();
    net.signed(
        "admin",
        &[
            "vendor",
            "settle",
            "--programme",
            "food-2026",
            "--vendor",
            &vendor,
            "--amount",
            &amount,
            "--reference",
            reference,
        ],
    )
}

fn voucher(net: &Devnet, id: &str) -> Value {
    net.query(&["voucher", "show", id]).ok().clone()
}

fn programme(net: &Devnet) -> Value {
    net.query(&["programme", "show", "food-2026"]).ok().clone()
}

fn vendor_account(net: &Devnet) -> Value {
    let vendor = net.pk("vendor").to_string();
    net.query(&[
        "vendor",
        "show",
        "--programme",
        "food-2026",
        "--vendor",
        &vendor,
    ])
    .ok()
    .clone()
}

#[test]
fn aid_workflow_through_the_cli() {
    let mut net = Devnet::start();
    net.write_file("agency.secret", b"agency-secret-for-tests-0123456789\n");
    net.write_file("consortium.secret", b"consortium-dedup-secret-abcdefghij\n");

    // The agency admin registers its staff.
    net.grant("issuer", "issuer");
    net.grant("redeemer", "redeemer");
    net.grant("vendor", "vendor");
    let unknown = net.query(&["entry", "status", &"0".repeat(64)]);
    assert_eq!(
        unknown.code, 1,
        "an unknown entry is reported as missing: {unknown}"
    );

    // Before the programme exists, issuing is refused by a rule.
    let (amina, amina_dedup) = net.derive_tokens("case-0001");
    let out = net.issue_voucher(&amina, 100, "+7d", None);
    net.rejected(&out, "unknown_programme");

    net.create_programme("food-2026", 10000);
    let p = programme(&net);
    assert_eq!(p["budget"], 10000);
    assert_eq!(p["issued"], 0);
    assert_eq!(p["available"], 10000);
    assert_eq!(p["agency"], common::AGENCY);

    // Tokens are deterministic for the same secrets and reference, distinct across people.
    assert_eq!(
        net.derive_tokens("case-0001"),
        (amina.clone(), amina_dedup.clone())
    );
    let (bashir, bashir_dedup) = net.derive_tokens("case-0002");
    let (chidi, chidi_dedup) = net.derive_tokens("case-0003");
    assert_ne!(amina, bashir);

    // Issue with de-duplication, then redeem in two parts.
    let v1 = net.committed(&net.issue_voucher(&amina, 1000, "+7d", Some(&amina_dedup)));
    let v = voucher(&net, &v1);
    assert_eq!(v["amount"], 1000);
    assert_eq!(v["remaining"], 1000);
    assert_eq!(v["status"], "active");
    assert_eq!(v["subject"], amina.as_str());
    assert_eq!(v["redeemable"], true);

    net.committed(&net.redeem_voucher(&v1, 300, "shop-r1"));
    assert_eq!(voucher(&net, &v1)["remaining"], 700);
    net.committed(&net.redeem_voucher(&v1, 700, "shop-r2"));
    let v = voucher(&net, &v1);
    assert_eq!(v["remaining"], 0);
    assert_eq!(v["redeemed"], 1000);

    // Over-redeeming and reusing a reference are refused, and recorded as evidence.
    let out = net.redeem_voucher(&v1, 1, "shop-r3");
    let over = net.rejected(&out, "over_balance");
    let status = net.query(&["entry", "status", &over]);
    assert_eq!(status.ok()["status"], "rejected");
    assert_eq!(status.json["reason"]["code"], "over_balance");
    let out = net.redeem_voucher(&v1, 1, "shop-r1");
    net.rejected(&out, "duplicate_reference");

    // The same person cannot receive the same assistance twice in the period.
    let out = net.issue_voucher(&amina, 500, "+7d", Some(&amina_dedup));
    net.rejected(&out, "duplicate_assistance");

    // A second voucher, partly redeemed, then revoked: the rest goes back to the budget.
    let v2 = net.committed(&net.issue_voucher(&bashir, 500, "+7d", Some(&bashir_dedup)));
    net.committed(&net.redeem_voucher(&v2, 200, "shop-r4"));
    let out = net.signed(
        "issuer",
        &[
            "voucher",
            "revoke",
            "--voucher",
            &v2,
            "--reason",
            "clerical_error",
        ],
    );
    net.committed(&out);
    let v = voucher(&net, &v2);
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["redeemable"], false);
    assert_eq!(v["remaining"], 300);
    let out = net.redeem_voucher(&v2, 100, "shop-r5");
    net.rejected(&out, "revoked");
    let out = net.signed(
        "issuer",
        &["voucher", "revoke", "--voucher", &v2, "--reason", "fraud"],
    );
    net.rejected(&out, "revoked");
    // Partly used: the de-duplication record stays even after a clerical-error revocation.
    let out = net.issue_voucher(&bashir, 500, "+7d", Some(&bashir_dedup));
    net.rejected(&out, "duplicate_assistance");

    // A voucher issued in error and never used frees the person for a correct one.
    let v3 = net.committed(&net.issue_voucher(&chidi, 400, "+7d", Some(&chidi_dedup)));
    net.committed(&net.signed(
        "issuer",
        &[
            "voucher",
            "revoke",
            "--voucher",
            &v3,
            "--reason",
            "clerical_error",
        ],
    ));
    let v4 = net.committed(&net.issue_voucher(&chidi, 250, "+7d", Some(&chidi_dedup)));

    // Only a key with the redeemer role may redeem; the vendor must be a vendor.
    let vendor_pk = net.pk("vendor").to_string();
    let out = net.signed(
        "issuer",
        &[
            "voucher",
            "redeem",
            "--voucher",
            &v4,
            "--amount",
            "1",
            "--vendor",
            &vendor_pk,
            "--reference",
            "x-1",
        ],
    );
    net.missing_role(&out);
    let issuer_pk = net.pk("issuer").to_string();
    let out = net.signed(
        "redeemer",
        &[
            "voucher",
            "redeem",
            "--voucher",
            &v4,
            "--amount",
            "1",
            "--vendor",
            &issuer_pk,
            "--reference",
            "x-2",
        ],
    );
    net.rejected(&out, "not_vendor");

    // Figures so far: issued 1000 + 500 + 400 + 250, redeemed 1000 + 200,
    // revoked 300 (v2's rest) + 400 (v3).
    let p = programme(&net);
    assert_eq!(p["issued"], 2150, "{p}");
    assert_eq!(p["redeemed"], 1200, "{p}");
    assert_eq!(p["revoked"], 700, "{p}");
    assert_eq!(p["expired"], 0, "{p}");
    assert_eq!(p["committed"], 1450, "{p}");
    assert_eq!(p["available"], 10000 - 1450, "{p}");
    assert_eq!(p["settled"], 0, "{p}");
    let a = vendor_account(&net);
    assert_eq!(a["redeemed"], 1200, "{a}");
    assert_eq!(a["settled"], 0, "{a}");
    assert_eq!(a["owed"], 1200, "{a}");

    // Over budget is refused.
    let out = net.issue_voucher(&amina, 10000, "+7d", None);
    net.rejected(&out, "over_budget");

    // Settlement: never more than owed, each reference once.
    net.committed(&settle(&net, 1000, "pay-1"));
    let out = settle(&net, 300, "pay-2");
    net.rejected(&out, "over_settlement");
    let out = settle(&net, 100, "pay-1");
    net.rejected(&out, "duplicate_reference");
    net.committed(&settle(&net, 200, "pay-3"));
    let a = vendor_account(&net);
    assert_eq!(a["redeemed"], 1200, "{a}");
    assert_eq!(a["settled"], 1200, "{a}");
    assert_eq!(a["owed"], 0, "{a}");
    let out = settle(&net, 1, "pay-4");
    net.rejected(&out, "over_settlement");

    // Expiry: a short-lived voucher cannot be redeemed once its time has passed, and can then
    // be closed, returning its value to the programme.
    let issued_at = std::time::Instant::now();
    let v5 = net.committed(&net.issue_voucher(&amina, 50, "+3s", None));
    let out = net.signed("issuer", &["voucher", "expire", "--voucher", &v5]);
    net.rejected(&out, "not_expired");
    let lapse = std::time::Duration::from_millis(3500);
    std::thread::sleep(lapse.saturating_sub(issued_at.elapsed()));
    let out = net.redeem_voucher(&v5, 10, "shop-r6");
    net.rejected(&out, "expired");
    assert_eq!(voucher(&net, &v5)["status"], "expired");
    net.committed(&net.signed("issuer", &["voucher", "expire", "--voucher", &v5]));
    let v = voucher(&net, &v5);
    assert_eq!(v["status"], "expired");
    assert_eq!(v["redeemable"], false);

    let p = programme(&net);
    assert_eq!(p["issued"], 2200, "{p}");
    assert_eq!(p["redeemed"], 1200, "{p}");
    assert_eq!(p["revoked"], 700, "{p}");
    assert_eq!(p["expired"], 50, "{p}");
    assert_eq!(p["settled"], 1200, "{p}");
    assert_eq!(p["committed"], 1450, "{p}");
    let v = voucher(&net, &v1);
    assert_eq!(
        (v["amount"].clone(), v["redeemed"].clone()),
        (1000.into(), 1000.into())
    );

    // Stop the node cleanly and verify the chain offline.
    let (status, audit) = net.stop_and_audit();
    assert_eq!(audit["head_hash"], status["head_hash"], "{audit}");
    assert_eq!(audit["genesis_hash"], status["genesis_hash"], "{audit}");

    // Checked against a genesis it was not built from, the chain fails verification (exit 1);
    // a directory that holds no chain is a tool error (exit 2).
    let other = net.other_genesis("other-chain");
    let data_dir = net.data_dir.to_str().expect("utf8").to_string();
    let out = net.cli(&[
        "audit",
        "verify",
        "--json",
        "--data-dir",
        &data_dir,
        "--genesis",
        other.to_str().expect("utf8"),
    ]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.json["ok"], false, "{out}");
    assert_eq!(out.json["violation"]["rule"], "genesis", "{out}");
    let empty = net.dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = net.cli(&[
        "audit",
        "verify",
        "--json",
        "--data-dir",
        empty.to_str().expect("utf8"),
    ]);
    assert_eq!(out.code, 2, "{out}");
    // Without --genesis the directory's own genesis is used.
    let out = net.cli(&["audit", "verify", "--json", "--data-dir", &data_dir]);
    assert_eq!(out.ok()["entries"], audit["entries"], "{out}");
}
