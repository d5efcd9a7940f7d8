//! `tally bench`: the ledger's throughput, latency and costs, each beside the signature limit
//! of the same machine measured in the same run. docs/performance.md explains every figure and
//! holds the latest results.

mod chain;
mod cluster;
mod crash;
mod load;
mod probe;
mod stats;

use crate::Outcome;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// This machine's ed25519 limit: strict and batch verifications per second on all cores.
    Probe {
        /// Seconds to measure each rate.
        #[arg(long, default_value_t = 2)]
        seconds: u64,
    },
    /// Load-test a running network: pre-signed issues and redemptions from several connections,
    /// each followed until committed. Needs an agency admin's key to set up its programme.
    Load(LoadArgs),
    /// Start a devnet of each size on loopback and measure it at full speed and at fractions of
    /// it: throughput, latency, CPU, memory and disk per entry.
    Cluster {
        #[command(flatten)]
        args: cluster::ClusterArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Write a chain of a million entries through the real state machine and storage (or reuse
    /// one), time `tally audit verify` over it, and time a validator catching up on it.
    Chain {
        #[command(flatten)]
        args: chain::ChainArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// SIGKILL random validators of a devnet under load, again and again; then check that no
    /// entry a node reported committed was lost or moved, that no chain forked, and that every
    /// data directory passes the audit. A campaign, not a benchmark: outside CI.
    Crash {
        #[command(flatten)]
        args: crash::CrashArgs,
        #[command(flatten)]
        out: OutArgs,
    },
}

/// Where results go.
#[derive(Debug, Args)]
pub struct OutArgs {
    /// Directory for the JSON results, one file per run of the command.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

/// Options of `tally bench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// A node's API; repeat for several. Connections are spread over them, and each entry is
    /// followed on the node it was sent to.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// An agency admin's key file: grants the benchmark's keys and opens its programme.
    #[arg(long)]
    admin_key: PathBuf,
    /// Offered entries per second; without it, as fast as the nodes admit.
    #[arg(long)]
    rate: Option<f64>,
    /// After a full-speed run, also run at these percentages of the rate it sustained.
    #[arg(long, value_delimiter = ',')]
    levels: Vec<u16>,
    #[command(flatten)]
    plan: load::Plan,
    #[command(flatten)]
    out: OutArgs,
}

/// A target of the benchmarks issue and how this run compares.
#[derive(Debug, Serialize)]
struct TargetCheck {
    target: String,
    measured: String,
    /// `None` when this run cannot judge it (the memory target before a chain holds 1M
    /// entries).
    met: Option<bool>,
}

/// One results file.
#[derive(Debug, Serialize)]
struct Report {
    command: String,
    started_at_ms: u64,
    machine: stats::Machine,
    limits: probe::Limits,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    clusters: Vec<cluster::ClusterResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runs: Vec<load::RunResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<chain::ChainResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crash: Option<crash::CrashResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    targets: Vec<TargetCheck>,
}

const PROBE_SECONDS: Duration = Duration::from_secs(2);

impl Report {
    /// Starts a results file: the command, the machine, and its signature limit measured now,
    /// before any load.
    fn begin() -> anyhow::Result<Self> {
        let started_at_ms = crate::time_arg::now_ms();
        let machine = stats::Machine::describe();
        warn_if_debug(&machine);
        let limits = probe::measure(PROBE_SECONDS)?;
        print_limits(&limits);
        Ok(Self {
            command: command_line(),
            started_at_ms,
            machine,
            limits,
            clusters: Vec::new(),
            runs: Vec::new(),
            chain: None,
            crash: None,
            targets: Vec::new(),
        })
    }

    /// Prints each target's verdict and writes the file as `<kind>-<start time>.json`.
    fn finish(&self, dir: &Path, kind: &str) -> anyhow::Result<Outcome> {
        for t in &self.targets {
            println!(
                "target {}: {} ({})",
                t.target,
                t.measured,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not judged",
                }
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{kind}-{}.json", self.started_at_ms));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
        Ok(Outcome::Ok)
    }
}

pub fn run(cmd: Bench) -> anyhow::Result<Outcome> {
    match cmd {
        Bench::Probe { seconds } => {
            let l = probe::measure(Duration::from_secs(seconds.max(1)))?;
            print_limits(&l);
            println!("{}", serde_json::to_string_pretty(&l)?);
            Ok(Outcome::Ok)
        }
        Bench::Load(a) => {
            let mut report = Report::begin()?;
            let admin = tally_node::keyfile::read_key_file(&a.admin_key)
                .with_context(|| format!("reading {}", a.admin_key.display()))?;
            let target = load::Target {
                nodes: a.nodes,
                pids: Vec::new(),
            };
            let label = a.rate.map_or("max".to_string(), |r| format!("{r:.0}/s"));
            let first = load::run(&target, &admin, &a.plan, a.rate, &label)?;
            let rate = first.committed_per_s;
            report.runs.push(first);
            for level in a.levels {
                let offered = rate * level as f64 / 100.0;
                let mut r = load::run(
                    &target,
                    &admin,
                    &a.plan,
                    Some(offered),
                    &format!("{level}%"),
                )?;
                r.label = format!("{level}%");
                report.runs.push(r);
            }
            report.finish(&a.out.out, "load")
        }
        Bench::Cluster { args, out } => {
            let mut report = Report::begin()?;
            report.clusters = cluster::run(&args, &report.limits)?;
            print_table(&report.clusters, &report.limits);
            report.targets = targets(&report.clusters);
            report.finish(&out.out, "cluster")
        }
        Bench::Chain { args, out } => {
            let mut report = Report::begin()?;
            let result = chain::run(&args, &report.limits)?;
            report.targets.push(TargetCheck {
                target: "audit verify >= 80 % of the batch-verify rate on all cores".to_string(),
                measured: format!(
                    "{:.0} entries/s, {:.1} % of {:.0} (the mean of {:.0} before and {:.0} after)",
                    result.audit.entries_per_s,
                    result.audit.pct_of_batch_verify,
                    result.audit.batch_verify_per_s,
                    report.limits.batch_verify_per_s,
                    result.audit.limits_after.batch_verify_per_s
                ),
                met: Some(result.audit.pct_of_batch_verify >= 80.0),
            });
            if let Some(c) = &result.catch_up {
                report
                    .targets
                    .push(rss_target(&c.peak_rss_bytes, result.chain.entries));
            }
            report.chain = Some(result);
            report.finish(&out.out, "chain")
        }
        Bench::Crash { args, out } => {
            let mut report = Report::begin()?;
            let r = crash::run(&args)?;
            println!(
                "{} SIGKILLs in {:.0} s over {} validators: {} entries reported committed, {} lost, {} moved; {} forks; {} of {} directories pass the audit; height {}; slowest restart {:.1} s",
                r.kills, r.seconds, r.validators, r.acknowledged, r.lost, r.moved, r.forks,
                r.audits_passed, r.validators, r.height, r.restart_max_s
            );
            let clean =
                r.lost == 0 && r.moved == 0 && r.forks == 0 && r.audits_passed == r.validators;
            report.targets.push(TargetCheck {
                target: "no entry reported committed lost or moved, no fork, every audit passes"
                    .to_string(),
                measured: format!(
                    "{} lost, {} moved, {} forks, {} of {} audits",
                    r.lost, r.moved, r.forks, r.audits_passed, r.validators
                ),
                met: Some(clean),
            });
            report.crash = Some(r);
            report.finish(&out.out, "crash")?;
            if clean {
                Ok(Outcome::Ok)
            } else {
                anyhow::bail!("the crash campaign found what must never happen (above)")
            }
        }
    }
}

fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "tally".to_string();
    }
    args.join(" ")
}

fn warn_if_debug(m: &stats::Machine) {
    if !m.optimised {
        eprintln!(
            "warning: this tally was built without optimisations; its figures say little \
             (build with `cargo build --release`)"
        );
    }
}

fn print_limits(l: &probe::Limits) {
    eprintln!(
        "machine limit: ed25519 on {} cores: {:.0} strict verifications/s, {:.0} in batches of {}/s",
        l.cores,
        l.verify_strict_per_s,
        l.batch_verify_per_s,
        probe::BATCH
    );
}

/// The summary table of docs/performance.md, one row per size and run.
fn print_table(clusters: &[cluster::ClusterResult], l: &probe::Limits) {
    println!(
        "\n| validators | run | offered/s | committed/s | p50 ms | p95 ms | p99 ms | max ms | node CPU s/1k | checks/entry/node | % of ceiling |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for c in clusters {
        for r in &c.runs {
            let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} |",
                c.validators,
                r.label,
                opt(r.offered_per_s, 0),
                r.committed_per_s,
                r.latency_ms.p50,
                r.latency_ms.p95,
                r.latency_ms.p99,
                r.latency_ms.max,
                opt(r.node_cpu_s_per_1k, 2),
                opt(r.verifications_per_entry_per_node, 2),
                100.0 * r.committed_per_s / c.ceiling_per_s,
            );
        }
    }
    println!();
    for c in clusters {
        let rss: Vec<String> = c
            .peak_rss_bytes
            .iter()
            .map(|b| b.map_or("-".to_string(), |b| format!("{:.0}", b as f64 / 1048576.0)))
            .collect();
        println!(
            "{} validators: ceiling {:.0} entries/s ({:.0} batch verifications/s / ({} x checks per entry)); peak RSS MiB per node [{}]; {} entries on chain, {:.0} disk bytes per entry",
            c.validators,
            c.ceiling_per_s,
            l.batch_verify_per_s,
            c.validators,
            rss.join(", "),
            c.chain_entries,
            c.disk_bytes_per_entry
        );
    }
}

/// The targets, judged on the 4-validator devnet when it was measured.
fn targets(clusters: &[cluster::ClusterResult]) -> Vec<TargetCheck> {
    let Some(c) = clusters.iter().find(|c| c.validators == 4) else {
        return Vec::new();
    };
    let mut out = vec![TargetCheck {
        target: "4 validators commit >= 50 % of the verification ceiling".to_string(),
        measured: format!(
            "{:.1} % ({:.0} of {:.0} entries/s)",
            c.committed_pct_of_ceiling,
            c.runs.first().map_or(0.0, |r| r.committed_per_s),
            c.ceiling_per_s
        ),
        met: Some(c.committed_pct_of_ceiling >= 50.0),
    }];
    if let Some(half) = c.runs.iter().find(|r| r.label == "50%") {
        out.push(TargetCheck {
            target: "p99 commit latency <= 250 ms at half the maximum rate".to_string(),
            measured: format!("{:.0} ms", half.latency_ms.p99),
            met: Some(half.latency_ms.p99 <= 250.0),
        });
    }
    if let Some(entry) = c.runs.first().map(|r| r.entry_bytes_mean) {
        out.push(TargetCheck {
            target: "disk <= 2 x the signed size of an entry".to_string(),
            measured: format!(
                "{:.0} bytes per entry on disk, {:.0} signed ({:.2} x)",
                c.disk_bytes_per_entry,
                entry,
                c.disk_bytes_per_entry / entry
            ),
            met: Some(c.disk_bytes_per_entry <= 2.0 * entry),
        });
    }
    out.push(rss_target(&c.peak_rss_bytes, c.chain_entries));
    out
}

/// The memory target, judged on the largest of the nodes' peaks once the chain holds a
/// million entries.
fn rss_target(peaks: &[Option<u64>], entries: u64) -> TargetCheck {
    let peak = peaks.iter().flatten().max().copied().unwrap_or(0);
    TargetCheck {
        target: "RSS <= 256 MiB per node with 1M entries committed".to_string(),
        measured: format!(
            "{:.0} MiB peak over {} nodes with {entries} entries committed{}",
            peak as f64 / 1048576.0,
            peaks.len(),
            if entries < 1_000_000 {
                " (fewer than 1M)"
            } else {
                ""
            }
        ),
        met: (entries >= 1_000_000).then_some(peak <= 256 * 1024 * 1024),
    }
}
