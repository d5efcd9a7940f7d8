//! `tally keys new|show|rotate`.

use crate::output::emit;
use crate::sign::{load_key, sign_and_submit_for_chain, SignArgs};
use crate::Outcome;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use tally_types::entry::key_rotation_message;
use tally_types::{Domain, Keypair, Payload};

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Generate a key and write it to a new file with mode 0600.
    New {
        /// Where to write the key file; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a key file's public key.
    Show {
        /// The key file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move this key's agency and roles to a new key on the ledger; the old key is retired.
    Rotate {
        /// The new key file (create it first with `tally keys new`).
        #[arg(long)]
        new_key: PathBuf,
        #[command(flatten)]
        sign: SignArgs,
    },
}

pub fn run(cmd: Keys) -> anyhow::Result<Outcome> {
    match cmd {
        Keys::New { out, json } => {
            let key = Keypair::generate()?;
            tally_node::keyfile::write_key_file(&out, &key)?;
            let v = json!({ "public_key": key.public(), "file": out });
            emit(json, &v, || {
                format!("{}\nwritten to {} (mode 0600)", key.public(), out.display())
            })?;
            Ok(Outcome::Ok)
        }
        Keys::Show { file, json } => {
            let key = tally_node::keyfile::read_key_file(&file)?;
            let v = json!({ "public_key": key.public() });
            emit(json, &v, || key.public().to_string())?;
            Ok(Outcome::Ok)
        }
        Keys::Rotate { new_key, sign } => {
            let old = load_key(&sign)?;
            let new = tally_node::keyfile::read_key_file(&new_key)?;
            let old_public = old.public();
            sign_and_submit_for_chain(&sign, &old, |chain_id| Payload::RotateKey {
                new_key: new.public(),
                new_key_proof: new.sign(
                    Domain::KeyRotation,
                    &key_rotation_message(chain_id, &old_public),
                ),
            })
        }
    }
}
