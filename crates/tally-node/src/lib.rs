//! The tally node: wiring, not rules.
//!
//! It admits signed entries into a bounded mempool, builds blocks from them behind the
//! [`consensus::Finality`] seam, has tally-state execute them, has tally-storage commit each block
//! with its state changes in one synced batch, and serves the HTTP API. Business rules live in
//! tally-state and nowhere here.

pub mod api;
pub mod config;
pub mod consensus;
pub mod keyfile;
pub mod ledger;
pub mod mempool;

use crate::config::NodeConfig;
use crate::consensus::{Finality, SoloValidator};
use crate::ledger::Ledger;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tally_state::StateRead;
use tally_types::{Genesis, PublicKey};
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

/// State shared by the API handlers and the block producer.
pub struct Shared {
    ledger: Mutex<Ledger>,
    wake: Condvar,
    stop: AtomicBool,
    validator: PublicKey,
    body_bytes_max: usize,
}

impl Shared {
    /// Locks the ledger. A poisoned lock means the producer panicked: the node has halted.
    pub fn ledger(&self) -> Result<MutexGuard<'_, Ledger>, NodeError> {
        self.ledger.lock().map_err(|_| NodeError::Halted)
    }

    fn wake_producer(&self) {
        self.wake.notify_all();
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
    shared: Arc<Shared>,
    cancel: CancellationToken,
    producer: Option<std::thread::JoinHandle<Result<(), NodeError>>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
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

    /// Runs until cancelled (Ctrl-C in the CLI) or until the block producer fails.
    pub async fn wait(mut self) -> Result<(), NodeError> {
        self.cancel.cancelled().await;
        self.stop().await
    }

    /// Stops the node: no new blocks, the API drains, the data directory is closed.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        self.cancel.cancel();
        self.stop().await
    }

    async fn stop(&mut self) -> Result<(), NodeError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_producer();
        let server = (&mut self.server).await;
        let producer = match self.producer.take() {
            Some(p) => tokio::task::spawn_blocking(move || p.join())
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => None,
        };
        match producer {
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

/// Opens the data directory, starts the block producer and the API.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let genesis = load_genesis(&config.node.genesis)?;
    let key = keyfile::read_key_file(&config.node.validator_key)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let validator = key.public();
    let ledger = tokio::task::block_in_place(|| Ledger::open(&config, genesis.clone()))?;
    let validators = ledger.state().validators()?;
    let mut finality = SoloValidator::new(key, genesis.chain_id.clone(), &validators)?;
    let head = ledger.head().clone();
    tracing::info!(chain = %genesis.chain_id, height = head.height, head = %head.hash.short(), validator = %validator.short(), "opened ledger");
    let shared = Arc::new(Shared {
        ledger: Mutex::new(ledger),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        validator,
        body_bytes_max: config.api.body_bytes_max,
    });
    let cancel = CancellationToken::new();
    let interval = Duration::from_millis(config.block.interval_ms);
    let producer = {
        let shared = shared.clone();
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name("block-producer".into())
            .spawn(move || {
                let result = produce_blocks(&shared, &mut finality, validator, interval);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "block producer failed; stopping the node");
                }
                cancel.cancel();
                result
            })?
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen).await?;
    let api_addr = listener.local_addr()?;
    let app = api::router(shared.clone(), config.api.body_bytes_max);
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
        shared,
        cancel,
        producer: Some(producer),
        server,
    })
}

fn produce_blocks(
    shared: &Shared,
    finality: &mut dyn Finality,
    proposer: PublicKey,
    interval: Duration,
) -> Result<(), NodeError> {
    // After a round that could order nothing (entries waiting behind a sequence gap), wait the
    // full interval even if the pool counts as full, so the producer never spins on the lock.
    let mut idle = false;
    loop {
        let guard = shared.ledger()?;
        let (mut ledger, _) = shared
            .wake
            .wait_timeout_while(guard, interval, |l| {
                !shared.stop.load(Ordering::SeqCst) && (idle || !l.batch_full())
            })
            .map_err(|_| NodeError::Halted)?;
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        idle = ledger.produce(finality, proposer)?.is_none();
    }
}
