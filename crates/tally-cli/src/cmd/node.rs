//! `tally node run`: an operator's node.

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
}

pub fn run(cmd: Node) -> anyhow::Result<Outcome> {
    let Node::Run { config } = cmd;
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
