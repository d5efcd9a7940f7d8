//! One test per rejection the state machine can produce, plus the positive workflows the rules
//! protect. Every rule rejection is checked for its exact code, for consuming the author's
//! sequence (the author's next entry, at sequence + 1, goes through) and for changing nothing
//! else in the state (see `Chain::reject`). Admission failures are checked for making the whole
//! block invalid and for *not* consuming the sequence.

mod common;

use common::seed::*;
use common::*;
use tally_state::execute::holds_role;
use tally_state::records::{
    AttestationStatus, Programme, RegistryRecord, SubjectRecord, Title, VendorAccount, Voucher,
    VoucherStatus,
};
use tally_state::{execute_block, execute_verified, ExecuteError, StateRead};
use tally_types::entry::key_rotation_message;
use tally_types::{
    CivilDate, Domain, EntryBody, EntryId, EntryOutcome, Hash, Payload, PublicKey, ReasonCode,
    RegistryKind, RejectCode, Role, SignedEntry, TimestampMs, AMOUNT_MAX,
};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// The default voucher expiry: 30 days after genesis, inside every standard programme.
fn expiry() -> TimestampMs {
    TimestampMs(T0.0 + 30 * DAY)
}

fn wfp_voucher(c: &mut Chain, subject_n: u64, amount: u64) -> EntryId {
    c.accept(
        &key(WFP_ISSUER),
        issue("wfp-food", subject_n, amount, expiry(), None),
    )
}

fn voucher(c: &Chain, id: &EntryId) -> Voucher {
    c.state
        .voucher(id)
        .expect("the state decodes")
        .unwrap_or_else(|| panic!("voucher {} exists", id.short()))
}

fn prog(c: &Chain, id: &str) -> Programme {
    c.state
        .programme(&name(id))
        .expect("the state decodes")
        .unwrap_or_else(|| panic!("programme {id} exists"))
}

fn account(c: &Chain, programme: &str, vendor: &PublicKey) -> Option<VendorAccount> {
    c.state
        .vendor_account(&name(programme), vendor)
        .expect("the state decodes")
}

fn attestation_status(c: &Chain, id: &EntryId) -> AttestationStatus {
    c.state
        .attestation(id)
        .expect("the state decodes")
        .unwrap_or_else(|| panic!("attestation {} exists", id.short()))
        .status
}

fn record(c: &Chain, id: &EntryId) -> RegistryRecord {
    c.state
        .registry_record(id)
        .expect("the state decodes")
        .unwrap_or_else(|| panic!("registry record {} exists", id.short()))
}

fn subject_rec(c: &Chain, n: u64) -> SubjectRecord {
    c.state
        .subject(&subject(n))
        .expect("the state decodes")
        .unwrap_or_default()
}

fn title_of(c: &Chain, parcel: &str) -> Option<Title> {
    c.state.title(&name(parcel)).expect("the state decodes")
}

fn admins_of(c: &Chain, agency: &str) -> u32 {
    c.state
        .agency(&name(agency))
        .expect("the state decodes")
        .unwrap_or_else(|| panic!("agency {agency} exists"))
        .admins
}

fn birth(subject_n: u64, record_n: u64) -> Payload {
    Payload::RegisterBirth {
        subject: subject(subject_n),
        event: event(record_n, past()),
    }
}

fn death(subject_n: u64, record_n: u64) -> Payload {
    Payload::RegisterDeath {
        subject: subject(subject_n),
        event: event(record_n, past()),
    }
}

fn marriage(a: u64, b: u64, record_n: u64) -> Payload {
    Payload::RegisterMarriage {
        spouse_a: subject(a),
        spouse_b: subject(b),
        event: event(record_n, past()),
    }
}

fn divorce(marriage: EntryId, record_n: u64) -> Payload {
    Payload::RegisterDivorce {
        marriage,
        event: event(record_n, past()),
    }
}

fn register_title(parcel: &str, holder: u64, record_n: u64) -> Payload {
    Payload::RegisterTitle {
        parcel: name(parcel),
        holder: subject(holder),
        event: event(record_n, past()),
    }
}

fn transfer(parcel: &str, from: u64, to: u64, record_n: u64) -> Payload {
    Payload::TransferTitle {
        parcel: name(parcel),
        from: subject(from),
        to: subject(to),
        event: event(record_n, past()),
    }
}

fn amend(original: EntryId, reason: ReasonCode, record_n: u64) -> Payload {
    Payload::AmendRecord {
        original,
        reason,
        event: event(record_n, past()),
    }
}

fn suspend(attestation: EntryId) -> Payload {
    Payload::SuspendAttestation {
        attestation,
        reason: ReasonCode::UnderReview,
    }
}

fn revoke_attestation(attestation: EntryId) -> Payload {
    Payload::RevokeAttestation {
        attestation,
        reason: ReasonCode::Fraud,
    }
}

fn reinstate(attestation: EntryId) -> Payload {
    Payload::ReinstateAttestation { attestation }
}

fn day_after(d: CivilDate) -> CivilDate {
    CivilDate::from_days_since_epoch(d.days_since_epoch() + 1)
}

/// An entry by `author` whose signature was made by `signer`.
fn signed_by_other(
    author: &tally_types::Keypair,
    signer: &tally_types::Keypair,
    seq: u64,
) -> SignedEntry {
    let body = EntryBody {
        chain_id: name(CHAIN),
        author: author.public(),
        sequence: seq,
        payload: grant(pk(WFP_ISSUER), Role::Issuer),
    };
    let signature = signer.sign_hash(Domain::EntrySignature, &body.id());
    SignedEntry { body, signature }
}

// =============================================================================================
// Admission: entries that can never be ordered make the block invalid
// =============================================================================================

#[test]
fn entry_for_another_chain_makes_block_invalid_wrong_chain() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let seq = c.committed_next_sequence(&admin.public());
    let foreign = EntryBody {
        chain_id: name("other-chain"),
        author: admin.public(),
        sequence: seq,
        payload: programme("wfp-food", 1_000, "food-basket", "2027-01"),
    }
    .sign(&admin);
    c.assert_refused(vec![foreign], 0, RejectCode::WrongChain);
    // The sequence was not consumed: the same sequence on the right chain goes through.
    c.accept(
        &admin,
        programme("wfp-food", 1_000, "food-basket", "2027-01"),
    );
    assert_eq!(c.committed_next_sequence(&admin.public()), seq + 1);
}

#[test]
fn entry_with_tampered_signature_makes_block_invalid_bad_signature() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let mut entry = c.sign(&admin, grant(pk(WFP_ISSUER), Role::Redeemer));
    entry.signature.0[10] ^= 0x01;
    c.assert_refused(vec![entry], 0, RejectCode::BadSignature);
    assert!(!key_record(&c.state, &pk(WFP_ISSUER))
        .roles
        .contains(&Role::Redeemer));
    c.accept(&admin, grant(pk(WFP_ISSUER), Role::Redeemer));
}

#[test]
fn entry_signed_by_a_key_other_than_its_author_makes_block_invalid_bad_signature() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let seq = c.committed_next_sequence(&admin.public());
    let forged = signed_by_other(&admin, &key(UNHCR_ADMIN), seq);
    c.assert_refused(vec![forged], 0, RejectCode::BadSignature);
    c.accept(&admin, grant(pk(WFP_ISSUER), Role::Redeemer));
}

#[test]
fn entry_by_unregistered_key_makes_block_invalid_unknown_author() {
    let mut c = Chain::with_programmes(10_000);
    let outsider = key(OUTSIDER);
    let entry = c.sign(&outsider, issue("wfp-food", 1, 100, expiry(), None));
    c.assert_refused(vec![entry], 0, RejectCode::UnknownAuthor);
    assert!(c
        .state
        .key_record(&outsider.public())
        .expect("the state decodes")
        .is_none());
}

#[test]
fn reused_sequence_makes_block_invalid_stale_sequence() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let seq = c.committed_next_sequence(&admin.public());
    assert!(seq > 0, "the staffing block used the admin's sequences");
    let stale = sign_at(&admin, seq - 1, grant(pk(WFP_ISSUER), Role::Redeemer));
    c.assert_refused(vec![stale], 0, RejectCode::StaleSequence);
    c.accept(&admin, grant(pk(WFP_ISSUER), Role::Redeemer));
}

#[test]
fn skipped_sequence_makes_block_invalid_future_sequence() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let seq = c.committed_next_sequence(&admin.public());
    let ahead = sign_at(&admin, seq + 1, grant(pk(WFP_ISSUER), Role::Redeemer));
    c.assert_refused(vec![ahead.clone()], 0, RejectCode::FutureSequence);
    // Once the gap is filled, the same entry goes through.
    let gap = sign_at(&admin, seq, grant(pk(WFP_ISSUER), Role::Attester));
    let exec = c.commit(vec![gap, ahead]);
    assert!(exec
        .outcomes
        .iter()
        .all(|(_, o)| *o == EntryOutcome::Accepted));
}

#[test]
fn the_same_entry_twice_in_a_block_makes_block_invalid_stale_sequence() {
    let mut c = Chain::staffed();
    let entry = c.sign(&key(WFP_ADMIN), grant(pk(WFP_ISSUER), Role::Redeemer));
    c.assert_refused(vec![entry.clone(), entry], 1, RejectCode::StaleSequence);
}

#[test]
fn entry_by_rotated_away_key_makes_block_invalid_retired_key() {
    let mut c = Chain::with_programmes(10_000);
    let old = key(WFP_ISSUER);
    let new = key(FRESH);
    c.accept(&old, rotate(&old, &new));
    let entry = c.sign(&old, issue("wfp-food", 1, 100, expiry(), None));
    c.assert_refused(vec![entry], 0, RejectCode::RetiredKey);
    // The retired key stays retired even under a fresh sequence; the new key signs instead.
    c.accept(&new, issue("wfp-food", 1, 100, expiry(), None));
}

#[test]
fn payloads_failing_their_own_checks_make_block_invalid_malformed() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 500);
    c.accept(&key(WFP_REDEEMER), redeem(v, 100, pk(WFP_VENDOR), "till-1"));
    let later = TimestampMs(c.now.0 + DAY);
    let cases: Vec<(u64, Payload)> = vec![
        (
            WFP_ADMIN,
            programme("zero-budget", 0, "food-basket", "2027-01"),
        ),
        (
            WFP_ADMIN,
            programme_window(
                "empty-window",
                1_000,
                "food-basket",
                "2027-01",
                later,
                later,
            ),
        ),
        (
            WFP_ADMIN,
            programme_window(
                "inverted-window",
                1_000,
                "food-basket",
                "2027-01",
                later,
                c.now,
            ),
        ),
        (WFP_ISSUER, issue("wfp-food", 2, 0, expiry(), None)),
        (WFP_REDEEMER, redeem(v, 0, pk(WFP_VENDOR), "till-2")),
        (WFP_ADMIN, settle("wfp-food", pk(WFP_VENDOR), 0, "pay-0")),
        (WFP_REGISTRAR, marriage(7, 7, 1)),
        (WFP_REGISTRAR, transfer("parcel-1", 7, 7, 1)),
        // Numbers a JSON client could not read exactly.
        (
            WFP_ADMIN,
            programme("huge-budget", AMOUNT_MAX + 1, "food-basket", "2027-01"),
        ),
        (
            WFP_ISSUER,
            issue("wfp-food", 2, AMOUNT_MAX + 1, expiry(), None),
        ),
        (WFP_ISSUER, issue("wfp-food", 2, u64::MAX, expiry(), None)),
        (
            WFP_ISSUER,
            issue("wfp-food", 2, 10, TimestampMs(AMOUNT_MAX + 1), None),
        ),
        (
            WFP_REDEEMER,
            redeem(v, AMOUNT_MAX + 1, pk(WFP_VENDOR), "till-2"),
        ),
        (
            WFP_ADMIN,
            settle("wfp-food", pk(WFP_VENDOR), AMOUNT_MAX + 1, "pay-0"),
        ),
    ];
    let before = c.state.root();
    for (author_seed, payload) in cases {
        let author = key(author_seed);
        let kind = payload.kind();
        let seq = c.committed_next_sequence(&author.public());
        let entry = c.sign(&author, payload);
        c.assert_refused(vec![entry], 0, RejectCode::Malformed);
        assert_eq!(
            c.committed_next_sequence(&author.public()),
            seq,
            "a malformed {kind} consumes no sequence"
        );
    }
    assert_eq!(c.state.root(), before);
    // Each author's next well-formed entry uses the sequence the malformed one did not consume.
    c.accept(&key(WFP_ISSUER), issue("wfp-food", 2, 10, expiry(), None));
    c.accept(&key(WFP_REDEEMER), redeem(v, 10, pk(WFP_VENDOR), "till-2"));
    c.accept(
        &key(WFP_ADMIN),
        settle("wfp-food", pk(WFP_VENDOR), 10, "pay-0"),
    );
    c.accept(&key(WFP_REGISTRAR), marriage(7, 8, 1));
}

#[test]
fn one_inadmissible_entry_invalidates_the_whole_block_and_consumes_nothing() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let seq = c.committed_next_sequence(&issuer.public());
    let good = c.sign(&issuer, issue("wfp-food", 1, 100, expiry(), None));
    let mut bad = c.sign(&key(WFP_ADMIN), grant(pk(WFP_ISSUER), Role::Redeemer));
    bad.signature.0[0] ^= 0x80;
    let before = snapshot(&c.state);
    c.assert_refused(vec![good.clone(), bad], 1, RejectCode::BadSignature);
    assert_eq!(snapshot(&c.state), before);
    assert_eq!(c.committed_next_sequence(&issuer.public()), seq);
    // The good entry alone, with the same sequence, is fine.
    let exec = c.commit(vec![good]);
    assert_eq!(exec.outcomes[0].1, EntryOutcome::Accepted);
}

#[test]
fn execute_candidates_leaves_out_unorderable_entries_and_orders_the_rest() {
    let c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let seq = c.committed_next_sequence(&issuer.public());
    let first = sign_at(&issuer, seq, issue("wfp-food", 1, 100, expiry(), None));
    let replay = first.clone();
    let skipped = sign_at(&issuer, seq + 5, issue("wfp-food", 2, 100, expiry(), None));
    let second = sign_at(&issuer, seq + 1, issue("wfp-food", 3, 100, expiry(), None));
    let outsider = sign_at(&key(OUTSIDER), 0, issue("wfp-food", 4, 100, expiry(), None));
    let (exec, left_out) = tally_state::execute_candidates(
        &c.state,
        &c.ctx(),
        verified(&[first.clone(), replay, skipped, second.clone(), outsider]),
    )
    .expect("the state decodes");
    assert_eq!(exec.entries, vec![first.clone(), second.clone()]);
    assert_eq!(
        exec.outcomes,
        vec![
            (first.id(), EntryOutcome::Accepted),
            (second.id(), EntryOutcome::Accepted)
        ]
    );
    let codes: Vec<RejectCode> = left_out.iter().map(|(_, r)| r.code).collect();
    assert_eq!(
        codes,
        vec![
            RejectCode::StaleSequence,
            RejectCode::FutureSequence,
            RejectCode::UnknownAuthor
        ]
    );
    // The same ordered entries as a block give the same result.
    let block = c
        .try_block(&[first, second])
        .expect("the ordered entries form a valid block");
    assert_eq!(block.outcomes, exec.outcomes);
    assert_eq!(block.diff, exec.diff);
}

// =============================================================================================
// Governance rules
// =============================================================================================

#[test]
fn granting_a_role_without_the_admin_role_is_rejected_missing_role() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    c.reject(
        &issuer,
        grant(pk(WFP_ISSUER), Role::Admin),
        RejectCode::MissingRole,
    );
    assert!(!key_record(&c.state, &issuer.public())
        .roles
        .contains(&Role::Admin));
    c.accept(&issuer, issue("wfp-food", 1, 100, expiry(), None));
}

#[test]
fn issuing_without_the_issuer_role_is_rejected_missing_role() {
    let mut c = Chain::with_programmes(10_000);
    // An admin may open programmes but not issue from them.
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        issue("wfp-food", 1, 100, expiry(), None),
        RejectCode::MissingRole,
    );
    assert_eq!(prog(&c, "wfp-food").issued, 0);
    c.accept(&admin, grant(pk(WFP_ADMIN), Role::Issuer));
    c.accept(&admin, issue("wfp-food", 1, 100, expiry(), None));
}

#[test]
fn redeeming_without_the_redeemer_role_is_rejected_missing_role() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 500);
    let vendor = key(WFP_VENDOR);
    c.reject(
        &vendor,
        redeem(v, 100, pk(WFP_VENDOR), "till-1"),
        RejectCode::MissingRole,
    );
    assert_eq!(voucher(&c, &v).redeemed, 0);
    // The vendor's next entry (sequence + 1) is ordered: a rotation needs no role.
    c.accept(&vendor, rotate(&vendor, &key(FRESH)));
}

#[test]
fn a_revoked_role_leaves_the_key_missing_role() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let admin = key(WFP_ADMIN);
    c.accept(&issuer, issue("wfp-food", 1, 100, expiry(), None));
    c.accept(&issuer, issue("wfp-food", 2, 100, expiry(), None));
    c.accept(&admin, revoke_role(pk(WFP_ISSUER), Role::Issuer));
    assert!(!holds_role(&c.state, &issuer.public(), Role::Issuer).expect("the state decodes"));
    c.reject(
        &issuer,
        issue("wfp-food", 3, 100, expiry(), None),
        RejectCode::MissingRole,
    );
    assert_eq!(prog(&c, "wfp-food").issued, 200);
    // Granted again, the key issues with its next sequence.
    c.accept(&admin, grant(pk(WFP_ISSUER), Role::Issuer));
    c.accept(&issuer, issue("wfp-food", 3, 100, expiry(), None));
    assert_eq!(prog(&c, "wfp-food").issued, 300);
}

#[test]
fn granting_a_role_to_another_agencys_key_is_rejected_foreign_key() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        grant(pk(UNHCR_ISSUER), Role::Redeemer),
        RejectCode::ForeignKey,
    );
    c.reject(
        &admin,
        grant(pk(UNHCR_ADMIN), Role::Issuer),
        RejectCode::ForeignKey,
    );
    c.accept(&admin, grant(pk(WFP_ISSUER), Role::Redeemer));
}

#[test]
fn revoking_a_role_of_another_agencys_key_is_rejected_foreign_key() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        revoke_role(pk(UNHCR_ISSUER), Role::Issuer),
        RejectCode::ForeignKey,
    );
    assert!(holds_role(&c.state, &pk(UNHCR_ISSUER), Role::Issuer).expect("the state decodes"));
    c.accept(&admin, revoke_role(pk(WFP_ISSUER), Role::Issuer));
}

#[test]
fn revoking_a_role_of_an_unregistered_key_is_rejected_foreign_key() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        revoke_role(pk(OUTSIDER), Role::Issuer),
        RejectCode::ForeignKey,
    );
    c.accept(&admin, grant(pk(OUTSIDER), Role::Issuer));
}

#[test]
fn revoking_a_role_the_key_does_not_hold_is_rejected_wrong_status() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        revoke_role(pk(WFP_ISSUER), Role::Vendor),
        RejectCode::WrongStatus,
    );
    c.accept(&admin, revoke_role(pk(WFP_ISSUER), Role::Issuer));
}

#[test]
fn granting_a_role_to_a_validator_key_is_rejected_key_in_use() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        grant(pk(VALIDATOR), Role::Issuer),
        RejectCode::KeyInUse,
    );
    assert!(c
        .state
        .key_record(&pk(VALIDATOR))
        .expect("the state decodes")
        .is_none());
    c.accept(&admin, grant(pk(OUTSIDER), Role::Issuer));
}

#[test]
fn rotating_to_an_already_registered_key_is_rejected_key_in_use() {
    let mut c = Chain::staffed();
    let issuer = key(WFP_ISSUER);
    // Another key of the same agency, a key of another agency, and the author itself.
    c.reject(
        &issuer,
        rotate(&issuer, &key(WFP_REDEEMER)),
        RejectCode::KeyInUse,
    );
    c.reject(
        &issuer,
        rotate(&issuer, &key(UNHCR_ADMIN)),
        RejectCode::KeyInUse,
    );
    c.reject(&issuer, rotate(&issuer, &issuer), RejectCode::KeyInUse);
    assert_eq!(key_record(&c.state, &issuer.public()).retired_for, None);
    c.accept(&issuer, rotate(&issuer, &key(FRESH)));
}

#[test]
fn rotating_to_a_validator_key_is_rejected_key_in_use() {
    let mut c = Chain::staffed();
    let issuer = key(WFP_ISSUER);
    c.reject(
        &issuer,
        rotate(&issuer, &key(VALIDATOR)),
        RejectCode::KeyInUse,
    );
    c.accept(&issuer, rotate(&issuer, &key(FRESH)));
}

#[test]
fn granting_a_role_to_a_retired_key_is_rejected_retired_key() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let old = key(WFP_ISSUER);
    c.accept(&old, rotate(&old, &key(FRESH)));
    c.reject(
        &admin,
        grant(old.public(), Role::Redeemer),
        RejectCode::RetiredKey,
    );
    c.accept(&admin, grant(pk(FRESH), Role::Redeemer));
    assert_eq!(
        key_record(&c.state, &pk(FRESH)).roles,
        [Role::Issuer, Role::Redeemer].into()
    );
}

#[test]
fn revoking_the_last_admin_is_rejected_last_admin() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    assert_eq!(admins_of(&c, "wfp"), 1);
    c.reject(
        &admin,
        revoke_role(admin.public(), Role::Admin),
        RejectCode::LastAdmin,
    );
    assert_eq!(admins_of(&c, "wfp"), 1);
    assert!(holds_role(&c.state, &admin.public(), Role::Admin).expect("the state decodes"));
    c.accept(&admin, grant(pk(WFP_ADMIN2), Role::Admin));
}

#[test]
fn an_agency_can_replace_its_admin_but_never_drop_the_last_one() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let admin2 = key(WFP_ADMIN2);
    c.accept(&admin, grant(admin2.public(), Role::Admin));
    assert_eq!(admins_of(&c, "wfp"), 2);
    // Granting a role already held changes nothing.
    c.accept(&admin, grant(admin2.public(), Role::Admin));
    assert_eq!(admins_of(&c, "wfp"), 2);
    c.accept(&admin2, revoke_role(admin.public(), Role::Admin));
    assert_eq!(admins_of(&c, "wfp"), 1);
    c.reject(
        &admin2,
        revoke_role(admin2.public(), Role::Admin),
        RejectCode::LastAdmin,
    );
    // The demoted key cannot administer any more.
    c.reject(
        &admin,
        grant(pk(OUTSIDER), Role::Issuer),
        RejectCode::MissingRole,
    );
    c.accept(&admin2, grant(pk(OUTSIDER), Role::Issuer));
    // The other agency's count never moved.
    assert_eq!(admins_of(&c, "unhcr"), 1);
}

// =============================================================================================
// Key rotation
// =============================================================================================

#[test]
fn key_rotation_retires_the_old_key_and_moves_its_roles_to_a_new_key_starting_at_sequence_zero() {
    let mut c = Chain::with_programmes(10_000);
    let old = key(WFP_ISSUER);
    let new = key(FRESH);
    c.accept(&old, issue("wfp-food", 1, 100, expiry(), None));
    let old_before = key_record(&c.state, &old.public());
    c.accept(&old, rotate(&old, &new));

    let old_after = key_record(&c.state, &old.public());
    assert_eq!(old_after.retired_for, Some(new.public()));
    assert_eq!(old_after.next_sequence, old_before.next_sequence + 1);
    assert_eq!(old_after.agency, old_before.agency);
    let new_rec = key_record(&c.state, &new.public());
    assert_eq!(new_rec.agency, name("wfp"));
    assert_eq!(new_rec.roles, old_before.roles);
    assert_eq!(new_rec.next_sequence, 0);
    assert_eq!(new_rec.retired_for, None);
    assert!(!holds_role(&c.state, &old.public(), Role::Issuer).expect("the state decodes"));
    assert!(holds_role(&c.state, &new.public(), Role::Issuer).expect("the state decodes"));

    // The old key can sign nothing more, whatever the sequence.
    let seq = old_after.next_sequence;
    c.assert_refused(
        vec![sign_at(
            &old,
            seq,
            issue("wfp-food", 2, 100, expiry(), None),
        )],
        0,
        RejectCode::RetiredKey,
    );
    // The new key starts at 0, not at the old key's sequence.
    c.assert_refused(
        vec![sign_at(&new, 1, issue("wfp-food", 2, 100, expiry(), None))],
        0,
        RejectCode::FutureSequence,
    );
    c.assert_refused(
        vec![sign_at(
            &new,
            seq,
            issue("wfp-food", 2, 100, expiry(), None),
        )],
        0,
        RejectCode::FutureSequence,
    );
    let exec = c.commit(vec![sign_at(
        &new,
        0,
        issue("wfp-food", 2, 100, expiry(), None),
    )]);
    assert_eq!(exec.outcomes[0].1, EntryOutcome::Accepted);
    assert_eq!(prog(&c, "wfp-food").issued, 200);
    // And it can rotate again.
    c.accept(&new, rotate(&new, &key(FRESH2)));
    assert_eq!(
        key_record(&c.state, &pk(FRESH2)).roles,
        [Role::Issuer].into()
    );
}

#[test]
fn rotating_an_admin_key_keeps_the_agency_admin_count() {
    let mut c = Chain::staffed();
    let old = key(WFP_ADMIN);
    let new = key(FRESH);
    c.accept(&old, rotate(&old, &new));
    assert_eq!(admins_of(&c, "wfp"), 1);
    c.accept(&new, grant(pk(OUTSIDER), Role::Redeemer));
    c.reject(
        &new,
        revoke_role(new.public(), Role::Admin),
        RejectCode::LastAdmin,
    );
}

#[test]
fn rotation_with_a_bad_proof_is_refused_at_admission_bad_signature() {
    let mut c = Chain::staffed();
    let old = key(WFP_ISSUER);
    let new = key(FRESH);
    let seq = c.committed_next_sequence(&old.public());
    let chain = name(CHAIN);
    let right_msg = key_rotation_message(&chain, &old.public());
    let bad_proofs = [
        // Signed by someone other than the new key.
        key(FRESH2).sign(Domain::KeyRotation, &right_msg),
        // Signed by the new key, but for another chain.
        new.sign(
            Domain::KeyRotation,
            &key_rotation_message(&name("other-chain"), &old.public()),
        ),
        // Signed by the new key, but for another old key.
        new.sign(
            Domain::KeyRotation,
            &key_rotation_message(&chain, &pk(WFP_REDEEMER)),
        ),
        // The right message under the wrong domain.
        new.sign(Domain::EntrySignature, &right_msg),
    ];
    for proof in bad_proofs {
        let entry = sign_at(
            &old,
            seq,
            Payload::RotateKey {
                new_key: new.public(),
                new_key_proof: proof,
            },
        );
        c.assert_refused(vec![entry.clone()], 0, RejectCode::BadSignature);
        // The proof is checked even when entry signatures are taken as verified.
        match execute_verified(&c.state, &c.ctx(), &verified(std::slice::from_ref(&entry))) {
            Err(ExecuteError::InvalidBlock(ib)) => {
                assert_eq!(ib.rejection.code, RejectCode::BadSignature)
            }
            other => panic!("a bad rotation proof must be refused: {other:?}"),
        }
    }
    assert_eq!(key_record(&c.state, &old.public()).retired_for, None);
    assert!(c
        .state
        .key_record(&new.public())
        .expect("the state decodes")
        .is_none());
    // The sequence was not consumed: a valid rotation at the same sequence goes through.
    let exec = c.commit(vec![sign_at(&old, seq, rotate(&old, &new))]);
    assert_eq!(exec.outcomes[0].1, EntryOutcome::Accepted);
}

#[test]
fn revoking_admin_from_a_rotated_away_key_does_not_undercount_live_admins() {
    let mut c = Chain::staffed();
    let a = key(WFP_ADMIN);
    let b = key(WFP_ADMIN2);
    let a_new = key(FRESH);
    c.accept(&a, grant(b.public(), Role::Admin));
    c.accept(&a, rotate(&a, &a_new));
    assert_eq!(admins_of(&c, "wfp"), 2, "two live admins: a_new and b");
    // Whatever the outcome (rejected retired_key, or accepted as a no-op), the retired key's
    // stale Admin role must not count against the live admins.
    let _ = c.submit(&b, revoke_role(a.public(), Role::Admin));
    assert_eq!(
        admins_of(&c, "wfp"),
        2,
        "a_new and b still hold the admin role on live keys"
    );
    // So one of the two live admins may step down.
    c.accept(&a_new, revoke_role(b.public(), Role::Admin));
}

// =============================================================================================
// Programmes and vouchers
// =============================================================================================

#[test]
fn creating_an_existing_programme_is_rejected_programme_exists() {
    let mut c = Chain::with_programmes(10_000);
    let before = prog(&c, "wfp-food");
    c.reject(
        &key(WFP_ADMIN),
        programme("wfp-food", 99, "other", "2027-02"),
        RejectCode::ProgrammeExists,
    );
    // Programme ids are unique on the chain, not per agency.
    c.reject(
        &key(UNHCR_ADMIN),
        programme("wfp-food", 99, "other", "2027-02"),
        RejectCode::ProgrammeExists,
    );
    assert_eq!(prog(&c, "wfp-food"), before);
    c.accept(
        &key(WFP_ADMIN),
        programme("wfp-cash", 99, "cash", "2027-02"),
    );
}

#[test]
fn creating_a_programme_that_already_ended_is_rejected_outside_window() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let start = TimestampMs(T0.0 - 10 * DAY);
    c.reject(
        &admin,
        programme_window("late", 1_000, "food-basket", "2027-01", start, c.now),
        RejectCode::OutsideWindow,
    );
    let end = TimestampMs(c.now.0 - 1);
    c.reject(
        &admin,
        programme_window("late", 1_000, "food-basket", "2027-01", start, end),
        RejectCode::OutsideWindow,
    );
    let end = TimestampMs(c.now.0 + 1);
    c.accept(
        &admin,
        programme_window("late", 1_000, "food-basket", "2027-01", start, end),
    );
}

#[test]
fn issuing_from_an_unknown_programme_is_rejected_unknown_programme() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    c.reject(
        &issuer,
        issue("no-such-programme", 1, 100, expiry(), None),
        RejectCode::UnknownProgramme,
    );
    c.accept(&issuer, issue("wfp-food", 1, 100, expiry(), None));
}

#[test]
fn settling_in_an_unknown_programme_is_rejected_unknown_programme() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 500);
    c.accept(&key(WFP_REDEEMER), redeem(v, 500, pk(WFP_VENDOR), "till-1"));
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        settle("no-such-programme", pk(WFP_VENDOR), 100, "pay-1"),
        RejectCode::UnknownProgramme,
    );
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR), 100, "pay-1"));
}

#[test]
fn issuing_from_another_agencys_programme_is_rejected_foreign_agency() {
    let mut c = Chain::with_programmes(10_000);
    let unhcr_issuer = key(UNHCR_ISSUER);
    c.reject(
        &unhcr_issuer,
        issue("wfp-food", 1, 100, expiry(), None),
        RejectCode::ForeignAgency,
    );
    assert_eq!(prog(&c, "wfp-food").issued, 0);
    c.accept(&unhcr_issuer, issue("unhcr-food", 1, 100, expiry(), None));
}

#[test]
fn redeeming_another_agencys_voucher_is_rejected_foreign_agency() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 500);
    let unhcr_redeemer = key(UNHCR_REDEEMER);
    c.reject(
        &unhcr_redeemer,
        redeem(v, 100, pk(WFP_VENDOR), "till-1"),
        RejectCode::ForeignAgency,
    );
    assert_eq!(voucher(&c, &v).redeemed, 0);
    let u = c.accept(
        &key(UNHCR_ISSUER),
        issue("unhcr-food", 2, 500, expiry(), None),
    );
    c.accept(&unhcr_redeemer, redeem(u, 100, pk(UNHCR_VENDOR), "till-1"));
}

#[test]
fn revoking_or_expiring_another_agencys_voucher_is_rejected_foreign_agency() {
    let mut c = Chain::with_programmes(10_000);
    let v = c.accept(
        &key(WFP_ISSUER),
        issue("wfp-food", 1, 500, TimestampMs(c.now.0 + HOUR), None),
    );
    let unhcr_issuer = key(UNHCR_ISSUER);
    c.reject(&unhcr_issuer, revoke_voucher(v), RejectCode::ForeignAgency);
    c.advance(2 * HOUR);
    c.reject(&unhcr_issuer, expire_voucher(v), RejectCode::ForeignAgency);
    assert_eq!(voucher(&c, &v).status, VoucherStatus::Active);
    c.accept(&unhcr_issuer, issue("unhcr-food", 2, 500, expiry(), None));
}

#[test]
fn settling_in_another_agencys_programme_is_rejected_foreign_agency() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 500);
    c.accept(&key(WFP_REDEEMER), redeem(v, 500, pk(WFP_VENDOR), "till-1"));
    c.reject(
        &key(UNHCR_ADMIN),
        settle("wfp-food", pk(WFP_VENDOR), 100, "pay-1"),
        RejectCode::ForeignAgency,
    );
    assert_eq!(
        account(&c, "wfp-food", &pk(WFP_VENDOR)).map(|a| a.settled),
        Some(0)
    );
    c.accept(
        &key(UNHCR_ADMIN),
        programme("unhcr-cash", 1_000, "cash", "2027-01"),
    );
}

#[test]
fn issuing_before_the_programme_opens_is_rejected_outside_window() {
    let mut c = Chain::staffed();
    let opens = TimestampMs(c.now.0 + DAY);
    let closes = TimestampMs(c.now.0 + 10 * DAY);
    c.accept(
        &key(WFP_ADMIN),
        programme_window("later", 1_000, "food-basket", "2027-02", opens, closes),
    );
    let issuer = key(WFP_ISSUER);
    c.reject(
        &issuer,
        issue("later", 1, 100, closes, None),
        RejectCode::OutsideWindow,
    );
    assert_eq!(prog(&c, "later").issued, 0);
    c.now = opens;
    c.accept(&issuer, issue("later", 1, 100, closes, None));
}

#[test]
fn issuing_at_or_after_the_programme_closes_is_rejected_outside_window() {
    let mut c = Chain::staffed();
    let closes = TimestampMs(c.now.0 + DAY);
    c.accept(
        &key(WFP_ADMIN),
        programme_window("short", 1_000, "food-basket", "2027-02", T0, closes),
    );
    let issuer = key(WFP_ISSUER);
    c.now = TimestampMs(closes.0 - 2);
    c.accept(&issuer, issue("short", 1, 100, closes, None));
    c.now = closes;
    c.reject(
        &issuer,
        issue("short", 2, 100, closes, None),
        RejectCode::OutsideWindow,
    );
    c.advance(DAY);
    c.reject(
        &issuer,
        issue("short", 2, 100, closes, None),
        RejectCode::OutsideWindow,
    );
    assert_eq!(prog(&c, "short").issued, 100);
}

#[test]
fn issuing_beyond_the_budget_is_rejected_over_budget() {
    let mut c = Chain::with_programmes(1_000);
    let issuer = key(WFP_ISSUER);
    c.accept(&issuer, issue("wfp-food", 1, 600, expiry(), None));
    c.reject(
        &issuer,
        issue("wfp-food", 2, 401, expiry(), None),
        RejectCode::OverBudget,
    );
    c.reject(
        &issuer,
        issue("wfp-food", 2, tally_types::AMOUNT_MAX, expiry(), None),
        RejectCode::OverBudget,
    );
    assert_eq!(prog(&c, "wfp-food").committed(), 600);
    // Exactly the budget is fine; then not one unit more.
    c.accept(&issuer, issue("wfp-food", 2, 400, expiry(), None));
    assert_eq!(prog(&c, "wfp-food").committed(), 1_000);
    c.reject(
        &issuer,
        issue("wfp-food", 3, 1, expiry(), None),
        RejectCode::OverBudget,
    );
    // The other agency's programme has its own budget.
    c.accept(
        &key(UNHCR_ISSUER),
        issue("unhcr-food", 3, 1_000, expiry(), None),
    );
}

#[test]
fn a_programme_issues_at_most_amount_max_in_its_lifetime_so_every_total_reads_exactly_in_json() {
    let mut c = Chain::with_programmes(AMOUNT_MAX);
    let issuer = key(WFP_ISSUER);
    // The whole budget, returned by a revocation: within the budget, more may be issued...
    let v = c.accept(
        &issuer,
        issue("wfp-food", 1, AMOUNT_MAX - 10, expiry(), None),
    );
    c.accept(&issuer, revoke_voucher(v));
    assert_eq!(prog(&c, "wfp-food").committed(), 0);
    c.accept(&issuer, issue("wfp-food", 2, 10, expiry(), None));
    // ...but not past AMOUNT_MAX issued in all, which bounds every total of the programme.
    c.reject(
        &issuer,
        issue("wfp-food", 3, 1, expiry(), None),
        RejectCode::OverBudget,
    );
    assert_eq!(prog(&c, "wfp-food").issued, AMOUNT_MAX);
}

#[test]
fn revoking_a_voucher_returns_its_remaining_value_to_the_budget() {
    let mut c = Chain::with_programmes(1_000);
    let issuer = key(WFP_ISSUER);
    let v = c.accept(&issuer, issue("wfp-food", 1, 600, expiry(), None));
    c.accept(&key(WFP_REDEEMER), redeem(v, 200, pk(WFP_VENDOR), "till-1"));
    c.accept(&issuer, revoke_voucher(v));
    let p = prog(&c, "wfp-food");
    assert_eq!((p.issued, p.redeemed, p.revoked), (600, 200, 400));
    assert_eq!(p.committed(), 200, "the redeemed part stays committed");
    let vv = voucher(&c, &v);
    assert_eq!(vv.status, VoucherStatus::Revoked);
    assert_eq!(vv.redeemed, 200);
    c.accept(&issuer, issue("wfp-food", 2, 800, expiry(), None));
    c.reject(
        &issuer,
        issue("wfp-food", 3, 1, expiry(), None),
        RejectCode::OverBudget,
    );
}

#[test]
fn expiring_a_voucher_returns_its_remaining_value_to_the_budget() {
    let mut c = Chain::with_programmes(1_000);
    let issuer = key(WFP_ISSUER);
    let expires = TimestampMs(c.now.0 + HOUR);
    let v = c.accept(&issuer, issue("wfp-food", 1, 1_000, expires, None));
    c.accept(&key(WFP_REDEEMER), redeem(v, 300, pk(WFP_VENDOR), "till-1"));
    c.now = expires;
    c.accept(&issuer, expire_voucher(v));
    let p = prog(&c, "wfp-food");
    assert_eq!((p.issued, p.redeemed, p.expired), (1_000, 300, 700));
    assert_eq!(p.committed(), 300);
    assert_eq!(voucher(&c, &v).status, VoucherStatus::Expired);
    c.accept(&issuer, issue("wfp-food", 2, 700, expiry(), None));
}

#[test]
fn issuing_with_an_expiry_not_after_now_is_rejected_bad_expiry() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    c.reject(
        &issuer,
        issue("wfp-food", 1, 100, c.now, None),
        RejectCode::BadExpiry,
    );
    c.reject(
        &issuer,
        issue("wfp-food", 1, 100, TimestampMs(c.now.0 - HOUR), None),
        RejectCode::BadExpiry,
    );
    c.accept(
        &issuer,
        issue("wfp-food", 1, 100, TimestampMs(c.now.0 + 1), None),
    );
}

#[test]
fn issuing_with_an_expiry_beyond_the_programme_end_is_rejected_bad_expiry() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let end = programme_end();
    c.reject(
        &issuer,
        issue("wfp-food", 1, 100, TimestampMs(end.0 + 1), None),
        RejectCode::BadExpiry,
    );
    c.accept(&issuer, issue("wfp-food", 1, 100, end, None));
}

#[test]
fn issuing_twice_to_a_dedup_token_in_one_period_is_rejected_duplicate_assistance() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    c.accept(&issuer, issue("wfp-food", 1, 100, expiry(), Some(dedup(1))));
    // Another subject token (another agency secret, say) for the same dedup token.
    c.reject(
        &issuer,
        issue("wfp-food", 2, 100, expiry(), Some(dedup(1))),
        RejectCode::DuplicateAssistance,
    );
    assert_eq!(prog(&c, "wfp-food").issued, 100);
    c.accept(&issuer, issue("wfp-food", 2, 100, expiry(), Some(dedup(2))));
    // Without a dedup token the check does not apply.
    c.accept(&issuer, issue("wfp-food", 1, 100, expiry(), None));
}

#[test]
fn dedup_spans_agencies_for_the_same_assistance_and_period_only() {
    let mut c = Chain::with_programmes(10_000);
    c.accept(
        &key(UNHCR_ADMIN),
        programme("unhcr-food-feb", 10_000, "food-basket", "2027-02"),
    );
    c.accept(
        &key(UNHCR_ADMIN),
        programme("unhcr-shelter", 10_000, "shelter-kit", "2027-01"),
    );
    let d = dedup(42);
    c.accept(
        &key(WFP_ISSUER),
        issue("wfp-food", 1, 100, expiry(), Some(d)),
    );
    let unhcr = key(UNHCR_ISSUER);
    // Same assistance, same period, another agency's programme: refused.
    c.reject(
        &unhcr,
        issue("unhcr-food", 1, 100, expiry(), Some(d)),
        RejectCode::DuplicateAssistance,
    );
    assert_eq!(prog(&c, "unhcr-food").issued, 0);
    // Another person, or the same person in another period or for another assistance: fine.
    c.accept(
        &unhcr,
        issue("unhcr-food", 2, 100, expiry(), Some(dedup(43))),
    );
    c.accept(&unhcr, issue("unhcr-food-feb", 1, 100, expiry(), Some(d)));
    c.accept(&unhcr, issue("unhcr-shelter", 1, 100, expiry(), Some(d)));
    // And the first agency is refused in turn for the token used by the second.
    c.reject(
        &key(WFP_ISSUER),
        issue("wfp-food", 2, 100, expiry(), Some(dedup(43))),
        RejectCode::DuplicateAssistance,
    );
}

#[test]
fn rejected_issue_does_not_record_its_dedup_token() {
    let mut c = Chain::with_programmes(1_000);
    let issuer = key(WFP_ISSUER);
    // A refused issue leaves no trace of its dedup token: the person can still be served.
    c.reject(
        &issuer,
        issue("wfp-food", 1, 5_000, expiry(), Some(dedup(9))),
        RejectCode::OverBudget,
    );
    c.accept(&issuer, issue("wfp-food", 1, 500, expiry(), Some(dedup(9))));
}

#[test]
fn redeeming_an_unknown_voucher_is_rejected_unknown_voucher() {
    let mut c = Chain::with_programmes(10_000);
    let redeemer = key(WFP_REDEEMER);
    c.reject(
        &redeemer,
        redeem(Hash::ZERO, 100, pk(WFP_VENDOR), "till-1"),
        RejectCode::UnknownVoucher,
    );
    // The id of an entry that is not a voucher issue is not a voucher either.
    let grant_id = c.accept(&key(WFP_ADMIN), grant(pk(OUTSIDER), Role::Redeemer));
    c.reject(
        &redeemer,
        redeem(grant_id, 100, pk(WFP_VENDOR), "till-1"),
        RejectCode::UnknownVoucher,
    );
    let v = wfp_voucher(&mut c, 1, 500);
    c.accept(&redeemer, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
}

#[test]
fn revoking_or_expiring_an_unknown_voucher_is_rejected_unknown_voucher() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    c.reject(
        &issuer,
        revoke_voucher(Hash::ZERO),
        RejectCode::UnknownVoucher,
    );
    c.reject(
        &issuer,
        expire_voucher(Hash::ZERO),
        RejectCode::UnknownVoucher,
    );
    c.accept(&issuer, issue("wfp-food", 1, 100, expiry(), None));
}

#[test]
fn redeem_above_remaining_balance_is_rejected_over_balance() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let redeemer = key(WFP_REDEEMER);
    c.reject(
        &redeemer,
        redeem(v, 1_001, pk(WFP_VENDOR), "till-1"),
        RejectCode::OverBalance,
    );
    assert_eq!(voucher(&c, &v).redeemed, 0);
    c.accept(&redeemer, redeem(v, 700, pk(WFP_VENDOR), "till-1"));
    c.reject(
        &redeemer,
        redeem(v, 301, pk(WFP_VENDOR), "till-2"),
        RejectCode::OverBalance,
    );
    c.reject(
        &redeemer,
        redeem(v, AMOUNT_MAX, pk(WFP_VENDOR), "till-2"),
        RejectCode::OverBalance,
    );
    let vv = voucher(&c, &v);
    assert_eq!((vv.redeemed, vv.remaining()), (700, 300));
    assert_eq!(
        account(&c, "wfp-food", &pk(WFP_VENDOR)).map(|a| a.redeemed),
        Some(700)
    );
    c.accept(&redeemer, redeem(v, 300, pk(WFP_VENDOR), "till-2"));
    assert_eq!(voucher(&c, &v).remaining(), 0);
}

#[test]
fn redeeming_at_or_after_the_voucher_expiry_is_rejected_expired() {
    let mut c = Chain::with_programmes(10_000);
    let expires = TimestampMs(c.now.0 + HOUR);
    let v = c.accept(&key(WFP_ISSUER), issue("wfp-food", 1, 1_000, expires, None));
    let redeemer = key(WFP_REDEEMER);
    c.now = TimestampMs(expires.0 - 1);
    c.accept(&redeemer, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
    c.now = expires;
    c.reject(
        &redeemer,
        redeem(v, 100, pk(WFP_VENDOR), "till-2"),
        RejectCode::Expired,
    );
    c.advance(DAY);
    c.reject(
        &redeemer,
        redeem(v, 100, pk(WFP_VENDOR), "till-2"),
        RejectCode::Expired,
    );
    assert_eq!(voucher(&c, &v).redeemed, 100);
    let w = wfp_voucher(&mut c, 2, 100);
    c.accept(&redeemer, redeem(w, 100, pk(WFP_VENDOR), "till-1"));
}

#[test]
fn redeeming_or_revoking_a_voucher_closed_as_expired_is_rejected_expired() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let expires = TimestampMs(c.now.0 + HOUR);
    let v = c.accept(&issuer, issue("wfp-food", 1, 1_000, expires, None));
    c.now = expires;
    c.accept(&issuer, expire_voucher(v));
    c.reject(
        &key(WFP_REDEEMER),
        redeem(v, 100, pk(WFP_VENDOR), "till-1"),
        RejectCode::Expired,
    );
    c.reject(&issuer, revoke_voucher(v), RejectCode::Expired);
    c.reject(&issuer, expire_voucher(v), RejectCode::Expired);
    assert_eq!(prog(&c, "wfp-food").expired, 1_000, "released once only");
    c.accept(&issuer, issue("wfp-food", 2, 100, expiry(), None));
}

#[test]
fn redeeming_a_revoked_voucher_is_rejected_revoked() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let redeemer = key(WFP_REDEEMER);
    c.accept(&redeemer, redeem(v, 250, pk(WFP_VENDOR), "till-1"));
    c.accept(&key(WFP_ISSUER), revoke_voucher(v));
    c.reject(
        &redeemer,
        redeem(v, 100, pk(WFP_VENDOR), "till-2"),
        RejectCode::Revoked,
    );
    assert_eq!(voucher(&c, &v).redeemed, 250);
    let w = wfp_voucher(&mut c, 2, 100);
    c.accept(&redeemer, redeem(w, 100, pk(WFP_VENDOR), "till-2"));
}

#[test]
fn revoking_or_expiring_a_revoked_voucher_is_rejected_revoked() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let expires = TimestampMs(c.now.0 + HOUR);
    let v = c.accept(&issuer, issue("wfp-food", 1, 1_000, expires, None));
    c.accept(&issuer, revoke_voucher(v));
    c.reject(&issuer, revoke_voucher(v), RejectCode::Revoked);
    c.now = expires;
    c.reject(&issuer, expire_voucher(v), RejectCode::Revoked);
    let p = prog(&c, "wfp-food");
    assert_eq!((p.revoked, p.expired), (1_000, 0), "released once only");
    c.accept(&issuer, issue("wfp-food", 2, 100, expiry(), None));
}

#[test]
fn expiring_a_voucher_before_its_expiry_is_rejected_not_expired() {
    let mut c = Chain::with_programmes(10_000);
    let issuer = key(WFP_ISSUER);
    let expires = TimestampMs(c.now.0 + HOUR);
    let v = c.accept(&issuer, issue("wfp-food", 1, 1_000, expires, None));
    c.now = TimestampMs(expires.0 - 1);
    c.reject(&issuer, expire_voucher(v), RejectCode::NotExpired);
    assert_eq!(voucher(&c, &v).status, VoucherStatus::Active);
    c.now = expires;
    c.accept(&issuer, expire_voucher(v));
}

#[test]
fn reusing_a_redemption_reference_on_the_same_voucher_is_rejected_duplicate_reference() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let w = wfp_voucher(&mut c, 2, 1_000);
    let redeemer = key(WFP_REDEEMER);
    c.accept(&redeemer, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
    c.reject(
        &redeemer,
        redeem(v, 100, pk(WFP_VENDOR), "till-1"),
        RejectCode::DuplicateReference,
    );
    // Even for another vendor.
    c.reject(
        &redeemer,
        redeem(v, 100, pk(WFP_VENDOR2), "till-1"),
        RejectCode::DuplicateReference,
    );
    assert_eq!(voucher(&c, &v).redeemed, 100);
    // The reference is per voucher.
    c.accept(&redeemer, redeem(w, 100, pk(WFP_VENDOR), "till-1"));
}

#[test]
fn reusing_a_settlement_reference_for_the_same_vendor_is_rejected_duplicate_reference() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let redeemer = key(WFP_REDEEMER);
    c.accept(&redeemer, redeem(v, 500, pk(WFP_VENDOR), "till-1"));
    c.accept(&redeemer, redeem(v, 500, pk(WFP_VENDOR2), "till-2"));
    let admin = key(WFP_ADMIN);
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR), 100, "pay-1"));
    c.reject(
        &admin,
        settle("wfp-food", pk(WFP_VENDOR), 100, "pay-1"),
        RejectCode::DuplicateReference,
    );
    assert_eq!(
        account(&c, "wfp-food", &pk(WFP_VENDOR)),
        Some(VendorAccount {
            redeemed: 500,
            settled: 100
        })
    );
    // The reference is per programme and vendor.
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR2), 100, "pay-1"));
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR), 100, "pay-2"));
}

#[test]
fn redeeming_for_a_key_without_the_vendor_role_is_rejected_not_vendor() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let redeemer = key(WFP_REDEEMER);
    // A registered key without the role, and a key nobody registered.
    c.reject(
        &redeemer,
        redeem(v, 100, pk(WFP_REDEEMER), "till-1"),
        RejectCode::NotVendor,
    );
    c.reject(
        &redeemer,
        redeem(v, 100, pk(OUTSIDER), "till-1"),
        RejectCode::NotVendor,
    );
    assert!(account(&c, "wfp-food", &pk(OUTSIDER)).is_none());
    c.accept(&redeemer, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
}

#[test]
fn redeeming_for_another_agencys_vendor_is_rejected_not_vendor() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let redeemer = key(WFP_REDEEMER);
    c.reject(
        &redeemer,
        redeem(v, 100, pk(UNHCR_VENDOR), "till-1"),
        RejectCode::NotVendor,
    );
    c.accept(&redeemer, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
}

#[test]
fn redeeming_for_a_vendor_key_rotated_away_is_rejected_not_vendor() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let vendor = key(WFP_VENDOR);
    c.accept(&vendor, rotate(&vendor, &key(FRESH)));
    let redeemer = key(WFP_REDEEMER);
    c.reject(
        &redeemer,
        redeem(v, 100, vendor.public(), "till-1"),
        RejectCode::NotVendor,
    );
    c.accept(&redeemer, redeem(v, 100, pk(FRESH), "till-1"));
}

#[test]
fn settling_a_vendor_with_no_redemptions_is_rejected_not_vendor() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    c.accept(&key(WFP_REDEEMER), redeem(v, 100, pk(WFP_VENDOR), "till-1"));
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        settle("wfp-food", pk(WFP_VENDOR2), 100, "pay-1"),
        RejectCode::NotVendor,
    );
    assert!(account(&c, "wfp-food", &pk(WFP_VENDOR2)).is_none());
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR), 100, "pay-1"));
}

#[test]
fn settling_more_than_the_vendor_is_owed_is_rejected_over_settlement() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    c.accept(&key(WFP_REDEEMER), redeem(v, 400, pk(WFP_VENDOR), "till-1"));
    let admin = key(WFP_ADMIN);
    c.reject(
        &admin,
        settle("wfp-food", pk(WFP_VENDOR), 401, "pay-1"),
        RejectCode::OverSettlement,
    );
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR), 150, "pay-1"));
    c.reject(
        &admin,
        settle("wfp-food", pk(WFP_VENDOR), 251, "pay-2"),
        RejectCode::OverSettlement,
    );
    c.reject(
        &admin,
        settle("wfp-food", pk(WFP_VENDOR), AMOUNT_MAX, "pay-2"),
        RejectCode::OverSettlement,
    );
    c.accept(&admin, settle("wfp-food", pk(WFP_VENDOR), 250, "pay-2"));
    assert_eq!(
        account(&c, "wfp-food", &pk(WFP_VENDOR)),
        Some(VendorAccount {
            redeemed: 400,
            settled: 400
        })
    );
    assert_eq!(prog(&c, "wfp-food").settled, 400);
}

#[test]
fn full_aid_workflow_issues_redeems_partially_and_fully_and_settles_the_vendor() {
    let mut c = Chain::new();
    let admin = key(WFP_ADMIN);
    let issuer = key(WFP_ISSUER);
    let redeemer = key(WFP_REDEEMER);
    let vendor = pk(WFP_VENDOR);

    // Roles.
    c.accept(&admin, grant(issuer.public(), Role::Issuer));
    c.accept(&admin, grant(redeemer.public(), Role::Redeemer));
    c.accept(&admin, grant(vendor, Role::Vendor));
    for (k, role) in [
        (issuer.public(), Role::Issuer),
        (redeemer.public(), Role::Redeemer),
        (vendor, Role::Vendor),
    ] {
        let rec = key_record(&c.state, &k);
        assert_eq!(rec.agency, name("wfp"));
        assert_eq!(rec.roles, [role].into());
        assert_eq!(rec.next_sequence, 0);
    }

    // Programme.
    c.accept(
        &admin,
        programme("wfp-food", 10_000, "food-basket", "2027-01"),
    );
    let p = prog(&c, "wfp-food");
    assert_eq!(p.agency, name("wfp"));
    assert_eq!(p.budget, 10_000);
    assert_eq!(
        (p.issued, p.redeemed, p.revoked, p.expired, p.settled),
        (0, 0, 0, 0, 0)
    );

    // Issue.
    let issue_height = c.height + 1;
    let v = c.accept(
        &issuer,
        issue("wfp-food", 1, 3_000, expiry(), Some(dedup(1))),
    );
    let vv = voucher(&c, &v);
    assert_eq!(vv.programme, name("wfp-food"));
    assert_eq!(vv.subject, subject(1));
    assert_eq!(vv.dedup, Some(dedup(1)));
    assert_eq!((vv.amount, vv.redeemed), (3_000, 0));
    assert_eq!(vv.status, VoucherStatus::Active);
    assert_eq!(vv.expires_at, expiry());
    assert_eq!(vv.issued_height, issue_height);
    assert_eq!(prog(&c, "wfp-food").committed(), 3_000);

    // Partial redemption, then the rest.
    c.accept(&redeemer, redeem(v, 1_000, vendor, "till-1"));
    assert_eq!(voucher(&c, &v).remaining(), 2_000);
    c.accept(&redeemer, redeem(v, 2_000, vendor, "till-2"));
    assert_eq!(voucher(&c, &v).remaining(), 0);
    assert_eq!(voucher(&c, &v).status, VoucherStatus::Active);

    // Nothing left: over-redemption is refused.
    c.reject(
        &redeemer,
        redeem(v, 1, vendor, "till-3"),
        RejectCode::OverBalance,
    );
    assert_eq!(
        account(&c, "wfp-food", &vendor),
        Some(VendorAccount {
            redeemed: 3_000,
            settled: 0
        })
    );
    let p = prog(&c, "wfp-food");
    assert_eq!((p.issued, p.redeemed), (3_000, 3_000));

    // Settlement, and over-settlement refused.
    c.accept(&admin, settle("wfp-food", vendor, 2_500, "pay-1"));
    c.reject(
        &admin,
        settle("wfp-food", vendor, 501, "pay-2"),
        RejectCode::OverSettlement,
    );
    c.accept(&admin, settle("wfp-food", vendor, 500, "pay-2"));
    assert_eq!(
        account(&c, "wfp-food", &vendor),
        Some(VendorAccount {
            redeemed: 3_000,
            settled: 3_000
        })
    );
    c.reject(
        &admin,
        settle("wfp-food", vendor, 1, "pay-3"),
        RejectCode::OverSettlement,
    );
    let p = prog(&c, "wfp-food");
    assert_eq!(
        (p.issued, p.redeemed, p.revoked, p.expired, p.settled),
        (3_000, 3_000, 0, 0, 3_000)
    );
    assert_eq!(p.committed(), 3_000);
}

#[test]
fn a_rule_rejected_entry_does_not_strand_the_authors_later_offline_entries() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let w = wfp_voucher(&mut c, 2, 1_000);
    let redeemer = key(WFP_REDEEMER);
    c.accept(&redeemer, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
    // A field device signed three entries offline; the first is a double redemption.
    let s = c.committed_next_sequence(&redeemer.public());
    let e5 = sign_at(&redeemer, s, redeem(v, 100, pk(WFP_VENDOR), "till-1"));
    let e6 = sign_at(&redeemer, s + 1, redeem(v, 200, pk(WFP_VENDOR), "till-2"));
    let e7 = sign_at(&redeemer, s + 2, redeem(w, 300, pk(WFP_VENDOR), "till-3"));
    let exec = c.commit(vec![e5.clone(), e6.clone(), e7.clone()]);
    assert_eq!(
        exec.outcomes,
        vec![
            (
                e5.id(),
                EntryOutcome::Rejected(RejectCode::DuplicateReference)
            ),
            (e6.id(), EntryOutcome::Accepted),
            (e7.id(), EntryOutcome::Accepted),
        ]
    );
    assert_eq!(c.committed_next_sequence(&redeemer.public()), s + 3);
    assert_eq!(voucher(&c, &v).redeemed, 300);
    assert_eq!(voucher(&c, &w).redeemed, 300);
}

#[test]
fn a_rejection_inside_a_block_keeps_the_blocks_earlier_and_later_effects() {
    let mut c = Chain::with_programmes(10_000);
    let v = wfp_voucher(&mut c, 1, 1_000);
    let redeemer = key(WFP_REDEEMER);
    let a = c.sign(&redeemer, redeem(v, 600, pk(WFP_VENDOR), "till-1"));
    let b = c.sign(&redeemer, redeem(v, 600, pk(WFP_VENDOR), "till-2"));
    let d = c.sign(&redeemer, redeem(v, 400, pk(WFP_VENDOR), "till-3"));
    let exec = c.commit(vec![a, b, d]);
    let outcomes: Vec<EntryOutcome> = exec.outcomes.iter().map(|(_, o)| *o).collect();
    assert_eq!(
        outcomes,
        vec![
            EntryOutcome::Accepted,
            EntryOutcome::Rejected(RejectCode::OverBalance),
            EntryOutcome::Accepted
        ]
    );
    assert_eq!(voucher(&c, &v).redeemed, 1_000);
    assert_eq!(
        account(&c, "wfp-food", &pk(WFP_VENDOR)).map(|a| a.redeemed),
        Some(1_000)
    );
}

#[test]
fn entries_in_one_block_see_the_effects_of_earlier_entries_in_it() {
    let mut c = Chain::staffed();
    let admin = key(WFP_ADMIN);
    let newcomer = key(OUTSIDER);
    let e1 = c.sign(&admin, grant(newcomer.public(), Role::Issuer));
    let e2 = c.sign(
        &admin,
        programme("wfp-new", 1_000, "food-basket", "2027-01"),
    );
    let e3 = c.sign(&newcomer, issue("wfp-new", 1, 1_000, expiry(), None));
    let exec = c.commit(vec![e1, e2, e3]);
    assert!(
        exec.outcomes
            .iter()
            .all(|(_, o)| *o == EntryOutcome::Accepted),
        "{:?}",
        exec.rejections
    );
    assert_eq!(prog(&c, "wfp-new").issued, 1_000);
}

#[test]
fn issuing_after_released_budget_never_overflows_the_issued_total() {
    let mut c = Chain::staffed();
    c.accept(
        &key(WFP_ADMIN),
        programme("huge", AMOUNT_MAX, "food-basket", "2027-01"),
    );
    let issuer = key(WFP_ISSUER);
    let v = c.accept(&issuer, issue("huge", 1, AMOUNT_MAX, expiry(), None));
    c.accept(&issuer, revoke_voucher(v));
    assert_eq!(prog(&c, "huge").committed(), 0);
    // Nothing is committed, so issuing 1 is within budget; the node must not panic on it.
    let entry = c.sign(&issuer, issue("huge", 2, 1, expiry(), None));
    let state = c.state.clone();
    let ctx = c.ctx();
    // The state is not used after a panic, so whatever a panic left in it does not matter.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        execute_block(&state, &ctx, &[entry]).map(|e| e.outcomes)
    }));
    match result {
        // Accepted, or refused with a reason: either is a decision, a panic is not.
        Ok(Ok(outcomes)) => assert_eq!(outcomes.len(), 1, "{outcomes:?}"),
        Ok(Err(e)) => panic!("the block is valid: {e}"),
        Err(_) => panic!("execute_block panicked on a valid, within-budget issue"),
    }
}

// =============================================================================================
// Attestations
// =============================================================================================

#[test]
fn attesting_with_an_expiry_not_after_now_is_rejected_bad_expiry() {
    let mut c = Chain::staffed();
    let attester = key(WFP_ATTESTER);
    c.reject(
        &attester,
        attest(1, "refugee-status", c.now),
        RejectCode::BadExpiry,
    );
    c.reject(
        &attester,
        attest(1, "refugee-status", TimestampMs(T0.0 - DAY)),
        RejectCode::BadExpiry,
    );
    c.accept(
        &attester,
        attest(1, "refugee-status", TimestampMs(c.now.0 + 1)),
    );
}

#[test]
fn managing_an_unknown_attestation_is_rejected_unknown_attestation() {
    let mut c = Chain::staffed();
    let attester = key(WFP_ATTESTER);
    c.reject(
        &attester,
        suspend(Hash::ZERO),
        RejectCode::UnknownAttestation,
    );
    c.reject(
        &attester,
        revoke_attestation(Hash::ZERO),
        RejectCode::UnknownAttestation,
    );
    c.reject(
        &attester,
        reinstate(Hash::ZERO),
        RejectCode::UnknownAttestation,
    );
    c.accept(&attester, attest(1, "refugee-status", expiry()));
}

#[test]
fn managing_another_agencys_attestation_is_rejected_foreign_agency() {
    let mut c = Chain::staffed();
    let a = c.accept(&key(WFP_ATTESTER), attest(1, "refugee-status", expiry()));
    let other = key(UNHCR_ATTESTER);
    c.reject(&other, suspend(a), RejectCode::ForeignAgency);
    c.reject(&other, revoke_attestation(a), RejectCode::ForeignAgency);
    c.accept(&key(WFP_ATTESTER), suspend(a));
    c.reject(&other, reinstate(a), RejectCode::ForeignAgency);
    assert_eq!(
        attestation_status(&c, &a),
        AttestationStatus::Suspended(ReasonCode::UnderReview)
    );
    c.accept(&other, attest(1, "age-over-18", expiry()));
}

#[test]
fn suspending_a_suspended_attestation_is_rejected_wrong_status() {
    let mut c = Chain::staffed();
    let attester = key(WFP_ATTESTER);
    let a = c.accept(&attester, attest(1, "refugee-status", expiry()));
    c.accept(&attester, suspend(a));
    c.reject(&attester, suspend(a), RejectCode::WrongStatus);
    c.accept(&attester, reinstate(a));
}

#[test]
fn reinstating_an_active_attestation_is_rejected_wrong_status() {
    let mut c = Chain::staffed();
    let attester = key(WFP_ATTESTER);
    let a = c.accept(&attester, attest(1, "refugee-status", expiry()));
    c.reject(&attester, reinstate(a), RejectCode::WrongStatus);
    c.accept(&attester, suspend(a));
}

#[test]
fn any_change_to_a_revoked_attestation_is_rejected_revoked() {
    let mut c = Chain::staffed();
    let attester = key(WFP_ATTESTER);
    let a = c.accept(&attester, attest(1, "refugee-status", expiry()));
    c.accept(&attester, revoke_attestation(a));
    c.reject(&attester, revoke_attestation(a), RejectCode::Revoked);
    c.reject(&attester, suspend(a), RejectCode::Revoked);
    c.reject(&attester, reinstate(a), RejectCode::Revoked);
    assert_eq!(
        attestation_status(&c, &a),
        AttestationStatus::Revoked(ReasonCode::Fraud)
    );
    c.accept(&attester, attest(1, "refugee-status", expiry()));
}

#[test]
fn attestation_lifecycle_suspend_reinstate_then_revoke_for_good() {
    let mut c = Chain::staffed();
    let attester = key(WFP_ATTESTER);
    let a = c.accept(&attester, attest(1, "refugee-status", expiry()));
    let rec = c
        .state
        .attestation(&a)
        .expect("the state decodes")
        .expect("the attestation is recorded");
    assert_eq!(rec.agency, name("wfp"));
    assert_eq!(rec.attester, attester.public());
    assert_eq!(rec.subject, subject(1));
    assert_eq!(rec.claim, name("refugee-status"));
    assert_eq!(rec.evidence, commitment(1));
    assert_eq!(rec.expires_at, expiry());
    assert_eq!(rec.status, AttestationStatus::Active);

    c.accept(&attester, suspend(a));
    assert_eq!(
        attestation_status(&c, &a),
        AttestationStatus::Suspended(ReasonCode::UnderReview)
    );
    c.accept(&attester, reinstate(a));
    assert_eq!(attestation_status(&c, &a), AttestationStatus::Active);
    c.accept(&attester, suspend(a));
    // A suspended attestation can be revoked directly.
    c.accept(&attester, revoke_attestation(a));
    assert_eq!(
        attestation_status(&c, &a),
        AttestationStatus::Revoked(ReasonCode::Fraud)
    );
    c.reject(&attester, reinstate(a), RejectCode::Revoked);

    // Another attester of the same agency may manage it too.
    let b = c.accept(&attester, attest(2, "refugee-status", expiry()));
    c.accept(&key(WFP_ADMIN), grant(pk(OUTSIDER), Role::Attester));
    c.accept(&key(OUTSIDER), suspend(b));
    // Only the status changed.
    let after = c
        .state
        .attestation(&b)
        .expect("the state decodes")
        .expect("the attestation is recorded");
    assert_eq!(after.attester, attester.public());
    assert_eq!(after.subject, subject(2));
}

// =============================================================================================
// Civil registry
// =============================================================================================

#[test]
fn a_second_birth_for_a_subject_is_rejected_already_recorded() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let b = c.accept(&registrar, birth(1, 1));
    c.reject(&registrar, birth(1, 2), RejectCode::AlreadyRecorded);
    // Also when another agency's registrar tries.
    c.reject(
        &key(UNHCR_REGISTRAR),
        birth(1, 3),
        RejectCode::AlreadyRecorded,
    );
    assert_eq!(subject_rec(&c, 1).birth, Some(b));
    c.accept(&registrar, birth(2, 4));
}

#[test]
fn a_second_death_for_a_subject_is_rejected_subject_dead() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let d = c.accept(&registrar, death(1, 1));
    c.reject(&registrar, death(1, 2), RejectCode::SubjectDead);
    assert_eq!(subject_rec(&c, 1).death, Some(d));
    c.accept(&registrar, death(2, 3));
}

#[test]
fn registering_a_birth_for_a_dead_subject_is_rejected_subject_dead() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.accept(&registrar, death(1, 1));
    c.reject(&registrar, birth(1, 2), RejectCode::SubjectDead);
    c.accept(&registrar, birth(2, 2));
}

#[test]
fn marrying_a_dead_subject_is_rejected_subject_dead() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.accept(&registrar, death(1, 1));
    c.reject(&registrar, marriage(1, 2, 2), RejectCode::SubjectDead);
    c.reject(&registrar, marriage(2, 1, 2), RejectCode::SubjectDead);
    assert_eq!(subject_rec(&c, 2).marriage, None);
    c.accept(&registrar, marriage(2, 3, 2));
}

#[test]
fn giving_a_title_to_a_dead_subject_is_rejected_subject_dead() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.accept(&registrar, death(1, 1));
    c.reject(
        &registrar,
        register_title("parcel-1", 1, 2),
        RejectCode::SubjectDead,
    );
    assert!(title_of(&c, "parcel-1").is_none());
    c.accept(&registrar, register_title("parcel-1", 2, 2));
    c.reject(
        &registrar,
        transfer("parcel-1", 2, 1, 3),
        RejectCode::SubjectDead,
    );
    c.accept(&registrar, transfer("parcel-1", 2, 3, 3));
}

#[test]
fn marrying_an_already_married_subject_is_rejected_already_married() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let m = c.accept(&registrar, marriage(1, 2, 1));
    c.reject(&registrar, marriage(1, 3, 2), RejectCode::AlreadyMarried);
    c.reject(&registrar, marriage(3, 2, 2), RejectCode::AlreadyMarried);
    c.reject(&registrar, marriage(2, 1, 2), RejectCode::AlreadyMarried);
    assert_eq!(subject_rec(&c, 3).marriage, None);
    assert_eq!(subject_rec(&c, 1).marriage, Some(m));
    c.accept(&registrar, marriage(3, 4, 2));
}

#[test]
fn divorcing_a_dissolved_marriage_is_rejected_not_married() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let m = c.accept(&registrar, marriage(1, 2, 1));
    c.accept(&registrar, divorce(m, 2));
    c.reject(&registrar, divorce(m, 3), RejectCode::NotMarried);
    c.accept(&registrar, marriage(1, 2, 3));
}

#[test]
fn divorcing_a_marriage_ended_by_death_is_rejected_not_married() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let m = c.accept(&registrar, marriage(1, 2, 1));
    let d = c.accept(&registrar, death(1, 2));
    c.reject(&registrar, divorce(m, 3), RejectCode::NotMarried);
    assert_eq!(
        record(&c, &m).dissolved_by,
        Some(d),
        "the death record dissolves the marriage"
    );
    c.accept(&registrar, marriage(2, 3, 3));
}

#[test]
fn divorcing_an_unknown_or_non_marriage_record_is_rejected_unknown_record() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.reject(
        &registrar,
        divorce(Hash::ZERO, 1),
        RejectCode::UnknownRecord,
    );
    let b = c.accept(&registrar, birth(1, 1));
    c.reject(&registrar, divorce(b, 2), RejectCode::UnknownRecord);
    // Nor an amendment of a marriage: a divorce names the marriage record itself.
    let m = c.accept(&registrar, marriage(1, 2, 2));
    let fix = c.accept(&registrar, amend(m, ReasonCode::ClericalError, 3));
    c.reject(&registrar, divorce(fix, 4), RejectCode::UnknownRecord);
    c.accept(&registrar, divorce(m, 4));
}

#[test]
fn amending_an_unknown_record_is_rejected_unknown_record() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.reject(
        &registrar,
        amend(Hash::ZERO, ReasonCode::ClericalError, 1),
        RejectCode::UnknownRecord,
    );
    // A voucher is not a registry record.
    c.accept(
        &key(WFP_ADMIN),
        programme("wfp-food", 1_000, "food-basket", "2027-01"),
    );
    let v = c.accept(&key(WFP_ISSUER), issue("wfp-food", 1, 100, expiry(), None));
    c.reject(
        &registrar,
        amend(v, ReasonCode::ClericalError, 1),
        RejectCode::UnknownRecord,
    );
    let b = c.accept(&registrar, birth(1, 1));
    c.accept(&registrar, amend(b, ReasonCode::ClericalError, 2));
}

#[test]
fn amending_another_agencys_record_is_rejected_foreign_agency() {
    let mut c = Chain::staffed();
    let b = c.accept(&key(WFP_REGISTRAR), birth(1, 1));
    let other = key(UNHCR_REGISTRAR);
    let before = record(&c, &b);
    c.reject(
        &other,
        amend(b, ReasonCode::ClericalError, 2),
        RejectCode::ForeignAgency,
    );
    assert_eq!(record(&c, &b), before);
    c.accept(&other, birth(2, 2));
}

#[test]
fn registering_a_title_twice_is_rejected_title_exists() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let t = c.accept(&registrar, register_title("parcel-1", 1, 1));
    c.reject(
        &registrar,
        register_title("parcel-1", 2, 2),
        RejectCode::TitleExists,
    );
    c.reject(
        &key(UNHCR_REGISTRAR),
        register_title("parcel-1", 1, 2),
        RejectCode::TitleExists,
    );
    let title = title_of(&c, "parcel-1").expect("the title is registered");
    assert_eq!((title.holder, title.registered_by), (subject(1), t));
    c.accept(&registrar, register_title("parcel-2", 2, 2));
}

#[test]
fn transferring_an_unregistered_title_is_rejected_unknown_title() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.reject(
        &registrar,
        transfer("parcel-1", 1, 2, 1),
        RejectCode::UnknownTitle,
    );
    assert!(title_of(&c, "parcel-1").is_none());
    c.accept(&registrar, register_title("parcel-1", 1, 1));
}

#[test]
fn a_transfer_not_from_the_current_holder_is_rejected_not_holder() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    c.accept(&registrar, register_title("parcel-1", 1, 1));
    c.reject(
        &registrar,
        transfer("parcel-1", 2, 3, 2),
        RejectCode::NotHolder,
    );
    assert_eq!(title_of(&c, "parcel-1").map(|t| t.holder), Some(subject(1)));
    c.accept(&registrar, transfer("parcel-1", 1, 3, 2));
}

#[test]
fn a_title_is_transferred_only_by_its_current_holder() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let reg = c.accept(&registrar, register_title("parcel-1", 1, 1));
    let t1 = c.accept(&registrar, transfer("parcel-1", 1, 2, 2));
    let title = title_of(&c, "parcel-1").expect("the title is registered");
    assert_eq!(title.holder, subject(2));
    assert_eq!(
        (title.registered_by, title.latest, title.transfers),
        (reg, t1, 1)
    );
    // The former holder can no longer pass it on.
    c.reject(
        &registrar,
        transfer("parcel-1", 1, 3, 3),
        RejectCode::NotHolder,
    );
    let t2 = c.accept(&registrar, transfer("parcel-1", 2, 3, 3));
    let title = title_of(&c, "parcel-1").expect("the title is registered");
    assert_eq!(title.holder, subject(3));
    assert_eq!(
        (title.registered_by, title.latest, title.transfers),
        (reg, t2, 2)
    );
    let rec = record(&c, &t2);
    assert_eq!(rec.kind, RegistryKind::TitleTransfer);
    assert_eq!(rec.subjects, vec![subject(2), subject(3)]);
    assert_eq!(rec.parcel, Some(name("parcel-1")));
    // The registration record is untouched by transfers.
    let r = record(&c, &reg);
    assert_eq!(r.kind, RegistryKind::TitleRegistration);
    assert_eq!(r.subjects, vec![subject(1)]);
}

#[test]
fn a_registry_event_dated_after_the_block_date_is_rejected_future_date() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let m = c.accept(&registrar, marriage(5, 6, 1));
    let b = c.accept(&registrar, birth(5, 2));
    c.accept(&registrar, register_title("parcel-1", 5, 3));
    let tomorrow = day_after(c.now.date());
    let future = |n: u64| event(n, tomorrow);
    let cases = vec![
        Payload::RegisterBirth {
            subject: subject(1),
            event: future(10),
        },
        Payload::RegisterDeath {
            subject: subject(1),
            event: future(11),
        },
        Payload::RegisterMarriage {
            spouse_a: subject(1),
            spouse_b: subject(2),
            event: future(12),
        },
        Payload::RegisterDivorce {
            marriage: m,
            event: future(13),
        },
        Payload::RegisterTitle {
            parcel: name("parcel-2"),
            holder: subject(1),
            event: future(14),
        },
        Payload::TransferTitle {
            parcel: name("parcel-1"),
            from: subject(5),
            to: subject(1),
            event: future(15),
        },
        Payload::AmendRecord {
            original: b,
            reason: ReasonCode::ClericalError,
            event: future(16),
        },
    ];
    for payload in cases {
        c.reject(&registrar, payload, RejectCode::FutureDate);
    }
    // Today is not the future.
    c.accept(
        &registrar,
        Payload::RegisterBirth {
            subject: subject(1),
            event: event(10, c.now.date()),
        },
    );
}

#[test]
fn death_is_final_and_frees_the_surviving_spouse() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let m = c.accept(&registrar, marriage(1, 2, 1));
    assert_eq!(subject_rec(&c, 1).marriage, Some(m));
    assert_eq!(subject_rec(&c, 2).marriage, Some(m));
    let d = c.accept(&registrar, death(1, 2));
    assert_eq!(
        subject_rec(&c, 1),
        SubjectRecord {
            birth: None,
            death: Some(d),
            marriage: None
        }
    );
    assert_eq!(subject_rec(&c, 2).marriage, None);
    let rec = record(&c, &d);
    assert_eq!(rec.kind, RegistryKind::Death);
    assert_eq!(rec.subjects, vec![subject(1)]);
    assert_eq!(rec.agency, name("wfp"));
    // The survivor may marry again; the deceased may not, nor die twice.
    let m2 = c.accept(&registrar, marriage(2, 3, 3));
    assert_eq!(subject_rec(&c, 2).marriage, Some(m2));
    c.reject(&registrar, marriage(1, 4, 4), RejectCode::SubjectDead);
    c.reject(&registrar, death(1, 4), RejectCode::SubjectDead);
    // The original marriage record is kept.
    assert_eq!(record(&c, &m).kind, RegistryKind::Marriage);
}

#[test]
fn divorce_then_remarriage_is_accepted() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let m = c.accept(&registrar, marriage(1, 2, 1));
    let d = c.accept(&registrar, divorce(m, 2));
    assert_eq!(record(&c, &m).dissolved_by, Some(d));
    let drec = record(&c, &d);
    assert_eq!(drec.kind, RegistryKind::Divorce);
    assert_eq!(drec.subjects, vec![subject(1), subject(2)]);
    assert_eq!(subject_rec(&c, 1).marriage, None);
    assert_eq!(subject_rec(&c, 2).marriage, None);
    let m2 = c.accept(&registrar, marriage(1, 3, 3));
    let m3 = c.accept(&registrar, marriage(2, 4, 4));
    assert_eq!(subject_rec(&c, 1).marriage, Some(m2));
    assert_eq!(subject_rec(&c, 2).marriage, Some(m3));
    // The dissolved marriage cannot be dissolved again even though both are married anew.
    c.reject(&registrar, divorce(m, 5), RejectCode::NotMarried);
    c.accept(&registrar, divorce(m2, 5));
}

#[test]
fn an_amendment_links_to_the_original_which_gains_only_a_forward_link() {
    let mut c = Chain::staffed();
    let registrar = key(WFP_REGISTRAR);
    let b = c.accept(&registrar, birth(1, 1));
    let original = record(&c, &b);
    assert_eq!(original.kind, RegistryKind::Birth);
    assert_eq!(original.amends, None);
    assert_eq!(original.amendment_count, 0);

    let a_height = c.height + 1;
    let a = c.accept(&registrar, amend(b, ReasonCode::ClericalError, 2));
    let amendment = record(&c, &a);
    assert_eq!(amendment.kind, RegistryKind::Amendment);
    assert_eq!(amendment.amends, Some((b, ReasonCode::ClericalError)));
    assert_eq!(amendment.subjects, original.subjects);
    assert_eq!(amendment.event, event(2, past()));
    assert_eq!(amendment.height, a_height);
    assert_eq!(amendment.agency, name("wfp"));

    let after = record(&c, &b);
    assert_eq!(
        after,
        RegistryRecord {
            latest_amendment: Some(a),
            amendment_count: 1,
            ..original.clone()
        },
        "the original keeps its content and only gains the forward link"
    );
    // The subject still points at the original birth record.
    assert_eq!(subject_rec(&c, 1).birth, Some(b));

    let a2 = c.accept(&registrar, amend(b, ReasonCode::CourtOrder, 3));
    assert_eq!(
        record(&c, &b),
        RegistryRecord {
            latest_amendment: Some(a2),
            amendment_count: 2,
            ..original
        }
    );
    assert_eq!(
        record(&c, &a),
        amendment,
        "earlier amendments stay as they were"
    );
}

// =============================================================================================
// Coverage of the reject codes
// =============================================================================================

/// Where each reject code is exercised. The match is exhaustive, so a new code fails to compile
/// until a test for it is named here.
fn where_tested(code: RejectCode) -> &'static [&'static str] {
    use RejectCode::*;
    match code {
        Malformed => &["payloads_failing_their_own_checks_make_block_invalid_malformed"],
        WrongChain => &["entry_for_another_chain_makes_block_invalid_wrong_chain"],
        BadSignature => &[
            "entry_with_tampered_signature_makes_block_invalid_bad_signature",
            "rotation_with_a_bad_proof_is_refused_at_admission_bad_signature",
        ],
        UnknownAuthor => &["entry_by_unregistered_key_makes_block_invalid_unknown_author"],
        RetiredKey => &[
            "entry_by_rotated_away_key_makes_block_invalid_retired_key",
            "granting_a_role_to_a_retired_key_is_rejected_retired_key",
        ],
        MissingRole => &["issuing_without_the_issuer_role_is_rejected_missing_role"],
        StaleSequence => &["reused_sequence_makes_block_invalid_stale_sequence"],
        FutureSequence => &["skipped_sequence_makes_block_invalid_future_sequence"],
        // Produced by a node's mempool, never by the state machine.
        MempoolFull | DuplicateEntry => &[],
        ForeignKey => &["granting_a_role_to_another_agencys_key_is_rejected_foreign_key"],
        KeyInUse => &["rotating_to_an_already_registered_key_is_rejected_key_in_use"],
        LastAdmin => &["revoking_the_last_admin_is_rejected_last_admin"],
        ProgrammeExists => &["creating_an_existing_programme_is_rejected_programme_exists"],
        UnknownProgramme => &["issuing_from_an_unknown_programme_is_rejected_unknown_programme"],
        ForeignAgency => &["issuing_from_another_agencys_programme_is_rejected_foreign_agency"],
        OutsideWindow => &["issuing_before_the_programme_opens_is_rejected_outside_window"],
        OverBudget => &["issuing_beyond_the_budget_is_rejected_over_budget"],
        BadExpiry => &["issuing_with_an_expiry_not_after_now_is_rejected_bad_expiry"],
        DuplicateAssistance => {
            &["issuing_twice_to_a_dedup_token_in_one_period_is_rejected_duplicate_assistance"]
        }
        UnknownVoucher => &["redeeming_an_unknown_voucher_is_rejected_unknown_voucher"],
        OverBalance => &["redeem_above_remaining_balance_is_rejected_over_balance"],
        Expired => &["redeeming_at_or_after_the_voucher_expiry_is_rejected_expired"],
        Revoked => &["redeeming_a_revoked_voucher_is_rejected_revoked"],
        NotExpired => &["expiring_a_voucher_before_its_expiry_is_rejected_not_expired"],
        DuplicateReference => &[
            "reusing_a_redemption_reference_on_the_same_voucher_is_rejected_duplicate_reference",
        ],
        NotVendor => &["redeeming_for_a_key_without_the_vendor_role_is_rejected_not_vendor"],
        OverSettlement => &["settling_more_than_the_vendor_is_owed_is_rejected_over_settlement"],
        UnknownAttestation => &["managing_an_unknown_attestation_is_rejected_unknown_attestation"],
        WrongStatus => &["suspending_a_suspended_attestation_is_rejected_wrong_status"],
        UnknownRecord => &["amending_an_unknown_record_is_rejected_unknown_record"],
        AlreadyRecorded => &["a_second_birth_for_a_subject_is_rejected_already_recorded"],
        SubjectDead => &["a_second_death_for_a_subject_is_rejected_subject_dead"],
        AlreadyMarried => &["marrying_an_already_married_subject_is_rejected_already_married"],
        NotMarried => &["divorcing_a_dissolved_marriage_is_rejected_not_married"],
        TitleExists => &["registering_a_title_twice_is_rejected_title_exists"],
        UnknownTitle => &["transferring_an_unregistered_title_is_rejected_unknown_title"],
        NotHolder => &["a_transfer_not_from_the_current_holder_is_rejected_not_holder"],
        FutureDate => &["a_registry_event_dated_after_the_block_date_is_rejected_future_date"],
    }
}

#[test]
fn every_reject_code_the_state_machine_produces_has_a_test_named_after_it() {
    use RejectCode::*;
    let all = [
        Malformed,
        WrongChain,
        BadSignature,
        UnknownAuthor,
        RetiredKey,
        MissingRole,
        StaleSequence,
        FutureSequence,
        MempoolFull,
        DuplicateEntry,
        ForeignKey,
        KeyInUse,
        LastAdmin,
        ProgrammeExists,
        UnknownProgramme,
        ForeignAgency,
        OutsideWindow,
        OverBudget,
        BadExpiry,
        DuplicateAssistance,
        UnknownVoucher,
        OverBalance,
        Expired,
        Revoked,
        NotExpired,
        DuplicateReference,
        NotVendor,
        OverSettlement,
        UnknownAttestation,
        WrongStatus,
        UnknownRecord,
        AlreadyRecorded,
        SubjectDead,
        AlreadyMarried,
        NotMarried,
        TitleExists,
        UnknownTitle,
        NotHolder,
        FutureDate,
    ];
    let source = include_str!("rules.rs");
    for code in all {
        for test in where_tested(code) {
            assert!(
                test.ends_with(code.as_str()),
                "test {test} is named after the code it checks ({code})"
            );
            assert!(
                source.contains(&format!("fn {test}()")),
                "test {test} for {code} exists in this file"
            );
        }
        let mempool_only = matches!(code, MempoolFull | DuplicateEntry);
        assert_eq!(
            where_tested(code).is_empty(),
            mempool_only,
            "{code} is either tested here or produced only by a mempool"
        );
    }
}
