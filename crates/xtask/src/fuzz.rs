//! `cargo xtask fuzz`: a fuzzing campaign under AFL++ over every target of the tally-fuzz crate,
//! and its report (inputs tried, coverage, crashes). See docs/fuzzing.md.

use crate::{cargo, repo_root, run, setup, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What a campaign is asked for.
struct Campaign {
    /// How long each target runs, in seconds.
    seconds: u64,
    /// Targets run at once (AFL++ uses one core each).
    jobs: usize,
    /// The targets, by name.
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Campaign> {
    let mut seconds = 600;
    let mut jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--seconds" => {
                seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--hours" => {
                let h: f64 = value("--hours")?
                    .parse()
                    .map_err(|e| format!("--hours: {e}"))?;
                seconds = (h * 3600.0) as u64;
            }
            "--jobs" => {
                jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?
            }
            "--targets" => targets = value("--targets")?.split(',').map(String::from).collect(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if targets.is_empty() {
        let corpus = repo_root().join("fuzz/corpus");
        let mut found: Vec<String> = std::fs::read_dir(&corpus)
            .map_err(|e| format!("{}: {e}", corpus.display()))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        targets = found;
    }
    Ok(Campaign {
        seconds: seconds.max(1),
        jobs: jobs.max(1),
        targets,
    })
}

/// Installs cargo-afl (which builds AFL++ from the source it ships) when missing.
fn ensure_afl() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["afl", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("xtask: installing cargo-afl from crates.io (builds AFL++: a few minutes)");
        run(Command::new("cargo").args(["install", "cargo-afl", "--locked"]))?;
    }
    // Builds AFL++'s runtime for this compiler when it is not built yet; says so otherwise.
    let out = Command::new("cargo")
        .args(["afl", "config", "--build"])
        .output()
        .map_err(|e| format!("cannot run cargo afl config: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !said.contains("already built") {
        return Err(format!("cargo afl config --build failed:\n{said}"));
    }
    Ok(())
}

/// One target's figures, from AFL++'s `fuzzer_stats`.
struct Figures {
    target: String,
    execs: u64,
    edges: u64,
    total_edges: u64,
    crashes: u64,
    hangs: u64,
    corpus: u64,
    seconds: u64,
}

fn figures(target: &str, out: &Path) -> Result<Figures> {
    let path = out.join("default/fuzzer_stats");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
    };
    Ok(Figures {
        target: target.to_string(),
        execs: field("execs_done"),
        edges: field("edges_found"),
        total_edges: field("total_edges"),
        crashes: field("saved_crashes"),
        hangs: field("saved_hangs"),
        corpus: field("corpus_count"),
        seconds: field("run_time"),
    })
}

/// Builds the harness, runs each target for the asked time, `jobs` at a time, and prints what
/// they found. Fails when any target crashed, naming where the inputs are.
pub fn fuzz(args: &[String]) -> Result<()> {
    let campaign = parse(args)?;
    setup()?;
    ensure_afl()?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // Its own target directory: the harness is built with AFL++'s instrumentation, and the
    // suite's build must not be.
    let target_dir = home.join(".cache/tally-fuzz-target");
    eprintln!("xtask: building the AFL++ harness (instrumented, release)");
    run(cargo(&target_dir).args([
        "afl",
        "build",
        "--release",
        "-p",
        "tally-fuzz",
        "--features",
        "afl",
        "--bin",
        "tally-fuzz-afl",
    ]))?;
    let harness = target_dir.join("release/tally-fuzz-afl");
    let outputs = home.join(".cache/tally-fuzz");
    let corpus = repo_root().join("fuzz/corpus");
    eprintln!(
        "xtask: fuzzing {} targets for {} s each, {} at a time; AFL++'s state goes to {}",
        campaign.targets.len(),
        campaign.seconds,
        campaign.jobs,
        outputs.display()
    );
    let mut report = Vec::new();
    for batch in campaign.targets.chunks(campaign.jobs) {
        let mut running: Vec<(String, PathBuf, Child)> = Vec::new();
        for target in batch {
            let out = outputs.join(target);
            if out.exists() {
                std::fs::remove_dir_all(&out)
                    .map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
            }
            let log = std::fs::File::create(outputs.join(format!("{target}.log")))
                .or_else(|_| {
                    std::fs::create_dir_all(&outputs)?;
                    std::fs::File::create(outputs.join(format!("{target}.log")))
                })
                .map_err(|e| format!("cannot write to {}: {e}", outputs.display()))?;
            let child = Command::new("cargo")
                .args(["afl", "fuzz", "-i"])
                .arg(corpus.join(target))
                .arg("-o")
                .arg(&out)
                .args(["-V", &campaign.seconds.to_string(), "--"])
                .arg(&harness)
                .arg(target)
                // A container's core pattern and CPU governor are not ours to change; AFL++
                // still sees every crash through the harness's abort.
                .env("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1")
                .env("AFL_SKIP_CPUFREQ", "1")
                .env("AFL_NO_UI", "1")
                .stdout(Stdio::from(
                    log.try_clone()
                        .map_err(|e| format!("cannot write the log: {e}"))?,
                ))
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("cannot run cargo afl fuzz: {e}"))?;
            running.push((target.clone(), out, child));
        }
        for (target, out, mut child) in running {
            let status = child
                .wait()
                .map_err(|e| format!("waiting for {target}: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "afl-fuzz on {target} failed with {status}; see {}",
                    outputs.join(format!("{target}.log")).display()
                ));
            }
            report.push(figures(&target, &out)?);
        }
    }
    println!(
        "\n{:<12} {:>14} {:>10} {:>9} {:>18} {:>8} {:>6} {:>7}",
        "target",
        "inputs tried",
        "per s",
        "seconds",
        "edges (coverage)",
        "corpus",
        "hangs",
        "crashes"
    );
    let mut total = 0;
    for f in &report {
        total += f.execs;
        let share = if f.total_edges == 0 {
            0.0
        } else {
            100.0 * f.edges as f64 / f.total_edges as f64
        };
        println!(
            "{:<12} {:>14} {:>10} {:>9} {:>9}/{:<5} {:>2.0}% {:>8} {:>6} {:>7}",
            f.target,
            f.execs,
            f.execs / f.seconds.max(1),
            f.seconds,
            f.edges,
            f.total_edges,
            share,
            f.corpus,
            f.hangs,
            f.crashes
        );
    }
    println!("{:<12} {total:>14}", "total");
    let crashed: Vec<&Figures> = report.iter().filter(|f| f.crashes > 0).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    for f in &crashed {
        eprintln!(
            "xtask: {} crashed on {} inputs: {}",
            f.target,
            f.crashes,
            outputs.join(&f.target).join("default/crashes").display()
        );
    }
    Err("crashes found: fix them, then add each input to fuzz/corpus/<target>/".into())
}
