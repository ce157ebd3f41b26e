//! Streaming CSV reader: header matching, per-row validation, editor line numbers.
//!
//! The delimiter is `,` unless the header line has no comma outside quotes but has `;` or a
//! tab (the more frequent wins): European spreadsheets export `;`, some HR tools export TSV.
//! An Excel `sep=X` first line is honoured too. Line breaks may be LF, CRLF or CR; a CRLF
//! inside a quoted field reads as LF.
//!
//! Rows are streamed: memory holds one record at a time (a field longer than
//! [`MAX_FIELD_BYTES`] is reported, but it is read into memory first, as the CSV parser must
//! find its end to go on with the next row).

use std::collections::HashMap;
use std::io::{self, Chain, Cursor, Read};

use ::csv::{ByteRecord, ReaderBuilder};

use super::fields::{
    canonical_field, check, excerpt, validate, Checked, Field, RowError, MAX_FIELD_BYTES,
};
use crate::user::User;

/// How much of the file start is examined to choose the delimiter.
const SNIFF_BYTES: usize = 64 * 1024;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A problem with the file as a whole: nothing in it can be provisioned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The file has no header row.
    #[error("the file is empty: expected a header row naming the columns (email, first_name, last_name, ...)")]
    Empty,
    /// The file is not UTF-8 text (a workbook, UTF-16, Latin-1, binary).
    #[error("the file is not UTF-8 CSV text: {hint}")]
    NotText {
        /// What it looks like instead, and what to do.
        hint: &'static str,
    },
    /// One or more required columns are absent from the header. A file without a header row
    /// lands here with a data row as its header: its cells are never quoted then (personal data).
    #[error("missing required column(s) {}; {}", names(.missing), header_found(.found, *.looks_like_data))]
    MissingColumns {
        /// Every missing required field.
        missing: Vec<Field>,
        /// The header's cells as they may be shown, at most [`MAX_LISTED`]: known and unknown
        /// column names quoted (shortened), but a value that looks like personal data (an
        /// address, a number), or any unknown cell of a line that looks like data, by its kind.
        found: Vec<String>,
        /// Whether the first line looks like a data row rather than a header.
        looks_like_data: bool,
    },
    /// Two header columns mean the same field.
    #[error("columns {first:?} and {second:?} both mean {field}; keep only one")]
    DuplicateColumn {
        /// The field both columns map to.
        field: Field,
        /// The first column's header.
        first: String,
        /// The second column's header.
        second: String,
    },
    /// Reading failed (an I/O error, not a malformed row); the rest of the file is unread.
    #[error("reading the file failed{}: {message}", .line.map(|l| format!(" near line {l}")).unwrap_or_default())]
    Read {
        /// The line reached, when known.
        line: Option<u64>,
        /// The underlying error.
        message: String,
    },
}

fn names(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most header cells listed in an error.
pub const MAX_LISTED: usize = 30;

fn header_found(found: &[String], looks_like_data: bool) -> String {
    let list = if found.is_empty() {
        "no columns".to_string()
    } else {
        found.join(", ")
    };
    if looks_like_data {
        format!(
            "the first line looks like data, not a header ({list}): add a header row naming \
             the columns (email, first_name, last_name, ...)"
        )
    } else {
        format!("the header has: {list}")
    }
}

/// What a header cell looks like, when it looks like a value rather than a column name.
fn value_kind(cell: &str) -> Option<&'static str> {
    let digits = cell.bytes().filter(u8::is_ascii_digit).count();
    if cell.contains('@') {
        Some("an email address")
    } else if digits >= 3
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || " +-()./".contains(c))
    {
        Some("a number")
    } else {
        None
    }
}

/// The [`FileError::MissingColumns`] of a header: its cells described without quoting
/// anything that may be personal data.
fn missing_columns(
    missing: Vec<Field>,
    headers: &[String],
    columns: &[Option<Field>],
) -> FileError {
    let looks_like_data = headers.iter().any(|h| value_kind(h).is_some());
    let mut found: Vec<String> = headers
        .iter()
        .zip(columns)
        .take(MAX_LISTED)
        .map(|(header, column)| match (column, value_kind(header)) {
            // Matched a column name: not personal data.
            (Some(_), _) => format!("{:?}", excerpt(header)),
            (None, Some(kind)) => kind.to_string(),
            (None, None) if looks_like_data => "text".to_string(),
            (None, None) => format!("{:?}", excerpt(header)),
        })
        .collect();
    if headers.len() > MAX_LISTED {
        found.push(format!("and {} more", headers.len() - MAX_LISTED));
    }
    FileError::MissingColumns {
        missing,
        found,
        looks_like_data,
    }
}

fn read_error(line: Option<u64>, error: impl std::fmt::Display) -> FileError {
    FileError::Read {
        line,
        message: error.to_string(),
    }
}

/// One data record: its line in the file and the user it holds, or why it is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line of the record's first line as an editor shows it (the header is usually line 1).
    pub line: u64,
    /// The validated user, or what is wrong with the row.
    pub result: Result<User, RowError>,
}

/// Rewrites CR and CRLF line breaks to LF, so the CSV parser's line counter (which counts
/// LF bytes, and leaves a CRLF's LF for the next record) gives exact line numbers; and
/// notes the end of the stream, to tell a final record without a line break.
///
/// It also counts the CRLF LFs it drops, to map the parser's offsets back to the file's
/// ([`CsvSource::resume_point`]). The parser reads through a buffer that asks for more only
/// when it has consumed everything, so at each read the drops before it are behind the parser.
struct Normalize<R> {
    inner: R,
    after_cr: bool,
    eof: bool,
    /// Bytes handed to the parser so far.
    produced: u64,
    /// LFs dropped before the current read's output.
    dropped: u64,
    /// Where, in the output, LFs were dropped during the current read (ascending).
    recent_drops: Vec<u64>,
}

impl<R: Read> Normalize<R> {
    /// Bytes of the input behind output position `position` (at or after the current read).
    fn input_offset(&self, position: u64) -> u64 {
        let recent = self.recent_drops.partition_point(|&at| at <= position);
        position + self.dropped + recent as u64
    }
}

impl<R: Read> Read for Normalize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.dropped += self.recent_drops.len() as u64;
        self.recent_drops.clear();
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                self.eof = !buf.is_empty();
                return Ok(0);
            }
            // Most files are LF-only: pass those chunks through untouched.
            if !self.after_cr && !buf[..n].contains(&b'\r') {
                self.produced += n as u64;
                return Ok(n);
            }
            let mut out = 0;
            for i in 0..n {
                let byte = buf[i];
                if self.after_cr && byte == b'\n' {
                    // The CR already stood for this line break.
                    self.after_cr = false;
                    self.recent_drops.push(self.produced + out as u64);
                    continue;
                }
                self.after_cr = byte == b'\r';
                buf[out] = if byte == b'\r' { b'\n' } else { byte };
                out += 1;
            }
            self.produced += out as u64;
            if out > 0 {
                return Ok(out);
            }
            // The chunk was only a CRLF's LF: returning 0 would read as end of file.
        }
    }
}

/// Where reading can resume: the next record's byte offset in the file and its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Bytes of the file before the next record (after the last record's line break; if that
    /// was a CR whose LF was not read yet, the LF may still be ahead).
    pub offset: u64,
    /// The next record's line, as an editor shows it.
    pub line: u64,
}

type Input<R> = Normalize<Chain<Cursor<Vec<u8>>, R>>;

/// A CSV file being read: the header is checked by [`CsvSource::new`], then the source
/// iterates one `Ok(Row)` per non-blank record. An I/O error ends the iteration with one
/// `Err(FileError::Read)` item; malformed rows never do.
pub struct CsvSource<R: Read> {
    reader: ::csv::Reader<Input<R>>,
    record: ByteRecord,
    headers: Vec<String>,
    columns: Vec<Option<Field>>,
    unknown: Vec<String>,
    delimiter: u8,
    /// Lines removed before the parser saw them (an Excel `sep=` line).
    line_offset: u64,
    /// Bytes removed before the parser saw them (a BOM, an Excel `sep=` line).
    byte_offset: u64,
    finished: bool,
    /// Whether the last record read ran into the end of the input (no line break after it).
    unterminated: bool,
}

/// What a file's header says, to read parts of the file's body on other threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    headers: Vec<String>,
    columns: Vec<Option<Field>>,
    delimiter: u8,
}

impl<R: Read> CsvSource<R> {
    /// Reads and checks the header: a [`FileError`] means the whole file is unusable.
    pub fn new(mut reader: R) -> Result<Self, FileError> {
        let mut prefix = read_prefix(&mut reader).map_err(|e| read_error(None, e))?;
        if let Some(hint) = binary_hint(&prefix) {
            return Err(FileError::NotText { hint });
        }
        let mut byte_offset = 0;
        if prefix.starts_with(UTF8_BOM) {
            prefix.drain(..UTF8_BOM.len());
            byte_offset += UTF8_BOM.len() as u64;
        }
        let (delimiter, line_offset) = match excel_sep_line(&prefix) {
            Some((delimiter, len)) => {
                prefix.drain(..len);
                byte_offset += len as u64;
                (delimiter, 1)
            }
            None => (sniff_delimiter(&prefix), 0),
        };
        let mut reader = parser(Cursor::new(prefix).chain(reader), delimiter);
        let mut record = ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) if is_blank(&record) => continue,
                Ok(true) => break,
                Ok(false) => return Err(FileError::Empty),
                Err(e) => return Err(read_error(None, e)),
            }
        }
        let headers = decode_headers(&record)?;
        let columns: Vec<Option<Field>> = headers.iter().map(|h| canonical_field(h)).collect();
        check_columns(&headers, &columns)?;
        let unknown = headers
            .iter()
            .zip(&columns)
            .filter(|(h, c)| c.is_none() && !h.is_empty())
            .map(|(h, _)| h.clone())
            .collect();
        Ok(Self {
            reader,
            record,
            headers,
            columns,
            unknown,
            delimiter,
            line_offset,
            byte_offset,
            finished: false,
            unterminated: false,
        })
    }

    /// What the header says, for [`CsvSource::part`].
    pub fn layout(&self) -> Layout {
        Layout {
            headers: self.headers.clone(),
            columns: self.columns.clone(),
            delimiter: self.delimiter,
        }
    }

    /// A part of the body of a file with `layout`'s header: `reader` starts at a record, and
    /// lines are counted from 1 at its start.
    pub fn part(reader: R, layout: &Layout) -> Self {
        let Layout {
            headers,
            columns,
            delimiter,
        } = layout.clone();
        Self {
            reader: parser(Cursor::new(Vec::new()).chain(reader), delimiter),
            record: ByteRecord::new(),
            headers,
            columns,
            unknown: Vec::new(),
            delimiter,
            line_offset: 0,
            byte_offset: 0,
            finished: false,
            unterminated: false,
        }
    }

    /// The next non-blank record, checked without owning its values: its line and what it
    /// holds ([`Iterator::next`] gives the same with an owned [`User`]).
    #[allow(clippy::type_complexity)] // a lending iterator's item
    pub fn next_checked(
        &mut self,
    ) -> Option<Result<(u64, Result<Checked<'_>, RowError>), FileError>> {
        Some(self.advance()?.map(|line| {
            let checked = self
                .values()
                .and_then(|(values, mapped)| check(&values[..mapped]));
            (line, checked)
        }))
    }

    /// Whether the last record read ended with a line break. At the end of a part cut after a
    /// line break, false means the cut was inside a quoted field: the part did not end at a
    /// record boundary.
    pub fn ended_at_break(&self) -> bool {
        !self.unterminated
    }

    /// Line breaks read so far (at the end: all of the input's).
    pub fn line_breaks(&self) -> u64 {
        self.reader.position().line().saturating_sub(1)
    }

    /// Reads the next non-blank record into `self.record`: its line, an error that ends the
    /// file, or None at the end.
    fn advance(&mut self) -> Option<Result<u64, FileError>> {
        while !self.finished {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) if is_blank(&self.record) => continue,
                Ok(true) => {
                    self.unterminated = self.reader.get_ref().eof;
                    return Some(Ok(self.record_line()));
                }
                Ok(false) => self.finished = true,
                Err(e) => {
                    self.finished = true;
                    let line = self.reader.position().line() + self.line_offset;
                    return Some(Err(read_error(Some(line), e)));
                }
            }
        }
        None
    }

    /// Where the record after the last one read (or after the header) starts in the file, to
    /// resume reading there: the header, then the file from this offset, read as one.
    pub fn resume_point(&self) -> ResumePoint {
        let position = self.reader.position();
        ResumePoint {
            offset: self.byte_offset + self.reader.get_ref().input_offset(position.byte()),
            line: position.line() + self.line_offset,
        }
    }

    /// Header columns that match no field: they are ignored (list them once in a report).
    pub fn unknown_columns(&self) -> &[String] {
        &self.unknown
    }

    /// Every header column (trimmed) with the field it maps to, in file order.
    pub fn columns(&self) -> impl Iterator<Item = (&str, Option<Field>)> {
        self.headers
            .iter()
            .map(String::as_str)
            .zip(self.columns.iter().copied())
    }

    /// The delimiter in use (`,`, `;` or tab, or the one an Excel `sep=` line names).
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// The line of the record just read, as an editor shows it.
    fn record_line(&self) -> u64 {
        // After a record the parser's counter is 1 + the LFs consumed: the record's own
        // embedded ones and its terminator come off. The parser ends a record at its LF
        // without reading further, so the input reached its end during this record exactly
        // when the record had no terminator (last line without a break, or an unclosed quote).
        let end = self.reader.position().line();
        let embedded = self
            .record
            .as_slice()
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        let terminator = u64::from(!self.reader.get_ref().eof);
        end.saturating_sub(embedded + terminator) + self.line_offset
    }

    /// Checks and validates the record just read.
    fn parse_record(&self) -> Result<User, RowError> {
        let (values, mapped) = self.values()?;
        validate(&values[..mapped])
    }

    /// The record just read as (field, value) pairs: the first `.1` of `.0` are mapped.
    #[allow(clippy::type_complexity)] // a fixed array on the stack and its length
    fn values(&self) -> Result<([(Field, &str); Field::ALL.len()], usize), RowError> {
        let record = &self.record;
        let column_name = |i: usize| excerpt(self.headers.get(i).map_or("", String::as_str));
        // A record no longer than the limit cannot hold a field longer than it.
        if record.as_slice().len() > MAX_FIELD_BYTES {
            for (i, field) in record.iter().enumerate() {
                if field.len() > MAX_FIELD_BYTES {
                    return Err(RowError::FieldTooLong {
                        column: column_name(i),
                        bytes: field.len(),
                    });
                }
            }
        }
        if record.len() != self.columns.len() {
            return Err(RowError::FieldCount {
                expected: self.columns.len(),
                found: record.len(),
            });
        }
        // One UTF-8 check for the whole record (the fields are stored back to back), instead
        // of one per field; a field is then text when its ends are character boundaries.
        let text = std::str::from_utf8(record.as_slice()).ok();
        // On the stack: this runs once per row. The header check lets each field appear in
        // at most one column, so there are at most `Field::ALL.len()` mapped values.
        let mut values = [(Field::Email, ""); Field::ALL.len()];
        let mut mapped = 0;
        for (i, column) in self.columns.iter().enumerate() {
            // Only mapped columns are decoded: bad bytes in an ignored column harm nobody.
            if let (Some(field), Some(slot)) = (column, values.get_mut(mapped)) {
                let value = match text {
                    Some(text) => record.range(i).and_then(|range| text.get(range)),
                    None => record.get(i).and_then(|b| std::str::from_utf8(b).ok()),
                };
                let value = value.ok_or_else(|| RowError::NotUtf8 {
                    column: column_name(i),
                })?;
                *slot = (*field, value);
                mapped += 1;
            }
        }
        Ok((values, mapped))
    }
}

impl<R: Read> Iterator for CsvSource<R> {
    type Item = Result<Row, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.advance()?.map(|line| Row {
            line,
            result: self.parse_record(),
        }))
    }
}

/// The CSV parser over `input`, its line breaks normalized.
fn parser<R: Read>(input: R, delimiter: u8) -> ::csv::Reader<Normalize<R>> {
    let input = Normalize {
        inner: input,
        after_cr: false,
        eof: false,
        produced: 0,
        dropped: 0,
        recent_drops: Vec::new(),
    };
    ReaderBuilder::new()
        .buffer_capacity(64 * 1024)
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(input)
}

/// Reads the start of the file, up to the end of its first non-blank line (or the sniff limit).
fn read_prefix<R: Read>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    while prefix.len() < SNIFF_BYTES && first_line(&prefix).is_none() {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => prefix.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(prefix)
}

/// The first complete line with content (without its line break), if the prefix holds one.
fn first_line(prefix: &[u8]) -> Option<&[u8]> {
    prefix
        .split_inclusive(|&b| b == b'\n' || b == b'\r')
        .filter(|line| matches!(line.last(), Some(b'\n' | b'\r')))
        .map(|line| &line[..line.len() - 1])
        .find(|line| !line.iter().all(u8::is_ascii_whitespace))
}

/// Chooses the delimiter from the header line: `,` unless it has none outside quotes and has
/// `;` or tabs.
fn sniff_delimiter(prefix: &[u8]) -> u8 {
    let line = first_line(prefix).unwrap_or(prefix);
    let (mut commas, mut semicolons, mut tabs, mut in_quotes) = (0, 0, 0, false);
    for &b in line {
        match b {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => commas += 1,
            b';' if !in_quotes => semicolons += 1,
            b'\t' if !in_quotes => tabs += 1,
            _ => {}
        }
    }
    if commas == 0 && (semicolons > 0 || tabs > 0) {
        if tabs > semicolons {
            b'\t'
        } else {
            b';'
        }
    } else {
        b','
    }
}

/// An Excel `sep=X` first line: the delimiter and the line's length including its break.
fn excel_sep_line(prefix: &[u8]) -> Option<(u8, usize)> {
    let end = prefix
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(prefix.len());
    let line = &prefix[..end];
    match line {
        [s, e, p, b'=', delimiter] if [*s, *e, *p].eq_ignore_ascii_case(b"sep") => {
            let mut len = end;
            if prefix.get(len) == Some(&b'\r') {
                len += 1;
            }
            if prefix.get(len) == Some(&b'\n') {
                len += 1;
            }
            Some((*delimiter, len))
        }
        _ => None,
    }
}

/// Recognises files that are clearly not CSV text by their first bytes.
fn binary_hint(prefix: &[u8]) -> Option<&'static str> {
    if prefix.starts_with(b"\xFF\xFE") || prefix.starts_with(b"\xFE\xFF") {
        Some("it is UTF-16 encoded; save it as \"CSV UTF-8\"")
    } else if prefix.starts_with(b"PK\x03\x04") {
        Some("it looks like an Excel workbook (.xlsx) or a zip archive; save it as \"CSV UTF-8\"")
    } else if prefix.starts_with(b"\xD0\xCF\x11\xE0") {
        Some("it looks like an old Excel workbook (.xls); save it as \"CSV UTF-8\"")
    } else if prefix.starts_with(b"\x1F\x8B") {
        Some("it looks gzip-compressed; upload it uncompressed")
    } else {
        None
    }
}

fn decode_headers(record: &ByteRecord) -> Result<Vec<String>, FileError> {
    record
        .iter()
        .map(|bytes| {
            let text = std::str::from_utf8(bytes).map_err(|_| FileError::NotText {
                hint: "its header is not valid UTF-8 (Windows-1252 or Latin-1?); save it as \"CSV UTF-8\"",
            })?;
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(FileError::NotText {
                    hint: "its header holds binary data; is it really a CSV file?",
                });
            }
            Ok(text.trim().to_owned())
        })
        .collect()
}

fn check_columns(headers: &[String], columns: &[Option<Field>]) -> Result<(), FileError> {
    let mut seen: HashMap<Field, usize> = HashMap::new();
    for (i, column) in columns.iter().enumerate() {
        if let Some(field) = *column {
            if let Some(&first) = seen.get(&field) {
                return Err(FileError::DuplicateColumn {
                    field,
                    first: excerpt(&headers[first]),
                    second: excerpt(&headers[i]),
                });
            }
            seen.insert(field, i);
        }
    }
    let missing: Vec<Field> = Field::REQUIRED
        .into_iter()
        .filter(|f| !seen.contains_key(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_columns(missing, headers, columns))
    }
}

/// Whether every field of the record is blank (e.g. `,,,` lines from spreadsheet exports).
fn is_blank(record: &ByteRecord) -> bool {
    record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests;
