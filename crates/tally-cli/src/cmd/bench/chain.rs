//! `tally bench chain`: a chain of a million entries, written block by block through the real
//! state machine and storage, then `tally audit verify` over it and a validator catching up on
//! it by block sync.
//!
//! The chain belongs to a four-validator devnet: validators 1 to 3 hold it, validator 4 holds
//! only the genesis, as if it had been stopped while the others committed every block. Each
//! block is built by `tally_state::build_block` and certified by three validator keys, so the
//! audit and the catch-up check exactly what they would on a live chain.

use super::load::{self, Plan, RunResult, Setup, Target};
use super::probe::Limits;
use crate::client::NodeClient;
use crate::cmd::devnet;
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tally_state::{build_block, State, Tip};
use tally_storage::{CommitBatch, Store};
use tally_types::{CommitCertificate, EntryOutcome, Keypair, SignedEntry, VerifiedEntry};

/// Validators of the chain's devnet: three hold the chain, the fourth catches up.
const VALIDATORS: usize = 4;
/// Entries per block: the default `block.entries_max`.
const BLOCK_ENTRIES: usize = 2_000;
/// Workload streams, as client connections are in `tally bench load`.
const STREAMS: usize = 8;
/// The longest a catch-up may take before the benchmark gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3_600);
/// Most entries signed ahead for the load during the catch-up (about 400 bytes each).
const CATCH_UP_LOAD_ENTRIES_MAX: usize = 300_000;

/// Options of `tally bench chain`.
#[derive(Debug, clap::Args)]
pub struct ChainArgs {
    /// Entries on the generated chain (issues and redemptions, after a few setup entries).
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// The chain's devnet. Reused when it already holds a chain of at least --entries written
    /// by this command; otherwise written fresh (an earlier devnet there is deleted).
    #[arg(long, default_value = "bench-chain")]
    pub dir: PathBuf,
    /// Validator i's API listens on 127.0.0.1:(base-port + i), as in `tally devnet`.
    #[arg(long, default_value_t = 7599)]
    pub base_port: u16,
    /// Only write the chain and audit it; do not start the devnet for the catch-up.
    #[arg(long)]
    pub no_catch_up: bool,
    /// Entries per second offered to validators 1-3 while validator 4 catches up, so that it
    /// chases a chain that still grows (0: the others stay at rest).
    #[arg(long, default_value_t = 500.0)]
    pub catch_up_load: f64,
}

/// What was measured.
#[derive(Debug, Serialize)]
pub struct ChainResult {
    /// How the chain came to be.
    pub chain: ChainMade,
    /// `tally audit verify` over node-1's copy.
    pub audit: Audit,
    /// Validator 4 syncing the whole chain from the other three.
    pub catch_up: Option<CatchUp>,
}

/// The generated chain, recorded in `chain.json` beside the devnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainMade {
    /// Entries on the chain.
    pub entries: u64,
    /// Blocks on the chain.
    pub blocks: u64,
    /// Seconds it took to write (0 when an earlier chain was reused).
    pub written_in_s: f64,
    /// Bytes of one validator's data directory, flushed and compacted.
    pub disk_bytes: u64,
}

/// The auditor's replay.
#[derive(Debug, Serialize)]
pub struct Audit {
    /// Wall-clock seconds of `tally audit verify`.
    pub seconds: f64,
    /// Entries per second it verified.
    pub entries_per_s: f64,
    /// The machine's limit measured again as soon as the audit ended: a shared machine's
    /// rate moves by more than 10 % within minutes, so the audit is judged against the mean
    /// of this and the run's first measurement, which bracket it.
    pub limits_after: Limits,
    /// That mean, of batch verifications per second on all cores.
    pub batch_verify_per_s: f64,
    /// The audit's rate as a percentage of that mean.
    pub pct_of_batch_verify: f64,
    /// The audit's rate as a percentage of the mean strict-verify rate on all cores.
    pub pct_of_strict_verify: f64,
    /// Peak resident memory of the audit process.
    pub peak_rss_bytes: Option<u64>,
}

/// The catch-up of validator 4.
#[derive(Debug, Serialize)]
pub struct CatchUp {
    /// From starting validator 4 to its height reaching validator 1's.
    pub seconds: f64,
    /// Entries it synced: the chain's, and those the others committed meanwhile.
    pub entries: u64,
    /// Entries per second it verified, replayed and stored.
    pub entries_per_s: f64,
    /// What the others committed while it caught up (`null` when they were at rest).
    pub load: Option<RunResult>,
    /// Peak resident memory of each node, the chain loaded (1-3) or synced (4).
    pub peak_rss_bytes: Vec<Option<u64>>,
}

fn made_file(dir: &Path) -> PathBuf {
    dir.join("chain.json")
}

/// Writes the chain, or finds one written before.
fn chain(args: &ChainArgs) -> anyhow::Result<ChainMade> {
    if let Ok(bytes) = std::fs::read(made_file(&args.dir)) {
        if let Ok(made) = serde_json::from_slice::<ChainMade>(&bytes) {
            if made.entries >= args.entries {
                eprintln!(
                    "reusing the chain of {} entries in {}",
                    made.entries,
                    args.dir.display()
                );
                return Ok(ChainMade {
                    written_in_s: 0.0,
                    ..made
                });
            }
        }
    }
    if args.dir.exists() {
        if !args.dir.join("genesis.toml").exists() {
            bail!(
                "{} exists and is not a devnet; choose another --dir",
                args.dir.display()
            );
        }
        std::fs::remove_dir_all(&args.dir)?;
    }
    devnet::init(&args.dir, VALIDATORS, 0, args.base_port, false)?;
    let started = Instant::now();
    let (entries, blocks) = write_chain(&args.dir, args.entries)?;
    let written_in_s = started.elapsed().as_secs_f64();
    let node1 = args.dir.join("node-1/data");
    let (_, _, disk_bytes) = super::cluster::disk(&node1)?;
    for i in 2..VALIDATORS {
        copy_dir(&node1, &args.dir.join(format!("node-{i}/data")))?;
    }
    let made = ChainMade {
        entries,
        blocks,
        written_in_s,
        disk_bytes,
    };
    std::fs::write(made_file(&args.dir), serde_json::to_vec_pretty(&made)?)?;
    Ok(made)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// Builds, certifies and commits blocks into node-1's data directory until `entries` are on
/// the chain. Returns the entries and blocks written.
fn write_chain(dir: &Path, entries: u64) -> anyhow::Result<(u64, u64)> {
    let genesis = tally_node::load_genesis(&dir.join("genesis.toml"))?;
    let keys: Vec<Keypair> = (1..=VALIDATORS)
        .map(|i| tally_node::keyfile::read_key_file(&dir.join(format!("node-{i}/node.key"))))
        .collect::<Result<_, _>>()?;
    let admin = tally_node::keyfile::read_key_file(&dir.join("keys/wfp-admin.key"))?;
    let store = Store::open(&dir.join("node-1/data"))?;
    store.init_genesis(&genesis)?;
    let mut state = State::genesis(&genesis);
    let mut tip = Tip::genesis(&genesis);
    let (setup, setup_entries) = Setup::sign(genesis.chain_id.clone(), &admin, 0, STREAMS)?;
    let per_stream = (entries as usize).div_ceil(STREAMS);
    let streams = setup.sign_streams(STREAMS, per_stream, |e| e)?;
    let mut committed = 0u64;
    // Blocks are built from checked entries, as a validator builds them from its mempool: the
    // chain is generated at the machine's batch-verify rate, not measured.
    let verified = |batch: Vec<SignedEntry>| -> anyhow::Result<Vec<VerifiedEntry>> {
        tally_state::verify_entries(batch.into_iter().map(Into::into).collect())
            .into_iter()
            .map(|e| e.map_err(|bad| anyhow!("generated entry {} does not verify", bad.id)))
            .collect()
    };
    let mut commit = |batch: Vec<SignedEntry>| -> anyhow::Result<()> {
        let n = batch.len();
        let built = build_block(
            &state,
            &tip,
            tally_types::TimestampMs(crate::time_arg::now_ms()),
            keys[0].public(),
            verified(batch)?,
        )?;
        if !built.left_out.is_empty() || built.block.entries.len() != n {
            bail!(
                "a generated entry could not be ordered at height {}",
                tip.height + 1
            );
        }
        if let Some((id, outcome)) = built
            .execution
            .outcomes
            .iter()
            .find(|(_, o)| *o != EntryOutcome::Accepted)
        {
            bail!("generated entry {id} was rejected: {outcome:?}");
        }
        let certificate = CommitCertificate::signed_by(
            &built.block.header,
            0,
            &keys[..tally_types::block::quorum(VALIDATORS)],
        );
        let head = store.commit_block(&CommitBatch {
            block: &built.block,
            certificate: &certificate,
            outcomes: &built.execution.outcomes,
            rejections: &built.execution.rejections,
            diff: &built.execution.diff,
            staged: &built.staged,
        })?;
        state.apply_staged(&built.execution.diff, built.staged)?;
        tip = Tip {
            chain_id: tip.chain_id.clone(),
            height: head.height,
            hash: head.hash,
            timestamp: head.timestamp,
        };
        committed += n as u64;
        if head.height % 25 == 0 {
            eprintln!("  block {}: {committed} entries", head.height);
        }
        Ok(())
    };
    commit(setup_entries.admin)?;
    commit(setup_entries.vouchers)?;
    let mut iters: Vec<_> = streams.into_iter().map(Vec::into_iter).collect();
    let mut batch = Vec::with_capacity(BLOCK_ENTRIES);
    loop {
        let mut took = false;
        for it in iters.iter_mut() {
            if let Some(e) = it.next() {
                batch.push(e);
                took = true;
            }
        }
        if batch.len() >= BLOCK_ENTRIES || (!took && !batch.is_empty()) {
            commit(std::mem::take(&mut batch))?;
        }
        if !took {
            break;
        }
    }
    let height = tip.height;
    Ok((committed, height))
}

/// Runs `tally audit verify` on node-1's copy and reads its rate.
fn audit(dir: &Path, limits: &Limits) -> anyhow::Result<Audit> {
    let exe = std::env::current_exe()?;
    eprintln!("tally audit verify on node-1's copy");
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(dir.join("node-1/data"))
        .arg("--genesis")
        .arg(dir.join("genesis.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let mut peak = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = super::stats::peak_rss_bytes(pid).or(peak);
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut out)?;
    }
    if !status.success() {
        bail!("tally audit verify failed ({status}): {out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out).context("audit verify's JSON")?;
    let rate = v["entries_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("audit verify reported no rate: {v}"))?;
    let after = super::probe::measure(super::PROBE_SECONDS)?;
    let batch = (limits.batch_verify_per_s + after.batch_verify_per_s) / 2.0;
    let strict = (limits.verify_strict_per_s + after.verify_strict_per_s) / 2.0;
    Ok(Audit {
        seconds,
        entries_per_s: rate,
        limits_after: after,
        batch_verify_per_s: batch,
        pct_of_batch_verify: 100.0 * rate / batch,
        pct_of_strict_verify: 100.0 * rate / strict,
        peak_rss_bytes: peak,
    })
}

/// Starts validators 1-3, has them commit an offered load, then starts validator 4 from its
/// genesis and times it until its height reaches validator 1's.
fn catch_up(dir: &Path, made: &ChainMade, rate: f64) -> anyhow::Result<CatchUp> {
    let exe = std::env::current_exe()?;
    let members = devnet::members(dir)?;
    let (last, others) = members
        .split_last()
        .ok_or_else(|| anyhow!("the devnet has no validators"))?;
    // Validator 4 starts from genesis each time, so a reused chain is a full catch-up again.
    let synced = last.dir.join("data");
    if synced.exists() {
        std::fs::remove_dir_all(&synced)?;
    }
    let mut children = devnet::spawn_all(&exe, others)?;
    let result = chase(dir, made, rate, &exe, last, others, &mut children);
    let rss = super::cluster::stop_all(&mut children);
    let (seconds, load) = result?;
    let (entries, _, _) = super::cluster::disk(&synced)?;
    Ok(CatchUp {
        seconds,
        entries,
        entries_per_s: entries as f64 / seconds,
        load,
        peak_rss_bytes: rss,
    })
}

/// The timed part of [`catch_up`]: returns the seconds and the load the others committed.
fn chase(
    dir: &Path,
    made: &ChainMade,
    rate: f64,
    exe: &Path,
    last: &devnet::Member,
    others: &[devnet::Member],
    children: &mut Vec<(String, std::process::Child)>,
) -> anyhow::Result<(f64, Option<RunResult>)> {
    let urls: Vec<String> = others
        .iter()
        .map(|m| format!("http://127.0.0.1:{}", m.api))
        .collect();
    super::cluster::ready(&urls, others.len())?;
    let target = Target {
        nodes: urls,
        pids: children.iter().map(|(_, c)| c.id()).collect(),
    };
    let plan = Plan {
        clients: STREAMS as u16,
        warmup_s: 0,
        duration_s: CATCH_UP_TIMEOUT.as_secs(),
        entries_max: CATCH_UP_LOAD_ENTRIES_MAX,
        // Field devices, one entry per request, as in the runs before batches existed.
        batch: 1,
    };
    let admin = tally_node::keyfile::read_key_file(&dir.join("keys/wfp-admin.key"))?;
    let load = if rate > 0.0 {
        Some(load::prepare(
            &target,
            &admin,
            &plan,
            Some(rate),
            "catch-up load",
        )?)
    } else {
        None
    };
    children.extend(devnet::spawn_all(exe, std::slice::from_ref(last))?);
    let started = Instant::now();
    eprintln!(
        "validators 1-3 hold {} blocks{}; timing validator 4's catch-up",
        made.blocks,
        if load.is_some() {
            format!(" and commit {rate:.0} entries/s")
        } else {
            String::new()
        }
    );
    let leader = NodeClient::new(&target.nodes[0]);
    let chaser = NodeClient::new(&format!("http://127.0.0.1:{}", last.api));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let driver = load.map(|l| s.spawn(|| l.drive(Some(&stop))));
        let caught_up = loop {
            let ahead = load::height(&leader).ok();
            let height = load::height(&chaser).ok();
            if let (Some(a), Some(h)) = (ahead, height) {
                if h >= a && h >= made.blocks {
                    break Ok(started.elapsed().as_secs_f64());
                }
            }
            if started.elapsed() > CATCH_UP_TIMEOUT {
                break Err(anyhow!(
                    "validator 4 did not catch up within {CATCH_UP_TIMEOUT:?} \
                     (at height {height:?}, validator 1 at {ahead:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        stop.store(true, Ordering::Relaxed);
        let load = match driver {
            Some(d) => Some(
                d.join()
                    .map_err(|_| anyhow!("the load generator panicked"))??,
            ),
            None => None,
        };
        Ok((caught_up?, load))
    })
}

/// Writes (or reuses) the chain, audits it and times the catch-up.
pub fn run(args: &ChainArgs, limits: &Limits) -> anyhow::Result<ChainResult> {
    let made = chain(args)?;
    eprintln!(
        "chain: {} entries in {} blocks, {:.0} MB on disk per validator",
        made.entries,
        made.blocks,
        made.disk_bytes as f64 / 1e6
    );
    let audit = audit(&args.dir, limits)?;
    eprintln!(
        "audit verify: {:.0} entries/s in {:.1} s ({:.0} % of the batch-verify rate on all cores: \
         {:.0}/s, the mean of {:.0} before and {:.0} after)",
        audit.entries_per_s,
        audit.seconds,
        audit.pct_of_batch_verify,
        audit.batch_verify_per_s,
        limits.batch_verify_per_s,
        audit.limits_after.batch_verify_per_s
    );
    let catch_up = if args.no_catch_up {
        None
    } else {
        let c = catch_up(&args.dir, &made, args.catch_up_load)?;
        eprintln!(
            "catch-up: {} entries in {:.1} s, {:.0} entries/s{}",
            c.entries,
            c.seconds,
            c.entries_per_s,
            c.load.as_ref().map_or(String::new(), |l| format!(
                ", while validators 1-3 committed {:.0} entries/s",
                l.committed_per_s
            ))
        );
        Some(c)
    };
    Ok(ChainResult {
        chain: made,
        audit,
        catch_up,
    })
}
