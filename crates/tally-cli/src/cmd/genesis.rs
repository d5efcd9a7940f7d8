//! `tally genesis init`: the founding document of a chain.

use crate::output::emit;
use crate::Outcome;
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use tally_types::{
    AgencyGenesis, Genesis as GenesisDoc, Name, PublicKey, TimestampMs, ValidatorGenesis,
};

#[derive(Debug, Subcommand)]
pub enum Genesis {
    /// Write a genesis file from agencies, their admin keys and the validators.
    Init {
        /// The chain id every entry will carry.
        #[arg(long)]
        chain_id: Name,
        /// An agency admin, as AGENCY=KEY where KEY is a public key in hex or a key file.
        /// Repeat for every admin; agencies are created from the names used.
        #[arg(long = "admin", required = true)]
        admins: Vec<String>,
        /// A validator, as AGENCY=KEY (public key in hex or key file).
        #[arg(long = "validator", required = true)]
        validators: Vec<String>,
        /// Chain start time (see `--help` of voucher issue for formats); default now.
        #[arg(long, value_parser = crate::time_arg::parse_time)]
        genesis_time: Option<TimestampMs>,
        /// Where to write the genesis file (TOML); refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Reads `AGENCY=KEY` where KEY is hex or a path to a key file.
pub fn agency_key(arg: &str) -> anyhow::Result<(Name, PublicKey)> {
    let (agency, key) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("{arg:?}: expected AGENCY=KEY"))?;
    let agency = Name::new(agency)?;
    let key = match key.parse::<PublicKey>() {
        Ok(k) => k,
        Err(_) => tally_node::keyfile::read_public_key(Path::new(key))
            .with_context(|| format!("{arg:?}: KEY is neither hex nor a key file"))?,
    };
    Ok((agency, key))
}

pub fn run(cmd: Genesis) -> anyhow::Result<Outcome> {
    let Genesis::Init {
        chain_id,
        admins,
        validators,
        genesis_time,
        out,
        json,
    } = cmd;
    let mut agencies: Vec<AgencyGenesis> = Vec::new();
    for a in &admins {
        let (agency, key) = agency_key(a)?;
        match agencies.iter_mut().find(|x| x.id == agency) {
            Some(x) => x.admins.push(key),
            None => agencies.push(AgencyGenesis {
                id: agency,
                admins: vec![key],
            }),
        }
    }
    let validators = validators
        .iter()
        .map(|v| agency_key(v).map(|(agency, key)| ValidatorGenesis { agency, key }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let doc = GenesisDoc {
        chain_id,
        genesis_time: genesis_time.unwrap_or(TimestampMs(crate::time_arg::now_ms())),
        agencies,
        validators,
    };
    doc.validate()?;
    if out.exists() {
        bail!(
            "{} already exists; refusing to overwrite a genesis",
            out.display()
        );
    }
    std::fs::write(&out, toml::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    let v = json!({ "genesis_hash": doc.hash(), "chain_id": doc.chain_id, "file": out });
    emit(json, &v, || {
        format!(
            "genesis {} for chain {} written to {}",
            doc.hash(),
            doc.chain_id,
            out.display()
        )
    })?;
    Ok(Outcome::Ok)
}
