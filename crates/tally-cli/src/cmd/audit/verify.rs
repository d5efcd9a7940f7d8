//! `tally audit verify`, and the replay of a chain copy that `audit report` shares with it.

use crate::output::emit;
use crate::Outcome;
use anyhow::Context;
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;
use tally_state::{BlockSummary, ChainVerifier, CheckedBlock, State};
use tally_storage::{StorageError, Store};
use tally_types::{Block, CommitCertificate, Genesis};

/// The first rule a chain breaks. Raised as an error so replay code can use `?`; the command's
/// edge prints it and exits 1, while every other error exits 2.
#[derive(Debug, thiserror::Error)]
#[error("violation at height {height}: {rule}: {detail}")]
pub struct Violation {
    /// The block's height (0 for the genesis).
    pub height: u64,
    /// The entry at fault, hex, when one is.
    pub entry: Option<String>,
    /// Stable code of the rule.
    pub rule: String,
    /// What was found and what was expected.
    pub detail: String,
}

impl Violation {
    pub fn new(height: u64, rule: &str, detail: impl Into<String>) -> Self {
        Self {
            height,
            entry: None,
            rule: rule.into(),
            detail: detail.into(),
        }
    }

    /// Prints the violation (JSON or text) and returns the failed outcome.
    pub fn report(&self, json: bool) -> anyhow::Result<Outcome> {
        let v = json!({ "ok": false, "violation": {
            "height": self.height, "entry": self.entry, "rule": self.rule, "detail": self.detail,
        } });
        emit(json, &v, || {
            let at = self
                .entry
                .as_ref()
                .map(|e| format!(" entry {e}"))
                .unwrap_or_default();
            format!(
                "VIOLATION at height {}{at}\n  rule: {}\n  {}",
                self.height, self.rule, self.detail
            )
        })?;
        Ok(Outcome::Failed)
    }
}

impl From<tally_state::Violation> for Violation {
    fn from(v: tally_state::Violation) -> Self {
        Self {
            height: v.height,
            entry: v.entry.map(|e| e.to_hex()),
            rule: v.rule.into(),
            detail: v.detail,
        }
    }
}

/// Runs a command body; a [`Violation`] it raises is printed and exits 1.
pub fn or_violation(
    json: bool,
    body: impl FnOnce() -> anyhow::Result<Outcome>,
) -> anyhow::Result<Outcome> {
    match body() {
        Err(e) => match e.downcast::<Violation>() {
            Ok(v) => v.report(json),
            Err(e) => Err(e),
        },
        ok => ok,
    }
}

/// A copy of a node's data directory, opened read-only, its genesis checked against the one
/// the auditor trusts (when given).
pub fn open_copy(data_dir: &Path, trusted: Option<&Path>) -> anyhow::Result<(Store, Genesis)> {
    let store = Store::open_read_only(data_dir)
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let stored = store.genesis()?.context("the directory has no genesis")?;
    if let Some(path) = trusted {
        let trusted = tally_node::load_genesis(path)?;
        if trusted.hash() != stored.hash() {
            return Err(Violation::new(
                0,
                "genesis",
                format!(
                    "directory genesis {} differs from {} ({})",
                    stored.hash(),
                    trusted.hash(),
                    path.display()
                ),
            )
            .into());
        }
    }
    Ok((store, stored))
}

/// Blocks each reader may have queued for the replay; it holds one more while it checks it.
const READ_AHEAD_BLOCKS: usize = 1;

/// The most block readers, whatever the cores: with [`READ_AHEAD_BLOCKS`], the read-ahead
/// holds at most 2 x 8 blocks of up to `block.entries_max` entries.
const READERS_MAX: usize = 8;

/// Verifies and replays every block of the copy from the verifier's tip to the copy's head,
/// then checks the copy's head against the replay. `each` sees every block after it verified.
///
/// A block's entry signatures, ids and entries root do not depend on the state, but its replay
/// does: so one reader per core reads blocks in turn (reader r of n takes every n-th height
/// from the r-th) and checks those, each block whole on one thread, while this one replays
/// them in order. No reader waits for another, so no core idles while the replay has work
/// waiting.
pub fn replay_copy(
    store: &Store,
    verifier: &mut ChainVerifier,
    each: impl FnMut(&Block, &BlockSummary, &State) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let readers = tally_state::cores().min(READERS_MAX);
    replay_with_readers(store, verifier, readers, each)
}

/// [`replay_copy`] with `readers` block readers (at least one).
fn replay_with_readers(
    store: &Store,
    verifier: &mut ChainVerifier,
    readers: usize,
    mut each: impl FnMut(&Block, &BlockSummary, &State) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let head = store.head()?;
    let from = verifier.tip().height + 1;
    let readers = readers.max(1) as u64;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let inboxes: Vec<_> = (0..readers)
            .map(|r| {
                let (ahead, inbox) = std::sync::mpsc::sync_channel(READ_AHEAD_BLOCKS);
                s.spawn(move || {
                    for height in (from + r..=head.height).step_by(readers as usize) {
                        let read = read_block(store, height, head.height)
                            .map(|(block, cert)| (CheckedBlock::new(block), cert));
                        let failed = read.is_err();
                        // A closed channel means the replay stopped at a violation.
                        if ahead.send(read).is_err() || failed {
                            return;
                        }
                    }
                });
                inbox
            })
            .collect();
        for height in from..=head.height {
            let inbox = &inboxes[((height - from) % readers) as usize];
            let (checked, cert) = inbox
                .recv()
                .map_err(|_| anyhow::anyhow!("the reader of block {height} stopped"))??;
            let summary = verifier
                .verify_checked(&checked, &cert)
                .map_err(Violation::from)?;
            each(checked.block(), &summary, verifier.state())?;
        }
        Ok(())
    })?;
    if verifier.tip().hash != head.hash {
        return Err(Violation::new(
            head.height,
            "head",
            format!(
                "verified chain ends at {}, the directory's head says {}",
                verifier.tip().hash,
                head.hash
            ),
        )
        .into());
    }
    let root = verifier.state().root();
    if root != head.state_root {
        return Err(Violation::new(
            head.height,
            "state_root",
            format!(
                "replayed state root {root}, directory's head says {}",
                head.state_root
            ),
        )
        .into());
    }
    Ok(())
}

/// Block `height` and its certificate from the copy; a missing or undecodable one is a
/// violation at that height.
fn read_block(store: &Store, height: u64, head: u64) -> anyhow::Result<(Block, CommitCertificate)> {
    let block = match store.block(height) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(Violation::new(
                height,
                "missing_block",
                format!("head is {head} but block {height} is absent"),
            )
            .into())
        }
        Err(StorageError::Corrupt(d)) => return Err(Violation::new(height, "storage", d).into()),
        Err(e) => return Err(e.into()),
    };
    let cert = match store.certificate(height) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(
                Violation::new(height, "certificate", "no commit certificate stored").into(),
            )
        }
        Err(StorageError::Corrupt(d)) => {
            return Err(Violation::new(height, "certificate", d).into())
        }
        Err(e) => return Err(e.into()),
    };
    Ok((block, cert))
}

/// A progress bar on stderr while a long chain is verified; nothing when stderr is not a
/// terminal (a script or CI reads only the result).
struct Progress {
    head: u64,
    started: Instant,
    shown: Option<Instant>,
    entries: u64,
    on: bool,
}

impl Progress {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(200);
    const WIDTH: u64 = 30;

    fn new(head: u64, started: Instant) -> Self {
        Self {
            head,
            started,
            shown: None,
            entries: 0,
            on: std::io::stderr().is_terminal() && head > 0,
        }
    }

    fn block(&mut self, block: &Block) {
        self.entries += block.entries.len() as u64;
        if !self.on || self.shown.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.shown = Some(Instant::now());
        let h = block.header.height;
        let filled = (h * Self::WIDTH / self.head) as usize;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r[{:<width$}] block {h}/{}  {} entries  {:.0} entries/s ",
            "#".repeat(filled),
            self.head,
            self.entries,
            self.entries as f64 / secs,
            width = Self::WIDTH as usize
        );
    }

    fn finish(&self) {
        if self.on && self.shown.is_some() {
            eprint!("\r{}\r", " ".repeat(100));
        }
    }
}

pub fn verify(data_dir: &Path, genesis: Option<&Path>, json: bool) -> anyhow::Result<Outcome> {
    or_violation(json, || {
        let (store, stored) = open_copy(data_dir, genesis)?;
        let started = Instant::now();
        let mut verifier = ChainVerifier::new(&stored);
        let mut progress = Progress::new(store.head()?.height, started);
        replay_copy(&store, &mut verifier, |block, _, _| {
            progress.block(block);
            Ok(())
        })?;
        progress.finish();
        let secs = started.elapsed().as_secs_f64();
        let (entries, rejected) = verifier.counts();
        let rate = if secs > 0.0 {
            entries as f64 / secs
        } else {
            0.0
        };
        let tip = verifier.tip();
        let root = verifier.state().root();
        let v = json!({
            "ok": true,
            "chain_id": stored.chain_id,
            "genesis_hash": stored.hash(),
            "blocks": tip.height,
            "entries": entries,
            "rejected_entries": rejected,
            "head_hash": tip.hash,
            "state_root": root,
            "seconds": secs,
            "entries_per_second": rate,
        });
        emit(json, &v, || {
            format!(
                "OK chain {} verified from genesis {}\n  blocks:   {}\n  entries:  {} ({} rejected by a rule, kept as evidence)\n  head:     {}\n  state:    {}\n  time:     {:.2}s ({:.0} entries/s)",
                stored.chain_id,
                stored.hash(),
                tip.height,
                entries,
                rejected,
                tip.hash,
                root,
                secs,
                rate
            )
        })?;
        Ok(Outcome::Ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_state::{build_block, Tip};
    use tally_storage::CommitBatch;
    use tally_types::{EntryBody, Keypair, Payload, Role, TimestampMs, VerifiedEntry};

    const BLOCKS: u64 = 7;

    /// A chain of [`BLOCKS`] blocks of one entry each in a new data directory, the entry of
    /// block `tampered` (if any) with a flipped signature bit and the block certified anyway,
    /// as a forger with the validators' keys would.
    fn chain(dir: &Path, tampered: Option<u64>) -> Store {
        let admin = Keypair::from_seed_for_tests(1);
        let validator = Keypair::from_seed_for_tests(2);
        let genesis =
            Genesis::one_agency_for_tests("audit-test", admin.public(), validator.public());
        let store = Store::open(dir).expect("opens");
        store.init_genesis(&genesis).expect("genesis");
        let mut state = State::genesis(&genesis);
        let mut tip = Tip::genesis(&genesis);
        for seq in 0..BLOCKS {
            let entry = EntryBody {
                chain_id: genesis.chain_id.clone(),
                author: admin.public(),
                sequence: seq,
                payload: Payload::GrantRole {
                    key: Keypair::from_seed_for_tests(100 + seq).public(),
                    role: Role::Issuer,
                },
            }
            .sign(&admin);
            let built = build_block(
                &state,
                &tip,
                TimestampMs(tip.timestamp.0 + 1000),
                validator.public(),
                [VerifiedEntry::verify(entry).expect("signed")],
            )
            .expect("builds");
            let mut block = built.block;
            if tampered == Some(block.header.height) {
                block.entries[0].signature.0[40] ^= 1;
                block.header.entries_root = Block::compute_entries_root(&block.entries);
            }
            let certificate = CommitCertificate::signed_by(&block.header, 0, [&validator]);
            let head = store
                .commit_block(&CommitBatch {
                    block: &block,
                    certificate: &certificate,
                    outcomes: &built.execution.outcomes,
                    rejections: &built.execution.rejections,
                    diff: &built.execution.diff,
                    staged: &built.staged,
                })
                .expect("commits");
            state.apply(&built.execution.diff).expect("applies");
            tip = Tip {
                chain_id: tip.chain_id.clone(),
                height: head.height,
                hash: head.hash,
                timestamp: head.timestamp,
            };
        }
        store
    }

    /// Replays the copy with `readers` readers, from where `verifier` stands; returns the
    /// heights `each` saw and the outcome.
    fn replay(
        store: &Store,
        verifier: &mut ChainVerifier,
        readers: usize,
    ) -> (Vec<u64>, anyhow::Result<()>) {
        let mut seen = Vec::new();
        let result = replay_with_readers(store, verifier, readers, |block, _, _| {
            seen.push(block.header.height);
            Ok(())
        });
        (seen, result)
    }

    fn from_genesis(store: &Store) -> ChainVerifier {
        ChainVerifier::new(&store.genesis().expect("reads").expect("has a genesis"))
    }

    /// One reader, as many as blocks but one, and more readers than blocks.
    const READERS: [usize; 4] = [1, 2, 3, BLOCKS as usize + 3];

    #[test]
    fn blocks_read_on_several_threads_replay_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = chain(dir.path(), None);
        for readers in READERS {
            let mut verifier = from_genesis(&store);
            let (seen, result) = replay(&store, &mut verifier, readers);
            result.unwrap_or_else(|e| panic!("{readers} readers: {e}"));
            assert_eq!(seen, (1..=BLOCKS).collect::<Vec<_>>(), "{readers} readers");
            // Again from the head: nothing to read, and the head still matches.
            let (seen, result) = replay(&store, &mut verifier, readers);
            result.unwrap_or_else(|e| panic!("{readers} readers, from the head: {e}"));
            assert!(seen.is_empty(), "{readers} readers: {seen:?}");
        }
    }

    #[test]
    fn a_forged_block_is_named_at_its_height_and_nothing_after_it_is_replayed() {
        for tampered in [1, 4, 5, BLOCKS] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = chain(dir.path(), Some(tampered));
            for readers in READERS {
                let (seen, result) = replay(&store, &mut from_genesis(&store), readers);
                let err = result.expect_err("a forged signature is caught");
                let v = err.downcast::<Violation>().expect("a violation");
                let at = (v.height, v.rule.as_str());
                assert_eq!(at, (tampered, "entry_admission"), "{readers} readers");
                assert!(v.detail.contains("signature"), "{}", v.detail);
                assert_eq!(seen, (1..tampered).collect::<Vec<_>>(), "{readers} readers");
            }
        }
    }
}
