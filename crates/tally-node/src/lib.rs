//! The tally node: wiring, not rules.
//!
//! It admits signed entries into a bounded mempool and relays them to the validators; hosts
//! the Tendermint core of tally-consensus (proposing blocks built by tally-state, verifying
//! others' proposals by replaying them, persisting the safety record before every vote);
//! talks to peers through tally-network; commits each decided block with its state changes
//! in one synced batch through tally-storage; and serves the HTTP API. Business rules live in
//! tally-state and nowhere here.

pub mod api;
pub mod config;
pub mod consensus;
pub mod keyfile;
pub mod ledger;
pub mod mempool;

use crate::config::NodeConfig;
use crate::consensus::{ConsensusStatus, Driver, DriverParts, Event, Role, StoreSource};
use crate::ledger::{Ledger, SubmitError};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tally_consensus::{Core, SafetyRecord, ValidatorSet};
use tally_network::NetworkHandle;
use tally_state::{Rejection, StateRead};
use tally_types::{EntryId, Genesis, IdentifiedEntry, Keypair, PublicKey, SignedEntry};
use tokio_util::sync::CancellationToken;

/// Everything that stops a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration, genesis or key.
    #[error("configuration: {0}")]
    Config(String),
    /// Storage failed; the node stops rather than run on a disk it cannot trust.
    #[error(transparent)]
    Storage(#[from] tally_storage::StorageError),
    /// The state does not decode.
    #[error(transparent)]
    State(#[from] tally_state::StateError),
    /// Persistent data that contradicts itself.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The block producer stopped after a failure; the node serves nothing more.
    #[error("the node has halted after an internal failure; see its log")]
    Halted,
    /// Network or socket failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Most bytes of entries in one relay request: well inside the smallest
/// `network.request_bytes_max` a config may set (64 KiB), so a batch always fits a frame.
pub const RELAY_BATCH_BYTES_MAX: usize = 48 * 1024;

/// Most entries waiting for the driver to relay them.
pub const RELAY_QUEUE_MAX: usize = 8_192;

/// How long an admitted entry may wait to be relayed with the ones admitted after it. Each
/// relay is one request to every other validator, so relaying entries one by one as they are
/// admitted costs a stream and its frames per entry and peer; a short wait batches them, and
/// is small beside the block interval an entry waits for anyway.
pub const RELAY_WAIT: Duration = Duration::from_millis(10);

/// Entries queued for relay, and since when the oldest has waited.
#[derive(Default)]
struct RelayQueue {
    entries: Vec<SignedEntry>,
    since: Option<Instant>,
}

/// What [`Shared::flush_relays`] did.
enum Relayed {
    /// Nothing was queued.
    Nothing,
    /// Entries wait until then.
    Due(Instant),
    /// The queue went out.
    Sent,
}

/// What the node answered of one submitted entry: admitted, or refused with a reason.
type Answer = (EntryId, Result<(), Rejection>);

/// State shared by the API handlers and the consensus driver.
pub struct Shared {
    ledger: Mutex<Ledger>,
    /// The ledger's storage, for reads of what is committed: they need no ledger lock, which
    /// the consensus driver holds while it checks and commits blocks.
    store: tally_storage::Store,
    stop: AtomicBool,
    node_key: PublicKey,
    api: config::ApiSection,
    events: SyncSender<Event>,
    net: Option<NetworkHandle>,
    validators: Vec<PublicKey>,
    consensus: Mutex<ConsensusStatus>,
    relay_queue: Mutex<RelayQueue>,
    occupancy: mempool::Occupancy,
}

impl Shared {
    /// Locks the ledger. A poisoned lock means the driver panicked: the node has halted.
    pub fn ledger(&self) -> Result<MutexGuard<'_, Ledger>, NodeError> {
        self.ledger.lock().map_err(|_| NodeError::Halted)
    }

    /// Admits entries submitted to the API, in order, and queues those admitted for relay.
    /// Each entry is admitted or refused on its own, with its id. What the mempool would refuse
    /// whatever the signature (pending already, a sequence number used or too far ahead) is
    /// refused before any check, so a submitter that runs ahead of its commits and retries
    /// costs lookups, not signature checks; then the rest claim room in the mempool, and what
    /// finds none is refused `mempool_full` unchecked. The others' signatures are checked
    /// before the ledger lock is taken, many at once in one batch
    /// ([`tally_state::verify_entries`]), so submissions on many connections are checked in
    /// parallel. Each entry is hashed to its id once.
    fn submit(&self, entries: Vec<SignedEntry>) -> Result<Vec<Answer>, NodeError> {
        let entries: Vec<IdentifiedEntry> = entries.into_iter().map(IdentifiedEntry::new).collect();
        let ids: Vec<EntryId> = entries.iter().map(IdentifiedEntry::id).collect();
        let mut answers: Vec<Option<Result<(), Rejection>>> = vec![None; ids.len()];
        let (mut to_check, mut at) = (Vec::new(), Vec::new());
        {
            let mut ledger = self.ledger()?;
            for (i, entry) in entries.into_iter().enumerate() {
                match ledger.refusal_unchecked(&entry)? {
                    Some(r) => answers[i] = Some(Err(r)),
                    None => {
                        to_check.push(entry);
                        at.push(i);
                    }
                }
            }
        }
        let claim = self.occupancy.claim(to_check.len());
        to_check.truncate(claim.entries());
        let checked = tally_state::verify_entries(to_check);
        let mut admitted = Vec::with_capacity(checked.len());
        {
            let mut ledger = self.ledger()?;
            for (checked, &i) in checked.into_iter().zip(&at) {
                let relay = checked.as_ref().ok().map(|e| e.entry().clone());
                answers[i] = Some(match ledger.submit(checked) {
                    Ok(_) => {
                        admitted.extend(relay);
                        Ok(())
                    }
                    Err(SubmitError::Rejected(r)) => Err(r),
                    Err(SubmitError::Node(e)) => return Err(e),
                });
            }
        }
        drop(claim);
        self.entries_admitted(admitted);
        let full = self.occupancy.full();
        Ok(ids
            .into_iter()
            .zip(answers)
            .map(|(id, answer)| (id, answer.unwrap_or_else(|| Err(full.clone()))))
            .collect())
    }

    /// Queues admitted entries for relay to the connected validators, so whichever validator
    /// proposes next can include them, and wakes the driver when the queue was empty: it
    /// relays what is queued as one batch after [`RELAY_WAIT`], and tells the core there is
    /// work.
    fn entries_admitted(&self, entries: Vec<SignedEntry>) {
        if entries.is_empty() {
            return;
        }
        let wake = match &self.net {
            Some(_) => {
                let mut queue = self.relay_queue.lock().unwrap_or_else(|p| p.into_inner());
                let was_empty = queue.entries.is_empty();
                // Past the bound the driver is behind; the entries still go out with the
                // periodic relay of pending entries.
                let room = RELAY_QUEUE_MAX.saturating_sub(queue.entries.len());
                queue.entries.extend(entries.into_iter().take(room));
                queue.since.get_or_insert_with(Instant::now);
                was_empty
            }
            None => true,
        };
        if wake {
            let _ = self.events.try_send(Event::Work);
        }
    }

    /// Relays the queued entries once the oldest has waited [`RELAY_WAIT`].
    fn flush_relays(&self) -> Relayed {
        let queued = {
            let mut queue = self.relay_queue.lock().unwrap_or_else(|p| p.into_inner());
            let Some(since) = queue.since else {
                return Relayed::Nothing;
            };
            if since.elapsed() < RELAY_WAIT {
                return Relayed::Due(since + RELAY_WAIT);
            }
            queue.since = None;
            std::mem::take(&mut queue.entries)
        };
        self.relay(&queued);
        Relayed::Sent
    }

    fn relay(&self, entries: &[SignedEntry]) {
        let Some(net) = &self.net else { return };
        let connected = net.connected();
        let to: Vec<&PublicKey> = self
            .validators
            .iter()
            .filter(|v| connected.contains(v))
            .collect();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for e in entries {
            let size = tally_types::codec::encoded_len(e);
            if !batch.is_empty() && bytes + size > RELAY_BATCH_BYTES_MAX {
                let full = std::mem::take(&mut batch);
                net.send_all(to.iter().copied(), &tally_network::Request::Entries(full));
                bytes = 0;
            }
            batch.push(e.clone());
            bytes += size;
        }
        if !batch.is_empty() {
            net.send_all(to.iter().copied(), &tally_network::Request::Entries(batch));
        }
    }

    /// Relays up to `max` pending entries again (an observer's relay may have been lost).
    fn relay_pending(&self, max: usize) -> Result<(), NodeError> {
        let pending: Vec<SignedEntry> = {
            let l = self.ledger()?;
            l.mempool().candidates(l.state(), max)?
        }
        .into_iter()
        .map(tally_types::VerifiedEntry::into_entry)
        .collect();
        self.relay(&pending);
        Ok(())
    }

    /// The consensus status, as the driver last published it.
    pub fn consensus_status(&self) -> Option<ConsensusStatus> {
        self.consensus.lock().ok().map(|s| s.clone())
    }

    /// Peers connected and the network's drop counters, when networked.
    pub fn network_status(&self) -> Option<(Vec<PublicKey>, tally_network::CountersSnapshot)> {
        self.net
            .as_ref()
            .map(|n| (n.connected().into_iter().collect(), n.counters()))
    }
}

/// Reads and validates a genesis file (TOML).
pub fn load_genesis(path: &Path) -> Result<Genesis, NodeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NodeError::Config(format!("cannot read genesis {}: {e}", path.display())))?;
    let g: Genesis = toml::from_str(&text)
        .map_err(|e| NodeError::Config(format!("genesis {} is invalid: {e}", path.display())))?;
    g.validate().map_err(|e| NodeError::Config(e.to_string()))?;
    Ok(g)
}

/// A node that is running: its API address and the handles to stop it.
pub struct RunningNode {
    /// Where the API listens (useful when the config asked for port 0).
    pub api_addr: SocketAddr,
    /// Where peers reach this node, when networked.
    pub p2p_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    driver: Option<std::thread::JoinHandle<Result<(), NodeError>>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    network: Option<tally_network::Network>,
}

impl RunningNode {
    /// The shared state (for in-process tests and tools).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A token that stops the node when cancelled.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs until cancelled (Ctrl-C in the CLI) or until the driver fails.
    pub async fn wait(mut self) -> Result<(), NodeError> {
        self.cancel.cancelled().await;
        self.stop().await
    }

    /// Stops the node: no new votes or blocks, the API drains, the data directory is closed.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.cancel.cancel();
        self.stop().await
    }

    async fn stop(&mut self) -> Result<(), NodeError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.events.try_send(Event::Stop);
        let server = (&mut self.server).await;
        let driver = match self.driver.take() {
            Some(p) => tokio::task::spawn_blocking(move || p.join())
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => None,
        };
        if let Some(n) = self.network.take() {
            n.shutdown().await;
        }
        match driver {
            Some(Err(e)) => return Err(e),
            None => return Err(NodeError::Halted),
            Some(Ok(())) => {}
        }
        match server {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(NodeError::Halted),
        }
    }
}

/// Opens the data directory, joins the network, starts consensus (or, for a key outside the
/// validator set, follows as an observer) and the API.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let genesis = load_genesis(&config.node.genesis)?;
    let key = keyfile::read_key_file(&config.node.node_key)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let me = key.public();
    let ledger = tokio::task::block_in_place(|| Ledger::open(&config, genesis.clone()))?;
    let validators = ledger.state().validators()?;
    let store = ledger.store().clone();
    let head = ledger.head().clone();
    let is_validator = validators.contains(&me);
    if config.network.is_none() && (validators.len() > 1 || !is_validator) {
        return Err(NodeError::Config(format!(
            "genesis names {} validators{}; this node needs a [network] section to reach them",
            validators.len(),
            if is_validator {
                ""
            } else {
                " and this key is not one of them (an observer)"
            }
        )));
    }
    let core = if is_validator {
        let record = match store.safety_record()? {
            Some(bytes) => Some(SafetyRecord::decode(&bytes).map_err(|e| {
                NodeError::Corrupt(format!(
                    "the consensus safety record does not decode ({e}); it may be from an older version"
                ))
            })?),
            None => None,
        };
        let set = ValidatorSet::new(&validators).map_err(|e| NodeError::Config(e.to_string()))?;
        Some(
            Core::new(
                genesis.chain_id.clone(),
                Keypair::from_secret_bytes(&key.secret_bytes()),
                set,
                config.consensus.timeouts(),
                head.height,
                record,
            )
            .map_err(|e| NodeError::Corrupt(e.to_string()))?,
        )
    } else {
        None
    };
    let queue_max = config
        .network
        .as_ref()
        .map_or(1024, |n| n.inbound_queue_max);
    let (events_tx, events_rx) = sync_channel::<Event>(queue_max);
    let (network, sync_bytes_max, observers) = match &config.network {
        None => (None, 1 << 20, Vec::new()),
        Some(n) => {
            let mut allowed: Vec<PublicKey> = validators.clone();
            allowed.extend(n.observers.iter().copied());
            allowed.extend(n.peers.iter().map(|p| p.key));
            allowed.retain(|k| *k != me);
            let net = tally_network::start(
                tally_network::NetworkConfig {
                    chain_id: genesis.chain_id.clone(),
                    listen: n.listen,
                    dial: n
                        .peers
                        .iter()
                        .filter(|p| p.key != me)
                        .map(|p| tally_network::PeerAddress {
                            key: p.key,
                            addr: p.addr,
                        })
                        .collect(),
                    allowed,
                    limits: tally_network::Limits {
                        request_bytes_max: n.request_bytes_max,
                        response_bytes_max: n.response_bytes_max,
                        inbound_queue_max: n.inbound_queue_max,
                        outbound_queue_max: n.outbound_queue_max,
                        connections_per_peer_max: n.connections_per_peer_max,
                    },
                },
                &key,
                Arc::new(StoreSource(store.clone())),
                events_tx.clone(),
            )
            .await
            .map_err(|e| NodeError::Config(format!("network: {e}")))?;
            // Pushed blocks travel as requests, synced ones as responses: fit both limits.
            let sync_bytes_max = n.request_bytes_max.min(n.response_bytes_max) / 2;
            (Some(net), sync_bytes_max, n.observers.clone())
        }
    };
    let role = if is_validator {
        Role::Validator
    } else {
        Role::Observer
    };
    tracing::info!(chain = %genesis.chain_id, height = head.height, head = %head.hash.short(), key = %me.short(), ?role, validators = validators.len(), "opened ledger");
    let shared = Arc::new(Shared {
        occupancy: ledger.mempool().occupancy(),
        store: store.clone(),
        ledger: Mutex::new(ledger),
        stop: AtomicBool::new(false),
        node_key: me,
        api: config.api.clone(),
        events: events_tx,
        net: network.as_ref().map(|n| n.handle.clone()),
        validators: validators.clone(),
        relay_queue: Mutex::new(RelayQueue::default()),
        consensus: Mutex::new(ConsensusStatus {
            role,
            height: head.height + 1,
            round: 0,
            step: None,
            voting: false,
            messages: Default::default(),
            evidence: 0,
            synced_blocks: 0,
            rejected_blocks: 0,
        }),
    });
    let cancel = CancellationToken::new();
    let driver = Driver::new(DriverParts {
        chain_id: genesis.chain_id.clone(),
        core,
        shared: shared.clone(),
        store,
        net: network.as_ref().map(|n| n.handle.clone()),
        me,
        validators,
        observers,
        tick: Duration::from_millis(config.consensus.tick_ms),
        interval: Duration::from_millis(config.block.interval_ms),
        sync_bytes_max,
    });
    let driver = {
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                let result = driver.run(events_rx);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "consensus driver failed; stopping the node");
                }
                cancel.cancel();
                result
            })?
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen).await?;
    let api_addr = listener.local_addr()?;
    let app = api::router(shared.clone());
    let server = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        })
    };
    tracing::info!(%api_addr, "API listening");
    Ok(RunningNode {
        api_addr,
        p2p_addr: network.as_ref().map(|n| n.listen_addr),
        shared,
        cancel,
        driver: Some(driver),
        server,
        network,
    })
}
