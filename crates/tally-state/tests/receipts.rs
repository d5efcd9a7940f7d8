//! Receipts over a block the real state machine built: an issue (tokens withheld), a redemption
//! and a refused over-redemption. A receipt carries no person token, checks only with the
//! beneficiary's tokens when it withholds them, and every tampering fails a named check.

mod common;

use common::seed::*;
use common::*;
use tally_state::{build_block, BuiltBlock, Tip};
use tally_types::receipt::base45;
use tally_types::{
    CommitCertificate, EntryOutcome, HeldTokens, InclusionProof, Receipt, ReceiptError, RejectCode,
    Role, SignedEntry,
};

struct Fixture {
    built: BuiltBlock,
    cert: CommitCertificate,
}

impl Fixture {
    /// One block: an issue with a dedup token, a redemption of part of it, an over-redemption
    /// (rejected by a rule) and a role grant.
    fn new() -> Self {
        let mut chain = Chain::with_programmes(1_000_000);
        let issue_entry = chain.sign(
            &key(WFP_ISSUER),
            issue("wfp-food", 7, 5000, programme_end(), Some(dedup(7))),
        );
        let voucher = issue_entry.id();
        let vendor = pk(WFP_VENDOR);
        let entries: Vec<SignedEntry> = vec![
            issue_entry,
            chain.sign(
                &key(WFP_REDEEMER),
                redeem(voucher, 3000, vendor, "till-7-0001"),
            ),
            chain.sign(
                &key(WFP_REDEEMER),
                redeem(voucher, 2500, vendor, "till-7-0002"),
            ),
            chain.sign(&key(WFP_ADMIN), grant(pk(WFP_ATTESTER), Role::Issuer)),
        ];
        let tip = Tip {
            chain_id: chain.chain_id.clone(),
            height: chain.height,
            hash: tally_types::Hash::ZERO,
            timestamp: chain.now,
        };
        let built = build_block(
            &chain.state,
            &tip,
            chain.now,
            pk(VALIDATOR),
            verified(&entries),
        )
        .expect("block builds");
        let cert = certify(&built.block.header, &[VALIDATOR]);
        assert_eq!(
            built
                .execution
                .outcomes
                .iter()
                .map(|(_, o)| *o)
                .collect::<Vec<_>>(),
            [
                EntryOutcome::Accepted,
                EntryOutcome::Accepted,
                EntryOutcome::Rejected(RejectCode::OverBalance),
                EntryOutcome::Accepted
            ]
        );
        Self { built, cert }
    }

    fn proof(&self, index: usize) -> InclusionProof {
        InclusionProof::build(
            self.built.block.header.clone(),
            &self.built.block.entries,
            &self.built.execution.outcomes,
            self.cert.clone(),
            index,
        )
        .expect("index in block")
    }

    fn receipt(&self, index: usize) -> Receipt {
        Receipt::new(self.proof(index)).expect("a receipt kind")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const BOTH: fn() -> HeldTokens = || HeldTokens {
    subject: Some(subject(7)),
    dedup: Some(dedup(7)),
};

#[test]
fn an_issue_receipt_withholds_the_tokens_and_checks_only_with_them() {
    let f = Fixture::new();
    let g = genesis();
    let receipt = f.receipt(0);
    let (s, d) = (subject(7), dedup(7));
    let bytes = receipt.to_bytes();
    let text = receipt.to_text();
    let payload = text.lines().last().expect("payload line");
    let decoded =
        base45::decode(&payload[tally_types::receipt::RECEIPT_PREFIX.len()..]).expect("base45");
    assert_eq!(decoded, bytes);
    for token in [s.0, d.0] {
        assert!(
            !contains(&bytes, token.as_bytes()),
            "no person token in the receipt"
        );
        assert!(!text.contains(&token.to_hex()));
    }

    let none = HeldTokens::default();
    assert_eq!(
        receipt.verify(&g, &none, None).map(|_| ()),
        Err(ReceiptError::TokenNeeded("subject"))
    );
    let subject_only = HeldTokens {
        subject: Some(s),
        dedup: None,
    };
    assert_eq!(
        receipt
            .verify(&g, &subject_only, None)
            .map_err(|e| e.check())
            .map(|_| ()),
        Err("token_needed")
    );
    let checked = receipt.verify(&g, &BOTH(), None).expect("receipt holds");
    assert_eq!(checked.proven.entry_id, f.built.block.entries[0].id());
    assert_eq!(checked.proven.outcome, EntryOutcome::Accepted);

    // Someone else's token makes an entry that was never committed.
    let wrong = HeldTokens {
        subject: Some(subject(8)),
        dedup: Some(d),
    };
    assert_eq!(
        receipt
            .verify(&g, &wrong, None)
            .map_err(|e| e.check())
            .map(|_| ()),
        Err("entry_path")
    );
}

#[test]
fn a_redemption_receipt_round_trips_through_text_and_checks_its_printed_summary() {
    let f = Fixture::new();
    let g = genesis();
    for index in [1, 2] {
        let receipt = f.receipt(index);
        let text = receipt.to_text();
        assert!(
            text.lines().last().expect("payload").len() < tally_types::receipt::QR_ALPHANUMERIC_MAX
        );
        let (read, printed) = Receipt::from_text(&text).expect("text form reads");
        assert_eq!(read, receipt);
        let checked = read
            .verify(&g, &HeldTokens::default(), Some(&printed))
            .expect("receipt holds");
        assert_eq!(checked.summary, printed);
        assert_eq!(checked.proven.index as usize, index);
        // A bare payload line, as a QR code holds it, reads too.
        let (bare, none) = Receipt::from_text(&receipt.payload_line()).expect("payload line reads");
        assert_eq!((bare, none.len()), (receipt, 0));
    }
    let rejected = f.receipt(2).summary().join("\n");
    assert!(rejected.contains("REJECTED: over_balance"), "{rejected}");
    assert!(rejected.contains("amount 2500"), "{rejected}");

    // A printed amount that is not the proven one.
    let text = f
        .receipt(1)
        .to_text()
        .replace("amount 3000", "amount 30000");
    let (read, printed) = Receipt::from_text(&text).expect("reads");
    let err = read
        .verify(&g, &HeldTokens::default(), Some(&printed))
        .map(|_| ());
    assert!(
        matches!(&err, Err(ReceiptError::Summary { printed, .. }) if printed.contains("30000")),
        "{err:?}"
    );
}

#[test]
fn tampered_foreign_and_other_kinds_of_receipt_are_refused() {
    let f = Fixture::new();
    let g = genesis();
    let receipt = f.receipt(1);
    let bytes = receipt.to_bytes();
    for pos in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x04;
        let result = Receipt::from_bytes(&bad).and_then(|r| r.verify(&g, &BOTH(), None));
        assert!(
            result.is_err(),
            "byte {pos} changed and the receipt still holds"
        );
    }
    let line = receipt.payload_line();
    let mut chars: Vec<char> = line.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == '0' { '1' } else { '0' };
    let changed: String = chars.into_iter().collect();
    assert!(Receipt::from_text(&changed)
        .and_then(|(r, _)| r.verify(&g, &HeldTokens::default(), None))
        .is_err());
    assert_eq!(
        Receipt::from_text("no payload here")
            .map(|_| ())
            .map_err(|e| e.check()),
        Err("format")
    );
    let trailing = format!("{}amount 99999 paid in cash\n", receipt.to_text());
    assert_eq!(
        Receipt::from_text(&trailing)
            .map(|_| ())
            .map_err(|e| e.check()),
        Err("format"),
        "nothing may follow the payload line"
    );
    assert_eq!(
        Receipt::from_text("TALLY1:bb8")
            .map(|_| ())
            .map_err(|e| e.check()),
        Err("format")
    );

    let mut other = g.clone();
    other.chain_id = name("somewhere-else");
    assert_eq!(
        receipt
            .verify(&other, &HeldTokens::default(), None)
            .map_err(|e| e.check())
            .map(|_| ()),
        Err("chain")
    );

    // A receipt that claims nothing is withheld from an issue would carry the tokens.
    let mut unwithheld = f.receipt(0);
    unwithheld.withheld.subject = false;
    assert_eq!(
        unwithheld.verify(&g, &BOTH(), None).map(|_| ()),
        Err(ReceiptError::Withheld)
    );

    assert!(matches!(
        Receipt::new(f.proof(3)),
        Err(ReceiptError::Kind("grant_role"))
    ));
}
