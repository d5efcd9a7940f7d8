//! `tally audit verify`, and the replay of a chain copy that `audit report` shares with it.

use crate::output::emit;
use crate::Outcome;
use anyhow::Context;
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;
use tally_state::{signatures_checked, BlockSummary, ChainVerifier, State};
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

/// Blocks read and signature-checked ahead of the replay: bounds the memory the read-ahead
/// holds (two blocks of at most `block.entries_max` entries each).
const READ_AHEAD_BLOCKS: usize = 2;

/// Verifies and replays every block of the copy from the verifier's tip to the copy's head,
/// then checks the copy's head against the replay. `each` sees every block after it verified.
///
/// A block's entry signatures do not depend on the state, but its replay does: so another
/// thread reads each block and checks its signatures (on all cores) while this one replays the
/// block before it.
pub fn replay_copy(
    store: &Store,
    verifier: &mut ChainVerifier,
    mut each: impl FnMut(&Block, &BlockSummary, &State) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let head = store.head()?;
    let from = verifier.tip().height + 1;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (ahead, blocks) = std::sync::mpsc::sync_channel(READ_AHEAD_BLOCKS);
        s.spawn(move || {
            for height in from..=head.height {
                let read = read_block(store, height, head.height).map(|(block, cert)| {
                    let signatures = signatures_checked(&block.entries);
                    (block, cert, signatures)
                });
                let failed = read.is_err();
                // A closed channel means the replay stopped at a violation.
                if ahead.send(read).is_err() || failed {
                    return;
                }
            }
        });
        for read in blocks {
            let (block, cert, signatures) = read?;
            let summary = verifier
                .verify_next_with(&block, &cert, signatures)
                .map_err(Violation::from)?;
            each(&block, &summary, verifier.state())?;
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
