//! The signature rule (`tally_types::keys`) against outside test vectors: Project
//! Wycheproof's EdDSA vectors (RFC 8032's among them) and the twelve edge cases of "Taming
//! the many EdDSAs". Each is checked one at a time and in a batch, and the two must agree.

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use sha2::{Digest, Sha512};
use tally_types::keys::{verify_batch_raw, PublicKey, Signature};

fn bytes(hex_str: &str) -> Vec<u8> {
    hex::decode(hex_str).unwrap_or_else(|e| panic!("bad hex {hex_str}: {e}"))
}

/// A vector's key and signature, when they have ed25519's lengths.
fn parts(pk: &str, sig: &str) -> Option<(PublicKey, Signature)> {
    let pk: [u8; 32] = bytes(pk).try_into().ok()?;
    let sig: [u8; 64] = bytes(sig).try_into().ok()?;
    Some((PublicKey(pk), Signature(sig)))
}

/// tally's verdict on one signature, one at a time and alone in a batch; they must agree.
fn verdict(key: &PublicKey, message: &[u8], sig: &Signature, what: &str) -> bool {
    let single = key.verify_raw(message, sig).is_ok();
    let batched = verify_batch_raw(&[(*key, message, *sig)]);
    assert_eq!(
        single, batched,
        "{what}: one at a time {single}, in a batch {batched}"
    );
    single
}

#[test]
fn wycheproof_valid_signatures_are_accepted_and_invalid_ones_refused() {
    let text = include_str!("vectors/wycheproof-eddsa_test.json");
    let doc: serde_json::Value = serde_json::from_str(text).expect("the vectors parse");
    let mut valid = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for group in doc["testGroups"].as_array().expect("groups") {
        let pk = group["key"]["pk"].as_str().expect("a key");
        for t in group["tests"].as_array().expect("tests") {
            let id = &t["tcId"];
            let message = bytes(t["msg"].as_str().expect("msg"));
            let expected = t["result"].as_str().expect("result");
            let Some((key, sig)) = parts(pk, t["sig"].as_str().expect("sig")) else {
                // A signature of the wrong length cannot even be given to the rule.
                assert_eq!(expected, "invalid", "vector {id}");
                refused += 1;
                continue;
            };
            let ok = verdict(&key, &message, &sig, &format!("vector {id}"));
            match expected {
                "valid" => {
                    assert!(ok, "vector {id} is valid and was refused");
                    assert_eq!(key.check_signing_key(), Ok(()), "vector {id}'s key");
                    accepted += 1;
                    valid.push((key, message, sig));
                }
                "invalid" => {
                    assert!(!ok, "vector {id} is invalid and was accepted");
                    refused += 1;
                }
                other => panic!("vector {id}: result {other}"),
            }
        }
    }
    assert_eq!((accepted, refused), (84, 61));
    // All the valid ones in one batch: accepted; with any one signature broken: refused.
    let all: Vec<(PublicKey, &[u8], Signature)> = valid
        .iter()
        .map(|(k, m, s)| (*k, m.as_slice(), *s))
        .collect();
    assert!(verify_batch_raw(&all));
    let mut broken = all.clone();
    broken[40].2 .0[5] ^= 1;
    assert!(!verify_batch_raw(&broken));
}

/// What a case's parts are, found with curve25519-dalek directly rather than through the
/// rule under test.
#[derive(Debug, PartialEq, Eq)]
enum Order {
    Small,
    Mixed,
    Prime,
    /// Not a canonical encoding of a point.
    NotCanonical,
}

fn order(encoding: &[u8; 32]) -> Order {
    let Some(p) = CompressedEdwardsY(*encoding).decompress() else {
        return Order::NotCanonical;
    };
    if p.compress().to_bytes() != *encoding {
        return Order::NotCanonical;
    }
    if p.is_small_order() {
        Order::Small
    } else if p.is_torsion_free() {
        Order::Prime
    } else {
        Order::Mixed
    }
}

#[test]
fn the_twelve_edge_cases_of_taming_the_many_eddsas_are_decided_as_the_rule_says() {
    let text = include_str!("vectors/speccheck-cases.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(text).expect("the cases parse");
    assert_eq!(cases.len(), 12);
    // tally's verdict on each case, and why (the paper's table 5 says what each case is).
    let expected = [
        (false, "S = 0, small-order key and R"),
        (false, "small-order key"),
        (false, "small-order R"),
        (
            true,
            "mixed-order key and R; holds with and without the cofactor",
        ),
        (true, "mixed-order key and R; holds with the cofactor only"),
        (
            true,
            "mixed-order key; holds with the cofactor only (k computed from R, A, M)",
        ),
        (false, "S not below the group order L"),
        (false, "S far above L"),
        (false, "R not canonically encoded"),
        (false, "R not canonically encoded"),
        (false, "key not canonically encoded"),
        (false, "key not canonically encoded"),
    ];
    for (case, (accept, why)) in cases.iter().zip(expected) {
        let n = &case["case"];
        let message = bytes(case["message"].as_str().expect("message"));
        let (key, sig) = parts(
            case["pub_key"].as_str().expect("key"),
            case["signature"].as_str().expect("signature"),
        )
        .expect("ed25519 lengths");
        let ok = verdict(&key, &message, &sig, &format!("case {n}"));
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig.0[..32]);
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig.0[32..]);
        let s_canonical = bool::from(Scalar::from_canonical_bytes(s).is_some());
        eprintln!(
            "case {n}: key {:?}, R {:?}, S below L {s_canonical}, cofactored {:?}: tally {}",
            order(&key.0),
            order(&r),
            cofactored(&key.0, &r, &s, &message),
            if ok { "accepts" } else { "refuses" }
        );
        assert_eq!(ok, accept, "case {n} ({why})");
        // Only a key of prime order may be given a role.
        assert_eq!(
            key.check_signing_key().is_ok(),
            order(&key.0) == Order::Prime,
            "case {n}'s key"
        );
    }
}

/// The cofactored equation alone, with no check of encodings or orders.
fn cofactored(a: &[u8; 32], r: &[u8; 32], s: &[u8; 32], message: &[u8]) -> Option<bool> {
    let big_a = CompressedEdwardsY(*a).decompress()?;
    let big_r = CompressedEdwardsY(*r).decompress()?;
    let digest = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(message)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&digest);
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    let s = Scalar::from_bytes_mod_order(*s);
    let lhs = curve25519_dalek::EdwardsPoint::vartime_double_scalar_mul_basepoint(&-k, &big_a, &s);
    Some((lhs - big_r).mul_by_cofactor().is_identity())
}
