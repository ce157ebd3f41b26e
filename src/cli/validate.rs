//! `validate`: what the file's header maps to and which rows are invalid, offline.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::format::{group, thousands, Reason};
use super::input::{error_kind, open_file};
use super::UsageError;
use crate::sources::check::{check_file, Parallel};
use crate::sources::rows::superseded_reason;

/// One header column and the field it maps to.
#[derive(Debug, Serialize)]
struct Column<'a> {
    header: &'a str,
    field: Option<&'static str>,
}

/// One row-level finding.
#[derive(Debug, Serialize)]
struct Finding {
    line: u64,
    reason: String,
}

/// The JSON form of the result.
#[derive(Debug, Serialize)]
struct Report<'a> {
    file: String,
    delimiter: String,
    columns: Vec<Column<'a>>,
    rows: u64,
    valid: usize,
    invalid: Vec<Finding>,
    invalid_by_kind: Vec<Reason>,
    superseded: Vec<Finding>,
}

/// Runs `validate`: exit 0 if every row is valid, 1 if some are not. The file is checked in
/// one streaming pass (on every core for a large file) and no row is kept.
pub fn run(path: &Path, json: bool) -> Result<ExitCode, UsageError> {
    let file = open_file(path)?;
    let check = check_file(file, Parallel::default())
        .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    let report = Report {
        file: path.display().to_string(),
        delimiter: delimiter_name(check.delimiter),
        columns: check
            .columns
            .iter()
            .map(|(header, field)| Column {
                header,
                field: field.map(|f| f.name()),
            })
            .collect(),
        rows: check.rows,
        valid: check.valid() as usize,
        invalid: check
            .invalid
            .iter()
            .map(|(line, error)| Finding {
                line: *line,
                reason: error.to_string(),
            })
            .collect(),
        invalid_by_kind: group(check.invalid.iter().map(|(_, error)| error_kind(error))),
        superseded: check
            .superseded
            .iter()
            .map(|&(line, by)| Finding {
                line,
                reason: superseded_reason(by),
            })
            .collect(),
    };
    if json {
        // A struct of strings and numbers always serializes.
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.invalid.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn delimiter_name(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "tab".into(),
        other => (other as char).to_string(),
    }
}

fn text(report: &Report<'_>) -> String {
    let mut out = format!(
        "File: {} (delimiter \"{}\")\nColumns:\n",
        report.file, report.delimiter
    );
    let width = report
        .columns
        .iter()
        .map(|c| c.header.chars().count())
        .max()
        .unwrap_or(0);
    for column in &report.columns {
        let target = match column.field {
            Some(field) => format!("-> {field}"),
            None => "(ignored: matches no field)".into(),
        };
        let pad = width - column.header.chars().count();
        out.push_str(&format!(
            "  {}{}  {target}\n",
            column.header,
            " ".repeat(pad)
        ));
    }
    out.push_str(&format!(
        "Rows: {} read, {} valid, {} invalid",
        thousands(report.rows),
        thousands(report.valid as u64),
        thousands(report.invalid.len() as u64),
    ));
    if !report.superseded.is_empty() {
        out.push_str(&format!(
            ", {} replaced by a later row for the same userName",
            thousands(report.superseded.len() as u64)
        ));
    }
    out.push('\n');
    if !report.invalid.is_empty() {
        out.push_str("Invalid rows:\n");
        for finding in &report.invalid {
            out.push_str(&format!("  line {}: {}\n", finding.line, finding.reason));
        }
    }
    if !report.superseded.is_empty() {
        out.push_str("Replaced rows (not errors):\n");
        for finding in &report.superseded {
            out.push_str(&format!("  line {}: {}\n", finding.line, finding.reason));
        }
    }
    out
}
