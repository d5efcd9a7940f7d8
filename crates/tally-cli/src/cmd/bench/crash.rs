//! `tally bench crash`: SIGKILLs random validators of a devnet under load, again and again,
//! then checks what a crash must never do: lose or move an entry a node reported committed,
//! or fork the chain. Every validator ends at the same head, every reported entry is at the
//! same height and index on each of them, and `tally audit verify` passes on every data
//! directory. Outside CI: a thousand kills take about an hour (docs/performance.md).

use super::cluster;
use crate::client::{NodeClient, Submitted};
use crate::cmd::devnet;
use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tally_types::{EntryId, Keypair, Name, Payload, Role, SignedEntry};

/// Entries each author keeps in flight.
const WINDOW: usize = 32;
/// How long an entry no node knows waits before it is sent again (its node may have died
/// before relaying it).
const RESEND_AFTER: Duration = Duration::from_secs(2);
/// How long a restarted validator may take to answer on its API.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the validators may take to agree on a height once the load stops.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of `tally bench crash`.
#[derive(Debug, clap::Args)]
pub struct CrashArgs {
    /// Validators of the devnet (one is down at a time, so at least 4).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// SIGKILLs to deal.
    #[arg(long, default_value_t = 100)]
    pub kills: u64,
    /// The devnet's directory (written fresh; an earlier one there is deleted).
    #[arg(long, default_value = "bench-crash")]
    pub dir: PathBuf,
    /// Validator i's API listens on 127.0.0.1:(base-port + i), as in `tally devnet`.
    #[arg(long, default_value_t = 7699)]
    pub base_port: u16,
    /// Seed of the kill schedule (which validator, when, for how long).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the campaign found.
#[derive(Debug, Serialize)]
pub struct CrashResult {
    /// Validators of the devnet.
    pub validators: usize,
    /// SIGKILLs dealt.
    pub kills: u64,
    /// Seconds from the first kill to the last restart.
    pub seconds: f64,
    /// Entries the nodes admitted (202), resends not counted.
    pub submitted: u64,
    /// Entries a node reported committed: each is checked on every validator at the end.
    pub acknowledged: u64,
    /// Of those, missing from some validator's chain.
    pub lost: u64,
    /// Of those, at another height or index on some validator than first reported.
    pub moved: u64,
    /// Validators whose audited head differs from validator 1's: a fork.
    pub forks: u64,
    /// Validators whose data directory passed `tally audit verify`.
    pub audits_passed: usize,
    /// The common height at the end.
    pub height: u64,
    /// Longest a restarted validator took to answer on its API, in seconds.
    pub restart_max_s: f64,
}

/// A small deterministic generator for the kill schedule.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What the authors share with the checker.
#[derive(Default)]
struct Seen {
    /// Entry id -> (height, index) as first reported committed.
    committed: Mutex<BTreeMap<EntryId, (u64, u64)>>,
    submitted: AtomicU64,
    /// The first thing that must never happen (an entry rejected, a refusal that is not a
    /// full mempool).
    anomaly: Mutex<Option<String>>,
}

/// Runs the campaign: a devnet under load, `kills` SIGKILLs, then the checks.
pub fn run(args: &CrashArgs) -> anyhow::Result<CrashResult> {
    if args.validators < 4 {
        bail!("--validators must be at least 4: one is down at a time, and the rest must decide");
    }
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    devnet::init(&args.dir, args.validators, 0, args.base_port, false)?;
    let members = devnet::members(&args.dir)?;
    let exe = std::env::current_exe()?;
    let mut children: Vec<Option<Child>> = devnet::spawn_all(&exe, &members)?
        .into_iter()
        .map(|(_, c)| Some(c))
        .collect();
    let result = campaign(args, &exe, &members, &mut children);
    let mut running: Vec<(String, Child)> = members
        .iter()
        .zip(children.iter_mut())
        .filter_map(|(m, c)| c.take().map(|c| (m.name.clone(), c)))
        .collect();
    devnet::terminate(&mut running);
    let mut result = result?;
    // Each directory from genesis, and the heads compared: equal heads mean equal chains.
    let genesis = args.dir.join("genesis.toml");
    let mut heads = Vec::new();
    for m in &members {
        match audit(&exe, &m.dir.join("data"), &genesis) {
            Ok(head) => {
                result.audits_passed += 1;
                heads.push(Some(head));
            }
            Err(e) => {
                eprintln!("{}: audit failed: {e:#}", m.name);
                heads.push(None);
            }
        }
    }
    result.forks = heads
        .iter()
        .filter(|h| h.is_some() && **h != heads[0])
        .count() as u64;
    Ok(result)
}

/// `tally audit verify` on a stopped node's directory: its head hash.
fn audit(exe: &Path, data: &Path, genesis: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(exe)
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(data)
        .arg("--genesis")
        .arg(genesis)
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["head_hash"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("no head_hash in the audit's answer"))
}

fn campaign(
    args: &CrashArgs,
    exe: &Path,
    members: &[devnet::Member],
    children: &mut [Option<Child>],
) -> anyhow::Result<CrashResult> {
    let urls: Vec<String> = members
        .iter()
        .map(|m| format!("http://127.0.0.1:{}", m.api))
        .collect();
    cluster::ready(&urls, members.len())?;
    let chain_id = NodeClient::new(&urls[0]).chain_and_batch_max()?.0;
    let authors: Vec<Keypair> = devnet::AGENCIES
        .iter()
        .take(members.len())
        .map(|a| tally_node::keyfile::read_key_file(&args.dir.join(format!("keys/{a}-admin.key"))))
        .collect::<Result<_, _>>()?;
    let seen = Seen::default();
    let stop = AtomicBool::new(false);
    let down = Mutex::new(None::<usize>);
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let started = Instant::now();
    let mut restart_max = Duration::ZERO;
    let outcome = std::thread::scope(|s| -> anyhow::Result<()> {
        for (a, key) in authors.iter().enumerate() {
            let (urls, chain_id, seen, stop, down) = (&urls, &chain_id, &seen, &stop, &down);
            s.spawn(move || author(a as u64, key, chain_id, urls, seen, stop, down));
        }
        let result = (|| {
            for k in 1..=args.kills {
                std::thread::sleep(Duration::from_millis(300 + rng.below(1_200)));
                let i = rng.below(members.len() as u64) as usize;
                *down.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                if let Some(mut c) = children[i].take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                std::thread::sleep(Duration::from_millis(rng.below(1_000)));
                let back = Instant::now();
                children[i] = devnet::spawn_all(exe, std::slice::from_ref(&members[i]))?
                    .pop()
                    .map(|(_, c)| c);
                let client = NodeClient::new(&urls[i]);
                while client.get("/v1/status").ok().flatten().is_none() {
                    if back.elapsed() > RESTART_TIMEOUT {
                        bail!(
                            "{} did not answer within {RESTART_TIMEOUT:?} of its restart",
                            members[i].name
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                restart_max = restart_max.max(back.elapsed());
                *down.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if k % 25 == 0 || k == args.kills {
                    let height = super::load::height(&NodeClient::new(&urls[(i + 1) % urls.len()]))
                        .unwrap_or(0);
                    eprintln!(
                        "{k} kills, {:.0} s: height {height}, {} entries reported committed",
                        started.elapsed().as_secs_f64(),
                        seen.committed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .len()
                    );
                }
                if let Some(a) = seen
                    .anomaly
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                {
                    bail!("{a}");
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        result
    });
    let seconds = started.elapsed().as_secs_f64();
    outcome?;
    let height = settle(&urls)?;
    let committed = seen
        .committed
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    // Each validator's chain, read block by block: where each entry is.
    let (mut lost, mut moved) = (0, 0);
    for url in &urls {
        let placed = placements(&NodeClient::new(url), height)?;
        for (id, place) in &committed {
            match placed.get(id) {
                Some(at) if at == place => {}
                Some(at) => {
                    moved += 1;
                    eprintln!(
                        "{url}: entry {} at {at:?}, first reported at {place:?}",
                        id.short()
                    );
                }
                None => {
                    lost += 1;
                    eprintln!(
                        "{url}: entry {} reported committed at {place:?} is not in its chain",
                        id.short()
                    );
                }
            }
        }
    }
    Ok(CrashResult {
        validators: members.len(),
        kills: args.kills,
        seconds,
        submitted: seen.submitted.load(Ordering::SeqCst),
        acknowledged: committed.len() as u64,
        lost,
        moved,
        forks: 0,
        audits_passed: 0,
        height,
        restart_max_s: restart_max.as_secs_f64(),
    })
}

/// Where each entry of a node's chain is, up to `height`: (height, index), read from its blocks.
fn placements(client: &NodeClient, height: u64) -> anyhow::Result<HashMap<EntryId, (u64, u64)>> {
    let mut placed = HashMap::new();
    for h in 1..=height {
        let block = client
            .get(&format!("/v1/blocks/{h}"))?
            .ok_or_else(|| anyhow!("no block {h}"))?;
        for (index, e) in block["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let id: EntryId = e["id"]
                .as_str()
                .ok_or_else(|| anyhow!("block {h}: an entry without an id"))?
                .parse()
                .map_err(|e| anyhow!("block {h}: {e}"))?;
            placed.insert(id, (h, index as u64));
        }
    }
    Ok(placed)
}

/// Waits until every validator reports the same height, with nothing pending in between.
fn settle(urls: &[String]) -> anyhow::Result<u64> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let heights: Vec<Option<u64>> = urls
            .iter()
            .map(|u| super::load::height(&NodeClient::new(u)).ok())
            .collect();
        if let Some(Some(h)) = heights.first() {
            if heights.iter().all(|x| *x == Some(*h)) {
                std::thread::sleep(Duration::from_secs(1));
                let again = super::load::height(&NodeClient::new(&urls[0])).ok();
                if again == Some(*h) {
                    return Ok(*h);
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the validators did not agree on a height within {SETTLE_TIMEOUT:?}: {heights:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One author's stream: grants of a role to fresh keys, in sequence, `WINDOW` in flight,
/// sent to validators in turn (never to the one being killed), each followed until a node
/// reports it committed, and sent again when no node knows it (its node died before relaying
/// it: the outbox's rule).
fn author(
    a: u64,
    key: &Keypair,
    chain_id: &Name,
    urls: &[String],
    seen: &Seen,
    stop: &AtomicBool,
    down: &Mutex<Option<usize>>,
) {
    let clients: Vec<NodeClient> = urls.iter().map(|u| NodeClient::new(u)).collect();
    let pick = |n: u64| -> usize {
        let down = *down.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = (n as usize) % clients.len();
        if Some(i) == down {
            i = (i + 1) % clients.len();
        }
        i
    };
    let anomaly = |m: String| {
        seen.anomaly
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(m);
    };
    let mut sequence = 0u64;
    let mut turn = a;
    // id -> (entry, when last sent, admitted at least once)
    let mut flight: HashMap<EntryId, (SignedEntry, Option<Instant>, bool)> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        while flight.len() < WINDOW {
            let grantee = Keypair::from_seed_for_tests(1_000_000 * (a + 1) + sequence).public();
            let entry = tally_types::EntryBody {
                chain_id: chain_id.clone(),
                author: key.public(),
                sequence,
                payload: Payload::GrantRole {
                    key: grantee,
                    role: Role::Redeemer,
                },
            }
            .sign(key);
            sequence += 1;
            flight.insert(entry.id(), (entry, None, false));
        }
        let ids: Vec<EntryId> = flight.keys().copied().collect();
        for id in ids {
            turn += 1;
            let client = &clients[pick(turn)];
            let Some((entry, sent, admitted)) = flight.get_mut(&id) else {
                continue;
            };
            match client.get(&format!("/v1/entries/{}", id.to_hex())) {
                Ok(Some(v)) if v["status"] == "committed" => {
                    let place = (
                        v["height"].as_u64().unwrap_or(0),
                        v["index"].as_u64().unwrap_or(0),
                    );
                    seen.committed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, place);
                    flight.remove(&id);
                }
                Ok(Some(v)) if v["status"] == "rejected" => {
                    anomaly(format!("entry {} was rejected: {v}", id.short()));
                    return;
                }
                Ok(Some(_)) => {}
                // Unknown here (or the node is gone): send it again once it has had time.
                Ok(None) | Err(_) if sent.is_none_or(|t| t.elapsed() >= RESEND_AFTER) => {
                    *sent = Some(Instant::now());
                    match client.submit(entry) {
                        Ok(Submitted::Pending(_)) => {
                            if !*admitted {
                                *admitted = true;
                                seen.submitted.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(Submitted::Refused { code, detail }) => {
                            // Known already, a full mempool, a sequence ahead of a lost one:
                            // all pass once the gap is sent again.
                            if !matches!(
                                code.as_str(),
                                "duplicate_entry"
                                    | "mempool_full"
                                    | "future_sequence"
                                    | "stale_sequence"
                            ) {
                                anomaly(format!("entry {} refused: {code}: {detail}", id.short()));
                                return;
                            }
                        }
                        Err(_) => {}
                    }
                }
                Ok(None) | Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
