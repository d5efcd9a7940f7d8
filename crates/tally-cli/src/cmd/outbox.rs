//! `tally outbox prepare|status|sync`: a field device's entries signed with no connection.

use crate::client::{NodeClient, Settled, Submitted};
use crate::outbox::{Contents, Outbox, Record, Settlement};
use crate::output::emit;
use crate::sign::report_damage;
use crate::Outcome;
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tally_types::{Payload, PublicKey, Receipt, SignedEntry};

/// How many missing sequence numbers `status` lists.
const MISSING_SHOWN_MAX: usize = 100;

/// How many entries are in flight at once during a sync, sent in one request: well inside the
/// node's look-ahead of 256 sequence numbers per author (`mempool.per_author_max`). Fewer when
/// the node takes fewer in one request (`api.batch_entries_max`).
const SYNC_WINDOW: usize = 128;

/// Which outbox: the key it belongs to and where it lives.
#[derive(Debug, Args, Clone)]
pub struct OutboxArgs {
    /// The signer's key file.
    #[arg(long, env = "TALLY_KEY")]
    pub key: PathBuf,
    /// The outbox directory.
    #[arg(long, env = "TALLY_OUTBOX", default_value_os_t = Outbox::default_dir())]
    pub outbox: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCmd {
    /// While connected: create the key's outbox and record the chain and the key's next
    /// sequence number, so the device can sign with `--offline` later.
    Prepare {
        #[command(flatten)]
        args: OutboxArgs,
        /// The node's API.
        #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
        node: String,
    },
    /// What waits to be sent, what was settled, and any damage to the file (exit 1 when the
    /// file is damaged).
    Status {
        #[command(flatten)]
        args: OutboxArgs,
    },
    /// Send the waiting entries in sequence order and report each: committed (with its receipt
    /// for an issue or redemption) or rejected with the reason. Exit 0 when every entry
    /// committed, 1 when any was rejected, is still pending, or the file is damaged.
    Sync {
        #[command(flatten)]
        args: OutboxArgs,
        /// The node's API.
        #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
        node: String,
        /// How long to wait for each window of entries to reach a block, in seconds.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
}

pub fn run(cmd: OutboxCmd) -> anyhow::Result<Outcome> {
    match cmd {
        OutboxCmd::Prepare { args, node } => prepare(&args, &node),
        OutboxCmd::Status { args } => status(&args),
        OutboxCmd::Sync {
            args,
            node,
            wait_secs,
        } => sync(&args, &node, Duration::from_secs(wait_secs)),
    }
}

fn key_of(args: &OutboxArgs) -> anyhow::Result<PublicKey> {
    Ok(tally_node::keyfile::read_key_file(&args.key)?.public())
}

fn prepare(args: &OutboxArgs, node: &str) -> anyhow::Result<Outcome> {
    let key = key_of(args)?;
    let client = NodeClient::new(node);
    let (chain_id, node_next) = client.signing_context(&key)?;
    let outbox = Outbox::create(&args.outbox, &key)?;
    let c = outbox.read()?;
    report_damage(&outbox, &c);
    if let Some(known) = &c.chain_id {
        if *known != chain_id {
            bail!(
                "the outbox {} is for chain {known}, the node is on {chain_id}",
                outbox.path().display()
            );
        }
    }
    let node_next = node_next.ok_or_else(|| anyhow!("key {key} is not registered on chain {chain_id}; an agency admin must grant it a role first"))?;
    let next = node_next.max(c.next_sequence().unwrap_or(0));
    outbox.append(&Record::Sequence {
        chain_id: chain_id.clone(),
        next,
    })?;
    let v = json!({ "outbox": outbox.path().display().to_string(), "chain_id": chain_id, "next_sequence": next });
    emit(args.json, &v, || {
        format!(
            "outbox ready: {}\n  chain: {chain_id}\n  next sequence: {next}\nSign with --offline when there is no connection; send with `tally outbox sync`.",
            outbox.path().display()
        )
    })?;
    Ok(Outcome::Ok)
}

fn open(args: &OutboxArgs) -> anyhow::Result<(Outbox, Contents)> {
    let key = key_of(args)?;
    let outbox = Outbox::existing(&args.outbox, &key).ok_or_else(|| {
        anyhow!(
            "no outbox for key {key} in {}; create one with `tally outbox prepare` while connected",
            args.outbox.display()
        )
    })?;
    let c = outbox.read()?;
    Ok((outbox, c))
}

fn entry_json(e: &SignedEntry) -> Value {
    json!({ "id": e.id(), "kind": e.body.payload.kind(), "sequence": e.body.sequence })
}

fn status(args: &OutboxArgs) -> anyhow::Result<Outcome> {
    let (outbox, c) = open(args)?;
    let pending = c.pending();
    let missing = c.missing(MISSING_SHOWN_MAX);
    let v = json!({
        "outbox": outbox.path().display().to_string(),
        "chain_id": c.chain_id,
        "next_sequence": c.next_sequence(),
        "waiting": pending.iter().map(entry_json).collect::<Vec<_>>(),
        "settled": c.queued.iter().filter_map(|e| c.settled.get(&e.id()).map(|s| {
            let mut j = entry_json(e);
            j["outcome"] = json!(s);
            j
        })).collect::<Vec<_>>(),
        "damage": c.damage,
        "missing_sequences": missing,
    });
    emit(args.json, &v, || {
        let mut s = format!(
            "outbox {}\n  chain: {}\n  next sequence: {}\n  waiting: {}",
            outbox.path().display(),
            c.chain_id
                .as_ref()
                .map_or("unknown".into(), |n| n.to_string()),
            c.next_sequence()
                .map_or("unknown".into(), |n| n.to_string()),
            pending.len()
        );
        for e in &pending {
            s += &format!(
                "\n    {} {} (sequence {})",
                e.body.payload.kind(),
                e.id(),
                e.body.sequence
            );
        }
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(u64::to_string).collect();
            s += &format!(
                "\n  MISSING sequence numbers {}: the node holds the later entries until each is signed again (online, with --sequence N)",
                list.join(", ")
            );
        }
        for d in &c.damage {
            s += &format!(
                "\n  DAMAGED at byte {} ({} bytes skipped): {}",
                d.offset, d.skipped, d.reason
            );
        }
        s
    })?;
    Ok(if c.damage.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// What a sync reports for one entry.
struct Line {
    entry: SignedEntry,
    settled: Option<Settlement>,
    note: Option<String>,
    receipt: Option<PathBuf>,
}

/// Refusals at the node's door that say "not now" rather than "never": the entry is sent again.
const RETRY_CODES: [&str; 2] = ["mempool_full", "future_sequence"];

/// A node's answer about an entry it knows, as a final settlement; `None` while it is pending,
/// or when its refusal was only for the moment (the entry is then sent again).
fn settlement_of(v: &Value) -> Option<Settlement> {
    let height = v["height"].as_u64();
    match v["status"].as_str() {
        Some("committed") => height.map(|height| Settlement::Committed { height }),
        Some("rejected") => {
            let code = v["reason"]["code"].as_str().unwrap_or("unknown");
            if height.is_none() && RETRY_CODES.contains(&code) {
                return None;
            }
            Some(Settlement::Rejected {
                code: code.to_string(),
                detail: v["reason"]["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                height,
            })
        }
        _ => None,
    }
}

/// Writes the receipt of a settled issue or redemption beside the outbox.
fn write_receipt(
    client: &NodeClient,
    dir: &Path,
    entry: &SignedEntry,
) -> anyhow::Result<Option<PathBuf>> {
    if !matches!(
        entry.body.payload,
        Payload::IssueVoucher { .. } | Payload::RedeemVoucher { .. }
    ) {
        return Ok(None);
    }
    let Some(proof) = client.proof(&entry.id())? else {
        return Ok(None);
    };
    let receipt = Receipt::new(proof)?;
    let dir = dir.join("receipts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.txt", entry.id()));
    std::fs::write(&path, receipt.to_text())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}

fn sync(args: &OutboxArgs, node: &str, wait: Duration) -> anyhow::Result<Outcome> {
    let (outbox, c) = open(args)?;
    report_damage(&outbox, &c);
    let client = NodeClient::new(node);
    let (chain_id, batch_max) = client.chain_and_batch_max()?;
    if let Some(known) = &c.chain_id {
        if *known != chain_id {
            bail!("the outbox is for chain {known}, the node at {node} is on {chain_id}");
        }
    }
    let key = key_of(args)?;
    let mut lines = Vec::new();
    let mut stopped = None;
    let window_len = batch_max.clamp(1, SYNC_WINDOW);
    for window in c.pending().chunks(window_len) {
        let mut sent = Vec::new();
        // The window in one request. An entry a sync cut short sent already is answered
        // `duplicate_entry` and followed like the others.
        let answers = client.submit_batch(window)?;
        for (entry, answer) in window.iter().zip(answers) {
            match answer {
                Submitted::Pending(_) => sent.push(entry.clone()),
                Submitted::Refused { code, .. } if code == "duplicate_entry" => {
                    sent.push(entry.clone())
                }
                Submitted::Refused { code, detail } if RETRY_CODES.contains(&code.as_str()) => {
                    // It stays waiting in the outbox; those of the window the node took are
                    // followed to their blocks.
                    stopped.get_or_insert(format!(
                        "the node could not take more now ({code}: {detail}); run sync again"
                    ));
                }
                Submitted::Refused { code, detail } => {
                    let s = Settlement::Rejected {
                        code,
                        detail,
                        height: None,
                    };
                    lines.push(settle(&client, &outbox, entry.clone(), s)?);
                }
            }
        }
        // One deadline for the window: each entry gets what is left of it.
        let deadline = Instant::now() + wait;
        for entry in sent {
            let left = deadline.saturating_duration_since(Instant::now());
            match client.wait(&entry.id(), left)? {
                Settled::Committed(v) | Settled::Rejected(v) => match settlement_of(&v) {
                    Some(s) => lines.push(settle(&client, &outbox, entry, s)?),
                    None => lines.push(Line {
                        entry,
                        settled: None,
                        note: Some(format!("the node says {v}; run sync again")),
                        receipt: None,
                    }),
                },
                Settled::StillPending => lines.push(Line {
                    entry,
                    settled: None,
                    note: Some("still pending; run sync again".into()),
                    receipt: None,
                }),
            }
        }
        if stopped.is_some() {
            break;
        }
    }
    // The node's next number counts everything sent; the device continues from it.
    if let (_, Some(next)) = client.signing_context(&key)? {
        let after = outbox.read()?;
        if after.pending().is_empty() && after.damage.is_empty() {
            outbox.compact(&chain_id, next)?;
        } else {
            outbox.append(&Record::Sequence {
                chain_id: chain_id.clone(),
                next: next.max(after.next_sequence().unwrap_or(0)),
            })?;
        }
    }
    report_sync(args, &outbox, &c, &lines, stopped.as_deref())
}

fn settle(
    client: &NodeClient,
    outbox: &Outbox,
    entry: SignedEntry,
    s: Settlement,
) -> anyhow::Result<Line> {
    outbox.append(&Record::Settled {
        id: entry.id(),
        outcome: s.clone(),
    })?;
    let in_block = match &s {
        Settlement::Committed { .. } => true,
        Settlement::Rejected { height, .. } => height.is_some(),
    };
    let dir = outbox.path().parent().unwrap_or(Path::new("."));
    // The settlement is recorded; a receipt that cannot be fetched now is reported, not fatal
    // (`tally receipt fetch` gets it later).
    let (receipt, note) = match in_block {
        false => (None, None),
        true => match write_receipt(client, dir, &entry) {
            Ok(r) => (r, None),
            Err(e) => (None, Some(format!("no receipt: {e:#}"))),
        },
    };
    Ok(Line {
        entry,
        settled: Some(s),
        note,
        receipt,
    })
}

fn report_sync(
    args: &OutboxArgs,
    outbox: &Outbox,
    c: &Contents,
    lines: &[Line],
    stopped: Option<&str>,
) -> anyhow::Result<Outcome> {
    let committed = lines
        .iter()
        .filter(|l| matches!(l.settled, Some(Settlement::Committed { .. })))
        .count();
    let all_good = committed == lines.len() && stopped.is_none() && c.damage.is_empty();
    let v = json!({
        "outbox": outbox.path().display().to_string(),
        "entries": lines.iter().map(|l| {
            let mut j = entry_json(&l.entry);
            match &l.settled {
                Some(Settlement::Committed { height }) => { j["status"] = json!("committed"); j["height"] = json!(height); }
                Some(Settlement::Rejected { code, detail, height }) => {
                    j["status"] = json!("rejected");
                    j["height"] = json!(height);
                    j["reason"] = json!({ "code": code, "detail": detail });
                }
                None => { j["status"] = json!("pending"); }
            }
            j["note"] = json!(l.note);
            j["receipt"] = json!(l.receipt.as_ref().map(|p| p.display().to_string()));
            j
        }).collect::<Vec<_>>(),
        "committed": committed,
        "stopped": stopped,
        "damage": c.damage,
    });
    emit(args.json, &v, || {
        let mut s = format!(
            "sent {} entries from {}: {committed} committed",
            lines.len(),
            outbox.path().display()
        );
        for l in lines {
            let what = format!(
                "{} {} (sequence {})",
                l.entry.body.payload.kind(),
                l.entry.id(),
                l.entry.body.sequence
            );
            s += &match &l.settled {
                Some(Settlement::Committed { height }) => {
                    format!("\n  committed {what} at height {height}")
                }
                Some(Settlement::Rejected {
                    code,
                    detail,
                    height,
                }) => {
                    let at = height
                        .map(|h| format!(" (recorded at height {h})"))
                        .unwrap_or_default();
                    format!("\n  rejected  {what}{at}\n    reason: {code}: {detail}")
                }
                None => format!("\n  pending   {what}: {}", l.note.as_deref().unwrap_or("")),
            };
            if let (Some(_), Some(note)) = (&l.settled, &l.note) {
                s += &format!("\n    {note}");
            }
            if let Some(r) = &l.receipt {
                s += &format!("\n    receipt: {}", r.display());
            }
        }
        if let Some(why) = stopped {
            s += &format!("\n  stopped: {why}");
        }
        for d in &c.damage {
            s += &format!(
                "\n  DAMAGED outbox at byte {} ({} bytes skipped): {}",
                d.offset, d.skipped, d.reason
            );
        }
        s
    })?;
    Ok(if all_good {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_answers_settle_an_entry() {
        let committed = json!({ "status": "committed", "height": 7, "index": 0 });
        assert_eq!(
            settlement_of(&committed),
            Some(Settlement::Committed { height: 7 })
        );
        assert_eq!(settlement_of(&json!({ "status": "pending" })), None);
        for code in RETRY_CODES {
            let refused = json!({ "status": "rejected", "reason": { "code": code, "detail": "" } });
            assert_eq!(settlement_of(&refused), None, "{code} is sent again");
        }
        let evidence = json!({ "status": "rejected", "height": 9,
                               "reason": { "code": "over_balance", "detail": "d" } });
        assert!(matches!(
            settlement_of(&evidence),
            Some(Settlement::Rejected {
                height: Some(9),
                ..
            })
        ));
        let refused =
            json!({ "status": "rejected", "reason": { "code": "unknown_author", "detail": "d" } });
        assert!(matches!(
            settlement_of(&refused),
            Some(Settlement::Rejected { height: None, .. })
        ));
    }
}
