//! The auditor's verifier over blocks the real state machine built: a certified chain
//! verifies to the builder's state, and a block whose header commits to another state or other
//! outcomes is caught at its height, after which the verifier refuses to go on.

mod common;

use common::seed::*;
use common::*;
use tally_state::{build_block, BuiltBlock, ChainVerifier, State, Tip, Violation};
use tally_types::{Block, Genesis, Hash, Role, SignedEntry, TimestampMs};

/// Builds `blocks` on genesis, one after the other, returning each and the builder's state.
fn chain(g: &Genesis, blocks: Vec<Vec<SignedEntry>>) -> (Vec<BuiltBlock>, State) {
    let mut state = State::genesis(g);
    let mut tip = Tip::genesis(g);
    let mut built = Vec::new();
    for (i, entries) in blocks.into_iter().enumerate() {
        let b = build_block(
            &state,
            &tip,
            TimestampMs(T0.0 + i as u64 * MINUTE),
            pk(VALIDATOR),
            verified(&entries),
        )
        .expect("block builds");
        state.apply(&b.execution.diff).expect("in memory");
        tip = Tip {
            chain_id: tip.chain_id.clone(),
            height: b.block.header.height,
            hash: b.block.hash(),
            timestamp: b.block.header.timestamp,
        };
        built.push(b);
    }
    (built, state)
}

fn two_blocks(g: &Genesis) -> (Vec<BuiltBlock>, State) {
    let admin = key(WFP_ADMIN);
    chain(
        g,
        vec![
            vec![
                sign_at(&admin, 0, grant(pk(WFP_ISSUER), Role::Issuer)),
                sign_at(&admin, 1, grant(pk(WFP_REDEEMER), Role::Redeemer)),
            ],
            vec![
                sign_at(&admin, 2, grant(pk(WFP_VENDOR), Role::Vendor)),
                // Rejected by a rule (another agency's key), kept as evidence.
                sign_at(&admin, 3, grant(pk(UNHCR_ADMIN), Role::Issuer)),
            ],
        ],
    )
}

#[test]
fn a_certified_chain_verifies_to_the_builders_state() {
    let g = genesis();
    let (built, state) = two_blocks(&g);
    let mut verifier = ChainVerifier::new(&g);
    for b in &built {
        let summary = verifier
            .verify_next(&b.block, &certify(&b.block.header, &[VALIDATOR]))
            .expect("a chain the state machine built verifies");
        assert_eq!(summary.outcomes, b.execution.outcomes);
    }
    assert_eq!(verifier.counts(), (4, 1));
    assert_eq!(verifier.state().root(), state.root());
    assert_eq!(verifier.tip().hash, built[1].block.hash());
}

/// Block 2 with its header changed by `tamper` and certified again, so only the rule it breaks
/// can catch it; then the sound block 2, which a verifier that found a violation refuses too.
/// Returns that second answer, the verifier and the sound chain.
fn verify_tampered(tamper: impl Fn(&mut Block)) -> (Violation, ChainVerifier, Vec<BuiltBlock>) {
    let g = genesis();
    let (built, _) = two_blocks(&g);
    let mut verifier = ChainVerifier::new(&g);
    verifier
        .verify_next(
            &built[0].block,
            &certify(&built[0].block.header, &[VALIDATOR]),
        )
        .expect("block 1 is sound");
    let mut bad = built[1].block.clone();
    tamper(&mut bad);
    let v = verifier
        .verify_next(&bad, &certify(&bad.header, &[VALIDATOR]))
        .expect_err("the tampered block is caught");
    assert_eq!(v.height, 2, "{v}");
    let again = verifier
        .verify_next(
            &built[1].block,
            &certify(&built[1].block.header, &[VALIDATOR]),
        )
        .expect_err("a verifier that found a violation goes no further");
    (again, verifier, built)
}

#[test]
fn a_header_committing_to_another_state_is_caught_and_the_verifier_stops() {
    let (again, verifier, built) = verify_tampered(|b| b.header.state_root = Hash([7; 32]));
    assert_eq!(again.rule, "state_root", "{again}");
    assert_eq!(again.height, 2);
    assert_eq!(verifier.tip().hash, built[0].block.hash(), "the tip stays");
    assert_eq!(verifier.counts(), (2, 0));
}

#[test]
fn a_header_committing_to_other_outcomes_is_caught() {
    let (again, _, _) = verify_tampered(|b| b.header.outcomes_root = Hash([7; 32]));
    assert_eq!(again.rule, "outcomes_root", "{again}");
}
