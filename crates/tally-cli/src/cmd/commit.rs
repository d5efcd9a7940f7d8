//! `tally commit`: a salted commitment to an off-chain record. The salt is fresh randomness;
//! keep it with the record, and delete both to make the commitment unlinkable.

use crate::output::emit;
use crate::Outcome;
use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use tally_types::token::SECRET_BYTES_MIN;
use tally_types::Commitment;

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The record file (the agency's own document, any format).
    #[arg(long)]
    record_file: PathBuf,
    /// Reuse this salt (hex) to re-derive a commitment; default: 32 fresh random bytes.
    #[arg(long)]
    salt: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CommitArgs) -> anyhow::Result<crate::Outcome> {
    let record = std::fs::read(&args.record_file)
        .with_context(|| format!("reading {}", args.record_file.display()))?;
    let salt = match args.salt {
        Some(h) => hex::decode(h.trim()).context("salt must be hex")?,
        None => tally_types::token::random_salt()
            .map_err(|e| anyhow::anyhow!("no randomness: {e}"))?
            .to_vec(),
    };
    if salt.len() < SECRET_BYTES_MIN {
        bail!("salt must be at least {SECRET_BYTES_MIN} bytes");
    }
    let c = Commitment::commit(&salt, &record)?;
    let v = json!({ "commitment": c, "salt": hex::encode(&salt) });
    emit(args.json, &v, || {
        format!(
            "commitment  {c}\nsalt        {}  (keep with the record)",
            hex::encode(&salt)
        )
    })?;
    Ok(Outcome::Ok)
}
