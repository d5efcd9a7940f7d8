//! The records the ledger state holds, one type per table. Each is stored under its table's key
//! prefix in canonical encoding, and each is what the API returns for a query.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tally_types::entry::RegistryEvent;
use tally_types::{Commitment, DedupToken};
use tally_types::{
    EntryId, Name, PublicKey, ReasonCode, RegistryKind, Role, SubjectToken, TimestampMs,
};

/// A registered key: which agency it belongs to, what it may sign, and its next sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The agency the key belongs to.
    pub agency: Name,
    /// Roles currently held.
    pub roles: BTreeSet<Role>,
    /// The sequence number the key's next entry must carry.
    pub next_sequence: u64,
    /// Set when the key was rotated away: the key that replaced it.
    pub retired_for: Option<PublicKey>,
}

/// An agency known to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgencyRecord {
    /// Keys holding the admin role (an agency is never left with none).
    pub admins: u32,
}

/// An aid programme and its running totals, all in minor units of `unit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Programme {
    /// The agency that opened it.
    pub agency: Name,
    /// Commodity or currency.
    pub unit: Name,
    /// The most that may be committed (issued and not released) at once.
    pub budget: u64,
    /// Issuing opens.
    pub valid_from: TimestampMs,
    /// Issuing closes and every voucher lapses.
    pub valid_until: TimestampMs,
    /// De-duplication assistance kind.
    pub assistance: Name,
    /// De-duplication period.
    pub period: Name,
    /// Sum of all vouchers ever issued.
    pub issued: u64,
    /// Sum of all redemptions.
    pub redeemed: u64,
    /// Value returned to the budget by revocations.
    pub revoked: u64,
    /// Value returned to the budget by expiries.
    pub expired: u64,
    /// Sum of vendor settlements.
    pub settled: u64,
}

impl Programme {
    /// Value issued and not returned: what counts against the budget.
    pub fn committed(&self) -> u64 {
        self.issued - self.revoked - self.expired
    }
}

/// Where a voucher stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoucherStatus {
    /// Can be redeemed until its expiry.
    Active,
    /// Cancelled by an issuer; the remaining value went back to the programme.
    Revoked,
    /// Closed after expiry; the remaining value went back to the programme.
    Expired,
}

/// A voucher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    /// The programme it draws on.
    pub programme: Name,
    /// The beneficiary.
    pub subject: SubjectToken,
    /// The dedup token it was issued under, if any.
    pub dedup: Option<DedupToken>,
    /// Value issued.
    pub amount: u64,
    /// Value redeemed so far.
    pub redeemed: u64,
    /// Redemptions refused after this instant.
    pub expires_at: TimestampMs,
    /// Status.
    pub status: VoucherStatus,
    /// Height of the block that issued it.
    pub issued_height: u64,
}

impl Voucher {
    /// Value still redeemable (ignoring expiry).
    pub fn remaining(&self) -> u64 {
        self.amount - self.redeemed
    }
}

/// What a programme owes one vendor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorAccount {
    /// Value redeemed for the vendor.
    pub redeemed: u64,
    /// Value settled (paid) to the vendor.
    pub settled: u64,
}

/// Where an attestation stands (as recorded; expiry is computed against a time when queried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationStatus {
    /// In force until it expires.
    Active,
    /// Suspended, with a reason, until reinstated.
    Suspended(ReasonCode),
    /// Withdrawn for good, with a reason.
    Revoked(ReasonCode),
}

/// An identity attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The agency of the attester.
    pub agency: Name,
    /// The attester's key.
    pub attester: PublicKey,
    /// The subject.
    pub subject: SubjectToken,
    /// The kind of claim.
    pub claim: Name,
    /// Commitment to the off-chain evidence.
    pub evidence: Commitment,
    /// When it lapses.
    pub expires_at: TimestampMs,
    /// Status as recorded.
    pub status: AttestationStatus,
}

/// A civil-registry record. Records are never overwritten; amendments are new records linking
/// to the one they correct, and the corrected record only gains a forward link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// What kind of event.
    pub kind: RegistryKind,
    /// The subjects involved (one, or two for a marriage, or from/to for a transfer).
    pub subjects: Vec<SubjectToken>,
    /// The parcel, for title records.
    pub parcel: Option<Name>,
    /// Commitment, date, jurisdiction.
    pub event: RegistryEvent,
    /// The registrar's agency.
    pub agency: Name,
    /// Height of the block that recorded it.
    pub height: u64,
    /// For an amendment: the record it corrects, and why.
    pub amends: Option<(EntryId, ReasonCode)>,
    /// The most recent amendment of this record.
    pub latest_amendment: Option<EntryId>,
    /// How many amendments link to this record.
    pub amendment_count: u32,
    /// For a marriage: the divorce or death record that dissolved it.
    pub dissolved_by: Option<EntryId>,
}

/// What the registry knows of one subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRecord {
    /// The birth record.
    pub birth: Option<EntryId>,
    /// The death record.
    pub death: Option<EntryId>,
    /// The marriage in force.
    pub marriage: Option<EntryId>,
}

/// A land title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Title {
    /// The current holder.
    pub holder: SubjectToken,
    /// The first registration.
    pub registered_by: EntryId,
    /// The latest record (registration or transfer).
    pub latest: EntryId,
    /// Number of transfers.
    pub transfers: u32,
}
