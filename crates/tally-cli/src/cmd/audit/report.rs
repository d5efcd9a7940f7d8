//! `tally audit report`: programme and vendor reconciliation from the auditor's own replay,
//! cross-checked against a node's figures.

use super::verify::{open_copy, or_violation, replay_copy, Violation};
use crate::client::NodeClient;
use crate::output::emit;
use crate::Outcome;
use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::PathBuf;
use tally_state::report::{Finding, Report, MONEY_FIGURES};
use tally_state::{BlockSummary, ChainVerifier, Reconciliation, State};
use tally_types::{Block, CommitCertificate, Genesis, Name};

/// How often the node may commit new blocks while its figures are read before the comparison
/// gives up: each time, the replay catches up and the figures are read again.
const NODE_ATTEMPTS_MAX: usize = 10;

/// The figures a node reports for a programme, compared one by one with the replay (the others
/// are derived from these).
const NODE_FIGURES: [&str; 6] = [
    "budget", "issued", "redeemed", "revoked", "expired", "settled",
];

pub enum Format {
    Table,
    Json,
    Csv,
}

pub struct ReportArgs {
    pub data_dir: Option<PathBuf>,
    pub node: Option<String>,
    pub genesis: Option<PathBuf>,
    pub programme: Option<Name>,
    pub format: Format,
}

pub fn report(a: ReportArgs) -> anyhow::Result<Outcome> {
    let json_out = matches!(a.format, Format::Json);
    or_violation(json_out, || {
        let (copy, genesis) = match &a.data_dir {
            Some(dir) => {
                let (store, g) = open_copy(dir, a.genesis.as_deref())?;
                (Some(store), g)
            }
            None => {
                let path = a
                    .genesis
                    .as_deref()
                    .context("--genesis is required without --data-dir")?;
                (None, tally_node::load_genesis(path)?)
            }
        };
        let mut verifier = ChainVerifier::new(&genesis);
        let mut rec = Reconciliation::default();
        if let Some(store) = &copy {
            replay_copy(store, &mut verifier, |block, s, state| {
                observe(&mut rec, block, s, state)
            })?;
        }
        let (report, node_findings) = match &a.node {
            None => (
                rec.finish(verifier.state(), verifier.tip().height)?,
                Vec::new(),
            ),
            Some(url) => {
                compare_with_node(&NodeClient::new(url), &genesis, &mut verifier, &mut rec)?
            }
        };
        let mut report = report;
        report.findings.extend(node_findings);
        if let Some(p) = &a.programme {
            report.programmes.retain(|f| &f.programme == p);
            report.vendors.retain(|v| &v.programme == p);
            report.findings.retain(|f| &f.programme == p);
        }
        print(&a, &genesis, &report)?;
        Ok(if report.findings.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed
        })
    })
}

fn observe(
    rec: &mut Reconciliation,
    block: &Block,
    summary: &BlockSummary,
    state: &State,
) -> anyhow::Result<()> {
    rec.observe(
        block.header.timestamp,
        &block.entries,
        &summary.outcomes,
        state,
    )?;
    Ok(())
}

/// Extends the replay to the node's head with blocks the node serves, reads the node's figures,
/// and compares them with the replay at that same height. If the node commits a block while
/// its figures are read, the replay catches up and the figures are read again.
fn compare_with_node(
    client: &NodeClient,
    genesis: &Genesis,
    verifier: &mut ChainVerifier,
    rec: &mut Reconciliation,
) -> anyhow::Result<(Report, Vec<Finding>)> {
    for _ in 0..NODE_ATTEMPTS_MAX {
        let status = node_status(client)?;
        if status.genesis_hash != genesis.hash().to_hex() {
            return Err(Violation::new(
                0,
                "genesis",
                format!(
                    "the node's genesis is {}, the trusted one {}",
                    status.genesis_hash,
                    genesis.hash()
                ),
            )
            .into());
        }
        let replayed = verifier.tip().height;
        if status.height < replayed {
            bail!(
                "the node is at height {}, behind the replayed copy at {replayed}; its figures cannot be compared",
                status.height
            );
        }
        for height in replayed + 1..=status.height {
            let (block, cert) = node_block(client, height)?;
            let summary = verifier
                .verify_next(&block, &cert)
                .map_err(Violation::from)?;
            observe(rec, &block, &summary, verifier.state())?;
        }
        let tip = verifier.tip();
        if tip.hash.to_hex() != status.head_hash {
            return Err(Violation::new(
                tip.height,
                "head",
                format!(
                    "the node says its head is {}, the replay of its chain ends at {}",
                    status.head_hash, tip.hash
                ),
            )
            .into());
        }
        let report = rec.finish(verifier.state(), tip.height)?;
        let findings = node_findings(client, &report)?;
        if node_status(client)?.height == status.height {
            return Ok((report, findings));
        }
    }
    bail!("the node committed new blocks during each of {NODE_ATTEMPTS_MAX} attempts to read its figures; try again")
}

struct NodeStatus {
    height: u64,
    head_hash: String,
    genesis_hash: String,
}

fn node_status(client: &NodeClient) -> anyhow::Result<NodeStatus> {
    let s = client
        .get("/v1/status")?
        .ok_or_else(|| anyhow!("the node has no /v1/status"))?;
    let text = |f: &str| {
        s[f].as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the node's status has no {f}"))
    };
    Ok(NodeStatus {
        height: s["height"]
            .as_u64()
            .ok_or_else(|| anyhow!("the node's status has no height"))?,
        head_hash: text("head_hash")?,
        genesis_hash: text("genesis_hash")?,
    })
}

fn node_block(client: &NodeClient, height: u64) -> anyhow::Result<(Block, CommitCertificate)> {
    let v = client
        .get(&format!("/v1/blocks/{height}/raw"))?
        .ok_or_else(|| {
            Violation::new(
                height,
                "missing_block",
                "the node reports a head above this height but serves no block at it",
            )
        })?;
    let decode = |field: &str| -> Result<Vec<u8>, Violation> {
        v[field]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| {
                Violation::new(height, "storage", format!("the node's {field} is not hex"))
            })
    };
    let block: Block = tally_types::decode(&decode("block")?)
        .map_err(|e| Violation::new(height, "storage", format!("the node's block: {e}")))?;
    let cert: CommitCertificate = tally_types::decode(&decode("certificate")?).map_err(|e| {
        Violation::new(
            height,
            "certificate",
            format!("the node's certificate: {e}"),
        )
    })?;
    Ok((block, cert))
}

/// A finding of the comparison with the node: a figure it does not report as the replay does.
fn node_finding(
    programme: &Name,
    vendor: Option<tally_types::PublicKey>,
    figure: &str,
    replayed: Option<u64>,
    reported: Option<u64>,
    detail: String,
) -> Finding {
    Finding {
        programme: programme.clone(),
        vendor,
        figure: figure.into(),
        replayed,
        reported,
        detail,
    }
}

/// The finding when the node reports `theirs` for a figure the replay gives as `ours`.
fn differs(
    programme: &Name,
    vendor: Option<tally_types::PublicKey>,
    figure: &str,
    ours: u64,
    theirs: Option<u64>,
) -> Option<Finding> {
    (theirs != Some(ours)).then(|| {
        let detail = format!(
            "the node reports {}, the replay gives {ours}",
            shown(theirs)
        );
        node_finding(programme, vendor, figure, Some(ours), theirs, detail)
    })
}

/// Every figure where the node's answer differs from the replay.
fn node_findings(client: &NodeClient, report: &Report) -> anyhow::Result<Vec<Finding>> {
    let listed = client
        .get("/v1/programmes")?
        .ok_or_else(|| anyhow!("the node has no /v1/programmes"))?;
    let node_programmes: Vec<Value> = listed["programmes"]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("the node's programme list is not a list"))?;
    let mut out = Vec::new();
    for p in &report.programmes {
        let Some(n) = node_programmes
            .iter()
            .find(|n| n["id"].as_str() == Some(p.programme.as_str()))
        else {
            out.push(node_finding(
                &p.programme,
                None,
                "programme",
                None,
                None,
                "the node does not list this programme".into(),
            ));
            continue;
        };
        let replayed = MONEY_FIGURES.iter().zip(p.money());
        for (figure, ours) in replayed.filter(|(f, _)| NODE_FIGURES.contains(f)) {
            out.extend(differs(
                &p.programme,
                None,
                figure,
                ours,
                n[*figure].as_u64(),
            ));
        }
    }
    for n in &node_programmes {
        let id = n["id"].as_str().unwrap_or_default();
        if !report.programmes.iter().any(|p| p.programme.as_str() == id) {
            let programme =
                Name::new(id).map_err(|e| anyhow!("the node lists programme {id:?}: {e}"))?;
            out.push(node_finding(
                &programme,
                None,
                "programme",
                None,
                None,
                "the node lists a programme the replay does not hold".into(),
            ));
        }
    }
    for v in &report.vendors {
        let path = format!("/v1/programmes/{}/vendors/{}", v.programme, v.vendor);
        let node = client.get(&path)?;
        for (figure, ours) in [("redeemed", v.redeemed), ("settled", v.settled)] {
            let theirs = node.as_ref().and_then(|n| n[figure].as_u64());
            out.extend(differs(&v.programme, Some(v.vendor), figure, ours, theirs));
        }
    }
    Ok(out)
}

fn shown(v: Option<u64>) -> String {
    v.map_or_else(|| "nothing".into(), |v| v.to_string())
}

fn print(a: &ReportArgs, genesis: &Genesis, r: &Report) -> anyhow::Result<()> {
    match a.format {
        Format::Json => {
            let v = json!({
                "ok": r.findings.is_empty(),
                "chain_id": genesis.chain_id,
                "genesis_hash": genesis.hash(),
                "height": r.height,
                "compared_with_node": a.node,
                "programmes": r.programmes,
                "vendors": r.vendors,
                "findings": r.findings,
            });
            emit(true, &v, String::new)
        }
        Format::Csv => {
            print!("{}", csv(r));
            Ok(())
        }
        Format::Table => {
            print!("{}", table(a, genesis, r));
            Ok(())
        }
    }
}

const CSV_HEADER: &str = "row,programme,vendor,period,unit,budget,issued,redeemed,revoked,expired,outstanding,settled,owed,figure,replayed,reported,detail";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(r: &Report) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for p in &r.programmes {
        let money: Vec<String> = p.money().iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "programme,{},,,{},{},,,,",
            p.programme,
            p.unit,
            money.join(",")
        );
    }
    for v in &r.vendors {
        for (period, f) in &v.periods {
            let _ = writeln!(
                out,
                "vendor_period,{},{},{period},,,,{},,,,{},,,,,",
                v.programme, v.vendor, f.redeemed, f.settled
            );
        }
        let _ = writeln!(
            out,
            "vendor_total,{},{},,,,,{},,,,{},{},,,,",
            v.programme, v.vendor, v.redeemed, v.settled, v.owed
        );
    }
    for f in &r.findings {
        let vendor = f.vendor.map(|v| v.to_hex()).unwrap_or_default();
        let _ = writeln!(
            out,
            "finding,{},{vendor},,,,,,,,,,,{},{},{},{}",
            f.programme,
            csv_field(&f.figure),
            opt(f.replayed),
            opt(f.reported),
            csv_field(&f.detail)
        );
    }
    out
}

fn table(a: &ReportArgs, genesis: &Genesis, r: &Report) -> String {
    let mut out = String::new();
    let source = match (&a.data_dir, &a.node) {
        (Some(d), Some(n)) => format!(
            "replayed from {} and brought to the head of {n}",
            d.display()
        ),
        (Some(d), None) => format!("replayed from {}", d.display()),
        (None, Some(n)) => format!("replayed from the blocks of {n}"),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        "Reconciliation of chain {} at height {} ({source}; genesis {})\n",
        genesis.chain_id,
        r.height,
        genesis.hash()
    );
    let _ = write!(out, "{:<24} {:<8}", "programme", "unit");
    for name in MONEY_FIGURES {
        let _ = write!(out, " {name:>12}");
    }
    out.push('\n');
    for p in &r.programmes {
        let _ = write!(out, "{:<24} {:<8}", p.programme.as_str(), p.unit.as_str());
        for figure in p.money() {
            let _ = write!(out, " {figure:>12}");
        }
        out.push('\n');
    }
    if !r.vendors.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:<64} {:<8} {:>12} {:>12} {:>12}",
            "programme", "vendor", "month", "redeemed", "settled", "owed"
        );
        for v in &r.vendors {
            for (period, f) in &v.periods {
                let _ = writeln!(
                    out,
                    "{:<24} {:<64} {:<8} {:>12} {:>12}",
                    v.programme.as_str(),
                    v.vendor.to_hex(),
                    period,
                    f.redeemed,
                    f.settled
                );
            }
            let _ = writeln!(
                out,
                "{:<24} {:<64} {:<8} {:>12} {:>12} {:>12}",
                v.programme.as_str(),
                v.vendor.to_hex(),
                "total",
                v.redeemed,
                v.settled,
                v.owed
            );
        }
    }
    if r.findings.is_empty() {
        let _ = writeln!(
            out,
            "\nNo findings: the figures add up{}.",
            if a.node.is_some() {
                ", and the node reports the same"
            } else {
                ""
            }
        );
    } else {
        let _ = writeln!(out, "\n{} finding(s):", r.findings.len());
        for f in &r.findings {
            let vendor = f.vendor.map(|v| format!(" vendor {v}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  FINDING {}{vendor} {}: {}",
                f.programme, f.figure, f.detail
            );
        }
    }
    out
}
