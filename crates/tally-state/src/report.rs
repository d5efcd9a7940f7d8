//! Reconciliation: the money of every programme and what it owes each vendor, computed from a
//! replay of the chain, for the auditor who must not take a node's figures on trust.
//!
//! Programme totals are read from the replayed state. Vendor figures are summed again from the
//! accepted redemptions and settlements themselves, by the calendar month (UTC) of their block,
//! and the two ways of counting must agree: every disagreement is a finding, as is every
//! broken money invariant.

use crate::records::Programme;
use crate::store::{State, StateRead};
use crate::StateError;
use serde::Serialize;
use std::collections::BTreeMap;
use tally_types::{EntryId, EntryOutcome, Name, Payload, PublicKey, SignedEntry, TimestampMs};

/// One programme's money, in its unit's minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgrammeFigures {
    /// The programme.
    pub programme: Name,
    /// The agency that opened it.
    pub agency: Name,
    /// Its commodity or currency.
    pub unit: Name,
    /// The most it may commit at once.
    pub budget: u64,
    /// Every voucher ever issued.
    pub issued: u64,
    /// Every redemption.
    pub redeemed: u64,
    /// Value returned by revocations.
    pub revoked: u64,
    /// Value returned by closing expired vouchers.
    pub expired: u64,
    /// Still on vouchers not closed: issued − redeemed − revoked − expired. A voucher past its
    /// expiry counts here until someone closes it.
    pub outstanding: u64,
    /// Paid to vendors.
    pub settled: u64,
    /// Owed to vendors: redeemed − settled.
    pub owed: u64,
}

/// The names of [`ProgrammeFigures::money`], in its order.
pub const MONEY_FIGURES: [&str; 8] = [
    "budget",
    "issued",
    "redeemed",
    "revoked",
    "expired",
    "outstanding",
    "settled",
    "owed",
];

impl ProgrammeFigures {
    /// Every money figure, in the order of [`MONEY_FIGURES`]: one list for tables, CSV and
    /// comparisons.
    pub fn money(&self) -> [u64; 8] {
        [
            self.budget,
            self.issued,
            self.redeemed,
            self.revoked,
            self.expired,
            self.outstanding,
            self.settled,
            self.owed,
        ]
    }
}

/// One month of one vendor's account with one programme.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeriodFigures {
    /// Redeemed for the vendor in blocks of that month.
    pub redeemed: u64,
    /// Settled to the vendor in blocks of that month.
    pub settled: u64,
}

/// One vendor's account with one programme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VendorFigures {
    /// The programme.
    pub programme: Name,
    /// The vendor's key.
    pub vendor: PublicKey,
    /// By month, `YYYY-MM` (UTC of the block).
    pub periods: BTreeMap<String, PeriodFigures>,
    /// All redeemed for the vendor.
    pub redeemed: u64,
    /// All settled to the vendor.
    pub settled: u64,
    /// redeemed − settled.
    pub owed: u64,
}

/// Something in the figures that does not add up, or that a node reports differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The programme concerned.
    pub programme: Name,
    /// The vendor concerned, for vendor figures.
    pub vendor: Option<PublicKey>,
    /// Which figure (`redeemed`, `settled`, `budget`, ...) or invariant.
    pub figure: String,
    /// What the replay gives.
    pub replayed: Option<u64>,
    /// What the other source gives (the node, or the state's own record).
    pub reported: Option<u64>,
    /// In words.
    pub detail: String,
}

/// Sums vendor figures block by block, then reads the programme totals off the final state.
#[derive(Debug, Default)]
pub struct Reconciliation {
    vendors: BTreeMap<(Name, PublicKey), BTreeMap<String, PeriodFigures>>,
}

/// The finished report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Height of the last replayed block.
    pub height: u64,
    /// Every programme, by id.
    pub programmes: Vec<ProgrammeFigures>,
    /// Every vendor account that saw a redemption or settlement, by programme then vendor.
    pub vendors: Vec<VendorFigures>,
    /// What does not add up within the replay.
    pub findings: Vec<Finding>,
}

/// `YYYY-MM` of a block time.
pub fn month(t: TimestampMs) -> String {
    let d = t.date().to_string();
    d.get(..7).unwrap_or(&d).to_string()
}

impl Reconciliation {
    /// Counts the accepted redemptions and settlements of a replayed block: its time, its
    /// entries and their outcomes. `state_after` is the state after the block; it gives each
    /// redeemed voucher's programme.
    pub fn observe(
        &mut self,
        block_time: TimestampMs,
        entries: &[SignedEntry],
        outcomes: &[(EntryId, EntryOutcome)],
        state_after: &State,
    ) -> Result<(), StateError> {
        let period = month(block_time);
        for (entry, (_, outcome)) in entries.iter().zip(outcomes) {
            if *outcome != EntryOutcome::Accepted {
                continue;
            }
            let (programme, vendor, redeemed, settled) = match &entry.body.payload {
                Payload::RedeemVoucher {
                    voucher,
                    amount,
                    vendor,
                    ..
                } => {
                    let v = state_after
                        .voucher(voucher)?
                        .ok_or_else(|| StateError::Corrupt {
                            key: voucher.to_hex(),
                            reason: "a redeemed voucher is not in the state".into(),
                        })?;
                    (v.programme, *vendor, *amount, 0)
                }
                Payload::SettleVendor {
                    programme,
                    vendor,
                    amount,
                    ..
                } => (programme.clone(), *vendor, 0, *amount),
                _ => continue,
            };
            let p = self
                .vendors
                .entry((programme, vendor))
                .or_default()
                .entry(period.clone())
                .or_default();
            p.redeemed = p.redeemed.saturating_add(redeemed);
            p.settled = p.settled.saturating_add(settled);
        }
        Ok(())
    }

    /// The report at `height`, with every disagreement between the summed vendor figures and
    /// the state's own records, and every broken money invariant, as a finding.
    pub fn finish(&self, state: &State, height: u64) -> Result<Report, StateError> {
        let mut findings = Vec::new();
        let mut programmes = Vec::new();
        let mut vendors = Vec::new();
        let mut by_programme: BTreeMap<Name, (u64, u64)> = BTreeMap::new();
        for ((programme, vendor), periods) in &self.vendors {
            let (programme, vendor, periods) = (programme.clone(), *vendor, periods.clone());
            let redeemed = periods.values().map(|p| p.redeemed).sum::<u64>();
            let settled = periods.values().map(|p| p.settled).sum::<u64>();
            let account = state
                .vendor_account(&programme, &vendor)?
                .unwrap_or_default();
            for (figure, summed, recorded) in [
                ("redeemed", redeemed, account.redeemed),
                ("settled", settled, account.settled),
            ] {
                if summed != recorded {
                    findings.push(Finding {
                        programme: programme.clone(),
                        vendor: Some(vendor),
                        figure: figure.into(),
                        replayed: Some(summed),
                        reported: Some(recorded),
                        detail: format!(
                            "the vendor's entries sum to {summed}; the replayed account records {recorded}"
                        ),
                    });
                }
            }
            let totals = by_programme.entry(programme.clone()).or_default();
            totals.0 = totals.0.saturating_add(redeemed);
            totals.1 = totals.1.saturating_add(settled);
            vendors.push(VendorFigures {
                programme,
                vendor,
                periods,
                redeemed,
                settled,
                owed: redeemed.saturating_sub(settled),
            });
        }
        for (id, p) in state.programmes()? {
            let (vendor_redeemed, vendor_settled) =
                by_programme.get(&id).copied().unwrap_or_default();
            findings.extend(invariant_findings(&id, &p, vendor_redeemed, vendor_settled));
            programmes.push(figures(&id, &p));
        }
        Ok(Report {
            height,
            programmes,
            vendors,
            findings,
        })
    }
}

fn figures(id: &Name, p: &Programme) -> ProgrammeFigures {
    let returned = p
        .redeemed
        .saturating_add(p.revoked)
        .saturating_add(p.expired);
    ProgrammeFigures {
        programme: id.clone(),
        agency: p.agency.clone(),
        unit: p.unit.clone(),
        budget: p.budget,
        issued: p.issued,
        redeemed: p.redeemed,
        revoked: p.revoked,
        expired: p.expired,
        outstanding: p.issued.saturating_sub(returned),
        settled: p.settled,
        owed: p.redeemed.saturating_sub(p.settled),
    }
}

fn invariant_findings(
    id: &Name,
    p: &Programme,
    vendor_redeemed: u64,
    vendor_settled: u64,
) -> Vec<Finding> {
    let finding =
        |figure: &str, replayed: Option<u64>, reported: Option<u64>, detail: String| Finding {
            programme: id.clone(),
            vendor: None,
            figure: figure.into(),
            replayed,
            reported,
            detail,
        };
    let mut out = Vec::new();
    let returned = p.redeemed as u128 + p.revoked as u128 + p.expired as u128;
    if returned > p.issued as u128 {
        out.push(finding(
            "outstanding",
            None,
            None,
            format!(
                "redeemed {} + revoked {} + expired {} exceed issued {}",
                p.redeemed, p.revoked, p.expired, p.issued
            ),
        ));
    }
    let committed = (p.issued as u128).saturating_sub(p.revoked as u128 + p.expired as u128);
    if committed > p.budget as u128 {
        out.push(finding(
            "budget",
            None,
            Some(p.budget),
            format!("{committed} committed, over the budget of {}", p.budget),
        ));
    }
    if p.settled > p.redeemed {
        out.push(finding(
            "settled",
            Some(p.settled),
            Some(p.redeemed),
            format!("settled {} exceeds redeemed {}", p.settled, p.redeemed),
        ));
    }
    for (figure, vendors, programme) in [
        ("redeemed", vendor_redeemed, p.redeemed),
        ("settled", vendor_settled, p.settled),
    ] {
        if vendors != programme {
            out.push(finding(
                figure,
                Some(vendors),
                Some(programme),
                format!("the programme's vendor accounts sum to {vendors}; the programme records {programme}"),
            ));
        }
    }
    out
}
