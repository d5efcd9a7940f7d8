//! ed25519 keys and signatures. Verification is always strict (`verify_strict`): it refuses
//! small-order keys and non-canonical signatures, so one signed message has one valid signature
//! encoding and a malleated copy is never accepted.

use crate::hash::{Domain, Hash};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

static VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// Signature verifications this process has made, of every kind (entries, votes, proofs).
/// Verification is what bounds a node's throughput; a node reports this count so a benchmark
/// can tell how many times each entry is checked.
pub fn verifications() -> u64 {
    VERIFICATIONS.load(Ordering::Relaxed)
}

crate::fixed_bytes!(
    /// An ed25519 public key: identifies an author, a validator or a vendor.
    PublicKey,
    32
);

crate::fixed_bytes!(
    /// An ed25519 signature.
    Signature,
    64
);

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The 32 bytes are not a valid ed25519 point, or are a weak (small-order) key.
    #[error("public key {0} is not a valid ed25519 key")]
    InvalidPublicKey(String),
    /// The signature does not verify under the key (strict verification).
    #[error("signature does not verify under key {0}")]
    BadSignature(String),
    /// The system's random source failed while generating a key.
    #[error("no randomness available: {0}")]
    Random(String),
}

impl PublicKey {
    /// Verifies `signature` over `domain || message` strictly.
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| KeyError::InvalidPublicKey(self.short()))?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey(self.short()));
        }
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
        key.verify_strict(&signed_message(domain, message), &sig)
            .map_err(|_| KeyError::BadSignature(self.short()))
    }

    /// Verifies a signature over a hash under a domain: the common case (entry ids, votes).
    pub fn verify_hash(
        &self,
        domain: Domain,
        hash: &Hash,
        signature: &Signature,
    ) -> Result<(), KeyError> {
        self.verify(domain, hash.as_bytes(), signature)
    }
}

fn signed_message(domain: Domain, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.tag().len() + message.len());
    m.extend_from_slice(domain.tag());
    m.extend_from_slice(message);
    m
}

/// A secret signing key with its public half. The secret bytes are wiped on drop.
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_secret_bytes(&seed))
    }

    /// Rebuilds a key from its 32 secret bytes (as stored in a key file).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// A deterministic key for tests and simulations; never for real use.
    pub fn from_seed_for_tests(seed: u64) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8..16].copy_from_slice(b"tallytst");
        Self::from_secret_bytes(&secret)
    }

    /// The secret bytes, for writing a key file. Wrapped so they are wiped after use.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `domain || message`.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        Signature(
            self.signing
                .sign(&signed_message(domain, message))
                .to_bytes(),
        )
    }

    /// Signs a hash under a domain.
    pub fn sign_hash(&self, domain: Domain, hash: &Hash) -> Signature {
        self.sign(domain, hash.as_bytes())
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair(public {})", self.public().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = Keypair::from_seed_for_tests(1);
        let h = Domain::EntryId.hash(&[b"x"]);
        let s = k.sign_hash(Domain::EntrySignature, &h);
        assert_eq!(
            k.public().verify_hash(Domain::EntrySignature, &h, &s),
            Ok(())
        );
        assert!(k.public().verify_hash(Domain::CommitVote, &h, &s).is_err());
        let other = Keypair::from_seed_for_tests(2);
        assert!(other
            .public()
            .verify_hash(Domain::EntrySignature, &h, &s)
            .is_err());
    }

    #[test]
    fn malleated_signature_is_refused() {
        let k = Keypair::from_seed_for_tests(3);
        let h = Hash::ZERO;
        let mut s = k.sign_hash(Domain::EntrySignature, &h);
        // Adding the group order L to S gives the same point equation but a non-canonical S.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (s_byte, l_byte) in s.0[32..].iter_mut().zip(L) {
            let v = *s_byte as u16 + l_byte as u16 + carry;
            *s_byte = v as u8;
            carry = v >> 8;
        }
        assert!(k
            .public()
            .verify_hash(Domain::EntrySignature, &h, &s)
            .is_err());
    }

    #[test]
    fn small_order_key_is_refused() {
        // The identity point encoded: a weak key that "verifies" forged signatures non-strictly.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let s = Signature([0u8; 64]);
        assert!(PublicKey(weak)
            .verify(Domain::EntrySignature, b"m", &s)
            .is_err());
    }
}
