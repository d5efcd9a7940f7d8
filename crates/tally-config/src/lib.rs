//! Node configuration: one TOML file per node (see node-config/). Every limit on something that
//! grows lives here, with its unit in its name, and is documented in docs/operator-guide.md.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its data and which chain it is on.
    pub node: NodeSection,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// The pool of entries waiting for a block.
    #[serde(default)]
    pub mempool: MempoolSection,
    /// Block production.
    #[serde(default)]
    pub block: BlockSection,
    /// Peers. Required when genesis names more than one validator, and for observers.
    #[serde(default)]
    pub network: Option<NetworkSection>,
    /// Consensus timeouts.
    #[serde(default)]
    pub consensus: ConsensusSection,
    /// RocksDB's memory.
    #[serde(default)]
    pub storage: StorageSection,
}

/// One peer to keep a connection to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The peer's node key (hex); it must be a genesis validator or a listed observer.
    pub key: tally_types::PublicKey,
    /// Where it listens for peers.
    pub addr: SocketAddr,
}

/// The peer-to-peer network. Every size and queue here is a hard limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Address to listen on for peers.
    pub listen: SocketAddr,
    /// Peers to dial and keep connected (normally every other validator; for an observer,
    /// the validators it follows).
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// Keys of observer nodes allowed to connect, besides the genesis validators. Validators
    /// push each committed block to these.
    #[serde(default)]
    pub observers: Vec<tally_types::PublicKey>,
    /// Largest message accepted from a peer, in bytes (a proposal carries a whole block).
    #[serde(default = "defaults::request_bytes_max")]
    pub request_bytes_max: usize,
    /// Largest block-sync answer accepted, in bytes.
    #[serde(default = "defaults::response_bytes_max")]
    pub response_bytes_max: usize,
    /// Messages from peers waiting for the node; beyond it they are dropped and counted.
    #[serde(default = "defaults::queue_max")]
    pub inbound_queue_max: usize,
    /// Messages waiting to be written to each peer; beyond it (or beyond twice
    /// `request_bytes_max` bytes) they are dropped and counted.
    #[serde(default = "defaults::queue_max")]
    pub outbound_queue_max: usize,
    /// Connections allowed per peer.
    #[serde(default = "defaults::connections_per_peer_max")]
    pub connections_per_peer_max: u32,
    /// Time an incoming connection has to prove an allowed key, in milliseconds; also the
    /// limit on a dial's handshake.
    #[serde(default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Incoming connections still in their handshake, in all. A newcomer beyond it takes the
    /// place of the oldest one from the source address holding the most.
    #[serde(default = "defaults::unproven_connections_max")]
    pub unproven_connections_max: usize,
    /// Incoming connections still in their handshake from one source address (an IPv6 /64
    /// counts as one). A newcomer beyond it takes the place of that address's oldest.
    #[serde(default = "defaults::unproven_per_address_max")]
    pub unproven_per_address_max: usize,
}

impl NetworkSection {
    /// The network layer's limits.
    pub fn limits(&self) -> tally_network::Limits {
        tally_network::Limits {
            request_bytes_max: self.request_bytes_max,
            response_bytes_max: self.response_bytes_max,
            inbound_queue_max: self.inbound_queue_max,
            outbound_queue_max: self.outbound_queue_max,
            connections_per_peer_max: self.connections_per_peer_max,
            gate: tally_network::gate::GateLimits {
                handshake_timeout: std::time::Duration::from_millis(self.handshake_timeout_ms),
                unproven_max: self.unproven_connections_max,
                unproven_per_address_max: self.unproven_per_address_max,
            },
        }
    }
}

mod defaults {
    pub fn request_bytes_max() -> usize {
        8 << 20
    }
    pub fn response_bytes_max() -> usize {
        16 << 20
    }
    pub fn queue_max() -> usize {
        8192
    }
    pub fn connections_per_peer_max() -> u32 {
        2
    }
    use tally_network::gate::GateLimits;
    pub fn backup_dir() -> std::path::PathBuf {
        "backups".into()
    }

    pub fn handshake_timeout_ms() -> u64 {
        GateLimits::default().handshake_timeout.as_millis() as u64
    }
    pub fn unproven_connections_max() -> usize {
        GateLimits::default().unproven_max
    }
    pub fn unproven_per_address_max() -> usize {
        GateLimits::default().unproven_per_address_max
    }
}

/// Consensus timeouts (see docs/consensus.md). Each grows by `delta_ms` per round.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusSection {
    /// Wait for a proposal, in milliseconds (round 0).
    pub propose_ms: u64,
    /// Wait for more prevotes after 2f+1 disagree, in milliseconds.
    pub prevote_ms: u64,
    /// Wait for more precommits after 2f+1 disagree, in milliseconds.
    pub precommit_ms: u64,
    /// Added to each timeout per round, in milliseconds.
    pub delta_ms: u64,
    /// No timeout grows beyond this, in milliseconds.
    pub max_ms: u64,
    /// How often the node re-sends its votes and checks whether it is behind, in milliseconds.
    pub tick_ms: u64,
}

impl Default for ConsensusSection {
    fn default() -> Self {
        let t = tally_consensus::Timeouts::default();
        Self {
            propose_ms: t.propose_ms,
            prevote_ms: t.prevote_ms,
            precommit_ms: t.precommit_ms,
            delta_ms: t.delta_ms,
            max_ms: t.max_ms,
            tick_ms: 250,
        }
    }
}

impl ConsensusSection {
    /// The core's timeouts.
    pub fn timeouts(&self) -> tally_consensus::Timeouts {
        tally_consensus::Timeouts {
            propose_ms: self.propose_ms,
            prevote_ms: self.prevote_ms,
            precommit_ms: self.precommit_ms,
            delta_ms: self.delta_ms,
            max_ms: self.max_ms,
        }
    }
}

/// Paths. Relative paths are resolved against the directory of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// RocksDB data directory (created if missing).
    pub data_dir: PathBuf,
    /// The genesis file every node of the chain shares.
    pub genesis: PathBuf,
    /// This node's key file (mode 0600): its consensus key when it is a genesis validator,
    /// and its network identity either way.
    #[serde(alias = "validator_key")]
    pub node_key: PathBuf,
    /// Where `tally node backup` has the running node write its backups, one directory each
    /// (never deleted by the node: an operator moves them off the host).
    #[serde(default = "defaults::backup_dir")]
    pub backup_dir: PathBuf,
}

/// HTTP API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address to listen on. Use 127.0.0.1 unless a reverse proxy fronts the node.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger requests get 413 `body_too_large`
    /// (after the node drains up to `api::DRAIN_BYTES_MAX` of them, so the client hears why).
    pub body_bytes_max: usize,
    /// Most entries in one `POST /v1/entries/batch`; more get 413 `body_too_large`. Each is
    /// admitted or refused on its own; the batch's signatures are checked together, off the
    /// ledger lock.
    pub batch_entries_max: usize,
    /// Largest body of `POST /v1/entries/batch`, in bytes (drained as `body_bytes_max` is).
    pub batch_bytes_max: usize,
    /// Most rejected-entry reasons remembered for status queries (oldest forgotten first).
    pub recent_rejections_max: usize,
    /// Connections open at once; a newcomer beyond it is answered 503 `too_many_connections`.
    pub connections_max: usize,
    /// Time for a request's start line and headers to arrive, from the connection opening or
    /// the previous response, in milliseconds: also how long a kept-alive connection may sit
    /// idle. Beyond it the connection is closed.
    pub header_timeout_ms: u64,
    /// Time for a request's body to arrive once its headers have, in milliseconds. Beyond it:
    /// 408 `body_timeout`.
    pub body_timeout_ms: u64,
    /// How long a response may make no progress (a client that stops reading), in
    /// milliseconds. Beyond it the connection is closed.
    pub write_timeout_ms: u64,
    /// Largest request start line and headers, in bytes. Larger: 431.
    pub header_bytes_max: usize,
    /// At shutdown, how long connections may finish what they are serving before they are
    /// cut, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            body_bytes_max: 16 * 1024,
            batch_entries_max: 256,
            batch_bytes_max: 1024 * 1024,
            recent_rejections_max: 10_000,
            connections_max: 512,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            header_bytes_max: 16 * 1024,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// Mempool limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolSection {
    /// Most entries held in total; beyond it submissions get `mempool_full`.
    pub entries_max: usize,
    /// Most entries held per author, which is also how far ahead of the author's next sequence
    /// number an entry may be (an offline device's backlog); beyond it: `future_sequence`.
    pub per_author_max: usize,
}

impl Default for MempoolSection {
    fn default() -> Self {
        Self {
            entries_max: 50_000,
            per_author_max: 256,
        }
    }
}

/// Block production.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockSection {
    /// A block is produced this often when entries are waiting, in milliseconds.
    pub interval_ms: u64,
    /// Most entries in one block; a full batch is produced without waiting for the interval.
    pub entries_max: usize,
}

impl Default for BlockSection {
    fn default() -> Self {
        Self {
            interval_ms: 200,
            entries_max: 2_000,
        }
    }
}

/// RocksDB's memory. The state's records and most of its tree live on disk and are read
/// through the cache, so these and the mempool bound a node's memory; the chain adds only the
/// top of the state tree, about 14 bytes per record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Cache of data, index and filter blocks, shared by all column families, in MiB.
    pub cache_mib: usize,
    /// Writes held in memtables before they are flushed to disk, all column families
    /// together, in MiB.
    pub write_buffer_mib: usize,
    /// The most recent blocks read back and checked at every start.
    pub check_recent_blocks: u64,
    /// Blocks the background scrub reads back and checks each second, walking the whole chain
    /// over and over; 0 turns the scrub off.
    pub scrub_blocks_per_second: u64,
    /// Whether a node with peers repairs a damaged data directory by itself: it sets the
    /// directory aside, keeping its safety record, and fetches the chain again. When off, or
    /// without peers, it refuses to start and says what to run.
    pub repair: bool,
}

impl Default for StorageSection {
    /// The memory limits are those a directory opened without a config gets
    /// (`tally_storage::MemoryLimits::default`, which a tally-node test holds equal).
    fn default() -> Self {
        Self {
            cache_mib: 32,
            write_buffer_mib: 32,
            check_recent_blocks: 1_000,
            scrub_blocks_per_second: 200,
            repair: true,
        }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path} is invalid: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// The file, with the environment's `TALLY_<SECTION>_<KEY>` overrides applied, is not
    /// valid for this schema (an unknown key, or a value of the wrong type).
    #[error("config {path} with {vars} from the environment is invalid: {source}")]
    ParseWithEnv {
        /// The path.
        path: PathBuf,
        /// The overriding variables, comma-separated.
        vars: String,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("config value {field} = {value} is out of range: {why}")]
    Range {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        why: &'static str,
    },
}

/// A node's config as a person would write it, with only what differs from the defaults:
/// what `tally node init` and `tally devnet` write.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    /// A comment line at the top (what wrote the file, for whom).
    pub comment: &'a str,
    /// `node.data_dir`, `node.genesis`, `node.node_key`, as written (relative to the file).
    pub data_dir: &'a str,
    /// See `data_dir`.
    pub genesis: &'a str,
    /// See `data_dir`.
    pub node_key: &'a str,
    /// `api.listen`.
    pub api_listen: SocketAddr,
    /// `block.interval_ms`, when not the default.
    pub block_interval_ms: Option<u64>,
    /// `network.listen`, `network.observers` and `network.peers`, when networked.
    pub network: Option<(SocketAddr, &'a [tally_types::PublicKey], &'a [PeerEntry])>,
}

impl Draft<'_> {
    /// The file's text.
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = format!(
            "# {}\n[node]\ndata_dir = {}\ngenesis = {}\nnode_key = {}\n\n[api]\nlisten = \"{}\"\n",
            self.comment,
            quote(self.data_dir),
            quote(self.genesis),
            quote(self.node_key),
            self.api_listen
        );
        if let Some(ms) = self.block_interval_ms {
            out.push_str(&format!("\n[block]\ninterval_ms = {ms}\n"));
        }
        if let Some((listen, observers, peers)) = self.network {
            let observers: Vec<String> = observers.iter().map(|k| format!("\"{k}\"")).collect();
            out.push_str(&format!(
                "\n[network]\nlisten = \"{listen}\"\nobservers = [{}]\n",
                observers.join(", ")
            ));
            for p in peers {
                out.push_str(&format!(
                    "\n[[network.peers]]\nkey = \"{}\"\naddr = \"{}\"\n",
                    p.key, p.addr
                ));
            }
        }
        out
    }
}

/// Environment variables named `TALLY_<SECTION>_<KEY>` override the config file's keys, so
/// a container or a systemd unit can set any of them without editing the file:
/// `TALLY_API_LISTEN=0.0.0.0:7100`, `TALLY_MEMPOOL_ENTRIES_MAX=100000`,
/// `TALLY_NETWORK_PEERS='[{key = "…", addr = "10.0.0.2:7200"}]'`. A value is read as TOML
/// (a number, `true`, an array, a quoted string) and otherwise taken as a string. Variables
/// for other sections (`TALLY_LOG`, the CLI's `TALLY_NODE`) are not the config's.
pub const ENV_PREFIX: &str = "TALLY_";

/// The sections a `TALLY_` variable may name.
const SECTIONS: [&str; 7] = [
    "node",
    "api",
    "mempool",
    "block",
    "network",
    "consensus",
    "storage",
];

/// Old names still read for a key, which an override of the key replaces.
const ALIASES: [(&str, &str, &str); 1] = [("node", "node_key", "validator_key")];

/// The config keys that `vars` override, as (variable, section, key, value).
fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String, String, toml::Value)> {
    let mut found: Vec<_> = vars
        .into_iter()
        .filter_map(|(var, raw)| {
            let name = var.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let (section, key) = name.split_once('_')?;
            if !SECTIONS.contains(&section) || key.is_empty() {
                return None;
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw));
            Some((var, section.to_string(), key.to_string(), value))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

impl NodeConfig {
    /// Reads a config file, applies the environment's `TALLY_<SECTION>_<KEY>` overrides
    /// ([`ENV_PREFIX`]), and resolves relative paths against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // Only `TALLY_` variables are read, so another variable that is not UTF-8 is no
        // concern; a `TALLY_` one that is not is read lossily and then fails as a value.
        let vars = std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok().filter(|k| k.starts_with(ENV_PREFIX))?;
            Some((k, v.to_string_lossy().into_owned()))
        });
        Self::load_with_env(path, vars)
    }

    /// [`NodeConfig::load`] with the given variables in place of the process's environment.
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let parse_error = |source| ConfigError::Parse {
            path: path.into(),
            source,
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        let overrides = overrides(vars);
        for (_, section, key, value) in &overrides {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                for (_, _, old) in ALIASES.iter().filter(|a| (a.0, a.1) == (section, key)) {
                    t.remove(*old);
                }
                t.insert(key.clone(), value.clone());
            }
        }
        let mut cfg: NodeConfig = match overrides.is_empty() {
            true => table.try_into().map_err(parse_error)?,
            false => table
                .try_into()
                .map_err(|source| ConfigError::ParseWithEnv {
                    path: path.into(),
                    vars: overrides
                        .iter()
                        .map(|o| o.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    source: Box::new(source),
                })?,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.node.data_dir,
            &mut cfg.node.genesis,
            &mut cfg.node.node_key,
            &mut cfg.node.backup_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every limit is within a sane range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.backup_dir.starts_with(&self.node.data_dir) {
            return Err(ConfigError::Range {
                field: "node.backup_dir",
                value: self.node.backup_dir.display().to_string(),
                why: "outside node.data_dir (a set-aside or restore moves the data directory, \
                      and backups belong off it)",
            });
        }
        let range = |field, value: usize, lo: usize, hi: usize, why| {
            if value < lo || value > hi {
                Err(ConfigError::Range {
                    field,
                    value: value.to_string(),
                    why,
                })
            } else {
                Ok(())
            }
        };
        range(
            "api.body_bytes_max",
            self.api.body_bytes_max,
            4096,
            1 << 20,
            "4096 to 1048576",
        )?;
        range(
            "api.batch_entries_max",
            self.api.batch_entries_max,
            1,
            10_000,
            "1 to 10000",
        )?;
        range(
            "api.batch_bytes_max",
            self.api.batch_bytes_max,
            4096,
            16 << 20,
            "4096 to 16777216",
        )?;
        range(
            "api.recent_rejections_max",
            self.api.recent_rejections_max,
            1,
            1_000_000,
            "1 to 1000000",
        )?;
        range(
            "api.connections_max",
            self.api.connections_max,
            1,
            65_536,
            "1 to 65536",
        )?;
        range(
            "api.header_timeout_ms",
            self.api.header_timeout_ms as usize,
            100,
            600_000,
            "100 to 600000",
        )?;
        range(
            "api.body_timeout_ms",
            self.api.body_timeout_ms as usize,
            100,
            600_000,
            "100 to 600000",
        )?;
        range(
            "api.write_timeout_ms",
            self.api.write_timeout_ms as usize,
            100,
            600_000,
            "100 to 600000",
        )?;
        range(
            "api.header_bytes_max",
            self.api.header_bytes_max,
            1024,
            1 << 20,
            "1024 to 1048576",
        )?;
        range(
            "api.shutdown_grace_ms",
            self.api.shutdown_grace_ms as usize,
            0,
            600_000,
            "0 to 600000",
        )?;
        range(
            "mempool.entries_max",
            self.mempool.entries_max,
            1,
            10_000_000,
            "1 to 10000000",
        )?;
        range(
            "mempool.per_author_max",
            self.mempool.per_author_max,
            1,
            100_000,
            "1 to 100000",
        )?;
        range(
            "block.entries_max",
            self.block.entries_max,
            1,
            100_000,
            "1 to 100000",
        )?;
        range(
            "block.interval_ms",
            self.block.interval_ms as usize,
            1,
            60_000,
            "1 to 60000",
        )?;
        range(
            "storage.cache_mib",
            self.storage.cache_mib,
            1,
            1 << 20,
            "1 to 1048576",
        )?;
        range(
            "storage.write_buffer_mib",
            self.storage.write_buffer_mib,
            4,
            1 << 16,
            "4 to 65536",
        )?;
        range(
            "storage.check_recent_blocks",
            self.storage.check_recent_blocks as usize,
            0,
            10_000_000,
            "0 to 10000000",
        )?;
        range(
            "storage.scrub_blocks_per_second",
            self.storage.scrub_blocks_per_second as usize,
            0,
            100_000,
            "0 to 100000",
        )?;
        let c = &self.consensus;
        for (field, v) in [
            ("consensus.propose_ms", c.propose_ms),
            ("consensus.prevote_ms", c.prevote_ms),
            ("consensus.precommit_ms", c.precommit_ms),
            ("consensus.tick_ms", c.tick_ms),
        ] {
            range(field, v as usize, 10, 60_000, "10 to 60000")?;
        }
        range(
            "consensus.delta_ms",
            c.delta_ms as usize,
            0,
            60_000,
            "0 to 60000",
        )?;
        range(
            "consensus.max_ms",
            c.max_ms as usize,
            100,
            3_600_000,
            "100 to 3600000",
        )?;
        if c.max_ms < c.propose_ms.max(c.prevote_ms).max(c.precommit_ms) {
            return Err(ConfigError::Range {
                field: "consensus.max_ms",
                value: c.max_ms.to_string(),
                why: "must be at least each base timeout",
            });
        }
        if let Some(n) = &self.network {
            range(
                "network.request_bytes_max",
                n.request_bytes_max,
                64 << 10,
                256 << 20,
                "65536 to 268435456",
            )?;
            range(
                "network.response_bytes_max",
                n.response_bytes_max,
                64 << 10,
                1 << 30,
                "65536 to 1073741824",
            )?;
            range(
                "network.inbound_queue_max",
                n.inbound_queue_max,
                16,
                1 << 20,
                "16 to 1048576",
            )?;
            range(
                "network.outbound_queue_max",
                n.outbound_queue_max,
                16,
                1 << 20,
                "16 to 1048576",
            )?;
            range(
                "network.connections_per_peer_max",
                n.connections_per_peer_max as usize,
                1,
                8,
                "1 to 8",
            )?;
            range(
                "network.handshake_timeout_ms",
                n.handshake_timeout_ms as usize,
                100,
                60_000,
                "100 to 60000",
            )?;
            range(
                "network.unproven_connections_max",
                n.unproven_connections_max,
                1,
                65_536,
                "1 to 65536",
            )?;
            range(
                "network.unproven_per_address_max",
                n.unproven_per_address_max,
                1,
                n.unproven_connections_max,
                "1 to network.unproven_connections_max",
            )?;
            // A proposal carries a whole block, and sync and pushes send batches of up to half
            // the smaller frame limit: both limits must hold two of the largest blocks.
            let block_bytes = self.block.entries_max * (tally_types::ENTRY_BYTES_MAX + 16) + 4096;
            for (field, value) in [
                ("network.request_bytes_max", n.request_bytes_max),
                ("network.response_bytes_max", n.response_bytes_max),
            ] {
                if value < 2 * block_bytes {
                    return Err(ConfigError::Range {
                        field,
                        value: value.to_string(),
                        why: "must hold two full blocks: at least 2 x (block.entries_max x 2064 + 4096) bytes",
                    });
                }
            }
        }
        // A proposer waits for the block interval before it proposes; a longer wait than the
        // others' round-0 timeout would fail every round 0.
        if self.block.interval_ms >= self.consensus.propose_ms {
            return Err(ConfigError::Range {
                field: "block.interval_ms",
                value: self.block.interval_ms.to_string(),
                why: "must be shorter than consensus.propose_ms",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<NodeConfig, String> {
        let text = format!(
            "[node]\ndata_dir = \"d\"\ngenesis = \"g.toml\"\nnode_key = \"k.key\"\n{extra}"
        );
        let cfg: NodeConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn tally_variables_override_the_file_and_a_typo_is_named() {
        let dir = std::env::temp_dir().join(format!("tally-config-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "[node]\ndata_dir = \"d\"\ngenesis = \"g.toml\"\nnode_key = \"k.key\"\n\
             [api]\nlisten = \"127.0.0.1:7100\"\n",
        )
        .expect("write");
        let key = "0c9face45551a0ce9dbcc5f96b1e7d954f518b1bb0a60437275829e06a03635c";
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cfg = NodeConfig::load_with_env(
            &file,
            env(&[
                ("TALLY_API_LISTEN", "127.0.0.1:7300"),
                ("TALLY_MEMPOOL_ENTRIES_MAX", "1234"),
                ("TALLY_STORAGE_REPAIR", "false"),
                ("TALLY_NODE_DATA_DIR", "elsewhere"),
                ("TALLY_NETWORK_LISTEN", "127.0.0.1:7400"),
                (
                    "TALLY_NETWORK_PEERS",
                    &format!("[{{ key = \"{key}\", addr = \"127.0.0.1:7401\" }}]"),
                ),
                // Not the config's: the CLI's node and the log level.
                ("TALLY_NODE", "http://127.0.0.1:7100"),
                ("TALLY_LOG", "debug"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:7300");
        assert_eq!(cfg.mempool.entries_max, 1234);
        assert!(!cfg.storage.repair);
        assert_eq!(cfg.node.data_dir, dir.join("elsewhere"));
        let network = cfg.network.expect("a network section from the environment");
        assert_eq!(network.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(network.peers.len(), 1);
        assert_eq!(network.peers[0].key.to_string(), key);

        let typo = NodeConfig::load_with_env(&file, env(&[("TALLY_API_LISTN", "x")]))
            .expect_err("an unknown key");
        assert!(typo.to_string().contains("TALLY_API_LISTN"), "{typo}");
        assert!(typo.to_string().contains("listn"), "{typo}");
        let out_of_range =
            NodeConfig::load_with_env(&file, env(&[("TALLY_MEMPOOL_ENTRIES_MAX", "0")]))
                .expect_err("out of range");
        assert!(
            out_of_range.to_string().contains("mempool.entries_max"),
            "{out_of_range}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_and_the_shipped_example_are_valid() {
        let net = "[network]\nlisten = \"127.0.0.1:7200\"\n";
        let cfg = config(net).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.consensus.tick_ms, 250);
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node-config/node.example.toml");
        NodeConfig::load(&example).unwrap_or_else(|e| panic!("{e}"));
        // The old key name is still read.
        let old = "[node]\ndata_dir = \"d\"\ngenesis = \"g.toml\"\nvalidator_key = \"k.key\"\n";
        assert!(toml::from_str::<NodeConfig>(old).is_ok());
    }

    #[test]
    fn limits_that_cannot_work_together_are_refused() {
        let cases = [
            // The proposer would wait longer than the others wait for its proposal.
            ("[block]\ninterval_ms = 1000\n", "block.interval_ms"),
            // A timeout cap below a base timeout.
            ("[consensus]\nmax_ms = 200\n", "consensus.max_ms"),
            // A frame limit that cannot hold two full blocks.
            (
                "[network]\nlisten = \"127.0.0.1:7200\"\nresponse_bytes_max = 1048576\n",
                "network.response_bytes_max",
            ),
            (
                "[network]\nlisten = \"127.0.0.1:7200\"\nrequest_bytes_max = 1048576\n",
                "network.request_bytes_max",
            ),
        ];
        for (extra, field) in cases {
            let err = config(extra).map(|_| ()).expect_err(extra);
            assert!(err.contains(field), "{extra}: {err}");
        }
    }
}
