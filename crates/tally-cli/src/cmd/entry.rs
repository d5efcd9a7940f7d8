//! `tally entry status`: where a submitted entry stands.

use super::{show, QueryArgs};
use crate::Outcome;
use clap::Subcommand;
use tally_types::EntryId;

#[derive(Debug, Subcommand)]
pub enum Entry {
    /// Pending, committed (with height) or rejected (with reason).
    Status {
        /// The entry id.
        id: EntryId,
        #[command(flatten)]
        query: QueryArgs,
    },
}

pub fn run(cmd: Entry) -> anyhow::Result<Outcome> {
    let Entry::Status { id, query } = cmd;
    show(&query, &format!("/v1/entries/{id}"), &format!("entry {id}"))
}
