//! `demo`: the bundled sample into the embedded tenant, through the real pipeline, ends with a
//! summary and a check that nothing was lost.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_scim-bulk-provisioner");

#[test]
fn demo_on_200_rows_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("demo.jsonl");
    let out = Command::new(BIN)
        .args(["demo", "--rows", "200", "--report"])
        .arg(&report)
        // Run from elsewhere: the sample is built into the binary.
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for expected in [
        "Summary",
        "  rows read            200",
        "created",
        "deactivated",
        "429s met",
        "requests sent",
        "wall time",
        "Nothing lost: ",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in\n{stdout}");
    }
    // Progress went to stderr as plain lines (not a terminal).
    assert!(stderr.contains("cycle 1:"), "{stderr}");
    assert!(
        stderr.contains("Embedded SCIM tenant at http://127.0.0.1:"),
        "{stderr}"
    );
    // Invalid rows of the sample are in the report with their lines.
    let lines = std::fs::read_to_string(&report).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"status\":\"invalid\"") && l.contains("\"row\":")),
        "{lines}"
    );
}

#[test]
fn demo_json_is_machine_readable() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--rows",
            "120",
            "--json",
            "--quiet",
            "--error-rate",
            "0",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["nothing_lost"], true, "{value}");
    assert_eq!(value["rows"], 120);
    let done = [
        "created",
        "updated",
        "deactivated",
        "skipped",
        "failed",
        "invalid",
    ]
    .iter()
    .map(|k| value[k].as_u64().unwrap())
    .sum::<u64>();
    assert_eq!(done, 120, "every row is accounted for once: {value}");
    assert_eq!(value["failed"], 0);
    assert!(value["verification"]["checked"].as_u64().unwrap() > 100);
    assert!(
        out.stderr.is_empty(),
        "--quiet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_rejects_a_bad_error_rate() {
    let out = Command::new(BIN)
        .args(["demo", "--error-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--error-rate"));
}
