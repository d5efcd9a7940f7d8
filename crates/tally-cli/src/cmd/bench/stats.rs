//! Figures read from the operating system and summaries of measured samples.

use super::load::RunResult;
use serde::Serialize;
use std::time::Duration;

/// Latency percentiles in milliseconds over `samples` entries.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// How many entries were measured.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// Nearest-rank percentiles; all zero without samples.
pub fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1000.0
    };
    Percentiles {
        samples: samples.len(),
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// A run in one line, for the terminal.
pub fn one_line(r: &RunResult) -> String {
    format!(
        "committed {:.0}/s (admitted {:.0}/s), latency p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms max {:.0} ms over {} entries, {} uncommitted, {} of {} accepted{}",
        r.committed_per_s,
        r.submitted_per_s,
        r.latency_ms.p50,
        r.latency_ms.p95,
        r.latency_ms.p99,
        r.latency_ms.max,
        r.latency_ms.samples,
        r.uncommitted,
        r.accepted_total,
        r.committed_total,
        r.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default(),
    )
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// User plus system CPU seconds of a process (`self` or a pid), from /proc; `None` off Linux
/// or when the process is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// A process's peak resident set size in bytes (VmHWM), from /proc.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model, from /proc/cpuinfo.
    pub cpu: Option<String>,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory in bytes, from /proc/meminfo.
    pub memory_bytes: Option<u64>,
    /// Operating system and kernel.
    pub os: String,
    /// tally's version.
    pub tally_version: &'static str,
    /// Whether this binary was built with optimisations: figures of a debug build mean little.
    pub optimised: bool,
}

impl Machine {
    /// This machine.
    pub fn describe() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        });
        let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            let kib: u64 = s
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(kib * 1024)
        });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            cpu,
            cores: tally_state::cores(),
            memory_bytes,
            os: format!("{} {kernel}", std::env::consts::OS),
            tally_version: env!("CARGO_PKG_VERSION"),
            optimised: !cfg!(debug_assertions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let p = percentiles((1..=100).map(ms).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        let one = percentiles(vec![ms(7)]);
        assert_eq!((one.p50, one.max, one.samples), (7.0, 7.0, 1));
        assert_eq!(percentiles(Vec::new()).samples, 0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert!(peak_rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
