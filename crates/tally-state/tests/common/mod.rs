//! Shared fixtures for the tally-state integration tests: a fixed cast of deterministic keys in
//! two agencies, payload builders, and a small `Chain` driver that executes blocks, applies their
//! diffs and checks what a rejection is allowed to change.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tally_state::records::KeyRecord;
use tally_state::{
    execute_block, execute_candidates, refusal_of_unverified, BlockContext, ExecuteError,
    Execution, InvalidBlock, Rejection, State, StateRead,
};
use tally_types::entry::{key_rotation_message, RegistryEvent};
use tally_types::{
    AgencyGenesis, CivilDate, Commitment, DedupToken, Domain, EntryBody, EntryId, EntryOutcome,
    Genesis, Keypair, Name, Payload, PublicKey, RejectCode, Role, SignedEntry, SubjectToken,
    TimestampMs, ValidatorGenesis, VerifiedEntry,
};

/// The chain's start: 2027-01-15T08:00:00Z.
pub const T0: TimestampMs = TimestampMs(1_800_000_000_000);
/// Milliseconds in a minute, an hour and a day.
pub const MINUTE: u64 = 60_000;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = TimestampMs::DAY_MS;

/// The chain id every test entry carries.
pub const CHAIN: &str = "tally-test";

/// Seeds of the fixed cast. Keys are derived with `Keypair::from_seed_for_tests`.
pub mod seed {
    pub const WFP_ADMIN: u64 = 1;
    pub const WFP_ADMIN2: u64 = 2;
    pub const WFP_ISSUER: u64 = 3;
    pub const WFP_REDEEMER: u64 = 4;
    pub const WFP_VENDOR: u64 = 5;
    pub const WFP_VENDOR2: u64 = 6;
    pub const WFP_REGISTRAR: u64 = 7;
    pub const WFP_ATTESTER: u64 = 8;
    pub const UNHCR_ADMIN: u64 = 11;
    pub const UNHCR_ISSUER: u64 = 13;
    pub const UNHCR_REDEEMER: u64 = 14;
    pub const UNHCR_VENDOR: u64 = 15;
    pub const UNHCR_REGISTRAR: u64 = 17;
    pub const UNHCR_ATTESTER: u64 = 18;
    pub const VALIDATOR: u64 = 100;
    /// A key nobody ever registers.
    pub const OUTSIDER: u64 = 200;
    /// Keys used as rotation targets.
    pub const FRESH: u64 = 300;
    pub const FRESH2: u64 = 301;
}

pub fn key(seed: u64) -> Keypair {
    Keypair::from_seed_for_tests(seed)
}

pub fn pk(seed: u64) -> PublicKey {
    key(seed).public()
}

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|e| panic!("test identifier {s:?} is not a valid Name: {e}"))
}

const AGENCY_SECRET: &[u8] = b"test-agency-secret-0123456789";
const CONSORTIUM_SECRET: &[u8] = b"test-consortium-secret-0123456789";

/// The subject token of test person `n`.
pub fn subject(n: u64) -> SubjectToken {
    SubjectToken::derive(AGENCY_SECRET, format!("case-{n}").as_bytes())
        .expect("the test agency secret is long enough")
}

/// The dedup token of test person `n`.
pub fn dedup(n: u64) -> DedupToken {
    DedupToken::derive(CONSORTIUM_SECRET, format!("case-{n}").as_bytes())
        .expect("the test consortium secret is long enough")
}

/// A commitment to test record `n`.
pub fn commitment(n: u64) -> Commitment {
    Commitment::commit(&[0x5a; 16], format!("record-{n}").as_bytes())
        .expect("a 16-byte salt is long enough")
}

pub fn date(y: u16, m: u8, d: u8) -> CivilDate {
    CivilDate::new(y, m, d).unwrap_or_else(|e| panic!("test date is invalid: {e}"))
}

/// A date safely before the chain's start.
pub fn past() -> CivilDate {
    date(2026, 5, 1)
}

/// A registry event for record `n` on `date`.
pub fn event(n: u64, date: CivilDate) -> RegistryEvent {
    RegistryEvent {
        record: commitment(n),
        date,
        jurisdiction: name("district-7"),
    }
}

/// Two agencies (wfp with admin 1, unhcr with admin 11) and one validator run by wfp.
pub fn genesis() -> Genesis {
    let g = Genesis {
        chain_id: name(CHAIN),
        genesis_time: T0,
        agencies: vec![
            AgencyGenesis {
                id: name("wfp"),
                admins: vec![pk(seed::WFP_ADMIN)],
            },
            AgencyGenesis {
                id: name("unhcr"),
                admins: vec![pk(seed::UNHCR_ADMIN)],
            },
        ],
        validators: vec![ValidatorGenesis {
            agency: name("wfp"),
            key: pk(seed::VALIDATOR),
        }],
    };
    g.validate().expect("the test genesis is valid");
    g
}

// ---------------------------------------------------------------------------------------------
// Payload builders
// ---------------------------------------------------------------------------------------------

pub fn grant(target: PublicKey, role: Role) -> Payload {
    Payload::GrantRole { key: target, role }
}

pub fn revoke_role(target: PublicKey, role: Role) -> Payload {
    Payload::RevokeRole { key: target, role }
}

/// A rotation from `old` to `new` with a valid proof signed by `new`.
pub fn rotate(old: &Keypair, new: &Keypair) -> Payload {
    let msg = key_rotation_message(&name(CHAIN), &old.public());
    Payload::RotateKey {
        new_key: new.public(),
        new_key_proof: new.sign(Domain::KeyRotation, &msg),
    }
}

/// The end of every standard test programme's window.
pub fn programme_end() -> TimestampMs {
    TimestampMs(T0.0 + 60 * DAY)
}

/// A programme open from genesis for 60 days.
pub fn programme(id: &str, budget: u64, assistance: &str, period: &str) -> Payload {
    programme_window(id, budget, assistance, period, T0, programme_end())
}

pub fn programme_window(
    id: &str,
    budget: u64,
    assistance: &str,
    period: &str,
    valid_from: TimestampMs,
    valid_until: TimestampMs,
) -> Payload {
    Payload::CreateProgramme {
        programme: name(id),
        unit: name("USD"),
        budget,
        valid_from,
        valid_until,
        assistance: name(assistance),
        period: name(period),
    }
}

pub fn issue(
    programme: &str,
    subject_n: u64,
    amount: u64,
    expires_at: TimestampMs,
    dedup: Option<DedupToken>,
) -> Payload {
    Payload::IssueVoucher {
        programme: name(programme),
        subject: subject(subject_n),
        amount,
        expires_at,
        dedup,
    }
}

pub fn redeem(voucher: EntryId, amount: u64, vendor: PublicKey, reference: &str) -> Payload {
    Payload::RedeemVoucher {
        voucher,
        amount,
        vendor,
        reference: name(reference),
    }
}

pub fn revoke_voucher(voucher: EntryId) -> Payload {
    Payload::RevokeVoucher {
        voucher,
        reason: tally_types::ReasonCode::Fraud,
    }
}

pub fn expire_voucher(voucher: EntryId) -> Payload {
    Payload::ExpireVoucher { voucher }
}

pub fn settle(programme: &str, vendor: PublicKey, amount: u64, reference: &str) -> Payload {
    Payload::SettleVendor {
        programme: name(programme),
        vendor,
        amount,
        reference: name(reference),
    }
}

pub fn attest(subject_n: u64, claim: &str, expires_at: TimestampMs) -> Payload {
    Payload::Attest {
        subject: subject(subject_n),
        claim: name(claim),
        evidence: commitment(subject_n),
        expires_at,
    }
}

// ---------------------------------------------------------------------------------------------
// State comparison
// ---------------------------------------------------------------------------------------------

/// Every (key, value) pair of a state, owned.
pub fn snapshot(state: &State) -> BTreeMap<Vec<u8>, Vec<u8>> {
    state
        .pairs()
        .expect("a state in memory reads")
        .into_iter()
        .collect()
}

/// The keys whose value differs between two states (added, removed or changed).
pub fn changed_keys(before: &State, after: &State) -> BTreeSet<Vec<u8>> {
    let a = snapshot(before);
    let b = snapshot(after);
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

pub fn key_record(state: &State, author: &PublicKey) -> KeyRecord {
    state
        .key_record(author)
        .expect("the state decodes")
        .unwrap_or_else(|| panic!("key {} is registered", author.short()))
}

/// Asserts that the only difference between `before` and `after` is that `author`'s sequence
/// moved from `seq` to `seq + 1`: what a rule-rejected entry may change, and nothing more.
pub fn assert_only_sequence_consumed(before: &State, after: &State, author: &PublicKey, seq: u64) {
    let before_rec = key_record(before, author);
    let after_rec = key_record(after, author);
    assert_eq!(
        before_rec.next_sequence, seq,
        "the entry used the author's next sequence"
    );
    assert_eq!(
        after_rec,
        KeyRecord {
            next_sequence: seq + 1,
            ..before_rec
        },
        "a rejected entry changes its author's record only by consuming the sequence"
    );
    let changed = changed_keys(before, after);
    assert_eq!(
        changed.len(),
        1,
        "a rejected entry changes exactly one record (its author's sequence); changed: {:?}",
        changed
            .iter()
            .map(|k| k.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// The chain driver
// ---------------------------------------------------------------------------------------------

/// A state plus the bookkeeping needed to sign and commit blocks against it.
pub struct Chain {
    pub chain_id: Name,
    pub state: State,
    /// Height of the last committed block (0 = genesis).
    pub height: u64,
    /// The timestamp the next block will carry.
    pub now: TimestampMs,
    /// Sequences handed out by `sign` but not yet committed, per author.
    pending: HashMap<PublicKey, u64>,
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// Genesis only; the first block is one hour after genesis.
    pub fn new() -> Self {
        Self {
            chain_id: name(CHAIN),
            state: State::genesis(&genesis()),
            height: 0,
            now: TimestampMs(T0.0 + HOUR),
            pending: HashMap::new(),
        }
    }

    /// Genesis plus one block in which both agencies' admins grant their staff their roles.
    pub fn staffed() -> Self {
        let mut c = Self::new();
        let wa = key(seed::WFP_ADMIN);
        let ua = key(seed::UNHCR_ADMIN);
        let mut entries = Vec::new();
        for (s, role) in [
            (seed::WFP_ISSUER, Role::Issuer),
            (seed::WFP_REDEEMER, Role::Redeemer),
            (seed::WFP_VENDOR, Role::Vendor),
            (seed::WFP_VENDOR2, Role::Vendor),
            (seed::WFP_REGISTRAR, Role::Registrar),
            (seed::WFP_ATTESTER, Role::Attester),
        ] {
            entries.push(c.sign(&wa, grant(pk(s), role)));
        }
        for (s, role) in [
            (seed::UNHCR_ISSUER, Role::Issuer),
            (seed::UNHCR_REDEEMER, Role::Redeemer),
            (seed::UNHCR_VENDOR, Role::Vendor),
            (seed::UNHCR_REGISTRAR, Role::Registrar),
            (seed::UNHCR_ATTESTER, Role::Attester),
        ] {
            entries.push(c.sign(&ua, grant(pk(s), role)));
        }
        let exec = c.commit(entries);
        assert!(
            exec.outcomes
                .iter()
                .all(|(_, o)| *o == EntryOutcome::Accepted),
            "staffing block accepted: {:?}",
            exec.rejections
        );
        c
    }

    /// `staffed()` plus wfp programme `wfp-food` and unhcr programme `unhcr-food`, both with the
    /// given budget, for assistance `food-basket` in period `2027-01`.
    pub fn with_programmes(budget: u64) -> Self {
        let mut c = Self::staffed();
        c.accept(
            &key(seed::WFP_ADMIN),
            programme("wfp-food", budget, "food-basket", "2027-01"),
        );
        c.accept(
            &key(seed::UNHCR_ADMIN),
            programme("unhcr-food", budget, "food-basket", "2027-01"),
        );
        c
    }

    pub fn ctx(&self) -> BlockContext {
        BlockContext {
            chain_id: self.chain_id.clone(),
            height: self.height + 1,
            timestamp: self.now,
        }
    }

    pub fn advance(&mut self, ms: u64) {
        self.now = TimestampMs(self.now.0 + ms);
    }

    /// The author's next sequence according to the committed state (0 for an unknown key).
    pub fn committed_next_sequence(&self, author: &PublicKey) -> u64 {
        self.state
            .key_record(author)
            .expect("the state decodes")
            .map_or(0, |r| r.next_sequence)
    }

    /// Signs `payload` with the author's next sequence, counting entries already signed for
    /// the block being built.
    pub fn sign(&mut self, k: &Keypair, payload: Payload) -> SignedEntry {
        let author = k.public();
        let committed = self.committed_next_sequence(&author);
        let offset = self.pending.entry(author).or_insert(0);
        let seq = committed + *offset;
        *offset += 1;
        sign_at(k, seq, payload)
    }

    /// Forgets sequences handed out for a block that was never committed.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Executes a block against the current state without committing it.
    pub fn try_block(&self, entries: &[SignedEntry]) -> Result<Execution, ExecuteError> {
        execute_block(&self.state, &self.ctx(), entries)
    }

    /// Executes, checks and commits a block; the next block is one minute later.
    pub fn commit(&mut self, entries: Vec<SignedEntry>) -> Execution {
        let exec = self
            .try_block(&entries)
            .unwrap_or_else(|e| panic!("block {} should be valid: {e}", self.height + 1));
        assert_eq!(
            exec.entries, entries,
            "every entry of a valid block is ordered"
        );
        assert_eq!(exec.outcomes.len(), entries.len());
        assert_eq!(exec.rejections.len(), entries.len());
        for ((id, outcome), (entry, rejection)) in exec
            .outcomes
            .iter()
            .zip(entries.iter().zip(&exec.rejections))
        {
            assert_eq!(*id, entry.id(), "outcomes follow block order");
            match (outcome, rejection) {
                (EntryOutcome::Accepted, None) => {}
                (EntryOutcome::Rejected(code), Some(r)) => {
                    assert_eq!(*code, r.code, "outcome and rejection agree");
                    assert!(!r.detail.is_empty(), "a rejection explains itself");
                }
                other => panic!("outcome and rejection disagree: {other:?}"),
            }
        }
        self.state.apply(&exec.diff).expect("applies");
        self.height += 1;
        self.advance(MINUTE);
        self.pending.clear();
        exec
    }

    /// Signs and commits one entry alone in a block; returns its id and outcome.
    pub fn submit(&mut self, k: &Keypair, payload: Payload) -> (EntryId, EntryOutcome, Execution) {
        let entry = self.sign(k, payload);
        let id = entry.id();
        let exec = self.commit(vec![entry]);
        let outcome = exec.outcomes[0].1;
        (id, outcome, exec)
    }

    /// Commits one entry and asserts it was accepted; returns its id.
    pub fn accept(&mut self, k: &Keypair, payload: Payload) -> EntryId {
        let kind = payload.kind();
        let (id, outcome, exec) = self.submit(k, payload);
        assert_eq!(
            outcome,
            EntryOutcome::Accepted,
            "{kind} by {} should be accepted; rejection: {:?}",
            k.public().short(),
            exec.rejections[0]
        );
        id
    }

    /// Commits one entry, asserts it was rejected with `code`, that the state changed only by
    /// consuming its sequence, and that its sequence can no longer be used. Returns the
    /// rejection.
    pub fn reject(&mut self, k: &Keypair, payload: Payload, code: RejectCode) -> Rejection {
        let author = k.public();
        let before = self.state.clone();
        let entry = self.sign(k, payload.clone());
        let seq = entry.body.sequence;
        let exec = self.commit(vec![entry.clone()]);
        assert_eq!(
            exec.outcomes,
            vec![(entry.id(), EntryOutcome::Rejected(code))],
            "{} should be rejected {code}; rejection: {:?}",
            payload.kind(),
            exec.rejections
        );
        let rejection = exec.rejections[0]
            .clone()
            .expect("a rejected entry carries its rejection");
        assert_only_sequence_consumed(&before, &self.state, &author, seq);
        // The sequence is spent: the same sequence again cannot even be ordered.
        self.assert_refused(vec![sign_at(k, seq, payload)], 0, RejectCode::StaleSequence);
        rejection
    }

    /// Asserts that the block cannot be ordered because entry `index` fails admission with
    /// `code`, that `execute_candidates` leaves exactly that entry out for the same reason, and
    /// forgets any sequences handed out for it.
    pub fn assert_refused(&mut self, entries: Vec<SignedEntry>, index: usize, code: RejectCode) {
        let root = self.state.root();
        match self.try_block(&entries) {
            Err(ExecuteError::InvalidBlock(InvalidBlock {
                index: i,
                entry,
                rejection,
            })) => {
                assert_eq!(
                    (i, rejection.code),
                    (index, code),
                    "admission failure: {rejection}"
                );
                assert_eq!(entry, entries[index].id());
                assert!(!rejection.detail.is_empty(), "a refusal explains itself");
            }
            Err(other) => panic!("expected an invalid block ({code}), got {other}"),
            Ok(exec) => panic!(
                "expected an invalid block ({code}), got outcomes {:?}",
                exec.outcomes
            ),
        }
        // Only entries whose signatures hold can be candidates; one that does not is refused
        // at the door, for the same reason.
        let (candidates, unverified): (Vec<_>, Vec<_>) =
            VerifiedEntry::verify_all(entries.iter().cloned().map(Into::into).collect())
                .into_iter()
                .partition(Result::is_ok);
        let candidates = candidates.into_iter().flatten();
        let (_, left_out) =
            execute_candidates(&self.state, &self.ctx(), candidates).expect("the state decodes");
        match unverified
            .into_iter()
            .filter_map(Result::err)
            .find(|u| *u.entry == entries[index])
        {
            Some(u) => assert_eq!(
                refusal_of_unverified(&self.state, &self.ctx().chain_id, &u)
                    .expect("the state decodes")
                    .code,
                code
            ),
            None => assert!(
                left_out
                    .iter()
                    .any(|(e, r)| e.entry() == &entries[index] && r.code == code),
                "execute_candidates leaves the entry out with {code}: {left_out:?}"
            ),
        }
        assert_eq!(self.state.root(), root, "refusing a block changes nothing");
        self.discard();
    }
}

/// Signs `payload` with an explicit sequence.
pub fn sign_at(k: &Keypair, sequence: u64, payload: Payload) -> SignedEntry {
    EntryBody {
        chain_id: name(CHAIN),
        author: k.public(),
        sequence,
        payload,
    }
    .sign(k)
}

/// A commit certificate for `header` in round 0, signed by the keys of `signers`.
pub fn certify(
    header: &tally_types::BlockHeader,
    signers: &[u64],
) -> tally_types::CommitCertificate {
    let keys: Vec<Keypair> = signers.iter().map(|s| key(*s)).collect();
    tally_types::CommitCertificate::signed_by(header, 0, &keys)
}

/// Entries whose signatures hold, as a mempool would hold them.
pub fn verified(entries: &[SignedEntry]) -> Vec<VerifiedEntry> {
    entries
        .iter()
        .map(|e| VerifiedEntry::verify(e.clone()).expect("a valid signature"))
        .collect()
}
