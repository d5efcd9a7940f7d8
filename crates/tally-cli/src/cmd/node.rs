//! `tally node run`, `check-config` and `reset`: an operator's node.

use crate::Outcome;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use tally_node::config::NodeConfig;

#[derive(Debug, Subcommand)]
pub enum Node {
    /// Run a node until Ctrl-C (or SIGTERM).
    Run {
        /// The node's config file (see node-config/).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a node's config without starting it: the genesis file, the key, the network
    /// section, the peers, and a data directory that already holds a chain. Exits 1 with
    /// the reason when the node could not start, or would join another chain.
    CheckConfig {
        /// The node's config file (`TALLY_<SECTION>_<KEY>` variables apply, as at start).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a stopped node's data directory aside and start afresh, keeping its consensus
    /// safety record: at its next start the node fetches the chain again from its peers.
    /// Use this, never a deletion, to resync a validator.
    Reset {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run(cmd: Node) -> anyhow::Result<Outcome> {
    let config = match cmd {
        Node::Run { config } => config,
        Node::CheckConfig { config, json } => {
            // Each error names the file it is about.
            let checked = match NodeConfig::load(&config) {
                Ok(cfg) => tally_node::setup::check_config(&cfg)
                    .map_err(|e| format!("config {} cannot start a node: {e}", config.display())),
                Err(e) => Err(e.to_string()),
            };
            let check = match checked {
                Ok(check) => check,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(Outcome::Failed);
                }
            };
            let v = serde_json::to_value(&check)?;
            crate::output::emit(json, &v, || {
                let agency = check
                    .agency
                    .as_ref()
                    .map(|a| format!(" of agency {a}"))
                    .unwrap_or_default();
                let peers = check
                    .peer_listen
                    .as_ref()
                    .map(|l| format!(", peers on {l} ({} to dial)", check.peers))
                    .unwrap_or_default();
                let mut out = format!(
                    "config {} is valid: {} {}{agency} of chain {} (genesis {}, {} validators)\n\
                     API on {}{peers}; data directory: {}\n",
                    config.display(),
                    check.role,
                    check.node_key,
                    check.chain_id,
                    check.genesis_hash.short(),
                    check.validators,
                    check.api_listen,
                    check.data_dir,
                );
                for w in &check.warnings {
                    out.push_str(&format!("warning: {w}\n"));
                }
                out.trim_end().to_string()
            })?;
            return Ok(Outcome::Ok);
        }
        Node::Reset { config } => {
            let cfg = NodeConfig::load(&config)?;
            let aside = tally_node::reset(&cfg)?;
            println!(
                "{} was moved to {}; a fresh directory holding only the safety record is in its \
                 place. Start the node: it fetches the chain again from its peers. Delete {} once \
                 it has caught up.",
                cfg.node.data_dir.display(),
                aside.display(),
                aside.display()
            );
            return Ok(Outcome::Ok);
        }
    };
    let cfg = NodeConfig::load(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let node = tally_node::start(cfg).await?;
        let cancel = node.cancel_token();
        eprintln!("node API listening on http://{}", node.api_addr);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            cancel.cancel();
        });
        node.wait().await?;
        anyhow::Ok(())
    })?;
    Ok(Outcome::Ok)
}
