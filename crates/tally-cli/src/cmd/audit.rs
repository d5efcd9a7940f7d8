//! `tally audit verify`: re-verify a copy of the chain offline, trusting nothing but genesis.

use crate::output::emit;
use crate::Outcome;
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tally_state::ChainVerifier;
use tally_storage::{StorageError, Store};

#[derive(Debug, Subcommand)]
pub enum Audit {
    /// Check every block from genesis: hash links, every certificate, every signature, and a
    /// replay of every entry to the same outcomes and state roots. Exit 0 when all holds, 1 on
    /// the first violation, 2 when the data cannot be read at all.
    Verify {
        /// A node's data directory (or a copy of it). Opened read-only.
        #[arg(long)]
        data_dir: PathBuf,
        /// The genesis file you trust; the directory's own genesis must match it. Without it,
        /// the directory's genesis is used and its hash printed for you to compare.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Audit) -> anyhow::Result<Outcome> {
    let Audit::Verify {
        data_dir,
        genesis,
        json,
    } = cmd;
    let store = Store::open_read_only(&data_dir)
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let stored = store.genesis()?.context("the directory has no genesis")?;
    let fail = |height: u64,
                entry: Option<String>,
                rule: &str,
                detail: String|
     -> anyhow::Result<Outcome> {
        let v = json!({ "ok": false, "violation": { "height": height, "entry": entry, "rule": rule, "detail": detail } });
        emit(json, &v, || {
            let at = entry
                .as_ref()
                .map(|e| format!(" entry {e}"))
                .unwrap_or_default();
            format!("VIOLATION at height {height}{at}\n  rule: {rule}\n  {detail}")
        })?;
        Ok(Outcome::Failed)
    };
    if let Some(path) = &genesis {
        let trusted = tally_node::load_genesis(path)?;
        if trusted.hash() != stored.hash() {
            return fail(
                0,
                None,
                "genesis",
                format!(
                    "directory genesis {} differs from {} ({})",
                    stored.hash(),
                    trusted.hash(),
                    path.display()
                ),
            );
        }
    }
    let head = store.head()?;
    let started = Instant::now();
    let mut verifier = ChainVerifier::new(&stored);
    for height in 1..=head.height {
        let block = match store.block(height) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return fail(
                    height,
                    None,
                    "missing_block",
                    format!("head is {} but block {height} is absent", head.height),
                )
            }
            Err(StorageError::Corrupt(d)) => return fail(height, None, "storage", d),
            Err(e) => return Err(e.into()),
        };
        let cert = match store.certificate(height) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return fail(
                    height,
                    None,
                    "certificate",
                    "no commit certificate stored".into(),
                )
            }
            Err(StorageError::Corrupt(d)) => return fail(height, None, "certificate", d),
            Err(e) => return Err(e.into()),
        };
        if let Err(v) = verifier.verify_next(&block, &cert) {
            return fail(v.height, v.entry.map(|e| e.to_hex()), v.rule, v.detail);
        }
    }
    let tip = verifier.tip().clone();
    if tip.hash != head.hash {
        return fail(
            head.height,
            None,
            "head",
            format!(
                "verified chain ends at {}, the directory's head says {}",
                tip.hash, head.hash
            ),
        );
    }
    let root = verifier.state().root();
    if root != head.state_root {
        return fail(
            head.height,
            None,
            "state_root",
            format!(
                "replayed state root {root}, directory's head says {}",
                head.state_root
            ),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let (entries, rejected) = verifier.counts();
    let rate = if secs > 0.0 {
        entries as f64 / secs
    } else {
        0.0
    };
    let v = json!({
        "ok": true,
        "chain_id": stored.chain_id,
        "genesis_hash": stored.hash(),
        "blocks": head.height,
        "entries": entries,
        "rejected_entries": rejected,
        "head_hash": head.hash,
        "state_root": root,
        "seconds": secs,
        "entries_per_second": rate,
    });
    emit(json, &v, || {
        format!(
            "OK chain {} verified from genesis {}\n  blocks:   {}\n  entries:  {} ({} rejected by a rule, kept as evidence)\n  head:     {}\n  state:    {}\n  time:     {:.2}s ({:.0} entries/s)",
            stored.chain_id,
            stored.hash(),
            head.height,
            entries,
            rejected,
            head.hash,
            root,
            secs,
            rate
        )
    })?;
    Ok(Outcome::Ok)
}
