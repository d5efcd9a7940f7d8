//! `tally devnet`: a whole network of validators on this machine, for trying tally out and for
//! tests. Each validator is a separate `tally node run` process with its own RocksDB directory,
//! API port and peer port, all on 127.0.0.1.

use crate::Outcome;
use anyhow::{bail, Context};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tally_node::config::{Draft, PeerEntry};
use tally_types::{
    AgencyGenesis, Genesis, Keypair, Name, PublicKey, TimestampMs, ValidatorGenesis,
};

/// The agencies of a devnet, one validator each, in this order.
pub(super) const AGENCIES: [&str; 10] = [
    "wfp", "unhcr", "ministry", "ngo-a", "ngo-b", "ngo-c", "ngo-d", "ngo-e", "ngo-f", "ngo-g",
];

/// Largest devnet.
pub const VALIDATORS_MAX: usize = AGENCIES.len();

#[derive(Debug, Args)]
pub struct Devnet {
    /// How many validators (1 to 10). Each runs as its own process.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=10))]
    validators: u16,
    /// Where keys, genesis, configs, data and logs live. An existing devnet directory is
    /// restarted as it is (same keys, same chain); a new one is created.
    #[arg(long, default_value = "devnet")]
    dir: PathBuf,
    /// Validator i's API listens on 127.0.0.1:(base-port + i), its peer port on
    /// 127.0.0.1:(base-port + 100 + i). The default puts validator 1's API on 7100, where
    /// the CLI looks when --node is not given.
    #[arg(long, default_value_t = 7099)]
    base_port: u16,
    /// Observer nodes (0 to 4): they follow and verify the chain and serve the API without
    /// voting. Observer j's API listens on base-port + 50 + j, its peer port on
    /// base-port + 150 + j.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=4))]
    observers: u16,
    /// Only write the keys, genesis and configs; start nothing.
    #[arg(long)]
    init_only: bool,
    /// Derive every key from its file name instead of at random, and fix the genesis time,
    /// so the same devnet can be written again (node-config/four-validators is one). The keys
    /// are public knowledge: never use them for a real chain. With an existing directory,
    /// writes any missing key files (git does not keep key files owner-only).
    #[arg(long)]
    deterministic_keys: bool,
}

/// One node of a devnet, as configured on disk.
pub(super) struct Member {
    pub name: String,
    pub dir: PathBuf,
    pub api: u16,
}

/// A devnet key: random, or derived from `label` (public test keys).
fn devnet_key(label: &str, deterministic: bool) -> anyhow::Result<Keypair> {
    if deterministic {
        let seed = tally_types::Domain::TestKey.hash(&[b"devnet/", label.as_bytes()]);
        Ok(Keypair::from_secret_bytes(seed.as_bytes()))
    } else {
        Ok(Keypair::generate()?)
    }
}

/// Writes the key file for `label` under `dir` unless it exists; returns its public key.
fn ensure_key(dir: &Path, label: &str, deterministic: bool) -> anyhow::Result<PublicKey> {
    let path = dir.join(label);
    if path.exists() {
        return Ok(tally_node::keyfile::read_public_key(&path)?);
    }
    let key = devnet_key(label, deterministic)?;
    tally_node::keyfile::write_key_file(&path, &key)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key.public())
}

/// Recreates missing deterministic key files of an existing devnet.
fn restore_keys(dir: &Path) -> anyhow::Result<()> {
    for (i, agency) in AGENCIES.iter().enumerate() {
        if !dir.join(format!("node-{}", i + 1)).exists() {
            break;
        }
        ensure_key(dir, &format!("node-{}/node.key", i + 1), true)?;
        ensure_key(dir, &format!("keys/{agency}-admin.key"), true)?;
    }
    for j in 1..=4 {
        if !dir.join(format!("observer-{j}")).exists() {
            break;
        }
        ensure_key(dir, &format!("observer-{j}/node.key"), true)?;
    }
    Ok(())
}

/// Writes keys, genesis and one config per validator (all validators dial each other) and per
/// observer (each dials every validator; validators allow and push to it).
pub(super) fn init(
    dir: &Path,
    n: usize,
    observers: u16,
    base_port: u16,
    deterministic: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("keys"))?;
    let mut agencies = Vec::new();
    let mut validators = Vec::new();
    let mut members = Vec::new();
    for (i, agency) in AGENCIES.iter().take(n).enumerate() {
        let node_dir = dir.join(format!("node-{}", i + 1));
        std::fs::create_dir_all(&node_dir)?;
        let node_key = ensure_key(dir, &format!("node-{}/node.key", i + 1), deterministic)?;
        let admin = ensure_key(dir, &format!("keys/{agency}-admin.key"), deterministic)?;
        agencies.push(AgencyGenesis {
            id: Name::new(*agency)?,
            admins: vec![admin],
        });
        validators.push(ValidatorGenesis {
            agency: Name::new(*agency)?,
            key: node_key,
        });
        members.push((node_dir, node_key, i as u16));
    }
    let genesis = Genesis {
        chain_id: Name::new("devnet-1")?,
        // 2026-11-01T00:00:00Z for a deterministic devnet, so it is written identically.
        genesis_time: TimestampMs(if deterministic {
            1_793_491_200_000
        } else {
            crate::time_arg::now_ms()
        }),
        agencies,
        validators,
    };
    genesis.validate()?;
    std::fs::write(dir.join("genesis.toml"), toml::to_string_pretty(&genesis)?)?;
    let mut observer_keys = Vec::new();
    for j in 1..=observers {
        std::fs::create_dir_all(dir.join(format!("observer-{j}")))?;
        observer_keys.push(ensure_key(
            dir,
            &format!("observer-{j}/node.key"),
            deterministic,
        )?);
    }
    let peers_except = |me: Option<&PublicKey>| -> Vec<PeerEntry> {
        members
            .iter()
            .filter(|(_, key, _)| Some(key) != me)
            .map(|(_, key, j)| PeerEntry {
                key: *key,
                addr: SocketAddr::from(([127, 0, 0, 1], base_port + 101 + j)),
            })
            .collect()
    };
    let config = |what: &str, api: u16, p2p: u16, observers: &[PublicKey], peers: &[PeerEntry]| {
        Draft {
            comment: &format!("{what} (written by `tally devnet`)."),
            data_dir: "data",
            genesis: "../genesis.toml",
            node_key: "node.key",
            api_listen: SocketAddr::from(([127, 0, 0, 1], api)),
            block_interval_ms: Some(50),
            network: Some((SocketAddr::from(([127, 0, 0, 1], p2p)), observers, peers)),
        }
        .to_toml()
    };
    for (node_dir, me, i) in &members {
        let text = config(
            &format!(
                "Validator {} of a {}-validator devnet",
                i + 1,
                members.len()
            ),
            base_port + 1 + i,
            base_port + 101 + i,
            &observer_keys,
            &peers_except(Some(me)),
        );
        std::fs::write(node_dir.join("node.toml"), text)?;
    }
    for j in 1..=observers {
        let text = config(
            &format!("Observer {j} of a {}-validator devnet", members.len()),
            base_port + 50 + j,
            base_port + 150 + j,
            &[],
            &peers_except(None),
        );
        std::fs::write(dir.join(format!("observer-{j}/node.toml")), text)?;
    }
    Ok(())
}

/// Validators (node-1, node-2, ...) then observers (observer-1, ...), as configured on disk.
pub(super) fn members(dir: &Path) -> anyhow::Result<Vec<Member>> {
    let mut out = Vec::new();
    for (prefix, max) in [("node", VALIDATORS_MAX), ("observer", 4)] {
        for i in 1..=max {
            let node_dir = dir.join(format!("{prefix}-{i}"));
            let config = node_dir.join("node.toml");
            if !config.exists() {
                break;
            }
            let cfg = tally_node::config::NodeConfig::load(&config)?;
            out.push(Member {
                name: format!("{prefix}-{i}"),
                dir: node_dir,
                api: cfg.api.listen.port(),
            });
        }
    }
    Ok(out)
}

/// Starts a member's `tally node run` process, its log in the member's directory.
pub(super) fn spawn(exe: &Path, m: &Member) -> anyhow::Result<Child> {
    let log = std::fs::File::create(m.dir.join("node.log"))?;
    Command::new(exe)
        .args(["node", "run", "--config", "node.toml"])
        .current_dir(&m.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", m.name))
}

/// Starts every member; if one fails to start, stops those already started.
pub(super) fn spawn_all(exe: &Path, members: &[Member]) -> anyhow::Result<Vec<(String, Child)>> {
    let mut children = Vec::new();
    for m in members {
        match spawn(exe, m) {
            Ok(c) => children.push((m.name.clone(), c)),
            Err(e) => {
                terminate(&mut children);
                return Err(e);
            }
        }
    }
    Ok(children)
}

/// Stops the nodes with SIGTERM, and kills any still running after 15 s.
pub(super) fn terminate(children: &mut [(String, Child)]) {
    for (_, c) in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for (name, c) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    eprintln!("{name} stopped ({status})");
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("{name} did not stop within 15 s; killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}

pub fn run(cmd: Devnet) -> anyhow::Result<Outcome> {
    let dir = cmd.dir;
    if !dir.join("genesis.toml").exists() {
        init(
            &dir,
            cmd.validators as usize,
            cmd.observers,
            cmd.base_port,
            cmd.deterministic_keys,
        )?;
        eprintln!(
            "created a {}-validator devnet in {}",
            cmd.validators,
            dir.display()
        );
    } else {
        eprintln!("restarting the devnet in {}", dir.display());
        if cmd.deterministic_keys {
            restore_keys(&dir)?;
        }
    }
    let members = members(&dir)?;
    if members.is_empty() {
        bail!("{} holds a genesis but no node-N/node.toml", dir.display());
    }
    if cmd.init_only {
        return Ok(Outcome::Ok);
    }
    let exe = std::env::current_exe().context("finding the tally binary")?;
    let mut children = spawn_all(&exe, &members)?;
    println!("devnet of {} nodes on 127.0.0.1:", members.len());
    for m in &members {
        println!(
            "  {:<7} API http://127.0.0.1:{:<5}  log {}",
            m.name,
            m.api,
            m.dir.join("node.log").display()
        );
    }
    println!(
        "try:    tally status --node http://127.0.0.1:{}\nagency admin keys are in {}; stop with Ctrl-C",
        members[0].api,
        dir.join("keys").display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failed = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = poll.tick() => {
                    for (name, c) in children.iter_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            eprintln!("{name} exited unexpectedly ({status}); stopping the devnet");
                            return anyhow::Ok(true);
                        }
                    }
                }
            }
        }
        anyhow::Ok(false)
    })?;
    eprintln!("stopping the devnet");
    terminate(&mut children);
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}
