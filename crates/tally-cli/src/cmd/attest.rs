//! `tally attest new|revoke|suspend|reinstate|show`.

use super::{show, QueryArgs};
use crate::sign::{load_key, sign_and_submit, SignArgs};
use crate::time_arg::parse_time;
use crate::Outcome;
use clap::Subcommand;
use tally_types::{Commitment, EntryId, Name, Payload, ReasonCode, SubjectToken, TimestampMs};

#[derive(Debug, Subcommand)]
pub enum Attest {
    /// Attest a claim about a subject (attesters).
    New {
        /// The subject token.
        #[arg(long)]
        subject: SubjectToken,
        /// The kind of claim (e.g. refugee-status).
        #[arg(long)]
        claim: Name,
        /// Commitment to the evidence kept off chain (from `tally commit`).
        #[arg(long)]
        evidence: Commitment,
        /// Expiry: YYYY-MM-DD, +Nd/h/m/s, or @milliseconds.
        #[arg(long, value_parser = parse_time)]
        expires: TimestampMs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Withdraw an attestation for good.
    Revoke {
        /// The attestation id.
        #[arg(long)]
        id: EntryId,
        /// Reason code.
        #[arg(long)]
        reason: ReasonCode,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Suspend an attestation until reinstated.
    Suspend {
        /// The attestation id.
        #[arg(long)]
        id: EntryId,
        /// Reason code.
        #[arg(long)]
        reason: ReasonCode,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Lift a suspension.
    Reinstate {
        /// The attestation id.
        #[arg(long)]
        id: EntryId,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Show an attestation and its current status.
    Show {
        /// The attestation id.
        id: EntryId,
        #[command(flatten)]
        query: QueryArgs,
    },
}

pub fn run(cmd: Attest) -> anyhow::Result<Outcome> {
    let (sign, payload) = match cmd {
        Attest::New {
            subject,
            claim,
            evidence,
            expires,
            sign,
        } => (
            sign,
            Payload::Attest {
                subject,
                claim,
                evidence,
                expires_at: expires,
            },
        ),
        Attest::Revoke { id, reason, sign } => (
            sign,
            Payload::RevokeAttestation {
                attestation: id,
                reason,
            },
        ),
        Attest::Suspend { id, reason, sign } => (
            sign,
            Payload::SuspendAttestation {
                attestation: id,
                reason,
            },
        ),
        Attest::Reinstate { id, sign } => (sign, Payload::ReinstateAttestation { attestation: id }),
        Attest::Show { id, query } => {
            return show(
                &query,
                &format!("/v1/attestations/{id}"),
                &format!("attestation {id}"),
            )
        }
    };
    sign_and_submit(&sign, &load_key(&sign)?, payload)
}
