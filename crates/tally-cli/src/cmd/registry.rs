//! `tally registry birth|death|marriage|divorce|title|transfer|amend|show|subject|parcel`.

use super::{show, QueryArgs};
use crate::sign::{load_key, sign_and_submit, SignArgs};
use crate::Outcome;
use clap::{Args, Subcommand};
use tally_types::{
    CivilDate, Commitment, EntryId, Name, Payload, ReasonCode, RegistryEvent, SubjectToken,
};

/// The coarse fields every registry event carries.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Commitment to the full record kept off chain (from `tally commit`).
    #[arg(long)]
    record: Commitment,
    /// The date of the event, YYYY-MM-DD.
    #[arg(long)]
    date: CivilDate,
    /// The jurisdiction code (district or municipality), never an address.
    #[arg(long)]
    jurisdiction: Name,
}

impl EventArgs {
    fn event(self) -> RegistryEvent {
        RegistryEvent {
            record: self.record,
            date: self.date,
            jurisdiction: self.jurisdiction,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Registry {
    /// Record a birth.
    Birth {
        /// The child's subject token.
        #[arg(long)]
        subject: SubjectToken,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Record a death.
    Death {
        /// The deceased's subject token.
        #[arg(long)]
        subject: SubjectToken,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Record a marriage.
    Marriage {
        /// One spouse's subject token.
        #[arg(long)]
        spouse_a: SubjectToken,
        /// The other spouse's subject token.
        #[arg(long)]
        spouse_b: SubjectToken,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Record a divorce.
    Divorce {
        /// The marriage record's id.
        #[arg(long)]
        marriage: EntryId,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Register a land parcel's first title.
    Title {
        /// The cadastral parcel code.
        #[arg(long)]
        parcel: Name,
        /// The holder's subject token.
        #[arg(long)]
        holder: SubjectToken,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Transfer a title from its current holder.
    Transfer {
        /// The parcel code.
        #[arg(long)]
        parcel: Name,
        /// The current holder's subject token.
        #[arg(long)]
        from: SubjectToken,
        /// The new holder's subject token.
        #[arg(long)]
        to: SubjectToken,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Correct a record; the original stays and gains a link to the amendment.
    Amend {
        /// The record being corrected.
        #[arg(long)]
        original: EntryId,
        /// Reason code (e.g. clerical_error, court_order).
        #[arg(long)]
        reason: ReasonCode,
        #[command(flatten)]
        event: EventArgs,
        #[command(flatten)]
        sign: SignArgs,
    },
    /// Show a registry record.
    Show {
        /// The record id.
        id: EntryId,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Show what the registry knows of a subject (birth, death, marriage in force).
    Subject {
        /// The subject token.
        token: SubjectToken,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Show a parcel's title.
    Parcel {
        /// The parcel code.
        parcel: Name,
        #[command(flatten)]
        query: QueryArgs,
    },
}

pub fn run(cmd: Registry) -> anyhow::Result<Outcome> {
    let (sign, payload) = match cmd {
        Registry::Birth {
            subject,
            event,
            sign,
        } => (
            sign,
            Payload::RegisterBirth {
                subject,
                event: event.event(),
            },
        ),
        Registry::Death {
            subject,
            event,
            sign,
        } => (
            sign,
            Payload::RegisterDeath {
                subject,
                event: event.event(),
            },
        ),
        Registry::Marriage {
            spouse_a,
            spouse_b,
            event,
            sign,
        } => (
            sign,
            Payload::RegisterMarriage {
                spouse_a,
                spouse_b,
                event: event.event(),
            },
        ),
        Registry::Divorce {
            marriage,
            event,
            sign,
        } => (
            sign,
            Payload::RegisterDivorce {
                marriage,
                event: event.event(),
            },
        ),
        Registry::Title {
            parcel,
            holder,
            event,
            sign,
        } => (
            sign,
            Payload::RegisterTitle {
                parcel,
                holder,
                event: event.event(),
            },
        ),
        Registry::Transfer {
            parcel,
            from,
            to,
            event,
            sign,
        } => (
            sign,
            Payload::TransferTitle {
                parcel,
                from,
                to,
                event: event.event(),
            },
        ),
        Registry::Amend {
            original,
            reason,
            event,
            sign,
        } => (
            sign,
            Payload::AmendRecord {
                original,
                reason,
                event: event.event(),
            },
        ),
        Registry::Show { id, query } => {
            return show(
                &query,
                &format!("/v1/registry/{id}"),
                &format!("registry record {id}"),
            )
        }
        Registry::Subject { token, query } => {
            return show(
                &query,
                &format!("/v1/subjects/{token}"),
                "registry record for this subject",
            )
        }
        Registry::Parcel { parcel, query } => {
            return show(
                &query,
                &format!("/v1/titles/{parcel}"),
                &format!("title for {parcel}"),
            )
        }
    };
    sign_and_submit(&sign, &load_key(&sign)?, payload)
}
