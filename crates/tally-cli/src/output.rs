//! Printing results: JSON on request, otherwise a short human form. Always to stdout.

use serde_json::Value;
use std::io::Write;

/// Prints `value` as pretty JSON, or `human` as text.
pub fn emit(json: bool, value: &Value, human: impl FnOnce() -> String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", human())?;
    }
    Ok(())
}

/// Renders a JSON object as aligned `key: value` lines for people.
pub fn human_fields(v: &Value) -> String {
    match v.as_object() {
        Some(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            map.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{k:width$}  {s}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        None => v.to_string(),
    }
}
