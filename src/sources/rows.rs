//! What each CSV row becomes — a user to provision, an invalid row, or a row replaced by a later
//! one for the same userName — and the report lines for those that are not provisioned.
//! Shared by the Lambda's S3 path and the CLI so both report the same way.

use super::csv::Row;
use super::fields::RowError;
use super::last_lines::LastLines;
use crate::report::ReportLine;
use crate::user::User;

/// The fate of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowFate {
    /// Valid and the last row for its userName: provision it.
    Provision(User),
    /// Failed validation.
    Invalid(RowError),
    /// Valid, but a later row (`by`) has the same userName: the last row wins.
    Superseded {
        /// Line of the row that wins.
        by: u64,
        /// The user this row held.
        user: User,
    },
}

/// Decides a row's fate given the last line of every userName in the file.
pub fn fate(row: Row, last: &LastLines) -> RowFate {
    match row.result {
        Err(error) => RowFate::Invalid(error),
        Ok(user) => match last.superseded_by(&user, row.line) {
            Some(by) => RowFate::Superseded { by, user },
            None => RowFate::Provision(user),
        },
    }
}

/// Why a superseded row is not provisioned.
pub fn superseded_reason(by: u64) -> String {
    format!("superseded by line {by}: the last row for a userName wins")
}

/// The report line of an invalid row.
pub fn invalid_line(source: &str, line: u64, error: &RowError) -> ReportLine {
    let mut report = ReportLine::new(source, "invalid", error.to_string());
    report.row = Some(line);
    report
}

/// The report line of a row replaced by a later one.
pub fn duplicate_line(source: &str, line: u64, by: u64, user: &User) -> ReportLine {
    let mut report = ReportLine::new(source, "duplicate", superseded_reason(by));
    report.row = Some(line);
    report.user_name = Some(user.user_name.clone());
    report
}

/// The one report line listing columns that match no field (ignored).
pub fn ignored_columns_line(source: &str, columns: &[impl AsRef<str>]) -> ReportLine {
    let list = columns
        .iter()
        .map(|c| format!("{:?}", c.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    ReportLine::new(
        source,
        "ignored",
        format!("columns that match no field were ignored: {list}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::last_lines_by_user;
    use crate::sources::CsvSource;

    #[test]
    fn last_row_wins_and_the_others_are_reported() {
        let csv = "email,first_name,last_name\nA@x.org,A,One\nbad,B,Two\na@x.org,A,Three\n";
        let last = last_lines_by_user(csv.as_bytes()).unwrap();
        let fates: Vec<(u64, RowFate)> = CsvSource::new(csv.as_bytes())
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                (row.line, fate(row, &last))
            })
            .collect();
        assert!(matches!(&fates[0], (2, RowFate::Superseded { by: 4, .. })));
        assert!(matches!(&fates[1], (3, RowFate::Invalid(_))));
        assert!(matches!(&fates[2], (4, RowFate::Provision(u)) if u.last_name == "Three"));
        if let (line, RowFate::Superseded { by, user }) = &fates[0] {
            let report = duplicate_line("f.csv", *line, *by, user);
            assert_eq!((report.status.as_str(), report.row), ("duplicate", Some(2)));
            assert!(report.reason.contains("line 4"));
        }
        let ignored = ignored_columns_line("f.csv", &["Shoe size"]);
        assert!(ignored.reason.contains("\"Shoe size\""));
    }
}
