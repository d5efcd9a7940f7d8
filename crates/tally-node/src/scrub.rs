//! The background scrub: reads back every committed block, a few each second, and checks it
//! against its index entry, its certificate and its neighbours, so that damage in history
//! nobody asks for is found before the one copy a peer needs is the damaged one.
//!
//! Damage is noted in the data directory. On a node that can repair it (another validator to
//! fetch the chain from, `storage.repair` on), it also stops the node, and the next start sets
//! the directory aside and fetches the chain again (see `open_ledger`): under a service
//! manager that restarts a failed node, that needs no operator. A node that cannot repair it
//! runs on, having said so, and refuses at its next start until restored from a backup.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_storage::Store;
use tokio_util::sync::CancellationToken;

/// How often the scrub looks at the stop flag while it waits.
const NAP: Duration = Duration::from_millis(100);

/// A running scrub.
pub struct Scrub {
    thread: std::thread::JoinHandle<()>,
    found: Arc<Mutex<Option<String>>>,
}

impl Scrub {
    /// Starts scrubbing `per_second` blocks a second until the node is stopped; damage found
    /// stops it when `repairable`.
    pub fn start(
        store: Store,
        per_second: u64,
        repairable: bool,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let found = Arc::new(Mutex::new(None));
        let thread = {
            let found = found.clone();
            std::thread::Builder::new()
                .name("scrub".into())
                .spawn(move || {
                    let Some(what) = run(&store, per_second, &cancel) else {
                        return;
                    };
                    if let Err(e) = store.mark_damaged(&what) {
                        tracing::error!(error = %e, "cannot note the damage in the data directory");
                    }
                    if repairable {
                        tracing::error!(damage = %what, "the scrub found damaged history; stopping: the next start sets the data directory aside and fetches the chain again");
                        *found.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
                        cancel.cancel();
                    } else {
                        tracing::error!(damage = %what, "the scrub found damaged history, which this node cannot fetch again; it runs on, and will refuse to start until its directory is restored from a backup");
                    }
                })?
        };
        Ok(Scrub { thread, found })
    }

    /// Waits for the scrub to stop (cancel the node first); the damage it found, if any.
    pub fn join(self) -> Option<String> {
        let _ = self.thread.join();
        self.found.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Walks the chain from height 1 to the head and around again, `per_second` blocks a
/// second. Returns the damage found, or `None` once stopped. A failure that is not damage (a
/// full disk, say) is the committing thread's to report; the scrub logs it and goes on.
fn run(store: &Store, per_second: u64, stop: &CancellationToken) -> Option<String> {
    let mut next = 1u64;
    let mut passes = 0u64;
    while !stop.is_cancelled() {
        let head = match store.head() {
            Ok(h) => h.height,
            Err(e) if e.is_damage() => return Some(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "the scrub cannot read the head");
                0
            }
        };
        if next > head {
            if head > 0 && next > 1 {
                passes += 1;
                tracing::debug!(blocks = head, passes, "the scrub checked the whole chain");
            }
            next = 1;
        }
        if head > 0 {
            let to = next.saturating_add(per_second - 1).min(head);
            match store.check_blocks(next, to) {
                Ok(()) => next = to + 1,
                Err(e) if e.is_damage() => return Some(e.to_string()),
                Err(e) => tracing::warn!(error = %e, "the scrub cannot read blocks"),
            }
        }
        for _ in 0..10 {
            if stop.is_cancelled() {
                break;
            }
            std::thread::sleep(NAP);
        }
    }
    None
}
