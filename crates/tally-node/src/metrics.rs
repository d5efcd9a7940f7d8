//! What an operator's monitoring reads: whether the node is alive (`/healthz`), whether it is
//! fit to take traffic and count towards the network (`/readyz`), and its figures in
//! Prometheus's text format (`/metrics`).
//!
//! Every figure is read when it is scraped, from what the node keeps anyway (the engine's
//! published status, the counters of the peer and HTTP listeners, RocksDB's properties,
//! `/proc/self`), so keeping them costs nothing between scrapes.

use crate::engine::{ConsensusStatus, Role, LATENCY_BOUNDS_MS};
use crate::{NodeError, Shared};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Error as FmtError;
use tally_consensus::ValidatorSet;
use tally_state::Rejection;
use tally_types::PublicKey;

/// A node with entries ready to order that has committed nothing for this long is not ready:
/// its network is stalled, or it cannot reach the others. An idle network commits nothing
/// and stays ready, and so does one whose waiting entries each wait for an earlier sequence
/// number of their author.
pub const READY_COMMIT_MS: u64 = 30_000;

/// The node's version, as `/v1/status`, `/metrics` and `tally status` show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the API said to entries submitted to it since the node started.
#[derive(Debug, Default, Clone)]
pub struct Admissions {
    /// Admitted into the mempool.
    pub admitted: u64,
    /// Refused, by code.
    pub refused: BTreeMap<&'static str, u64>,
}

impl Admissions {
    /// Counts one answer.
    pub fn count(&mut self, answer: &Result<(), Rejection>) {
        match answer {
            Ok(()) => self.admitted += 1,
            Err(r) => *self.refused.entry(r.code.as_str()).or_default() += 1,
        }
    }
}

/// One condition of readiness, with what was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `running`, `synced`, `peers` or `committing`.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was seen, for a person.
    pub detail: String,
}

/// Whether the node is fit to take traffic: every check holds.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// All checks hold.
    pub ready: bool,
    /// Each condition.
    pub checks: Vec<Check>,
}

/// What readiness is judged from, gathered under the engine's lock once.
struct Seen {
    status: Option<ConsensusStatus>,
    head: u64,
    mempool: usize,
    /// Whether a waiting entry could go into the next block (not one behind a gap in its
    /// author's sequence numbers).
    orderable: bool,
    validators: Vec<PublicKey>,
    connected: Option<Vec<PublicKey>>,
}

fn seen(shared: &Shared) -> Result<Seen, NodeError> {
    let (head, mempool, orderable, validators) = {
        let engine = shared.engine()?;
        let l = engine.ledger();
        (
            l.head().height,
            l.mempool().len(),
            engine.has_orderable_work()?,
            engine.validators().to_vec(),
        )
    };
    Ok(Seen {
        status: shared.consensus_status(),
        head,
        mempool,
        orderable,
        validators,
        connected: shared.network_status().map(|(peers, _)| peers),
    })
}

/// Judges readiness: the node runs; it is not catching up; it reaches enough validators to
/// take part (a validator: with itself, a quorum of the set; an observer: one validator);
/// and, with entries ready to order, it has committed within [`READY_COMMIT_MS`].
pub fn readiness(shared: &Shared) -> Readiness {
    match seen(shared) {
        Ok(seen) => judge(shared, &seen),
        Err(e) => Readiness {
            ready: false,
            checks: vec![Check {
                name: "running",
                ok: false,
                detail: e.to_string(),
            }],
        },
    }
}

fn judge(shared: &Shared, seen: &Seen) -> Readiness {
    let mut checks = vec![Check {
        name: "running",
        ok: true,
        detail: format!("tally {VERSION}"),
    }];
    let Some(status) = &seen.status else {
        checks[0].ok = false;
        checks[0].detail = "the consensus status is unreadable: the node has halted".into();
        return Readiness {
            ready: false,
            checks,
        };
    };
    checks.push(Check {
        name: "synced",
        ok: !status.catching_up,
        detail: if status.catching_up {
            format!(
                "catching up: chain at height {}, validators seen at {}",
                seen.head, status.peers_at
            )
        } else {
            format!("chain at height {}", seen.head)
        },
    });
    let set = ValidatorSet::new(&seen.validators).ok();
    let connected_validators = seen.connected.as_ref().map(|peers| {
        peers
            .iter()
            .filter(|p| seen.validators.contains(p) && **p != shared.node_key)
            .count()
    });
    let (ok, detail) = match (status.role, connected_validators, &set) {
        (_, None, _) => (true, "no network: a lone node".to_string()),
        (Role::Validator, Some(n), Some(set)) => (
            n + 1 >= set.quorum(),
            format!(
                "{} of {} validators reachable with this one; {} needed",
                n + 1,
                set.len(),
                set.quorum()
            ),
        ),
        (Role::Observer, Some(n), _) => (
            n >= 1,
            format!("{n} of {} validators connected", seen.validators.len()),
        ),
        (Role::Validator, Some(_), None) => (false, "no validator set".to_string()),
    };
    checks.push(Check {
        name: "peers",
        ok,
        detail,
    });
    let stalled = seen.orderable && status.since_commit_ms > READY_COMMIT_MS;
    checks.push(Check {
        name: "committing",
        ok: !stalled,
        detail: format!(
            "{} entries waiting{}; last commit {} s ago",
            seen.mempool,
            match (seen.mempool, seen.orderable) {
                (0, _) | (_, true) => "",
                _ => ", none of them orderable yet (each waits for an earlier sequence number)",
            },
            status.since_commit_ms / 1000
        ),
    });
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// Every figure, gathered at one scrape and encoded by [`Collector::encode`].
#[derive(Debug)]
struct Scrape {
    status: Option<ConsensusStatus>,
    ready: bool,
    head: u64,
    mempool: usize,
    orderable: bool,
    mempool_max: usize,
    validators: usize,
    /// Peers and validators connected (none for a node without a network).
    connected: (usize, usize),
    /// The peer listener's counters (all zero without a network).
    network: tally_network::CountersSnapshot,
    http: crate::serve::CountersSnapshot,
    admissions: Admissions,
    verifications: u64,
    column_families: Vec<(&'static str, u64, u64)>,
    disk_bytes: u64,
    process: Option<Process>,
}

/// The `/metrics` page, in the text format Prometheus and OpenMetrics read.
pub fn render(shared: &Shared) -> Result<String, NodeError> {
    let seen = seen(shared)?;
    let ready = judge(shared, &seen).ready;
    let connected = seen.connected.as_ref().map_or((0, 0), |peers| {
        let validators = peers.iter().filter(|p| seen.validators.contains(p)).count();
        (peers.len(), validators)
    });
    let scrape = Scrape {
        status: seen.status,
        ready,
        head: seen.head,
        mempool: seen.mempool,
        orderable: seen.orderable,
        mempool_max: shared.occupancy.max(),
        validators: seen.validators.len(),
        connected,
        network: shared
            .network_status()
            .map(|(_, counters)| counters)
            .unwrap_or_default(),
        http: shared.http_status(),
        admissions: shared.admissions(),
        verifications: tally_types::verifications(),
        column_families: shared.store.column_family_sizes()?,
        disk_bytes: shared.store.disk_bytes(),
        process: Process::read(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|e| NodeError::Corrupt(format!("metrics do not encode: {e}")))?;
    Ok(out)
}

/// The same page in Prometheus's classic text format (0.0.4), for scrapers and tools that do
/// not ask for OpenMetrics (`promtool check metrics` among them). For what this node writes
/// the two differ in three ways only: a counter's family is named with its `_total` suffix,
/// and there are no `# UNIT` or `# EOF` lines.
pub fn classic_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match described {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                let after = &rest[name.len()..];
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push_str(after);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Writes one metric family without labels.
fn one(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), FmtError> {
    metric.encode(e.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
    one(e, name, help, None, &ConstGauge::new(v as i64))
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
    one(e, name, help, None, &ConstCounter::new(v))
}

/// Writes a counter family with one label: one sample per value.
fn counters<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), FmtError> {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let e = &mut e;
        {
            // A gauge fixed at 1 rather than OpenMetrics' info type, which Prometheus's own
            // text format (and promtool) does not know.
            let labels = [("version", VERSION)];
            let mut info = e.encode_descriptor(
                "tally_build_info",
                "the tally release this node runs, in its label",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1).encode(info.encode_family(&labels)?)?;
        }
        gauge(
            e,
            "tally_ready",
            "1 when /readyz answers 200",
            self.ready as u64,
        )?;
        gauge(
            e,
            "tally_chain_height",
            "height of the last block committed here",
            self.head,
        )?;
        if let Some(s) = &self.status {
            gauge(
                e,
                "tally_consensus_height",
                "the height being decided",
                s.height,
            )?;
            gauge(
                e,
                "tally_consensus_round",
                "the round of that height",
                s.round as u64,
            )?;
            gauge(
                e,
                "tally_peers_height",
                "the highest height f+1 validators were seen at",
                s.peers_at,
            )?;
            gauge(
                e,
                "tally_catching_up",
                "1 while the node fetches blocks the others decided",
                s.catching_up as u64,
            )?;
            gauge(
                e,
                "tally_validator",
                "1 when this node votes (its key is in the validator set), 0 for an observer",
                (s.role == Role::Validator) as u64,
            )?;
            gauge(
                e,
                "tally_voting",
                "1 once this validator takes part in consensus",
                s.voting as u64,
            )?;
            one(
                e,
                "tally_since_commit",
                "time since this node last committed a block",
                Some(&Unit::Seconds),
                &ConstGauge::new(s.since_commit_ms as f64 / 1000.0),
            )?;
            {
                let h = &s.commit_latency;
                let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MS
                    .iter()
                    .zip(&h.buckets)
                    .map(|(&bound, &n)| (bound as f64 / 1000.0, n))
                    .collect();
                buckets.push((f64::MAX, h.buckets[LATENCY_BOUNDS_MS.len()]));
                let mut family = e.encode_descriptor(
                    "tally_commit_latency",
                    "time from an entry's admission at this node to the commit of its block",
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                )?;
                family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum_ms as f64 / 1000.0,
                    h.count,
                    &buckets,
                    None,
                )?;
            }
            counter(
                e,
                "tally_entries_committed",
                "entries committed in blocks since the node started, rejected ones included",
                s.entries_committed,
            )?;
            counters(
                e,
                "tally_entries_rejected",
                "entries a block recorded as rejected, by code",
                "code",
                s.entries_rejected.iter().map(|(c, n)| (*c, *n)),
            )?;
            let m = &s.messages;
            counters(
                e,
                "tally_consensus_messages",
                "consensus messages received, by what became of them",
                "outcome",
                [
                    ("accepted", m.accepted),
                    ("duplicate", m.duplicate),
                    ("not_a_validator", m.not_a_validator),
                    ("bad_signature", m.bad_signature),
                    ("invalid_proposal", m.invalid_proposal),
                    ("stale_height", m.stale_height),
                    ("future_height", m.future_height),
                    ("future_round", m.future_round),
                    ("equivocation", m.equivocation),
                ],
            )?;
            gauge(
                e,
                "tally_evidence",
                "pieces of equivocation evidence held",
                s.evidence,
            )?;
            counter(
                e,
                "tally_synced_blocks",
                "blocks committed from block sync or pushes",
                s.synced_blocks,
            )?;
            counter(
                e,
                "tally_rejected_blocks",
                "blocks from sync that failed verification",
                s.rejected_blocks,
            )?;
            counter(
                e,
                "tally_entries_fetched",
                "entries of proposed blocks this validator had to ask for",
                s.entries_fetched,
            )?;
        }
        gauge(
            e,
            "tally_mempool_entries",
            "entries waiting for a block",
            self.mempool as u64,
        )?;
        gauge(
            e,
            "tally_work_waiting",
            "1 when a waiting entry could go into the next block (not one behind a gap in its author's sequence numbers)",
            self.orderable as u64,
        )?;
        gauge(
            e,
            "tally_mempool_entries_max",
            "the mempool's limit (mempool.entries_max)",
            self.mempool_max as u64,
        )?;
        counter(
            e,
            "tally_entries_admitted",
            "entries the API admitted into the mempool",
            self.admissions.admitted,
        )?;
        counters(
            e,
            "tally_entries_refused",
            "entries the API refused, by code",
            "code",
            self.admissions.refused.iter().map(|(c, n)| (*c, *n)),
        )?;
        counter(
            e,
            "tally_signature_verifications",
            "ed25519 signature checks done by this process",
            self.verifications,
        )?;
        gauge(
            e,
            "tally_validators",
            "validators in the current set",
            self.validators as u64,
        )?;
        {
            let (peers, validators) = self.connected;
            gauge(
                e,
                "tally_peers_connected",
                "peers connected, observers included",
                peers as u64,
            )?;
            gauge(
                e,
                "tally_validators_connected",
                "validators of the current set connected to this node",
                validators as u64,
            )?;
        }
        {
            let n = &self.network;
            counter(
                e,
                "tally_peer_requests_received",
                "requests received from allowed peers",
                n.received,
            )?;
            counters(
                e,
                "tally_peer_dropped",
                "peer requests and sends dropped, by reason",
                "reason",
                [
                    ("wrong_chain", n.wrong_chain),
                    ("malformed_or_oversized", n.malformed_or_oversized),
                    ("inbound_queue_full", n.inbound_queue_full),
                    ("outbound_queue_full", n.outbound_queue_full),
                    ("send_failed", n.send_failures),
                ],
            )?;
            counters(
                e,
                "tally_peer_connections_refused",
                "incoming peer connections refused or dropped before they joined, by reason",
                "reason",
                [
                    ("unknown_key", n.refused_unknown_key),
                    ("over_limit", n.refused_over_limit),
                    ("handshake_evicted", n.handshakes_evicted),
                    ("handshake_timed_out", n.handshakes_timed_out),
                    ("handshake_failed", n.handshakes_failed),
                ],
            )?;
        }
        let h = &self.http;
        gauge(
            e,
            "tally_http_connections_open",
            "API connections open",
            h.open,
        )?;
        counter(
            e,
            "tally_http_connections_accepted",
            "API connections accepted",
            h.accepted,
        )?;
        counters(
            e,
            "tally_http_connections_closed",
            "API connections refused or cut by the node, by reason",
            "reason",
            [
                ("over_limit", h.refused_over_limit),
                ("header_timeout", h.header_timeouts),
                ("body_timeout", h.body_timeouts),
                ("write_timeout", h.write_timeouts),
                ("shutdown", h.cut_at_shutdown),
            ],
        )?;
        counter(
            e,
            "tally_http_accept_errors",
            "failures to accept an API connection (for example, out of file descriptors)",
            h.accept_errors,
        )?;
        for (name, help, pick) in [
            (
                "tally_storage_table",
                "bytes of RocksDB table files, by column family",
                0,
            ),
            (
                "tally_storage_memtable",
                "bytes of RocksDB memtables, by column family",
                1,
            ),
        ] {
            let unit = Unit::Bytes;
            let mut family = e.encode_descriptor(name, help, Some(&unit), MetricType::Gauge)?;
            for (cf, tables, memtables) in &self.column_families {
                let labels = [("column_family", *cf)];
                let v = if pick == 0 { *tables } else { *memtables };
                ConstGauge::new(v as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        one(
            e,
            "tally_storage_disk",
            "bytes the data directory's files take",
            Some(&Unit::Bytes),
            &ConstGauge::new(self.disk_bytes as i64),
        )?;
        if let Some(p) = &self.process {
            p.encode(e)?;
        }
        Ok(())
    }
}

/// The process's own figures, read from `/proc/self` (Linux). The names are those every
/// Prometheus client uses, so standard dashboards find them.
#[derive(Debug)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: Option<u64>,
}

impl Process {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses; the fields follow the last ')'.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        // Numbered as in proc(5), from the state (field 3), which is fields[0].
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as u64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Some(Process {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            start_time_seconds: boot as f64 + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds,
            max_fds,
        })
    }

    fn encode(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let seconds = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);
        one(
            e,
            "process_cpu",
            "user and system CPU time spent",
            seconds,
            &ConstCounter::new(self.cpu_seconds),
        )?;
        one(
            e,
            "process_resident_memory",
            "resident memory size",
            bytes,
            &ConstGauge::new(self.resident_bytes as i64),
        )?;
        one(
            e,
            "process_virtual_memory",
            "virtual memory size",
            bytes,
            &ConstGauge::new(self.virtual_bytes as i64),
        )?;
        one(
            e,
            "process_start_time",
            "start time of the process since the Unix epoch",
            seconds,
            &ConstGauge::new(self.start_time_seconds),
        )?;
        gauge(
            e,
            "process_open_fds",
            "open file descriptors",
            self.open_fds,
        )?;
        if let Some(max) = self.max_fds {
            gauge(e, "process_max_fds", "the open-file limit", max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LatencyHistogram;

    #[test]
    fn a_wait_counts_in_the_first_bucket_whose_bound_holds_it() {
        let mut h = LatencyHistogram::default();
        for ms in [0, 10, 11, 60_000, 60_001] {
            h.observe(ms);
        }
        // 0 and 10 ms are within 10 ms; 11 within 25; 60 s within the last bound; beyond it,
        // the overflow bucket.
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BOUNDS_MS.len() - 1], 1);
        assert_eq!(h.buckets[LATENCY_BOUNDS_MS.len()], 1);
        assert_eq!((h.count, h.sum_ms), (5, 120_022));
    }

    #[test]
    fn the_classic_text_names_counter_families_with_total_and_drops_units_and_eof() {
        let open = "# HELP tally_x things\n# TYPE tally_x counter\ntally_x_total 3\n\
                    # HELP tally_y_seconds a wait\n# TYPE tally_y_seconds gauge\n\
                    # UNIT tally_y_seconds seconds\ntally_y_seconds 1.5\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP tally_x_total things\n# TYPE tally_x_total counter\ntally_x_total 3\n\
             # HELP tally_y_seconds a wait\n# TYPE tally_y_seconds gauge\ntally_y_seconds 1.5\n"
        );
    }
}
