//! `tally subject derive`: a person's tokens, computed on the agency's own machine.

use crate::output::emit;
use crate::Outcome;
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use tally_types::{DedupToken, SubjectToken};

#[derive(Debug, Subcommand)]
pub enum Subject {
    /// Derive the subject token (and optionally the dedup token) of a person reference.
    Derive {
        /// File holding the agency's secret (at least 16 bytes; keep it mode 0600).
        #[arg(long)]
        secret_file: PathBuf,
        /// File holding the consortium's shared de-duplication secret.
        #[arg(long)]
        dedup_secret_file: Option<PathBuf>,
        /// The agency's own case or registration number for the person. Never a name.
        #[arg(long)]
        reference: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading secret {}", path.display()))?;
    Ok(bytes.trim_ascii().to_vec())
}

pub fn run(cmd: Subject) -> anyhow::Result<Outcome> {
    let Subject::Derive {
        secret_file,
        dedup_secret_file,
        reference,
        json,
    } = cmd;
    let subject = SubjectToken::derive(&read_secret(&secret_file)?, reference.as_bytes())?;
    let dedup = match dedup_secret_file {
        Some(f) => Some(DedupToken::derive(&read_secret(&f)?, reference.as_bytes())?),
        None => None,
    };
    let v = json!({ "subject": subject, "dedup": dedup });
    emit(json, &v, || match dedup {
        Some(d) => format!("subject  {subject}\ndedup    {d}"),
        None => format!("subject  {subject}"),
    })?;
    Ok(Outcome::Ok)
}
