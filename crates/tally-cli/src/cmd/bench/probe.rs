//! The machine's limit, measured in the same run as the ledger: how many ed25519 signatures
//! all its cores check per second, one at a time (strict, as the ledger checks them) and in
//! batches. Absolute rates drift on shared machines; a ledger figure means something only
//! beside this one.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tally_types::{Domain, Keypair, PublicKey, Signature};

/// Signatures in one batch of the batch-verify measurement: the size where batching's gain
/// has levelled off (see the criterion benchmark `ed25519/batch`).
pub const BATCH: usize = 64;

/// The signature limit of this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Cores the measurement ran on (one thread each).
    pub cores: usize,
    /// Strict single verifications per second, all cores together.
    pub verify_strict_per_s: f64,
    /// Signatures per second checked in batches of [`BATCH`], all cores together.
    pub batch_verify_per_s: f64,
    /// Seconds each rate was measured for.
    pub measured_s: f64,
}

struct Signed {
    keys: Vec<PublicKey>,
    hashes: Vec<tally_types::Hash>,
    signatures: Vec<Signature>,
}

fn signed(n: usize) -> Signed {
    let mut s = Signed {
        keys: Vec::with_capacity(n),
        hashes: Vec::with_capacity(n),
        signatures: Vec::with_capacity(n),
    };
    for i in 0..n as u64 {
        let k = Keypair::from_seed_for_tests(10_000 + i);
        let h = Domain::EntryId.hash(&[&i.to_le_bytes()]);
        s.signatures.push(k.sign_hash(Domain::EntrySignature, &h));
        s.keys.push(k.public());
        s.hashes.push(h);
    }
    s
}

/// Runs `work` on every core for `duration`; `work` returns how many signatures it checked.
fn on_all_cores(cores: usize, duration: Duration, work: impl Fn() -> u64 + Sync) -> f64 {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    done.fetch_add(work(), Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Measures both rates for `duration` each.
pub fn measure(duration: Duration) -> anyhow::Result<Limits> {
    let cores = tally_state::cores();
    let s = signed(BATCH);
    let strict = on_all_cores(cores, duration, || {
        let mut n = 0;
        for ((k, h), sig) in s.keys.iter().zip(&s.hashes).zip(&s.signatures) {
            if k.verify_hash(Domain::EntrySignature, h, sig).is_ok() {
                n += 1;
            }
        }
        n
    });
    let messages: Vec<Vec<u8>> = s
        .hashes
        .iter()
        .map(|h| [Domain::EntrySignature.tag(), h.as_bytes()].concat())
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<ed25519_dalek::Signature> = s
        .signatures
        .iter()
        .map(|sig| ed25519_dalek::Signature::from_bytes(&sig.0))
        .collect();
    let keys = s
        .keys
        .iter()
        .map(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.0))
        .collect::<Result<Vec<_>, _>>()?;
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys)?;
    let batch = on_all_cores(cores, duration, || {
        match ed25519_dalek::verify_batch(&message_refs, &signatures, &keys) {
            Ok(()) => BATCH as u64,
            Err(_) => 0,
        }
    });
    Ok(Limits {
        cores,
        verify_strict_per_s: strict,
        batch_verify_per_s: batch,
        measured_s: duration.as_secs_f64(),
    })
}
