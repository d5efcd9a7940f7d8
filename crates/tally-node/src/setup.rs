//! Setting a node up on a host: checking a config without starting the node
//! (`tally node check-config`), so an operator finds a wrong path, key or genesis before a
//! start fails, or worse, before a node joins the wrong chain.

use crate::config::NodeConfig;
use crate::{keyfile, load_genesis, NodeError};
use serde::Serialize;
use std::path::Path;
use tally_types::{Hash, Name, PublicKey};

/// What a config sets up, as far as can be told without starting the node.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigCheck {
    /// The chain the genesis file names.
    pub chain_id: Name,
    /// The genesis file's hash, which every node of the chain shares.
    pub genesis_hash: Hash,
    /// This node's key.
    pub node_key: PublicKey,
    /// `validator` when genesis names the key among its validators, else `observer`.
    pub role: &'static str,
    /// The agency that runs it, for a validator.
    pub agency: Option<Name>,
    /// Validators in genesis.
    pub validators: usize,
    /// Where the API listens.
    pub api_listen: String,
    /// Where peers reach this node, when networked.
    pub peer_listen: Option<String>,
    /// Peers it dials.
    pub peers: usize,
    /// What the data directory holds: `new` (absent or empty), or the chain's height.
    pub data_dir: String,
    /// Things that work but deserve a look.
    pub warnings: Vec<String>,
}

/// Checks what a node would check at start, and what it could only find out later: the
/// genesis file and key are readable and valid, a node that needs peers has a `[network]`
/// section, every peer is one the chain lets in, and a data directory that already holds a
/// chain holds this genesis's. Reads the data directory without locking it, so a running
/// node's config can be checked too.
pub fn check_config(config: &NodeConfig) -> Result<ConfigCheck, NodeError> {
    let genesis = load_genesis(&config.node.genesis)?;
    let key = keyfile::read_key_file(&config.node.node_key)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let me = key.public();
    let agency = genesis
        .validators
        .iter()
        .find(|v| v.key == me)
        .map(|v| v.agency.clone());
    let mut warnings = Vec::new();
    let lone = genesis.validators.len() == 1 && agency.is_some();
    match &config.network {
        None if !lone => {
            return Err(NodeError::Config(format!(
                "genesis names {} validators{}; this node needs a [network] section to reach them",
                genesis.validators.len(),
                if agency.is_some() {
                    ""
                } else {
                    " and this key is not one of them (an observer)"
                }
            )))
        }
        None => {}
        Some(n) => {
            for p in &n.peers {
                let known = genesis.validators.iter().any(|v| v.key == p.key)
                    || n.observers.contains(&p.key);
                if p.key == me {
                    warnings.push(format!(
                        "network.peers lists this node's own key at {}; it is skipped",
                        p.addr
                    ));
                } else if !known {
                    warnings.push(format!(
                        "peer {} at {} is neither a genesis validator nor in network.observers",
                        p.key.short(),
                        p.addr
                    ));
                }
            }
            if agency.is_none() && n.peers.is_empty() {
                return Err(NodeError::Config(
                    "this key is not a genesis validator (an observer) and network.peers is \
                     empty: it has nobody to follow"
                        .into(),
                ));
            }
            if agency.is_some() && n.peers.len() + 1 < genesis.validators.len() {
                warnings.push(format!(
                    "network.peers lists {} peers for {} other validators; the ones missing \
                     must dial this node",
                    n.peers.len(),
                    genesis.validators.len() - 1
                ));
            }
        }
    }
    if !config.api.listen.ip().is_loopback() {
        warnings.push(format!(
            "api.listen {} is not a loopback address: the API has no TLS or access control of \
             its own yet; put it behind a proxy that adds them (docs/api.md)",
            config.api.listen
        ));
    }
    let data_dir = data_dir_state(&config.node.data_dir, &genesis)?;
    Ok(ConfigCheck {
        chain_id: genesis.chain_id.clone(),
        genesis_hash: genesis.hash(),
        node_key: me,
        role: if agency.is_some() {
            "validator"
        } else {
            "observer"
        },
        agency,
        validators: genesis.validators.len(),
        api_listen: config.api.listen.to_string(),
        peer_listen: config.network.as_ref().map(|n| n.listen.to_string()),
        peers: config.network.as_ref().map_or(0, |n| n.peers.len()),
        data_dir,
        warnings,
    })
}

/// `new`, or the height of the chain the directory holds; an error when it holds another
/// chain's.
fn data_dir_state(dir: &Path, genesis: &tally_types::Genesis) -> Result<String, NodeError> {
    let holds_db = dir.join("CURRENT").exists();
    if !holds_db {
        if dir.exists() && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(NodeError::Config(format!(
                "data directory {} is not empty and holds no chain",
                dir.display()
            )));
        }
        return Ok("new".into());
    }
    let store = tally_storage::Store::open_read_only(dir)?;
    match store.genesis()? {
        Some(held) if held.hash() != genesis.hash() => Err(NodeError::Config(format!(
            "data directory {} holds chain {} (genesis {}), not {} (genesis {}) as the config's \
             genesis file says",
            dir.display(),
            held.chain_id,
            held.hash().short(),
            genesis.chain_id,
            genesis.hash().short()
        ))),
        Some(_) => Ok(format!("height {}", store.head()?.height)),
        None => Ok("new".into()),
    }
}
