//! A whole CSV file checked in one streaming pass, keeping no row: its counts, its invalid rows
//! and its duplicate userNames (found with [`LastLines`]' fingerprints). A large file is cut
//! into parts at record boundaries and the parts are checked on several threads.
//!
//! Where to cut: after a line break preceded by an even number of quote characters since the
//! part's start, which in RFC 4180 text is outside any quoted field. A stray quote inside an
//! unquoted field (`5"10`) would fool that count, so every part is checked to have ended at a
//! record boundary (the parser ended its last record at a line break, not at the end of the
//! part); if one did not, the parts are thrown away and the file is checked again in one
//! piece. Either way the result is the one a single sequential read gives.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{mpsc, Mutex};

use super::csv::{CsvSource, Layout, ResumePoint};
use super::fields::{Field, RowError};
use super::last_lines::{Fingerprint, LastLines};
use super::FileError;

/// How a file is cut for checking on several threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallel {
    /// Bytes a part holds at least (it ends at the next record boundary).
    pub part_bytes: usize,
    /// Threads checking parts; 1 checks the file in one piece, as it streams.
    pub threads: usize,
}

/// Parts of 1 MiB: small enough to keep memory flat (a few parts are in flight), large enough
/// that cutting and merging cost nothing next to parsing.
const PART_BYTES: usize = 1 << 20;
/// A part that finds no record boundary within this many bytes (one quoted field across
/// megabytes, or CR-only line breaks) makes the file be checked in one piece.
const MAX_PART_BYTES: usize = 64 << 20;

impl Default for Parallel {
    /// Every core the process may use, at most 8.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Self {
            part_bytes: PART_BYTES,
            threads,
        }
    }
}

/// What checking a whole file found.
#[derive(Debug)]
pub struct FileCheck {
    /// Header columns with the field each maps to (None: ignored).
    pub columns: Vec<(String, Option<Field>)>,
    /// Header columns that match no field.
    pub unknown_columns: Vec<String>,
    /// The delimiter in use.
    pub delimiter: u8,
    /// Where the first record after the header starts.
    pub header: ResumePoint,
    /// Data records (blank lines excluded).
    pub rows: u64,
    /// Invalid rows (line, why), in line order.
    pub invalid: Vec<(u64, RowError)>,
    /// Valid rows replaced by a later row of the same userName: (line, line of the last one),
    /// in line order.
    pub superseded: Vec<(u64, u64)>,
    /// The last line of every valid userName.
    pub last: LastLines,
}

impl FileCheck {
    /// Valid rows (the last of each userName and the ones they replace).
    pub fn valid(&self) -> u64 {
        self.rows - self.invalid.len() as u64
    }

    /// Operations the file makes: one per valid userName.
    pub fn operations(&self) -> u64 {
        self.last.len() as u64
    }
}

/// What checking one part found; its lines are counted from 1 at the part's start.
#[derive(Debug, Default)]
struct PartCheck {
    rows: u64,
    invalid: Vec<(u64, RowError)>,
    line_breaks: u64,
    ended_at_break: bool,
    error: Option<FileError>,
}

/// The fingerprint table's entries while the parts are checked: the line is the part's index
/// above [`LINE_BITS`] and the line in the part below, made the file's line once every part's
/// first line is known. One table for all parts, appended to, so that no part's entries are
/// ever held twice (the table is most of the memory a check needs).
type Entries = Vec<(Fingerprint, u64)>;
const LINE_BITS: u32 = 40;

/// Checks every row of `input` (the file from its start) in one pass.
pub fn check_file<R: Read + Seek>(
    mut input: R,
    parallel: Parallel,
) -> Result<FileCheck, FileError> {
    let source = CsvSource::new(&mut input)?;
    let layout = source.layout();
    let header = source.resume_point();
    let columns = source.columns().map(|(h, f)| (h.to_owned(), f)).collect();
    let unknown_columns = source.unknown_columns().to_vec();
    let delimiter = source.delimiter();
    drop(source);
    let last = LastLines::default();
    let body_error = |e: io::Error| FileError::Read {
        line: Some(header.line),
        message: e.to_string(),
    };
    seek_to_record(&mut input, header.offset).map_err(body_error)?;
    let start = input.stream_position().map_err(body_error)?;
    let mut entries = Entries::new();
    let parts = if parallel.threads > 1 {
        check_in_parts(&mut input, &layout, &last, parallel, &mut entries)?
    } else {
        None
    };
    let parts = match parts {
        Some(parts) => parts,
        // In one piece, as it streams: small files, one thread, or a cut that was not a
        // record boundary.
        None => {
            input.seek(SeekFrom::Start(start)).map_err(body_error)?;
            entries.clear();
            vec![check_part(&mut input, &layout, &last, 0, &mut entries)]
        }
    };
    let mut found = FileCheck {
        columns,
        unknown_columns,
        delimiter,
        header,
        rows: 0,
        invalid: Vec::new(),
        superseded: Vec::new(),
        last: LastLines::default(),
    };
    // Each part's lines are shifted by the lines before it.
    let mut shifts = Vec::with_capacity(parts.len());
    let mut base = header.line;
    for part in parts {
        let shift = base - 1;
        shifts.push(shift);
        found.rows += part.rows;
        found
            .invalid
            .extend(part.invalid.into_iter().map(|(line, e)| (line + shift, e)));
        if let Some(error) = part.error {
            return Err(shifted(error, shift));
        }
        base += part.line_breaks;
    }
    let mask = (1u64 << LINE_BITS) - 1;
    for entry in &mut entries {
        let part = (entry.1 >> LINE_BITS) as usize;
        entry.1 = (entry.1 & mask) + shifts.get(part).copied().unwrap_or_default();
    }
    let (last, superseded) = last.with_entries(entries);
    found.last = last;
    found.superseded = superseded;
    Ok(found)
}

/// A read error's line in the file rather than in its part.
fn shifted(error: FileError, shift: u64) -> FileError {
    match error {
        FileError::Read { line, message } => FileError::Read {
            line: line.map(|l| l + shift),
            message,
        },
        other => other,
    }
}

/// Moves `input` to the record at `offset`: if the byte before it is a CR, the LF of a CRLF may
/// follow, and it belongs to the line break before the record.
fn seek_to_record<R: Read + Seek>(input: &mut R, offset: u64) -> io::Result<()> {
    if offset == 0 {
        input.seek(SeekFrom::Start(0))?;
        return Ok(());
    }
    input.seek(SeekFrom::Start(offset - 1))?;
    let mut two = [0u8; 2];
    let mut read = 0;
    while read < 2 {
        match input.read(&mut two[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let skip = u64::from(read == 2 && two == *b"\r\n");
    input.seek(SeekFrom::Start(offset + skip))?;
    Ok(())
}

/// Checks the rows of one part (`input` starts at a record), the `index`-th: the fingerprints
/// of its valid rows go to `entries`.
fn check_part(
    input: impl Read,
    layout: &Layout,
    last: &LastLines,
    index: usize,
    entries: &mut Entries,
) -> PartCheck {
    let tag = (index as u64) << LINE_BITS;
    let mut source = CsvSource::part(input, layout);
    let mut part = PartCheck::default();
    let mut buffer = String::new();
    while let Some(record) = source.next_checked() {
        match record {
            Ok((line, Ok(checked))) => {
                part.rows += 1;
                let fingerprint = last.fingerprint_of_name(checked.user_name, &mut buffer);
                entries.push((fingerprint, tag | line));
            }
            Ok((line, Err(error))) => {
                part.rows += 1;
                part.invalid.push((line, error));
            }
            Err(error) => {
                part.error = Some(error);
                break;
            }
        }
    }
    part.line_breaks = source.line_breaks();
    part.ended_at_break = source.ended_at_break();
    part
}

/// Quote characters in `bytes` (a loop the compiler vectorizes).
fn quotes(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'"').count()
}

/// Where to cut `part` (which starts at a record): after its last line break preceded by an
/// even number of quotes, if any.
fn cut_point(part: &[u8]) -> Option<usize> {
    let mut odd = quotes(part) % 2 == 1;
    let mut end = part.len();
    loop {
        let newline = part[..end].iter().rposition(|&b| b == b'\n')?;
        odd ^= quotes(&part[newline..end]) % 2 == 1;
        if !odd {
            return Some(newline + 1);
        }
        end = newline;
    }
}

/// Reads until `buffer` holds `want` bytes or the input ends; false at the end.
fn fill(input: &mut impl Read, buffer: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    let mut more = true;
    while more && buffer.len() < want {
        let have = buffer.len();
        buffer.resize(want, 0);
        let read = input.read(&mut buffer[have..]);
        buffer.truncate(have + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => more = false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(more)
}

/// Checks the body in parts on `parallel.threads` threads; None when it must be checked in one
/// piece (it is small, or a cut was not a record boundary).
fn check_in_parts(
    input: &mut impl Read,
    layout: &Layout,
    last: &LastLines,
    parallel: Parallel,
    entries: &mut Entries,
) -> Result<Option<Vec<PartCheck>>, FileError> {
    let part_bytes = parallel.part_bytes.max(1);
    let mut first = Vec::new();
    let read_error = |e: io::Error| FileError::Read {
        line: None,
        message: e.to_string(),
    };
    // A file of one part is not worth a thread.
    if !fill(input, &mut first, part_bytes.saturating_mul(2)).map_err(read_error)? {
        return Ok(None);
    }
    let (work, jobs) = mpsc::sync_channel::<(usize, Vec<u8>)>(parallel.threads);
    let jobs = Mutex::new(jobs);
    let (done, results) = mpsc::channel::<(usize, PartCheck)>();
    let shared = Mutex::new(std::mem::take(entries));
    let cut = std::thread::scope(|scope| {
        for _ in 0..parallel.threads {
            let (jobs, done, shared) = (&jobs, done.clone(), &shared);
            scope.spawn(move || {
                let mut mine = Entries::new();
                loop {
                    // A poisoned lock means another worker panicked: that panic ends the scope.
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    let Ok((index, data)) = job else { return };
                    mine.clear();
                    let part = check_part(&data[..], layout, last, index, &mut mine);
                    drop(data);
                    match shared.lock() {
                        Ok(mut shared) => shared.extend_from_slice(&mine),
                        Err(_) => return,
                    }
                    if done.send((index, part)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done);
        let cut = cut_parts(input, first, part_bytes, &work);
        drop(work);
        cut
    });
    *entries = shared
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(count) = cut.map_err(read_error)? else {
        return Ok(None);
    };
    let mut parts: Vec<Option<PartCheck>> = (0..count).map(|_| None).collect();
    for (index, part) in results.iter() {
        parts[index] = Some(part);
    }
    let parts: Vec<PartCheck> = parts.into_iter().flatten().collect();
    // Every part but the last must have ended at a record boundary.
    let aligned = parts.len() == count
        && parts[..count.saturating_sub(1)]
            .iter()
            .all(|p| p.ended_at_break && p.error.is_none());
    Ok(aligned.then_some(parts))
}

/// Cuts the input (after `first`, already read) into parts sent to `work`: how many, or None
/// if a part found no record boundary within [`MAX_PART_BYTES`].
fn cut_parts(
    input: &mut impl Read,
    mut part: Vec<u8>,
    part_bytes: usize,
    work: &mpsc::SyncSender<(usize, Vec<u8>)>,
) -> io::Result<Option<usize>> {
    let mut index = 0;
    let mut want = part_bytes;
    loop {
        let more = fill(input, &mut part, want)?;
        if !more {
            if !part.is_empty() && work.send((index, part)).is_ok() {
                index += 1;
            }
            return Ok(Some(index));
        }
        match cut_point(&part) {
            Some(cut) => {
                let rest = part[cut..].to_vec();
                part.truncate(cut);
                let mut next = Vec::with_capacity(part_bytes.max(rest.len() * 2));
                next.extend_from_slice(&rest);
                if work
                    .send((index, std::mem::replace(&mut part, next)))
                    .is_err()
                {
                    return Ok(None);
                }
                index += 1;
                want = part_bytes;
            }
            None if part.len() >= MAX_PART_BYTES => return Ok(None),
            // No boundary yet: a longer part.
            None => want = part.len() * 2,
        }
    }
}

#[cfg(test)]
mod tests;
