//! Time arguments as people type them: `2026-12-31` (midnight UTC), `+30d` / `+12h` / `+90m` /
//! `+45s` from now, or a raw `@1767225600000` in milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};
use tally_types::{CivilDate, TimestampMs};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a time argument.
pub fn parse_time(s: &str) -> Result<TimestampMs, String> {
    if let Some(ms) = s.strip_prefix('@') {
        return ms
            .parse()
            .map(TimestampMs)
            .map_err(|_| format!("{s:?}: expected @ followed by milliseconds"));
    }
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected +N followed by d, h, m or s"))?;
        let unit_ms = match unit {
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            _ => return Err(format!("{s:?}: unit must be d, h, m or s")),
        };
        return Ok(TimestampMs(
            now_ms().saturating_add(n.saturating_mul(unit_ms)),
        ));
    }
    let d: CivilDate = s.parse().map_err(|e| format!("{e}"))?;
    let days = d.days_since_epoch();
    if days < 0 {
        return Err(format!("{s:?} is before 1970"));
    }
    Ok(TimestampMs(days as u64 * TimestampMs::DAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_time("@5"), Ok(TimestampMs(5)));
        assert_eq!(parse_time("1970-01-02"), Ok(TimestampMs(86_400_000)));
        let t = parse_time("+1d").map(|t| t.0).unwrap_or(0);
        assert!(t > now_ms() + 86_000_000);
        assert!(parse_time("+1y").is_err());
        assert!(parse_time("tomorrow").is_err());
    }
}
