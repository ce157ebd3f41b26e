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

#[test]
fn demo_full_sync_holds_a_truncated_export_then_approves_it() {
    let out = Command::new(BIN)
        .args(["demo", "--rows", "300", "--full-sync", "--json", "--quiet"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let add_up = |s: &serde_json::Value| {
        [
            "invalid",
            "duplicate",
            "created",
            "updated",
            "unchanged",
            "deactivated",
            "skipped",
            "failed",
            "pending",
        ]
        .iter()
        .map(|f| s[*f].as_u64().unwrap_or_else(|| panic!("{f} in {s}")))
        .sum::<u64>()
            == s["rows"].as_u64().unwrap()
    };
    // The upload's summary has the function's shape, and its counts are its rows.
    let run = &json["run"];
    assert_eq!(run["status"], "completed");
    assert_eq!(run["rows"], 300);
    assert!(add_up(run), "{run}");
    let synced = &json["full_sync"];
    let held = &synced["held"];
    assert_eq!(held["status"], "held", "{held}");
    assert!(
        held["held"]["deactivations"].as_u64().unwrap() > 50,
        "{held}"
    );
    assert_eq!(held["deactivated"], 0, "{held}");
    assert!(add_up(held), "{held}");
    let approved = &synced["approved"];
    assert_eq!(approved["status"], "completed");
    assert!(
        approved["absent"]["deactivated"].as_u64().unwrap() > 50,
        "{approved}"
    );
    assert_eq!(approved["pending"], 0);
    assert!(add_up(approved), "{approved}");
    assert_eq!(
        synced["exactly_the_absent_users_deactivated"], true,
        "{synced}"
    );
    let sample = held["held"]["sample"].as_array().expect("a sample");
    assert!(
        !sample.is_empty() && sample.iter().all(|s| s.as_str().unwrap().contains("***")),
        "userNames masked in samples: {sample:?}"
    );
}
