//! Key files: a secret key on disk, readable by its owner only. Like ssh, tally refuses to use a
//! key file that other users can read: a leaked staff key signs vouchers.
//!
//! Two forms are read. tally's own (JSON with the secret in hex) is the devnet's. A key at rest
//! on a real host is better encrypted: PKCS#8 PEM encrypted with a passphrase (PBES2: scrypt
//! and AES-256-CBC), the form `openssl pkcs8 -topk8 -v2 aes-256-cbc -scrypt` writes and
//! `openssl pkey` reads, so keys can move between tally and standard tools. Unencrypted PKCS#8
//! PEM (`openssl genpkey -algorithm ed25519`) is read too.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tally_types::{Keypair, PublicKey};
use zeroize::Zeroizing;

const KIND: &str = "tally-ed25519-secret-key";

/// A file naming the passphrase of encrypted key files: a secret the service manager mounts
/// (systemd's `LoadCredential`), never the command line.
pub const PASSPHRASE_FILE_VAR: &str = "TALLY_KEY_PASSPHRASE_FILE";

/// The passphrase itself, where a file cannot be used. Read after [`PASSPHRASE_FILE_VAR`];
/// without either, a terminal is asked.
pub const PASSPHRASE_VAR: &str = "TALLY_KEY_PASSPHRASE";

/// Shortest passphrase accepted when encrypting: scrypt slows guessing, it does not make a
/// short passphrase safe.
pub const PASSPHRASE_CHARS_MIN: usize = 12;

/// scrypt's cost when encrypting: N = 2^14, r = 8, p = 1 (16 MiB, a fraction of a second),
/// OpenSSL's own default for PKCS#8 and the most its tools read without a larger memory limit.
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

const ENCRYPTED_PEM: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const PLAIN_PEM: &str = "-----BEGIN PRIVATE KEY-----";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    kind: String,
    public_key: PublicKey,
    secret_key: String,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// I/O.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Group or others may read or write it.
    #[error("key file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600 {path})")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a tally key file, or the public key does not match the secret.
    #[error("key file {path} is not a valid tally key: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Refusing to overwrite.
    #[error("key file {0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// An encrypted key file whose passphrase is missing or wrong.
    #[error("key file {path} is encrypted: {why}")]
    Passphrase {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong, and what to do.
        why: String,
    },
}

/// The passphrase for the encrypted key file `path`: from [`PASSPHRASE_FILE_VAR`]'s file,
/// [`PASSPHRASE_VAR`], or the terminal. `confirm` asks a terminal twice (when encrypting).
pub fn passphrase(path: &Path, confirm: bool) -> Result<Zeroizing<String>, KeyFileError> {
    let missing = |why: String| KeyFileError::Passphrase {
        path: path.into(),
        why,
    };
    if let Some(file) = std::env::var_os(PASSPHRASE_FILE_VAR) {
        // Readable by others, it would give the key away as surely as a plain key file.
        owner_only(Path::new(&file)).map_err(|e| missing(e.to_string()))?;
        let text = Zeroizing::new(std::fs::read_to_string(&file).map_err(|e| {
            missing(format!(
                "cannot read the passphrase file {} named by {PASSPHRASE_FILE_VAR}: {e}",
                Path::new(&file).display()
            ))
        })?);
        return Ok(Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).to_string(),
        ));
    }
    if let Ok(pass) = std::env::var(PASSPHRASE_VAR) {
        return Ok(Zeroizing::new(pass));
    }
    let prompt = format!("passphrase for {}: ", path.display());
    let no_terminal = |e: std::io::Error| {
        missing(format!(
            "no passphrase: set {PASSPHRASE_FILE_VAR} to a file holding it (or {PASSPHRASE_VAR}), \
             or run in a terminal ({e})"
        ))
    };
    let pass = Zeroizing::new(rpassword::prompt_password(&prompt).map_err(no_terminal)?);
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("the same passphrase again: ").map_err(no_terminal)?,
        );
        if *again != *pass {
            return Err(missing("the two passphrases differ".into()));
        }
    }
    Ok(pass)
}

/// Writes `key` encrypted with `passphrase` (PKCS#8, PBES2 with scrypt and AES-256-CBC) to a
/// new file with mode 0600, refusing to overwrite one.
pub fn write_encrypted_key_file(
    path: &Path,
    key: &Keypair,
    passphrase: &str,
) -> Result<(), KeyFileError> {
    use pkcs8::EncodePrivateKey;
    use rand_core::RngCore;
    if passphrase.chars().count() < PASSPHRASE_CHARS_MIN {
        return Err(KeyFileError::Passphrase {
            path: path.into(),
            why: format!("a passphrase needs at least {PASSPHRASE_CHARS_MIN} characters"),
        });
    }
    let cannot = |e: &dyn std::fmt::Display| KeyFileError::Invalid {
        path: path.into(),
        why: format!("cannot encrypt: {e}"),
    };
    let signing = ed25519_dalek::SigningKey::from_bytes(&key.secret_bytes());
    let plain = signing.to_pkcs8_der().map_err(|e| cannot(&e))?;
    let mut info = pkcs8::PrivateKeyInfo::try_from(plain.as_bytes()).map_err(|e| cannot(&e))?;
    // PKCS#8 v1 (RFC 5208), without the optional public key of v2 that OpenSSL 3 does not
    // decode for ed25519: the public key follows from the secret.
    info.public_key = None;
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    rand_core::OsRng.fill_bytes(&mut salt);
    rand_core::OsRng.fill_bytes(&mut iv);
    let scrypt = pkcs8::pkcs5::scrypt::Params::new(
        SCRYPT_LOG_N,
        SCRYPT_R,
        SCRYPT_P,
        pkcs8::pkcs5::scrypt::Params::RECOMMENDED_LEN,
    )
    .map_err(|e| cannot(&e))?;
    let params = pkcs8::pkcs5::pbes2::Parameters::scrypt_aes256cbc(scrypt, &salt, &iv)
        .map_err(|e| cannot(&e))?;
    let encrypted = info
        .encrypt_with_params(params, passphrase.as_bytes())
        .map_err(|e| cannot(&e))?;
    let pem = encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .map_err(|e| cannot(&e))?;
    write_new_secret(path, pem.as_bytes())
}

/// Writes a new key file with mode 0600, refusing to overwrite an existing one.
pub fn write_key_file(path: &Path, key: &Keypair) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.into(),
        source,
    };
    let secret = hex_secret(key);
    let body = KeyFile {
        kind: KIND.into(),
        public_key: key.public(),
        secret_key: secret.to_string(),
    };
    let mut text = Zeroizing::new(
        serde_json::to_string_pretty(&body).map_err(|e| io(std::io::Error::other(e)))?,
    );
    text.push('\n');
    write_new_secret(path, text.as_bytes())
}

/// Copies a key file as it is (an encrypted one stays encrypted) to a new file with mode
/// 0600, refusing to overwrite. The caller has read the key from it ([`read_key_file`]).
pub fn copy_key_file(from: &Path, to: &Path) -> Result<(), KeyFileError> {
    owner_only(from)?;
    let bytes = Zeroizing::new(std::fs::read(from).map_err(|source| KeyFileError::Io {
        path: from.into(),
        source,
    })?);
    write_new_secret(to, &bytes)
}

/// Writes secret bytes to a new file with mode 0600, synced; refuses to overwrite.
fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.into(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.into())
        } else {
            io(e)
        }
    })?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

fn hex_secret(key: &Keypair) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(key.secret_bytes().as_ref()))
}

/// Refuses a secret file (a key, a passphrase) that group or others can read or write.
fn owner_only(path: &Path) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Io {
            path: path.into(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.into(),
                mode,
            });
        }
    }
    Ok(())
}

/// Reads a key file, refusing one that others can read.
pub fn read_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.into(),
        source,
    };
    owner_only(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    let invalid = |why: String| KeyFileError::Invalid {
        path: path.into(),
        why,
    };
    let pem = text.trim_start();
    if pem.starts_with(ENCRYPTED_PEM) || pem.starts_with(PLAIN_PEM) {
        use pkcs8::DecodePrivateKey;
        let signing = if pem.starts_with(ENCRYPTED_PEM) {
            let pass = passphrase(path, false)?;
            ed25519_dalek::SigningKey::from_pkcs8_encrypted_pem(pem, pass.as_bytes()).map_err(
                |e| KeyFileError::Passphrase {
                    path: path.into(),
                    why: format!("the passphrase is wrong, or the file is damaged ({e})"),
                },
            )?
        } else {
            ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                .map_err(|e| invalid(format!("not an ed25519 PKCS#8 key: {e}")))?
        };
        return Ok(Keypair::from_secret_bytes(&Zeroizing::new(
            signing.to_bytes(),
        )));
    }
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if file.kind != KIND {
        return Err(invalid(format!(
            "kind is {:?}, expected {KIND:?}",
            file.kind
        )));
    }
    let secret_hex = Zeroizing::new(file.secret_key);
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(secret_hex.trim(), secret.as_mut()).map_err(|e| invalid(e.to_string()))?;
    let key = Keypair::from_secret_bytes(&secret);
    if key.public() != file.public_key {
        return Err(invalid("public key does not match the secret key".into()));
    }
    Ok(key)
}

/// Reads only the public key of a key file (no permission check needed: nothing secret is
/// used). A PEM file holds no public key in the clear: it is read whole.
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.into(),
        source,
    })?;
    if text.trim_start().starts_with("-----BEGIN") {
        return read_key_file(path).map(|k| k.public());
    }
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| KeyFileError::Invalid {
        path: path.into(),
        why: e.to_string(),
    })?;
    Ok(file.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_passphrase_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        let key = Keypair::from_seed_for_tests(6);
        assert!(matches!(
            write_encrypted_key_file(&path, &key, "too short"),
            Err(KeyFileError::Passphrase { .. })
        ));
        assert!(!path.exists());
        write_encrypted_key_file(&path, &key, "long enough, surely").expect("write");
        let pem = std::fs::read_to_string(&path).expect("read");
        assert!(pem.starts_with(ENCRYPTED_PEM), "{pem}");
        assert!(matches!(
            write_encrypted_key_file(&path, &key, "long enough, surely"),
            Err(KeyFileError::Exists(_))
        ));
    }

    #[test]
    fn written_with_0600_and_refused_when_readable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        let key = Keypair::from_seed_for_tests(5);
        write_key_file(&path, &key).expect("write");
        assert!(matches!(
            write_key_file(&path, &key),
            Err(KeyFileError::Exists(_))
        ));
        assert_eq!(read_key_file(&path).expect("read").public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(
                read_key_file(&path),
                Err(KeyFileError::Permissions { .. })
            ));
        }
    }
}
