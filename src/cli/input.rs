//! Reading a CSV file for the CLI: header mapping, valid users (the last row per userName wins),
//! invalid and superseded rows, and their report lines. Parsing and validation are `sources`'.

use std::fs::File;
use std::path::Path;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::format::{group, Reason};
use super::runner::Feed;
use super::UsageError;
use crate::operation::Operation;
use crate::report::ReportLine;
use crate::sources::check::FileCheck;
use crate::sources::rows;
use crate::sources::stream::{read_rows, ReportSink, Rows, WholeFile};
use crate::sources::{
    fate, last_lines_by_user, CsvSource, Field, FileError, LastLines, RowError, RowFate,
};
use crate::user::User;

/// Rows read ahead of the run by the reading thread.
const READ_AHEAD: usize = 1024;

/// Opens an input file to stream it, or says which and why not.
pub fn open_file(path: &Path) -> Result<File, UsageError> {
    let file =
        File::open(path).map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    // A directory opens on Unix; reading it would fail with a less useful message.
    match file.metadata() {
        Ok(meta) if meta.is_dir() => Err(UsageError(format!(
            "cannot read {}: it is a directory",
            path.display()
        ))),
        _ => Ok(file),
    }
}

/// A row that cannot be provisioned.
#[derive(Debug, Clone)]
pub struct InvalidRow {
    /// Line of the record in the file (header is line 1).
    pub line: u64,
    /// What is wrong with it.
    pub error: RowError,
}

/// A valid row replaced by a later row for the same userName.
#[derive(Debug, Clone)]
pub struct SupersededRow {
    /// Line of the replaced row.
    pub line: u64,
    /// Line of the row that replaces it.
    pub by: u64,
    /// The user the replaced row held.
    pub user: User,
}

/// A CSV file read and validated.
#[derive(Debug, Clone)]
pub struct Input {
    /// Where it came from (path, or the demo's sample name).
    pub source: String,
    /// Header columns with the field each maps to (None: ignored).
    pub columns: Vec<(String, Option<Field>)>,
    /// The delimiter in use.
    pub delimiter: u8,
    /// Data records read (blank lines excluded).
    pub rows: u64,
    /// One operation per userName: its last valid row, in file order.
    pub operations: Vec<Operation>,
    /// Rows that failed validation.
    pub invalid: Vec<InvalidRow>,
    /// Valid rows replaced by a later row of the same userName.
    pub superseded: Vec<SupersededRow>,
}

impl Input {
    /// Reads `data` (the whole file) in two passes: last line per userName, then the rows.
    pub fn read(data: &[u8], source: &str) -> Result<Self, FileError> {
        let last = last_lines_by_user(data)?;
        let reader = CsvSource::new(data)?;
        let columns = reader.columns().map(|(h, f)| (h.to_owned(), f)).collect();
        let delimiter = reader.delimiter();
        let mut input = Input {
            source: source.to_owned(),
            columns,
            delimiter,
            rows: 0,
            operations: Vec::new(),
            invalid: Vec::new(),
            superseded: Vec::new(),
        };
        for row in reader {
            let row = row?;
            input.rows += 1;
            let line = row.line;
            match fate(row, &last) {
                RowFate::Invalid(error) => input.invalid.push(InvalidRow { line, error }),
                RowFate::Superseded { by, user } => {
                    input.superseded.push(SupersededRow { line, by, user })
                }
                RowFate::Provision(user) => {
                    input
                        .operations
                        .push(Operation::new(user, source, Some(line)))
                }
            }
        }
        Ok(input)
    }

    /// Column headers that map to no field.
    pub fn unknown_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|(h, f)| f.is_none() && !h.is_empty())
            .map(|(h, _)| h.as_str())
            .collect()
    }

    /// Report lines for ignored columns (one line), then every invalid and superseded row.
    pub fn report_lines(&self) -> Vec<ReportLine> {
        let unknown = self.unknown_columns();
        let ignored =
            (!unknown.is_empty()).then(|| rows::ignored_columns_line(&self.source, &unknown));
        let invalid = self
            .invalid
            .iter()
            .map(|row| rows::invalid_line(&self.source, row.line, &row.error));
        let superseded = self
            .superseded
            .iter()
            .map(|row| rows::duplicate_line(&self.source, row.line, row.by, &row.user));
        ignored
            .into_iter()
            .chain(invalid)
            .chain(superseded)
            .collect()
    }
}

/// What a file holds besides its operations, for summaries and plans.
#[derive(Debug, Clone, Default)]
pub struct FileCounts {
    /// Data records read (blank lines excluded).
    pub rows: u64,
    /// Rows that failed validation.
    pub invalid: u64,
    /// Valid rows replaced by a later row for the same userName.
    pub superseded: u64,
    /// Invalid rows grouped by kind of error.
    pub invalid_kinds: Vec<Reason>,
}

impl FileCounts {
    /// The counts of a file read whole.
    pub fn of_input(input: &Input) -> Self {
        Self {
            rows: input.rows,
            invalid: input.invalid.len() as u64,
            superseded: input.superseded.len() as u64,
            invalid_kinds: group(input.invalid.iter().map(|r| error_kind(&r.error))),
        }
    }

    /// The counts of a checked file.
    pub fn of_check(check: &FileCheck) -> Self {
        Self {
            rows: check.rows,
            invalid: check.invalid.len() as u64,
            superseded: check.superseded.len() as u64,
            invalid_kinds: group(check.invalid.iter().map(|(_, e)| error_kind(e))),
        }
    }
}

/// The report lines of a streamed file's rows, kept in [`Input::report_lines`]' order: the
/// ignored columns, then the invalid rows, then the superseded ones (each in file order).
#[derive(Debug, Default)]
pub struct Findings {
    ignored: Vec<ReportLine>,
    invalid: Vec<ReportLine>,
    superseded: Vec<ReportLine>,
}

impl Findings {
    /// Every line, in order.
    pub fn into_lines(self) -> Vec<ReportLine> {
        let mut lines = self.ignored;
        lines.extend(self.invalid);
        lines.extend(self.superseded);
        lines
    }
}

impl ReportSink for Findings {
    async fn push(&mut self, line: &ReportLine) {
        let list = match line.status.as_str() {
            "ignored" => &mut self.ignored,
            "invalid" => &mut self.invalid,
            _ => &mut self.superseded,
        };
        list.push(line.clone());
    }
}

/// A checked file's operations, read (on a thread of their own) as the run takes them.
pub struct Pending<'f> {
    rows: Rows<'f, Findings>,
    reading: Option<JoinHandle<()>>,
    /// Operations the file makes, and how many were taken.
    total: u64,
    taken: u64,
}

impl<'f> Pending<'f> {
    /// Starts reading `path` (checked: `last` is its last line of every userName) as `source`;
    /// operations carry `source_time`, report lines go to `findings`.
    pub fn open(
        path: &Path,
        source: &str,
        last: LastLines,
        source_time: Option<u64>,
        findings: &'f mut Findings,
    ) -> Result<Self, UsageError> {
        let file = open_file(path)?;
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let reading = std::thread::Builder::new()
            .name("csv-reader".into())
            .spawn(move || read_rows(file, &WholeFile, None, true, tx))
            .map_err(|e| UsageError(format!("cannot start reading {source}: {e}")))?;
        let total = last.len() as u64;
        let rows = Rows {
            source: source.to_owned(),
            last,
            rx,
            rows: 0,
            invalid: 0,
            duplicates: 0,
            report: findings,
            source_time,
            failure: None,
            resume: crate::sources::csv::ResumePoint { offset: 0, line: 1 },
        };
        Ok(Self {
            rows,
            reading: Some(reading),
            total,
            taken: 0,
        })
    }

    /// Reads the rest of the file for its report lines (its operations are dropped: the run
    /// is over) and stops the reading thread; says why the file could not be read to its end.
    pub async fn finish(mut self) -> Option<FileError> {
        while self.rows.next_operation().await.is_some() {}
        if let Some(reading) = self.reading.take() {
            // The thread only reads and sends; a panic there is a bug, reported as a failure.
            if reading.join().is_err() {
                self.rows.failure.get_or_insert(FileError::Read {
                    line: None,
                    message: "the reading thread failed".into(),
                });
            }
        }
        self.rows.failure.take()
    }
}

impl Feed for Pending<'_> {
    async fn next_operation(&mut self) -> Option<Operation> {
        let operation = self.rows.next_operation().await;
        self.taken += u64::from(operation.is_some());
        operation
    }

    fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.taken)
    }
}

/// The text of the header and the first `rows` data records (the demo's `--rows`).
pub fn first_records(data: &str, rows: usize, delimiter: u8) -> &str {
    // Records may span lines (quoted line breaks), so cut after the N-th record by parsing
    // positions rather than counting lines.
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(data.as_bytes());
    let mut record = ::csv::ByteRecord::new();
    let mut end = None;
    for _ in 0..rows {
        match reader.read_byte_record(&mut record) {
            Ok(true) => end = Some(reader.position().byte() as usize),
            _ => return data,
        }
    }
    match end {
        Some(end) => data.get(..end).unwrap_or(data),
        // Zero rows: the header line alone.
        None => data.split_inclusive('\n').next().unwrap_or(data),
    }
}

/// A short, data-free name for the kind of row error, to group errors in summaries.
pub fn error_kind(error: &RowError) -> String {
    match error {
        RowError::Missing(field) => format!("{field} is empty"),
        RowError::InvalidEmail { .. } => "email is not a valid address".into(),
        RowError::InvalidUserName { .. } => "user_name cannot be used".into(),
        RowError::InvalidActive { .. } => "active value not recognised".into(),
        RowError::InvalidStatus { .. } => "status word not recognised".into(),
        RowError::Conflict { .. } => "active and status disagree".into(),
        RowError::DuplicateField(field) => format!("{field} given twice"),
        RowError::FieldCount { .. } => "wrong number of fields".into(),
        RowError::NotUtf8 { .. } => "not UTF-8 text".into(),
        RowError::FieldTooLong { .. } => "field too long".into(),
        RowError::InUser { error, .. } => error_kind(error),
        RowError::WrongType { .. } | RowError::NotAnObject { .. } => "not a valid value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "Work Email,First Name,Last Name,Status,Cost Centre\n\
        ada@example.com,Ada,Lovelace,Active,C1\n\
        bad-email,Bad,Row,Active,C2\n\
        \"grace@example.com\",\"Grace, RN\",Hopper,Active,C3\n\
        Ada@Example.com,Ada,Byron,Leaver,C4\n";

    #[test]
    fn last_row_wins_and_invalid_rows_are_kept_with_lines() {
        let input = Input::read(CSV.as_bytes(), "f.csv").unwrap();
        assert_eq!(input.rows, 4);
        let lines: Vec<_> = input.operations.iter().map(|o| o.row).collect();
        assert_eq!(lines, [Some(4), Some(5)]);
        assert_eq!(input.operations[0].user.first_name, "Grace, RN");
        assert!(!input.operations[1].user.active);
        assert_eq!(input.invalid[0].line, 3);
        assert_eq!(
            error_kind(&input.invalid[0].error),
            "email is not a valid address"
        );
        assert_eq!((input.superseded[0].line, input.superseded[0].by), (2, 5));
        assert_eq!(input.unknown_columns(), ["Cost Centre"]);
        let report = input.report_lines();
        assert_eq!(report.len(), 3);
        assert_eq!(report[0].status, "ignored");
        assert!(
            report[0].reason.contains("\"Cost Centre\""),
            "{}",
            report[0].reason
        );
        assert_eq!(report[1].status, "invalid");
        assert_eq!(report[2].status, "duplicate");
        assert_eq!(report[2].row, Some(2));
    }

    #[test]
    fn truncation_counts_records_not_lines() {
        let text = "email,first_name,last_name\na@x.io,\"A\nB\",C\nb@x.io,B,C\n";
        assert_eq!(
            first_records(text, 1, b','),
            "email,first_name,last_name\na@x.io,\"A\nB\",C\n"
        );
        assert_eq!(first_records(text, 0, b','), "email,first_name,last_name\n");
        assert_eq!(first_records(text, 5, b','), text);
    }
}
