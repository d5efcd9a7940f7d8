//! Every fuzz target, briefly: over its whole corpus (seeds and what campaigns kept), then over
//! seeded mutations of it. A campaign under AFL++ (`cargo xtask fuzz`) goes much further; this
//! keeps every target building and every input it once found answered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mutations tried per target, at most, and the time they may take.
const MUTATIONS: u64 = 20_000;
const BUDGET: Duration = Duration::from_secs(4);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|f| {
            let path = f.path();
            let bytes = std::fs::read(&path).expect("read a corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_corpus_holds_every_seed() {
    for (target, name, bytes) in tally_fuzz::seeds() {
        let path = corpus_dir(target).join(format!("seed-{name}"));
        let held = std::fs::read(&path).unwrap_or_default();
        assert!(
            held == bytes,
            "{} is missing or stale: run `cargo run -p tally-fuzz --bin tally-fuzz-seeds`",
            path.display()
        );
    }
}

#[test]
fn every_target_takes_its_corpus_and_mutations_of_it() {
    for (name, target) in tally_fuzz::TARGETS {
        let files = corpus(name);
        assert!(!files.is_empty(), "no corpus for {name}");
        for (path, bytes) in &files {
            let run = std::panic::catch_unwind(|| target(bytes));
            assert!(run.is_ok(), "{name} panics on {}", path.display());
        }
        let started = Instant::now();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ name.len() as u64;
        let mut tried = 0;
        while tried < MUTATIONS && started.elapsed() < BUDGET {
            let input = &files[tried as usize % files.len()].1;
            let other = &files[(tried as usize / 7) % files.len()].1;
            let mutated = tally_fuzz::mutate(input, other, &mut rng);
            let run = std::panic::catch_unwind(|| target(&mutated));
            assert!(
                run.is_ok(),
                "{name} panics on a mutation of its corpus: {}",
                hex(&mutated)
            );
            tried += 1;
        }
        assert!(tried > 10, "{name}: only {tried} mutations in {BUDGET:?}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
