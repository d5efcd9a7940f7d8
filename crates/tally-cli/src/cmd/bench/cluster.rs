//! `tally bench cluster`: a devnet of N validators on loopback per size, driven by the load
//! generator at its maximum and then at fractions of it, with each node's CPU, memory and disk
//! read from the operating system.

use super::load::{self, Plan, RunResult, Target};
use super::probe::Limits;
use crate::cmd::devnet;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// How long a new devnet may take to serve its API and connect every validator.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `tally bench cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Devnet sizes to measure, one fresh devnet each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,7",
          value_parser = clap::value_parser!(u16).range(1..=10))]
    pub validators: Vec<u16>,
    /// Offered rates of the latency runs, in percent of the maximum sustained rate.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100",
          value_parser = clap::value_parser!(u16).range(1..=200))]
    pub levels: Vec<u16>,
    /// Scratch directory: each size's devnet is created fresh under it (an earlier one there
    /// is deleted) and kept afterwards for its logs.
    #[arg(long, default_value = "bench-devnet")]
    pub dir: PathBuf,
    /// Validator i's API listens on 127.0.0.1:(base-port + i), as in `tally devnet`.
    #[arg(long, default_value_t = 7399)]
    pub base_port: u16,
    #[command(flatten)]
    pub plan: Plan,
}

/// One devnet size's results.
#[derive(Debug, Serialize)]
pub struct ClusterResult {
    /// Validators.
    pub validators: usize,
    /// The run at full speed, then one per level.
    pub runs: Vec<RunResult>,
    /// Peak resident memory of each node over the whole session, in bytes.
    pub peak_rss_bytes: Vec<Option<u64>>,
    /// Entries on the chain at the end (every run plus setup).
    pub chain_entries: u64,
    /// Bytes of node-1's data directory as the node left it (its write-ahead log included).
    pub disk_bytes: u64,
    /// The same after a flush and compaction (`Store::compact`): what the chain costs to keep.
    pub disk_bytes_compacted: u64,
    /// `disk_bytes_compacted` / `chain_entries`.
    pub disk_bytes_per_entry: f64,
    /// The committed rate the machine's signature limit allows: all cores' batch-verify rate
    /// divided by (validators x verifications per entry per node, as measured at full speed).
    pub ceiling_per_s: f64,
    /// The full-speed committed rate as a percentage of the ceiling.
    pub committed_pct_of_ceiling: f64,
}

pub(super) fn ready(urls: &[String], validators: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for url in urls {
        let client = crate::client::NodeClient::new(url);
        loop {
            let peers = client.get("/v1/status").ok().flatten().map(|s| {
                s["network"]["connected_peers"]
                    .as_array()
                    .map_or(0, Vec::len)
            });
            if peers.is_some_and(|p| p + 1 >= validators) {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("{url} did not come up with its peers within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Stops the nodes and returns each one's peak resident memory, read first: it is gone once
/// the process exits.
pub(super) fn stop_all(children: &mut [(String, Child)]) -> Vec<Option<u64>> {
    let rss = children
        .iter()
        .map(|(_, c)| super::stats::peak_rss_bytes(c.id()))
        .collect();
    devnet::terminate(children);
    rss
}

/// A stopped node's data directory: entries on its chain, and its bytes on disk as the node
/// left them and after a flush and compaction.
pub fn disk(data: &Path) -> anyhow::Result<(u64, u64, u64)> {
    let store = tally_storage::Store::open(data)?;
    let head = store.head()?.height;
    let mut entries = 0;
    for h in 1..=head {
        entries += store.block(h)?.map_or(0, |b| b.entries.len() as u64);
    }
    let as_left = store.disk_bytes();
    store.compact()?;
    Ok((entries, as_left, store.disk_bytes()))
}

/// Runs every size and level.
pub fn run(args: &ClusterArgs, limits: &Limits) -> anyhow::Result<Vec<ClusterResult>> {
    let exe = std::env::current_exe()?;
    let mut out = Vec::new();
    for &n in &args.validators {
        let n = n as usize;
        let dir = args.dir.join(format!("{n}-validators"));
        if dir.exists() {
            if !dir.join("genesis.toml").exists() {
                anyhow::bail!(
                    "{} exists and is not a devnet; choose another --dir",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(&dir)?;
        }
        devnet::init(&dir, n, 0, args.base_port, false)?;
        let members = devnet::members(&dir)?;
        let mut children = devnet::spawn_all(&exe, &members)?;
        let result = measure(args, limits, &dir, &members, &children, n);
        let rss = stop_all(&mut children);
        let (runs, chain_data) = result?;
        let (chain_entries, disk_bytes, disk_bytes_compacted) = disk(&chain_data)?;
        let v = runs
            .first()
            .and_then(|r| r.verifications_per_entry_per_node)
            .unwrap_or(1.0)
            .max(1.0);
        let ceiling = limits.batch_verify_per_s / (n as f64 * v);
        let max_rate = runs.first().map_or(0.0, |r| r.committed_per_s);
        out.push(ClusterResult {
            validators: n,
            runs,
            peak_rss_bytes: rss,
            chain_entries,
            disk_bytes,
            disk_bytes_per_entry: disk_bytes_compacted as f64 / chain_entries.max(1) as f64,
            disk_bytes_compacted,
            ceiling_per_s: ceiling,
            committed_pct_of_ceiling: 100.0 * max_rate / ceiling,
        });
    }
    Ok(out)
}

fn measure(
    args: &ClusterArgs,
    limits: &Limits,
    dir: &Path,
    members: &[devnet::Member],
    children: &[(String, Child)],
    n: usize,
) -> anyhow::Result<(Vec<RunResult>, PathBuf)> {
    let urls: Vec<String> = members
        .iter()
        .map(|m| format!("http://127.0.0.1:{}", m.api))
        .collect();
    ready(&urls, n)?;
    eprintln!(
        "{n}-validator devnet up in {} (ed25519 on {} cores: {:.0} strict verifies/s, {:.0} batch/s)",
        dir.display(),
        limits.cores,
        limits.verify_strict_per_s,
        limits.batch_verify_per_s
    );
    let admin = tally_node::keyfile::read_key_file(&dir.join("keys/wfp-admin.key"))?;
    let target = Target {
        nodes: urls,
        pids: children.iter().map(|(_, c)| c.id()).collect(),
    };
    let max = load::run(&target, &admin, &args.plan, None, &format!("N={n} max"))?;
    let rate = max.committed_per_s;
    let mut runs = vec![max];
    for &level in &args.levels {
        let offered = rate * level as f64 / 100.0;
        if offered < 1.0 {
            continue;
        }
        let mut r = load::run(
            &target,
            &admin,
            &args.plan,
            Some(offered),
            &format!("N={n} {level}%"),
        )?;
        r.label = format!("{level}%");
        runs.push(r);
    }
    if let Some(first) = runs.first_mut() {
        first.label = "max".to_string();
    }
    Ok((runs, members[0].dir.join("data")))
}
