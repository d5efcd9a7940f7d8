//! `tally`: the one command line for every person who touches the ledger.
//!
//! Machine output goes to stdout (`--json` on every command that prints data), diagnostics and
//! logs to stderr. Exit codes: 0 when all went well, 1 when something was checked and found
//! wanting (an entry rejected, a chain that fails verification), 2 when the tool itself could
//! not do its job (bad arguments, unreachable node, unreadable files).

mod client;
mod cmd;
mod outbox;
mod output;
mod sign;
mod time_arg;

use clap::Parser;
use std::process::ExitCode;

/// A node decodes, checks and drops blocks of a few hundred KiB on many threads. glibc's
/// allocator keeps such freed memory resident in per-thread arenas, which held a node at
/// several hundred MiB above its live data; mimalloc returns it. It is built without
/// transparent huge pages (the `no_thp` feature, Cargo.toml): with them, one validator that
/// committed a million entries at full speed kept 318 MiB resident at rest instead of 221.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What a command reports back to `main`.
pub enum Outcome {
    /// Everything held.
    Ok,
    /// Something was checked and failed (exit 1).
    Failed,
}

/// The error and its causes, each said once: a library error that ends its message with its
/// cause (`cannot read config x: No such file…`) is not followed by that cause again.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.ends_with(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    init_logging(cli.verbose);
    match cmd::run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", message(&e));
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,tally=info,tally_node=info,tally_network=info",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("TALLY_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
