//! ed25519 keys and signatures, and the one rule every validator and auditor applies to them.
//!
//! A signature `(R, S)` by key `A` over message `M` is valid when
//!
//! - `A` and `R` are canonical encodings of curve points, neither of small order;
//! - `S` is a canonical scalar (below the group order);
//! - `[8]([S]B - [k]A - R)` is the identity, where `k = SHA-512(R ‖ A ‖ M)`.
//!
//! This is the cofactored equation of ZIP 215 with small-order points and non-canonical
//! encodings refused. Its point is that checking many signatures at once in one random linear
//! combination ([`verify_batch`]) accepts exactly the sets in which each signature alone is
//! valid (but for a 2^-128 chance), so a node may check a block in a batch, another one by one,
//! and both decide the same. The cofactorless check of `verify_strict` does not have that
//! property: a batch can cancel a small-order component that it refuses.
//!
//! What the rule accepts that `verify_strict` refuses: signatures whose `R` or key carries a
//! small-order component. Only a signer can make one, and it is valid for every node alike. No
//! one else can turn a valid signature into another: `k` binds the exact bytes of `R`, and
//! non-canonical encodings are refused. Nothing in tally needs a signature's bytes to be unique
//! anyway: an entry's id excludes its signature, and a vote counts once per validator.

use crate::hash::{Domain, Hash};
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

static VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// Keys [`PublicKey::check_signing_key`] remembers as good, at most: 32 bytes each.
pub const GOOD_KEYS_KEPT: usize = 4096;

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
    /// Verifies `signature` over `domain || message` under the rule of this module.
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), KeyError> {
        self.verify_tagged(domain.tag(), message, signature)
    }

    /// Verifies `signature` over `message` as it is, with no domain tag, under the rule of
    /// this module. tally signs nothing this way; it is how outside test vectors (RFC 8032,
    /// Wycheproof) are signed, and what another implementation compares its checks with.
    pub fn verify_raw(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        self.verify_tagged(&[], message, signature)
    }

    /// Whether this key may be given a role or a validator's seat: a canonical encoding of a
    /// point of the prime-order subgroup. That refuses the identity and every other point of
    /// small order (keys for which anyone can forge, or no one can sign), and keys with a
    /// small-order component, whose honest signatures standard libraries that check without
    /// the cofactor (libsodium, ed25519-dalek's `verify_strict`) refuse about seven times in
    /// eight: so every key on a chain signs what those libraries accept. Checked once, when a
    /// key enters the state; each signature is then checked by the rule above.
    ///
    /// The check is a scalar multiplication (about 35 us), and an entry that names a key is
    /// checked for well-formedness on admission, on every relay and in every execution of its
    /// block: the keys found good lately are remembered (a pure function of the 32 bytes, so
    /// what is remembered is never stale), at most [`GOOD_KEYS_KEPT`] of them.
    pub fn check_signing_key(&self) -> Result<(), KeyError> {
        static GOOD: std::sync::Mutex<Option<std::collections::HashSet<[u8; 32]>>> =
            std::sync::Mutex::new(None);
        let remembered = |key: &[u8; 32]| {
            GOOD.lock()
                .map(|g| g.as_ref().is_some_and(|g| g.contains(key)))
                .unwrap_or(false)
        };
        if remembered(&self.0) {
            return Ok(());
        }
        match point(&self.0) {
            Some(p) if p.is_torsion_free() => {
                if let Ok(mut good) = GOOD.lock() {
                    let good = good.get_or_insert_with(Default::default);
                    if good.len() >= GOOD_KEYS_KEPT {
                        good.clear();
                    }
                    good.insert(self.0);
                }
                Ok(())
            }
            _ => Err(KeyError::InvalidPublicKey(self.short())),
        }
    }

    fn verify_tagged(
        &self,
        tag: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), KeyError> {
        let parts = Parts::decode(self, tag, message, signature)?;
        VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&-parts.k, &parts.a, &parts.s);
        if (sb_minus_ka - parts.r).mul_by_cofactor().is_identity() {
            Ok(())
        } else {
            Err(KeyError::BadSignature(self.short()))
        }
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

/// One signature of a batch: what [`PublicKey::verify`] takes.
#[derive(Debug, Clone, Copy)]
pub struct SignatureCheck<'a> {
    /// The signer.
    pub key: &'a PublicKey,
    /// The domain the message was signed under.
    pub domain: Domain,
    /// The message (a hash, for entries and votes).
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// Whether every signature of `checks` is valid, checked together in one multi-scalar
/// multiplication: about three times as fast per signature as one at a time. A `false` does
/// not say which failed; check them one by one to find out. Agrees with [`PublicKey::verify`]
/// on every set, but for a chance of 2^-128 per call of accepting a set holding an invalid
/// signature.
pub fn verify_batch(checks: &[SignatureCheck<'_>]) -> bool {
    batch(
        checks
            .iter()
            .map(|c| (c.key, c.domain.tag(), c.message, c.signature)),
    )
}

/// [`verify_batch`] over messages as they are, with no domain tag: what
/// [`PublicKey::verify_raw`] checks one at a time.
pub fn verify_batch_raw(checks: &[(PublicKey, &[u8], Signature)]) -> bool {
    batch(checks.iter().map(|(k, m, s)| (k, &[][..], *m, s)))
}

fn batch<'a>(
    checks: impl ExactSizeIterator<Item = (&'a PublicKey, &'a [u8], &'a [u8], &'a Signature)>,
) -> bool {
    // An author signs many entries: each distinct key is decoded once and enters the sum once,
    // with its signatures' weights added up.
    let mut keys: Vec<(EdwardsPoint, Scalar)> = Vec::new();
    let mut key_index: HashMap<[u8; 32], usize> = HashMap::new();
    let mut signatures: Vec<(EdwardsPoint, Scalar, Scalar, usize)> =
        Vec::with_capacity(checks.len());
    for (public, tag, message, signature) in checks {
        let key = match key_index.get(&public.0) {
            Some(&i) => i,
            None => match point(&public.0) {
                Some(a) => {
                    keys.push((a, Scalar::ZERO));
                    key_index.insert(public.0, keys.len() - 1);
                    keys.len() - 1
                }
                None => return false,
            },
        };
        match Parts::decode_signature(public, tag, message, signature) {
            Ok((r, s, k)) => signatures.push((r, s, k, key)),
            Err(_) => return false,
        }
    }
    VERIFICATIONS.fetch_add(signatures.len() as u64, Ordering::Relaxed);
    // The random 128-bit weights are what stops invalid signatures from cancelling each other;
    // they must be unpredictable to whoever wrote the signatures.
    let mut random = vec![0u8; 16 * signatures.len()];
    if getrandom::getrandom(&mut random).is_err() {
        return false;
    }
    let mut scalars = Vec::with_capacity(1 + signatures.len() + keys.len());
    let mut points = Vec::with_capacity(1 + signatures.len() + keys.len());
    let mut b_coefficient = Scalar::ZERO;
    for ((r, s, k, key), z) in signatures.iter().zip(random.chunks_exact(16)) {
        let mut wide = [0u8; 32];
        wide[..16].copy_from_slice(z);
        let z = Scalar::from_bytes_mod_order(wide);
        b_coefficient += z * s;
        scalars.push(-z);
        points.push(*r);
        keys[*key].1 -= z * k;
    }
    scalars.push(b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    for (a, coefficient) in keys {
        scalars.push(coefficient);
        points.push(a);
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// A signature decoded and checked for everything but its equation.
struct Parts {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

impl Parts {
    fn decode(
        key: &PublicKey,
        tag: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<Self, KeyError> {
        let a = point(&key.0).ok_or_else(|| KeyError::InvalidPublicKey(key.short()))?;
        let (r, s, k) = Self::decode_signature(key, tag, message, signature)?;
        Ok(Parts { a, r, s, k })
    }

    /// `R`, `S` and `k`: everything but the key's point.
    fn decode_signature(
        key: &PublicKey,
        tag: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(EdwardsPoint, Scalar, Scalar), KeyError> {
        let bad = || KeyError::BadSignature(key.short());
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&signature.0[..32]);
        let r = point(&r_bytes).ok_or_else(bad)?;
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&signature.0[32..]);
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)).ok_or_else(bad)?;
        Ok((r, s, challenge(&r_bytes, key, tag, message)))
    }
}

/// `k = SHA-512(R ‖ A ‖ tag ‖ M)`, as a scalar: ed25519's over the message `tag ‖ M`.
fn challenge(r_bytes: &[u8; 32], key: &PublicKey, tag: &[u8], message: &[u8]) -> Scalar {
    let digest = Sha512::new()
        .chain_update(r_bytes)
        .chain_update(key.0)
        .chain_update(tag)
        .chain_update(message)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&digest);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The point a canonical encoding names, unless it has small order.
fn point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_y(bytes) || small_order_encodings().contains(bytes) {
        return None;
    }
    let p = CompressedEdwardsY(*bytes).decompress()?;
    debug_assert!(!p.is_small_order(), "{bytes:?} is missing from the table");
    Some(p)
}

/// Every canonical encoding of a point of small order: each of the eight torsion points with
/// either sign bit (for the two with x = 0, the identity and the point of order 2, the set bit
/// is a second encoding of the same point; for the others it names the negation, also in the
/// table). Looking the bytes up spares each signature's `R` the doublings of
/// `EdwardsPoint::is_small_order` after decompression, about 3 % of checking it.
fn small_order_encodings() -> &'static [[u8; 32]] {
    static TABLE: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .flat_map(|p| {
                let bytes = p.compress().to_bytes();
                let mut flipped = bytes;
                flipped[31] ^= 0x80;
                [bytes, flipped]
            })
            .collect();
        table.sort_unstable();
        table.dedup();
        table
    })
}

/// Whether the encoded y coordinate (the sign bit of x aside) is below p = 2^255 - 19. The
/// points whose x is zero, where a set sign bit would also be non-canonical, all have small
/// order and are refused anyway.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let top = bytes[31] & 0x7f;
    !(top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed)
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

    /// A key from a chosen secret scalar, and a signature by it whose `R` is `[r]B + T` for a
    /// point `T` of order 4: valid under the cofactored equation, refused by `verify_strict`.
    fn torsion_signature(message: &[u8]) -> (PublicKey, Signature) {
        let a = Scalar::from_bytes_mod_order([7u8; 32]);
        let key = PublicKey((ED25519_BASEPOINT_POINT * a).compress().to_bytes());
        let order_4 = CompressedEdwardsY([0u8; 32])
            .decompress()
            .expect("y = 0 is a point");
        assert!(order_4.is_small_order() && !order_4.is_identity());
        let r = Scalar::from_bytes_mod_order([9u8; 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r + order_4)
            .compress()
            .to_bytes();
        let k = challenge(&big_r, &key, Domain::EntrySignature.tag(), message);
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        (key, Signature(sig))
    }

    fn check<'a>(
        key: &'a PublicKey,
        message: &'a [u8],
        signature: &'a Signature,
    ) -> SignatureCheck<'a> {
        SignatureCheck {
            key,
            domain: Domain::EntrySignature,
            message,
            signature,
        }
    }

    #[test]
    fn one_at_a_time_and_in_a_batch_decide_alike() {
        let keys: Vec<Keypair> = (10..20).map(Keypair::from_seed_for_tests).collect();
        let messages: Vec<[u8; 32]> = (0u8..10).map(|i| [i; 32]).collect();
        let sigs: Vec<Signature> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| k.sign(Domain::EntrySignature, m))
            .collect();
        let publics: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
        let mut checks: Vec<SignatureCheck<'_>> = publics
            .iter()
            .zip(&messages)
            .zip(&sigs)
            .map(|((k, m), s)| check(k, m, s))
            .collect();
        assert!(verify_batch(&checks));
        assert!(verify_batch(&[]));

        // One author, many signatures: its key enters the sum once with the weights added up,
        // and one bad signature among them still sinks the batch.
        let author = &keys[0];
        let own: Vec<Signature> = messages
            .iter()
            .map(|m| author.sign(Domain::EntrySignature, m))
            .collect();
        let author_public = author.public();
        let mut same_key: Vec<SignatureCheck<'_>> = messages
            .iter()
            .zip(&own)
            .map(|(m, s)| check(&author_public, m, s))
            .collect();
        assert!(verify_batch(&same_key));
        same_key.swap(2, 5);
        same_key[2].message = &messages[2];
        assert!(!verify_batch(&same_key));

        // A signature the signer built with a small-order component in R: every node accepts
        // it, one at a time or in a batch (the cofactorless verify_strict would not).
        let (tkey, tsig) = torsion_signature(b"crafted");
        assert_eq!(
            tkey.verify(Domain::EntrySignature, b"crafted", &tsig),
            Ok(())
        );
        let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&tkey.0).expect("key");
        assert!(dalek_key
            .verify_strict(
                &signed_message(Domain::EntrySignature, b"crafted"),
                &ed25519_dalek::Signature::from_bytes(&tsig.0)
            )
            .is_err());
        checks.push(check(&tkey, b"crafted", &tsig));
        assert!(verify_batch(&checks));

        // One signature over another message: refused alone and sinks the batch.
        let wrong = [0xaa; 32];
        checks[3] = check(&publics[3], &wrong, &sigs[3]);
        assert!(publics[3]
            .verify(Domain::EntrySignature, &wrong, &sigs[3])
            .is_err());
        assert!(!verify_batch(&checks));
    }

    #[test]
    fn small_order_r_and_non_canonical_encodings_are_refused() {
        let k = Keypair::from_seed_for_tests(4);
        let good = k.sign(Domain::EntrySignature, b"m");
        // R the identity: small order.
        let mut small_r = good;
        small_r.0[..32].copy_from_slice(&{
            let mut id = [0u8; 32];
            id[0] = 1;
            id
        });
        let public = k.public();
        assert!(public
            .verify(Domain::EntrySignature, b"m", &small_r)
            .is_err());
        assert!(!verify_batch(&[check(&public, b"m", &small_r)]));
        // y = p is the non-canonical encoding of y = 0; y = p - 1 is canonical.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(!canonical_y(&p));
        p[0] = 0xec;
        assert!(canonical_y(&p));
        p[31] = 0xff;
        assert!(canonical_y(&p), "the sign bit is not part of y");
    }

    #[test]
    fn the_small_order_table_agrees_with_decompression() {
        // Ten encodings: eight points, two of them (x = 0) with a second sign bit.
        assert_eq!(small_order_encodings().len(), 10);
        // Every encoding with a small y and either sign, and every torsion point's encodings:
        // refused exactly when a canonical encoding decompresses to a point of small order.
        let mut tried = 0;
        let mut small = 0;
        let candidates = (0u8..=255).flat_map(|low| {
            [0u8, 0x80].map(|sign| {
                let mut b = [0u8; 32];
                b[0] = low;
                b[31] = sign;
                b
            })
        });
        for b in candidates.chain(small_order_encodings().iter().copied()) {
            let Some(p) = CompressedEdwardsY(b).decompress() else {
                continue;
            };
            tried += 1;
            let refused = !canonical_y(&b) || p.is_small_order();
            small += usize::from(p.is_small_order());
            assert_eq!(point(&b).is_none(), refused, "{b:?}");
        }
        assert!(
            tried > 100 && small >= 10,
            "{tried} points, {small} of small order"
        );
        // A valid key and a valid R are points of large order.
        let k = Keypair::from_seed_for_tests(5);
        let sig = k.sign(Domain::EntrySignature, b"m");
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig.0[..32]);
        assert!(point(&k.public().0).is_some() && point(&r).is_some());
    }

    #[test]
    fn only_keys_of_prime_order_may_enter_the_state() {
        assert_eq!(
            Keypair::from_seed_for_tests(6).public().check_signing_key(),
            Ok(())
        );
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // The identity, a point of order 4 (y = 0), and a key with an order-4 component: the
        // last verifies its own signatures here, and is still refused as a key.
        let order_4 = CompressedEdwardsY([0u8; 32])
            .decompress()
            .expect("y = 0 is a point");
        let a = Scalar::from_bytes_mod_order([7u8; 32]);
        let mixed = (ED25519_BASEPOINT_POINT * a + order_4)
            .compress()
            .to_bytes();
        assert!(
            point(&mixed).is_some(),
            "a mixed-order key is not of small order"
        );
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for bad in [identity, [0u8; 32], mixed, non_canonical] {
            assert!(PublicKey(bad).check_signing_key().is_err(), "{bad:?}");
        }
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
