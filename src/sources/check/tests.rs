//! Unit tests of the one-pass check: whatever the cut, the same result as a sequential read.

use std::io::Cursor;

use proptest::prelude::*;

use super::*;
use crate::sources::last_lines::last_lines_of;
use crate::sources::rows::{fate, RowFate};

const MESSY: &[u8] = include_bytes!("../../../tests/fixtures/users_messy.csv");
const SEMICOLON: &[u8] = include_bytes!("../../../tests/fixtures/users_semicolon.csv");
const TAB: &[u8] = include_bytes!("../../../tests/fixtures/users_tab.tsv");

/// Rows, invalid (line, reason), superseded (line, by): what a check reports.
type Findings = (u64, Vec<(u64, String)>, Vec<(u64, u64)>);

/// The sequential reader's findings (owned users, the S3 path's two passes).
fn sequential(data: &[u8]) -> Findings {
    let last = last_lines_of(CsvSource::new(data).unwrap()).unwrap();
    let (mut rows, mut invalid, mut superseded) = (0, Vec::new(), Vec::new());
    for row in CsvSource::new(data).unwrap() {
        let row = row.unwrap();
        rows += 1;
        let line = row.line;
        match fate(row, &last) {
            RowFate::Invalid(e) => invalid.push((line, e.to_string())),
            RowFate::Superseded { by, .. } => superseded.push((line, by)),
            RowFate::Provision(_) => {}
        }
    }
    (rows, invalid, superseded)
}

fn checked(data: &[u8], part_bytes: usize, threads: usize) -> (Findings, FileCheck) {
    let parallel = Parallel {
        part_bytes,
        threads,
    };
    let found = check_file(Cursor::new(data.to_vec()), parallel).unwrap();
    let invalid = found
        .invalid
        .iter()
        .map(|(line, e)| (*line, e.to_string()))
        .collect();
    ((found.rows, invalid, found.superseded.clone()), found)
}

/// Checks `data` cut in parts of many sizes (and whole) against the sequential read.
fn agrees(data: &[u8]) {
    let expected = sequential(data);
    for (part_bytes, threads) in [(1, 2), (7, 2), (16, 3), (61, 2), (200, 4), (1 << 20, 2)] {
        let (found, check) = checked(data, part_bytes, threads);
        assert_eq!(
            found, expected,
            "parts of {part_bytes} bytes, {threads} threads"
        );
        let distinct = check.valid() - check.superseded.len() as u64;
        assert_eq!(check.operations(), distinct);
    }
    assert_eq!(checked(data, 1, 1).0, expected, "one thread");
}

fn many_rows(eol: &str) -> String {
    let mut csv = format!("Email,First Name,Last Name,Department,Status{eol}");
    for i in 0..300 {
        let department = match i % 5 {
            0 => format!("\"Sales,{eol}EMEA\""),
            1 => "\"He said \"\"hi\"\"\"".to_string(),
            2 => String::new(),
            3 => "\"multi\nline\r\nfield\"".to_string(),
            _ => "IT".to_string(),
        };
        let email = match i % 37 {
            0 => "not-an-email".to_string(),
            _ => format!("User{}@Example.com", i % 120),
        };
        let status = if i % 41 == 0 { "On Leave" } else { "Active" };
        csv.push_str(&format!("{email},F{i},L{i},{department},{status}{eol}"));
        if i % 50 == 0 {
            csv.push_str(eol);
        }
    }
    csv
}

#[test]
fn cuts_anywhere_give_the_sequential_result_with_quoted_line_breaks() {
    agrees(many_rows("\n").as_bytes());
    agrees(many_rows("\r\n").as_bytes());
    agrees(many_rows("\r").as_bytes());
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(many_rows("\r\n").as_bytes());
    agrees(&bom);
    let sep = format!("sep=,\r\n{}", many_rows("\r\n"));
    agrees(sep.as_bytes());
    for fixture in [MESSY, SEMICOLON, TAB] {
        agrees(fixture);
    }
}

#[test]
fn duplicates_are_found_across_parts_with_the_last_line() {
    let data = many_rows("\n");
    let (found, check) = checked(data.as_bytes(), 64, 2);
    assert!(found.2.len() > 100, "{}", found.2.len());
    // User0 is on the rows of i = 0, 120, 240: the first two are superseded by the third.
    let third = check.last.len();
    assert!(third >= 100);
    assert_eq!(found.0, 300);
}

#[test]
fn a_stray_quote_that_fools_the_cut_is_caught_and_the_file_read_whole() {
    // `5"10` opens no quoted field (a quote counts only at a field's start), so counting
    // quotes takes the line breaks after it for ones inside a quoted field.
    let mut csv = String::from("email,first_name,last_name,title\n");
    csv.push_str("a@x.org,A,B,5\"10 tall\n");
    for i in 0..200 {
        csv.push_str(&format!("u{i}@x.org,F,L,\"T\n{i}\"\n"));
    }
    csv.push_str("a@x.org,A,B,again\n");
    agrees(csv.as_bytes());
    let (found, _) = checked(csv.as_bytes(), 32, 2);
    assert_eq!(found.2, [(2, 403)]);
    assert!(
        !cut_in_parts(csv.as_bytes()),
        "the cut was taken for a record boundary"
    );
    assert!(cut_in_parts(many_rows("\r\n").as_bytes()));
}

/// Whether the body of `data` was checked in parts of 32 bytes (not read again whole).
fn cut_in_parts(data: &[u8]) -> bool {
    let mut input = Cursor::new(data.to_vec());
    let source = CsvSource::new(&mut input).unwrap();
    let (layout, header) = (source.layout(), source.resume_point());
    drop(source);
    seek_to_record(&mut input, header.offset).unwrap();
    let parallel = Parallel {
        part_bytes: 32,
        threads: 2,
    };
    let mut entries = Entries::new();
    let last = LastLines::default();
    check_in_parts(&mut input, &layout, &last, parallel, &mut entries)
        .unwrap()
        .is_some()
}

#[test]
fn a_file_without_rows_and_header_problems() {
    let (found, check) = checked(b"email,first_name,last_name\r\n", 1, 2);
    assert_eq!(found, (0, vec![], vec![]));
    assert_eq!(check.header.line, 2);
    let error = check_file(Cursor::new(b"name\nx\n".to_vec()), Parallel::default()).unwrap_err();
    assert!(matches!(error, FileError::MissingColumns { .. }), "{error}");
    let (found, check) = checked(b"email,first_name,last_name,Shoe\na@x.org,A,B,4", 1, 2);
    assert_eq!(found.0, 1);
    assert_eq!(check.unknown_columns, ["Shoe"]);
    assert_eq!(check.columns[3], ("Shoe".to_string(), None));
}

/// Pieces of a row: plain and quoted values, quoted line breaks, CRs, stray quotes, blanks.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-c]{1,3}",
        Just("\"q,\r\nx\"".to_string()),
        Just("\"\"\"\"".to_string()),
        Just("\"a\nb\"".to_string()),
        Just("5\"10".to_string()),
        Just("é".to_string()),
        Just(" ".to_string()),
    ]
}

fn email() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-d]@x\\.org",
        "[A-D]@X\\.ORG",
        Just("bad".to_string()),
        Just(String::new()),
    ]
}

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("\n\n")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_file_any_cut_agrees_with_the_sequential_read(
        rows in prop::collection::vec((email(), cell(), cell(), eol()), 0..40),
        part_bytes in 1usize..120,
        threads in 2usize..4,
    ) {
        let mut csv = String::from("email,first_name,last_name\n");
        for (email, first, last, eol) in &rows {
            csv.push_str(&format!("{email},{first},{last}{eol}"));
        }
        let expected = sequential(csv.as_bytes());
        let (found, _) = checked(csv.as_bytes(), part_bytes, threads);
        prop_assert_eq!(found, expected);
    }
}
