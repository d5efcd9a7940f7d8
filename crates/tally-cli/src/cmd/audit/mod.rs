//! `tally audit`: check the ledger trusting nothing but the genesis file. `verify` re-verifies
//! a copy of the whole chain offline; `report` reconciles the money per programme and vendor
//! from the auditor's own replay; `proof` fetches one entry's inclusion proof from a node;
//! `check-proof` checks such a proof with no node at all.

mod proof;
mod report;
mod verify;

pub(crate) use proof::read_bounded;

use crate::Outcome;
use clap::Subcommand;
use std::path::PathBuf;
use tally_types::{EntryId, Name};

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
    /// Reconcile the money: per programme (budget, issued, redeemed, revoked, expired,
    /// outstanding, settled, owed) and per vendor (redeemed and settled by month, owed), from
    /// your own verified replay of the chain, never from a node's state. Replays a copy
    /// (--data-dir), the blocks a node serves (--node), or a copy brought up to a node's head
    /// (both). With --node, the node's own figures are compared with the replay and every
    /// difference is a finding. Exit 0 when nothing is found, 1 on a finding or a chain that
    /// fails verification, 2 when the data cannot be read.
    Report {
        /// A node's data directory (or a copy of it). Opened read-only.
        #[arg(long, required_unless_present = "node")]
        data_dir: Option<PathBuf>,
        /// A node's API: its blocks extend the replay to its head, and its figures are checked
        /// against the replay.
        #[arg(long)]
        node: Option<String>,
        /// The genesis file you trust. Required without --data-dir; with it, the directory's
        /// genesis must match.
        #[arg(long, required_unless_present = "data_dir")]
        genesis: Option<PathBuf>,
        /// Only this programme.
        #[arg(long)]
        programme: Option<Name>,
        /// Print JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV: one row per programme, per vendor and month, per vendor total, and per
        /// finding.
        #[arg(long)]
        csv: bool,
    },
    /// Fetch the inclusion proof of an entry in a committed block (accepted, or rejected by a
    /// rule and kept as evidence) and write it to a file for `check-proof`.
    Proof {
        /// The entry id.
        entry: EntryId,
        /// Where to write the proof (its canonical bytes).
        #[arg(long, short)]
        out: PathBuf,
        /// The node's API.
        #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check an inclusion proof offline against the genesis file you trust: the chain, the
    /// validator set, the entry's and its outcome's audit paths, the commit certificate and
    /// the author's signature. Exit 0 when it holds, 1 naming the check that failed, 2 when the
    /// files cannot be read.
    CheckProof {
        /// The proof file (`-` for stdin).
        file: PathBuf,
        /// The genesis file you trust.
        #[arg(long)]
        genesis: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Audit) -> anyhow::Result<Outcome> {
    match cmd {
        Audit::Verify {
            data_dir,
            genesis,
            json,
        } => verify::verify(&data_dir, genesis.as_deref(), json),
        Audit::Report {
            data_dir,
            node,
            genesis,
            programme,
            json,
            csv,
        } => report::report(report::ReportArgs {
            data_dir,
            node,
            genesis,
            programme,
            format: match (json, csv) {
                (true, _) => report::Format::Json,
                (_, true) => report::Format::Csv,
                _ => report::Format::Table,
            },
        }),
        Audit::Proof {
            entry,
            out,
            node,
            json,
        } => proof::fetch_proof(&entry, &out, &node, json),
        Audit::CheckProof {
            file,
            genesis,
            json,
        } => proof::check_proof(&file, &genesis, json),
    }
}
