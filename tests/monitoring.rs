//! What an operator's monitoring reads from a real node process: `/healthz`, `/readyz`,
//! `/metrics` (in both text formats, the classic one checked by promtool from Debian's
//! prometheus package, which `cargo xtask test` installs), the version and readiness in
//! `/v1/status`, and the alert rules shipped in node-config/ (`promtool check rules`).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tally_types::{Keypair, Payload, Role};

/// promtool's verdict on `input` for `args`: its exit status and what it printed.
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; `cargo xtask test` installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The samples of a page in the classic text format, by name with labels.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The metric names a rules file or dashboard uses: words that start `tally_` or `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tally_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

fn grant(admin: &Keypair, sequence: u64, seed: u64) -> tally_types::SignedEntry {
    sign(
        admin,
        CHAIN_ID,
        sequence,
        Payload::GrantRole {
            key: Keypair::from_seed_for_tests(90_000 + seed).public(),
            role: Role::Redeemer,
        },
    )
}

#[test]
fn a_node_serves_health_readiness_and_metrics_that_promtool_accepts() {
    let net = Devnet::start();
    let api = net.api();

    let health = api.get("/healthz").expect("healthz");
    assert_eq!(health["status"], "alive", "{health}");
    let status = api.status();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"), "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["consensus"]["catching_up"], false, "{status}");

    // Five entries admitted and committed, one refused for a sequence number already used,
    // one from a key nobody registered.
    let admin = net.keypair("admin");
    let first = api.next_sequence(&admin.public());
    let mut ids = Vec::new();
    for k in 0..5 {
        let out = api.submit_bytes(&grant(&admin, first + k, k));
        assert_eq!(out.status, 202, "{}", out.json);
        ids.push(out.json["id"].as_str().expect("id").to_string());
    }
    for id in &ids {
        assert_eq!(
            api.wait_entry(id, Duration::from_secs(20))["status"],
            "committed"
        );
    }
    let used = api.submit_bytes(&grant(&admin, first, 99));
    assert_eq!(used.error_code(), "stale_sequence", "{}", used.json);
    let stranger = api.submit_bytes(&grant(&Keypair::from_seed_for_tests(4_242), 0, 98));
    assert_eq!(stranger.error_code(), "unknown_author", "{}", stranger.json);

    let (code, ready) = api.get_text("/readyz", "application/json");
    assert_eq!(code, 200, "{ready}");

    let (code, page) = api.get_text("/metrics", "text/plain");
    assert_eq!(code, 200);
    let (ok, said) = promtool(&["check", "metrics"], &page);
    assert!(ok, "promtool check metrics: {said}\n{page}");
    let s = samples(&page);
    let at = |name: &str| -> f64 {
        *s.get(name)
            .unwrap_or_else(|| panic!("no sample {name} in\n{page}"))
    };
    assert!(at("tally_entries_admitted_total") >= 5.0);
    assert_eq!(
        at(r#"tally_entries_refused_total{code="stale_sequence"}"#),
        1.0
    );
    assert_eq!(
        at(r#"tally_entries_refused_total{code="unknown_author"}"#),
        1.0
    );
    assert!(at("tally_entries_committed_total") >= 5.0);
    // Each of the five entries admitted here was observed once, when its block committed,
    // and each waited well under a minute.
    assert_eq!(at("tally_commit_latency_seconds_count"), 5.0);
    assert_eq!(at(r#"tally_commit_latency_seconds_bucket{le="60.0"}"#), 5.0);
    assert!(at("tally_commit_latency_seconds_sum") > 0.0);
    assert!(at("tally_chain_height") >= 1.0);
    assert_eq!(at("tally_ready"), 1.0);
    assert_eq!(at("tally_catching_up"), 0.0);
    assert!(at("tally_signature_verifications_total") >= 5.0);
    let version = format!(
        r#"tally_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(at(&version), 1.0);
    assert!(at("process_resident_memory_bytes") > 1e6);
    assert!(at("process_open_fds") > 0.0);
    assert!(at("tally_storage_disk_bytes") > 0.0);
    assert!(s.contains_key(r#"tally_storage_table_bytes{column_family="blocks"}"#));

    // Every metric the shipped alert rules and dashboard use is one the node serves.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node-config");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).expect("node-config file");
        let names = metric_names(&text);
        assert!(names.len() >= 10, "{file}: {names:?}");
        for name in names {
            let typed = page.lines().any(|l| {
                l.strip_prefix("# TYPE ")
                    .is_some_and(|t| t.split(' ').next() == Some(name.as_str()))
            });
            assert!(
                typed
                    || s.keys()
                        .any(|k| k == &name || k.starts_with(&format!("{name}{{"))),
                "{file} uses {name}, which the node does not serve"
            );
        }
    }

    // A scraper that asks for OpenMetrics gets it.
    let (code, open) = api.get_text(
        "/metrics",
        "application/openmetrics-text; version=1.0.0, text/plain; q=0.5",
    );
    assert_eq!(code, 200);
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE tally_entries_admitted counter"),
        "{open}"
    );
}

#[test]
fn the_alert_rules_in_node_config_pass_promtool() {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node-config/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool runs (Debian's prometheus package; `cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
