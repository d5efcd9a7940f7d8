//! Inclusion proofs over blocks the real state machine built: every entry of a block proves,
//! accepted or rejected, against a four-validator genesis; and each kind of bad proof fails the
//! one check that names what is wrong.

mod common;

use common::seed::*;
use common::*;
use tally_state::{build_block, BuiltBlock, State, Tip};
use tally_types::{
    CertificateError, CommitCertificate, Genesis, InclusionProof, Keypair, ProofError, RejectCode,
    Role, SignedEntry, ValidatorGenesis,
};
use tally_types::{EntryOutcome, Hash, PROOF_VERSION};

const VALIDATORS: [u64; 4] = [100, 101, 102, 103];

fn four_validator_genesis() -> Genesis {
    let mut g = genesis();
    g.validators = VALIDATORS
        .iter()
        .map(|s| ValidatorGenesis {
            agency: name("wfp"),
            key: pk(*s),
        })
        .collect();
    g.validate().expect("four-validator genesis is valid");
    g
}

fn block_of(g: &Genesis, entries: Vec<SignedEntry>) -> BuiltBlock {
    let state = State::genesis(g);
    build_block(
        &state,
        &Tip::genesis(g),
        T0,
        pk(VALIDATORS[0]),
        verified(&entries),
    )
    .expect("block builds")
}

/// Three grants that are accepted and one, of a key another agency holds, that a rule rejects
/// (so it is ordered and kept as evidence).
fn mixed_entries() -> Vec<SignedEntry> {
    let admin = key(WFP_ADMIN);
    vec![
        sign_at(&admin, 0, grant(pk(WFP_ISSUER), Role::Issuer)),
        sign_at(&admin, 1, grant(pk(WFP_REDEEMER), Role::Redeemer)),
        sign_at(&admin, 2, grant(pk(UNHCR_ADMIN), Role::Issuer)),
        sign_at(&admin, 3, grant(pk(WFP_VENDOR), Role::Vendor)),
    ]
}

fn proof_at(built: &BuiltBlock, cert: &CommitCertificate, index: usize) -> InclusionProof {
    InclusionProof::build(
        built.block.header.clone(),
        &built.block.entries,
        &built.execution.outcomes,
        cert.clone(),
        index,
    )
    .expect("index is in the block")
}

fn fixture() -> (Genesis, BuiltBlock, CommitCertificate) {
    let g = four_validator_genesis();
    let built = block_of(&g, mixed_entries());
    let cert = certify(&built.block.header, &VALIDATORS[..3]);
    (g, built, cert)
}

fn check(proof: &InclusionProof, g: &Genesis) -> Result<(), &'static str> {
    proof.verify(g).map(|_| ()).map_err(|e| e.check())
}

#[test]
fn every_entry_of_a_block_proves_with_its_outcome() {
    let (g, built, cert) = fixture();
    assert_eq!(built.block.entries.len(), 4);
    for (i, (id, outcome)) in built.execution.outcomes.iter().enumerate() {
        let proof = proof_at(&built, &cert, i);
        let bytes = proof.to_bytes();
        let read = InclusionProof::from_bytes(&bytes).expect("round trip");
        let proven = read.verify(&g).expect("proof holds");
        assert_eq!(proven.entry_id, *id);
        assert_eq!(proven.outcome, *outcome);
        assert_eq!(proven.height, 1);
        assert_eq!(proven.index as usize, i);
        assert_eq!(proven.block_hash, built.block.hash());
        assert_eq!((proven.signers, proven.validators), (3, 4));
    }
    assert_eq!(
        built.execution.outcomes[2].1,
        EntryOutcome::Rejected(RejectCode::ForeignKey)
    );
}

#[test]
fn a_one_entry_block_proves_with_empty_paths() {
    let g = four_validator_genesis();
    let built = block_of(&g, mixed_entries()[..1].to_vec());
    let cert = certify(&built.block.header, &VALIDATORS);
    let proof = proof_at(&built, &cert, 0);
    assert!(proof.entry_path.is_empty() && proof.outcome_path.is_empty());
    assert_eq!(check(&proof, &g), Ok(()));
    assert!(InclusionProof::build(
        built.block.header.clone(),
        &built.block.entries,
        &built.execution.outcomes,
        cert,
        1
    )
    .is_none());
}

#[test]
fn any_changed_byte_is_refused() {
    let (g, built, cert) = fixture();
    for index in [0, 2] {
        let bytes = proof_at(&built, &cert, index).to_bytes();
        for pos in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[pos] ^= flip;
                let result = InclusionProof::from_bytes(&bad).and_then(|p| p.verify(&g));
                assert!(
                    result.is_err(),
                    "proof of entry {index} with byte {pos} xor {flip:#04x} still verifies"
                );
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            InclusionProof::from_bytes(&longer),
            Err(ProofError::Format(_))
        ));
        assert!(matches!(
            InclusionProof::from_bytes(&bytes[..bytes.len() - 1]),
            Err(ProofError::Format(_))
        ));
    }
}

#[test]
fn a_certificate_by_keys_outside_the_validator_set_is_refused() {
    let (g, built, _) = fixture();
    let forged = certify(&built.block.header, &[OUTSIDER, FRESH, FRESH2]);
    let proof = proof_at(&built, &forged, 0);
    assert!(matches!(
        proof.verify(&g),
        Err(ProofError::Certificate(CertificateError::NotAValidator(_)))
    ));
    assert_eq!(check(&proof, &g), Err("certificate"));

    let too_few = certify(&built.block.header, &VALIDATORS[..2]);
    assert!(matches!(
        proof_at(&built, &too_few, 0).verify(&g),
        Err(ProofError::Certificate(CertificateError::NoQuorum {
            got: 2,
            needed: 3,
            ..
        }))
    ));

    let mut other_round = certify(&built.block.header, &VALIDATORS[..3]);
    other_round.round = 1;
    assert_eq!(
        check(&proof_at(&built, &other_round, 0), &g),
        Err("certificate")
    );
}

#[test]
fn a_truncated_or_extended_path_is_refused() {
    let (g, built, cert) = fixture();
    let mut proof = proof_at(&built, &cert, 1);
    proof.entry_path.pop();
    assert_eq!(proof.verify(&g), Err(ProofError::EntryPath(1)));
    let mut proof = proof_at(&built, &cert, 1);
    proof.entry_path.push(Hash::ZERO);
    assert_eq!(check(&proof, &g), Err("entry_path"));
    let mut proof = proof_at(&built, &cert, 1);
    proof.outcome_path.truncate(1);
    assert_eq!(check(&proof, &g), Err("outcome_path"));
}

#[test]
fn a_proof_for_another_chain_or_validator_set_is_refused() {
    let (g, built, cert) = fixture();
    let proof = proof_at(&built, &cert, 0);

    let mut other_chain = g.clone();
    other_chain.chain_id = name("tally-elsewhere");
    assert!(matches!(
        proof.verify(&other_chain),
        Err(ProofError::WrongChain { what: "header", .. })
    ));

    let mut other_set = g.clone();
    other_set.validators.pop();
    assert!(matches!(
        proof.verify(&other_set),
        Err(ProofError::ValidatorSet { height: 1, .. })
    ));

    // A genuine block of a one-validator chain with the same id does not prove against the
    // four-validator genesis, even with a valid certificate of its own.
    let solo = genesis();
    let built_solo = block_of(&solo, mixed_entries());
    let cert_solo = certify(&built_solo.block.header, &[VALIDATOR]);
    let solo_proof = proof_at(&built_solo, &cert_solo, 0);
    assert_eq!(check(&solo_proof, &solo), Ok(()));
    assert_eq!(check(&solo_proof, &g), Err("validator_set"));
}

#[test]
fn a_swapped_outcome_index_or_version_is_refused() {
    let (g, built, cert) = fixture();
    let mut proof = proof_at(&built, &cert, 2);
    proof.outcome = EntryOutcome::Accepted;
    assert_eq!(check(&proof, &g), Err("outcome_path"));

    let mut proof = proof_at(&built, &cert, 0);
    proof.index = 1;
    assert_eq!(check(&proof, &g), Err("entry_path"));
    proof.index = 4;
    assert_eq!(
        proof.verify(&g),
        Err(ProofError::Index { index: 4, count: 4 })
    );

    // Another entry of the same block with this entry's path.
    let mut proof = proof_at(&built, &cert, 0);
    proof.entry = built.block.entries[1].clone();
    assert_eq!(check(&proof, &g), Err("entry_path"));

    let mut proof = proof_at(&built, &cert, 0);
    proof.version = PROOF_VERSION + 1;
    assert_eq!(check(&proof, &g), Err("version"));
}

#[test]
fn an_entry_whose_signature_fails_is_refused_even_in_a_certified_block() {
    // Validators verify signatures before they vote, so this block could only be certified by
    // a quorum that lies; the checker does not take their word for the author's signature.
    let g = four_validator_genesis();
    let mut built = block_of(&g, mixed_entries());
    let other: Keypair = key(WFP_ADMIN2);
    built.block.entries[0].signature =
        other.sign(tally_types::Domain::EntrySignature, b"something else");
    built.block.header.entries_root =
        tally_types::Block::compute_entries_root(&built.block.entries);
    let cert = certify(&built.block.header, &VALIDATORS);
    let proof = proof_at(&built, &cert, 0);
    assert_eq!(proof.verify(&g), Err(ProofError::EntrySignature));
    assert_eq!(check(&proof_at(&built, &cert, 1), &g), Ok(()));
}

#[test]
fn an_oversized_proof_is_refused_before_decoding() {
    let big = vec![0u8; tally_types::PROOF_BYTES_MAX + 1];
    assert!(matches!(
        InclusionProof::from_bytes(&big),
        Err(ProofError::TooLarge(_))
    ));
}
