//! `tally vendor settle|show`: what a programme owes the shops that redeemed its vouchers.

use super::{show, QueryArgs};
use crate::sign::{load_key, sign_and_submit, SignArgs};
use crate::Outcome;
use clap::Subcommand;
use tally_types::{Name, Payload, PublicKey};

#[derive(Debug, Subcommand)]
pub enum Vendor {
    /// Record a payment to a vendor for its redemptions (agency admins).
    Settle {
        /// The programme.
        #[arg(long)]
        programme: Name,
        /// The vendor's public key.
        #[arg(long)]
        vendor: PublicKey,
        /// Value paid, in minor units; never more than is owed.
        #[arg(long)]
        amount: u64,
        /// The payment reference, unique per programme and vendor.
        #[arg(long)]
        reference: Name,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Show what a programme's redemptions owe a vendor.
    Show {
        /// The programme.
        #[arg(long)]
        programme: Name,
        /// The vendor's public key.
        #[arg(long)]
        vendor: PublicKey,
        #[command(flatten)]
        query: QueryArgs,
    },
}

pub fn run(cmd: Vendor) -> anyhow::Result<Outcome> {
    match cmd {
        Vendor::Settle {
            programme,
            vendor,
            amount,
            reference,
            sign,
        } => sign_and_submit(
            &sign,
            &load_key(&sign)?,
            Payload::SettleVendor {
                programme,
                vendor,
                amount,
                reference,
            },
        ),
        Vendor::Show {
            programme,
            vendor,
            query,
        } => show(
            &query,
            &format!("/v1/programmes/{programme}/vendors/{vendor}"),
            "vendor account",
        ),
    }
}
