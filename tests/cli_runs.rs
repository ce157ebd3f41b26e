//! `status` and `approve` as an operator runs them (the released binary, AWS from the
//! environment: moto here) against runs the function recorded.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use support::aws::{
    bearer_secret, capture_run_events, create_ledger_table, get_text, invoke, run_events,
    run_queue, start_stack, upload_and_run, Stack, BUCKET,
};
use support::{list_users, start_scim2_server, ScimOptions};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bulk-provisioner");
const KEY: &str = "hr/team.csv";
const TABLE: &str = "ledger";

fn cli(stack: &Stack, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AWS_ENDPOINT_URL", &stack.moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("LEDGER_TABLE")
        .env_remove("EVENT_BUS_NAME")
        .output()
        .expect("the binary runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn team(people: &[usize]) -> String {
    let mut csv = String::from("email,first_name,last_name\n");
    for i in people {
        csv.push_str(&format!("mate{i}@example.com,Mate,Number{i}\n"));
    }
    csv.push_str("broken-row,Nobody,Here\n");
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_runs_and_approve_releases_a_held_one() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    create_ledger_table(&stack.sdk, TABLE).await;
    // Full sync, and a guard that holds any deactivation.
    let state = stack.state(&[
        ("LEDGER_TABLE", TABLE),
        ("REPORT_BUCKET", BUCKET),
        ("SYNC_MODE", "full"),
        ("MAX_DEACTIVATIONS", "0"),
    ]);
    let events = capture_run_events(&stack.sdk).await;

    upload_and_run(&stack, &state, KEY, team(&[1, 2, 3]), "s1").await;
    let completed = run_events(&stack.sdk, &events).await;
    assert_eq!(completed.len(), 1, "{completed:?}");
    let first = completed[0]["detail"].clone();
    let first_id = first["run_id"].as_str().expect("run id").to_string();

    // `status RUN_ID --json` is the summary object; without an id, the latest runs as text.
    let out = cli(&stack, &["status", &first_id, "--table", TABLE, "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let written: Value = serde_json::from_str(
        &get_text(&stack.sdk, BUCKET, &format!("reports/runs/{first_id}.json")).await,
    )
    .expect("summary JSON");
    assert_eq!(shown, written);
    assert_eq!(
        (shown["created"].as_u64(), shown["invalid"].as_u64()),
        (Some(3), Some(1))
    );
    let out = cli(&stack, &["status", "--table", TABLE]);
    let (stdout, _) = text(&out);
    assert!(
        out.status.success() && stdout.contains(&first_id),
        "{stdout}"
    );
    assert!(
        stdout.contains("completed") && stdout.contains("created 3"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("mate1@"),
        "no userName in the overview: {stdout}"
    );

    // Unknown runs and bad ids are usage errors that say so.
    let out = cli(&stack, &["status", "run-nothing", "--table", TABLE]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("no run run-nothing"),
        "{:?}",
        text(&out)
    );
    let out = cli(&stack, &["approve", "../etc", "--table", TABLE]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not a run id"), "{:?}", text(&out));
    let out = cli(&stack, &["approve", &first_id, "--table", TABLE]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not held"), "{:?}", text(&out));

    // Mate 3 leaves the file: one deactivation, more than the guard allows: held.
    upload_and_run(&stack, &state, KEY, team(&[1, 2]), "s2").await;
    let held = run_events(&stack.sdk, &events).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["detail-type"], "Provisioning Run Held");
    let held_id = held[0]["detail"]["run_id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = cli(&stack, &["status", &held_id, "--table", TABLE]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("HELD: 1 deactivation"), "{stdout}");
    assert!(
        stdout.contains("m***@example.com") && !stdout.contains("mate3@"),
        "{stdout}"
    );

    // `approve` puts the approval on the bus; the rule hands it to the function.
    let out = cli(
        &stack,
        &["approve", &held_id, "--table", TABLE, "--bus", "default"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Approval of"), "{stdout}");
    let approvals = run_events(&stack.sdk, &events).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["detail"], json!({"approve_run": held_id}));
    invoke(&state, approvals[0].clone(), "approval")
        .await
        .expect("the approval's invocation");
    run_queue(&stack, &state, Duration::from_secs(60)).await;
    let done = run_events(&stack.sdk, &events).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["detail-type"], "Provisioning Run Completed");
    assert_eq!(done[0]["detail"]["absent"]["deactivated"], 1, "{done:?}");
    let mate3 = list_users(&scim.base_url, &scim.token)
        .await
        .into_iter()
        .find(|u| u["userName"] == "mate3@example.com")
        .expect("mate 3");
    assert_eq!(mate3["active"], false);
    let out = cli(&stack, &["status", &held_id, "--table", TABLE, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["status"], "completed");
}
