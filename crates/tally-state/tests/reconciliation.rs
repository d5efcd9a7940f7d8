//! Reconciliation over two months of a programme: issues, redemptions at two vendors, a refused
//! over-redemption, a revocation, an expiry and settlements. The figures come out exact, by
//! month, and a replay that counts an entry twice is caught as findings.

mod common;

use common::seed::*;
use common::*;
use tally_state::report::{month, PeriodFigures};
use tally_state::{Reconciliation, Report};
use tally_types::{EntryOutcome, RejectCode, SignedEntry, TimestampMs};

/// A committed block as the reconciliation saw it: time, entries, outcomes.
type ObservedBlock = (
    TimestampMs,
    Vec<SignedEntry>,
    Vec<(tally_types::EntryId, EntryOutcome)>,
);

struct Run {
    chain: Chain,
    rec: Reconciliation,
    blocks: Vec<ObservedBlock>,
}

impl Run {
    fn block(&mut self, entries: Vec<SignedEntry>) -> Vec<EntryOutcome> {
        let time = self.chain.now;
        let exec = self.chain.commit(entries);
        self.rec
            .observe(time, &exec.entries, &exec.outcomes, &self.chain.state)
            .expect("observe");
        self.blocks
            .push((time, exec.entries.clone(), exec.outcomes.clone()));
        exec.outcomes.iter().map(|(_, o)| *o).collect()
    }

    fn sign(&mut self, seed: u64, payload: tally_types::Payload) -> SignedEntry {
        self.chain.sign(&key(seed), payload)
    }
}

fn two_months() -> Run {
    let mut run = Run {
        chain: Chain::with_programmes(100_000),
        rec: Reconciliation::default(),
        blocks: Vec::new(),
    };
    let soon = TimestampMs(run.chain.now.0 + DAY);
    let issues = vec![
        run.sign(
            WFP_ISSUER,
            issue("wfp-food", 1, 5000, programme_end(), None),
        ),
        run.sign(WFP_ISSUER, issue("wfp-food", 2, 2000, soon, None)),
        run.sign(
            WFP_ISSUER,
            issue("wfp-food", 3, 1000, programme_end(), None),
        ),
    ];
    let (v1, v2, v3) = (issues[0].id(), issues[1].id(), issues[2].id());
    run.block(issues);
    let (vendor, vendor2) = (pk(WFP_VENDOR), pk(WFP_VENDOR2));
    let january = vec![
        run.sign(WFP_REDEEMER, redeem(v1, 1500, vendor, "jan-1")),
        run.sign(WFP_REDEEMER, redeem(v1, 500, vendor2, "jan-2")),
        run.sign(WFP_REDEEMER, redeem(v1, 10_000, vendor, "jan-3")),
        run.sign(WFP_ADMIN, settle("wfp-food", vendor, 1000, "pay-jan")),
    ];
    assert_eq!(
        run.block(january)[2],
        EntryOutcome::Rejected(RejectCode::OverBalance)
    );
    run.chain.advance(20 * DAY);
    let february = vec![
        run.sign(WFP_REDEEMER, redeem(v1, 1000, vendor, "feb-1")),
        run.sign(WFP_ISSUER, revoke_voucher(v3)),
        run.sign(WFP_ISSUER, expire_voucher(v2)),
        run.sign(WFP_ADMIN, settle("wfp-food", vendor, 1500, "pay-feb")),
    ];
    assert!(run
        .block(february)
        .iter()
        .all(|o| *o == EntryOutcome::Accepted));
    run
}

fn finish(run: Run) -> Report {
    let height = run.chain.height;
    run.rec.finish(&run.chain.state, height).expect("report")
}

#[test]
fn figures_per_programme_and_per_vendor_by_month() {
    let run = two_months();
    let (jan, feb) = (month(run.blocks[0].0), month(run.blocks[2].0));
    assert_eq!((jan.as_str(), feb.as_str()), ("2027-01", "2027-02"));
    let report = finish(run);
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    let wfp = report
        .programmes
        .iter()
        .find(|p| p.programme.as_str() == "wfp-food")
        .expect("wfp-food");
    assert_eq!(
        (
            wfp.budget,
            wfp.issued,
            wfp.redeemed,
            wfp.revoked,
            wfp.expired,
            wfp.outstanding,
            wfp.settled,
            wfp.owed
        ),
        (100_000, 8000, 3000, 1000, 2000, 2000, 2500, 500)
    );
    let unhcr = report
        .programmes
        .iter()
        .find(|p| p.programme.as_str() == "unhcr-food")
        .expect("unhcr-food");
    assert_eq!((unhcr.issued, unhcr.owed), (0, 0));

    assert_eq!(report.vendors.len(), 2);
    let v = report
        .vendors
        .iter()
        .find(|v| v.vendor == pk(WFP_VENDOR))
        .expect("vendor");
    let period = |r, s| PeriodFigures {
        redeemed: r,
        settled: s,
    };
    assert_eq!(v.periods.get(&jan), Some(&period(1500, 1000)));
    assert_eq!(v.periods.get(&feb), Some(&period(1000, 1500)));
    assert_eq!((v.redeemed, v.settled, v.owed), (2500, 2500, 0));
    let v2 = report
        .vendors
        .iter()
        .find(|v| v.vendor == pk(WFP_VENDOR2))
        .expect("vendor 2");
    assert_eq!((v2.redeemed, v2.settled, v2.owed), (500, 0, 500));
    assert_eq!(v2.periods.len(), 1);
}

#[test]
fn a_block_counted_twice_is_a_finding() {
    let mut run = two_months();
    let (time, entries, outcomes) = run.blocks[2].clone();
    run.rec
        .observe(time, &entries, &outcomes, &run.chain.state)
        .expect("observe");
    let report = finish(run);
    let figures: Vec<(&str, bool)> = report
        .findings
        .iter()
        .map(|f| (f.figure.as_str(), f.vendor.is_some()))
        .collect();
    // The vendor's summed redemptions and settlements disagree with its account, and the
    // programme's vendor accounts with the programme.
    assert!(figures.contains(&("redeemed", true)), "{figures:?}");
    assert!(figures.contains(&("settled", true)), "{figures:?}");
    assert!(figures.contains(&("redeemed", false)), "{figures:?}");
    assert!(figures.contains(&("settled", false)), "{figures:?}");
    let f = report
        .findings
        .iter()
        .find(|f| f.figure == "redeemed" && f.vendor.is_some())
        .expect("vendor finding");
    assert_eq!((f.replayed, f.reported), (Some(3500), Some(2500)));
}
