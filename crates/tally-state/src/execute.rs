//! Executing entries against the state: every business rule of DOMAIN.md, in one place.
//!
//! An entry meets two kinds of checks. **Admission** checks (chain id, signature, a registered
//! and active author, the author's exact next sequence number, a well-formed payload) decide
//! whether it may be ordered at all: a block containing an entry that fails one is invalid.
//! **Rule** checks (roles, budgets, balances, expiry, revocation, registry consistency) decide
//! its outcome: a failing entry is still ordered, consumes its sequence number, and is kept with
//! its reason as evidence, so a field device's later offline entries are never stranded.

use crate::records::*;
use crate::store::{key, name_part, table, Overlay, State, StateDiff, StateRead};
use crate::{Rejection, StateError};
use tally_types::entry::key_rotation_message;
use tally_types::{
    Domain, EntryId, EntryOutcome, Name, Payload, PublicKey, ReasonCode, RegistryKind, RejectCode,
    Role, SignedEntry, TimestampMs, Unverified, VerifiedEntry,
};

/// What a block is executed under.
#[derive(Debug, Clone)]
pub struct BlockContext {
    /// The chain id from genesis.
    pub chain_id: Name,
    /// The block's height.
    pub height: u64,
    /// The block's timestamp: the only notion of "now" the rules use.
    pub timestamp: TimestampMs,
}

/// Whether an entry's signature is still to be checked when its turn comes. Private to the
/// executor: callers say it with types ([`VerifiedEntry`] or not), never with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signature {
    /// Check it at the entry's turn, so the first bad entry of a block is the one reported.
    Check,
    /// Checked already (a [`VerifiedEntry`], or one of a block whose signatures all held).
    Checked,
    /// Checked already and found bad (an [`Unverified`]): refused for it at its turn, with no
    /// second check.
    Bad,
}

/// The result of executing a block's entries.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The entries that were ordered, in order.
    pub entries: Vec<SignedEntry>,
    /// Each ordered entry's id and outcome.
    pub outcomes: Vec<(EntryId, EntryOutcome)>,
    /// For each rejected entry, the full reason (code and values); `None` when accepted.
    pub rejections: Vec<Option<Rejection>>,
    /// The state changes, to apply to the state and write with the block.
    pub diff: StateDiff,
}

/// A block that must not be committed: one of its entries fails admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} ({entry}) cannot be ordered: {rejection}")]
pub struct InvalidBlock {
    /// Position of the entry in the block.
    pub index: usize,
    /// The entry's id.
    pub entry: EntryId,
    /// Why.
    pub rejection: Rejection,
}

/// What stopped execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// The block is invalid.
    #[error(transparent)]
    InvalidBlock(#[from] InvalidBlock),
    /// The state itself is unreadable.
    #[error(transparent)]
    State(#[from] StateError),
}

enum Fail {
    Reject(Rejection),
    State(StateError),
}

impl From<StateError> for Fail {
    fn from(e: StateError) -> Self {
        Fail::State(e)
    }
}

type Rule<T = ()> = Result<T, Fail>;

fn reject<T>(code: RejectCode, detail: impl Into<String>) -> Rule<T> {
    Err(Fail::Reject(Rejection::new(code, detail)))
}

/// The admission checks that need no sequence context: used by a mempool to refuse an entry at
/// the door with a precise reason. Returns the author's key record.
pub fn admit(
    state: &impl StateRead,
    chain_id: &Name,
    entry: &VerifiedEntry,
) -> Result<KeyRecord, AdmitError> {
    admission(state, chain_id, entry, &entry.id(), Signature::Checked)
}

/// Why an entry whose signature does not verify is refused: the first admission check it
/// fails, in the order [`admit`] makes them, so it is refused for the same reason on every
/// node whichever checked its signature first. At the latest, its signature.
pub fn refusal_of_unverified(
    state: &impl StateRead,
    chain_id: &Name,
    entry: &Unverified,
) -> Result<Rejection, StateError> {
    match admission(state, chain_id, &entry.entry, &entry.id, Signature::Bad) {
        Err(AdmitError::Rejected(r)) => Ok(r),
        Err(AdmitError::State(e)) => Err(e),
        // Unreachable: a bad signature refuses the entry at its turn.
        Ok(_) => Ok(bad_signature(&entry.entry)),
    }
}

fn bad_signature(entry: &SignedEntry) -> Rejection {
    Rejection::new(
        RejectCode::BadSignature,
        format!(
            "signature does not verify under author {}",
            entry.body.author.short()
        ),
    )
}

fn admission(
    state: &impl StateRead,
    chain_id: &Name,
    entry: &SignedEntry,
    id: &EntryId,
    signature: Signature,
) -> Result<KeyRecord, AdmitError> {
    let body = &entry.body;
    if &body.chain_id != chain_id {
        return Err(Rejection::new(
            RejectCode::WrongChain,
            format!(
                "entry is for chain {}, this is chain {chain_id}",
                body.chain_id
            ),
        )
        .into());
    }
    if let Err(m) = body.payload.check_well_formed() {
        return Err(Rejection::new(RejectCode::Malformed, m).into());
    }
    let bad = match signature {
        Signature::Check => body
            .author
            .verify_hash(Domain::EntrySignature, id, &entry.signature)
            .is_err(),
        Signature::Checked => false,
        Signature::Bad => true,
    };
    if bad {
        return Err(bad_signature(entry).into());
    }
    if let Payload::RotateKey {
        new_key,
        new_key_proof,
    } = &body.payload
    {
        let msg = key_rotation_message(chain_id, &body.author);
        if new_key
            .verify(Domain::KeyRotation, &msg, new_key_proof)
            .is_err()
        {
            return Err(Rejection::new(
                RejectCode::BadSignature,
                format!(
                    "new key {} did not sign the rotation proof",
                    new_key.short()
                ),
            )
            .into());
        }
    }
    let Some(rec) = state.key_record(&body.author)? else {
        return Err(Rejection::new(
            RejectCode::UnknownAuthor,
            format!("author {} is not a registered key", body.author.short()),
        )
        .into());
    };
    if let Some(new) = rec.retired_for {
        return Err(Rejection::new(
            RejectCode::RetiredKey,
            format!(
                "author {} was rotated to {}",
                body.author.short(),
                new.short()
            ),
        )
        .into());
    }
    Ok(rec)
}

/// Why admission failed: a rejection, or an unreadable state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The entry is refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The state is unreadable.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Executes a block's entries in order, checking each signature at its entry's turn. Any
/// entry that fails admission makes the block invalid.
pub fn execute_block(
    state: &State,
    ctx: &BlockContext,
    entries: &[SignedEntry],
) -> Result<Execution, ExecuteError> {
    let ids: Vec<EntryId> = entries.iter().map(SignedEntry::id).collect();
    execute_identified(state, ctx, entries, &ids, Signature::Check)
}

/// [`execute_block`] of entries whose signatures were checked already.
pub fn execute_verified(
    state: &State,
    ctx: &BlockContext,
    entries: &[VerifiedEntry],
) -> Result<Execution, ExecuteError> {
    let mut ex = Executor::new(state, ctx, entries.len());
    for (index, entry) in entries.iter().enumerate() {
        ex.order_or_invalid(index, entry, entry.id(), Signature::Checked)?;
    }
    Ok(ex.finish())
}

/// [`execute_block`] with the entries' ids worked out already (`ids[i]` is `entries[i].id()`,
/// as [`crate::verify`] computes them for a block it holds).
pub(crate) fn execute_identified(
    state: &State,
    ctx: &BlockContext,
    entries: &[SignedEntry],
    ids: &[EntryId],
    signature: Signature,
) -> Result<Execution, ExecuteError> {
    assert_eq!(entries.len(), ids.len(), "one id per entry");
    let mut ex = Executor::new(state, ctx, entries.len());
    for (index, (entry, id)) in entries.iter().zip(ids).enumerate() {
        ex.order_or_invalid(index, entry, *id, signature)?;
    }
    Ok(ex.finish())
}

/// Builds a block from candidates: entries that can be ordered are executed, the rest are
/// returned with the reason they were left out (a rotated author, a sequence already used).
pub fn execute_candidates(
    state: &State,
    ctx: &BlockContext,
    candidates: impl IntoIterator<Item = VerifiedEntry>,
) -> Result<(Execution, Vec<(VerifiedEntry, Rejection)>), StateError> {
    let candidates = candidates.into_iter();
    let mut ex = Executor::new(state, ctx, candidates.size_hint().0);
    let mut left_out = Vec::new();
    for entry in candidates {
        match ex.order(&entry, entry.id(), Signature::Checked) {
            Ok(()) => {}
            Err(AdmitError::Rejected(r)) => left_out.push((entry, r)),
            Err(AdmitError::State(e)) => return Err(e),
        }
    }
    Ok((ex.finish(), left_out))
}

struct Executor<'a> {
    ov: Overlay<'a>,
    ctx: &'a BlockContext,
    out: Execution,
}

impl<'a> Executor<'a> {
    /// An executor for about `entries` entries: its output is sized once, not grown.
    fn new(state: &'a State, ctx: &'a BlockContext, entries: usize) -> Self {
        Self {
            ov: Overlay::new(state),
            ctx,
            out: Execution {
                entries: Vec::with_capacity(entries),
                outcomes: Vec::with_capacity(entries),
                rejections: Vec::with_capacity(entries),
                diff: StateDiff::new(),
            },
        }
    }

    fn finish(self) -> Execution {
        let mut out = self.out;
        out.diff = self.ov.into_diff();
        out
    }

    /// [`Executor::order`] in a block, where an entry that cannot be ordered makes the block
    /// invalid.
    fn order_or_invalid(
        &mut self,
        index: usize,
        entry: &SignedEntry,
        id: EntryId,
        signature: Signature,
    ) -> Result<(), ExecuteError> {
        match self.order(entry, id, signature) {
            Ok(()) => Ok(()),
            Err(AdmitError::Rejected(rejection)) => Err(InvalidBlock {
                index,
                entry: id,
                rejection,
            }
            .into()),
            Err(AdmitError::State(e)) => Err(e.into()),
        }
    }

    /// Admits, orders and applies one entry, whose id is `id`.
    fn order(
        &mut self,
        entry: &SignedEntry,
        id: EntryId,
        signature: Signature,
    ) -> Result<(), AdmitError> {
        let mut author = admission(&self.ov, &self.ctx.chain_id, entry, &id, signature)?;
        let seq = entry.body.sequence;
        if seq != author.next_sequence {
            let code = if seq < author.next_sequence {
                RejectCode::StaleSequence
            } else {
                RejectCode::FutureSequence
            };
            return Err(Rejection::new(
                code,
                format!(
                    "author {} must use sequence {}, entry has {seq}",
                    entry.body.author.short(),
                    author.next_sequence
                ),
            )
            .into());
        }
        let result = match entry.body.payload.required_role() {
            Some(role) if !author.roles.contains(&role) => reject(
                RejectCode::MissingRole,
                format!(
                    "{} {} needs the {role} role for {}",
                    author.agency,
                    entry.body.author.short(),
                    entry.body.payload.kind()
                ),
            ),
            _ => apply(&mut self.ov, self.ctx, &id, entry, &author),
        };
        let outcome = match result {
            Ok(()) => {
                self.ov.keep_entry();
                self.out.rejections.push(None);
                EntryOutcome::Accepted
            }
            Err(Fail::Reject(r)) => {
                self.ov.drop_entry();
                let code = r.code;
                self.out.rejections.push(Some(r));
                EntryOutcome::Rejected(code)
            }
            Err(Fail::State(e)) => return Err(e.into()),
        };
        // The sequence is consumed whatever the outcome. A rotation retired the author within
        // the entry itself, so re-read the record it may have written.
        if let Some(current) = self.ov.key_record(&entry.body.author)? {
            author = current;
        }
        author.next_sequence = seq + 1;
        self.ov
            .put(key(table::KEY, &[entry.body.author.as_bytes()]), &author);
        self.ov.keep_entry();
        self.out.entries.push(entry.clone());
        self.out.outcomes.push((id, outcome));
        Ok(())
    }
}

fn require<T>(v: Option<T>, code: RejectCode, detail: impl FnOnce() -> String) -> Rule<T> {
    match v {
        Some(v) => Ok(v),
        None => reject(code, detail()),
    }
}

/// `what` names the thing owned; it is only spelled out when the rule is broken, as every
/// entry passes through here.
fn same_agency(author: &KeyRecord, owner: &Name, what: impl FnOnce() -> String) -> Rule {
    if &author.agency != owner {
        return reject(
            RejectCode::ForeignAgency,
            format!(
                "{} belongs to {owner}, author is of {}",
                what(),
                author.agency
            ),
        );
    }
    Ok(())
}

fn apply(
    ov: &mut Overlay<'_>,
    ctx: &BlockContext,
    id: &EntryId,
    entry: &SignedEntry,
    author: &KeyRecord,
) -> Rule {
    let now = ctx.timestamp;
    match &entry.body.payload {
        Payload::GrantRole { key: target, role } => {
            let k = key(table::KEY, &[target.as_bytes()]);
            let mut rec = match ov.key_record(target)? {
                Some(rec) if rec.agency != author.agency => {
                    return reject(
                        RejectCode::ForeignKey,
                        format!("key {} belongs to {}", target.short(), rec.agency),
                    )
                }
                Some(rec) if rec.retired_for.is_some() => {
                    return reject(
                        RejectCode::RetiredKey,
                        format!("key {} was rotated away", target.short()),
                    )
                }
                Some(rec) => rec,
                None if ov.validators()?.contains(target) => {
                    return reject(
                        RejectCode::KeyInUse,
                        format!("key {} is a validator key", target.short()),
                    )
                }
                None => KeyRecord {
                    agency: author.agency.clone(),
                    roles: Default::default(),
                    next_sequence: 0,
                    retired_for: None,
                },
            };
            if rec.roles.insert(*role) && *role == Role::Admin {
                adjust_admins(ov, &author.agency, 1)?;
            }
            ov.put(k, &rec);
        }
        Payload::RevokeRole { key: target, role } => {
            let mut rec = match ov.key_record(target)? {
                Some(rec) if rec.agency == author.agency && rec.retired_for.is_some() => {
                    return reject(
                        RejectCode::RetiredKey,
                        format!(
                            "key {} was rotated away; its roles moved with it",
                            target.short()
                        ),
                    )
                }
                Some(rec) if rec.agency == author.agency => rec,
                _ => {
                    return reject(
                        RejectCode::ForeignKey,
                        format!("key {} is not a key of {}", target.short(), author.agency),
                    )
                }
            };
            if !rec.roles.remove(role) {
                return reject(
                    RejectCode::WrongStatus,
                    format!("key {} does not hold the {role} role", target.short()),
                );
            }
            if *role == Role::Admin {
                adjust_admins(ov, &author.agency, -1)?;
            }
            ov.put(key(table::KEY, &[target.as_bytes()]), &rec);
        }
        Payload::RotateKey { new_key, .. } => {
            if ov.key_record(new_key)?.is_some() || ov.validators()?.contains(new_key) {
                return reject(
                    RejectCode::KeyInUse,
                    format!("key {} is already registered", new_key.short()),
                );
            }
            let fresh = KeyRecord {
                next_sequence: 0,
                retired_for: None,
                ..author.clone()
            };
            ov.put(key(table::KEY, &[new_key.as_bytes()]), &fresh);
            let retired = KeyRecord {
                retired_for: Some(*new_key),
                ..author.clone()
            };
            ov.put(key(table::KEY, &[entry.body.author.as_bytes()]), &retired);
        }
        Payload::CreateProgramme {
            programme,
            unit,
            budget,
            valid_from,
            valid_until,
            assistance,
            period,
        } => {
            if ov.programme(programme)?.is_some() {
                return reject(
                    RejectCode::ProgrammeExists,
                    format!("programme {programme} already exists"),
                );
            }
            if *valid_until <= now {
                return reject(
                    RejectCode::OutsideWindow,
                    format!("programme {programme} would end before it is recorded"),
                );
            }
            let p = Programme {
                agency: author.agency.clone(),
                unit: unit.clone(),
                budget: *budget,
                valid_from: *valid_from,
                valid_until: *valid_until,
                assistance: assistance.clone(),
                period: period.clone(),
                issued: 0,
                redeemed: 0,
                revoked: 0,
                expired: 0,
                settled: 0,
            };
            ov.put(key(table::PROGRAMME, &[&name_part(programme)]), &p);
        }
        Payload::IssueVoucher {
            programme,
            subject,
            amount,
            expires_at,
            dedup,
        } => {
            let mut p = require(
                ov.programme(programme)?,
                RejectCode::UnknownProgramme,
                || format!("no programme {programme}"),
            )?;
            same_agency(author, &p.agency, || format!("programme {programme}"))?;
            if now < p.valid_from || now >= p.valid_until {
                return reject(
                    RejectCode::OutsideWindow,
                    format!("programme {programme} issues only within its window"),
                );
            }
            if *expires_at <= now || *expires_at > p.valid_until {
                return reject(
                    RejectCode::BadExpiry,
                    format!("expiry {} must be after now ({}) and no later than the programme's end ({})", expires_at.0, now.0, p.valid_until.0),
                );
            }
            let committed = p.committed();
            if committed.checked_add(*amount).is_none_or(|c| c > p.budget) {
                return reject(
                    RejectCode::OverBudget,
                    format!("programme {programme} has budget {}, {committed} committed; issue asks {amount}", p.budget),
                );
            }
            if let Some(d) = dedup {
                let dk = key(
                    table::DEDUP,
                    &[
                        &name_part(&p.assistance),
                        &name_part(&p.period),
                        d.0.as_bytes(),
                    ],
                );
                if let Some(prior) = ov.typed::<EntryId>(&dk)? {
                    return reject(
                        RejectCode::DuplicateAssistance,
                        format!(
                            "this person already received {} for {} (voucher {})",
                            p.assistance,
                            p.period,
                            prior.short()
                        ),
                    );
                }
                ov.put(dk, id);
            }
            // Every total of a programme (redeemed, revoked, expired, settled, a vendor's) is
            // at most what it issued in its lifetime, which stays within AMOUNT_MAX.
            let Some(issued) = p
                .issued
                .checked_add(*amount)
                .filter(|i| *i <= tally_types::AMOUNT_MAX)
            else {
                return reject(
                    RejectCode::OverBudget,
                    format!(
                        "programme {programme} has issued {} in its lifetime, and may issue at most {} in all",
                        p.issued,
                        tally_types::AMOUNT_MAX
                    ),
                );
            };
            p.issued = issued;
            ov.put(key(table::PROGRAMME, &[&name_part(programme)]), &p);
            let v = Voucher {
                programme: programme.clone(),
                subject: *subject,
                dedup: *dedup,
                amount: *amount,
                redeemed: 0,
                expires_at: *expires_at,
                status: VoucherStatus::Active,
                issued_height: ctx.height,
            };
            ov.put(key(table::VOUCHER, &[id.as_bytes()]), &v);
        }
        Payload::RedeemVoucher {
            voucher,
            amount,
            vendor,
            reference,
        } => {
            let (mut v, mut p) = live_voucher(ov, voucher, author, now)?;
            let vendor_ok = ov.key_record(vendor)?.is_some_and(|r| {
                r.agency == p.agency && r.roles.contains(&Role::Vendor) && r.retired_for.is_none()
            });
            if !vendor_ok {
                return reject(
                    RejectCode::NotVendor,
                    format!("{} is not a vendor of {}", vendor.short(), p.agency),
                );
            }
            let rk = key(
                table::REDEMPTION_REF,
                &[voucher.as_bytes(), &name_part(reference)],
            );
            if let Some(prior) = ov.typed::<EntryId>(&rk)? {
                return reject(
                    RejectCode::DuplicateReference,
                    format!(
                        "voucher {} already redeemed under reference {reference} (entry {})",
                        voucher.short(),
                        prior.short()
                    ),
                );
            }
            if *amount > v.remaining() {
                return reject(
                    RejectCode::OverBalance,
                    format!(
                        "voucher {} has {} left; redemption asks {amount}",
                        voucher.short(),
                        v.remaining()
                    ),
                );
            }
            v.redeemed += amount;
            p.redeemed += amount;
            let ak = key(
                table::VENDOR_ACCOUNT,
                &[&name_part(&v.programme), vendor.as_bytes()],
            );
            let mut acct: VendorAccount = ov.typed(&ak)?.unwrap_or_default();
            acct.redeemed += amount;
            ov.put(ak, &acct);
            ov.put(rk, id);
            ov.put(key(table::PROGRAMME, &[&name_part(&v.programme)]), &p);
            ov.put(key(table::VOUCHER, &[voucher.as_bytes()]), &v);
        }
        Payload::RevokeVoucher { voucher, .. } | Payload::ExpireVoucher { voucher } => {
            let mut v = require(ov.voucher(voucher)?, RejectCode::UnknownVoucher, || {
                format!("no voucher {}", voucher.short())
            })?;
            let mut p = require(
                ov.programme(&v.programme)?,
                RejectCode::UnknownProgramme,
                || format!("voucher's programme {} is missing", v.programme),
            )?;
            same_agency(author, &p.agency, || format!("voucher {}", voucher.short()))?;
            status_is_active(&v, voucher)?;
            let remaining = v.remaining();
            if let Payload::RevokeVoucher { reason, .. } = &entry.body.payload {
                v.status = VoucherStatus::Revoked;
                p.revoked += remaining;
                // A voucher issued in error and never used is not assistance received: the
                // person may be issued a correct one in the same period.
                if let (ReasonCode::ClericalError, 0, Some(d)) = (reason, v.redeemed, v.dedup) {
                    let assistance = name_part(&p.assistance);
                    ov.delete(key(
                        table::DEDUP,
                        &[&assistance, &name_part(&p.period), d.0.as_bytes()],
                    ));
                }
            } else {
                if now < v.expires_at {
                    return reject(
                        RejectCode::NotExpired,
                        format!(
                            "voucher {} expires at {}, now is {}",
                            voucher.short(),
                            v.expires_at.0,
                            now.0
                        ),
                    );
                }
                v.status = VoucherStatus::Expired;
                p.expired += remaining;
            }
            ov.put(key(table::PROGRAMME, &[&name_part(&v.programme)]), &p);
            ov.put(key(table::VOUCHER, &[voucher.as_bytes()]), &v);
        }
        Payload::SettleVendor {
            programme,
            vendor,
            amount,
            reference,
        } => {
            let mut p = require(
                ov.programme(programme)?,
                RejectCode::UnknownProgramme,
                || format!("no programme {programme}"),
            )?;
            same_agency(author, &p.agency, || format!("programme {programme}"))?;
            let ak = key(
                table::VENDOR_ACCOUNT,
                &[&name_part(programme), vendor.as_bytes()],
            );
            let mut acct: VendorAccount = require(ov.typed(&ak)?, RejectCode::NotVendor, || {
                format!(
                    "vendor {} has no redemptions in {programme}",
                    vendor.short()
                )
            })?;
            let owed = acct.redeemed - acct.settled;
            if *amount > owed {
                return reject(
                    RejectCode::OverSettlement,
                    format!(
                        "vendor {} is owed {owed} in {programme}; settlement is {amount}",
                        vendor.short()
                    ),
                );
            }
            let sk = key(
                table::SETTLEMENT_REF,
                &[
                    &name_part(programme),
                    vendor.as_bytes(),
                    &name_part(reference),
                ],
            );
            if ov.raw(&sk)?.is_some() {
                return reject(
                    RejectCode::DuplicateReference,
                    format!("settlement reference {reference} already used"),
                );
            }
            acct.settled += amount;
            p.settled += amount;
            ov.put(sk, id);
            ov.put(ak, &acct);
            ov.put(key(table::PROGRAMME, &[&name_part(programme)]), &p);
        }
        Payload::Attest {
            subject,
            claim,
            evidence,
            expires_at,
        } => {
            if *expires_at <= now {
                return reject(
                    RejectCode::BadExpiry,
                    format!("expiry {} is not after now ({})", expires_at.0, now.0),
                );
            }
            let a = Attestation {
                agency: author.agency.clone(),
                attester: entry.body.author,
                subject: *subject,
                claim: claim.clone(),
                evidence: *evidence,
                expires_at: *expires_at,
                status: AttestationStatus::Active,
            };
            ov.put(key(table::ATTESTATION, &[id.as_bytes()]), &a);
        }
        Payload::RevokeAttestation {
            attestation,
            reason,
        }
        | Payload::SuspendAttestation {
            attestation,
            reason,
        } => {
            let mut a = known_attestation(ov, attestation, author)?;
            let suspend = matches!(entry.body.payload, Payload::SuspendAttestation { .. });
            if suspend {
                not_lapsed(&a, attestation, now)?;
            }
            a.status = match (a.status, suspend) {
                (AttestationStatus::Revoked(_), _) => {
                    return reject(
                        RejectCode::Revoked,
                        format!("attestation {} is revoked", attestation.short()),
                    )
                }
                (AttestationStatus::Suspended(_), true) => {
                    return reject(
                        RejectCode::WrongStatus,
                        format!("attestation {} is already suspended", attestation.short()),
                    )
                }
                (_, true) => AttestationStatus::Suspended(*reason),
                (_, false) => AttestationStatus::Revoked(*reason),
            };
            ov.put(key(table::ATTESTATION, &[attestation.as_bytes()]), &a);
        }
        Payload::ReinstateAttestation { attestation } => {
            let mut a = known_attestation(ov, attestation, author)?;
            not_lapsed(&a, attestation, now)?;
            match a.status {
                AttestationStatus::Suspended(_) => a.status = AttestationStatus::Active,
                AttestationStatus::Revoked(_) => {
                    return reject(
                        RejectCode::Revoked,
                        format!("attestation {} is revoked", attestation.short()),
                    )
                }
                AttestationStatus::Active => {
                    return reject(
                        RejectCode::WrongStatus,
                        format!("attestation {} is not suspended", attestation.short()),
                    )
                }
            }
            ov.put(key(table::ATTESTATION, &[attestation.as_bytes()]), &a);
        }
        Payload::RegisterBirth { subject, event } => {
            not_future(event, now)?;
            let mut s = ov.subject(subject)?.unwrap_or_default();
            if let Some(prior) = s.birth {
                return reject(
                    RejectCode::AlreadyRecorded,
                    format!("subject already has birth record {}", prior.short()),
                );
            }
            alive(&s)?;
            s.birth = Some(*id);
            put_subject(ov, subject, &s);
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::Birth,
                vec![*subject],
                None,
                event,
                None,
            );
        }
        Payload::RegisterDeath { subject, event } => {
            not_future(event, now)?;
            let mut s = ov.subject(subject)?.unwrap_or_default();
            alive(&s)?;
            // A death ends a marriage in force: the surviving spouse may marry again.
            // The marriage record is marked dissolved by the death record.
            if let Some(m) = s.marriage.take() {
                if let Some(mut rec) = ov.registry_record(&m)? {
                    for spouse in rec.subjects.iter().filter(|x| *x != subject) {
                        let mut other = ov.subject(spouse)?.unwrap_or_default();
                        other.marriage = None;
                        put_subject(ov, spouse, &other);
                    }
                    rec.dissolved_by = Some(*id);
                    ov.put(key(table::REGISTRY_RECORD, &[m.as_bytes()]), &rec);
                }
            }
            s.death = Some(*id);
            put_subject(ov, subject, &s);
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::Death,
                vec![*subject],
                None,
                event,
                None,
            );
        }
        Payload::RegisterMarriage {
            spouse_a,
            spouse_b,
            event,
        } => {
            not_future(event, now)?;
            let mut a = ov.subject(spouse_a)?.unwrap_or_default();
            let mut b = ov.subject(spouse_b)?.unwrap_or_default();
            for s in [&a, &b] {
                alive(s)?;
                if let Some(m) = s.marriage {
                    return reject(
                        RejectCode::AlreadyMarried,
                        format!("a spouse is already married (record {})", m.short()),
                    );
                }
            }
            a.marriage = Some(*id);
            b.marriage = Some(*id);
            put_subject(ov, spouse_a, &a);
            put_subject(ov, spouse_b, &b);
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::Marriage,
                vec![*spouse_a, *spouse_b],
                None,
                event,
                None,
            );
        }
        Payload::RegisterDivorce { marriage, event } => {
            not_future(event, now)?;
            let mut m = match ov.registry_record(marriage)? {
                Some(m) if m.kind == RegistryKind::Marriage => m,
                _ => {
                    return reject(
                        RejectCode::UnknownRecord,
                        format!("no marriage record {}", marriage.short()),
                    )
                }
            };
            let mut spouses = Vec::new();
            for s in &m.subjects {
                let rec = ov.subject(s)?.unwrap_or_default();
                spouses.push((*s, rec));
            }
            if m.dissolved_by.is_some()
                || spouses.iter().any(|(_, r)| r.marriage != Some(*marriage))
            {
                return reject(
                    RejectCode::NotMarried,
                    format!("marriage {} is no longer in force", marriage.short()),
                );
            }
            for (s, mut rec) in spouses {
                rec.marriage = None;
                put_subject(ov, &s, &rec);
            }
            m.dissolved_by = Some(*id);
            ov.put(key(table::REGISTRY_RECORD, &[marriage.as_bytes()]), &m);
            let subjects = m.subjects.clone();
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::Divorce,
                subjects,
                None,
                event,
                None,
            );
        }
        Payload::RegisterTitle {
            parcel,
            holder,
            event,
        } => {
            not_future(event, now)?;
            if let Some(t) = ov.title(parcel)? {
                return reject(
                    RejectCode::TitleExists,
                    format!(
                        "parcel {parcel} already has title {}",
                        t.registered_by.short()
                    ),
                );
            }
            alive(&ov.subject(holder)?.unwrap_or_default())?;
            let t = Title {
                holder: *holder,
                registered_by: *id,
                latest: *id,
                transfers: 0,
            };
            ov.put(key(table::TITLE, &[&name_part(parcel)]), &t);
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::TitleRegistration,
                vec![*holder],
                Some(parcel.clone()),
                event,
                None,
            );
        }
        Payload::TransferTitle {
            parcel,
            from,
            to,
            event,
        } => {
            not_future(event, now)?;
            let mut t = require(ov.title(parcel)?, RejectCode::UnknownTitle, || {
                format!("parcel {parcel} has no title")
            })?;
            if &t.holder != from {
                return reject(
                    RejectCode::NotHolder,
                    format!("the transfer's holder is not the current holder of {parcel}"),
                );
            }
            alive(&ov.subject(to)?.unwrap_or_default())?;
            t.holder = *to;
            t.latest = *id;
            t.transfers += 1;
            ov.put(key(table::TITLE, &[&name_part(parcel)]), &t);
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::TitleTransfer,
                vec![*from, *to],
                Some(parcel.clone()),
                event,
                None,
            );
        }
        Payload::AmendRecord {
            original,
            reason,
            event,
        } => {
            not_future(event, now)?;
            let mut o = require(
                ov.registry_record(original)?,
                RejectCode::UnknownRecord,
                || format!("no registry record {}", original.short()),
            )?;
            same_agency(author, &o.agency, || format!("record {}", original.short()))?;
            o.latest_amendment = Some(*id);
            o.amendment_count += 1;
            ov.put(key(table::REGISTRY_RECORD, &[original.as_bytes()]), &o);
            let (subjects, parcel) = (o.subjects.clone(), o.parcel.clone());
            put_record(
                ov,
                ctx,
                id,
                author,
                RegistryKind::Amendment,
                subjects,
                parcel,
                event,
                Some((*original, *reason)),
            );
        }
    }
    Ok(())
}

fn adjust_admins(ov: &mut Overlay<'_>, agency: &Name, delta: i64) -> Rule {
    let k = key(table::AGENCY, &[&name_part(agency)]);
    let mut a: AgencyRecord = require(ov.typed(&k)?, RejectCode::ForeignKey, || {
        format!("no agency {agency}")
    })?;
    if delta < 0 && a.admins <= 1 {
        return reject(
            RejectCode::LastAdmin,
            format!("{agency} would be left without an admin"),
        );
    }
    a.admins = (a.admins as i64 + delta) as u32;
    ov.put(k, &a);
    Ok(())
}

fn status_is_active(v: &Voucher, id: &EntryId) -> Rule {
    match v.status {
        VoucherStatus::Active => Ok(()),
        VoucherStatus::Revoked => reject(
            RejectCode::Revoked,
            format!("voucher {} was revoked", id.short()),
        ),
        VoucherStatus::Expired => reject(
            RejectCode::Expired,
            format!("voucher {} was closed as expired", id.short()),
        ),
    }
}

fn live_voucher(
    ov: &Overlay<'_>,
    id: &EntryId,
    author: &KeyRecord,
    now: TimestampMs,
) -> Rule<(Voucher, Programme)> {
    let v = require(ov.voucher(id)?, RejectCode::UnknownVoucher, || {
        format!("no voucher {}", id.short())
    })?;
    let p = require(
        ov.programme(&v.programme)?,
        RejectCode::UnknownProgramme,
        || format!("voucher's programme {} is missing", v.programme),
    )?;
    same_agency(author, &p.agency, || format!("voucher {}", id.short()))?;
    status_is_active(&v, id)?;
    if now >= v.expires_at {
        return reject(
            RejectCode::Expired,
            format!(
                "voucher {} expired at {}, now is {}",
                id.short(),
                v.expires_at.0,
                now.0
            ),
        );
    }
    Ok((v, p))
}

fn known_attestation(ov: &Overlay<'_>, id: &EntryId, author: &KeyRecord) -> Rule<Attestation> {
    let a = require(ov.attestation(id)?, RejectCode::UnknownAttestation, || {
        format!("no attestation {}", id.short())
    })?;
    same_agency(author, &a.agency, || format!("attestation {}", id.short()))?;
    Ok(a)
}

fn not_lapsed(a: &Attestation, id: &EntryId, now: TimestampMs) -> Rule {
    if now >= a.expires_at {
        return reject(
            RejectCode::Expired,
            format!(
                "attestation {} expired at {}, now is {}",
                id.short(),
                a.expires_at.0,
                now.0
            ),
        );
    }
    Ok(())
}

fn not_future(event: &tally_types::RegistryEvent, now: TimestampMs) -> Rule {
    if event.date > now.date() {
        return reject(
            RejectCode::FutureDate,
            format!("event date {} is after today ({})", event.date, now.date()),
        );
    }
    Ok(())
}

fn alive(s: &SubjectRecord) -> Rule {
    match s.death {
        Some(d) => reject(
            RejectCode::SubjectDead,
            format!("subject is recorded as dead (record {})", d.short()),
        ),
        None => Ok(()),
    }
}

fn put_subject(ov: &mut Overlay<'_>, subject: &tally_types::SubjectToken, rec: &SubjectRecord) {
    ov.put(key(table::SUBJECT, &[subject.0.as_bytes()]), rec);
}

#[allow(clippy::too_many_arguments)]
fn put_record(
    ov: &mut Overlay<'_>,
    ctx: &BlockContext,
    id: &EntryId,
    author: &KeyRecord,
    kind: RegistryKind,
    subjects: Vec<tally_types::SubjectToken>,
    parcel: Option<Name>,
    event: &tally_types::RegistryEvent,
    amends: Option<(EntryId, tally_types::ReasonCode)>,
) {
    let rec = RegistryRecord {
        kind,
        subjects,
        parcel,
        event: event.clone(),
        agency: author.agency.clone(),
        height: ctx.height,
        amends,
        latest_amendment: None,
        amendment_count: 0,
        dissolved_by: None,
    };
    ov.put(key(table::REGISTRY_RECORD, &[id.as_bytes()]), &rec);
}

/// Keys that may sign entries: used by a mempool to check a vendor or author without a block.
pub fn holds_role(state: &impl StateRead, k: &PublicKey, role: Role) -> Result<bool, StateError> {
    Ok(state
        .key_record(k)?
        .is_some_and(|r| r.retired_for.is_none() && r.roles.contains(&role)))
}
