//! Crash safety: a node SIGKILLed while it commits a steady stream of entries must, on restart
//! from the same data directory, still report every entry it had reported committed, at the same
//! height; the chain must go on; and `tally audit verify` must pass on the crashed directory and
//! on the final one.

mod common;

use common::{sign, Api, Devnet, CHAIN_ID};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_types::{Keypair, Name, Payload, SubjectToken, TimestampMs};

/// Entries each round tries to push through before the node is killed.
const ROUND_ENTRIES: u64 = 250;

/// What the submitting thread saw.
#[derive(Default)]
struct Seen {
    /// Entries the API reported committed, with their height, in the order seen.
    committed: Mutex<Vec<(String, u64)>>,
    /// Every entry the API admitted (202).
    admitted: Mutex<Vec<String>>,
    /// Entries admitted so far.
    submitted: AtomicU64,
    /// Set when the thread stops for good.
    done: AtomicBool,
    /// Something that must never happen (an unexpected refusal or rejection).
    anomaly: Mutex<Option<String>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn issue(key: &Keypair, seq: u64, n: u64) -> tally_types::SignedEntry {
    sign(
        key,
        CHAIN_ID,
        seq,
        Payload::IssueVoucher {
            programme: Name::new("crash-test").expect("name"),
            subject: SubjectToken::derive(b"crash-test-agency-secret-0123456", &n.to_le_bytes())
                .expect("token"),
            amount: 1,
            expires_at: TimestampMs(now_ms() + 7 * 86_400_000),
            dedup: None,
        },
    )
}

/// Submits `ROUND_ENTRIES` voucher issues in small batches, polling each until committed, until
/// the node stops answering (it was killed) or everything is committed.
fn submitter(api: Api, key: Keypair, first_seq: u64, first_n: u64, seen: Arc<Seen>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seq = first_seq;
    let mut outstanding: Vec<String> = Vec::new();
    let mut sent = 0;
    let anomaly = |m: String| {
        seen.anomaly.lock().expect("lock").get_or_insert(m);
    };
    'run: while Instant::now() < deadline {
        for _ in 0..8 {
            if sent >= ROUND_ENTRIES {
                break;
            }
            let e = issue(&key, seq, first_n + sent);
            match api.try_post("application/octet-stream", &e.to_bytes()) {
                Ok(out) if out.status == 202 => {
                    let id = e.id().to_hex();
                    outstanding.push(id.clone());
                    seen.admitted.lock().expect("lock").push(id);
                    seen.submitted.fetch_add(1, Ordering::SeqCst);
                    seq += 1;
                    sent += 1;
                }
                Ok(out) => {
                    anomaly(format!("submission refused: {} {}", out.status, out.json));
                    break 'run;
                }
                Err(_) => break 'run, // the node is gone
            }
        }
        let mut still = Vec::new();
        for id in outstanding.drain(..) {
            match api.try_get(&format!("/v1/entries/{id}")) {
                Ok(out) if out.status == 200 && out.json["status"] == "committed" => {
                    let h = out.json["height"].as_u64().unwrap_or(0);
                    seen.committed.lock().expect("lock").push((id, h));
                }
                Ok(out) if out.status == 200 && out.json["status"] == "pending" => still.push(id),
                Ok(out) => {
                    anomaly(format!("entry {id}: {} {}", out.status, out.json));
                    break 'run;
                }
                Err(_) => break 'run,
            }
        }
        outstanding = still;
        if sent >= ROUND_ENTRIES && outstanding.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen.done.store(true, Ordering::SeqCst);
}

/// How a round decides when to pull the plug.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Once this many entries of the round were reported committed.
    Committed(usize),
    /// This long after the stream started, whatever was committed.
    After(Duration),
}

#[test]
fn sigkill_while_committing_loses_nothing_reported_committed() {
    let mut net = Devnet::start();
    net.grant("issuer", "issuer");
    net.create_programme("crash-test", 1000000);

    // Every entry ever reported committed, with the height the API gave.
    let mut reported: BTreeMap<String, u64> = BTreeMap::new();
    let mut admitted_all: Vec<String> = Vec::new();
    let mut n = 0u64;
    let plan = [
        KillAt::Committed(10),
        KillAt::After(Duration::from_millis(150)),
        KillAt::Committed(90),
        KillAt::After(Duration::from_millis(40)),
        KillAt::Committed(180),
        KillAt::After(Duration::from_millis(260)),
    ];
    for (round, kill_at) in plan.into_iter().enumerate() {
        let api = net.api();
        let key = net.keypair("issuer");
        let first_seq = api.next_sequence(&key.public());
        let seen = Arc::new(Seen::default());
        let started = Instant::now();
        let thread = {
            let (api, seen) = (api.clone(), seen.clone());
            let first_n = n;
            std::thread::spawn(move || submitter(api, key, first_seq, first_n, seen))
        };
        n += ROUND_ENTRIES;

        // Wait for the moment to kill, bounded.
        let deadline = started + Duration::from_secs(30);
        loop {
            let committed = seen.committed.lock().expect("lock").len();
            let due = match kill_at {
                KillAt::Committed(k) => committed >= k,
                KillAt::After(d) => started.elapsed() >= d,
            };
            if due {
                break;
            }
            if seen.done.load(Ordering::SeqCst) {
                // Everything committed before a timed kill point (a fast machine), or the
                // stream hit an anomaly (reported below): kill now anyway.
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: kill point {kill_at:?} not reached in 30 s ({committed} committed)\n{}",
                net.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let height_before_kill = api
            .try_get("/v1/status")
            .ok()
            .map(|s| s.json["height"].clone());
        net.kill_node();
        thread.join().expect("submitter thread");
        if let Some(a) = seen.anomaly.lock().expect("lock").as_ref() {
            panic!("round {round}: {a}\n{}", net.log());
        }
        let committed = seen.committed.lock().expect("lock").clone();
        let admitted = seen.admitted.lock().expect("lock").clone();
        if let KillAt::Committed(k) = kill_at {
            assert!(committed.len() >= k, "round {round}: {}", committed.len());
        }
        eprintln!(
            "round {round}: killed at {kill_at:?} after {:?}: {} admitted, {} seen committed, head was {:?}",
            started.elapsed(),
            admitted.len(),
            committed.len(),
            height_before_kill
        );
        for (id, h) in &committed {
            assert!(
                reported.insert(id.clone(), *h).is_none(),
                "entry {id} reported twice"
            );
        }
        admitted_all.extend(admitted);
        let max_reported = reported.values().copied().max().unwrap_or(0);

        // The crashed directory verifies as it is, before any restart.
        let audit = net.audit_ok();
        assert!(
            audit["blocks"].as_u64().expect("blocks") >= max_reported,
            "round {round}: crashed directory holds fewer blocks than were reported: {audit}"
        );

        // Restart on the same directory: everything reported is still there, at the same height.
        net.start_node();
        let api = net.api();
        let status = api.status();
        let height = status["height"].as_u64().expect("height");
        assert!(
            height >= max_reported,
            "round {round}: restarted at height {height}, below reported {max_reported}"
        );
        assert_eq!(status["mempool_entries"], 0, "{status}");
        for (id, h) in &reported {
            let v = api
                .get(&format!("/v1/entries/{id}"))
                .unwrap_or_else(|| panic!("round {round}: committed entry {id} lost after crash"));
            assert_eq!(v["status"], "committed", "round {round}: {v}");
            assert_eq!(v["height"], *h, "round {round}: {id} moved: {v}");
        }
        // Entries admitted but never seen committed were either committed or lost with the
        // mempool: never half there. Committed may mean after the restart, one height above
        // it: a block the node proposed or locked on before the kill is kept in its safety
        // record and proposed again once it is back (the mempool is empty, so nothing else).
        for id in &admitted_all {
            if reported.contains_key(id) {
                continue;
            }
            if let Some(v) = api.get(&format!("/v1/entries/{id}")) {
                assert_eq!(v["status"], "committed", "round {round}: {v}");
                let h = v["height"].as_u64().expect("height");
                assert!(h <= height + 1, "round {round}: restarted at {height}: {v}");
                let block = api
                    .get(&format!("/v1/blocks/{h}"))
                    .unwrap_or_else(|| panic!("round {round}: block {h} of {v} is missing"));
                assert!(
                    block.to_string().contains(id.as_str()),
                    "round {round}: {v}"
                );
            }
        }
        // Heights are contiguous and each block is readable.
        for h in [1, height / 2, height] {
            if h > 0 {
                assert!(api.get(&format!("/v1/blocks/{h}")).is_some(), "block {h}");
            }
        }
    }
    assert!(
        reported.len() >= 200,
        "the stream committed only {} entries in all",
        reported.len()
    );

    // The chain continues: the CLI finds the right sequence number and commits.
    let out = net.signed(
        "issuer",
        &[
            "voucher",
            "issue",
            "--programme",
            "crash-test",
            "--subject",
            &"ab".repeat(32),
            "--amount",
            "5",
            "--expires",
            "+1d",
        ],
    );
    let last = net.committed(&out);
    let api = net.api();
    let last_height = api.wait_entry(&last, Duration::from_secs(20))["height"]
        .as_u64()
        .expect("height");
    assert!(last_height > reported.values().copied().max().unwrap_or(0));
    // An auditor may verify the directory while the node runs on it.
    net.audit_ok();
    let programme = api.get("/v1/programmes/crash-test").expect("programme");
    let final_height = api.height();
    assert_eq!(net.stop_node(), 0, "clean shutdown\n{}", net.log());
    let audit = net.audit_ok();
    assert_eq!(audit["blocks"], final_height, "{audit}");
    assert_eq!(audit["rejected_entries"], 0, "{audit}");
    // Every stream issue is worth 1, the last one 5.
    let stream_issues = programme["issued"].as_u64().expect("issued") - 5;
    assert!(stream_issues >= reported.len() as u64, "{programme}");
    // grant + programme + every stream issue that made it + the last one.
    assert_eq!(audit["entries"], 2 + stream_issues + 1, "{audit}");
}
