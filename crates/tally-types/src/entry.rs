//! Signed entries: the only way anything enters the ledger.
//!
//! An entry is a body (chain id, author key, per-author sequence number, payload) and the
//! author's ed25519 signature. Its id is the hash of the canonical encoding of the body alone,
//! so re-encoding or malleating the signature can never create a second entry with a new id.

use crate::codec::{self, CodecError};
use crate::hash::{Domain, Hash};
use crate::keys::{verify_batch, KeyError, Keypair, PublicKey, Signature, SignatureCheck};
use crate::name::Name;
use crate::time::{CivilDate, TimestampMs};
use crate::token::{Commitment, DedupToken, SubjectToken};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest encoded signed entry accepted anywhere, in bytes. No payload needs more than a
/// few hundred; the limit keeps a hostile client from filling memory with one entry.
pub const ENTRY_BYTES_MAX: usize = 2048;

/// The largest amount, budget or instant an entry may carry, and the most a programme may issue
/// in its lifetime: 2^53 − 1, the largest integer a JSON number holds exactly (JavaScript's
/// `Number.MAX_SAFE_INTEGER`). Every amount and total the API prints is bounded by one of
/// these, so no client reads one rounded.
pub const AMOUNT_MAX: u64 = (1 << 53) - 1;

/// An entry's identity: the hash of its body (never of its signature).
pub type EntryId = Hash;

/// What a staff key is allowed to sign. A key holds roles only within its own agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Grants and revokes roles, opens programmes, records vendor settlements.
    Admin,
    /// Issues, revokes and expires vouchers.
    Issuer,
    /// Redeems vouchers at a distribution point or shop.
    Redeemer,
    /// A contracted shop that vouchers are redeemed for and settled to.
    Vendor,
    /// Records civil-registry events.
    Registrar,
    /// Attests identity claims and manages their status.
    Attester,
}

impl Role {
    /// Every role, in a fixed order (bit positions of [`RoleSet`]-style masks).
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Issuer,
        Role::Redeemer,
        Role::Vendor,
        Role::Registrar,
        Role::Attester,
    ];

    /// The stable lower-case name used in the CLI, the API and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Issuer => "issuer",
            Role::Redeemer => "redeemer",
            Role::Vendor => "vendor",
            Role::Registrar => "registrar",
            Role::Attester => "attester",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; expected one of admin, issuer, redeemer, vendor, registrar, attester"))
    }
}

/// Why something was revoked, suspended or amended. A closed list of codes: DOMAIN.md forbids
/// free text that staff could fill with names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Entered in error by staff.
    ClericalError,
    /// Suspected or proven fraud.
    Fraud,
    /// A duplicate of another record.
    Duplicate,
    /// The beneficiary or subject asked for it.
    SubjectRequest,
    /// The beneficiary left the programme or area.
    Relocated,
    /// A court or competent authority ordered it.
    CourtOrder,
    /// The underlying document or evidence was lost or replaced.
    DocumentReplaced,
    /// The subject has died.
    Deceased,
    /// Under investigation (for suspensions).
    UnderReview,
    /// Programme rules changed.
    PolicyChange,
}

impl ReasonCode {
    /// Every reason, for help texts and validation.
    pub const ALL: [ReasonCode; 10] = [
        ReasonCode::ClericalError,
        ReasonCode::Fraud,
        ReasonCode::Duplicate,
        ReasonCode::SubjectRequest,
        ReasonCode::Relocated,
        ReasonCode::CourtOrder,
        ReasonCode::DocumentReplaced,
        ReasonCode::Deceased,
        ReasonCode::UnderReview,
        ReasonCode::PolicyChange,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::ClericalError => "clerical_error",
            ReasonCode::Fraud => "fraud",
            ReasonCode::Duplicate => "duplicate",
            ReasonCode::SubjectRequest => "subject_request",
            ReasonCode::Relocated => "relocated",
            ReasonCode::CourtOrder => "court_order",
            ReasonCode::DocumentReplaced => "document_replaced",
            ReasonCode::Deceased => "deceased",
            ReasonCode::UnderReview => "under_review",
            ReasonCode::PolicyChange => "policy_change",
        }
    }
}

impl std::str::FromStr for ReasonCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReasonCode::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = ReasonCode::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown reason code {s:?}; expected one of {}",
                    all.join(", ")
                )
            })
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a civil-registry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryKind {
    /// A birth.
    Birth,
    /// A death.
    Death,
    /// A marriage of two subjects.
    Marriage,
    /// The dissolution of a recorded marriage.
    Divorce,
    /// The first registration of a land title.
    TitleRegistration,
    /// The transfer of a registered title to a new holder.
    TitleTransfer,
    /// A correction of an earlier record.
    Amendment,
}

/// Fields every civil-registry event carries: coarse, non-identifying, and a commitment to the
/// full record kept off chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEvent {
    /// Salted hash of the full off-chain record.
    pub record: Commitment,
    /// When the event happened, to the day.
    pub date: CivilDate,
    /// Where it was registered: a jurisdiction code (district, municipality), never an address.
    pub jurisdiction: Name,
}

/// What an entry asks the ledger to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    // Governance
    /// An agency admin gives a key a role in the admin's agency.
    GrantRole {
        /// The staff key.
        key: PublicKey,
        /// The role granted.
        role: Role,
    },
    /// An agency admin takes a role away from a key of the same agency.
    RevokeRole {
        /// The staff key.
        key: PublicKey,
        /// The role revoked.
        role: Role,
    },
    /// The author moves its agency and roles to a new key; the old key is retired for good.
    RotateKey {
        /// The replacement key.
        new_key: PublicKey,
        /// The new key's signature over (chain id, old key) under the key-rotation domain:
        /// proof that whoever rotates actually holds the new key.
        new_key_proof: Signature,
    },

    // Aid
    /// An agency opens an aid programme.
    CreateProgramme {
        /// The programme's identifier, unique on the chain.
        programme: Name,
        /// The commodity or currency, e.g. `USD`, `KES`, `rice-kg`.
        unit: Name,
        /// The most the programme may have outstanding, in minor units.
        budget: u64,
        /// First instant vouchers may be issued.
        valid_from: TimestampMs,
        /// Instant after which nothing is issued and every voucher has expired.
        valid_until: TimestampMs,
        /// The kind of assistance, shared across agencies for de-duplication (e.g. `food-basket`).
        assistance: Name,
        /// The assistance period, shared across agencies for de-duplication (e.g. `2026-11`).
        period: Name,
    },
    /// An issuer gives a voucher to a subject.
    IssueVoucher {
        /// The programme it draws on.
        programme: Name,
        /// Who receives it.
        subject: SubjectToken,
        /// Value in minor units.
        amount: u64,
        /// After this instant it cannot be redeemed.
        expires_at: TimestampMs,
        /// When present, the issue is refused if this token already received the same
        /// assistance in the same period, from any agency.
        dedup: Option<DedupToken>,
    },
    /// A redeemer spends part or all of a voucher at a vendor.
    RedeemVoucher {
        /// The voucher (the id of its issue entry).
        voucher: EntryId,
        /// Value in minor units.
        amount: u64,
        /// The vendor key the value is owed to.
        vendor: PublicKey,
        /// The shop's transaction reference; a voucher accepts each reference once.
        reference: Name,
    },
    /// An issuer cancels a voucher; its remaining value returns to the programme.
    RevokeVoucher {
        /// The voucher.
        voucher: EntryId,
        /// Why.
        reason: ReasonCode,
    },
    /// An issuer closes a voucher past its expiry; its remaining value returns to the programme.
    ExpireVoucher {
        /// The voucher.
        voucher: EntryId,
    },
    /// An admin records a payment to a vendor for redemptions in a programme.
    SettleVendor {
        /// The programme.
        programme: Name,
        /// The vendor key.
        vendor: PublicKey,
        /// Value paid, in minor units.
        amount: u64,
        /// The payment reference, unique per programme and vendor.
        reference: Name,
    },

    // Identity
    /// An attester vouches for a claim about a subject.
    Attest {
        /// The subject.
        subject: SubjectToken,
        /// The kind of claim (e.g. `refugee-status`, `age-over-18`).
        claim: Name,
        /// Salted hash of the evidence kept off chain.
        evidence: Commitment,
        /// When the attestation lapses.
        expires_at: TimestampMs,
    },
    /// An attester withdraws an attestation for good.
    RevokeAttestation {
        /// The attestation (the id of its attest entry).
        attestation: EntryId,
        /// Why.
        reason: ReasonCode,
    },
    /// An attester suspends an attestation until reinstated.
    SuspendAttestation {
        /// The attestation.
        attestation: EntryId,
        /// Why.
        reason: ReasonCode,
    },
    /// An attester lifts a suspension.
    ReinstateAttestation {
        /// The attestation.
        attestation: EntryId,
    },

    // Civil registry
    /// A registrar records a birth.
    RegisterBirth {
        /// The child.
        subject: SubjectToken,
        /// Record, date, jurisdiction.
        event: RegistryEvent,
    },
    /// A registrar records a death.
    RegisterDeath {
        /// The deceased.
        subject: SubjectToken,
        /// Record, date, jurisdiction.
        event: RegistryEvent,
    },
    /// A registrar records a marriage.
    RegisterMarriage {
        /// One spouse.
        spouse_a: SubjectToken,
        /// The other spouse.
        spouse_b: SubjectToken,
        /// Record, date, jurisdiction.
        event: RegistryEvent,
    },
    /// A registrar records a divorce.
    RegisterDivorce {
        /// The marriage record being dissolved.
        marriage: EntryId,
        /// Record, date, jurisdiction.
        event: RegistryEvent,
    },
    /// A registrar records the first registration of a land parcel's title.
    RegisterTitle {
        /// The cadastral parcel code (a land reference, not a person).
        parcel: Name,
        /// The holder.
        holder: SubjectToken,
        /// Record, date, jurisdiction.
        event: RegistryEvent,
    },
    /// A registrar records a title passing from its current holder to another subject.
    TransferTitle {
        /// The parcel.
        parcel: Name,
        /// The current holder, who must be the holder on the ledger.
        from: SubjectToken,
        /// The new holder.
        to: SubjectToken,
        /// Record, date, jurisdiction.
        event: RegistryEvent,
    },
    /// A registrar corrects a record; the original stays, linked from the amendment.
    AmendRecord {
        /// The record corrected (the id of its entry).
        original: EntryId,
        /// Why.
        reason: ReasonCode,
        /// Corrected record, date and jurisdiction.
        event: RegistryEvent,
    },
}

impl Payload {
    /// The stable snake_case name of the payload kind, as used in the docs and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::GrantRole { .. } => "grant_role",
            Payload::RevokeRole { .. } => "revoke_role",
            Payload::RotateKey { .. } => "rotate_key",
            Payload::CreateProgramme { .. } => "create_programme",
            Payload::IssueVoucher { .. } => "issue_voucher",
            Payload::RedeemVoucher { .. } => "redeem_voucher",
            Payload::RevokeVoucher { .. } => "revoke_voucher",
            Payload::ExpireVoucher { .. } => "expire_voucher",
            Payload::SettleVendor { .. } => "settle_vendor",
            Payload::Attest { .. } => "attest",
            Payload::RevokeAttestation { .. } => "revoke_attestation",
            Payload::SuspendAttestation { .. } => "suspend_attestation",
            Payload::ReinstateAttestation { .. } => "reinstate_attestation",
            Payload::RegisterBirth { .. } => "register_birth",
            Payload::RegisterDeath { .. } => "register_death",
            Payload::RegisterMarriage { .. } => "register_marriage",
            Payload::RegisterDivorce { .. } => "register_divorce",
            Payload::RegisterTitle { .. } => "register_title",
            Payload::TransferTitle { .. } => "transfer_title",
            Payload::AmendRecord { .. } => "amend_record",
        }
    }

    /// The role the author needs, or `None` for entries any registered, active key may sign.
    pub fn required_role(&self) -> Option<Role> {
        match self {
            Payload::GrantRole { .. } | Payload::RevokeRole { .. } => Some(Role::Admin),
            Payload::RotateKey { .. } => None,
            Payload::CreateProgramme { .. } | Payload::SettleVendor { .. } => Some(Role::Admin),
            Payload::IssueVoucher { .. }
            | Payload::RevokeVoucher { .. }
            | Payload::ExpireVoucher { .. } => Some(Role::Issuer),
            Payload::RedeemVoucher { .. } => Some(Role::Redeemer),
            Payload::Attest { .. }
            | Payload::RevokeAttestation { .. }
            | Payload::SuspendAttestation { .. }
            | Payload::ReinstateAttestation { .. } => Some(Role::Attester),
            Payload::RegisterBirth { .. }
            | Payload::RegisterDeath { .. }
            | Payload::RegisterMarriage { .. }
            | Payload::RegisterDivorce { .. }
            | Payload::RegisterTitle { .. }
            | Payload::TransferTitle { .. }
            | Payload::AmendRecord { .. } => Some(Role::Registrar),
        }
    }

    /// Checks what can be checked without the ledger's state: positive amounts, ordered windows,
    /// distinct parties, and amounts and instants no larger than [`AMOUNT_MAX`]. An entry
    /// failing this is malformed and never reaches a block.
    pub fn check_well_formed(&self) -> Result<(), String> {
        if let Some((what, value)) = self.largest_number() {
            if value > AMOUNT_MAX {
                return Err(format!(
                    "{what} {value} is over {AMOUNT_MAX}, the largest a JSON number holds exactly"
                ));
            }
        }
        match self {
            Payload::GrantRole { key, .. } | Payload::RotateKey { new_key: key, .. }
                if key.check_signing_key().is_err() =>
            {
                return Err(format!(
                    "key {key} cannot sign: not a point of the ed25519 prime-order group"
                ));
            }
            Payload::CreateProgramme {
                budget,
                valid_from,
                valid_until,
                ..
            } => {
                if *budget == 0 {
                    return Err("budget must be greater than zero".into());
                }
                if valid_until <= valid_from {
                    return Err("valid_until must be after valid_from".into());
                }
            }
            Payload::IssueVoucher { amount, .. }
            | Payload::RedeemVoucher { amount, .. }
            | Payload::SettleVendor { amount, .. }
                if *amount == 0 =>
            {
                return Err("amount must be greater than zero".into());
            }
            Payload::RegisterMarriage {
                spouse_a, spouse_b, ..
            } if spouse_a == spouse_b => {
                return Err("a marriage needs two distinct subjects".into());
            }
            Payload::TransferTitle { from, to, .. } if from == to => {
                return Err("a transfer needs a new holder distinct from the current one".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// The largest amount or instant the payload carries, with its name.
    fn largest_number(&self) -> Option<(&'static str, u64)> {
        match self {
            Payload::CreateProgramme {
                budget,
                valid_from,
                valid_until,
                ..
            } => [
                ("budget", *budget),
                ("valid_from", valid_from.0),
                ("valid_until", valid_until.0),
            ]
            .into_iter()
            .max_by_key(|(_, v)| *v),
            Payload::IssueVoucher {
                amount, expires_at, ..
            } => Some(if amount >= &expires_at.0 {
                ("amount", *amount)
            } else {
                ("expires_at", expires_at.0)
            }),
            Payload::RedeemVoucher { amount, .. } | Payload::SettleVendor { amount, .. } => {
                Some(("amount", *amount))
            }
            Payload::Attest { expires_at, .. } => Some(("expires_at", expires_at.0)),
            _ => None,
        }
    }
}

/// The signed content of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// The chain this entry is for; an entry for another chain is refused.
    pub chain_id: Name,
    /// The signing key.
    pub author: PublicKey,
    /// The author's next sequence number, starting at 0: replay protection and ordering.
    pub sequence: u64,
    /// What the entry asks for.
    pub payload: Payload,
}

impl EntryBody {
    /// The entry id: hash of the canonical encoding of the body.
    pub fn id(&self) -> EntryId {
        Domain::EntryId.hash(&[&codec::encode(self)])
    }

    /// Signs the body with the author's key. The key must be the body's author.
    pub fn sign(self, key: &Keypair) -> SignedEntry {
        debug_assert_eq!(
            key.public(),
            self.author,
            "an entry is signed by its author"
        );
        let signature = key.sign_hash(Domain::EntrySignature, &self.id());
        SignedEntry {
            body: self,
            signature,
        }
    }
}

/// An entry with its author's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// The signed content.
    pub body: EntryBody,
    /// The author's signature over the entry id under the entry-signature domain.
    pub signature: Signature,
}

/// Why an entry's bytes or signature were refused before any business rule was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryFormatError {
    /// More bytes than [`ENTRY_BYTES_MAX`].
    #[error("entry is {0} bytes; the limit is {ENTRY_BYTES_MAX}")]
    TooLarge(usize),
    /// Not a canonical encoding of an entry.
    #[error("entry bytes do not decode: {0}")]
    Malformed(#[from] CodecError),
}

impl SignedEntry {
    /// The entry id (of the body; the signature is not part of it).
    pub fn id(&self) -> EntryId {
        self.body.id()
    }

    /// Checks the author's signature (the rule is in [`crate::keys`]).
    pub fn verify_signature(&self) -> Result<(), KeyError> {
        self.body
            .author
            .verify_hash(Domain::EntrySignature, &self.id(), &self.signature)
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes canonical bytes, refusing oversized input before decoding it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryFormatError> {
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(EntryFormatError::TooLarge(bytes.len()));
        }
        Ok(codec::decode(bytes)?)
    }
}

/// A signed entry with its id, worked out once from its body when this was made. A node looks
/// an arriving entry up by its id before it pays for a signature check (pending already? in a
/// block checked at this height?), and the check then uses the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifiedEntry {
    entry: SignedEntry,
    id: EntryId,
}

impl IdentifiedEntry {
    /// Hashes the entry's body to its id.
    pub fn new(entry: SignedEntry) -> Self {
        let id = entry.id();
        IdentifiedEntry { entry, id }
    }

    /// The entry.
    pub fn entry(&self) -> &SignedEntry {
        &self.entry
    }

    /// Its id.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The entry, for a caller that needs it owned.
    pub fn into_entry(self) -> SignedEntry {
        self.entry
    }
}

impl From<SignedEntry> for IdentifiedEntry {
    fn from(entry: SignedEntry) -> Self {
        IdentifiedEntry::new(entry)
    }
}

/// A signed entry whose author's signature has been checked, with the id it was checked over.
///
/// Only [`VerifiedEntry::verify`] and [`VerifiedEntry::verify_all`] make one, and only by
/// checking, so a function that takes a `VerifiedEntry` neither checks the signature again nor
/// hashes the body again, and needs no caller's word that either was done. A mempool holds
/// entries of this type and blocks are built from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    entry: SignedEntry,
    id: EntryId,
}

/// The most [`SUSPICION`] counts: after a flood of bad signatures ends, this many good ones
/// bring batches back.
pub const SUSPICION_MAX: usize = 4096;

/// How far bad signatures have lately outnumbered good ones, across every thread: each entry
/// found bad adds one, each found good takes one away, within 0..=[`SUSPICION_MAX`]. A failed
/// batch is wasted work (its entries are then checked one by one), so while this is above
/// zero, entries that arrive together are checked one by one from the start: a flood of bad
/// signatures costs one check per entry. To hold honest traffic out of batches, bad entries
/// must keep up with the good ones.
static SUSPICION: AtomicUsize = AtomicUsize::new(0);

/// Counts what a check found into [`SUSPICION`].
fn suspect(bad: usize, good: usize) {
    let _ = SUSPICION.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
        Some((s + bad).saturating_sub(good).min(SUSPICION_MAX))
    });
}

/// An entry whose signature does not verify, with its id (so that saying why the entry is
/// refused costs no second hash) and why. The entry is boxed: this is the rare path, and the
/// answer of every check is no larger than a checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// The entry.
    pub entry: Box<SignedEntry>,
    /// Its id.
    pub id: EntryId,
    /// Why its signature was refused.
    pub error: KeyError,
}

impl VerifiedEntry {
    /// Checks the author's signature over the entry's id (the rule is in [`crate::keys`]).
    pub fn verify(entry: impl Into<IdentifiedEntry>) -> Result<Self, Unverified> {
        let IdentifiedEntry { entry, id } = entry.into();
        match entry
            .body
            .author
            .verify_hash(Domain::EntrySignature, &id, &entry.signature)
        {
            Ok(()) => Ok(VerifiedEntry { entry, id }),
            Err(error) => Err(Unverified {
                entry: Box::new(entry),
                id,
                error,
            }),
        }
    }

    /// Checks entries that arrive together in one batch ([`verify_batch`]: the same decision
    /// as [`VerifiedEntry::verify`] on each, at about a third of the cost). When the batch
    /// fails, each entry is checked on its own, so that only the bad ones are refused; while
    /// bad signatures outnumber good ones lately ([`SUSPICION`]), each is checked on its own
    /// from the start.
    pub fn verify_all(entries: Vec<IdentifiedEntry>) -> Vec<Result<Self, Unverified>> {
        // One entry is checked on its own: a batch of one costs more.
        let batched = entries.len() > 1 && SUSPICION.load(Ordering::Relaxed) == 0;
        let together = batched && {
            let checks: Vec<SignatureCheck<'_>> = entries
                .iter()
                .map(|e| SignatureCheck {
                    key: &e.entry.body.author,
                    domain: Domain::EntrySignature,
                    message: e.id.as_bytes(),
                    signature: &e.entry.signature,
                })
                .collect();
            verify_batch(&checks)
        };
        if together {
            return entries
                .into_iter()
                .map(|e| {
                    Ok(VerifiedEntry {
                        entry: e.entry,
                        id: e.id,
                    })
                })
                .collect();
        }
        let checked: Vec<_> = entries.into_iter().map(Self::verify).collect();
        let bad = checked.iter().filter(|c| c.is_err()).count();
        suspect(bad, checked.len() - bad);
        checked
    }

    /// The entry.
    pub fn entry(&self) -> &SignedEntry {
        &self.entry
    }

    /// Its id, worked out once before it was checked.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The entry, for a caller that needs it owned (a block's entries).
    pub fn into_entry(self) -> SignedEntry {
        self.entry
    }
}

impl std::ops::Deref for IdentifiedEntry {
    type Target = SignedEntry;

    fn deref(&self) -> &SignedEntry {
        &self.entry
    }
}

impl std::ops::Deref for VerifiedEntry {
    type Target = SignedEntry;

    fn deref(&self) -> &SignedEntry {
        &self.entry
    }
}

/// Entries sent together in one request (`POST /v1/entries/batch`): each as a 4-byte
/// little-endian length and then its canonical bytes, one after the other. A gateway or a field
/// device syncing its outbox sends many entries in one round trip, and the node checks their
/// signatures in one batch. The framing is explicit so a client in any language can write it
/// without a bincode implementation.
pub fn encode_entries<E: std::borrow::Borrow<SignedEntry>>(entries: &[E]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = entries.iter().map(|e| e.borrow().to_bytes()).collect();
    frame_entries(encoded.iter().map(Vec::as_slice))
}

/// [`encode_entries`] of entries already in their canonical bytes (a load generator encodes
/// ahead of time).
pub fn frame_entries<'a>(encoded: impl IntoIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.clone().into_iter().map(|b| b.len() + 4).sum());
    for bytes in encoded {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Why framed entries ([`encode_entries`]) were refused. Every variant names the frame, counted
/// from 0, so a client can find the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntriesFormatError {
    /// More entries than the reader allows.
    #[error("more than {0} entries")]
    TooMany(usize),
    /// The bytes end inside a frame's length or its entry.
    #[error("entry {0}: the bytes end inside its frame")]
    Truncated(usize),
    /// A frame's entry does not decode.
    #[error("entry {0}: {1}")]
    Entry(usize, EntryFormatError),
}

/// Reads framed entries ([`encode_entries`]), at most `max` of them. A frame that claims more
/// than [`ENTRY_BYTES_MAX`] is refused before it is read.
pub fn decode_entries(
    mut bytes: &[u8],
    max: usize,
) -> Result<Vec<SignedEntry>, EntriesFormatError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let index = out.len();
        if index == max {
            return Err(EntriesFormatError::TooMany(max));
        }
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(EntriesFormatError::Truncated(index))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > ENTRY_BYTES_MAX {
            return Err(EntriesFormatError::Entry(
                index,
                EntryFormatError::TooLarge(len),
            ));
        }
        if rest.len() < len {
            return Err(EntriesFormatError::Truncated(index));
        }
        let (entry, rest) = rest.split_at(len);
        out.push(SignedEntry::from_bytes(entry).map_err(|e| EntriesFormatError::Entry(index, e))?);
        bytes = rest;
    }
    Ok(out)
}

/// The message the new key signs in a key rotation.
pub fn key_rotation_message(chain_id: &Name, old_key: &PublicKey) -> Vec<u8> {
    codec::encode(&(chain_id, old_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> (Keypair, SignedEntry) {
        let k = Keypair::from_seed_for_tests(9);
        let body = EntryBody {
            chain_id: Name::new("test-chain").unwrap_or_else(|e| panic!("{e}")),
            author: k.public(),
            sequence: seq,
            payload: Payload::ExpireVoucher {
                voucher: Hash::ZERO,
            },
        };
        let e = body.sign(&k);
        (k, e)
    }

    #[test]
    fn a_key_that_cannot_sign_is_refused_for_a_role_a_rotation_and_genesis() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = PublicKey(identity);
        let good = Keypair::from_seed_for_tests(4).public();
        let grant = |key| Payload::GrantRole {
            key,
            role: Role::Issuer,
        };
        assert_eq!(grant(good).check_well_formed(), Ok(()));
        assert!(grant(weak).check_well_formed().is_err());
        let rotate = Payload::RotateKey {
            new_key: weak,
            new_key_proof: Signature([0u8; 64]),
        };
        assert!(rotate.check_well_formed().is_err());
        let name = |s: &str| Name::new(s).unwrap_or_else(|e| panic!("{e}"));
        let genesis = |admin: PublicKey, validator: PublicKey| crate::Genesis {
            chain_id: name("test-chain"),
            genesis_time: crate::TimestampMs(0),
            agencies: vec![crate::AgencyGenesis {
                id: name("wfp"),
                admins: vec![admin],
            }],
            validators: vec![crate::ValidatorGenesis {
                agency: name("wfp"),
                key: validator,
            }],
        };
        let validator = Keypair::from_seed_for_tests(5).public();
        assert_eq!(genesis(good, validator).validate(), Ok(()));
        assert!(genesis(weak, validator).validate().is_err());
        assert!(genesis(good, weak).validate().is_err());
    }

    #[test]
    fn id_excludes_signature_and_round_trips() {
        let (_, e) = sample(3);
        let bytes = e.to_bytes();
        let back = SignedEntry::from_bytes(&bytes).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(back, e);
        assert_eq!(back.verify_signature(), Ok(()));
        let mut other_sig = e.clone();
        other_sig.signature.0[0] ^= 1;
        assert_eq!(
            other_sig.id(),
            e.id(),
            "the id does not cover the signature"
        );
        assert!(other_sig.verify_signature().is_err());
    }

    #[test]
    fn only_a_good_signature_makes_a_verified_entry_and_a_batch_refuses_only_the_bad_ones() {
        let entries: Vec<SignedEntry> = (0..6).map(|i| sample(i).1).collect();
        let v = VerifiedEntry::verify(entries[0].clone()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((v.id(), v.entry()), (entries[0].id(), &entries[0]));
        let mut forged = entries.clone();
        forged[2].signature.0[0] ^= 1;
        forged[4].body.sequence += 100;
        let bad = VerifiedEntry::verify(forged[2].clone()).err();
        assert_eq!(
            bad.map(|b| (b.id, *b.entry)),
            Some((forged[2].id(), forged[2].clone()))
        );
        let checked = VerifiedEntry::verify_all(forged.iter().cloned().map(Into::into).collect());
        let refused: Vec<usize> = checked
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            refused,
            vec![2, 4],
            "a changed body fails under its old signature"
        );
        for (c, e) in checked.iter().zip(&forged) {
            let id = match c {
                Ok(v) => v.id(),
                Err(u) => u.id,
            };
            assert_eq!(id, e.id(), "each answer carries its entry's id");
        }
        let all_good = VerifiedEntry::verify_all(entries.iter().cloned().map(Into::into).collect());
        assert!(all_good.iter().all(Result::is_ok));
        assert!(VerifiedEntry::verify_all(Vec::new()).is_empty());
    }

    #[test]
    fn framed_entries_round_trip_and_name_the_frame_at_fault() {
        let entries: Vec<SignedEntry> = (0..5).map(|i| sample(i).1).collect();
        let bytes = encode_entries(&entries);
        assert_eq!(decode_entries(&bytes, 5), Ok(entries.clone()));
        assert_eq!(decode_entries(&[], 5), Ok(Vec::new()));
        assert_eq!(
            decode_entries(&bytes, 4),
            Err(EntriesFormatError::TooMany(4))
        );
        // Cut anywhere inside the third frame: the third is named.
        let third = bytes.len() / 5 * 2;
        for cut in [third + 1, third + 4, third + 10] {
            assert_eq!(
                decode_entries(&bytes[..cut], 5),
                Err(EntriesFormatError::Truncated(2))
            );
        }
        // A frame that claims more than an entry may hold is refused before it is read.
        let mut huge = bytes[..third].to_vec();
        huge.extend_from_slice(&(ENTRY_BYTES_MAX as u32 + 1).to_le_bytes());
        assert_eq!(
            decode_entries(&huge, 5),
            Err(EntriesFormatError::Entry(
                2,
                EntryFormatError::TooLarge(ENTRY_BYTES_MAX + 1)
            ))
        );
        // A frame one byte short of its entry leaves a byte that cannot start a frame.
        let mut short = bytes[..third].to_vec();
        let len = entries[2].to_bytes().len();
        short.extend_from_slice(&(len as u32 - 1).to_le_bytes());
        short.extend_from_slice(&entries[2].to_bytes());
        assert!(matches!(
            decode_entries(&short, 5),
            Err(EntriesFormatError::Entry(2, EntryFormatError::Malformed(_)))
        ));
    }

    #[test]
    fn any_flipped_byte_breaks_decode_or_signature() {
        let (_, e) = sample(1);
        let bytes = e.to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            if let Ok(d) = SignedEntry::from_bytes(&b) {
                assert!(
                    d.verify_signature().is_err(),
                    "byte {i} flipped still verifies"
                );
            }
        }
    }

    #[test]
    fn json_is_readable() {
        let (_, e) = sample(0);
        let json = serde_json::to_string(&e).unwrap_or_default();
        assert!(json.contains("\"expire_voucher\""), "{json}");
        let back: SignedEntry = serde_json::from_str(&json).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(back, e);
    }

    #[test]
    fn oversized_is_refused_before_decoding() {
        assert!(matches!(
            SignedEntry::from_bytes(&vec![0u8; ENTRY_BYTES_MAX + 1]),
            Err(EntryFormatError::TooLarge(_))
        ));
    }
}
