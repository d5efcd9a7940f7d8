//! `tally status`: a node's version, chain, height and head, and whether it is ready: it
//! exits 1 when the node is not (catching up, too few validators reachable, or stalled), so
//! scripts and monitors can act on the exit code alone.

use super::QueryArgs;
use crate::Outcome;
use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    query: QueryArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<Outcome> {
    let q = &args.query;
    let client = crate::client::NodeClient::new(&q.node);
    let Some(v) = client.get("/v1/status")? else {
        eprintln!("no status on node {}", q.node);
        return Ok(Outcome::Failed);
    };
    crate::output::emit(q.json, &v, || crate::output::human_fields(&v))?;
    // A node from before readiness existed says nothing of it: taken as ready.
    if v["ready"].as_bool() == Some(false) {
        let failed: Vec<String> = v["readiness"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["ok"].as_bool() == Some(false))
            .map(|c| {
                format!(
                    "{}: {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["detail"].as_str().unwrap_or("")
                )
            })
            .collect();
        eprintln!("node {} is not ready: {}", q.node, failed.join("; "));
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Ok)
}
