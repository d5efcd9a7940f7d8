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
}

/// Paths. Relative paths are resolved against the directory of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// RocksDB data directory (created if missing).
    pub data_dir: PathBuf,
    /// The genesis file every node of the chain shares.
    pub genesis: PathBuf,
    /// This validator's consensus key file (mode 0600).
    pub validator_key: PathBuf,
}

/// HTTP API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address to listen on. Use 127.0.0.1 unless a reverse proxy fronts the node.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger requests get 413 `body_too_large`.
    pub body_bytes_max: usize,
    /// Most rejected-entry reasons remembered for status queries (oldest forgotten first).
    pub recent_rejections_max: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            body_bytes_max: 16 * 1024,
            recent_rejections_max: 10_000,
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

impl NodeConfig {
    /// Reads a config file and resolves its relative paths against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg: NodeConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.node.data_dir,
            &mut cfg.node.genesis,
            &mut cfg.node.validator_key,
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
            "api.recent_rejections_max",
            self.api.recent_rejections_max,
            1,
            1_000_000,
            "1 to 1000000",
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
        Ok(())
    }
}
