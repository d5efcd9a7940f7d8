//! `tally status`: a node's chain, height and head.

use super::{show, QueryArgs};
use crate::Outcome;
use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    query: QueryArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<Outcome> {
    show(&args.query, "/v1/status", "status")
}
