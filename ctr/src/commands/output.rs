//! `--format table|json` for every listing command: one shared flag and one printer, so each
//! `ls` only says how to build its rows and how to draw its (unchanged, ctr-identical) table.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use clap::{Args, ValueEnum};
use serde::Serialize;

/// How a listing is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// ctr's column-aligned table.
    #[default]
    Table,
    /// One JSON array of objects, full values (digests, labels, sizes in bytes, RFC 3339 times).
    Json,
}

/// The `--format` flag, flattened into every listing subcommand.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct ListFormat {
    /// Output format: table (ctr's) or json (an array of objects). `-q/--quiet` wins over it.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Prints `rows` as one JSON array, or calls `table` to print ctr's table.
pub fn print_rows<T: Serialize>(format: ListFormat, rows: &[T], table: impl FnOnce(&[T])) {
    match format.format {
        Format::Table => table(rows),
        Format::Json => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`bctr … | head`) is not an error worth reporting.
            let _ = serde_json::to_writer_pretty(&mut out, rows);
            let _ = writeln!(out);
        }
    }
}

/// Labels as a JSON object with sorted keys.
pub fn labels(l: &HashMap<String, String>) -> BTreeMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A protobuf timestamp as RFC 3339 (UTC, nanoseconds when present); None when unset.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.clamp(0, 999_999_999) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}
