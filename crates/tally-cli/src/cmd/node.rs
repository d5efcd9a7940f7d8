//! `tally node init`, `run`, `check-config` and `reset`: an operator's node.

use crate::Outcome;
use anyhow::Context;
use clap::Subcommand;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tally_node::config::{Draft, NodeConfig, PeerEntry};
use tally_types::{Keypair, PublicKey};

#[derive(Debug, Subcommand)]
pub enum Node {
    /// Write a node's key, config and genesis into a directory on this host, for an agency's
    /// validator or an observer. Refuses to overwrite anything there. Without --genesis it
    /// prints the new key to send to whoever writes the chain's genesis.
    Init(InitArgs),
    /// Run a node until Ctrl-C (or SIGTERM).
    Run {
        /// The node's config file (see node-config/).
        #[arg(long)]
        config: PathBuf,
    },
    /// Have a running node write a backup of its data directory into its `node.backup_dir`,
    /// without stopping it. Run it on the node's host: the node takes the request only from
    /// a loopback address.
    Backup {
        /// The node's API.
        #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7100")]
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a backup in the place of a stopped node's data directory. A backup of another
    /// chain is refused. The old directory is moved aside, not deleted, and what the node
    /// signed since the backup (its safety record) is kept, so it never signs twice.
    Restore {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// The backup's directory (written by `tally node backup`).
        #[arg(long)]
        from: PathBuf,
        /// Restore although the node's data directory is gone, and with it the record of
        /// what it signed since the backup (a lost disk). See the runbook in
        /// docs/operator-guide.md before you do.
        #[arg(long)]
        without_old_directory: bool,
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

/// Options of `tally node init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where node.toml, node.key and genesis.toml go (created if missing); the node keeps its
    /// data in data/ there.
    #[arg(long)]
    dir: PathBuf,
    /// The chain's genesis file, copied into the directory. Without it the config names
    /// genesis.toml there, to be put in place before the first start.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// An existing key file (mode 0600) to copy in, instead of making a new key: the key
    /// genesis already names.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The agency whose validator this is. With --genesis, the key must be that agency's
    /// validator there.
    #[arg(long)]
    agency: Option<String>,
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:7100")]
    api_listen: SocketAddr,
    /// Where the other nodes reach this one. Required unless this is the only validator.
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// A peer to dial, as KEY@HOST:PORT; repeat for each (normally every other validator).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<PeerEntry>,
    /// The key of an observer allowed to connect; repeat for each.
    #[arg(long = "observer")]
    observers: Vec<PublicKey>,
}

fn parse_peer(s: &str) -> Result<PeerEntry, String> {
    let (key, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("{s}: expected KEY@HOST:PORT"))?;
    Ok(PeerEntry {
        key: key.parse().map_err(|e| format!("{key}: {e}"))?,
        addr: addr
            .parse()
            .map_err(|e| format!("{addr}: {e} (a numeric address and port)"))?,
    })
}

/// Writes `path` only when nothing is there.
fn refuse_existing(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        anyhow::bail!(
            "{} exists; tally node init overwrites nothing (move it away, or use another --dir)",
            path.display()
        );
    }
    Ok(())
}

fn init(a: InitArgs) -> anyhow::Result<Outcome> {
    let (config_path, key_path, genesis_path) = (
        a.dir.join("node.toml"),
        a.dir.join("node.key"),
        a.dir.join("genesis.toml"),
    );
    // Everything is checked before anything is written.
    refuse_existing(&config_path)?;
    refuse_existing(&key_path)?;
    // An existing key is read here to check it against genesis, and copied as it is (an
    // encrypted one stays encrypted) only once everything else has been checked.
    let key = match &a.key {
        Some(path) => tally_node::keyfile::read_key_file(path)?,
        None => Keypair::generate().context("making a key")?,
    };
    let me = key.public();
    let genesis = match &a.genesis {
        Some(path) => {
            refuse_existing(&genesis_path)?;
            Some(tally_node::load_genesis(path)?)
        }
        None => None,
    };
    let agency_of_key = genesis.as_ref().and_then(|g| {
        g.validators
            .iter()
            .find(|v| v.key == me)
            .map(|v| v.agency.to_string())
    });
    if let (Some(wanted), Some(g)) = (&a.agency, &genesis) {
        if agency_of_key.as_ref() != Some(wanted) {
            anyhow::bail!(
                "key {me} is not agency {wanted}'s validator in genesis {} ({}); pass the key \
                 genesis names for it with --key, or leave --agency out for an observer",
                g.chain_id,
                match &agency_of_key {
                    Some(other) => format!("it is agency {other}'s"),
                    None => "it is not a validator there".into(),
                }
            );
        }
    }
    let lone = genesis
        .as_ref()
        .is_some_and(|g| g.validators.len() == 1 && agency_of_key.is_some());
    if a.peer_listen.is_none() && !lone {
        anyhow::bail!(
            "--peer-listen is needed: other nodes must reach this one (only the one validator \
             of a one-validator chain runs without a network)"
        );
    }
    let who = match (&a.agency, &agency_of_key) {
        (Some(agency), _) | (None, Some(agency)) => format!("Validator of agency {agency}"),
        (None, None) => "Node".to_string(),
    };
    let text = Draft {
        comment: &format!("{who} (written by `tally node init`)."),
        data_dir: "data",
        genesis: "genesis.toml",
        node_key: "node.key",
        api_listen: a.api_listen,
        block_interval_ms: None,
        network: a
            .peer_listen
            .map(|listen| (listen, a.observers.as_slice(), a.peers.as_slice())),
    }
    .to_toml();
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    match &a.key {
        Some(from) => tally_node::keyfile::copy_key_file(from, &key_path)?,
        None => tally_node::keyfile::write_key_file(&key_path, &key)?,
    }
    if let Some(path) = &a.genesis {
        std::fs::copy(path, &genesis_path).with_context(|| {
            format!(
                "cannot copy {} to {}",
                path.display(),
                genesis_path.display()
            )
        })?;
    }
    std::fs::write(&config_path, text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    println!(
        "wrote {}, {} (key {me}){}",
        config_path.display(),
        key_path.display(),
        match &a.genesis {
            Some(_) => format!(" and {}", genesis_path.display()),
            None => String::new(),
        }
    );
    if genesis.is_none() {
        println!(
            "next: send this node's key to whoever writes the chain's genesis, put the genesis \
             file at {}, then run `tally node check-config --config {}`",
            genesis_path.display(),
            config_path.display()
        );
        return Ok(Outcome::Ok);
    }
    let check = tally_node::setup::check_config(&NodeConfig::load(&config_path)?)?;
    println!(
        "{} {} of chain {}; start it with `tally node run --config {}`",
        check.role,
        check.node_key.short(),
        check.chain_id,
        config_path.display()
    );
    for w in &check.warnings {
        println!("warning: {w}");
    }
    Ok(Outcome::Ok)
}

fn restore(cfg: &NodeConfig, from: &Path, without_old_directory: bool) -> anyhow::Result<Outcome> {
    let genesis = tally_node::load_genesis(&cfg.node.genesis)?;
    let backup = tally_storage::Store::open_read_only(from)
        .with_context(|| format!("reading backup {}", from.display()))?;
    let held = backup
        .genesis()?
        .with_context(|| format!("backup {} holds no genesis", from.display()))?;
    if held.hash() != genesis.hash() {
        anyhow::bail!(
            "backup {} is of chain {} (genesis {}), not this node's {} (genesis {}); nothing \
             was changed",
            from.display(),
            held.chain_id,
            held.hash().short(),
            genesis.chain_id,
            genesis.hash().short()
        );
    }
    let height = backup.head()?.height;
    drop(backup);
    let dir = &cfg.node.data_dir;
    // The record of what this validator signed lives in the directory being replaced (or in
    // what an interrupted set-aside or restore left beside it).
    if !tally_storage::holds_data_dir(dir) && !without_old_directory {
        anyhow::bail!(
            "{} holds no data directory, so nothing records what this validator signed since \
             the backup; restored, it could sign again where it already signed. If the disk is \
             lost, read the runbook (docs/operator-guide.md, Backups) and pass \
             --without-old-directory; if the directory is elsewhere (an unmounted disk), mount it",
            dir.display()
        );
    }
    let restored = tally_storage::restore(dir, from).with_context(|| {
        format!(
            "restoring {} into {} (is the node stopped?)",
            from.display(),
            dir.display()
        )
    })?;
    println!(
        "{} now holds the backup (chain {}, height {height}); start the node: it fetches the \
         blocks after it from its peers{}",
        dir.display(),
        genesis.chain_id,
        if restored.record_kept {
            ", and signs nothing it may have signed since the backup"
        } else {
            ". No record of what it signed since the backup was kept: start it only while the \
             other validators are up and committing"
        }
    );
    if let Some(aside) = restored.aside {
        println!(
            "the directory it replaced is at {}; delete it once the node has caught up",
            aside.display()
        );
    }
    Ok(Outcome::Ok)
}

pub fn run(cmd: Node) -> anyhow::Result<Outcome> {
    let config = match cmd {
        Node::Init(a) => return init(a),
        Node::Backup { node, json } => {
            let v = crate::client::NodeClient::new(&node).backup()?;
            crate::output::emit(json, &v, || {
                format!(
                    "backup of chain {} at height {} written to {}",
                    v["chain_id"].as_str().unwrap_or("?"),
                    v["height"],
                    v["path"].as_str().unwrap_or("?")
                )
            })?;
            return Ok(Outcome::Ok);
        }
        Node::Restore {
            config,
            from,
            without_old_directory,
        } => {
            let cfg = NodeConfig::load(&config)?;
            return restore(&cfg, &from, without_old_directory);
        }
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
