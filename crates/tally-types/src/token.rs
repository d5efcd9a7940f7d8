//! How people and records appear on the ledger: never by name, only by keyed tokens and salted
//! commitments computed off chain (DOMAIN.md, "no personal data on chain").
//!
//! - A **subject token** is HMAC-SHA256 of a person reference under a secret only the agency
//!   holds. Without the secret, nobody can test a guess ("is this Amina, born 1990?").
//! - A **dedup token** is the same under a secret the consortium shares, so agencies can ask
//!   "has this person already had this assistance this period?" without learning who.
//! - A **commitment** is SHA-256 of a random salt (at least 128 bits) and the off-chain record.
//!   Deleting the record and its salt makes the commitment unlinkable (crypto-shredding).

use crate::hash::{Domain, Hash};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The shortest secret or salt accepted, in bytes (128 bits).
pub const SECRET_BYTES_MIN: usize = 16;

macro_rules! token_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Hash);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::bytes::HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self(s.parse()?))
            }
        }
    };
}

token_type!(
    /// A person, pseudonymised under an agency's secret.
    SubjectToken
);
token_type!(
    /// A person, pseudonymised under the consortium's shared de-duplication secret.
    DedupToken
);
token_type!(
    /// A salted hash of an off-chain record or claim.
    Commitment
);

/// A secret or salt that is too short to resist guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be at least {SECRET_BYTES_MIN} bytes, got {got}")]
pub struct TooShort {
    /// Which input.
    pub what: &'static str,
    /// Its length in bytes.
    pub got: usize,
}

fn hmac(secret: &[u8], label: &[u8], reference: &[u8]) -> Result<Hash, TooShort> {
    if secret.len() < SECRET_BYTES_MIN {
        return Err(TooShort {
            what: "secret",
            got: secret.len(),
        });
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TooShort {
        what: "secret",
        got: secret.len(),
    })?;
    mac.update(label);
    mac.update(reference);
    Ok(Hash(mac.finalize().into_bytes().into()))
}

/// 32 fresh bytes from the operating system's random source: a salt for [`Commitment::commit`].
pub fn random_salt() -> Result<[u8; 32], getrandom::Error> {
    let mut salt = [0u8; 32];
    getrandom::getrandom(&mut salt)?;
    Ok(salt)
}

impl SubjectToken {
    /// Derives the token for `person_reference` under the agency's secret.
    pub fn derive(agency_secret: &[u8], person_reference: &[u8]) -> Result<Self, TooShort> {
        hmac(agency_secret, b"tally/v1/subject-token\0", person_reference).map(Self)
    }
}

impl DedupToken {
    /// Derives the token for `person_reference` under the consortium's shared secret.
    pub fn derive(consortium_secret: &[u8], person_reference: &[u8]) -> Result<Self, TooShort> {
        hmac(
            consortium_secret,
            b"tally/v1/dedup-token\0",
            person_reference,
        )
        .map(Self)
    }
}

impl Commitment {
    /// Commits to `record` with `salt`. The salt must be random and kept with the record.
    pub fn commit(salt: &[u8], record: &[u8]) -> Result<Self, TooShort> {
        if salt.len() < SECRET_BYTES_MIN {
            return Err(TooShort {
                what: "salt",
                got: salt.len(),
            });
        }
        let len = (salt.len() as u64).to_le_bytes();
        Ok(Self(Domain::RecordCommitment.hash(&[&len, salt, record])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_the_secret_and_refuse_short_ones() {
        let a = SubjectToken::derive(b"agency-secret-0123456789", b"case-77");
        let b = SubjectToken::derive(b"agency-secret-9876543210", b"case-77");
        assert!(a.is_ok() && b.is_ok());
        assert_ne!(a, b);
        assert!(SubjectToken::derive(b"short", b"case-77").is_err());
        let d = DedupToken::derive(b"agency-secret-0123456789", b"case-77");
        assert_ne!(
            a.map(|t| t.0),
            d.map(|t| t.0),
            "subject and dedup tokens are domain separated"
        );
    }

    #[test]
    fn commitment_binds_salt_and_record() {
        let salt = [7u8; 16];
        let c = Commitment::commit(&salt, b"record");
        assert_eq!(c, Commitment::commit(&salt, b"record"));
        assert_ne!(c, Commitment::commit(&[8u8; 16], b"record"));
        assert_ne!(c, Commitment::commit(&salt, b"recorc"));
        assert!(Commitment::commit(&[0u8; 15], b"record").is_err());
    }
}
