//! The load generator: pre-signed voucher issues and redemptions, sent from several client
//! connections at a controlled rate to any running network, each followed until the node it was
//! sent to has committed it and serves it.
//!
//! Setup (not measured): an agency admin grants fresh issuer, redeemer and vendor keys and opens
//! a programme; a few large vouchers are issued for the redemptions to draw on. Every measured
//! entry is then signed before the clock starts, so the generator spends its CPU on HTTP only.

use super::stats::{self, Percentiles};
use crate::client::{NodeClient, Settled, Submitted};
use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tally_types::{
    Domain, EntryBody, EntryId, Keypair, Name, Payload, PublicKey, Role, SignedEntry, SubjectToken,
    TimestampMs,
};

/// Issuer and redeemer keys per client. Spreading a client's entries over several authors keeps
/// each author's pending run short of the nodes' `mempool.per_author_max`.
const AUTHORS_PER_CLIENT: usize = 8;
/// Vouchers issued in setup for the redemptions to draw on, per client.
const VOUCHERS_PER_CLIENT: usize = 4;
/// How long to wait after the window for the window's entries to commit.
const DRAIN: Duration = Duration::from_secs(20);
/// How often a node's head is polled for new blocks.
const POLL: Duration = Duration::from_millis(10);

/// How a run offers load.
#[derive(Debug, Clone, clap::Args)]
pub struct Plan {
    /// Client connections (1 to 64, each a thread with its own keys), spread round robin over
    /// the nodes.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub clients: u16,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 5)]
    pub warmup_s: u64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Most entries signed ahead for one run: bounds the generator's memory (about 400 bytes
    /// each). A run at full speed that uses them up ends its window early and says so.
    #[arg(long, default_value_t = 600_000)]
    pub entries_max: usize,
    /// Most entries in one request (1 to 10,000; at most the nodes' `api.batch_entries_max`):
    /// 1 sends each entry on its own (`POST /v1/entries`, as a field device does); more sends
    /// `POST /v1/entries/batch` with what is due or waiting, as a gateway or an outbox sync does.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub batch: u16,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `max`, or the percentage of the maximum offered.
    pub label: String,
    /// Entries per second offered (`null`: as fast as the nodes admit).
    pub offered_per_s: Option<f64>,
    /// Entries per second the nodes admitted in the window.
    pub submitted_per_s: f64,
    /// Entries per second committed in the window (each counted at the node it was sent to).
    pub committed_per_s: f64,
    /// Length of the measured window.
    pub window_s: f64,
    /// Submission to committed-and-queryable, for entries sent in the window.
    pub latency_ms: Percentiles,
    /// Entries sent in the window still not committed when the drain ended.
    pub uncommitted: u64,
    /// Times a node said "later" (mempool full, or an author too far ahead) and the entry was
    /// sent again, by code.
    pub backpressure: BTreeMap<String, u64>,
    /// Entries refused for good, by code.
    pub refused: BTreeMap<String, u64>,
    /// Entries committed over the whole run and how many the rules accepted (read back from
    /// the programme's totals): a benchmark of rejected entries would measure nothing useful.
    pub committed_total: u64,
    /// Accepted issues and redemptions (from the programme's figures).
    pub accepted_total: u64,
    /// Signature verifications per committed entry on each node (from each node's
    /// `signature_verifications`), averaged over the nodes. Counted over the whole run, from
    /// the first submission until what was sent has committed: an entry is checked when it is
    /// admitted and committed later, so over the window alone a node that falls behind (or
    /// fills its mempool) seems to check more than it does.
    pub verifications_per_entry_per_node: Option<f64>,
    /// CPU seconds of all the nodes per 1,000 entries committed in the window (only when the
    /// nodes run on this machine).
    pub node_cpu_s_per_1k: Option<f64>,
    /// CPU seconds of this generator per 1,000 entries committed in the window.
    pub generator_cpu_s_per_1k: Option<f64>,
    /// Mean signed size of the run's entries in bytes.
    pub entry_bytes_mean: f64,
    /// Set when the run ran out of pre-signed entries before its window ended.
    pub note: Option<String>,
}

/// The nodes under load: where to send, and the local processes when there are some.
pub struct Target {
    /// API base URLs.
    pub nodes: Vec<String>,
    /// Local process ids of every node, for CPU use (empty for a remote network).
    pub pids: Vec<u32>,
}

struct Prepared {
    id: EntryId,
    bytes: Vec<u8>,
}

/// Keys and programme of one run.
pub struct Setup {
    chain_id: Name,
    programme: Name,
    valid_until: TimestampMs,
    vendor: PublicKey,
    issuers: Vec<Keypair>,
    redeemers: Vec<Keypair>,
    vouchers: Vec<EntryId>,
    issued_in_setup: u64,
}

fn name(s: impl Into<String>) -> anyhow::Result<Name> {
    Ok(Name::new(s)?)
}

fn sign(chain_id: &Name, key: &Keypair, sequence: u64, payload: Payload) -> SignedEntry {
    EntryBody {
        chain_id: chain_id.clone(),
        author: key.public(),
        sequence,
        payload,
    }
    .sign(key)
}

/// Submits entries in order and waits until every one is committed and accepted.
fn submit_and_wait(client: &NodeClient, entries: &[SignedEntry]) -> anyhow::Result<()> {
    for e in entries {
        loop {
            match client.submit(e)? {
                Submitted::Pending(_) => break,
                Submitted::Refused { code, .. } if retry_later(&code) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Submitted::Refused { code, detail } => {
                    bail!("setup entry refused: {code}: {detail}")
                }
            }
        }
    }
    for e in entries {
        match client.wait(&e.id(), Duration::from_secs(60))? {
            Settled::Committed(_) => {}
            Settled::Rejected(v) => bail!("setup entry rejected: {}", v["reason"]),
            Settled::StillPending => bail!("setup entry {} not committed in 60 s", e.id()),
        }
    }
    Ok(())
}

fn retry_later(code: &str) -> bool {
    matches!(code, "mempool_full" | "future_sequence")
}

/// What setup signs: the admin's entries (programme, grants), then the vouchers' issues.
pub struct SetupEntries {
    pub admin: Vec<SignedEntry>,
    pub vouchers: Vec<SignedEntry>,
}

impl Setup {
    /// Sets up over HTTP: signs locally, submits, and waits until every entry is committed.
    fn new(client: &NodeClient, admin: &Keypair, clients: usize) -> anyhow::Result<Self> {
        let (chain_id, admin_seq) = client.signing_context(&admin.public())?;
        let admin_seq = admin_seq.ok_or_else(|| {
            anyhow!("the admin key is not registered on this chain; pass an agency admin's key")
        })?;
        let (setup, entries) = Self::sign(chain_id, admin, admin_seq, clients)?;
        submit_and_wait(client, &entries.admin).context("granting the benchmark's keys")?;
        submit_and_wait(client, &entries.vouchers).context("issuing the benchmark's vouchers")?;
        Ok(setup)
    }

    /// Fresh keys and a fresh programme, and the entries that set them up on the chain: the
    /// admin's from `admin_seq` on, then the issues of the vouchers.
    pub fn sign(
        chain_id: Name,
        admin: &Keypair,
        mut admin_seq: u64,
        clients: usize,
    ) -> anyhow::Result<(Self, SetupEntries)> {
        let suffix = Keypair::generate()?.public();
        let programme = name(format!("bench-{}", hex::encode(&suffix.0[..4])))?;
        let now = crate::time_arg::now_ms();
        let valid_until = TimestampMs(now + 30 * 24 * 3_600_000);
        let authors = clients * AUTHORS_PER_CLIENT / 2;
        let fresh = |n: usize| -> anyhow::Result<Vec<Keypair>> {
            (0..n).map(|_| Ok(Keypair::generate()?)).collect()
        };
        let issuers = fresh(authors)?;
        let redeemers = fresh(authors)?;
        let vendor = Keypair::generate()?;
        let mut admin_entries = Vec::new();
        let mut by_admin = |payload: Payload| {
            admin_entries.push(sign(&chain_id, admin, admin_seq, payload));
            admin_seq += 1;
        };
        by_admin(Payload::CreateProgramme {
            programme: programme.clone(),
            unit: name("unit")?,
            budget: tally_types::AMOUNT_MAX,
            valid_from: TimestampMs(0),
            valid_until,
            assistance: name("bench")?,
            period: programme.clone(),
        });
        for (keys, role) in [(&issuers, Role::Issuer), (&redeemers, Role::Redeemer)] {
            for k in keys {
                by_admin(Payload::GrantRole {
                    key: k.public(),
                    role,
                });
            }
        }
        by_admin(Payload::GrantRole {
            key: vendor.public(),
            role: Role::Vendor,
        });
        let amount = 1_000_000_000_000;
        let issues: Vec<SignedEntry> = (0..clients * VOUCHERS_PER_CLIENT)
            .map(|i| {
                let issuer = &issuers[i % issuers.len()];
                let payload = Payload::IssueVoucher {
                    programme: programme.clone(),
                    subject: subject(&programme, u64::MAX - i as u64),
                    amount,
                    expires_at: TimestampMs(valid_until.0 - 1),
                    dedup: None,
                };
                sign(&chain_id, issuer, (i / issuers.len()) as u64, payload)
            })
            .collect();
        let setup = Self {
            chain_id,
            programme,
            valid_until,
            vendor: vendor.public(),
            vouchers: issues.iter().map(SignedEntry::id).collect(),
            issued_in_setup: amount * issues.len() as u64,
            issuers,
            redeemers,
        };
        Ok((
            setup,
            SetupEntries {
                admin: admin_entries,
                vouchers: issues,
            },
        ))
    }

    /// Client `c`'s entries, in the order it sends them: its authors take turns, issues and
    /// redemptions alternating, each author's sequence numbers consecutive.
    pub fn client_entries(&self, c: usize, count: usize) -> anyhow::Result<Vec<SignedEntry>> {
        let half = AUTHORS_PER_CLIENT / 2;
        let issuers = &self.issuers[c * half..(c + 1) * half];
        let redeemers = &self.redeemers[c * half..(c + 1) * half];
        // Setup issued vouchers round robin over all issuers from sequence 0.
        let setup_issues = self.vouchers.len();
        let mut issuer_seq: Vec<u64> = (0..half)
            .map(|i| {
                let global = c * half + i;
                let n = self.issuers.len();
                (setup_issues / n + usize::from(global < setup_issues % n)) as u64
            })
            .collect();
        let mut redeemer_seq = vec![0u64; half];
        let mut out = Vec::with_capacity(count);
        for k in 0..count {
            let a = (k / 2) % half;
            let entry = if k % 2 == 0 {
                let seq = issuer_seq[a];
                issuer_seq[a] += 1;
                let payload = Payload::IssueVoucher {
                    programme: self.programme.clone(),
                    subject: subject(&self.programme, ((c as u64) << 40) | k as u64),
                    amount: 1,
                    expires_at: TimestampMs(self.valid_until.0 - 1),
                    dedup: None,
                };
                sign(&self.chain_id, &issuers[a], seq, payload)
            } else {
                let seq = redeemer_seq[a];
                redeemer_seq[a] += 1;
                let payload = Payload::RedeemVoucher {
                    voucher: self.vouchers[(c + k) % self.vouchers.len()],
                    amount: 1,
                    vendor: self.vendor,
                    reference: name(format!("r{}-{a}-{seq}", c))?,
                };
                sign(&self.chain_id, &redeemers[a], seq, payload)
            };
            out.push(entry);
        }
        Ok(out)
    }

    /// `streams` streams of `per_stream` entries each ([`Setup::client_entries`]), signed on
    /// every core, each entry turned into what the caller keeps of it.
    pub fn sign_streams<T: Send>(
        &self,
        streams: usize,
        per_stream: usize,
        keep: impl Fn(SignedEntry) -> T + Sync,
    ) -> anyhow::Result<Vec<Vec<T>>> {
        eprintln!(
            "signing {} entries on {} cores",
            per_stream * streams,
            tally_state::cores()
        );
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..streams)
                .map(|c| {
                    let keep = &keep;
                    s.spawn(move || {
                        let entries = self.client_entries(c, per_stream)?;
                        anyhow::Ok(entries.into_iter().map(keep).collect::<Vec<T>>())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow!("a signing thread panicked"))?)
                .collect()
        })
    }

    /// Accepted issues plus accepted redemptions so far, from the programme's totals (each
    /// measured entry moves one unit).
    fn accepted(&self, client: &NodeClient) -> anyhow::Result<u64> {
        let p = client
            .get(&format!("/v1/programmes/{}", self.programme))?
            .ok_or_else(|| anyhow!("the benchmark's programme is gone"))?;
        let field = |f: &str| {
            p[f].as_u64()
                .ok_or_else(|| anyhow!("programme without {f}"))
        };
        Ok(field("issued")? - self.issued_in_setup + field("redeemed")?)
    }
}

/// A beneficiary token nobody holds: benchmark vouchers belong to no one.
fn subject(programme: &Name, i: u64) -> SubjectToken {
    SubjectToken(Domain::TestKey.hash(&[programme.as_str().as_bytes(), &i.to_le_bytes()]))
}

struct Sent {
    node: usize,
    at: Instant,
}

struct Commit {
    sent: Instant,
    committed: Instant,
}

/// State the clients and watchers share.
struct Shared {
    sent: Mutex<HashMap<EntryId, Sent>>,
    commits: Mutex<Vec<Commit>>,
    submitted: Mutex<Vec<Instant>>,
    refused: Mutex<BTreeMap<String, u64>>,
    backpressure: Mutex<BTreeMap<String, u64>>,
    stop_watchers: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// When a client stops sending: at the window's end, or earlier when told to.
#[derive(Clone, Copy)]
struct Until<'a> {
    end: Instant,
    stop: Option<&'a AtomicBool>,
}

impl Until<'_> {
    fn reached(&self) -> bool {
        Instant::now() >= self.end || self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// When a connection's entries are due and how many go in one request.
#[derive(Clone, Copy)]
struct Schedule {
    pace: Option<Duration>,
    batch: usize,
    start: Instant,
}

/// One client connection: sends its entries in order, at most `plan.batch` per request,
/// until the window ends or they run out. Paced, each request carries the entries due by then,
/// and an entry's latency counts from its due time, so a connection that falls behind its
/// schedule shows in the figures; at full speed, whatever the batch holds, from the first
/// attempt. Entries told "later" go first in the next request, with their first time kept:
/// the wait is part of their latency.
fn client_loop(
    shared: &Shared,
    node: usize,
    url: &str,
    entries: &[Prepared],
    schedule: Schedule,
    until: Until,
) {
    let Schedule { pace, batch, start } = schedule;
    let client = NodeClient::new(url);
    let mut next = 0;
    let mut later: VecDeque<(usize, Instant)> = VecDeque::new();
    while !until.reached() {
        let mut picked: Vec<(usize, Instant)> = Vec::with_capacity(batch);
        while picked.len() < batch {
            let Some(k) = later.pop_front() else { break };
            picked.push(k);
        }
        let now = Instant::now();
        while picked.len() < batch && next < entries.len() {
            let at = match pace {
                Some(interval) => start + interval * next as u32,
                None => now,
            };
            if at > now {
                break;
            }
            picked.push((next, at));
            next += 1;
        }
        if picked.is_empty() {
            let Some(interval) = pace.filter(|_| next < entries.len()) else {
                return;
            };
            let due = (start + interval * next as u32).min(until.end);
            std::thread::sleep(due.saturating_duration_since(now));
            continue;
        }
        {
            let mut sent = lock(&shared.sent);
            for &(k, at) in &picked {
                sent.insert(entries[k].id, Sent { node, at });
            }
        }
        let answers = if batch == 1 {
            let e = &entries[picked[0].0];
            client.submit_encoded(e.id, &e.bytes).map(|a| vec![a])
        } else {
            let body =
                tally_types::frame_entries(picked.iter().map(|&(k, _)| &entries[k].bytes[..]));
            client.submit_batch_encoded(&body, picked.len())
        };
        let Ok(answers) = answers else {
            let mut sent = lock(&shared.sent);
            for &(k, _) in &picked {
                sent.remove(&entries[k].id);
            }
            *lock(&shared.refused)
                .entry("unreachable".to_string())
                .or_default() += picked.len() as u64;
            drop(sent);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let mut wait = false;
        for ((k, at), answer) in picked.into_iter().zip(answers) {
            match answer {
                Submitted::Pending(_) => lock(&shared.submitted).push(at),
                Submitted::Refused { code, .. } => {
                    lock(&shared.sent).remove(&entries[k].id);
                    if retry_later(&code) {
                        *lock(&shared.backpressure).entry(code).or_default() += 1;
                        later.push_back((k, at));
                        wait = true;
                    } else {
                        *lock(&shared.refused).entry(code).or_default() += 1;
                    }
                }
            }
        }
        if wait {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub(super) fn height(client: &NodeClient) -> anyhow::Result<u64> {
    client
        .get("/v1/status")?
        .and_then(|s| s["height"].as_u64())
        .ok_or_else(|| anyhow!("status without a height"))
}

/// Follows one node's blocks and records when each entry sent to it became queryable there.
/// It asks for the next block itself rather than for the node's status: that read takes no
/// lock the node's consensus needs, so watching costs the node little.
fn watch(shared: &Shared, node: usize, url: &str, mut seen: u64) {
    let client = NodeClient::new(url);
    while !shared.stop_watchers.load(Ordering::Relaxed) {
        loop {
            let Ok(Some(block)) = client.get(&format!("/v1/blocks/{}", seen + 1)) else {
                break;
            };
            let now = Instant::now();
            seen += 1;
            let ids: Vec<EntryId> = block["entries"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["id"].as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let mut sent = lock(&shared.sent);
            let mut commits = Vec::new();
            for id in ids {
                if sent.get(&id).is_some_and(|s| s.node == node) {
                    if let Some(s) = sent.remove(&id) {
                        commits.push(Commit {
                            sent: s.at,
                            committed: now,
                        });
                    }
                }
            }
            drop(sent);
            lock(&shared.commits).extend(commits);
        }
        std::thread::sleep(POLL);
    }
}

fn verifications(nodes: &[NodeClient]) -> Option<Vec<u64>> {
    nodes
        .iter()
        .map(|c| {
            c.get("/v1/status")
                .ok()
                .flatten()
                .and_then(|s| s["signature_verifications"].as_u64())
        })
        .collect()
}

/// One run at `rate` entries/s (`None`: as fast as the nodes admit).
pub fn run(
    target: &Target,
    admin: &Keypair,
    plan: &Plan,
    rate: Option<f64>,
    label: &str,
) -> anyhow::Result<RunResult> {
    prepare(target, admin, plan, rate, label)?.drive(None)
}

/// A run whose setup is committed and whose entries are all signed: starting it costs the
/// nodes the load alone, so it can start at a chosen moment (as a validator restarts).
pub struct Ready<'a> {
    target: &'a Target,
    plan: &'a Plan,
    rate: Option<f64>,
    label: String,
    setup: Setup,
    streams: Vec<Vec<Prepared>>,
    entry_bytes_mean: f64,
}

/// Commits a run's setup and signs its entries.
pub fn prepare<'a>(
    target: &'a Target,
    admin: &Keypair,
    plan: &'a Plan,
    rate: Option<f64>,
    label: &str,
) -> anyhow::Result<Ready<'a>> {
    let clients = plan.clients as usize;
    let first = NodeClient::new(&target.nodes[0]);
    eprintln!("[{label}] setup: granting keys, opening a programme, issuing vouchers");
    let setup = Setup::new(&first, admin, clients)?;
    let seconds = (plan.warmup_s + plan.duration_s) as f64;
    let per_client = match rate {
        Some(r) => ((r * seconds * 1.05) as usize / clients).max(2),
        None => plan.entries_max / clients,
    };
    let per_client = per_client.min(plan.entries_max / clients).max(2);
    let prepared = setup.sign_streams(clients, per_client, |e| Prepared {
        id: e.id(),
        bytes: e.to_bytes(),
    })?;
    let entry_bytes_mean = prepared
        .iter()
        .flatten()
        .map(|p| p.bytes.len() as f64)
        .sum::<f64>()
        / (per_client * clients) as f64;
    Ok(Ready {
        target,
        plan,
        rate,
        label: label.to_string(),
        setup,
        streams: prepared,
        entry_bytes_mean,
    })
}

impl Ready<'_> {
    /// Offers the load until the window ends or `stop` is raised, then waits for what was sent
    /// in the window to commit.
    pub fn drive(self, stop: Option<&AtomicBool>) -> anyhow::Result<RunResult> {
        let Ready {
            target,
            plan,
            rate,
            label,
            setup,
            streams: prepared,
            entry_bytes_mean,
        } = self;
        let clients = prepared.len();
        let per_client = prepared.first().map_or(0, Vec::len);
        let first = NodeClient::new(&target.nodes[0]);
        let pace = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
        let shared = Shared {
            sent: Mutex::new(HashMap::new()),
            commits: Mutex::new(Vec::new()),
            submitted: Mutex::new(Vec::new()),
            refused: Mutex::new(BTreeMap::new()),
            backpressure: Mutex::new(BTreeMap::new()),
            stop_watchers: AtomicBool::new(false),
        };
        let node_clients: Vec<NodeClient> =
            target.nodes.iter().map(|u| NodeClient::new(u)).collect();
        let heads = node_clients
            .iter()
            .map(height)
            .collect::<anyhow::Result<Vec<u64>>>()?;
        let accepted_before = setup.accepted(&first)?;
        let offered = rate.map_or("as fast as admitted".to_string(), |r| {
            format!("{r:.0} entries/s")
        });
        eprintln!(
            "[{label}] {offered} offered from {clients} connections to {} node(s): \
             {} s warm-up, {} s measured",
            target.nodes.len(),
            plan.warmup_s,
            plan.duration_s
        );
        let start = Instant::now();
        let window_start = start + Duration::from_secs(plan.warmup_s);
        let end = window_start + Duration::from_secs(plan.duration_s);
        let mut cut = None;
        let checks_before = verifications(&node_clients);
        let (w0, w1, checks_after) = std::thread::scope(|s| {
            for (i, url) in target.nodes.iter().enumerate() {
                let (shared, seen) = (&shared, heads[i]);
                s.spawn(move || watch(shared, i, url, seen));
            }
            let senders: Vec<_> = prepared
                .iter()
                .enumerate()
                .map(|(c, entries)| {
                    let node = c % target.nodes.len();
                    let (shared, url) = (&shared, &target.nodes[node]);
                    s.spawn(move || {
                        client_loop(
                            shared,
                            node,
                            url,
                            entries,
                            Schedule {
                                pace,
                                batch: plan.batch as usize,
                                start,
                            },
                            Until { end, stop },
                        )
                    })
                })
                .collect();
            let now = Instant::now();
            if window_start > now {
                std::thread::sleep(window_start - now);
            }
            let at_window = Sample::take(&target.pids);
            for h in senders {
                let _ = h.join();
            }
            if Instant::now() < end {
                cut = Some(Instant::now());
            }
            let at_end = Sample::take(&target.pids);
            let drained_by = Instant::now() + DRAIN;
            while Instant::now() < drained_by
                && lock(&shared.sent).values().any(|s| s.at >= window_start)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let checks_after = verifications(&node_clients);
            shared.stop_watchers.store(true, Ordering::Relaxed);
            (at_window, at_end, checks_after)
        });
        let window_end = cut.unwrap_or(end);
        let stopped = stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let ran_out = cut.filter(|_| !stopped);
        let window_s = window_end.duration_since(window_start).as_secs_f64();
        let commits = shared
            .commits
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let in_window = |t: Instant| t >= window_start && t < window_end;
        let committed = commits.iter().filter(|c| in_window(c.committed)).count() as f64;
        let latencies: Vec<Duration> = commits
            .iter()
            .filter(|c| in_window(c.sent))
            .map(|c| c.committed - c.sent)
            .collect();
        let submitted = lock(&shared.submitted)
            .iter()
            .filter(|t| in_window(**t))
            .count() as f64;
        let uncommitted = lock(&shared.sent)
            .values()
            .filter(|s| in_window(s.at))
            .count() as u64;
        let accepted_total = setup.accepted(&first)? - accepted_before;
        let per_1k = |cpu: Option<f64>| {
            cpu.filter(|_| committed > 0.0)
                .map(|c| c / committed * 1000.0)
        };
        let verifications_per_entry_per_node = match (&checks_before, &checks_after) {
            (Some(a), Some(b)) if !commits.is_empty() => Some(
                b.iter()
                    .zip(a)
                    .map(|(b, a)| b.saturating_sub(*a) as f64)
                    .sum::<f64>()
                    / a.len() as f64
                    / commits.len() as f64,
            ),
            _ => None,
        };
        let result = RunResult {
            label: label.to_string(),
            offered_per_s: rate,
            submitted_per_s: submitted / window_s,
            committed_per_s: committed / window_s,
            window_s,
            latency_ms: stats::percentiles(latencies),
            uncommitted,
            backpressure: lock(&shared.backpressure).clone(),
            refused: lock(&shared.refused).clone(),
            committed_total: commits.len() as u64,
            accepted_total,
            verifications_per_entry_per_node,
            node_cpu_s_per_1k: per_1k(w1.node_cpu_s.zip(w0.node_cpu_s).map(|(b, a)| b - a)),
            generator_cpu_s_per_1k: per_1k(w1.own_cpu_s.zip(w0.own_cpu_s).map(|(b, a)| b - a)),
            entry_bytes_mean,
            note: ran_out.map(|_| {
                format!(
                    "used all {} pre-signed entries {window_s:.1} s into the window; \
                 raise --entries-max",
                    per_client * clients
                )
            }),
        };
        eprintln!("[{label}] {}", stats::one_line(&result));
        Ok(result)
    }
}

/// CPU counters read at the edges of the window.
struct Sample {
    node_cpu_s: Option<f64>,
    own_cpu_s: Option<f64>,
}

impl Sample {
    fn take(pids: &[u32]) -> Self {
        let node_cpu_s = if pids.is_empty() {
            None
        } else {
            pids.iter()
                .map(|p| stats::cpu_seconds(&p.to_string()))
                .sum::<Option<f64>>()
        };
        Self {
            node_cpu_s,
            own_cpu_s: stats::cpu_seconds("self"),
        }
    }
}
