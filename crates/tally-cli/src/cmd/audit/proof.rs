//! `tally audit proof` and `tally audit check-proof`: one entry's inclusion proof, fetched from
//! a node and checked offline against the genesis file alone.

use crate::client::NodeClient;
use crate::output::emit;
use crate::Outcome;
use anyhow::Context;
use serde_json::json;
use std::io::Read;
use std::path::Path;
use tally_types::{EntryId, EntryOutcome, InclusionProof, ProofError, PROOF_BYTES_MAX};

pub fn fetch_proof(entry: &EntryId, out: &Path, node: &str, json: bool) -> anyhow::Result<Outcome> {
    let Some(proof) = NodeClient::new(node).proof(entry)? else {
        eprintln!("entry {entry} is in no committed block on node {node} (pending, refused or unknown; see `tally entry status`)");
        return Ok(Outcome::Failed);
    };
    let bytes = proof.to_bytes();
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let summary = json!({
        "entry": entry,
        "height": proof.header.height,
        "index": proof.index,
        "outcome": proof.outcome,
        "block_hash": proof.header.hash(),
        "file": out.display().to_string(),
        "bytes": bytes.len(),
    });
    emit(json, &summary, || {
        format!(
            "proof of entry {entry} written to {} ({} bytes)\n  block:   {} ({})\n  index:   {}\n  outcome: {}\nCheck it offline with: tally audit check-proof {} --genesis GENESIS",
            out.display(),
            bytes.len(),
            proof.header.height,
            proof.header.hash(),
            proof.index,
            outcome_text(&proof.outcome),
            out.display(),
        )
    })?;
    Ok(Outcome::Ok)
}

fn outcome_text(o: &EntryOutcome) -> String {
    match o {
        EntryOutcome::Accepted => "accepted".into(),
        EntryOutcome::Rejected(code) => format!("rejected ({code}), kept as evidence"),
    }
}

/// Reads at most `limit` bytes of a file (`-` for stdin), so an oversized input is refused by
/// the check that reads it instead of being read whole.
pub(crate) fn read_bounded(file: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("opening {}", file.display()))?
            .take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(bytes)
}

pub fn check_proof(file: &Path, genesis: &Path, json: bool) -> anyhow::Result<Outcome> {
    let genesis = tally_node::load_genesis(genesis)?;
    let bytes = read_bounded(file, PROOF_BYTES_MAX as u64 + 1)?;
    let checked =
        InclusionProof::from_bytes(&bytes).and_then(|p| p.verify(&genesis).map(|ok| (p, ok)));
    match checked {
        Ok((p, ok)) => {
            let v = json!({
                "ok": true,
                "chain_id": ok.chain_id,
                "genesis_hash": genesis.hash(),
                "entry": ok.entry_id,
                "kind": p.entry.body.payload.kind(),
                "author": p.entry.body.author,
                "sequence": p.entry.body.sequence,
                "height": ok.height,
                "index": ok.index,
                "block_hash": ok.block_hash,
                "block_time_ms": ok.timestamp.0,
                "outcome": ok.outcome,
                "signers": ok.signers,
                "validators": ok.validators,
            });
            emit(json, &v, || {
                format!(
                    "OK entry {} is in block {} of chain {}\n  kind:     {} by {} (sequence {})\n  outcome:  {}\n  block:    {} at {} ms\n  signed:   {} of {} validators of genesis {}",
                    ok.entry_id,
                    ok.height,
                    ok.chain_id,
                    p.entry.body.payload.kind(),
                    p.entry.body.author,
                    p.entry.body.sequence,
                    outcome_text(&ok.outcome),
                    ok.block_hash,
                    ok.timestamp.0,
                    ok.signers,
                    ok.validators,
                    genesis.hash(),
                )
            })?;
            Ok(Outcome::Ok)
        }
        Err(e) => {
            report_proof_failure(json, &e)?;
            Ok(Outcome::Failed)
        }
    }
}

fn report_proof_failure(json: bool, e: &ProofError) -> anyhow::Result<()> {
    let v = json!({ "ok": false, "check": e.check(), "detail": e.to_string() });
    emit(json, &v, || format!("FAILED check: {}\n  {e}", e.check()))
}
