//! Signing an entry on this device with the user's key file and sending it to a node: shared by
//! every command that writes to the ledger.

use crate::client::{NodeClient, Settled, Submitted};
use crate::outbox::{Outbox, Record, QUEUED_MAX};
use crate::output::emit;
use crate::Outcome;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tally_types::{EntryBody, Keypair, Payload};

/// Options every signing command takes.
#[derive(Debug, Args, Clone)]
pub struct SignArgs {
    /// The signer's key file (mode 0600).
    #[arg(long, env = "TALLY_KEY")]
    pub key: PathBuf,
    /// The node's API.
    #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
    pub node: String,
    /// Use this sequence number instead of asking the node for the next free one.
    #[arg(long)]
    pub sequence: Option<u64>,
    /// Return once the node has admitted the entry, without waiting for its block.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the entry's block, in seconds.
    #[arg(long, default_value_t = 30)]
    pub wait_secs: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Sign with no connection: put the entry in this device's outbox, to be sent later by
    /// `tally outbox sync`. The outbox must have been prepared online for the key.
    #[arg(long)]
    pub offline: bool,
    /// The outbox directory.
    #[arg(long, env = "TALLY_OUTBOX", default_value_os_t = Outbox::default_dir())]
    pub outbox: PathBuf,
}

/// Loads the signer's key.
pub fn load_key(args: &SignArgs) -> anyhow::Result<Keypair> {
    Ok(tally_node::keyfile::read_key_file(&args.key)?)
}

/// Signs `payload` with the key, submits it, waits for its block and reports the outcome.
pub fn sign_and_submit(
    args: &SignArgs,
    key: &Keypair,
    payload: Payload,
) -> anyhow::Result<Outcome> {
    sign_and_submit_for_chain(args, key, |_| payload)
}

/// [`sign_and_submit`] for a payload that itself binds the chain id (a key rotation's proof):
/// `payload` is made once the chain id is known, from the same answer that gives the
/// sequence number, so signing still costs one round trip before the post.
pub fn sign_and_submit_for_chain(
    args: &SignArgs,
    key: &Keypair,
    payload: impl FnOnce(&tally_types::Name) -> Payload,
) -> anyhow::Result<Outcome> {
    if args.offline {
        return sign_offline(args, key, payload);
    }
    let client = NodeClient::new(&args.node);
    let author = key.public();
    let (chain_id, node_next) = client.signing_context(&author)?;
    let payload = payload(&chain_id);
    // Entries this device signed offline hold the numbers before any new one: send them first,
    // unless an explicit --sequence below all of them fills a gap before them.
    let outbox = Outbox::existing(&args.outbox, &author);
    let mut device_next = None;
    if let Some(o) = &outbox {
        let c = o.read()?;
        report_damage(o, &c);
        let waiting = c.pending();
        let fills_gap = match (args.sequence, waiting.first()) {
            (Some(s), Some(first)) => s < first.body.sequence,
            _ => false,
        };
        if !waiting.is_empty() && !fills_gap {
            bail!("{} entries signed offline wait in {}; send them first with `tally outbox sync` (they hold the sequence numbers before this one)", waiting.len(), o.path().display());
        }
        device_next = Some(c.next_sequence().unwrap_or(0));
        if waiting.is_empty() && c.damage.is_empty() {
            o.compact(&chain_id, device_next.unwrap_or(0))?;
        }
    }
    let sequence = match args.sequence {
        Some(s) => s,
        None => node_next.ok_or_else(|| anyhow!("key {author} is not registered on chain {chain_id}; an agency admin must grant it a role first"))?,
    };
    let next = sequence
        .checked_add(1)
        .context("no sequence number follows this one")?;
    if let (Some(o), Some(before)) = (&outbox, device_next) {
        // Recorded before the entry leaves, so a reply lost after the node took the entry cannot
        // let offline work reuse its number.
        o.append(&Record::Sequence {
            chain_id: chain_id.clone(),
            next: next.max(before),
        })?;
    }
    let record_chain = chain_id.clone();
    let (entry, kind) = sign_body(key, chain_id, sequence, payload);
    let id = entry.id();
    let submitted = client.submit(&entry).context("submitting the entry")?;
    if let (Some(o), Some(before), Submitted::Refused { .. }) = (&outbox, device_next, &submitted) {
        // Refused at the door: the number is still free.
        o.append(&Record::Sequence {
            chain_id: record_chain,
            next: sequence.max(before),
        })?;
    }
    match submitted {
        Submitted::Refused { code, detail } => {
            let v = json!({ "id": id, "kind": kind, "status": "rejected", "reason": { "code": code, "detail": detail } });
            emit(args.json, &v, || {
                format!("rejected {kind} {id}\n  reason: {code}: {detail}")
            })?;
            Ok(Outcome::Failed)
        }
        Submitted::Pending(id) if args.no_wait => {
            let v = json!({ "id": id, "kind": kind, "status": "pending", "sequence": sequence });
            emit(args.json, &v, || {
                format!("submitted {kind} {id} (sequence {sequence}); pending")
            })?;
            Ok(Outcome::Ok)
        }
        Submitted::Pending(id) => match client.wait(&id, Duration::from_secs(args.wait_secs))? {
            Settled::Committed(mut v) => {
                v["kind"] = json!(kind);
                let height = v["height"].as_u64().unwrap_or_default();
                emit(args.json, &v, || {
                    format!("committed {kind} {id}\n  height: {height}")
                })?;
                Ok(Outcome::Ok)
            }
            Settled::Rejected(mut v) => {
                v["kind"] = json!(kind);
                let code = v["reason"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string();
                let detail = v["reason"]["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let at = v["height"]
                    .as_u64()
                    .map(|h| format!(" (recorded at height {h})"))
                    .unwrap_or_default();
                emit(args.json, &v, || {
                    format!("rejected {kind} {id}{at}\n  reason: {code}: {detail}")
                })?;
                Ok(Outcome::Failed)
            }
            Settled::StillPending => {
                let v = json!({ "id": id, "kind": kind, "status": "pending" });
                emit(args.json, &v, || {
                    format!("{kind} {id} still pending after {}s; check later with `tally entry status {id}`", args.wait_secs)
                })?;
                Ok(Outcome::Failed)
            }
        },
    }
}

/// Warns on stderr about damaged stretches of an outbox file; `tally outbox status` lists them.
pub fn report_damage(o: &Outbox, c: &crate::outbox::Contents) {
    for d in &c.damage {
        eprintln!(
            "warning: {} is damaged at byte {} ({} bytes skipped): {}; the records around it are kept",
            o.path().display(),
            d.offset,
            d.skipped,
            d.reason
        );
    }
}

/// Signs with the chain id and sequence the outbox learned online, and queues the entry.
fn sign_offline(
    args: &SignArgs,
    key: &Keypair,
    payload: impl FnOnce(&tally_types::Name) -> Payload,
) -> anyhow::Result<Outcome> {
    let author = key.public();
    let not_prepared = || {
        anyhow!(
            "no outbox for key {author} in {}; while connected, run `tally outbox prepare --key {}`",
            args.outbox.display(),
            args.key.display()
        )
    };
    let outbox = Outbox::existing(&args.outbox, &author).ok_or_else(not_prepared)?;
    let c = outbox.read()?;
    report_damage(&outbox, &c);
    let chain_id = c.chain_id.clone().ok_or_else(not_prepared)?;
    let next = c.next_sequence().ok_or_else(not_prepared)?;
    let waiting = c.pending().len();
    if waiting >= QUEUED_MAX {
        bail!("the outbox already holds {waiting} unsent entries (the limit); sync before signing more");
    }
    let sequence = args.sequence.unwrap_or(next);
    let payload = payload(&chain_id);
    let (entry, kind) = sign_body(key, chain_id, sequence, payload);
    let id = entry.id();
    outbox.append(&Record::Queued(entry))?;
    let v = json!({ "id": id, "kind": kind, "status": "queued", "sequence": sequence,
                    "outbox": outbox.path().display().to_string(), "waiting": waiting + 1 });
    emit(args.json, &v, || {
        format!(
            "queued {kind} {id} (sequence {sequence}) in the outbox; {} waiting\n  send when connected: tally outbox sync --key {}",
            waiting + 1,
            args.key.display()
        )
    })?;
    Ok(Outcome::Ok)
}

/// The entry `key` signs: its body for `chain_id` at `sequence`, and the payload's kind.
fn sign_body(
    key: &Keypair,
    chain_id: tally_types::Name,
    sequence: u64,
    payload: Payload,
) -> (tally_types::SignedEntry, &'static str) {
    let kind = payload.kind();
    let body = EntryBody {
        chain_id,
        author: key.public(),
        sequence,
        payload,
    };
    (body.sign(key), kind)
}
