//! Key files: a secret key on disk, readable by its owner only. Like ssh, tally refuses to use a
//! key file that other users can read: a leaked staff key signs vouchers.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tally_types::{Keypair, PublicKey};
use zeroize::Zeroizing;

const KIND: &str = "tally-ed25519-secret-key";

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
    let text = Zeroizing::new(
        serde_json::to_string_pretty(&body).map_err(|e| io(std::io::Error::other(e)))?,
    );
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
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

fn hex_secret(key: &Keypair) -> Zeroizing<String> {
    Zeroizing::new(hex::encode(key.secret_bytes().as_ref()))
}

/// Reads a key file, refusing one that others can read.
pub fn read_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.into(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.into(),
                mode,
            });
        }
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
    let invalid = |why: String| KeyFileError::Invalid {
        path: path.into(),
        why,
    };
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

/// Reads only the public key of a key file (no permission check needed: nothing secret is used).
pub fn read_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.into(),
        source,
    })?;
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
