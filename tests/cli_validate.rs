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
