//! `tally node run` and `tally node reset`: an operator's node.

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
