//! `validate`: header mapping and row errors, offline, with the exit codes scripts rely on.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bulk-provisioner");

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn validate(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .arg("validate")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn a_good_file_exits_0_and_shows_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "good.csv",
        "Employee ID,First Name,Last Name,Work Email,Status,Cost Centre\n\
         E1,Ada,Lovelace,ada@example.com,Active,C1\n\
         E2,Zoë,\"O'Brien, Jr.\",zoe@example.com,Leaver,C2\n",
    );
    let (code, out, err) = validate(&["--csv", &csv]);
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        "Employee ID  -> employee_number",
        "First Name   -> first_name",
        "Work Email   -> email",
        "Status       -> status",
        "Cost Centre  (ignored: matches no field)",
        "Rows: 2 read, 2 valid, 0 invalid",
    ] {
        assert!(out.contains(expected), "{expected:?} not in\n{out}");
    }
}

#[test]
fn bad_rows_exit_1_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "bad.csv",
        "email,first_name,last_name,status\n\
         ada@example.com,Ada,Lovelace,active\n\
         grace.example.com,Grace,Hopper,active\n\
         \"alan@example.com\",\"Alan\nMathison\",,active\n\
         kat@example.com,Katherine,Johnson,on leave\n\
         ADA@example.com,Ada,Lovelace,leaver\n",
    );
    let (code, out, err) = validate(&["--csv", &csv]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("line 3: email"), "{out}");
    assert!(
        !out.contains("grace.example.com"),
        "addresses are masked: {out}"
    );
    // The quoted line break puts Alan's record on lines 4-5; Katherine is on line 6.
    assert!(out.contains("line 4: last_name is empty"), "{out}");
    assert!(out.contains("line 6: status value \"on leave\""), "{out}");
    assert!(out.contains("line 2: superseded by line 7"), "{out}");
    assert!(out.contains("Rows: 5 read, 2 valid, 3 invalid"), "{out}");

    let (code, json, _) = validate(&["--csv", &csv, "--json"]);
    assert_eq!(code, 1);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let lines: Vec<u64> = value["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 6]);
    assert_eq!(value["columns"][0]["field"], "email");
}

#[test]
fn a_missing_column_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "nolast.csv",
        "Work Email,First Name,Dept\na@x.io,A,Ops\n",
    );
    let (code, out, err) = validate(&["--csv", &csv]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("last_name"), "{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn an_unreadable_file_or_bad_usage_exits_2() {
    let (code, _, err) = validate(&["--csv", "/nonexistent/staff.csv"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/staff.csv"), "{err}");
    let (code, _, err) = validate(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--csv"), "{err}");
}

#[test]
fn help_shows_examples() {
    let out = Command::new(BIN)
        .args(["provision", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:"), "{text}");
    assert!(text.contains("--dry-run"), "{text}");
    assert!(text.contains("SCIM_CREDENTIALS"), "{text}");
}

/// A file of several MiB (so that it is cut into parts checked on several threads): a BOM, CRLF,
/// quoted line breaks, invalid rows and a userName met near the start and near the end. Returns
/// the text and the lines of the invalid rows and of the two rows of the repeated userName.
fn large_file(stray_quote: bool) -> (String, Vec<u64>, (u64, u64)) {
    let mut text = String::from("\u{feff}email,first_name,last_name,title\r\n");
    let (mut line, mut invalid, mut twice) = (2u64, Vec::new(), (0, 0));
    for i in 0..40_000u32 {
        let email = match i {
            5 => {
                twice.0 = line;
                "Twice@Example.com".to_string()
            }
            39_000 => {
                twice.1 = line;
                "twice@example.com".to_string()
            }
            _ if i % 4_999 == 7 => {
                invalid.push(line);
                format!("broken{i}")
            }
            _ => format!("user{i}@example.com"),
        };
        let title = match i % 997 {
            3 => "\"Team\r\nLead, \"\"West\"\"\r\n\"",
            // A quote inside an unquoted field is text, not the start of a quoted one.
            11 if stray_quote => "5\"10 tall",
            _ => "Agent with a fairly long title to make the file a few megabytes",
        };
        text.push_str(&format!("{email},First{i},Last{i},{title}\r\n"));
        line += 1 + title.matches('\n').count() as u64;
    }
    (text, invalid, twice)
}

#[test]
fn a_large_file_checked_in_parallel_gives_exact_lines() {
    for stray_quote in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (text, invalid, (first, last)) = large_file(stray_quote);
        assert!(
            text.len() > 3 << 20,
            "{} bytes: not cut into parts",
            text.len()
        );
        let path = write(dir.path(), "big.csv", &text);
        let (code, out, err) = validate(&["--csv", &path, "--json"]);
        assert_eq!(code, 1, "{err}");
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["rows"], 40_000);
        let lines: Vec<u64> = value["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["line"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, invalid, "stray quote: {stray_quote}");
        let superseded = &value["superseded"];
        assert_eq!(superseded.as_array().unwrap().len(), 1, "{superseded}");
        assert_eq!(superseded[0]["line"], first);
        let by = format!("superseded by line {last}");
        assert!(
            superseded[0]["reason"].as_str().unwrap().contains(&by),
            "{superseded}"
        );
    }
}
