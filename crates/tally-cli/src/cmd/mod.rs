//! The command tree. One file per command group.

mod attest;
mod audit;
mod bench;
mod commit;
mod devnet;
mod docs;
mod entry;
mod genesis;
mod keys;
mod node;
mod outbox;
mod programme;
mod receipt;
mod registry;
mod role;
mod status;
mod subject;
mod vendor;
mod voucher;

use crate::Outcome;
use clap::{Parser, Subcommand};

/// tally: a permissioned ledger for aid distribution and civil registry.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, propagate_version = true)]
pub struct Cli {
    /// More logging on stderr (-v, -vv). TALLY_LOG overrides; TALLY_LOG_FORMAT=json for JSON.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect key files; rotate a key on the ledger.
    #[command(subcommand)]
    Keys(keys::Keys),
    /// Create a chain's genesis file.
    #[command(subcommand)]
    Genesis(genesis::Genesis),
    /// Run a node.
    #[command(subcommand)]
    Node(node::Node),
    /// Run a network of validators on this machine (loopback only), until Ctrl-C.
    Devnet(devnet::Devnet),
    /// Grant or revoke staff roles (agency admins).
    #[command(subcommand)]
    Role(role::Role),
    /// Open and inspect aid programmes.
    #[command(subcommand)]
    Programme(programme::Programme),
    /// Issue, redeem, revoke, expire and inspect vouchers.
    #[command(subcommand)]
    Voucher(voucher::Voucher),
    /// Settle what a programme owes a vendor, and inspect vendor accounts.
    #[command(subcommand)]
    Vendor(vendor::Vendor),
    /// Attest identity claims and manage their status.
    #[command(subcommand)]
    Attest(attest::Attest),
    /// Record civil-registry events.
    #[command(subcommand)]
    Registry(registry::Registry),
    /// Derive a person's subject and dedup tokens off chain.
    #[command(subcommand)]
    Subject(subject::Subject),
    /// Commit to an off-chain record with a fresh random salt.
    Commit(commit::CommitArgs),
    /// Follow a submitted entry.
    #[command(subcommand)]
    Entry(entry::Entry),
    /// A node's version, chain, height and head, and whether it is ready (exit 1 when not).
    Status(status::StatusArgs),
    /// Verify the chain independently.
    #[command(subcommand)]
    Audit(audit::Audit),
    /// Receipts of voucher issues and redemptions: fetch (text, QR, PNG) and check offline.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCmd),
    /// Entries signed with no connection (`--offline`): prepare, status, sync.
    #[command(subcommand)]
    Outbox(outbox::OutboxCmd),
    /// Measure throughput, latency and cost beside this machine's signature limit.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Print a shell completion script: `tally completions bash > /etc/bash_completion.d/tally`.
    Completions(docs::CompletionsArgs),
    /// Write a man page for tally and each of its commands into a directory, for `man tally`.
    Man(docs::ManArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Keys(c) => keys::run(c),
        Command::Genesis(c) => genesis::run(c),
        Command::Node(c) => node::run(c),
        Command::Devnet(c) => devnet::run(c),
        Command::Role(c) => role::run(c),
        Command::Programme(c) => programme::run(c),
        Command::Voucher(c) => voucher::run(c),
        Command::Vendor(c) => vendor::run(c),
        Command::Attest(c) => attest::run(c),
        Command::Registry(c) => registry::run(c),
        Command::Subject(c) => subject::run(c),
        Command::Commit(c) => commit::run(c),
        Command::Entry(c) => entry::run(c),
        Command::Status(c) => status::run(c),
        Command::Audit(c) => audit::run(c),
        Command::Receipt(c) => receipt::run(c),
        Command::Outbox(c) => outbox::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Completions(c) => docs::completions(c),
        Command::Man(c) => docs::man(c),
    }
}

/// Options of read-only queries against a node.
#[derive(Debug, clap::Args, Clone)]
pub struct QueryArgs {
    /// The node's API.
    #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
    pub node: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// GETs `path` from the node and prints it; a 404 is reported and exits 1.
pub fn show(q: &QueryArgs, path: &str, what: &str) -> anyhow::Result<Outcome> {
    let client = crate::client::NodeClient::new(&q.node);
    match client.get(path)? {
        Some(v) => {
            crate::output::emit(q.json, &v, || crate::output::human_fields(&v))?;
            Ok(Outcome::Ok)
        }
        None => {
            eprintln!("no {what} on node {}", q.node);
            Ok(Outcome::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
