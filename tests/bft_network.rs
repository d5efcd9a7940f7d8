//! Four validators as four real `tally node run` processes on 127.0.0.1, each with its own
//! RocksDB directory, talking libp2p to each other: they commit one chain under a stream of
//! entries, a validator killed with SIGKILL catches up, a key outside genesis cannot connect,
//! a validator that equivocates (a harness speaking the wire protocol with that validator's key)
//! does not break agreement, `tally bench load` drives all four, and a validator whose blocks
//! and state files were damaged on disk repairs itself from the others.
//!
//! Every wait is bounded; every process is killed and reaped on drop.

mod common;

use common::{
    audit_verify, free_port, hold_connections, run_tally, sign, tally_command, wait_bounded, Api,
};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_types::{Keypair, Payload, PublicKey, Role};

const CHAIN: &str = "devnet-1";
const WAIT: Duration = Duration::from_secs(60);

/// A devnet written by `tally devnet --init-only`, whose nodes the test starts and kills one
/// by one.
struct Cluster {
    dir: tempfile::TempDir,
    base: u16,
    n: u16,
    children: Vec<Option<Child>>,
    starts: Vec<u32>,
}

/// A base port whose API and peer ports are free for `n` validators (`tally devnet` puts
/// validator i on base + i and base + 100 + i) and `observers` observers (j on base + 50 + j
/// and base + 150 + j). The range lies below the kernel's ephemeral ports, so no outgoing
/// connection (this test's nodes dialling, another test's clients) takes one of its ports
/// while its node is down or not started yet; and no two tests of this run share a range.
fn free_base(n: u16, observers: u16) -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_from.saturating_sub(200).max(10_200));
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut pick = u64::from(free_port()) * 7919 + u64::from(std::process::id());
    for _ in 0..200 {
        pick = pick
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = low + (pick >> 33) as u16 % (high - low);
        if taken.iter().any(|t| t.abs_diff(base) < 200) {
            continue;
        }
        let validators = (1..=n).flat_map(|i| [base + i, base + 100 + i]);
        let observers = (1..=observers).flat_map(|j| [base + 50 + j, base + 150 + j]);
        let ok = validators
            .chain(observers)
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if ok {
            taken.push(base);
            return base;
        }
    }
    panic!("no free loopback port range");
}

impl Cluster {
    fn create(n: u16) -> Self {
        Self::with_observers(n, 0)
    }

    /// `n` validators (1..=n) and `observers` observers (n+1..=n+observers).
    fn with_observers(n: u16, observers: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tally-bft-")
            .tempdir()
            .expect("tempdir");
        let base = free_base(n, observers);
        let out = run_tally(&[
            "devnet",
            "--init-only",
            "--validators",
            &n.to_string(),
            "--observers",
            &observers.to_string(),
            "--base-port",
            &base.to_string(),
            "--dir",
            dir.path().join("net").to_str().expect("utf8"),
        ]);
        assert_eq!(out.code, 0, "{out}");
        Cluster {
            dir,
            base,
            n,
            children: (0..n + observers).map(|_| None).collect(),
            starts: vec![0; (n + observers) as usize],
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    fn node_dir(&self, i: u16) -> PathBuf {
        if i > self.n {
            self.root().join(format!("observer-{}", i - self.n))
        } else {
            self.root().join(format!("node-{i}"))
        }
    }

    fn api(&self, i: u16) -> Api {
        let port = if i > self.n {
            self.base + 50 + (i - self.n)
        } else {
            self.base + i
        };
        Api::new(&format!("http://127.0.0.1:{port}"))
    }

    fn p2p(&self, i: u16) -> SocketAddr {
        let port = if i > self.n {
            self.base + 150 + (i - self.n)
        } else {
            self.base + 100 + i
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn node_key(&self, i: u16) -> Keypair {
        tally_node::keyfile::read_key_file(&self.node_dir(i).join("node.key")).expect("node key")
    }

    fn admin(&self) -> Keypair {
        tally_node::keyfile::read_key_file(&self.root().join("keys/wfp-admin.key"))
            .expect("admin key")
    }

    fn log(&self, i: u16) -> String {
        let path = self
            .node_dir(i)
            .join(format!("node-{}.log", self.starts[(i - 1) as usize]));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn start(&mut self, i: u16) {
        let idx = (i - 1) as usize;
        assert!(self.children[idx].is_none(), "node-{i} already running");
        self.starts[idx] += 1;
        let log = std::fs::File::create(
            self.node_dir(i)
                .join(format!("node-{}.log", self.starts[idx])),
        )
        .expect("log file");
        let child = tally_command()
            .args(["node", "run", "--config", "node.toml"])
            .current_dir(self.node_dir(i))
            .env("TALLY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tally node run");
        self.children[idx] = Some(child);
    }

    fn start_all(&mut self) {
        for i in 1..=self.children.len() as u16 {
            self.start(i);
        }
    }

    /// Starts every node and waits until each validator votes, connected to all the others.
    fn start_all_voting(&mut self) {
        self.start_all();
        for i in 1..=self.n {
            self.wait_voting(i, (self.n - 1) as usize);
        }
    }

    /// Waits until node `i` is connected to `peers` others and voting.
    fn wait_voting(&self, i: u16, peers: usize) {
        let api = self.api(i);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(out) = api.try_get("/v1/status") {
                let s = &out.json;
                let connected = s["network"]["connected_peers"]
                    .as_array()
                    .map_or(0, Vec::len);
                if s["consensus"]["voting"] == true && connected >= peers {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node-{i} not voting with {peers} peers within {WAIT:?}; log:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node `i`'s API answers (an observer never votes, so `wait_voting` does
    /// not apply to it).
    fn wait_api(&self, i: u16) {
        let api = self.api(i);
        let deadline = Instant::now() + WAIT;
        while !api.try_get("/v1/status").is_ok_and(|o| o.status == 200) {
            assert!(
                Instant::now() < deadline,
                "node-{i}'s API did not answer within {WAIT:?}; log:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self, i: u16) {
        if let Some(mut c) = self.children[(i - 1) as usize].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and a bounded wait; returns the exit code.
    fn stop(&mut self, i: u16) -> i32 {
        let Some(mut c) = self.children[(i - 1) as usize].take() else {
            return 0;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        match wait_bounded(&mut c, Duration::from_secs(20)) {
            Some(s) => s.code().unwrap_or(-1),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node-{i} did not stop within 20 s of SIGTERM");
            }
        }
    }

    /// Node `i`'s committed height; 0 while its API is not answering (a node just started).
    fn height(&self, i: u16) -> u64 {
        self.api(i)
            .try_get("/v1/status")
            .ok()
            .and_then(|o| o.json["height"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until every listed node has reached `height`.
    fn wait_height(&self, nodes: &[u16], height: u64) {
        let deadline = Instant::now() + WAIT;
        for &i in nodes {
            while self.height(i) < height {
                assert!(
                    Instant::now() < deadline,
                    "node-{i} stuck at {} below {height}; log:\n{}",
                    self.height(i),
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The block hash at each height 1..=to, as node `i` serves it.
    fn hashes(&self, i: u16, to: u64) -> Vec<Value> {
        let api = self.api(i);
        (1..=to)
            .map(|h| {
                api.get(&format!("/v1/blocks/{h}"))
                    .unwrap_or_else(|| panic!("node-{i} has no block {h}"))["hash"]
                    .clone()
            })
            .collect()
    }

    fn audit(&self, i: u16) -> Value {
        let out = audit_verify(
            &self.node_dir(i).join("data"),
            &self.root().join("genesis.toml"),
        );
        assert_eq!(out.code, 0, "audit of node-{i}: {out}");
        out.ok().clone()
    }
}

/// Lines of each node's log printed when a test fails.
const FAILED_LOG_LINES: usize = 60;

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The directory goes with the cluster: a failing test shows the end of every node's
        // log of its last run, so a rare failure can be read after the fact.
        if std::thread::panicking() {
            for i in 1..=self.n {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(FAILED_LOG_LINES)..];
                eprintln!(
                    "--- node-{i}, last {} lines ---\n{}",
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
    }
}

/// Grants a role to a fresh key: a small, always-valid admin entry.
fn grant(admin: &Keypair, sequence: u64, seed: u64) -> tally_types::SignedEntry {
    let key = Keypair::from_seed_for_tests(10_000 + seed).public();
    sign(
        admin,
        CHAIN,
        sequence,
        Payload::GrantRole {
            key,
            role: Role::Redeemer,
        },
    )
}

fn submit_ok(api: &Api, e: &tally_types::SignedEntry) -> String {
    let out = api.submit_bytes(e);
    assert_eq!(out.status, 202, "submit: {}", out.json);
    out.json["id"].as_str().expect("id").to_string()
}

fn assert_same_chain(c: &Cluster, nodes: &[u16]) -> u64 {
    let top = nodes.iter().map(|&i| c.height(i)).min().expect("nodes");
    assert!(
        top > 0,
        "no block to compare: a node is down or committed nothing"
    );
    let reference = c.hashes(nodes[0], top);
    for &i in &nodes[1..] {
        assert_eq!(
            c.hashes(i, top),
            reference,
            "node-{i} differs from node-{}",
            nodes[0]
        );
    }
    top
}

#[test]
fn four_validators_commit_one_chain_under_a_steady_stream_of_entries() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    let mut ids = Vec::new();
    // 60 entries from one author, sent round robin to all four validators: each relays to
    // the others, and whoever proposes orders them by sequence.
    for seq in 0..60u64 {
        let node = (seq % 4) as u16 + 1;
        ids.push(submit_ok(&c.api(node), &grant(&admin, seq, seq)));
        std::thread::sleep(Duration::from_millis(15));
    }
    for id in &ids {
        let v = c.api(1).wait_entry(id, WAIT);
        assert_eq!(v["status"], "committed", "{v}");
    }
    let top = c.height(1);
    c.wait_height(&[1, 2, 3, 4], top);
    assert_same_chain(&c, &[1, 2, 3, 4]);
    // Blocks were proposed by more than one validator.
    let proposers: std::collections::BTreeSet<String> = (1..=top)
        .map(|h| {
            c.api(2).get(&format!("/v1/blocks/{h}")).expect("block")["header"]["proposer"]
                .to_string()
        })
        .collect();
    assert!(
        proposers.len() > 1,
        "one proposer for every block: {proposers:?}"
    );
    for i in 1..=4 {
        assert_eq!(c.stop(i), 0, "node-{i} exit code; log:\n{}", c.log(i));
    }
    let heads: Vec<Value> = (1..=4).map(|i| c.audit(i)["head_hash"].clone()).collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
}

#[test]
fn a_validator_killed_mid_stream_catches_up_and_the_chain_stays_identical() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = Arc::new(c.admin());
    let apis: Vec<Api> = (1..=3).map(|i| c.api(i)).collect();
    let done = Arc::new(AtomicBool::new(false));
    // A steady stream to validators 1-3 while validator 4 dies and comes back.
    let feeder = {
        let (admin, done) = (admin.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut last = String::new();
            while !done.load(Ordering::SeqCst) && seq < 400 {
                last = submit_ok(&apis[(seq % 3) as usize], &grant(&admin, seq, seq));
                seq += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (seq, last)
        })
    };
    c.wait_height(&[1], 5);
    c.kill(4); // SIGKILL: no shutdown, mid-stream
    let at_kill = c.height(1);
    c.wait_height(&[1, 2, 3], at_kill + 5);
    c.start(4);
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::SeqCst);
    let (sent, last) = feeder.join().expect("feeder");
    assert!(sent > 20);
    let v = c.api(1).wait_entry(&last, WAIT);
    assert_eq!(v["status"], "committed", "{v}");
    let top = c.height(1);
    c.wait_height(&[2, 3, 4], top);
    let checked = assert_same_chain(&c, &[1, 2, 3, 4]);
    assert!(checked >= top);
    let status = c.api(4).status();
    assert!(
        status["consensus"]["synced_blocks"].as_u64().unwrap_or(0) > 0,
        "node-4 caught up without block sync? {status}"
    );
    // The restarted validator votes again: stop another, and 1, 3, 4 must still commit.
    c.stop(2);
    let before = c.height(1);
    submit_ok(&c.api(4), &grant(&admin, sent, 9_999));
    c.wait_height(&[1, 3, 4], before + 1);
    for i in [1, 3, 4] {
        assert_eq!(c.stop(i), 0);
    }
    let heads: Vec<Value> = [1, 3, 4]
        .iter()
        .map(|&i| c.audit(i)["head_hash"].clone())
        .collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
}

/// Runs `f` on a fresh tokio runtime (for the libp2p harness).
fn with_runtime<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

struct NoBlocks;
impl tally_network::BlockSource for NoBlocks {
    fn blocks_from(&self, _: u64, _: usize) -> Vec<tally_network::CertifiedBlock> {
        Vec::new()
    }
}

fn limits() -> tally_network::Limits {
    tally_network::Limits {
        request_bytes_max: 8 << 20,
        response_bytes_max: 16 << 20,
        inbound_queue_max: 4096,
        outbound_queue_max: 4096,
        connections_per_peer_max: 2,
        gate: tally_network::gate::GateLimits::default(),
    }
}

#[test]
fn a_key_outside_genesis_cannot_connect_or_inject_entries() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let stranger = Keypair::from_seed_for_tests(424_242);
    let admin = c.admin();
    let entry = grant(&admin, 0, 1);
    let target = c.node_key(1).public();
    let addr = c.p2p(1);
    with_runtime(async {
        let (tx, _rx) = std::sync::mpsc::sync_channel::<tally_network::Inbound>(64);
        let net = tally_network::start(
            tally_network::NetworkConfig {
                chain_id: tally_types::Name::new(CHAIN).expect("name"),
                listen: "127.0.0.1:0".parse().expect("addr"),
                dial: vec![tally_network::PeerAddress { key: target, addr }],
                allowed: vec![target],
                limits: limits(),
            },
            &stranger,
            Arc::new(NoBlocks),
            tx,
        )
        .await
        .expect("network");
        for _ in 0..20 {
            net.handle
                .send(target, tally_network::Request::Entries(vec![entry.clone()]));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        net.shutdown().await;
    });
    let status = c.api(1).status();
    assert!(
        status["network"]["dropped"]["refused_connections"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{status}"
    );
    let connected = status["network"]["connected_peers"].to_string();
    assert!(!connected.contains(&stranger.public().to_string()));
    // The refusal's log line names the key it proved and where it came from.
    let log = c.log(1);
    let line = log
        .lines()
        .find(|l| l.contains(&format!("key {}", stranger.public())))
        .unwrap_or_else(|| panic!("no log line names the stranger's key:\n{log}"));
    assert!(line.contains("from 127.0.0.1:"), "{line}");
    // Peers' connections are logged with their keys and addresses.
    let peer = c.node_key(2).public().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("peer connected") && l.contains(&peer) && l.contains("127.0.0.1:")),
        "{log}"
    );
    // The entry it tried to inject never reached any node.
    let id = entry.id().to_string();
    for i in 1..=4 {
        let out = c.api(i).try_get(&format!("/v1/entries/{id}")).expect("GET");
        assert_eq!(
            out.status, 404,
            "node-{i} knows the injected entry: {}",
            out.json
        );
    }
    // The network is unharmed.
    let before = c.height(1);
    submit_ok(&c.api(2), &entry);
    c.wait_height(&[1, 2, 3, 4], before + 1);
}

/// Validator 4 is a harness holding validator 4's key: it answers every proposal and vote it
/// sees with conflicting prevotes and precommits, different ones to different validators.
#[test]
fn an_equivocating_validator_does_not_break_agreement() {
    let mut c = Cluster::create(4);
    for i in 1..=3 {
        c.start(i);
    }
    let byzantine = c.node_key(4);
    let peers: Vec<(PublicKey, SocketAddr)> = (1..=3)
        .map(|i| (c.node_key(i).public(), c.p2p(i)))
        .collect();
    let listen = c.p2p(4);
    let stop = Arc::new(AtomicBool::new(false));
    let harness = {
        let stop = stop.clone();
        std::thread::spawn(move || run_equivocator(byzantine, peers, listen, stop))
    };
    for i in 1..=3 {
        c.wait_voting(i, 3);
    }
    let admin = c.admin();
    let mut last = String::new();
    for seq in 0..30u64 {
        last = submit_ok(&c.api((seq % 3) as u16 + 1), &grant(&admin, seq, seq));
        std::thread::sleep(Duration::from_millis(30));
    }
    let v = c.api(1).wait_entry(&last, WAIT);
    assert_eq!(v["status"], "committed", "{v}");
    let top = c.height(1);
    c.wait_height(&[1, 2, 3], top);
    assert_same_chain(&c, &[1, 2, 3]);
    stop.store(true, Ordering::SeqCst);
    let sent = harness.join().expect("harness");
    assert!(sent > 0, "the harness never equivocated");
    let evidence: u64 = (1..=3)
        .map(|i| {
            c.api(i).status()["consensus"]["evidence"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(
        evidence > 0,
        "no validator kept evidence of the double votes"
    );
    for i in 1..=3 {
        assert_eq!(c.stop(i), 0);
    }
    let heads: Vec<Value> = (1..=3).map(|i| c.audit(i)["head_hash"].clone()).collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
}

/// Speaks the wire protocol as validator 4 and double-votes at every height and round it
/// hears of. Returns how many conflicting votes it sent.
fn run_equivocator(
    key: Keypair,
    peers: Vec<(PublicKey, SocketAddr)>,
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
) -> u64 {
    use tally_consensus::{Message, Vote, VoteKind};
    use tally_network::{Inbound, Request};
    let chain = tally_types::Name::new(CHAIN).expect("name");
    with_runtime(async move {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Inbound>(4096);
        let net = tally_network::start(
            tally_network::NetworkConfig {
                chain_id: chain.clone(),
                listen,
                dial: peers
                    .iter()
                    .map(|(key, addr)| tally_network::PeerAddress {
                        key: *key,
                        addr: *addr,
                    })
                    .collect(),
                allowed: peers.iter().map(|(k, _)| *k).collect(),
                limits: limits(),
            },
            &key,
            Arc::new(NoBlocks),
            tx,
        )
        .await
        .expect("network");
        let mut sent = 0u64;
        let mut done = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            while let Ok(item) = rx.try_recv() {
                let Inbound::Request {
                    request: Request::Consensus { message, .. },
                    ..
                } = item
                else {
                    continue;
                };
                let (h, r) = (message.height(), message.round());
                let block = match message.as_ref() {
                    Message::Proposal(p) => Some(p.block_hash),
                    Message::Vote(v) => v.block,
                };
                if !done.insert((h, r, block)) {
                    continue;
                }
                let choices = [block, None, Some(tally_types::Hash([0xEE; 32]))];
                for kind in [VoteKind::Prevote, VoteKind::Precommit] {
                    for (i, (peer, _)) in peers.iter().enumerate() {
                        // Each validator hears two different votes in one slot (one of them,
                        // for validator 1, for the real block); each hears a different pair.
                        for choice in [choices[i], choices[(i + 1) % 3]] {
                            let vote = Vote::sign(&key, &chain, kind, h, r, choice);
                            net.handle.send(
                                *peer,
                                Request::Consensus {
                                    message: Box::new(Message::Vote(vote)),
                                    block: None,
                                },
                            );
                            sent += 1;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        net.shutdown().await;
        sent
    })
}

/// `tally status` against validator `i`: its exit code and what it printed on stderr.
fn tally_status(c: &Cluster, i: u16) -> (i32, String) {
    let out = run_tally(&["status", "--node", &c.api(i).base]);
    (out.code, out.stderr)
}

/// Waits until validator `i`'s `/readyz` answers `code`; returns its body.
fn wait_readyz(c: &Cluster, i: u16, code: u16) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = c.api(i).try_get("/readyz").expect("readyz answers");
        if out.status == code {
            return out.json;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {i} still {}: {}",
            out.status,
            out.json
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_of_four_down_stops_commits_until_one_returns() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    let first = submit_ok(&c.api(1), &grant(&admin, 0, 0));
    assert_eq!(c.api(1).wait_entry(&first, WAIT)["status"], "committed");
    wait_readyz(&c, 1, 200);
    assert_eq!(tally_status(&c, 1).0, 0, "ready, with every validator up");
    // f = 1: with two of four down, no quorum of three exists.
    c.stop(3);
    c.stop(4);
    let before = c.height(1);
    let stuck = submit_ok(&c.api(2), &grant(&admin, 1, 1));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.height(1), before, "committed without a quorum");
    assert_eq!(c.height(2), before, "committed without a quorum");
    // Each survivor says it is not ready, and why; `tally status` exits 1 with the reason.
    let not_ready = wait_readyz(&c, 1, 503);
    let peers = not_ready["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|check| check["name"] == "peers"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(peers["ok"], false, "{not_ready}");
    assert!(
        peers["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("2 of 4 validators")),
        "{peers}"
    );
    let (code, said) = tally_status(&c, 2);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("is not ready") && said.contains("peers"),
        "{said}"
    );
    // One returns: the pending entry commits with no manual step.
    c.start(3);
    let v = c.api(1).wait_entry(&stuck, WAIT);
    assert_eq!(v["status"], "committed", "{v}");
    c.wait_height(&[1, 2, 3], before + 1);
    assert_same_chain(&c, &[1, 2, 3]);
    wait_readyz(&c, 1, 200);
    assert_eq!(tally_status(&c, 1).0, 0, "ready again with three of four");
}

#[test]
fn an_observer_follows_verifies_and_serves_the_chain() {
    let mut c = Cluster::with_observers(4, 1);
    c.start_all_voting();
    let observer = 5;
    c.wait_api(observer);
    let status = c.api(observer).status();
    assert_eq!(status["consensus"]["role"], "observer", "{status}");
    let admin = c.admin();
    // Field sites talk to the observer: it relays entries to the validators.
    let mut last = String::new();
    for seq in 0..10u64 {
        last = submit_ok(&c.api(observer), &grant(&admin, seq, seq));
    }
    let v = c.api(observer).wait_entry(&last, WAIT);
    assert_eq!(v["status"], "committed", "{v}");
    let top = c.height(1);
    c.wait_height(&[observer], top);
    assert_same_chain(&c, &[1, observer]);
    assert!(
        c.api(observer).status()["consensus"]["synced_blocks"]
            .as_u64()
            .unwrap_or(0)
            >= top
    );
    for i in 1..=5 {
        assert_eq!(c.stop(i), 0);
    }
    assert_eq!(c.audit(observer)["head_hash"], c.audit(1)["head_hash"]);
}

/// A grant submitted at the sequence validator 1 says is next, submitted again at a later one
/// while the chain moves past it, until one commits (bounded by `WAIT`).
fn committed_after_restart(c: &Cluster, admin: &Keypair) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let next = c.api(1).next_sequence(&admin.public());
        let out = c.api(3).submit_bytes(&grant(admin, next, 77_777 + next));
        if out.status == 202 {
            let id = out.json["id"].as_str().expect("id").to_string();
            // In a block, committed or rejected by a rule. A rejection with no height is the
            // mempool giving the entry up because a block used its sequence number (a block
            // voted on before the power went, committed after the restart): the loop signs
            // again at the next number.
            let ordered = || {
                c.api(3)
                    .get(&format!("/v1/entries/{id}"))
                    .filter(|v| v["status"] == "committed" || v["height"].is_u64())
            };
            while Instant::now() < deadline {
                if let Some(v) = ordered() {
                    return v;
                }
                // The chain took the sequence: this entry, just now, or another one.
                if c.api(1).next_sequence(&admin.public()) > next {
                    if let Some(v) = ordered() {
                        return v;
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no grant committed within {WAIT:?} of the restart (last answer {}: {})",
            out.status,
            out.json
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_whole_network_killed_mid_stream_restarts_and_continues_one_chain() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    // Keep entries in flight so that validators are mid-round (some locked) when power goes.
    for seq in 0..40u64 {
        submit_ok(&c.api((seq % 4) as u16 + 1), &grant(&admin, seq, seq));
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 1..=4 {
        c.kill(i);
    }
    c.start_all_voting();
    // Entries lost from the mempools with the crash are simply not committed; the author
    // continues from what the chain says is next. A block the validators had voted on when
    // the power went may still commit after the restart and take that sequence first: then
    // the author reads the chain again and signs with the one after it.
    let v = committed_after_restart(&c, &admin);
    assert_eq!(v["status"], "committed", "{v}");
    let top = c.height(3);
    c.wait_height(&[1, 2, 3, 4], top);
    assert_same_chain(&c, &[1, 2, 3, 4]);
    for i in 1..=4 {
        assert_eq!(c.stop(i), 0);
    }
    let heads: Vec<Value> = (1..=4).map(|i| c.audit(i)["head_hash"].clone()).collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
}

#[test]
fn the_load_generator_drives_four_validators_and_each_checks_an_entry_once() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let results = c.dir.path().join("results");
    let mut args: Vec<String> = ["bench", "load", "--admin-key"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(c.root().join("keys/wfp-admin.key").display().to_string());
    for i in 1..=4 {
        args.extend(["--node".to_string(), c.api(i).base.clone()]);
    }
    args.extend(
        [
            "--rate",
            "400",
            "--clients",
            "4",
            "--warmup-s",
            "1",
            "--duration-s",
            "4",
            "--out",
        ]
        .map(String::from),
    );
    args.push(results.display().to_string());
    let out = run_tally(&args);
    assert_eq!(out.code, 0, "{out}");
    let file = std::fs::read_dir(&results)
        .expect("results directory")
        .flatten()
        .next()
        .expect("one results file")
        .path();
    let report: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("results")).expect("JSON");
    assert!(report["machine"]["cores"].as_u64() >= Some(1), "{report}");
    assert!(report["limits"]["batch_verify_per_s"].as_f64() > Some(0.0));
    let run = &report["runs"][0];
    let committed = run["committed_total"].as_u64().expect("committed_total");
    // 400/s over 5 s: most of the ~2,000 entries commit; every one the rules accept.
    assert!(committed > 1_000, "{run}");
    assert_eq!(run["accepted_total"], run["committed_total"], "{run}");
    assert_eq!(run["refused"], serde_json::json!({}), "{run}");
    assert_eq!(run["uncommitted"], 0, "{run}");
    assert!(run["latency_ms"]["samples"].as_u64() > Some(500), "{run}");
    assert!(run["latency_ms"]["p50"].as_f64() > Some(0.0), "{run}");
    // An entry is checked on admission (from the API or a peer's relay) and not again when a
    // peer's proposal carries it; the votes of each block add a little. Checking every entry
    // twice would put this above 2.
    let checks = run["verifications_per_entry_per_node"]
        .as_f64()
        .expect("verification counts");
    assert!(
        (0.9..1.7).contains(&checks),
        "{checks} checks per entry per node"
    );
    assert_same_chain(&c, &[1, 2, 3, 4]);
    for i in 1..=4 {
        assert_eq!(c.stop(i), 0, "node-{i} exit code; log:\n{}", c.log(i));
    }
}

/// Strangers hold idle connections on every validator's peer port (100 each, reopened as they
/// close, from the validators' own address) while two validators restart: no fixed number of
/// waiting handshakes may let them keep the validators out. They must rejoin within seconds,
/// and the chain go on.
#[test]
fn validators_restarted_while_strangers_hold_every_peer_port_rejoin_within_seconds() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    submit_ok(&c.api(1), &grant(&admin, 0, 0));
    c.wait_height(&[1, 2, 3, 4], 1);
    assert_eq!(c.stop(3), 0);
    assert_eq!(c.stop(4), 0);

    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (1..=4)
        .map(|i| {
            let (to, stop) = (c.p2p(i), stop.clone());
            std::thread::spawn(move || hold_connections(to, 100, 200, b"", None, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    let restarted = Instant::now();
    c.start(3);
    c.start(4);
    c.wait_voting(3, 3);
    c.wait_voting(4, 3);
    let rejoined = restarted.elapsed();
    eprintln!("the restarted validators rejoined in {rejoined:?}");
    let id = submit_ok(&c.api(4), &grant(&admin, 1, 1));
    for i in 1..=4 {
        let v = c.api(i).wait_entry(&id, WAIT);
        assert_eq!(v["status"], "committed", "node-{i}: {v}");
    }
    let made_room: u64 = (1..=4)
        .map(|i| {
            c.api(i).status()["network"]["dropped"]["handshakes_evicted"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().expect("flood thread");
    }
    assert!(
        rejoined < Duration::from_secs(10),
        "the restarted validators took {rejoined:?} to rejoin under the flood"
    );
    assert!(
        made_room > 0,
        "the strangers' connections were never made room for"
    );
    assert_same_chain(&c, &[1, 2, 3, 4]);
}

/// The table files of each column family in a stopped node's data directory, after writing
/// every memtable out, so that what the node committed is in them.
fn table_files(data: &std::path::Path) -> Vec<(String, PathBuf)> {
    tally_storage::Store::open(data)
        .and_then(|s| s.compact())
        .expect("open and compact the stopped node's directory");
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, data).expect("column families");
    let db = rocksdb::DB::open_cf_for_read_only(&opts, data, &names, false).expect("open");
    db.live_files()
        .expect("live files")
        .into_iter()
        .map(|f| {
            let name = f.name.trim_start_matches('/').to_string();
            (f.column_family_name, data.join(name))
        })
        .collect()
}

/// Flips bytes inside the first data block of every table file of column family `cf`: a
/// disk that returns other bytes than were written, which RocksDB's block checksums see.
fn damage(data: &std::path::Path, cf: &str) -> usize {
    let files: Vec<PathBuf> = table_files(data)
        .into_iter()
        .filter(|(name, _)| name == cf)
        .map(|(_, path)| path)
        .collect();
    for path in &files {
        let mut bytes = std::fs::read(path).expect("read table file");
        for b in &mut bytes[40..48] {
            *b ^= 0x5a;
        }
        std::fs::write(path, bytes).expect("write table file");
    }
    files.len()
}

/// Waits until node `i` has exited by itself; its exit code.
fn wait_exit(c: &mut Cluster, i: u16, within: Duration) -> i32 {
    let child = c.children[(i - 1) as usize].as_mut().expect("node running");
    let status = wait_bounded(child, within)
        .unwrap_or_else(|| panic!("node-{i} still running after {within:?}"));
    c.children[(i - 1) as usize] = None;
    status.code().unwrap_or(-1)
}

/// The directories a repair set aside beside node `i`'s data directory.
fn set_aside(c: &Cluster, i: u16) -> Vec<PathBuf> {
    std::fs::read_dir(c.node_dir(i))
        .expect("node dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("data.damaged-"))
        })
        .collect()
}

#[test]
fn damaged_blocks_and_state_files_are_found_and_repaired_from_the_other_validators_and_a_reset_keeps_the_safety_record(
) {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    let mut seq = 0u64;
    let mut commit_some = |c: &Cluster, n: u64| {
        let mut last = String::new();
        for _ in 0..n {
            last = submit_ok(&c.api(1), &grant(&admin, seq, seq));
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        let v = c.api(1).wait_entry(&last, WAIT);
        assert_eq!(v["status"], "committed", "{v}");
    };
    commit_some(&c, 40);
    c.wait_height(&[4], c.height(1));

    // 1. Found at start: every blocks file and every state file of a stopped validator.
    assert_eq!(c.stop(4), 0);
    let data = c.node_dir(4).join("data");
    assert!(damage(&data, "blocks") > 0, "no blocks file");
    assert!(damage(&data, "state") > 0, "no state file");
    c.start(4);
    c.wait_voting(4, 3);
    let log = c.log(4);
    assert!(
        log.contains("the data directory is damaged; setting it aside"),
        "{log}"
    );
    assert_eq!(set_aside(&c, 4).len(), 1);
    commit_some(&c, 10);
    let top = c.height(1);
    c.wait_height(&[4], top);
    assert_same_chain(&c, &[1, 4]);
    let status = c.api(4).status();
    assert!(
        status["consensus"]["synced_blocks"].as_u64().unwrap_or(0) + 10 >= top,
        "node-4 did not fetch the chain again: {status}"
    );

    // 2. Found by the scrub while running: the start-up check of recent blocks is off, so
    // only the scrub reads old history. The node notes the damage and stops; its next start
    // repairs it, as a service manager restarting it would.
    assert_eq!(c.stop(4), 0);
    let config = c.node_dir(4).join("node.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = if text.contains("[storage]") {
        text.replace("[storage]", "[storage]\ncheck_recent_blocks = 0")
    } else {
        format!("{text}\n[storage]\ncheck_recent_blocks = 0\n")
    };
    std::fs::write(&config, text).expect("config");
    assert!(damage(&data, "blocks") > 0, "no blocks file");
    c.start(4);
    let code = wait_exit(&mut c, 4, WAIT);
    assert_ne!(code, 0, "node-4 ran on with damaged history");
    let log = c.log(4);
    assert!(log.contains("the scrub found damaged history"), "{log}");
    // It repairs itself once: the first repair's directory, still there, stops a second.
    c.start(4);
    let code = wait_exit(&mut c, 4, WAIT);
    assert_ne!(code, 0);
    let log = c.log(4);
    assert!(log.contains("repaired its directory before"), "{log}");
    for earlier in set_aside(&c, 4) {
        std::fs::remove_dir_all(earlier).expect("delete the first repair's directory");
    }
    c.start(4);
    c.wait_voting(4, 3);
    assert_eq!(set_aside(&c, 4).len(), 1);
    commit_some(&c, 10);
    let top = c.height(1);
    c.wait_height(&[4], top);
    assert_same_chain(&c, &[1, 2, 3, 4]);

    // 3. The operator's resync: refused while the node runs, done on a stopped one.
    let reset = |c: &Cluster| {
        run_tally(&[
            "node",
            "reset",
            "--config",
            c.node_dir(4).join("node.toml").to_str().expect("utf8"),
        ])
    };
    let out = reset(&c);
    assert_ne!(out.code, 0, "a running node's directory was reset: {out}");
    assert_eq!(set_aside(&c, 4).len(), 1);
    assert_eq!(c.stop(4), 0);
    let out = reset(&c);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("was moved to"), "{out}");
    assert_eq!(set_aside(&c, 4).len(), 2);
    c.start(4);
    c.wait_voting(4, 3);
    commit_some(&c, 10);
    let top = c.height(1);
    c.wait_height(&[4], top);
    assert_same_chain(&c, &[1, 2, 3, 4]);

    // Its history passes the auditor's check, and it signed nothing twice: the others kept
    // no evidence against it.
    for i in 1..=4 {
        assert_eq!(c.stop(i), 0, "node-{i}; log:\n{}", c.log(i));
    }
    let heads: Vec<Value> = (1..=4).map(|i| c.audit(i)["head_hash"].clone()).collect();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    for i in 1..=3 {
        let evidence = tally_storage::Store::open_read_only(&c.node_dir(i).join("data"))
            .and_then(|s| s.evidence())
            .expect("evidence");
        assert!(
            evidence.is_empty(),
            "node-{i} holds evidence of equivocation"
        );
    }
}

#[test]
fn the_only_validator_with_damaged_files_refuses_to_start_and_says_to_restore_a_backup() {
    let mut c = Cluster::create(1);
    c.start(1);
    c.wait_api(1);
    let admin = c.admin();
    let mut last = String::new();
    for seq in 0..10u64 {
        last = submit_ok(&c.api(1), &grant(&admin, seq, seq));
    }
    let v = c.api(1).wait_entry(&last, WAIT);
    assert_eq!(v["status"], "committed", "{v}");
    assert_eq!(c.stop(1), 0);
    let data = c.node_dir(1).join("data");
    assert!(damage(&data, "state") > 0, "no state file");
    c.start(1);
    let code = wait_exit(&mut c, 1, WAIT);
    assert_ne!(code, 0, "it started on a damaged state");
    let log = c.log(1);
    assert!(
        log.contains("No other validator can give this node the chain again")
            && log.contains("from a backup"),
        "{log}"
    );
    assert!(set_aside(&c, 1).is_empty(), "its only copy was moved");
    let out = run_tally(&[
        "node",
        "reset",
        "--config",
        c.node_dir(1).join("node.toml").to_str().expect("utf8"),
    ]);
    assert_ne!(out.code, 0, "the only copy was reset: {out}");
    assert!(set_aside(&c, 1).is_empty());
}

/// A reconnect flood on every validator's peer port, from the validators' own address:
/// connections that send garbage and close, as fast as four threads can open them, for 12 s.
/// A validator restarted during it rejoins within seconds and the chain goes on; every
/// connection is counted once; and each node's log grows by a few summary lines, not a line
/// per connection (issue #25 measured 530,000 lines, 61.5 MB, over four nodes in a 75 s
/// flood before the summaries).
#[test]
fn a_reconnect_flood_on_the_peer_ports_is_counted_in_full_and_logged_in_summary() {
    const FLOOD: Duration = Duration::from_secs(12);
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    submit_ok(&c.api(1), &grant(&admin, 0, 0));
    c.wait_height(&[1, 2, 3, 4], 1);
    let refused_before: Vec<u64> = (1..=3).map(|i| refused_connections(&c, i)).collect();
    let logs_before: Vec<usize> = (1..=4).map(|i| c.log(i).len()).collect();

    let ports: Vec<SocketAddr> = (1..=4).map(|i| c.p2p(i)).collect();
    let (opened, opened_to_4): (u64, u64) = std::thread::scope(|s| {
        let floods: Vec<_> = ports
            .iter()
            .map(|&to| {
                s.spawn(move || {
                    use std::io::Write;
                    let until = Instant::now() + FLOOD;
                    let mut opened = 0u64;
                    while Instant::now() < until {
                        if let Ok(mut conn) =
                            std::net::TcpStream::connect_timeout(&to, Duration::from_millis(500))
                        {
                            opened += 1;
                            let _ = conn.write_all(b"GET / HTTP/1.1\r\n\r\nnot a handshake");
                        }
                    }
                    opened
                })
            })
            .collect();
        // A validator restarted meanwhile rejoins, and the chain goes on with all four.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(c.stop(4), 0);
        let restarted = Instant::now();
        c.start(4);
        c.wait_voting(4, 3);
        let rejoined = restarted.elapsed();
        eprintln!("validator 4 voting with its 3 peers {rejoined:?} after its restart");
        assert!(
            rejoined < Duration::from_secs(20),
            "rejoined after {rejoined:?}"
        );
        let before = c.height(1);
        submit_ok(&c.api(2), &grant(&admin, 1, 1));
        c.wait_height(&[1, 2, 3, 4], before + 1);
        let opened: Vec<u64> = floods
            .into_iter()
            .map(|f| f.join().expect("flood thread"))
            .collect();
        (opened.iter().sum(), opened[3])
    });
    // The gate sees the last connections close a moment later: wait until the counts settle.
    // Validator 4's counters restarted with it: the other three are counted.
    let counted = || -> u64 {
        (1..=3)
            .map(|i| refused_connections(&c, i) - refused_before[i as usize - 1])
            .sum()
    };
    let mut refused = counted();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = counted();
        if now == refused {
            break;
        }
        refused = now;
    }
    let grown: Vec<usize> = (1..=4)
        .map(|i| c.log(i).len() - logs_before[i as usize - 1])
        .collect();
    eprintln!(
        "{opened} connections opened in {} s, {refused} refused and counted; log growth per node: {grown:?} bytes",
        FLOOD.as_secs()
    );
    assert!(opened > 1_000, "only {opened} connections opened");
    let opened = opened - opened_to_4;
    // Each connection is counted once, whether it failed its handshake or was evicted to make
    // room for a newer one (an evicted connection whose handshake also failed was once
    // counted twice, which put this 20 % over); the restarted validator's own connections cut
    // by its stop or crowded out are counted too. A connection the client saw open may never
    // have been accepted, when the listen queue overflowed on a loaded machine.
    assert!(
        refused <= opened + 20 && refused * 10 >= opened * 9,
        "{refused} refusals counted for {opened} connections"
    );
    for (i, bytes) in grown.iter().enumerate() {
        assert!(
            *bytes < 32 * 1024,
            "node-{} logged {bytes} bytes for a {} s flood:\n{}",
            i + 1,
            FLOOD.as_secs(),
            &c.log(i as u16 + 1)[logs_before[i]..]
        );
    }
}

fn refused_connections(c: &Cluster, i: u16) -> u64 {
    c.api(i).status()["network"]["dropped"]["refused_connections"]
        .as_u64()
        .expect("refused_connections")
}

/// A running validator writes a backup without stopping; the backup passes the audit; after
/// more blocks the validator is stopped and restored from it, keeps what it signed since, and
/// rejoins: it fetches the newer blocks and votes again on one chain. A backup of another chain
/// is refused, changing nothing.
#[test]
fn a_backup_of_a_running_validator_audits_restores_and_rejoins_and_another_chains_is_refused() {
    let mut c = Cluster::create(4);
    c.start_all_voting();
    let admin = c.admin();
    let first = submit_ok(&c.api(1), &grant(&admin, 0, 0));
    assert_eq!(c.api(1).wait_entry(&first, WAIT)["status"], "committed");

    let out = run_tally(&["node", "backup", "--json", "--node", &c.api(1).base]);
    assert_eq!(out.code, 0, "{out}");
    let backup = PathBuf::from(out.json["path"].as_str().expect("path"));
    let backed_up = out.json["height"].as_u64().expect("height");
    assert!(backed_up >= 1, "{out}");
    assert!(backup.starts_with(c.node_dir(1).join("backups")), "{out}");
    let genesis = c.root().join("genesis.toml");
    let audit = audit_verify(&backup, &genesis);
    assert_eq!(audit.code, 0, "{audit}");
    assert_eq!(audit.json["blocks"], backed_up, "{audit}");

    // The chain goes on past the backup; then validator 1 is lost and restored from it.
    for k in 1..4 {
        let id = submit_ok(&c.api(2), &grant(&admin, k, k));
        assert_eq!(c.api(2).wait_entry(&id, WAIT)["status"], "committed");
    }
    let before = c.height(2);
    assert!(before > backed_up);
    assert_eq!(c.stop(1), 0);
    let config = c.node_dir(1).join("node.toml").display().to_string();
    let from = backup.display().to_string();
    let out = run_tally(&["node", "restore", "--config", &config, "--from", &from]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("replaced is at"), "{out}");
    assert_eq!(
        audit_verify(&c.node_dir(1).join("data"), &genesis).json["blocks"],
        backed_up,
        "the restored directory holds the backup's chain"
    );
    c.start(1);
    c.wait_voting(1, 3);
    // It kept the safety record it had signed after the backup, not the backup's older one.
    assert!(
        c.log(1).contains("safety record is ahead of its chain"),
        "{}",
        c.log(1)
    );
    let id = submit_ok(&c.api(1), &grant(&admin, 4, 4));
    assert_eq!(c.api(1).wait_entry(&id, WAIT)["status"], "committed");
    c.wait_height(&[1, 2, 3, 4], before + 1);
    assert_same_chain(&c, &[1, 2, 3, 4]);

    // A backup of another chain (another genesis) is refused before anything is touched.
    let text = std::fs::read_to_string(&genesis).expect("genesis");
    let mut other: tally_types::Genesis = toml::from_str(&text).expect("genesis parses");
    other.chain_id = tally_types::Name::new("another-chain").expect("name");
    let elsewhere = c.dir.path().join("another-chain");
    tally_storage::Store::open(&elsewhere)
        .expect("open")
        .init_genesis(&other)
        .expect("genesis");
    assert_eq!(c.stop(2), 0);
    let listing = |dir: &std::path::Path| -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| {
                let len = e.metadata().map_or(0, |m| m.len());
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        files.sort();
        files
    };
    let (data, node_dir) = (c.node_dir(2).join("data"), c.node_dir(2));
    let (files_before, siblings_before) = (listing(&data), listing(&node_dir));
    let config = node_dir.join("node.toml").display().to_string();
    let out = run_tally(&[
        "node",
        "restore",
        "--config",
        &config,
        "--from",
        &elsewhere.display().to_string(),
    ]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("is of chain another-chain"), "{out}");
    assert_eq!(listing(&data), files_before, "node-2's data changed");
    assert_eq!(
        listing(&node_dir),
        siblings_before,
        "something was left beside it"
    );
    // A missing data directory is not restored into without being told the record is lost.
    let moved = c.dir.path().join("node-2-data");
    std::fs::rename(&data, &moved).expect("move");
    let out = run_tally(&["node", "restore", "--config", &config, "--from", &from]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("--without-old-directory"), "{out}");
    assert!(!data.exists());
    std::fs::rename(&moved, &data).expect("move back");
    c.start(2);
    c.wait_voting(2, 3);
}
