//! Runs as AWS runs them, in process, against moto (S3, SQS, DynamoDB, EventBridge) and
//! scim2-server: every upload or rerun ends with exactly one summary object and one event whose
//! counts equal the file's rows, whatever faults, crashes and redeliveries happened on the way;
//! full sync deactivates exactly the managed users absent from the file; the guard holds a
//! truncated file until it is approved, and a newer file supersedes a held run.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use scim_bulk_provisioner::lambda::State;
use serde_json::{json, Value};
use support::aws::{
    approval_event, bearer_secret, capture_run_events, create_ledger_table, invoke, list_keys,
    put_object, run_events, run_queue, s3_put_event_seq, start_stack, upload_and_run, Stack,
    BUCKET,
};
use support::faults::{Fault, FaultProxy};
use support::{list_users, post_user, start_scim2_server, ScimOptions};

const KEY: &str = "hr/staff.csv";
const TABLE: &str = "ledger";

async fn state(stack: &Stack, extra: &[(&str, &str)]) -> State {
    create_ledger_table(&stack.sdk, TABLE).await;
    let mut env = vec![
        ("LEDGER_TABLE", TABLE),
        ("REPORT_BUCKET", BUCKET),
        ("S3_CYCLE_MAX_OPERATIONS", "300"),
    ];
    env.extend_from_slice(extra);
    stack.state(&env)
}

/// Runs the queue until it is empty.
async fn pump(stack: &Stack, state: &State) {
    run_queue(stack, state, Duration::from_secs(240)).await;
}

/// The summary objects under reports/runs/, by key.
async fn summaries(stack: &Stack) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for key in list_keys(&stack.sdk, BUCKET, "reports/runs/").await {
        let text = support::aws::get_text(&stack.sdk, BUCKET, &key).await;
        found.push((key, serde_json::from_str(&text).expect("a summary is JSON")));
    }
    found
}

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {summary}"))
}

fn outcomes_add_up(summary: &Value) {
    let sum: u64 = [
        "invalid",
        "duplicate",
        "created",
        "updated",
        "unchanged",
        "deactivated",
        "skipped",
        "failed",
    ]
    .iter()
    .map(|f| count(summary, f))
    .sum();
    assert_eq!(sum, count(summary, "rows"), "{summary}");
}

/// What the HR file of [`staff`] holds, row by row.
#[derive(Debug, Default)]
struct Expected {
    rows: u64,
    invalid: u64,
    duplicate: u64,
    created: u64,
    updated: u64,
    deactivated: u64,
    skipped: u64,
}

/// `n` people: every 50th row invalid; every 25th person first appears in an earlier row with
/// another title (a duplicate); every 20th a leaver (every other one of them in the tenant
/// beforehand, active); every 7th in the tenant beforehand with an older title.
fn staff(n: usize) -> (String, Vec<Value>, Expected) {
    let mut csv = String::from("email,first_name,last_name,title,status\n");
    let mut existing = Vec::new();
    let mut e = Expected::default();
    for i in 0..n {
        let email = format!("person{i:05}@example.com");
        if i % 50 == 1 {
            csv.push_str(&format!(
                "not-an-email-{i},Given{i},Family{i},Agent,active\n"
            ));
            e.rows += 1;
            e.invalid += 1;
            continue;
        }
        let leaver = i % 20 == 3;
        let status = if leaver { "leaver" } else { "active" };
        if i % 25 == 2 {
            csv.push_str(&format!("{email},Given{i},Family{i},Trainee,active\n"));
            e.rows += 1;
            e.duplicate += 1;
        }
        csv.push_str(&format!(
            "{email},Given{i},Family{i},Agent {},{status}\n",
            i % 5
        ));
        e.rows += 1;
        let in_tenant = (leaver && i % 40 == 3) || (!leaver && i % 7 == 0);
        if in_tenant {
            existing.push(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email.to_uppercase(),
                "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
                "emails": [{"value": email, "type": "work", "primary": true}],
                "title": "Old title",
                "active": true,
            }));
        }
        match (leaver, in_tenant) {
            (true, true) => e.deactivated += 1,
            (true, false) => e.skipped += 1,
            (false, true) => e.updated += 1,
            (false, false) => e.created += 1,
        }
    }
    (csv, existing, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_ends_with_one_summary_and_one_event_whose_counts_are_the_files_rows() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    let state = state(&stack, &[]).await;
    let events = capture_run_events(&stack.sdk).await;
    let (csv, existing, expected) = staff(2_000);
    for user in &existing {
        post_user(&scim.base_url, &scim.token, user).await;
    }
    put_object(&stack.sdk, BUCKET, KEY, csv).await;

    // Faults the tenant may throw at any request: throttling, outages, lost results.
    proxy.inject_times("POST", "/Bulk", Fault::throttled("1"), 3);
    proxy.inject_times("POST", "/Bulk", Fault::status(503), 3);
    proxy.inject_times("POST", "/Bulk", Fault::DropBulkOps(4), 2);
    proxy.inject_times("POST", "/Bulk", Fault::AppliedButFailed, 2);

    // The upload's first delivery crashes part-way (the invocation is cut off); Lambda delivers
    // the event again, and then once more after everything is done.
    let upload = s3_put_event_seq(BUCKET, KEY, "0001");
    let crashed = tokio::time::timeout(
        Duration::from_millis(1500),
        invoke(&state, upload.clone(), "s3-1"),
    )
    .await;
    assert!(crashed.is_err(), "the first delivery was to be cut off");
    invoke(&state, upload.clone(), "s3-2")
        .await
        .expect("the redelivered upload");
    pump(&stack, &state).await;
    invoke(&state, upload.clone(), "s3-3")
        .await
        .expect("a late duplicate");
    pump(&stack, &state).await;

    let found = summaries(&stack).await;
    assert_eq!(found.len(), 1, "exactly one summary: {found:?}");
    let (key, first) = &found[0];
    let run_id = first["run_id"].as_str().expect("run id").to_string();
    assert_eq!(key, &format!("reports/runs/{run_id}.json"));
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["source"], format!("s3://{BUCKET}/{KEY}"));
    outcomes_add_up(first);
    assert_eq!(count(first, "rows"), expected.rows);
    assert_eq!(count(first, "invalid"), expected.invalid);
    assert_eq!(count(first, "duplicate"), expected.duplicate);
    assert_eq!(count(first, "deactivated"), expected.deactivated);
    assert_eq!(count(first, "skipped"), expected.skipped);
    assert_eq!(count(first, "failed"), 0, "{first}");
    assert_eq!(count(first, "pending"), 0, "{first}");
    // A result lost after the tenant applied it comes back as `unchanged` on its retry: the
    // writes are there either way.
    let (created, updated, unchanged) = (
        count(first, "created"),
        count(first, "updated"),
        count(first, "unchanged"),
    );
    assert_eq!(
        created + updated + unchanged,
        expected.created + expected.updated,
        "{first}"
    );
    assert!(
        created <= expected.created && updated <= expected.updated,
        "{first}"
    );
    assert!(count(first, "requests") > 0, "{first}");
    assert!(
        !first["reports"].as_array().expect("reports").is_empty(),
        "{first}"
    );
    let users = list_users(&scim.base_url, &scim.token).await;
    let inactive = users.iter().filter(|u| u["active"] == false).count() as u64;
    assert_eq!(
        users.len() as u64,
        expected.created + expected.updated + expected.deactivated
    );
    assert_eq!(inactive, expected.deactivated);

    let put = run_events(&stack.sdk, &events).await;
    assert_eq!(put.len(), 1, "exactly one event: {put:?}");
    assert_eq!(put[0]["source"], "scim-bulk-provisioner");
    assert_eq!(put[0]["detail-type"], "Provisioning Run Completed");
    assert_eq!(
        &put[0]["detail"], first,
        "the event's detail is the summary"
    );

    // An EventBridge rerun of the same file is a run of its own: everything is unchanged now.
    let rerun = json!({"id": "rerun-0001", "detail-type": "Scheduled Event", "source": "aws.events",
                       "detail": {"bucket": BUCKET, "key": KEY}});
    invoke(&state, rerun.clone(), "rerun-1")
        .await
        .expect("the rerun");
    pump(&stack, &state).await;
    invoke(&state, rerun, "rerun-2")
        .await
        .expect("the rerun delivered twice");
    pump(&stack, &state).await;
    let found = summaries(&stack).await;
    assert_eq!(found.len(), 2, "{found:?}");
    let second = &found
        .iter()
        .find(|(_, s)| s["run_id"] != run_id.as_str())
        .expect("the rerun's summary")
        .1;
    outcomes_add_up(second);
    assert_eq!(count(second, "rows"), expected.rows);
    assert_eq!(
        count(second, "unchanged"),
        expected.created + expected.updated + expected.deactivated,
        "{second}"
    );
    assert_eq!(
        count(second, "created") + count(second, "updated"),
        0,
        "{second}"
    );
    assert_eq!(count(second, "deactivated"), 0, "{second}");
    assert_eq!(count(second, "skipped"), expected.skipped, "{second}");
    assert_eq!(count(second, "invalid"), expected.invalid);
    assert_eq!(count(second, "duplicate"), expected.duplicate);
    let put = run_events(&stack.sdk, &events).await;
    assert_eq!(put.len(), 1, "one more event: {put:?}");
    assert_eq!(&put[0]["detail"], second);
}

/// `people` (indices into 0..n) as an HR file, all active.
fn file_of(people: impl Iterator<Item = usize>) -> String {
    let mut csv = String::from("email,first_name,last_name,title\n");
    for i in people {
        csv.push_str(&format!(
            "member{i:04}@example.com,Given{i},Family{i},Agent\n"
        ));
    }
    csv
}

/// The userNames (folded) of the tenant's inactive users.
async fn inactive(scim: &support::ScimServer) -> BTreeSet<String> {
    list_users(&scim.base_url, &scim.token)
        .await
        .iter()
        .filter(|u| u["active"] == false)
        .filter_map(|u| u["userName"].as_str().map(str::to_lowercase))
        .collect()
}

fn names(people: impl Iterator<Item = usize>) -> BTreeSet<String> {
    people
        .map(|i| format!("member{i:04}@example.com"))
        .collect()
}

async fn summary_of(stack: &Stack, run_id: &str) -> Value {
    let text =
        support::aws::get_text(&stack.sdk, BUCKET, &format!("reports/runs/{run_id}.json")).await;
    serde_json::from_str(&text).expect("summary JSON")
}

/// The run id of the only event in `put` with this detail-type.
fn only_event(put: &[Value], detail_type: &str) -> Value {
    let matching: Vec<&Value> = put
        .iter()
        .filter(|e| e["detail-type"] == detail_type)
        .collect();
    assert_eq!(matching.len(), 1, "one {detail_type}: {put:?}");
    assert_eq!(put.len(), 1, "and nothing else: {put:?}");
    matching[0]["detail"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_deactivates_the_absent_and_the_guard_holds_a_truncated_file_until_approved() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = state(&stack, &[("SYNC_MODE", "full")]).await;
    let events = capture_run_events(&stack.sdk).await;
    let n = 200;
    // Someone the deployment never provisioned: full sync never touches them.
    post_user(
        &scim.base_url,
        &scim.token,
        &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "admin@example.com", "active": true,
                "emails": [{"value": "admin@example.com", "primary": true}]}),
    )
    .await;

    // 1. Everyone: created, nothing absent.
    upload_and_run(&stack, &state, KEY, file_of(0..n), "01").await;
    let done = only_event(
        &run_events(&stack.sdk, &events).await,
        "Provisioning Run Completed",
    );
    assert_eq!(count(&done, "created"), n as u64, "{done}");
    assert!(inactive(&scim).await.is_empty());

    // 2. Five people missing: exactly those five are deactivated (5 of 200: under the guard).
    let missing = [150, 160, 170, 180, 199];
    let complete = || file_of((0..n).filter(|i| !missing.contains(i)));
    upload_and_run(&stack, &state, KEY, complete(), "02").await;
    let done = only_event(
        &run_events(&stack.sdk, &events).await,
        "Provisioning Run Completed",
    );
    assert_eq!(done["absent"]["deactivated"], 5, "{done}");
    assert_eq!(count(&done, "unchanged"), (n - 5) as u64, "{done}");
    assert_eq!(inactive(&scim).await, names(missing.into_iter()));

    // 3. A truncated export (the first 40% of the rows): held, nothing deactivated (the missing
    // five are past its end, so none of them comes back).
    let kept = n * 40 / 100;
    upload_and_run(&stack, &state, KEY, file_of(0..kept), "03").await;
    let held = only_event(
        &run_events(&stack.sdk, &events).await,
        "Provisioning Run Held",
    );
    let held_run = held["run_id"].as_str().expect("run id").to_string();
    assert_eq!(held["status"], "held", "{held}");
    let absent_now = (kept..n).filter(|i| !missing.contains(i)).count() as u64;
    assert_eq!(held["held"]["deactivations"], absent_now, "{held}");
    let sample = held["held"]["sample"].as_array().expect("sample");
    assert!(!sample.is_empty() && sample.len() <= 10, "{held}");
    assert!(
        sample
            .iter()
            .all(|s| s.as_str().is_some_and(|s| s.contains("***"))),
        "masked: {held}"
    );
    assert_eq!(summary_of(&stack, &held_run).await, held);
    assert_eq!(
        inactive(&scim).await,
        names(missing.into_iter()),
        "nothing more deactivated"
    );

    // 4. A newer complete file supersedes the held run: approving it later changes nothing.
    put_object(&stack.sdk, BUCKET, KEY, complete()).await;
    let rerun = json!({"id": "rerun-04", "detail-type": "Scheduled Event", "source": "aws.events",
                       "detail": {"bucket": BUCKET, "key": KEY, "mode": "full"}});
    invoke(&state, rerun, "rerun-4").await.expect("rerun");
    pump(&stack, &state).await;
    let done = only_event(
        &run_events(&stack.sdk, &events).await,
        "Provisioning Run Completed",
    );
    assert_eq!(done["absent"]["total"], 0, "{done}");
    assert_eq!(summary_of(&stack, &held_run).await["status"], "superseded");
    let approve = approval_event(&held_run, "approve-1");
    let refused = invoke(&state, approve, "approve-1")
        .await
        .expect("approval answered");
    assert_eq!(refused["approved"], false, "{refused}");
    pump(&stack, &state).await;
    assert!(run_events(&stack.sdk, &events).await.is_empty());
    assert_eq!(
        inactive(&scim).await,
        names(missing.into_iter()),
        "nothing applied late"
    );

    // 5. The truncated file again, with one person marked a leaver: held — the leaver row waits
    // too —, then approved: exactly the absent users and the leaver go.
    let leaver = 10;
    let mut with_leaver = String::from("email,first_name,last_name,title,status\n");
    for i in 0..kept {
        let status = if i == leaver { "leaver" } else { "active" };
        with_leaver.push_str(&format!(
            "member{i:04}@example.com,Given{i},Family{i},Agent,{status}\n"
        ));
    }
    upload_and_run(&stack, &state, KEY, with_leaver, "05").await;
    let held = only_event(
        &run_events(&stack.sdk, &events).await,
        "Provisioning Run Held",
    );
    let held_run = held["run_id"].as_str().expect("run id").to_string();
    assert_eq!(held["held"]["rows"], 1, "the leaver row waits: {held}");
    assert_eq!(held["held"]["deactivations"], absent_now + 1, "{held}");
    assert_eq!(held["pending"], 1, "{held}");
    assert_eq!(
        inactive(&scim).await,
        names(missing.into_iter()),
        "a held run deactivates nobody, its leaver rows included"
    );
    let approve = approval_event(&held_run, "approve-2");
    let approved = invoke(&state, approve, "approve-2")
        .await
        .expect("approved");
    assert_eq!(approved["approved"], true, "{approved}");
    pump(&stack, &state).await;
    let done = only_event(
        &run_events(&stack.sdk, &events).await,
        "Provisioning Run Completed",
    );
    assert_eq!(done["run_id"], held_run.as_str());
    assert_eq!(done["status"], "completed");
    assert_eq!(done["absent"]["deactivated"], absent_now, "{done}");
    assert_eq!(done["deactivated"], 1, "the leaver row: {done}");
    outcomes_add_up(&done);
    assert_eq!(summary_of(&stack, &held_run).await, done);
    assert_eq!(inactive(&scim).await, names((kept..n).chain([leaver])));
    let admin = list_users(&scim.base_url, &scim.token)
        .await
        .into_iter()
        .find(|u| u["userName"] == "admin@example.com")
        .expect("the admin user");
    assert_eq!(
        admin["active"], true,
        "never provisioned here: never touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_for_an_unavailable_tenant_instead_of_failing() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    let state = state(&stack, &[("RETRY_BASE_SECONDS", "0")]).await;
    let events = capture_run_events(&stack.sdk).await;
    let (csv, _, expected) = staff(60);
    put_object(&stack.sdk, BUCKET, KEY, csv).await;

    // The tenant is down when the file arrives: the run cannot take its census.
    proxy.inject_always("GET", "/ServiceProviderConfig", Fault::status(503));
    let answer = invoke(&state, s3_put_event_seq(BUCKET, KEY, "w1"), "wait-1")
        .await
        .expect("an outage is waited for, not an error");
    let waiting = &answer["objects"][0];
    assert!(
        waiting["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("503")),
        "{answer}"
    );
    assert!(summaries(&stack).await.is_empty());
    assert_eq!(
        support::aws::queue_depth(&stack.sdk, &stack.queues.url).await,
        1
    );

    // Back up: the continuation starts the run from the first row.
    proxy.clear_faults();
    pump(&stack, &state).await;
    let put = run_events(&stack.sdk, &events).await;
    assert_eq!(put.len(), 1, "{put:?}");
    let done = &put[0]["detail"];
    assert_eq!(done["run_id"], waiting["run_id"], "the same run");
    outcomes_add_up(done);
    assert_eq!(count(done, "rows"), expected.rows);
    assert_eq!(
        count(done, "created"),
        expected.created + expected.updated,
        "{done}"
    );
    assert_eq!(count(done, "invalid"), expected.invalid);
    assert_eq!(count(done, "duplicate"), expected.duplicate);
}
