//! `tally programme create|show|list`.

use super::{show, QueryArgs};
use crate::sign::{load_key, sign_and_submit, SignArgs};
use crate::time_arg::parse_time;
use crate::Outcome;
use clap::Subcommand;
use tally_types::{Name, Payload, TimestampMs};

#[derive(Debug, Subcommand)]
pub enum Programme {
    /// Open an aid programme (agency admins).
    Create {
        /// Programme id, unique on the chain (e.g. food-2026-11).
        #[arg(long)]
        id: Name,
        /// Commodity or currency (e.g. USD, rice-kg).
        #[arg(long)]
        unit: Name,
        /// The most that may be outstanding at once, in minor units.
        #[arg(long)]
        budget: u64,
        /// When issuing opens: YYYY-MM-DD, +Nd/h/m/s, or @milliseconds. Default now.
        #[arg(long, value_parser = parse_time)]
        from: Option<TimestampMs>,
        /// When issuing closes and vouchers lapse (same formats).
        #[arg(long, value_parser = parse_time)]
        until: TimestampMs,
        /// Assistance kind shared across agencies for de-duplication (e.g. food-basket).
        #[arg(long)]
        assistance: Name,
        /// Assistance period shared across agencies (e.g. 2026-11).
        #[arg(long)]
        period: Name,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Show a programme's budget and totals.
    Show {
        /// Programme id.
        id: Name,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// List every programme.
    List {
        #[command(flatten)]
        query: QueryArgs,
    },
}

pub fn run(cmd: Programme) -> anyhow::Result<Outcome> {
    match cmd {
        Programme::Create {
            id,
            unit,
            budget,
            from,
            until,
            assistance,
            period,
            sign,
        } => {
            let valid_from = from.unwrap_or(TimestampMs(
                crate::time_arg::now_ms().saturating_sub(60_000),
            ));
            let payload = Payload::CreateProgramme {
                programme: id,
                unit,
                budget,
                valid_from,
                valid_until: until,
                assistance,
                period,
            };
            sign_and_submit(&sign, &load_key(&sign)?, payload)
        }
        Programme::Show { id, query } => show(
            &query,
            &format!("/v1/programmes/{id}"),
            &format!("programme {id}"),
        ),
        Programme::List { query } => show(&query, "/v1/programmes", "programmes"),
    }
}
