//! Micro-benchmarks of the primitives the ledger is bound by. Each group prints the machine's
//! raw limit (ed25519 strict verification) beside what the ledger does with it, because
//! absolute times on shared machines drift. The full benchmark suite is tracked in the
//! benchmarks issue; this covers the hot path of block execution.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tally_state::{execute_block, BlockContext, Signatures, State};
use tally_types::{
    AgencyGenesis, Domain, EntryBody, Genesis, Keypair, Name, Payload, Role, SignedEntry,
    SubjectToken, TimestampMs, ValidatorGenesis,
};

fn name(s: &str) -> Name {
    Name::new(s).expect("valid benchmark name")
}

struct Setup {
    state: State,
    ctx: BlockContext,
    redemptions: Vec<SignedEntry>,
}

/// A chain where one voucher per redeemer key is issued, then a block of `n` redemptions.
fn setup(n: usize) -> Setup {
    let admin = Keypair::from_seed_for_tests(1);
    let issuer = Keypair::from_seed_for_tests(2);
    let vendor = Keypair::from_seed_for_tests(3);
    let redeemers: Vec<Keypair> = (0..n as u64)
        .map(|i| Keypair::from_seed_for_tests(1000 + i))
        .collect();
    let genesis = Genesis {
        chain_id: name("bench"),
        genesis_time: TimestampMs(1_800_000_000_000),
        agencies: vec![AgencyGenesis {
            id: name("wfp"),
            admins: vec![admin.public()],
        }],
        validators: vec![ValidatorGenesis {
            agency: name("wfp"),
            key: Keypair::from_seed_for_tests(9).public(),
        }],
    };
    let mut state = State::genesis(&genesis);
    let mut height = 0;
    let mut run = |state: &mut State, entries: Vec<SignedEntry>| {
        height += 1;
        let ctx = BlockContext {
            chain_id: name("bench"),
            height,
            timestamp: TimestampMs(1_800_000_001_000),
        };
        let exec =
            execute_block(state, &ctx, &entries, Signatures::Verify).expect("setup block is valid");
        state.apply(&exec.diff);
        exec
    };
    let sign = |k: &Keypair, seq: u64, payload: Payload| {
        EntryBody {
            chain_id: name("bench"),
            author: k.public(),
            sequence: seq,
            payload,
        }
        .sign(k)
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
                budget: u64::MAX / 4,
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
    run(&mut state, grants);
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
    let exec = run(&mut state, issues);
    let redemptions = exec
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
        height: 3,
        timestamp: TimestampMs(1_800_000_002_000),
    };
    Setup {
        state,
        ctx,
        redemptions,
    }
}

fn ed25519(c: &mut Criterion) {
    let k = Keypair::from_seed_for_tests(7);
    let h = Domain::EntryId.hash(&[b"bench"]);
    let sig = k.sign_hash(Domain::EntrySignature, &h);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_strict (hardware limit per core)", |b| {
        b.iter(|| k.public().verify_hash(Domain::EntrySignature, &h, &sig))
    });
    g.bench_function("sign", |b| {
        b.iter(|| k.sign_hash(Domain::EntrySignature, &h))
    });
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

fn block_execution(c: &mut Criterion) {
    let s = setup(1_000);
    let mut g = c.benchmark_group("block of 1000 redemptions");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000));
    for (label, sigs) in [
        ("execute, verifying signatures", Signatures::Verify),
        (
            "execute, signatures verified at admission",
            Signatures::AlreadyVerified,
        ),
    ] {
        g.bench_function(label, |b| {
            b.iter_batched(
                || s.redemptions.clone(),
                |entries| {
                    execute_block(&s.state, &s.ctx, &entries, sigs).expect("bench block is valid")
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, ed25519, entry_codec, block_execution);
criterion_main!(benches);
