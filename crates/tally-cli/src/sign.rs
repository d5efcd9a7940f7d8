//! Signing an entry on this device with the user's key file and sending it to a node: shared by
//! every command that writes to the ledger.

use crate::client::{NodeClient, Settled, Submitted};
use crate::output::emit;
use crate::Outcome;
use anyhow::{anyhow, Context};
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
    let client = NodeClient::new(&args.node);
    let chain_id = client.chain_id()?;
    let author = key.public();
    let sequence = match args.sequence {
        Some(s) => s,
        None => client
            .next_sequence(&author)?
            .ok_or_else(|| anyhow!("key {author} is not registered on chain {chain_id}; an agency admin must grant it a role first"))?,
    };
    let kind = payload.kind();
    let entry = EntryBody {
        chain_id,
        author,
        sequence,
        payload,
    }
    .sign(key);
    let id = entry.id();
    match client.submit(&entry).context("submitting the entry")? {
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
