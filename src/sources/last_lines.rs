//! The last row of every userName in a file, so earlier rows can be reported as superseded.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read;

use super::csv::{CsvSource, FileError, Row};
use crate::user::User;

/// For each userName (folded with [`crate::user::user_name_key`]), the line of its last valid row.
///
/// Built by a first pass over the file ([`last_lines_by_user`]) so the second pass can report
/// earlier rows of a userName as superseded: in one file, the last row wins.
///
/// The names themselves are not kept, only a 128-bit fingerprint of each (two SipHash values
/// with random keys) in a sorted array: 24 bytes a name, about 24 MB for a million users
/// instead of about 140 MB for a map of the names. Two names would have to share all 128 bits
/// for one to be taken for the other: for a million names the odds are about 1 in 10^26.
#[derive(Clone, Default)]
pub struct LastLines {
    hashers: [RandomState; 2],
    /// (fingerprint, last line), sorted by fingerprint, one entry per fingerprint.
    entries: Vec<([u64; 2], u64)>,
}

impl std::fmt::Debug for LastLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastLines")
            .field("user_names", &self.entries.len())
            .finish()
    }
}

/// A userName's fingerprint in one [`LastLines`] (its hash keys are its own).
pub type Fingerprint = [u64; 2];

impl LastLines {
    fn fingerprint(&self, user: &User) -> Fingerprint {
        self.fingerprint_of(&user.key())
    }

    /// The fingerprint of a folded userName ([`crate::user::user_name_key`]).
    pub fn fingerprint_of(&self, key: &str) -> Fingerprint {
        [self.hashers[0].hash_one(key), self.hashers[1].hash_one(key)]
    }

    /// The fingerprint of a userName, folded in `buffer` (reused from row to row, so that
    /// checking a file allocates nothing per row).
    pub fn fingerprint_of_name(&self, user_name: &str, buffer: &mut String) -> Fingerprint {
        let name = user_name.trim();
        buffer.clear();
        if name.is_ascii() {
            // What `to_lowercase` gives for ASCII, without a new string.
            buffer.push_str(name);
            buffer.make_ascii_lowercase();
        } else {
            buffer.push_str(&crate::user::user_name_key(name));
        }
        self.fingerprint_of(buffer)
    }

    /// This table (empty, its hash keys used for `entries`) filled with the (fingerprint, line)
    /// of every valid row of a file, in any order; with the rows that a later one of the same
    /// userName replaces, as (line, line of the last row), in line order.
    pub fn with_entries(mut self, mut entries: Vec<(Fingerprint, u64)>) -> (Self, Vec<(u64, u64)>) {
        entries.sort_unstable();
        // The entries of one userName are now adjacent, its latest line last.
        let mut superseded = Vec::new();
        for group in entries.chunk_by(|a, b| a.0 == b.0) {
            if let [earlier @ .., (_, by)] = group {
                superseded.extend(earlier.iter().map(|&(_, line)| (line, *by)));
            }
        }
        superseded.sort_unstable();
        // One entry per userName, with its latest line.
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        entries.shrink_to_fit();
        self.entries = entries;
        (self, superseded)
    }

    /// The line of the last valid row for `user`'s userName, if any.
    pub fn last_line(&self, user: &User) -> Option<u64> {
        let fingerprint = self.fingerprint(user);
        self.entries
            .binary_search_by(|(f, _)| f.cmp(&fingerprint))
            .ok()
            .map(|i| self.entries[i].1)
    }

    /// The later line that replaces the row of `user` at `line`, if that row is not the last.
    pub fn superseded_by(&self, user: &User, line: u64) -> Option<u64> {
        self.last_line(user).filter(|&last| last > line)
    }

    /// Number of distinct userNames.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no valid row was seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// First pass over a CSV file: the last line of every valid userName (invalid rows do not count).
pub fn last_lines_by_user<R: Read>(reader: R) -> Result<LastLines, FileError> {
    let mut source = CsvSource::new(reader)?;
    let last = LastLines::default();
    let mut entries = Vec::new();
    let mut buffer = String::new();
    while let Some(record) = source.next_checked() {
        if let (line, Ok(checked)) = record? {
            entries.push((
                last.fingerprint_of_name(checked.user_name, &mut buffer),
                line,
            ));
        }
    }
    Ok(last.with_entries(entries).0)
}

/// [`last_lines_by_user`] over rows already being read (e.g. a part of a file).
pub fn last_lines_of(
    rows: impl Iterator<Item = Result<Row, FileError>>,
) -> Result<LastLines, FileError> {
    let last = LastLines::default();
    let mut entries = Vec::new();
    for row in rows {
        let row = row?;
        if let Ok(user) = &row.result {
            entries.push((last.fingerprint(user), row.line));
        }
    }
    Ok(last.with_entries(entries).0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::user::sample;

    #[test]
    fn the_latest_line_of_each_user_name_wins_whatever_its_case() {
        let csv = "email,first_name,last_name\n\
                   Ada@x.org,A,One\n\
                   bad,B,Two\n\
                   grace@x.org,G,H\n\
                   ada@X.ORG,A,Three\n\
                   ADA@x.org,,Invalid\n";
        let last = last_lines_by_user(csv.as_bytes()).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last.last_line(&sample("ada@x.org")), Some(5));
        assert_eq!(last.superseded_by(&sample("Ada@x.org"), 2), Some(5));
        assert_eq!(last.superseded_by(&sample("ada@x.org"), 5), None);
        assert_eq!(last.last_line(&sample("grace@x.org")), Some(4));
        assert_eq!(last.last_line(&sample("nobody@x.org")), None);
        assert!(format!("{last:?}").contains("user_names: 2"));
    }

    #[test]
    fn agrees_with_a_map_of_the_names_on_a_large_file() {
        // 20,000 rows over 7,919 userNames in a scrambled order, each met one to several times.
        let mut csv = String::from("email,first_name,last_name\n");
        let mut expected: HashMap<String, u64> = HashMap::new();
        for i in 0..20_000u64 {
            let n = (i * 7_577) % 7_919;
            let email = if i % 2 == 0 {
                format!("user{n}@example.com")
            } else {
                format!("USER{n}@Example.com")
            };
            csv.push_str(&format!("{email},F,L\n"));
            expected.insert(format!("user{n}@example.com"), i + 2);
        }
        let last = last_lines_by_user(csv.as_bytes()).unwrap();
        assert_eq!(last.len(), expected.len());
        for (name, line) in &expected {
            assert_eq!(last.last_line(&sample(name)), Some(*line), "{name}");
        }
    }
}
