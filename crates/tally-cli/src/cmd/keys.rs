//! `tally keys new|encrypt|show|rotate`.

use crate::output::emit;
use crate::sign::{load_key, sign_and_submit_for_chain, SignArgs};
use crate::Outcome;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use tally_node::keyfile;
use tally_types::entry::key_rotation_message;
use tally_types::{Domain, Keypair, Payload};

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Generate a key and write it to a new file with mode 0600.
    New {
        /// Where to write the key file; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Encrypt it with a passphrase (PKCS#8, scrypt and AES-256-CBC, as OpenSSL reads
        /// it), taken from the file named by TALLY_KEY_PASSPHRASE_FILE, from
        /// TALLY_KEY_PASSPHRASE, or asked twice on the terminal.
        #[arg(long)]
        encrypt: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an encrypted copy of a key file (the passphrase as for `new --encrypt`); the
    /// original stays for you to delete once the copy is in use.
    Encrypt {
        /// The key file to encrypt.
        #[arg(long)]
        key: PathBuf,
        /// Where to write the encrypted copy; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
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
        Keys::New { out, encrypt, json } => {
            let key = Keypair::generate()?;
            if encrypt {
                let pass = keyfile::passphrase(&out, true)?;
                keyfile::write_encrypted_key_file(&out, &key, &pass)?;
            } else {
                keyfile::write_key_file(&out, &key)?;
            }
            let v = json!({ "public_key": key.public(), "file": out, "encrypted": encrypt });
            emit(json, &v, || {
                format!(
                    "{}\nwritten to {} (mode 0600{})",
                    key.public(),
                    out.display(),
                    if encrypt { ", encrypted" } else { "" }
                )
            })?;
            Ok(Outcome::Ok)
        }
        Keys::Encrypt { key, out } => {
            let keypair = keyfile::read_key_file(&key)?;
            let pass = keyfile::passphrase(&out, true)?;
            keyfile::write_encrypted_key_file(&out, &keypair, &pass)?;
            println!(
                "{}\nencrypted copy of {} written to {} (mode 0600); delete the original once \
                 the copy is in use",
                keypair.public(),
                key.display(),
                out.display()
            );
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
