//! Receipts: what a field device hands a beneficiary or a shop when a voucher issue or
//! redemption commits. A receipt is an inclusion proof with a one-line-per-fact summary, small
//! enough for one QR code, and checkable by anyone holding the genesis file.
//!
//! A receipt carries no personal data. An issue names its beneficiary only by subject token
//! (and, when the issue was de-duplicated, a dedup token); a receipt withholds both by zeroing
//! their bytes in the entry it carries. The proof then holds only when the beneficiary brings
//! the tokens back: the checker puts them in place and the entry hashes to the committed leaf
//! again. A lost receipt does not carry the tokens; whoever can also read the chain can still
//! find them through the block it names, which is why node APIs stay away from the public.
//!
//! The text form is the summary lines followed by one payload line, `TALLY1:` and the receipt's
//! canonical bytes in base45 (RFC 9285). Base45 uses only the characters of a QR code's
//! alphanumeric mode, the densest mode a text can use, so the payload line is what the QR code
//! holds.

use crate::codec::{self, CodecError};
use crate::entry::Payload;
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::proof::{InclusionProof, ProofError, ProvenEntry};
use crate::token::{DedupToken, SubjectToken};
use crate::{EntryOutcome, TimestampMs};
use serde::{Deserialize, Serialize};

/// The receipt format this code writes and reads.
pub const RECEIPT_VERSION: u8 = 1;

/// What starts the payload line of a receipt's text form (and the content of its QR code).
pub const RECEIPT_PREFIX: &str = "TALLY1:";

/// The most a QR code holds in alphanumeric mode (version 40, lowest error correction). A
/// receipt whose payload line is longer cannot be printed as one code.
pub const QR_ALPHANUMERIC_MAX: usize = 4296;

/// Person tokens a receipt withholds from its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Withheld {
    /// The issue's subject token.
    pub subject: bool,
    /// The issue's dedup token.
    pub dedup: bool,
}

/// An inclusion proof of a voucher issue or redemption, with person tokens withheld.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// [`RECEIPT_VERSION`] when written.
    pub version: u8,
    /// Which tokens are zeroed in `proof.entry`.
    pub withheld: Withheld,
    /// The proof, its entry's person tokens zeroed.
    pub proof: InclusionProof,
}

/// The tokens a beneficiary brings to check a receipt of their voucher's issue.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeldTokens {
    /// Their subject token.
    pub subject: Option<SubjectToken>,
    /// Their dedup token, when the issue carried one.
    pub dedup: Option<DedupToken>,
}

/// The first check a receipt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Receipts cover voucher issues and redemptions; other entries have inclusion proofs.
    #[error("receipts cover voucher issues and redemptions, not {0} entries; use an inclusion proof (tally audit proof)")]
    Kind(&'static str),
    /// The text holds no payload line, or the line is not base45.
    #[error("not a receipt: {0}")]
    Text(String),
    /// Not the canonical encoding of a receipt.
    #[error("not a receipt: {0}")]
    Format(#[from] CodecError),
    /// Written in a format version this checker does not know.
    #[error("receipt format version {0}; this checker reads version {RECEIPT_VERSION}")]
    Version(u8),
    /// A withheld token is needed to check the entry, and was not given.
    #[error(
        "this receipt withholds the beneficiary's {0} token; the entry can only be checked with it"
    )]
    TokenNeeded(&'static str),
    /// The withheld flags do not fit the entry, or a withheld token is not zeroed.
    #[error("the receipt's withheld tokens do not match its entry")]
    Withheld,
    /// The proof inside fails a check. With tokens given, a wrong token fails here too, as an
    /// entry that no longer hashes to the committed leaf.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The summary printed beside the payload is not the one the payload proves.
    #[error("the printed summary differs from what the receipt proves: printed {printed:?}, proven {proven:?}")]
    Summary {
        /// The first printed line that differs (empty when missing).
        printed: String,
        /// The line the receipt proves there.
        proven: String,
    },
}

impl ReceiptError {
    /// A stable name for the check that failed.
    pub fn check(&self) -> &'static str {
        match self {
            ReceiptError::Kind(_) => "kind",
            ReceiptError::Text(_) | ReceiptError::Format(_) => "format",
            ReceiptError::Version(_) => "version",
            ReceiptError::TokenNeeded(_) => "token_needed",
            ReceiptError::Withheld => "withheld",
            ReceiptError::Proof(p) => p.check(),
            ReceiptError::Summary { .. } => "summary",
        }
    }
}

/// A receipt that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedReceipt {
    /// What the proof established.
    pub proven: ProvenEntry,
    /// The summary lines, recomputed from the proven entry.
    pub summary: Vec<String>,
}

const ZERO: Hash = Hash::ZERO;

impl Receipt {
    /// The receipt of a voucher issue or redemption, person tokens withheld.
    pub fn new(mut proof: InclusionProof) -> Result<Self, ReceiptError> {
        let mut withheld = Withheld::default();
        match &mut proof.entry.body.payload {
            Payload::IssueVoucher { subject, dedup, .. } => {
                *subject = SubjectToken(ZERO);
                withheld.subject = true;
                if let Some(d) = dedup {
                    *d = DedupToken(ZERO);
                    withheld.dedup = true;
                }
            }
            Payload::RedeemVoucher { .. } => {}
            other => return Err(ReceiptError::Kind(other.kind())),
        }
        Ok(Self {
            version: RECEIPT_VERSION,
            withheld,
            proof,
        })
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads the canonical bytes, refusing oversized, trailing and non-canonical ones.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        if bytes.len() > crate::proof::PROOF_BYTES_MAX {
            return Err(ProofError::TooLarge(bytes.len()).into());
        }
        Ok(codec::decode(bytes)?)
    }

    /// The payload line: what a QR code of this receipt holds.
    pub fn payload_line(&self) -> String {
        format!("{RECEIPT_PREFIX}{}", base45::encode(&self.to_bytes()))
    }

    /// The text form: summary lines, then the payload line.
    pub fn to_text(&self) -> String {
        let mut lines = self.summary();
        lines.push(self.payload_line());
        lines.join("\n") + "\n"
    }

    /// Reads the text form, or a bare payload line (from a QR code). Returns the receipt and
    /// the lines printed before the payload line.
    pub fn from_text(text: &str) -> Result<(Self, Vec<String>), ReceiptError> {
        let mut printed = Vec::new();
        let mut lines = text.lines().map(str::trim_end);
        for line in lines.by_ref() {
            if let Some(data) = line.strip_prefix(RECEIPT_PREFIX) {
                // Nothing may follow the payload: every printed line is checked against it.
                if let Some(extra) = lines.find(|l| !l.is_empty()) {
                    return Err(ReceiptError::Text(format!(
                        "a line after the payload: {extra:?}"
                    )));
                }
                let bytes = base45::decode(data).map_err(ReceiptError::Text)?;
                return Ok((Self::from_bytes(&bytes)?, printed));
            }
            if !line.is_empty() {
                printed.push(line.to_string());
            }
        }
        Err(ReceiptError::Text(format!(
            "no line starts with {RECEIPT_PREFIX}"
        )))
    }

    /// The human summary, one fact per line, computed from the entry and header alone (never
    /// from the withheld tokens), so the same lines come out of every honest checker.
    pub fn summary(&self) -> Vec<String> {
        let p = &self.proof;
        let h = &p.header;
        let outcome = match p.outcome {
            EntryOutcome::Accepted => "ACCEPTED".to_string(),
            EntryOutcome::Rejected(code) => format!("REJECTED: {code}"),
        };
        let mut lines = vec![format!(
            "tally receipt: chain {}, block {}, {}",
            h.chain_id,
            h.height,
            utc_minute(h.timestamp)
        )];
        match &p.entry.body.payload {
            Payload::IssueVoucher {
                programme,
                amount,
                expires_at,
                ..
            } => {
                lines.push(format!("voucher issued, {outcome}"));
                lines.push(format!(
                    "amount {amount} (minor units) in programme {programme}"
                ));
                lines.push(format!("expires {}", utc_minute(*expires_at)));
                lines.push("beneficiary: withheld; bring your token to check".into());
            }
            Payload::RedeemVoucher {
                voucher,
                amount,
                vendor,
                reference,
            } => {
                lines.push(format!("voucher redeemed, {outcome}"));
                lines.push(format!(
                    "amount {amount} (minor units), reference {reference}"
                ));
                lines.push(format!("voucher {voucher}"));
                lines.push(format!("vendor {vendor}"));
            }
            other => lines.push(format!("{} entry, {outcome}", other.kind())),
        }
        lines.push(format!(
            "signed by {} (sequence {})",
            p.entry.body.author, p.entry.body.sequence
        ));
        lines
    }

    /// Checks the receipt against the genesis the checker trusts. Withheld tokens must be given;
    /// `printed`, when given, are the summary lines printed beside the payload, and must be the
    /// ones the receipt proves.
    pub fn verify(
        &self,
        genesis: &Genesis,
        tokens: &HeldTokens,
        printed: Option<&[String]>,
    ) -> Result<CheckedReceipt, ReceiptError> {
        if self.version != RECEIPT_VERSION {
            return Err(ReceiptError::Version(self.version));
        }
        let mut proof = self.proof.clone();
        match &mut proof.entry.body.payload {
            Payload::IssueVoucher { subject, dedup, .. } => {
                if !self.withheld.subject
                    || subject.0 != ZERO
                    || self.withheld.dedup != dedup.is_some()
                    || dedup.is_some_and(|d| d.0 != ZERO)
                {
                    return Err(ReceiptError::Withheld);
                }
                *subject = tokens.subject.ok_or(ReceiptError::TokenNeeded("subject"))?;
                if let Some(d) = dedup {
                    *d = tokens.dedup.ok_or(ReceiptError::TokenNeeded("dedup"))?;
                }
            }
            Payload::RedeemVoucher { .. } => {
                if self.withheld != Withheld::default() {
                    return Err(ReceiptError::Withheld);
                }
            }
            other => return Err(ReceiptError::Kind(other.kind())),
        }
        let proven = proof.verify(genesis)?;
        let summary = self.summary();
        if let Some(printed) = printed {
            for i in 0..summary.len().max(printed.len()) {
                let (p, s) = (printed.get(i), summary.get(i));
                if p != s {
                    return Err(ReceiptError::Summary {
                        printed: p.cloned().unwrap_or_default(),
                        proven: s.cloned().unwrap_or_default(),
                    });
                }
            }
        }
        Ok(CheckedReceipt { proven, summary })
    }
}

/// `YYYY-MM-DD HH:MM UTC`.
fn utc_minute(t: TimestampMs) -> String {
    let minute_of_day = (t.0 % TimestampMs::DAY_MS) / 60_000;
    format!(
        "{} {:02}:{:02} UTC",
        t.date(),
        minute_of_day / 60,
        minute_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockHeader, CommitCertificate};
    use crate::entry::EntryBody;
    use crate::keys::Keypair;
    use crate::name::Name;

    fn long_name(c: char) -> Name {
        Name::new(c.to_string().repeat(40)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The receipt of a redemption with 40-character names, in a block of the default 2,000
    /// entries (audit paths of 11 hashes), certified by 5 of 7 validators, fits one QR code
    /// with room to spare.
    #[test]
    fn a_receipt_from_a_full_default_block_fits_one_qr_code() {
        let author = Keypair::from_seed_for_tests(1);
        let entry = EntryBody {
            chain_id: long_name('c'),
            author: author.public(),
            sequence: u64::MAX,
            payload: Payload::RedeemVoucher {
                voucher: Hash([7; 32]),
                amount: u64::MAX,
                vendor: Keypair::from_seed_for_tests(2).public(),
                reference: long_name('r'),
            },
        }
        .sign(&author);
        let header = BlockHeader {
            chain_id: long_name('c'),
            height: u64::MAX,
            parent: Hash::ZERO,
            timestamp: TimestampMs(u64::MAX),
            proposer: author.public(),
            entry_count: 2000,
            entries_root: Hash::ZERO,
            outcomes_root: Hash::ZERO,
            state_root: Hash::ZERO,
            validators_hash: Hash::ZERO,
        };
        let signatures = (10..15)
            .map(|s| {
                CommitCertificate::sign_vote(
                    &Keypair::from_seed_for_tests(s),
                    &header.chain_id,
                    1,
                    0,
                    &Hash::ZERO,
                )
            })
            .collect();
        let proof = InclusionProof {
            version: crate::PROOF_VERSION,
            entry,
            index: 1999,
            entry_path: vec![Hash::ZERO; 11],
            outcome: EntryOutcome::Rejected(crate::RejectCode::OverBalance),
            outcome_path: vec![Hash::ZERO; 11],
            header,
            certificate: CommitCertificate {
                height: 1,
                round: u32::MAX,
                block_hash: Hash::ZERO,
                signatures,
            },
        };
        let line = Receipt::new(proof).map(|r| r.payload_line());
        let len = line.map(|l| l.len()).unwrap_or(usize::MAX);
        assert!(len <= 2720, "payload line is {len} characters");
        assert!(len < QR_ALPHANUMERIC_MAX);
    }
}

/// Base45 (RFC 9285): two bytes to three characters of the QR alphanumeric alphabet.
pub mod base45 {
    const ALPHABET: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

    /// Encodes bytes.
    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(2) * 3);
        let mut push = |n: usize, digits: usize| {
            let mut n = n;
            for _ in 0..digits {
                out.push(ALPHABET[n % 45] as char);
                n /= 45;
            }
        };
        for pair in bytes.chunks(2) {
            match pair {
                [a, b] => push(usize::from(*a) * 256 + usize::from(*b), 3),
                [a] => push(usize::from(*a), 2),
                _ => unreachable!("chunks(2) yields one or two bytes"),
            }
        }
        out
    }

    /// Decodes, refusing characters outside the alphabet, a dangling character and groups that
    /// overflow their byte count (so every byte string has one encoding).
    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let digits: Vec<usize> = text
            .bytes()
            .map(|c| {
                ALPHABET
                    .iter()
                    .position(|a| *a == c)
                    .ok_or_else(|| format!("{:?} is not a base45 character", c as char))
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(digits.len() / 3 * 2 + 1);
        for group in digits.chunks(3) {
            match group {
                [c, d, e] => {
                    let n = c + d * 45 + e * 45 * 45;
                    let pair = u16::try_from(n)
                        .map_err(|_| format!("group value {n} is more than two bytes"))?;
                    out.extend_from_slice(&pair.to_be_bytes());
                }
                [c, d] => {
                    let n = c + d * 45;
                    out.push(
                        u8::try_from(n)
                            .map_err(|_| format!("group value {n} is more than one byte"))?,
                    );
                }
                _ => return Err("a dangling base45 character".into()),
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc_9285_examples() {
            for (plain, coded) in [
                (&b"AB"[..], "BB8"),
                (b"Hello!!", "%69 VD92EX0"),
                (b"base-45", "UJCLQE7W581"),
                (b"ietf!", "QED8WEX0"),
                (b"", ""),
            ] {
                assert_eq!(encode(plain), coded);
                assert_eq!(decode(coded).as_deref(), Ok(plain));
            }
            assert!(decode("GGW").is_err(), "65536 overflows two bytes");
            assert!(decode("ZZ").is_err(), "1610 overflows one byte");
            assert!(decode("A").is_err());
            assert!(decode("bb8").is_err(), "lower case is not in the alphabet");
        }

        #[test]
        fn every_two_byte_value_round_trips() {
            for n in 0..=u16::MAX {
                let b = n.to_be_bytes();
                assert_eq!(decode(&encode(&b)).as_deref(), Ok(&b[..]));
            }
        }
    }
}
