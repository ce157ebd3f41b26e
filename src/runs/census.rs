//! A run's census: one pass over the whole file before anything is sent, so the deactivation
//! guard is decided up front — how many rows, which users the file names, which are leavers.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Read;

use crate::sources::csv::ResumePoint;
use crate::sources::{CsvSource, FileError};
use crate::user::user_name_key;

/// What a file holds, as far as the guard and full sync need to know.
#[derive(Default)]
pub struct Census {
    hashers: [RandomState; 2],
    /// Records in the file (valid or not).
    pub rows: u64,
    /// Where the header ends (a file's reading may start again from there); None for a file
    /// that cannot be read.
    pub header: Option<ResumePoint>,
    /// Per userName named (fingerprint of the folded name): the userName of its last valid row
    /// if that row is a leaver, else None.
    last: HashMap<[u64; 2], Option<String>>,
}

impl std::fmt::Debug for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Census")
            .field("rows", &self.rows)
            .field("user_names", &self.last.len())
            .finish()
    }
}

impl Census {
    /// Reads the whole file.
    pub fn of(reader: impl Read) -> Result<Census, FileError> {
        let mut census = Census::default();
        let source = CsvSource::new(reader)?;
        census.header = Some(source.resume_point());
        for row in source {
            let row = row?;
            census.rows += 1;
            if let Ok(user) = row.result {
                let fingerprint = census.fingerprint(&user.key());
                let leaver = (!user.active).then_some(user.user_name);
                census.last.insert(fingerprint, leaver);
            }
        }
        Ok(census)
    }

    fn fingerprint(&self, key: &str) -> [u64; 2] {
        [self.hashers[0].hash_one(key), self.hashers[1].hash_one(key)]
    }

    /// Whether the file names this userName (any case).
    pub fn names(&self, user_name: &str) -> bool {
        self.last
            .contains_key(&self.fingerprint(&user_name_key(user_name)))
    }

    /// Distinct userNames the file names.
    pub fn named(&self) -> u64 {
        self.last.len() as u64
    }

    /// The userNames whose last row is a leaver (to deactivate).
    pub fn leavers(&self) -> impl Iterator<Item = &str> {
        self.last.values().filter_map(|v| v.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_names_and_final_leavers() {
        let csv = "email,first_name,last_name,status\n\
                   a@x.org,A,One,leaver\n\
                   bad,B,Two,active\n\
                   A@X.org,A,One,active\n\
                   c@x.org,C,Three,terminated\n\
                   \"d@x.org\",\"D, jr\",\"Four\nLines\",active\n";
        let census = Census::of(csv.as_bytes()).unwrap();
        assert_eq!(census.rows, 5);
        assert_eq!(census.named(), 3);
        assert!(census.names("a@X.ORG") && census.names("d@x.org"));
        assert!(!census.names("bad"));
        // a@x.org left, then came back: only c@x.org is a leaver.
        assert_eq!(census.leavers().collect::<Vec<_>>(), vec!["c@x.org"]);
    }
}
