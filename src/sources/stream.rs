//! A CSV file streamed as operations: rows read on a blocking thread ([`read_rows`]) and handed
//! over a bounded channel to [`Rows`], which turns each into an operation or a report line as it
//! comes. The Lambda's S3 path and the CLI read files through it, so memory stays flat.

use std::future::Future;
use std::io::Read;

use tokio::sync::mpsc;

use super::csv::{ResumePoint, Row};
use super::{fate, rows, CsvSource, FileError, LastLines, RowFate};
use crate::operation::Operation;
use crate::report::ReportLine;

/// Where the lines and points of a stream are in the file (a stream may be part of a file).
pub trait Positions {
    /// The line in the file of a line of the stream.
    fn line(&self, line: u64) -> u64;
    /// The point in the file of a point of the stream.
    fn point(&self, point: ResumePoint) -> ResumePoint;
}

/// A whole file: the stream's lines and points are the file's.
#[derive(Debug, Clone, Copy, Default)]
pub struct WholeFile;

impl Positions for WholeFile {
    fn line(&self, line: u64) -> u64 {
        line
    }
    fn point(&self, point: ResumePoint) -> ResumePoint {
        point
    }
}

/// Where the report lines of invalid and superseded rows go, as they come.
pub trait ReportSink {
    /// Adds a line.
    fn push(&mut self, line: &ReportLine) -> impl Future<Output = ()> + Send;
}

/// What the reading thread hands over.
// Nearly every item is a row: boxing it would allocate once per row for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Item {
    /// The header's columns that match no field (sent first, if any).
    UnknownColumns(Vec<String>),
    /// A row, and where the record after it starts.
    Row(Row, ResumePoint),
    /// The file cannot be read on: the last item.
    Failed(FileError),
}

/// Streams the rows of `reader` into `tx` (on a blocking thread) until the end of the stream,
/// the record that starts at or after `end` (it is sent), or the receiver goes. The unknown
/// columns are sent first when `first` (only the reader of a file's start reports them).
pub fn read_rows(
    reader: impl Read,
    positions: &impl Positions,
    end: Option<ResumePoint>,
    first: bool,
    tx: mpsc::Sender<Item>,
) {
    let mut source = match CsvSource::new(reader) {
        Ok(source) => source,
        Err(error) => {
            let _ = tx.blocking_send(Item::Failed(error));
            return;
        }
    };
    if first
        && !source.unknown_columns().is_empty()
        && tx
            .blocking_send(Item::UnknownColumns(source.unknown_columns().to_vec()))
            .is_err()
    {
        return;
    }
    while let Some(row) = source.next() {
        let point = positions.point(source.resume_point());
        let item = match row {
            Ok(mut row) => {
                row.line = positions.line(row.line);
                Item::Row(row, point)
            }
            Err(error) => Item::Failed(error),
        };
        if tx.blocking_send(item).is_err() || end.is_some_and(|end| point.offset >= end.offset) {
            return;
        }
    }
}

/// The rows of a file as they arrive: invalid and superseded ones become report lines,
/// written as they come.
pub struct Rows<'r, S> {
    /// The file's name in operations and report lines.
    pub source: String,
    /// The last line of every userName (from a first pass).
    pub last: LastLines,
    /// What the reading thread sends.
    pub rx: mpsc::Receiver<Item>,
    /// Rows taken.
    pub rows: u64,
    /// Invalid rows among them.
    pub invalid: u64,
    /// Rows superseded by a later one of their userName.
    pub duplicates: u64,
    /// Where report lines go.
    pub report: &'r mut S,
    /// When the file was written: the time of its operations.
    pub source_time: Option<u64>,
    /// Why reading stopped before the end, if it did.
    pub failure: Option<FileError>,
    /// Where the record after the last one taken starts: a continuation resumes there.
    pub resume: ResumePoint,
}

impl<S: ReportSink> Rows<'_, S> {
    /// The next valid, last-of-its-userName row as an operation; None at the end of the file.
    pub async fn next_operation(&mut self) -> Option<Operation> {
        while let Some(item) = self.rx.recv().await {
            let row = match item {
                Item::Row(row, point) => {
                    self.resume = point;
                    row
                }
                Item::Failed(error) => {
                    self.failure = Some(error);
                    continue;
                }
                Item::UnknownColumns(columns) => {
                    self.report
                        .push(&rows::ignored_columns_line(&self.source, &columns))
                        .await;
                    continue;
                }
            };
            self.rows += 1;
            let line = row.line;
            let user = match fate(row, &self.last) {
                RowFate::Provision(user) => user,
                RowFate::Invalid(error) => {
                    self.invalid += 1;
                    self.report
                        .push(&rows::invalid_line(&self.source, line, &error))
                        .await;
                    continue;
                }
                RowFate::Superseded { by, user } => {
                    self.duplicates += 1;
                    self.report
                        .push(&rows::duplicate_line(&self.source, line, by, &user))
                        .await;
                    continue;
                }
            };
            let op = Operation::new(user, self.source.clone(), Some(line));
            return Some(match self.source_time {
                Some(at) => op.with_source_time(at),
                None => op,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::last_lines_by_user;

    impl ReportSink for Vec<ReportLine> {
        async fn push(&mut self, line: &ReportLine) {
            Vec::push(self, line.clone());
        }
    }

    #[tokio::test]
    async fn rows_stream_as_operations_and_report_lines_in_file_order() {
        let csv = "email,first_name,last_name,Shoe\r\nA@x.org,A,One,1\r\nbad,B,Two,2\r\n\
                   \"c@x.org\",\"C\r\nD\",Three,3\r\na@x.org,A,Four,4\r\n";
        let last = last_lines_by_user(csv.as_bytes()).unwrap();
        let (tx, rx) = mpsc::channel(2);
        let reading =
            std::thread::spawn(move || read_rows(csv.as_bytes(), &WholeFile, None, true, tx));
        let mut report = Vec::new();
        let mut rows = Rows {
            source: "f.csv".into(),
            last,
            rx,
            rows: 0,
            invalid: 0,
            duplicates: 0,
            report: &mut report,
            source_time: Some(7),
            failure: None,
            resume: ResumePoint { offset: 0, line: 1 },
        };
        let mut operations = Vec::new();
        while let Some(op) = rows.next_operation().await {
            operations.push(op);
        }
        let (count, invalid, duplicates, resume) =
            (rows.rows, rows.invalid, rows.duplicates, rows.resume);
        assert!(rows.failure.is_none());
        reading.join().unwrap();
        assert_eq!((count, invalid, duplicates), (4, 1, 1));
        assert_eq!(resume.offset, csv.len() as u64);
        let lines: Vec<_> = operations.iter().map(|o| o.row).collect();
        assert_eq!(lines, [Some(4), Some(6)]);
        assert_eq!(operations[0].user.first_name, "C\nD");
        let statuses: Vec<_> = report.iter().map(|l| (l.status.as_str(), l.row)).collect();
        assert_eq!(
            statuses,
            [
                ("ignored", None),
                ("duplicate", Some(2)),
                ("invalid", Some(3))
            ]
        );
    }

    #[test]
    fn reading_stops_after_the_end_point() {
        let csv = "email,first_name,last_name\na@x.org,A,One\nb@x.org,B,Two\nc@x.org,C,Three\n";
        let (tx, mut rx) = mpsc::channel(16);
        let end = ResumePoint {
            offset: "email,first_name,last_name\na@x.org,A,One\n".len() as u64,
            line: 3,
        };
        read_rows(csv.as_bytes(), &WholeFile, Some(end), false, tx);
        let mut lines = Vec::new();
        while let Ok(item) = rx.try_recv() {
            match item {
                Item::Row(row, _) => lines.push(row.line),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(lines, [2]);
    }
}
