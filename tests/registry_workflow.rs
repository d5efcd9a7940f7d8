//! Civil registry and identity attestations end to end, through the `tally` CLI only: births,
//! marriages, divorce, remarriage, deaths, land titles and their transfer, amendments that leave
//! the original untouched, and the attestation lifecycle; then an offline `tally audit verify`.

mod common;

use common::{CmdOut, Devnet};
use serde_json::Value;
use std::cell::Cell;

/// Registry helpers over a devnet: commitments to off-chain records and event commands.
struct Registry<'a> {
    net: &'a Devnet,
    records: Cell<u32>,
}

impl<'a> Registry<'a> {
    fn new(net: &'a Devnet) -> Self {
        Self {
            net,
            records: Cell::new(0),
        }
    }

    /// Writes an off-chain record and commits to it with `tally commit` (fresh salt each time).
    fn commit(&self, record: &str) -> String {
        let n = self.records.get() + 1;
        self.records.set(n);
        let file = self
            .net
            .write_file(&format!("record-{n}.txt"), record.as_bytes());
        let out = self.net.cli(&[
            "commit",
            "--json",
            "--record-file",
            file.to_str().expect("utf8"),
        ]);
        let v = out.ok();
        let c = v["commitment"].as_str().expect("commitment").to_string();
        let salt = v["salt"].as_str().expect("salt");
        assert!(salt.len() >= 32, "salt of at least 128 bits: {out}");
        // Re-deriving with the same salt gives the same commitment; a fresh salt does not.
        let again = self.net.cli(&[
            "commit",
            "--json",
            "--record-file",
            file.to_str().expect("utf8"),
            "--salt",
            salt,
        ]);
        assert_eq!(again.ok()["commitment"], c.as_str(), "{again}");
        c
    }

    /// A registry event command signed by the registrar, with a fresh commitment.
    fn event(&self, args: &[&str], date: &str) -> CmdOut {
        let record = self.commit(&format!("{args:?} on {date}"));
        let mut all: Vec<&str> = vec!["registry"];
        all.extend_from_slice(args);
        all.extend([
            "--record",
            &record,
            "--date",
            date,
            "--jurisdiction",
            "district-07",
        ]);
        self.net.signed("registrar", &all)
    }

    fn show(&self, id: &str) -> Value {
        self.net.query(&["registry", "show", id]).ok().clone()
    }

    fn subject(&self, token: &str) -> Value {
        self.net.query(&["registry", "subject", token]).ok().clone()
    }

    fn parcel(&self, parcel: &str) -> Value {
        self.net.query(&["registry", "parcel", parcel]).ok().clone()
    }
}

fn derive(net: &Devnet, reference: &str) -> String {
    let secret = net.dir.path().join("registry.secret");
    let out = net.cli(&[
        "subject",
        "derive",
        "--json",
        "--secret-file",
        secret.to_str().expect("utf8"),
        "--reference",
        reference,
    ]);
    let v = out.ok();
    assert!(
        v["dedup"].is_null(),
        "no dedup secret, no dedup token: {out}"
    );
    v["subject"].as_str().expect("subject").to_string()
}

#[test]
fn civil_registry_and_attestations_through_the_cli() {
    let mut net = Devnet::start();
    net.write_file("registry.secret", b"ministry-registry-secret-0123456789");
    net.grant("registrar", "registrar");
    net.grant("attester", "attester");
    let reg = Registry::new(&net);

    let amina = derive(&net, "reg-1001");
    let bashir = derive(&net, "reg-1002");
    let chidi = derive(&net, "reg-1003");
    let dawit = derive(&net, "reg-1004");

    // A registrar-only event signed by another key is refused at the door.
    let out = net.signed(
        "attester",
        &[
            "registry",
            "birth",
            "--subject",
            &amina,
            "--record",
            &reg.commit("x"),
            "--date",
            "2001-02-03",
            "--jurisdiction",
            "district-07",
        ],
    );
    net.missing_role(&out);

    // Births.
    let birth_a = net.committed(&reg.event(&["birth", "--subject", &amina], "1990-05-17"));
    net.committed(&reg.event(&["birth", "--subject", &bashir], "1988-01-02"));
    let out = reg.event(&["birth", "--subject", &amina], "1990-05-17");
    net.rejected(&out, "already_recorded");
    let out = reg.event(&["birth", "--subject", &dawit], "2999-01-01");
    net.rejected(&out, "future_date");
    let rec = reg.show(&birth_a);
    assert_eq!(rec["kind"], "birth", "{rec}");
    assert_eq!(rec["subjects"], serde_json::json!([amina]), "{rec}");
    assert_eq!(rec["event"]["date"], "1990-05-17", "{rec}");
    assert_eq!(rec["event"]["jurisdiction"], "district-07", "{rec}");
    assert_eq!(rec["agency"], common::AGENCY, "{rec}");
    let original_commitment = rec["event"]["record"].clone();
    assert_eq!(reg.subject(&amina)["birth"], birth_a.as_str());

    // Marriage, a second marriage refused, divorce, remarriage.
    let m1 = net.committed(&reg.event(
        &["marriage", "--spouse-a", &amina, "--spouse-b", &bashir],
        "2015-06-01",
    ));
    assert_eq!(reg.subject(&amina)["marriage"], m1.as_str());
    assert_eq!(reg.subject(&bashir)["marriage"], m1.as_str());
    let out = reg.event(
        &["marriage", "--spouse-a", &amina, "--spouse-b", &chidi],
        "2016-06-01",
    );
    net.rejected(&out, "already_married");
    let div = net.committed(&reg.event(&["divorce", "--marriage", &m1], "2019-03-04"));
    let rec = reg.show(&m1);
    assert_eq!(rec["dissolved_by"], div.as_str(), "{rec}");
    assert_eq!(reg.show(&div)["kind"], "divorce");
    assert!(reg.subject(&amina)["marriage"].is_null());
    assert!(reg.subject(&bashir)["marriage"].is_null());
    let out = reg.event(&["divorce", "--marriage", &m1], "2019-03-05");
    net.rejected(&out, "not_married");
    let out = reg.event(&["divorce", "--marriage", &birth_a], "2019-03-05");
    net.rejected(&out, "unknown_record");
    let m2 = net.committed(&reg.event(
        &["marriage", "--spouse-a", &amina, "--spouse-b", &chidi],
        "2020-08-08",
    ));
    assert_eq!(reg.subject(&amina)["marriage"], m2.as_str());
    assert_eq!(reg.subject(&chidi)["marriage"], m2.as_str());

    // Death: ends the marriage in force; no second death; the dead cannot marry.
    let death_c = net.committed(&reg.event(&["death", "--subject", &chidi], "2023-01-09"));
    let s = reg.subject(&chidi);
    assert_eq!(s["death"], death_c.as_str(), "{s}");
    assert!(
        reg.subject(&amina)["marriage"].is_null(),
        "the surviving spouse is no longer married"
    );
    let out = reg.event(&["death", "--subject", &chidi], "2023-01-10");
    net.rejected(&out, "subject_dead");
    let out = reg.event(
        &["marriage", "--spouse-a", &dawit, "--spouse-b", &chidi],
        "2023-02-01",
    );
    net.rejected(&out, "subject_dead");
    // Dawit has no record at all: the refused marriage left nothing behind.
    let none = net.query(&["registry", "subject", &dawit]);
    assert_eq!(none.code, 1, "{none}");

    // Land titles: registration, transfer by the holder only.
    let t = net.committed(&reg.event(
        &["title", "--parcel", "parcel-77-12", "--holder", &amina],
        "2018-04-04",
    ));
    let out = reg.event(
        &["title", "--parcel", "parcel-77-12", "--holder", &bashir],
        "2018-04-05",
    );
    net.rejected(&out, "title_exists");
    let title = reg.parcel("parcel-77-12");
    assert_eq!(title["holder"], amina.as_str(), "{title}");
    assert_eq!(title["registered_by"], t.as_str(), "{title}");
    assert_eq!(title["transfers"], 0, "{title}");
    let out = reg.event(
        &[
            "transfer",
            "--parcel",
            "parcel-77-12",
            "--from",
            &bashir,
            "--to",
            &dawit,
        ],
        "2021-01-01",
    );
    net.rejected(&out, "not_holder");
    let out = reg.event(
        &[
            "transfer",
            "--parcel",
            "parcel-77-12",
            "--from",
            &amina,
            "--to",
            &chidi,
        ],
        "2023-05-01",
    );
    net.rejected(&out, "subject_dead");
    let tr = net.committed(&reg.event(
        &[
            "transfer",
            "--parcel",
            "parcel-77-12",
            "--from",
            &amina,
            "--to",
            &dawit,
        ],
        "2021-01-02",
    ));
    let title = reg.parcel("parcel-77-12");
    assert_eq!(title["holder"], dawit.as_str(), "{title}");
    assert_eq!(title["latest"], tr.as_str(), "{title}");
    assert_eq!(title["transfers"], 1, "{title}");
    assert_eq!(title["registered_by"], t.as_str(), "{title}");
    let rec = reg.show(&tr);
    assert_eq!(rec["kind"], "title_transfer", "{rec}");
    assert_eq!(rec["parcel"], "parcel-77-12", "{rec}");
    let out = reg.event(
        &[
            "transfer",
            "--parcel",
            "parcel-00-00",
            "--from",
            &amina,
            "--to",
            &dawit,
        ],
        "2021-01-02",
    );
    net.rejected(&out, "unknown_title");

    // Amendment: a new linked record; the original keeps its content and gains a forward link.
    let out = reg.event(
        &[
            "amend",
            "--original",
            &birth_a,
            "--reason",
            "clerical_error",
        ],
        "1990-05-18",
    );
    let amend = net.committed(&out);
    let rec = reg.show(&birth_a);
    assert_eq!(rec["kind"], "birth", "{rec}");
    assert_eq!(
        rec["event"]["record"], original_commitment,
        "original unchanged: {rec}"
    );
    assert_eq!(
        rec["event"]["date"], "1990-05-17",
        "original unchanged: {rec}"
    );
    assert_eq!(rec["latest_amendment"], amend.as_str(), "{rec}");
    assert_eq!(rec["amendment_count"], 1, "{rec}");
    let a = reg.show(&amend);
    assert_eq!(a["kind"], "amendment", "{a}");
    assert_eq!(
        a["amends"],
        serde_json::json!([birth_a, "clerical_error"]),
        "{a}"
    );
    assert_eq!(a["event"]["date"], "1990-05-18", "{a}");
    assert_ne!(a["event"]["record"], original_commitment, "{a}");
    assert_eq!(a["subjects"], serde_json::json!([amina]), "{a}");
    let amend2 = net.committed(&reg.event(
        &["amend", "--original", &birth_a, "--reason", "court_order"],
        "1990-05-19",
    ));
    let rec = reg.show(&birth_a);
    assert_eq!(rec["latest_amendment"], amend2.as_str(), "{rec}");
    assert_eq!(rec["amendment_count"], 2, "{rec}");
    assert_eq!(rec["event"]["record"], original_commitment, "{rec}");
    let out = reg.event(
        &[
            "amend",
            "--original",
            &"ab".repeat(32),
            "--reason",
            "clerical_error",
        ],
        "1990-05-18",
    );
    net.rejected(&out, "unknown_record");

    // Attestations: new, suspend, reinstate, revoke; status as the API computes it.
    let evidence = reg.commit("refugee registration card, scanned");
    let out = net.signed(
        "attester",
        &[
            "attest",
            "new",
            "--subject",
            &amina,
            "--claim",
            "refugee-status",
            "--evidence",
            &evidence,
            "--expires",
            "+365d",
        ],
    );
    let att = net.committed(&out);
    let show = |id: &str| net.query(&["attest", "show", id]).ok().clone();
    let a = show(&att);
    assert_eq!(a["effective_status"], "active", "{a}");
    assert_eq!(a["claim"], "refugee-status", "{a}");
    assert_eq!(a["subject"], amina.as_str(), "{a}");
    assert_eq!(a["evidence"], evidence.as_str(), "{a}");
    assert_eq!(a["attester"], net.pk("attester"), "{a}");

    let attest = |args: &[&str]| {
        let mut all = vec!["attest"];
        all.extend_from_slice(args);
        net.signed("attester", &all)
    };
    net.committed(&attest(&[
        "suspend",
        "--id",
        &att,
        "--reason",
        "under_review",
    ]));
    assert_eq!(show(&att)["effective_status"], "suspended");
    net.rejected(
        &attest(&["suspend", "--id", &att, "--reason", "under_review"]),
        "wrong_status",
    );
    net.committed(&attest(&["reinstate", "--id", &att]));
    assert_eq!(show(&att)["effective_status"], "active");
    net.rejected(&attest(&["reinstate", "--id", &att]), "wrong_status");
    net.committed(&attest(&[
        "suspend",
        "--id",
        &att,
        "--reason",
        "under_review",
    ]));
    net.committed(&attest(&["revoke", "--id", &att, "--reason", "fraud"]));
    assert_eq!(show(&att)["effective_status"], "revoked");
    net.rejected(&attest(&["reinstate", "--id", &att]), "revoked");
    net.rejected(
        &attest(&["revoke", "--id", &att, "--reason", "fraud"]),
        "revoked",
    );
    net.rejected(
        &attest(&["suspend", "--id", &att, "--reason", "under_review"]),
        "revoked",
    );
    net.rejected(
        &attest(&["reinstate", "--id", &"cd".repeat(32)]),
        "unknown_attestation",
    );
    let missing = net.query(&["attest", "show", &"cd".repeat(32)]);
    assert_eq!(missing.code, 1, "{missing}");

    // Only an attester may attest.
    let out = net.signed(
        "registrar",
        &[
            "attest",
            "new",
            "--subject",
            &amina,
            "--claim",
            "age-over-18",
            "--evidence",
            &evidence,
            "--expires",
            "+30d",
        ],
    );
    net.missing_role(&out);

    // Everything holds up under an independent replay.
    net.stop_and_audit();
}
