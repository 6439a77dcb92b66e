//! How `pyexec keys` prints keys: aligned text tables for people, JSON objects for scripts.
//! Only [`KeyRecord`]s are printed, which hold neither the secret nor its hash; the plaintext
//! appears only in `add`'s output, passed in explicitly.

use std::io::{self, Write};

use serde::Serialize;
use time::OffsetDateTime;

use crate::keys::{ApiKey, Env, KeyRecord};

/// One key as `--json` prints it.
#[derive(Serialize)]
pub struct KeyJson<'a> {
    /// The plaintext key: only in `add`'s output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub env: Env,
    pub created_at: String,
    pub executions_limit: u64,
    pub executions_used: u64,
    pub executions_left: u64,
    pub rate_limit_per_minute: u32,
    pub fuel_limit: Option<u64>,
    pub max_sessions: Option<u32>,
    pub revoked: bool,
    pub revoked_at: Option<String>,
}

impl<'a> KeyJson<'a> {
    pub fn new(record: &'a KeyRecord) -> KeyJson<'a> {
        KeyJson {
            key: None,
            id: record.id.as_str(),
            name: &record.name,
            description: &record.description,
            env: record.env,
            created_at: rfc3339(&record.created_at),
            executions_limit: record.executions_limit,
            executions_used: record.executions_used,
            executions_left: record.executions_left(),
            rate_limit_per_minute: record.rate_limit_per_minute,
            fuel_limit: record.fuel_limit,
            max_sessions: record.max_sessions,
            revoked: record.is_revoked(),
            revoked_at: record.revoked_at.as_ref().map(rfc3339),
        }
    }

    /// The `add` output: the record plus the plaintext key.
    pub fn created(key: &'a ApiKey, record: &'a KeyRecord) -> KeyJson<'a> {
        KeyJson {
            key: Some(key.expose_secret()),
            ..KeyJson::new(record)
        }
    }
}

fn rfc3339(t: &OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// `2025-11-24 20:48:00 UTC`.
pub fn timestamp(t: &OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A user-supplied string made safe for a terminal: control characters are escaped.
pub fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

pub fn status(record: &KeyRecord) -> String {
    match &record.revoked_at {
        Some(at) => format!("revoked {}", timestamp(at)),
        None => "active".to_owned(),
    }
}

pub fn fuel(record: &KeyRecord) -> String {
    record
        .fuel_limit
        .map_or_else(|| "server default".to_owned(), |f| f.to_string())
}

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One key, field per line.
pub fn details(record: &KeyRecord) -> String {
    let rows = [
        ("ID", record.id.to_string()),
        ("Name", clean(&record.name)),
        ("Description", clean(&record.description)),
        ("Environment", record.env.to_string()),
        ("Created", timestamp(&record.created_at)),
        ("Status", status(record)),
        ("Executions used", record.executions_used.to_string()),
        ("Executions limit", record.executions_limit.to_string()),
        ("Executions left", record.executions_left().to_string()),
        (
            "Rate limit",
            format!("{} per minute", record.rate_limit_per_minute),
        ),
        ("Fuel limit", fuel(record)),
        (
            "Max sessions",
            record
                .max_sessions
                .map_or_else(|| "server default".to_owned(), |n| n.to_string()),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// Prints `value` as (pretty-printed) JSON.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

/// Writes to stdout; a closed pipe (`pyexec keys list | head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_lines() {
        let out = table(
            &["A", "LONG HEADER", "C"],
            &[
                vec!["wide cell".into(), "x".into(), String::new()],
                vec!["é".into(), "y".into(), "z".into()],
            ],
        );
        assert_eq!(
            out,
            "A          LONG HEADER  C\n\
             wide cell  x\n\
             é          y            z\n"
        );
    }

    #[test]
    fn clean_escapes_control_characters() {
        assert_eq!(clean("a\nb\u{1b}[31mc\té"), "a\\nb\\u{1b}[31mc\\té");
    }

    #[test]
    fn timestamp_is_utc_to_the_second() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
            + time::Duration::milliseconds(999);
        assert_eq!(timestamp(&t), "2023-11-14 22:13:20 UTC");
    }
}
