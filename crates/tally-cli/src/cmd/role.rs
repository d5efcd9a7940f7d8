//! `tally role grant|revoke`: an agency admin manages staff keys.

use crate::sign::{load_key, sign_and_submit, SignArgs};
use crate::Outcome;
use clap::Subcommand;
use tally_types::{Payload, PublicKey, Role as StaffRole};

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Give a key a role in your agency (registers the key if new).
    Grant {
        /// The staff member's public key (hex).
        #[arg(long = "to")]
        staff: PublicKey,
        /// admin, issuer, redeemer, vendor, registrar or attester.
        #[arg(long)]
        role: StaffRole,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Take a role away from a key of your agency.
    Revoke {
        /// The staff member's public key (hex).
        #[arg(long = "from")]
        staff: PublicKey,
        /// The role.
        #[arg(long)]
        role: StaffRole,
        #[command(flatten)]
        sign: SignArgs,
    },
}

pub fn run(cmd: Role) -> anyhow::Result<Outcome> {
    let (sign, payload) = match cmd {
        Role::Grant { staff, role, sign } => (sign, Payload::GrantRole { key: staff, role }),
        Role::Revoke { staff, role, sign } => (sign, Payload::RevokeRole { key: staff, role }),
    };
    sign_and_submit(&sign, &load_key(&sign)?, payload)
}
