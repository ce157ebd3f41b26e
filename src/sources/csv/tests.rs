//! Unit tests of the CSV reader: headers, delimiters, encodings, bad rows and resume points.

use super::*;
use crate::sources::last_lines_by_user;
use proptest::prelude::*;

const BASIC: &[u8] = include_bytes!("../../../tests/fixtures/users_basic.csv");
const MESSY: &[u8] = include_bytes!("../../../tests/fixtures/users_messy.csv");
const SEMICOLON: &[u8] = include_bytes!("../../../tests/fixtures/users_semicolon.csv");
const TAB: &[u8] = include_bytes!("../../../tests/fixtures/users_tab.tsv");

fn rows(data: &[u8]) -> Vec<Row> {
    CsvSource::new(data)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn lines(rows: &[Row]) -> Vec<u64> {
    rows.iter().map(|r| r.line).collect()
}

fn error(row: &Row) -> String {
    row.result.as_ref().unwrap_err().to_string()
}

const HEADER: &str = "email,first_name,last_name\n";

#[test]
fn basic_fixture_maps_every_column() {
    let rows = rows(BASIC);
    assert_eq!(lines(&rows), [2, 3, 4, 5, 6]);
    let users: Vec<&User> = rows.iter().map(|r| r.result.as_ref().unwrap()).collect();
    assert_eq!(users[0].user_name, "ada@example.com");
    assert_eq!(users[0].phone.as_deref(), Some("+44 20 7946 0001"));
    assert_eq!(users[1].user_name, "ghopper");
    assert_eq!(users[1].external_id.as_deref(), Some("hr-002"));
    assert_eq!(users[2].title, None);
    assert_eq!(users[3].department.as_deref(), Some("Flight Research"));
    assert!(!users[4].active);
    assert!(CsvSource::new(BASIC).unwrap().unknown_columns().is_empty());
}

#[test]
fn messy_fixture_bom_crlf_aliases_quotes_and_duplicates() {
    let source = CsvSource::new(MESSY).unwrap();
    assert_eq!(source.unknown_columns(), ["Cost Centre"]);
    let rows: Vec<Row> = source.map(Result::unwrap).collect();
    // Header 1; grace spans 3-4; blank line 6 and the `,,,` line 8 are skipped.
    assert_eq!(lines(&rows), [2, 3, 5, 7, 9, 10]);
    let ada = rows[0].result.as_ref().unwrap();
    assert_eq!(ada.email, "ada@example.com");
    assert_eq!(ada.title.as_deref(), Some("Analyst, Research"));
    assert_eq!(ada.employee_number.as_deref(), Some("E001"));
    let grace = rows[1].result.as_ref().unwrap();
    assert_eq!(grace.first_name, "Grace \"Amazing\"");
    assert_eq!(grace.title.as_deref(), Some("Rear\nAdmiral"));
    assert!(error(&rows[2]).contains("email"), "{}", error(&rows[2]));
    let leaver = rows[3].result.as_ref().unwrap();
    assert!(!leaver.active);
    assert_eq!(leaver.last_name, "Byron");
    let zoe = rows[4].result.as_ref().unwrap();
    assert_eq!((zoe.first_name.as_str(), zoe.active), ("Zoë", false));
    assert!(
        error(&rows[5]).contains("\"on leave\""),
        "{}",
        error(&rows[5])
    );

    let last = last_lines_by_user(MESSY).unwrap();
    assert_eq!(last.last_line(ada), Some(7));
    assert!(last.superseded_by(ada, 2).is_some());
    assert_eq!(last.superseded_by(ada, 2), Some(7));
    assert!(last.superseded_by(leaver, 7).is_none());
    assert!(last.superseded_by(grace, 3).is_none());
    assert_eq!(last.len(), 3);
}

#[test]
fn semicolon_and_tab_delimiters_are_detected() {
    let source = CsvSource::new(SEMICOLON).unwrap();
    assert_eq!(source.delimiter(), b';');
    let rows: Vec<Row> = source.map(Result::unwrap).collect();
    // `ja` is not an accepted word; the comma inside the unquoted field is plain text.
    assert!(error(&rows[0]).contains("\"ja\""), "{}", error(&rows[0]));
    let bernd = rows[1].result.as_ref().unwrap();
    assert_eq!(bernd.department.as_deref(), Some("Einkauf; Zentral"));
    assert!(!bernd.active);

    let source = CsvSource::new(TAB).unwrap();
    assert_eq!(source.delimiter(), b'\t');
    let users: Vec<User> = source.map(|r| r.unwrap().result.unwrap()).collect();
    assert_eq!(users[0].user_name, "chloe.dubois@corp.example.fr");
    assert!(users[0].active);
    assert_eq!(users[1].user_name, "denis@example.fr");
    assert!(!users[1].active);

    let quoted_comma = b"\"Name, Last\";email;first_name;last_name\nx;a@example.com;A;B\n";
    assert_eq!(CsvSource::new(&quoted_comma[..]).unwrap().delimiter(), b';');
}

#[test]
fn excel_sep_line_sets_the_delimiter_and_counts_as_a_line() {
    let data = b"sep=|\r\nemail|first_name|last_name\r\na@example.com|A|B\r\n";
    let source = CsvSource::new(&data[..]).unwrap();
    assert_eq!(source.delimiter(), b'|');
    let rows: Vec<Row> = source.map(Result::unwrap).collect();
    assert_eq!(lines(&rows), [3]);
    assert!(rows[0].result.is_ok());
}

#[test]
fn line_numbers_follow_multi_line_records_and_every_line_break() {
    let record = "a@example.com,\"A\nwith\nbreaks\",B\nb@example.com,B,C\n\nc@example.com,C,D";
    for eol in ["\n", "\r\n", "\r"] {
        let data = format!("{HEADER}{record}").replace('\n', eol);
        let rows = rows(data.as_bytes());
        assert_eq!(lines(&rows), [2, 5, 7], "{eol:?}");
        let a = rows[0].result.as_ref().unwrap();
        assert_eq!(a.first_name, "A\nwith\nbreaks");
    }
    let leading_blank = format!("\n\n{HEADER}a@example.com,A,B\n");
    assert_eq!(lines(&rows(leading_blank.as_bytes())), [4]);
    // An unclosed quote swallows the rest of the file into one record, which keeps its line.
    let unclosed = format!("{HEADER}a@example.com,A,B\nb@example.com,\"B\n\nc,C,D\n");
    let rows = rows(unclosed.as_bytes());
    assert_eq!(lines(&rows), [2, 3]);
    assert_eq!(
        rows[1].result,
        Err(RowError::FieldCount {
            expected: 3,
            found: 2
        })
    );
}

#[test]
fn invalid_utf8_is_reported_for_its_row_only() {
    let mut data = HEADER.as_bytes().to_vec();
    data.extend_from_slice(b"a@example.com,A,B\nb@example.com,Jos\xE9,C\nc@example.com,C,D\n");
    let rows = rows(&data);
    assert_eq!(lines(&rows), [2, 3, 4]);
    assert!(rows[0].result.is_ok() && rows[2].result.is_ok());
    assert_eq!(
        rows[1].result,
        Err(RowError::NotUtf8 {
            column: "first_name".into()
        })
    );
    // Bad bytes in an ignored column harm nobody.
    let data = b"email,first_name,last_name,notes\na@example.com,A,B,\xFF\n";
    assert!(super::tests::rows(data)[0].result.is_ok());
    // A character cut in two by a delimiter: the record's bytes joined are valid UTF-8 (the
    // record is checked as a whole first), yet each half is not text.
    let data = b"email,first_name,notes,last_name\na@example.com,A,x\xC3,\xA9\n";
    assert_eq!(
        super::tests::rows(data)[0].result,
        Err(RowError::NotUtf8 {
            column: "last_name".into()
        })
    );
}

#[test]
fn wrong_field_counts_are_row_errors() {
    let data = format!("{HEADER}a@example.com,A,B,extra\nb@example.com,B\nc@example.com,C,D\n");
    let rows = rows(data.as_bytes());
    assert_eq!(
        rows[0].result,
        Err(RowError::FieldCount {
            expected: 3,
            found: 4
        })
    );
    assert!(error(&rows[1]).contains("2 fields") && error(&rows[1]).contains("has 3"));
    assert!(rows[2].result.is_ok());
}

#[test]
fn a_field_of_several_megabytes_is_reported_and_the_file_goes_on() {
    let big = "x".repeat(5 * 1024 * 1024);
    let data = format!("{HEADER}a@example.com,\"{big}\",B\nb@example.com,B,C\n");
    let rows = rows(data.as_bytes());
    assert_eq!(lines(&rows), [2, 3]);
    assert!(matches!(
        rows[0].result,
        Err(RowError::FieldTooLong { ref column, bytes }) if column == "first_name" && bytes == big.len()
    ));
    assert!(rows[1].result.is_ok());
}

#[test]
fn header_only_and_empty_files() {
    assert!(rows(HEADER.as_bytes()).is_empty());
    assert!(rows(b"email,first_name,last_name").is_empty());
    for empty in [&b""[..], b"\xEF\xBB\xBF", b"\n\r\n\n", b",,,\n ,\n"] {
        assert_eq!(
            CsvSource::new(empty).err(),
            Some(FileError::Empty),
            "{empty:?}"
        );
    }
}

#[test]
fn missing_required_columns_are_all_named_with_the_headers_found() {
    let err = CsvSource::new(&b"Email,Name,Dept\na@example.com,Ada,R\n"[..])
        .err()
        .unwrap();
    assert_eq!(
        err,
        FileError::MissingColumns {
            missing: vec![Field::FirstName, Field::LastName],
            found: vec!["\"Email\"".into(), "\"Name\"".into(), "\"Dept\"".into()],
            looks_like_data: false,
        }
    );
    let text = err.to_string();
    assert!(text.contains("first_name, last_name"), "{text}");
    assert!(text.contains("\"Name\""), "{text}");
}

#[test]
fn a_file_without_a_header_row_is_described_without_its_data() {
    let csv = "ada.lovelace@example.com,Ada,Lovelace,+44 20 7946 0958\nbob@example.com,Bob,B,1\n";
    let err = CsvSource::new(csv.as_bytes()).err().unwrap();
    let text = err.to_string();
    assert_eq!(
        text,
        "missing required column(s) email, first_name, last_name; the first line looks like \
         data, not a header (an email address, text, text, a number): add a header row naming \
         the columns (email, first_name, last_name, ...)"
    );
    let debug = format!("{err:?}");
    for personal in ["ada", "Ada", "Lovelace", "7946", "example.com"] {
        assert!(!debug.contains(personal), "{personal} in {debug}");
    }
    // Bounded: a line of many cells lists 30 and counts the rest.
    let wide = format!("{}\n", vec!["x@example.com"; 100].join(","));
    let text = CsvSource::new(wide.as_bytes()).err().unwrap().to_string();
    assert!(text.contains("and 70 more"), "{text}");
    assert!(text.len() < 800, "{text}");
}

#[test]
fn two_columns_for_one_field_are_rejected() {
    let err = CsvSource::new(&b"Email,Work Email,first_name,last_name\n"[..])
        .err()
        .unwrap();
    assert_eq!(
        err,
        FileError::DuplicateColumn {
            field: Field::Email,
            first: "Email".into(),
            second: "Work Email".into()
        }
    );
}

#[test]
fn files_that_are_not_utf8_text_are_named() {
    let cases: [(&[u8], &str); 5] = [
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel"),
        (b"\xFF\xFEe\x00m\x00", "UTF-16"),
        (b"\x1F\x8B\x08\x00", "gzip"),
        (b"Email,Pr\xE9nom,Nom\n", "not valid UTF-8"),
        (b"email\x00,first_name,last_name\n", "binary"),
    ];
    for (data, hint) in cases {
        let err = CsvSource::new(data).err().unwrap();
        assert!(matches!(err, FileError::NotText { .. }), "{err}");
        assert!(err.to_string().contains(hint), "{err}");
    }
}

struct FailingReader {
    data: Vec<u8>,
    served: bool,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served {
            return Err(io::Error::other("connection reset"));
        }
        self.served = true;
        buf[..self.data.len()].copy_from_slice(&self.data);
        Ok(self.data.len())
    }
}

#[test]
fn an_io_error_ends_the_iteration_with_one_error() {
    let data = format!("{HEADER}a@example.com,A,B\n").into_bytes();
    let mut source = CsvSource::new(FailingReader {
        data,
        served: false,
    })
    .unwrap();
    assert_eq!(source.next().unwrap().unwrap().line, 2);
    let err = source.next().unwrap().unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert!(source.next().is_none());
}

/// A printable value without leading or trailing whitespace (values are trimmed on read).
fn text() -> impl Strategy<Value = String> {
    "[^\\s\\p{C}]([^\\p{C}]{0,20}[^\\s\\p{C}])?"
}

fn user() -> impl Strategy<Value = User> {
    let email = "[a-z0-9._%+-]{1,12}@[a-z0-9-]{1,10}\\.[a-z]{2,5}";
    (
        (
            email,
            text(),
            text(),
            proptest::option::of(text()),
            any::<bool>(),
        ),
        proptest::collection::vec(proptest::option::of(text()), 6),
    )
        .prop_map(|((email, first, last, user_name, active), optional)| User {
            user_name: user_name.unwrap_or_else(|| email.clone()),
            email,
            first_name: first,
            last_name: last,
            active,
            display_name: optional[0].clone(),
            external_id: optional[1].clone(),
            title: optional[2].clone(),
            department: optional[3].clone(),
            employee_number: optional[4].clone(),
            phone: optional[5].clone(),
        })
}

fn write_csv(users: &[User]) -> Vec<u8> {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer
        .write_record(Field::ALL.iter().map(|f| f.name()))
        .unwrap();
    for u in users {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        writer
            .write_record([
                u.email.clone(),
                u.first_name.clone(),
                u.last_name.clone(),
                u.user_name.clone(),
                opt(&u.display_name),
                opt(&u.external_id),
                u.active.to_string(),
                String::new(),
                opt(&u.title),
                opt(&u.department),
                opt(&u.employee_number),
                opt(&u.phone),
            ])
            .unwrap();
    }
    writer.into_inner().unwrap()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(source) = CsvSource::new(&data[..]) {
            for row in source {
                let _ = row.map(|r| r.result.map_err(|e| e.to_string()));
            }
        }
    }

    #[test]
    fn csv_like_bytes_never_panic(data in "(email,first_name,last_name\n)?[a@.,;\t\"\r\n x\u{e9}\u{feff}]{0,300}") {
        if let Ok(source) = CsvSource::new(data.as_bytes()) {
            let lines: Vec<u64> = source.filter_map(Result::ok).map(|r| r.line).collect();
            prop_assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
        }
    }

    #[test]
    fn users_round_trip_through_the_csv_writer(users in proptest::collection::vec(user(), 1..8)) {
        let data = write_csv(&users);
        let read: Vec<User> = rows(&data).into_iter().map(|r| r.result.unwrap()).collect();
        prop_assert_eq!(read, users);
    }

    #[test]
    fn line_numbers_match_the_editor(
        records in proptest::collection::vec((0usize..3, 0usize..3), 1..12),
        eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        final_break in any::<bool>(),
    ) {
        let mut data = format!("email,first_name,last_name{eol}");
        let mut line = 2;
        let mut expected = Vec::new();
        for (i, (blank_before, embedded)) in records.iter().enumerate() {
            data.push_str(&eol.repeat(*blank_before));
            line += *blank_before as u64;
            expected.push(line);
            let name = vec!["x"; embedded + 1].join(eol);
            data.push_str(&format!("u{i}@example.com,\"{name}\",L"));
            line += *embedded as u64;
            if i + 1 < records.len() || final_break {
                data.push_str(eol);
                line += 1;
            }
        }
        prop_assert_eq!(lines(&rows(data.as_bytes())), expected);
    }
}
