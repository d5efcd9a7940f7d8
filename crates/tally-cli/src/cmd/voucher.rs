//! `tally voucher issue|redeem|revoke|expire|show`.

use super::{show, QueryArgs};
use crate::sign::{load_key, sign_and_submit, SignArgs};
use crate::time_arg::parse_time;
use crate::Outcome;
use clap::Subcommand;
use tally_types::{
    DedupToken, EntryId, Name, Payload, PublicKey, ReasonCode, SubjectToken, TimestampMs,
};

#[derive(Debug, Subcommand)]
pub enum Voucher {
    /// Issue a voucher to a beneficiary's subject token (issuers).
    Issue {
        /// The programme.
        #[arg(long)]
        programme: Name,
        /// The beneficiary's subject token (from `tally subject derive`).
        #[arg(long)]
        subject: SubjectToken,
        /// Value in minor units.
        #[arg(long)]
        amount: u64,
        /// Expiry: YYYY-MM-DD, +Nd/h/m/s, or @milliseconds.
        #[arg(long, value_parser = parse_time)]
        expires: TimestampMs,
        /// Refuse if this dedup token already received the programme's assistance this period.
        #[arg(long)]
        dedup: Option<DedupToken>,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Redeem part or all of a voucher for a vendor (redeemers).
    Redeem {
        /// The voucher id (the id printed when it was issued).
        #[arg(long)]
        voucher: EntryId,
        /// Value in minor units.
        #[arg(long)]
        amount: u64,
        /// The vendor's public key.
        #[arg(long)]
        vendor: PublicKey,
        /// The shop's transaction reference; each is accepted once per voucher.
        #[arg(long)]
        reference: Name,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Cancel a voucher; its remaining value returns to the programme (issuers).
    Revoke {
        /// The voucher id.
        #[arg(long)]
        voucher: EntryId,
        /// Reason code (e.g. clerical_error, fraud, duplicate, relocated).
        #[arg(long)]
        reason: ReasonCode,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Close a voucher past its expiry; its remaining value returns to the programme (issuers).
    Expire {
        /// The voucher id.
        #[arg(long)]
        voucher: EntryId,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Show a voucher's balance and status.
    Show {
        /// The voucher id.
        id: EntryId,
        #[command(flatten)]
        query: QueryArgs,
    },
}

pub fn run(cmd: Voucher) -> anyhow::Result<Outcome> {
    let (sign, payload) = match cmd {
        Voucher::Issue {
            programme,
            subject,
            amount,
            expires,
            dedup,
            sign,
        } => (
            sign,
            Payload::IssueVoucher {
                programme,
                subject,
                amount,
                expires_at: expires,
                dedup,
            },
        ),
        Voucher::Redeem {
            voucher,
            amount,
            vendor,
            reference,
            sign,
        } => (
            sign,
            Payload::RedeemVoucher {
                voucher,
                amount,
                vendor,
                reference,
            },
        ),
        Voucher::Revoke {
            voucher,
            reason,
            sign,
        } => (sign, Payload::RevokeVoucher { voucher, reason }),
        Voucher::Expire { voucher, sign } => (sign, Payload::ExpireVoucher { voucher }),
        Voucher::Show { id, query } => {
            return show(
                &query,
                &format!("/v1/vouchers/{id}"),
                &format!("voucher {id}"),
            )
        }
    };
    sign_and_submit(&sign, &load_key(&sign)?, payload)
}
