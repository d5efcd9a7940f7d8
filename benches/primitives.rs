//! Micro-benchmarks of the primitives the ledger is bound by: ed25519 signing, strict and batch
//! verification, SHA-256, the entry codec, the Merkle root of a block's entries, executing a
//! block of redemptions and committing it to RocksDB in one synced write batch.
//!
//! Absolute times on shared machines drift, so each limit the ledger leans on is measured in the
//! same run and labelled "hardware limit": strict verification and SHA-256 per core, and a synced
//! write of as many bytes as a block commit writes.

// `criterion_group!` defines a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{SignatureError, VerifyingKey};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::io::Write;
use tally_state::{
    build_block, execute_block, execute_verified, BlockContext, BuiltBlock, State, Tip,
};
use tally_storage::{CommitBatch, Head, Store};
use tally_types::{
    merkle, Block, CommitCertificate, Domain, EntryBody, Genesis, Hash, Keypair, Name, Payload,
    PublicKey, Role, Signature, SignatureCheck, SignedEntry, SubjectToken, TimestampMs,
    VerifiedEntry,
};

fn name(s: &str) -> Name {
    Name::new(s).expect("valid benchmark name")
}

fn sign(k: &Keypair, seq: u64, payload: Payload) -> SignedEntry {
    EntryBody {
        chain_id: name("bench"),
        author: k.public(),
        sequence: seq,
        payload,
    }
    .sign(k)
}

/// `n` redemptions by distinct authors, signed as wallets sign them. They redeem made-up
/// vouchers: hashing and signature checks only need realistic bytes, not a chain that accepts
/// them.
fn redemption_entries(n: usize) -> Vec<SignedEntry> {
    let vendor = Keypair::from_seed_for_tests(3).public();
    (0..n as u64)
        .map(|i| {
            let payload = Payload::RedeemVoucher {
                voucher: Domain::EntryId.hash(&[&i.to_le_bytes()]),
                amount: 2_500,
                vendor,
                reference: name("till-1"),
            };
            sign(&Keypair::from_seed_for_tests(1000 + i), 0, payload)
        })
        .collect()
}

struct Setup {
    genesis: Genesis,
    validator: Keypair,
    /// The blocks before the redemptions, with their certificates, for a fresh store to commit.
    prefix: Vec<(BuiltBlock, CommitCertificate)>,
    state: State,
    tip: Tip,
    ctx: BlockContext,
    redemptions: Vec<SignedEntry>,
}

/// The single validator's certificate for `block`.
/// Entries checked as a mempool checks them on admission.
fn verified(entries: Vec<SignedEntry>) -> Vec<VerifiedEntry> {
    entries
        .into_iter()
        .map(|e| VerifiedEntry::verify(e).expect("signed"))
        .collect()
}

fn certify(validator: &Keypair, block: &Block) -> CommitCertificate {
    CommitCertificate::signed_by(&block.header, 0, [validator])
}

/// A chain where one voucher per redeemer key is issued, then a block of `n` redemptions.
fn setup(n: usize) -> Setup {
    let admin = Keypair::from_seed_for_tests(1);
    let issuer = Keypair::from_seed_for_tests(2);
    let vendor = Keypair::from_seed_for_tests(3);
    let validator = Keypair::from_seed_for_tests(9);
    let redeemers: Vec<Keypair> = (0..n as u64)
        .map(|i| Keypair::from_seed_for_tests(1000 + i))
        .collect();
    let genesis = Genesis::one_agency_for_tests("bench", admin.public(), validator.public());
    let mut state = State::genesis(&genesis);
    let mut tip = Tip::genesis(&genesis);
    let mut prefix = Vec::new();
    let mut run = |state: &mut State, tip: &mut Tip, entries: Vec<SignedEntry>| {
        let built = build_block(
            state,
            tip,
            TimestampMs(1_800_000_001_000),
            validator.public(),
            verified(entries),
        )
        .expect("setup block is valid");
        assert!(
            built.left_out.is_empty() && built.execution.rejections.iter().all(Option::is_none),
            "every setup entry is accepted"
        );
        state.apply(&built.execution.diff).expect("applies");
        let header = &built.block.header;
        *tip = Tip {
            chain_id: header.chain_id.clone(),
            height: header.height,
            hash: built.block.hash(),
            timestamp: header.timestamp,
        };
        let cert = certify(&validator, &built.block);
        prefix.push((built, cert));
    };
    let mut grants = vec![
        sign(
            &admin,
            0,
            Payload::GrantRole {
                key: issuer.public(),
                role: Role::Issuer,
            },
        ),
        sign(
            &admin,
            1,
            Payload::GrantRole {
                key: vendor.public(),
                role: Role::Vendor,
            },
        ),
        sign(
            &admin,
            2,
            Payload::CreateProgramme {
                programme: name("food"),
                unit: name("USD"),
                budget: tally_types::AMOUNT_MAX,
                valid_from: TimestampMs(0),
                valid_until: TimestampMs(1_900_000_000_000),
                assistance: name("food-basket"),
                period: name("2027-01"),
            },
        ),
    ];
    for (i, r) in redeemers.iter().enumerate() {
        grants.push(sign(
            &admin,
            3 + i as u64,
            Payload::GrantRole {
                key: r.public(),
                role: Role::Redeemer,
            },
        ));
    }
    run(&mut state, &mut tip, grants);
    let issues: Vec<SignedEntry> = (0..n)
        .map(|i| {
            let subject = SubjectToken(Domain::EntryId.hash(&[&(i as u64).to_le_bytes()]));
            let payload = Payload::IssueVoucher {
                programme: name("food"),
                subject,
                amount: 10_000,
                expires_at: TimestampMs(1_850_000_000_000),
                dedup: None,
            };
            sign(&issuer, i as u64, payload)
        })
        .collect();
    run(&mut state, &mut tip, issues);
    let redemptions = prefix[1]
        .0
        .execution
        .outcomes
        .iter()
        .zip(&redeemers)
        .map(|((voucher, _), r)| {
            let payload = Payload::RedeemVoucher {
                voucher: *voucher,
                amount: 2_500,
                vendor: vendor.public(),
                reference: name("till-1"),
            };
            sign(r, 0, payload)
        })
        .collect();
    let ctx = BlockContext {
        chain_id: name("bench"),
        height: tip.height + 1,
        timestamp: TimestampMs(1_800_000_002_000),
    };
    Setup {
        genesis,
        validator,
        prefix,
        state,
        tip,
        ctx,
        redemptions,
    }
}

/// ed25519-dalek's batch verification, the machine's reference: keys decompressed, weak keys
/// refused and messages assembled as `Keypair::sign_hash` signs them, all of which the ledger's
/// checks also do per call, so the per-signature rates compare.
fn dalek_verify_batch(items: &[(PublicKey, Hash, Signature)]) -> Result<(), SignatureError> {
    let keys = items
        .iter()
        .map(|(k, _, _)| match VerifyingKey::from_bytes(k.as_bytes()) {
            Ok(key) if !key.is_weak() => Ok(key),
            Ok(_) => Err(SignatureError::new()),
            Err(e) => Err(e),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, h, _)| [Domain::EntrySignature.tag(), h.as_bytes()].concat())
        .collect();
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(s.as_bytes()))
        .collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys)
}

fn ed25519(c: &mut Criterion) {
    let k = Keypair::from_seed_for_tests(7);
    let h = Domain::EntryId.hash(&[b"bench"]);
    let sig = k.sign_hash(Domain::EntrySignature, &h);
    let signed: Vec<(PublicKey, Hash, Signature)> = redemption_entries(256)
        .into_iter()
        .map(|e| (e.body.author, e.id(), e.signature))
        .collect();
    dalek_verify_batch(&signed).expect("ledger signatures verify as a dalek batch");
    let checks: Vec<SignatureCheck<'_>> = signed
        .iter()
        .map(|(key, id, signature)| SignatureCheck {
            key,
            domain: Domain::EntrySignature,
            message: id.as_bytes(),
            signature,
        })
        .collect();
    assert!(
        tally_types::verify_batch(&checks),
        "ledger signatures verify as a batch"
    );
    let dalek_key = VerifyingKey::from_bytes(k.public().as_bytes()).expect("key");
    let message = [Domain::EntrySignature.tag(), h.as_bytes()].concat();
    let dalek_sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function(
        "verify_strict, ed25519-dalek (hardware limit per core)",
        |b| b.iter(|| dalek_key.verify_strict(&message, &dalek_sig)),
    );
    g.bench_function("verify one (the ledger's rule)", |b| {
        b.iter(|| k.public().verify_hash(Domain::EntrySignature, &h, &sig))
    });
    g.bench_function("sign", |b| {
        b.iter(|| k.sign_hash(Domain::EntrySignature, &h))
    });
    for n in [16, 64, 256] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("verify_batch, ed25519-dalek, distinct keys", n),
            &signed[..n],
            |b, items| b.iter(|| dalek_verify_batch(items)),
        );
        g.bench_with_input(
            BenchmarkId::new("verify_batch, the ledger's rule, distinct keys", n),
            &checks[..n],
            |b, items| b.iter(|| tally_types::verify_batch(items)),
        );
    }
    g.finish();
}

fn sha256(c: &mut Criterion) {
    let entry = redemption_entries(1).remove(0).to_bytes();
    let mib = vec![0x5a_u8; 1 << 20];
    let mut g = c.benchmark_group("sha-256");
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.bench_function("1 MiB (hardware limit per core)", |b| {
        b.iter(|| Sha256::digest(black_box(&mib)))
    });
    g.throughput(Throughput::Bytes(entry.len() as u64));
    g.bench_function(
        format!("entry, {} canonical bytes (merkle leaf)", entry.len()),
        |b| b.iter(|| merkle::leaf_hash(black_box(&entry))),
    );
    g.finish();
}

fn entry_codec(c: &mut Criterion) {
    let s = setup(1);
    let e = s.redemptions[0].clone();
    let bytes = e.to_bytes();
    let mut g = c.benchmark_group("entry");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| b.iter(|| e.to_bytes()));
    g.bench_function("decode (canonical check)", |b| {
        b.iter(|| SignedEntry::from_bytes(&bytes))
    });
    g.bench_function("id (sha-256 of body)", |b| b.iter(|| e.id()));
    g.finish();
}

fn merkle_root(c: &mut Criterion) {
    let entries = redemption_entries(10_000);
    let mut g = c.benchmark_group("merkle root of a block");
    g.sample_size(10);
    for n in [1_000, 10_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("entries", n), &entries[..n], |b, e| {
            b.iter(|| Block::compute_entries_root(black_box(e)))
        });
    }
    g.finish();
}

fn block_execution(c: &mut Criterion) {
    let s = setup(1_000);
    let mut g = c.benchmark_group("block of 1000 redemptions");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("execute, verifying signatures", |b| {
        b.iter_batched(
            || s.redemptions.clone(),
            |entries| execute_block(&s.state, &s.ctx, &entries).expect("bench block is valid"),
            BatchSize::LargeInput,
        )
    });
    let checked = verified(s.redemptions.clone());
    g.bench_function("execute, signatures verified at admission", |b| {
        b.iter_batched(
            || checked.clone(),
            |entries| execute_verified(&s.state, &s.ctx, &entries).expect("bench block is valid"),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn commit(store: &Store, built: &BuiltBlock, certificate: &CommitCertificate) -> Head {
    store
        .commit_block(&CommitBatch {
            block: &built.block,
            certificate,
            outcomes: &built.execution.outcomes,
            rejections: &built.execution.rejections,
            diff: &built.execution.diff,
            staged: &built.staged,
        })
        .expect("block extends the head")
}

/// Each iteration commits the block to a fresh data directory holding the chain up to its
/// parent, since a store only takes the next height. Directories live under the target
/// directory rather than /tmp, which is often tmpfs, where a sync costs nothing.
fn block_commit(c: &mut Criterion) {
    let s = setup(1_000);
    let built = build_block(
        &s.state,
        &s.tip,
        s.ctx.timestamp,
        s.validator.public(),
        verified(s.redemptions.clone()),
    )
    .expect("bench block is valid");
    assert!(
        built.left_out.is_empty() && built.execution.rejections.iter().all(Option::is_none),
        "every redemption is accepted"
    );
    let cert = certify(&s.validator, &built.block);
    let tmp = env!("CARGO_TARGET_TMPDIR");
    let fresh = || {
        let dir = tempfile::tempdir_in(tmp).expect("temp dir under the target directory");
        let store = Store::open(dir.path()).expect("open store");
        store.init_genesis(&s.genesis).expect("init genesis");
        for (b, c) in &s.prefix {
            commit(&store, b, c);
        }
        (dir, store)
    };
    let written = {
        let (_dir, store) = fresh();
        let before = store.disk_bytes();
        commit(&store, &built, &cert);
        store.disk_bytes().saturating_sub(before)
    };
    println!(
        "rocksdb commit: {} entries, {} state writes, {} bytes of block, {written} bytes written",
        built.block.entries.len(),
        built.execution.diff.len(),
        tally_types::encode(&built.block).len(),
    );
    let mut g = c.benchmark_group("commit a block of 1000 redemptions");
    g.sample_size(10);
    g.throughput(Throughput::Elements(built.block.entries.len() as u64));
    g.bench_function("rocksdb, one synced write batch", |b| {
        b.iter_batched(
            fresh,
            |(dir, store)| (commit(&store, &built, &cert), store, dir),
            BatchSize::PerIteration,
        )
    });
    let bytes = vec![0xa5_u8; written as usize];
    g.throughput(Throughput::Bytes(written));
    g.bench_function("append and fdatasync as many bytes (hardware limit)", |b| {
        b.iter_batched(
            || {
                let mut f = tempfile::NamedTempFile::new_in(tmp).expect("temp file");
                f.write_all(b"log").expect("write");
                f.as_file().sync_all().expect("sync");
                f
            },
            |mut f| {
                f.write_all(&bytes).expect("write");
                f.as_file().sync_data().expect("sync");
                f
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    ed25519,
    sha256,
    entry_codec,
    merkle_root,
    block_execution,
    block_commit
);
criterion_main!(benches);
