//! Warnings that a stranger can provoke at will, summarised.
//!
//! A refused connection is worth a warning, but one line per refusal lets anyone who can reach a
//! port write to the disk as fast as they can connect, tens of megabytes a minute, until the
//! disk a validator needs is full. A [`Summary`] lets the first event of each kind in an interval be logged as it
//! happens, with its detail, and holds back the rest to be logged as one line with their counts
//! when the interval ends. Under any flood a node then writes at most one line per kind and one
//! summary per interval. The counters (which count every event) stay the exact record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events of a few kinds, logged in full once per kind and interval, and counted otherwise.
#[derive(Debug)]
pub struct Summary {
    interval: Duration,
    opened: Option<Instant>,
    /// The kinds seen in this interval, with how many were held back.
    held: BTreeMap<&'static str, u64>,
}

impl Summary {
    /// A summary over intervals of `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            opened: None,
            held: BTreeMap::new(),
        }
    }

    /// Notes one event of `kind` at `now`. True when the caller should log it in full: it is
    /// the first of its kind in the interval. Call [`Summary::due`] first, so that an event
    /// after an interval ended opens a new one.
    pub fn note(&mut self, kind: &'static str, now: Instant) -> bool {
        self.opened.get_or_insert(now);
        match self.held.get_mut(kind) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                self.held.insert(kind, 0);
                true
            }
        }
    }

    /// When the interval has ended: the events held back in it, by kind (empty kinds left out),
    /// and the next interval starts with the next event. None while the interval runs.
    pub fn due(&mut self, now: Instant) -> Option<Vec<(&'static str, u64)>> {
        let opened = self.opened?;
        if now.saturating_duration_since(opened) < self.interval {
            return None;
        }
        self.opened = None;
        let held: Vec<_> = std::mem::take(&mut self.held)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        Some(held)
    }

    /// The length of an interval, for the summary line.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// A [`Summary`] that writes its own warnings, shared by everyone who meets its events (the
/// peer port's gate and the network task share one; the HTTP listener has its own).
#[derive(Debug, Clone)]
pub struct SummaryLog {
    summary: Arc<Mutex<Summary>>,
    /// What one event is, for the line that logs it in full ("refused a connection").
    one: &'static str,
    /// What the held-back ones are, for the summary line ("refused more connections").
    more: &'static str,
}

impl SummaryLog {
    /// A log of events summarised over intervals of `interval`.
    pub fn new(one: &'static str, more: &'static str, interval: Duration) -> Self {
        Self {
            summary: Arc::new(Mutex::new(Summary::new(interval))),
            one,
            more,
        }
    }

    /// Logs an event of `kind` in full if it is the first of its kind in the interval, after
    /// the summary of an interval that has ended.
    pub fn note(&self, kind: &'static str, detail: &dyn std::fmt::Display) {
        let Ok(mut s) = self.summary.lock() else {
            return;
        };
        let now = Instant::now();
        self.log_due(&mut s, now);
        if s.note(kind, now) {
            tracing::warn!(
                kind,
                error = %detail,
                "{}; more in the next {} s are summarised",
                self.one,
                s.interval().as_secs()
            );
        }
    }

    /// Logs the summary of an interval that has ended, if it held anything back: called on a
    /// timer, so a flood's last interval is reported even if nothing follows it.
    pub fn summarise(&self) {
        if let Ok(mut s) = self.summary.lock() {
            self.log_due(&mut s, Instant::now());
        }
    }

    fn log_due(&self, s: &mut Summary, now: Instant) {
        if let Some(held) = s.due(now).filter(|held| !held.is_empty()) {
            let total: u64 = held.iter().map(|(_, n)| n).sum();
            tracing::warn!(
                total,
                kinds = %counts(&held),
                "{} in the last {} s",
                self.more,
                s.interval().as_secs()
            );
        }
    }
}

/// `kind: count` pairs for a log line, in kind order.
fn counts(held: &[(&'static str, u64)]) -> String {
    held.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_kind_is_logged_and_the_rest_are_summarised_once_per_interval() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut s = Summary::new(10 * second);
        let mut logged = 0;
        // A flood: 1,000 events a second of two kinds for 75 seconds.
        let mut summaries = Vec::new();
        for ms in 0..75_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if let Some(held) = s.due(now) {
                summaries.push(held);
            }
            let kind = if ms % 2 == 0 {
                "evicted"
            } else {
                "unknown_key"
            };
            if s.note(kind, now) {
                logged += 1;
            }
        }
        if let Some(held) = s.due(t0 + 80 * second) {
            summaries.push(held);
        }
        // 8 intervals (7 whole, one of 5 s): one line per kind and one summary each.
        assert_eq!(logged, 16);
        assert_eq!(summaries.len(), 8);
        let total: u64 = summaries.iter().flatten().map(|(_, n)| n).sum();
        assert_eq!(total + logged, 75_000);
        assert_eq!(counts(&summaries[0]), "evicted: 4999, unknown_key: 4999");
    }

    #[test]
    fn a_lone_event_is_logged_and_leaves_no_summary() {
        let t0 = Instant::now();
        let mut s = Summary::new(Duration::from_secs(10));
        assert_eq!(s.due(t0), None);
        assert!(s.note("timed_out", t0));
        assert_eq!(s.due(t0 + Duration::from_secs(5)), None);
        assert_eq!(s.due(t0 + Duration::from_secs(10)), Some(Vec::new()));
        assert!(s.note("timed_out", t0 + Duration::from_secs(11)));
    }
}
