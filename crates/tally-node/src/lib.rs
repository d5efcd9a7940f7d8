//! The tally node: wiring, not rules.
//!
//! Every decision a node takes lives in the [`engine`], which does no I/O: it admits signed
//! entries into a bounded mempool and relays them to the validators; hosts the Tendermint
//! core of tally-consensus (proposing blocks built by tally-state, verifying others' proposals
//! by replaying them, asking for the safety record to be durable before every vote); and
//! commits each decided block with its state changes in one synced batch. Around it, the
//! [`consensus`] thread owns the clocks, RocksDB's writes and the tally-network handle, and
//! [`api`] serves HTTP. Business rules live in tally-state and nowhere here.

pub mod api;
/// The config file, read by its own crate so tools and fuzzing need no storage engine.
pub use tally_config as config;
pub mod consensus;
pub mod engine;
pub mod keyfile;
pub mod ledger;
pub mod memdisk;
pub mod mempool;
pub mod metrics;
pub mod scrub;
pub mod serve;
pub mod setup;

use crate::config::NodeConfig;
use crate::consensus::{Clock, StoreSource, Wake};
use crate::engine::{ConsensusStatus, Engine, EngineConfig};
use crate::ledger::{Ledger, LedgerLimits};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use tally_consensus::SafetyRecord;
use tally_network::NetworkHandle;
use tally_state::{Rejection, StateRead};
use tally_types::{EntryId, Genesis, IdentifiedEntry, PublicKey, SignedEntry};
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
    /// The data directory is damaged and the node may not repair it itself; the message says
    /// what to do.
    #[error("the data directory is damaged: {0}")]
    Damaged(String),
    /// The block producer stopped after a failure; the node serves nothing more.
    #[error("the node has halted after an internal failure; see its log")]
    Halted,
    /// Network or socket failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What the node answered of one submitted entry: admitted, or refused with a reason.
type Answer = (EntryId, Result<(), Rejection>);

/// What the API handlers and the consensus thread share: the engine, behind one lock.
pub struct Shared {
    engine: Mutex<Engine>,
    /// The ledger's storage, for reads of what is committed: they need no engine lock, which
    /// the consensus thread holds while it checks and commits blocks.
    store: tally_storage::Store,
    clock: Clock,
    stop: AtomicBool,
    node_key: PublicKey,
    api: config::ApiSection,
    wakes: SyncSender<Wake>,
    net: Option<NetworkHandle>,
    consensus: Mutex<ConsensusStatus>,
    occupancy: mempool::Occupancy,
    http: Arc<serve::Counters>,
    admissions: Mutex<metrics::Admissions>,
    backup_dir: std::path::PathBuf,
    /// Held while a backup is written, one at a time; when the last one was written.
    backing_up: Mutex<Option<std::time::Instant>>,
}

/// The least time between two backups: each one holds table files (or copies them), so
/// asking again and again could fill the disk.
pub const BACKUP_INTERVAL_MIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a backup is not written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNow {
    /// Another is being written.
    Running,
    /// The last one is younger than [`BACKUP_INTERVAL_MIN`]; this many seconds are left.
    TooSoon {
        /// Seconds until the next may be written.
        wait_s: u64,
    },
}

/// A backup the running node wrote ([`Shared::backup`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Backup {
    /// Its directory: a RocksDB checkpoint, which `tally node restore` and `tally audit
    /// verify --data-dir` read.
    pub path: std::path::PathBuf,
    /// The chain it holds.
    pub chain_id: tally_types::Name,
    /// The hash of that chain's genesis.
    pub genesis_hash: tally_types::Hash,
    /// The last block it holds.
    pub height: u64,
    /// That block's hash.
    pub head_hash: tally_types::Hash,
}

impl Shared {
    /// Locks the engine. A poisoned lock means the consensus thread panicked: the node has
    /// halted.
    pub fn engine(&self) -> Result<MutexGuard<'_, Engine>, NodeError> {
        self.engine.lock().map_err(|_| NodeError::Halted)
    }

    /// Admits entries submitted to the API, in order. Each entry is admitted or refused on
    /// its own, with its id. What the mempool would refuse whatever the signature (pending
    /// already, a sequence number used or too far ahead) is refused before any check, so a
    /// submitter that runs ahead of its commits and retries costs lookups, not signature
    /// checks; then the rest claim room in the mempool, and what finds none is refused
    /// `mempool_full` unchecked. The others' signatures are checked before the engine's lock
    /// is taken, many at once in one batch ([`tally_state::verify_entries`]), so submissions
    /// on many connections are checked in parallel. Each entry is hashed to its id once.
    fn submit(&self, entries: Vec<SignedEntry>) -> Result<Vec<Answer>, NodeError> {
        let entries: Vec<IdentifiedEntry> = entries.into_iter().map(IdentifiedEntry::new).collect();
        let ids: Vec<EntryId> = entries.iter().map(IdentifiedEntry::id).collect();
        let mut answers: Vec<Option<Result<(), Rejection>>> = vec![None; ids.len()];
        let (mut to_check, mut at) = (Vec::new(), Vec::new());
        {
            let mut engine = self.engine()?;
            for (i, entry) in entries.into_iter().enumerate() {
                match engine.refusal_unchecked(&entry)? {
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
        let submitted = self.engine()?.submit(self.clock.now(), checked)?;
        drop(claim);
        for (verdict, &i) in submitted.answers.into_iter().zip(&at) {
            answers[i] = Some(verdict.map(|_| ()));
        }
        if submitted.wake {
            let _ = self.wakes.try_send(Wake::Work);
        }
        let full = self.occupancy.full();
        let answers: Vec<Answer> = ids
            .into_iter()
            .zip(answers)
            .map(|(id, answer)| (id, answer.unwrap_or_else(|| Err(full.clone()))))
            .collect();
        if let Ok(mut admissions) = self.admissions.lock() {
            for (_, answer) in &answers {
                admissions.count(answer);
            }
        }
        Ok(answers)
    }

    /// Writes a backup of the data directory into `node.backup_dir` while the node runs
    /// ([`tally_storage::Store::checkpoint`]): whole blocks up to the head of the moment.
    /// Not now while another backup is being written, or within [`BACKUP_INTERVAL_MIN`] of
    /// the last.
    pub fn backup(&self) -> Result<Result<Backup, NotNow>, NodeError> {
        let mut last = match self.backing_up.try_lock() {
            Ok(last) => last,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(Err(NotNow::Running)),
            // A backup that panicked leaves nothing half-done that a next one depends on.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if let Some(at) = *last {
            let since = at.elapsed();
            if since < BACKUP_INTERVAL_MIN {
                let wait_s = (BACKUP_INTERVAL_MIN - since).as_secs().max(1);
                return Ok(Err(NotNow::TooSoon { wait_s }));
            }
        }
        let dir = &self.backup_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            NodeError::Config(format!(
                "cannot create backup directory {}: {e}",
                dir.display()
            ))
        })?;
        let genesis = self
            .store
            .genesis()?
            .ok_or_else(|| NodeError::Corrupt("the data directory holds no genesis".into()))?;
        let stamp = consensus::now_ms().0;
        let mut path = dir.join(format!("{}-{stamp}", genesis.chain_id));
        for n in 1.. {
            if !path.exists() {
                break;
            }
            path = dir.join(format!("{}-{stamp}-{n}", genesis.chain_id));
        }
        self.store.checkpoint(&path)?;
        // Named in full: the operator reads it from another directory than the node's.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let head = tally_storage::Store::open_read_only(&path)?.head()?;
        tracing::info!(path = %path.display(), height = head.height, "backup written");
        *last = Some(std::time::Instant::now());
        Ok(Ok(Backup {
            path,
            chain_id: genesis.chain_id.clone(),
            genesis_hash: genesis.hash(),
            height: head.height,
            head_hash: head.hash,
        }))
    }

    /// What the API said to the entries submitted to it.
    pub fn admissions(&self) -> metrics::Admissions {
        self.admissions
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    fn publish_status(&self, status: &ConsensusStatus) {
        if let Ok(mut s) = self.consensus.lock() {
            *s = status.clone();
        }
    }

    /// The consensus status, as the engine last published it, with the time since the last
    /// commit counted to now.
    pub fn consensus_status(&self) -> Option<ConsensusStatus> {
        let mut status = self.consensus.lock().ok().map(|s| s.clone())?;
        status.since_commit_ms = self
            .clock
            .now()
            .mono_ms
            .saturating_sub(status.last_commit_mono_ms);
        Some(status)
    }

    /// What the API's connections did.
    pub fn http_status(&self) -> serve::CountersSnapshot {
        self.http.snapshot()
    }

    /// Counts a request body that did not arrive in time.
    pub(crate) fn body_timed_out(&self) {
        self.http.body_timed_out();
    }

    /// Peers connected and the network's drop counters, when networked.
    pub fn network_status(&self) -> Option<(Vec<PublicKey>, tally_network::CountersSnapshot)> {
        self.net
            .as_ref()
            .map(|n| (n.connected().into_iter().collect(), n.counters()))
    }
}

/// Opens the data directory, initialising it from genesis when new, checks it, and reloads
/// the state (checked against the head's state root), the safety record and the count of
/// evidence held. A damaged directory is repaired when the config allows and peers can give
/// the chain again ([`repair`]); otherwise the node refuses to start and says what to do.
fn open_ledger(
    config: &NodeConfig,
    genesis: Genesis,
    me: &PublicKey,
) -> Result<(Ledger, tally_storage::Store, Option<SafetyRecord>, u64), NodeError> {
    let dir = &config.node.data_dir;
    tally_storage::finish_set_aside(dir)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| NodeError::Config(format!("cannot create {}: {e}", dir.display())))?;
    let (store, state) = match open_checked(config, &genesis) {
        Err(e) if e.is_damage() => {
            repair(config, &genesis, me, &e.to_string())?;
            open_checked(config, &genesis)?
        }
        opened => opened?,
    };
    let head = store.head()?;
    let record = match store.safety_record()? {
        Some(bytes) => Some(SafetyRecord::decode(&bytes).map_err(|e| {
            NodeError::Corrupt(format!(
                "the consensus safety record does not decode ({e}); it may be from an older version"
            ))
        })?),
        None => None,
    };
    let evidence = store.evidence()?.len() as u64;
    let ledger = Ledger::new(
        LedgerLimits::of(config),
        genesis,
        Box::new(store.clone()),
        state,
        head,
    );
    Ok((ledger, store, record, evidence))
}

/// Opens the data directory and checks what a start can afford to read: damage a running
/// node noted, the most recent blocks, and the whole state (every record against its tree
/// leaf, the tree against the head's state root).
fn open_checked(
    config: &NodeConfig,
    genesis: &Genesis,
) -> Result<(tally_storage::Store, tally_state::State), tally_storage::StorageError> {
    let store = tally_storage::Store::open_with(&config.node.data_dir, storage_limits(config))?;
    store.init_genesis(genesis)?;
    if let Some(what) = store.damage_noted()? {
        return Err(tally_storage::StorageError::Corrupt(what));
    }
    let head = store.head()?;
    let recent = config.storage.check_recent_blocks;
    store.check_blocks(head.height.saturating_sub(recent) + 1, head.height)?;
    let state = store.load_state()?;
    Ok((store, state))
}

/// The memory limits storage opens the data directory with.
fn storage_limits(config: &NodeConfig) -> tally_storage::MemoryLimits {
    tally_storage::MemoryLimits {
        cache_bytes: config.storage.cache_mib << 20,
        write_buffer_bytes: config.storage.write_buffer_mib << 20,
    }
}

/// Whether this node can fetch the chain again: genesis names a validator other than it, which
/// it reaches through its `[network]`. Block sync asks validators only.
fn can_refetch(config: &NodeConfig, genesis: &Genesis, me: &PublicKey) -> bool {
    config.network.is_some() && genesis.validator_keys().iter().any(|v| v != me)
}

/// Sets a damaged data directory aside, keeping what this validator signed, so the node
/// fetches the chain again from its peers; or, when it may not or cannot, the error that
/// tells the operator what to do. It repairs by itself once: a directory an earlier repair set
/// aside and nobody has looked at yet says something may be wrong beyond one disk (a release
/// whose checks fail on every node would otherwise have every node fetch a chain that no node
/// holds any more).
fn repair(
    config: &NodeConfig,
    genesis: &Genesis,
    me: &PublicKey,
    damage: &str,
) -> Result<(), NodeError> {
    let dir = &config.node.data_dir;
    if !can_refetch(config, genesis, me) {
        return Err(NodeError::Damaged(format!(
            "{damage}. No other validator can give this node the chain again: restore {} from \
             a backup (docs/operator-guide.md, \"Backups\")",
            dir.display()
        )));
    }
    let reset_hint = format!(
        "Run `tally node reset --config <this config>`: it sets {} aside, keeping the safety \
         record, and the node fetches the chain again from the other validators",
        dir.display()
    );
    if !config.storage.repair {
        return Err(NodeError::Damaged(format!("{damage}. {reset_hint}")));
    }
    if let Some(earlier) = tally_storage::set_aside_earlier(dir).first() {
        return Err(NodeError::Damaged(format!(
            "{damage}. This node repaired its directory before and {} is still there: look at \
             both, delete it once you are sure, and start again; or {reset_hint}",
            earlier.display()
        )));
    }
    tracing::error!(data_dir = %dir.display(), %damage, "the data directory is damaged; setting it aside and fetching the chain again from the peers");
    let aside = tally_storage::set_aside(dir).map_err(|e| {
        NodeError::Damaged(format!(
            "{damage}; and it cannot be set aside ({e}): restore {} from a backup",
            dir.display()
        ))
    })?;
    tracing::warn!(aside = %aside.display(), "the damaged directory is kept there; delete it once this node has caught up");
    Ok(())
}

/// Sets a stopped node's data directory aside, keeping its safety record, so that it fetches
/// the chain again from the other validators when it next starts: the reset an operator runs,
/// in place of deleting the directory, which would lose the record that keeps a validator from
/// signing twice. Refused where no other validator could give the chain back. Returns where
/// the old directory went.
pub fn reset(config: &NodeConfig) -> Result<std::path::PathBuf, NodeError> {
    let dir = &config.node.data_dir;
    let genesis = load_genesis(&config.node.genesis)?;
    let me = keyfile::read_key_file(&config.node.node_key)
        .map_err(|e| NodeError::Config(e.to_string()))?
        .public();
    if !can_refetch(config, &genesis, &me) {
        return Err(NodeError::Config(format!(
            "no other validator could give this node the chain again: a reset of {} would lose \
             it. Restore from a backup instead",
            dir.display()
        )));
    }
    tally_storage::finish_set_aside(dir)?;
    Ok(tally_storage::set_aside(dir)?)
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
    scrub: Option<scrub::Scrub>,
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
        let _ = self.shared.wakes.try_send(Wake::Stop);
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
        if let Some(scrub) = self.scrub.take() {
            if let Some(damage) = tokio::task::spawn_blocking(move || scrub.join())
                .await
                .ok()
                .flatten()
            {
                return Err(NodeError::Damaged(format!(
                    "{damage}. The next start sets the data directory aside and fetches the \
                     chain again from the peers"
                )));
            }
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

/// Open files RocksDB may hold (tally-storage sets its `max_open_files`), and a margin for the
/// write-ahead log, the logs and the runtime's own descriptors.
const FILES_BESIDES_CONNECTIONS: u64 = 256 + 64;

/// Raises the open-file soft limit to the hard limit, and warns when even that is below what
/// the configured connection caps and RocksDB can use together. A systemd unit starts with a
/// soft limit of 1,024: if the API's clients take them all, RocksDB cannot open a file and the
/// validator stops. `validators` is the size of the validator set, whose keys
/// may each connect.
fn raise_open_files_limit(config: &NodeConfig, validators: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit still stops at the kernel's most open files per process.
    let ceiling = limit.maximum.or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    let below_hard = match (limit.current, ceiling) {
        (Some(soft), Some(hard)) => soft < hard,
        _ => false,
    };
    if below_hard {
        let raised = Rlimit {
            current: ceiling,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
    let peers = config.network.as_ref().map_or(0, |n| {
        let known = validators + n.peers.len() + n.observers.len();
        (n.unproven_connections_max + known * n.connections_per_peer_max as usize) as u64
    });
    let needed = config.api.connections_max as u64
        + serve::REFUSALS_IN_FLIGHT_MAX as u64
        + peers
        + FILES_BESIDES_CONNECTIONS;
    match limit.current {
        Some(have) if have < needed => tracing::warn!(
            open_files_max = have,
            needed,
            "the open-file limit is below what api.connections_max, the network's connection \
             limits and RocksDB can use together; raise LimitNOFILE (ulimit -n) or lower the caps"
        ),
        have => tracing::info!(open_files_max = ?have, needed, "open-file limit"),
    }
}

/// Opens the data directory, joins the network, starts consensus (or, for a key outside the
/// validator set, follows as an observer) and the API.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let genesis = load_genesis(&config.node.genesis)?;
    let key = keyfile::read_key_file(&config.node.node_key)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let me = key.public();
    let (ledger, store, record, evidence_held) =
        tokio::task::block_in_place(|| open_ledger(&config, genesis.clone(), &me))?;
    // The network's allowlist is set at start from the validator set the state holds then.
    let validators = ledger.state().validators()?;
    raise_open_files_limit(&config, validators.len());
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
    let queue_max = config
        .network
        .as_ref()
        .map_or(1024, |n| n.inbound_queue_max);
    let (wakes_tx, wakes_rx) = sync_channel::<Wake>(queue_max);
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
                    limits: n.limits(),
                },
                &key,
                Arc::new(StoreSource(store.clone())),
                wakes_tx.clone(),
            )
            .await
            .map_err(|e| NodeError::Config(format!("network: {e}")))?;
            // Pushed blocks travel as requests, synced ones as responses: fit both limits.
            let sync_bytes_max = n.request_bytes_max.min(n.response_bytes_max) / 2;
            (Some(net), sync_bytes_max, n.observers.clone())
        }
    };
    let clock = Clock::new();
    let occupancy = ledger.mempool().occupancy();
    let engine = Engine::new(
        EngineConfig {
            key,
            timeouts: config.consensus.timeouts(),
            observers,
            networked: network.is_some(),
            tick_ms: config.consensus.tick_ms,
            interval_ms: config.block.interval_ms,
            sync_bytes_max,
            evidence_held,
        },
        ledger,
        record,
        clock.now(),
    )?;
    let role = engine.role();
    tracing::info!(chain = %genesis.chain_id, height = head.height, head = %head.hash.short(), key = %me.short(), ?role, validators = validators.len(), "opened ledger");
    let net = network.as_ref().map(|n| n.handle.clone());
    let shared = Arc::new(Shared {
        consensus: Mutex::new(engine.status().clone()),
        engine: Mutex::new(engine),
        occupancy,
        store,
        clock,
        stop: AtomicBool::new(false),
        node_key: me,
        api: config.api.clone(),
        wakes: wakes_tx,
        net: net.clone(),
        http: Arc::default(),
        admissions: Mutex::default(),
        backup_dir: config.node.backup_dir.clone(),
        backing_up: Mutex::new(None),
    });
    let cancel = CancellationToken::new();
    let driver = {
        let cancel = cancel.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                let result = consensus::run(shared, net, wakes_rx);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "consensus driver failed; stopping the node");
                }
                cancel.cancel();
                result
            })?
    };
    let scrub = match config.storage.scrub_blocks_per_second {
        0 => None,
        n => Some(scrub::Scrub::start(
            shared.store.clone(),
            n,
            config.storage.repair && can_refetch(&config, &genesis, &me),
            cancel.clone(),
        )?),
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen).await?;
    let api_addr = listener.local_addr()?;
    let app = api::router(shared.clone());
    let server = tokio::spawn(serve::serve(
        listener,
        app,
        config.api.clone(),
        shared.http.clone(),
        cancel.clone(),
    ));
    tracing::info!(%api_addr, "API listening");
    Ok(RunningNode {
        api_addr,
        p2p_addr: network.as_ref().map(|n| n.listen_addr),
        shared,
        cancel,
        driver: Some(driver),
        server,
        network,
        scrub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_a_storage_section_opens_storage_with_its_defaults() {
        let text = "[node]\ndata_dir = \"d\"\ngenesis = \"g.toml\"\nnode_key = \"k.key\"\n";
        let config: NodeConfig = toml::from_str(text).expect("a minimal config");
        assert_eq!(
            storage_limits(&config),
            tally_storage::MemoryLimits::default()
        );
    }
}
