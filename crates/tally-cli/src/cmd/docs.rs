//! `tally completions` and `tally man`: the command tree, as a shell completion script and
//! as man pages, made from the same definitions the parser uses, so they cannot drift.

use crate::Outcome;
use anyhow::Context;
use clap::CommandFactory;
use std::path::PathBuf;

/// Options of `tally completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Options of `tally man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write `tally.1`, `tally-node.1`, `tally-node-run.1`, … into (created if
    /// missing); for example /usr/local/share/man/man1.
    #[arg(long)]
    out: PathBuf,
}

pub fn completions(a: CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "tally", &mut std::io::stdout());
    Ok(Outcome::Ok)
}

pub fn man(a: ManArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &a.out)
        .with_context(|| format!("cannot write man pages into {}", a.out.display()))?;
    let pages = std::fs::read_dir(&a.out)
        .with_context(|| format!("cannot read {}", a.out.display()))?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "1"))
        })
        .count();
    println!(
        "{pages} man pages written to {}; `man -l {}/tally.1` shows the first, and `man tally` \
         does once the directory is on MANPATH",
        a.out.display(),
        a.out.display()
    );
    Ok(Outcome::Ok)
}
