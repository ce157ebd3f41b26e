//! The function in process on S3 uploads and EventBridge reruns, against moto (S3, SQS,
//! Secrets Manager) and scim2-server: a CSV of a few hundred rows driven through the S3
//! invocation and then the work queue (an event-source-mapping loop) to completion.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use scim_bulk_provisioner::lambda::State;
use serde_json::{json, Value};
use support::aws::{
    bearer_secret, invoke, pump_in_process, put_object, report_lines, s3_put_event, start_stack,
    Stack, BUCKET,
};
use support::faults::{Fault, FaultProxy};
use support::{create_user, list_users, start_scim2_server, ScimOptions};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// What a data row should lead to.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Active,
    /// status leaver; `exists`: the user is in the tenant beforehand.
    Leaver {
        exists: bool,
    },
    Invalid,
    /// A later row (this line) has the same userName.
    Superseded(u64),
}

#[derive(Debug, Clone)]
struct Record {
    line: u64,
    email: String,
    first: String,
    last: String,
    title: String,
    department: String,
    employee: String,
    kind: Kind,
}

/// An HR export of `n` people (plus repeated rows) with invalid rows, leavers, duplicate
/// userNames and a quoted multi-line field, and what each row should lead to.
fn hr_export(n: usize) -> (Vec<u8>, Vec<Record>) {
    let mut records = Vec::new();
    for i in 0..n {
        let mut r = Record {
            line: 0,
            email: format!("user{i:03}@example.com"),
            first: format!("Given{i}"),
            last: format!("Family{i}"),
            title: "Agent".into(),
            department: if i == 50 {
                "Sales, \"EMEA\"\nNorth".into()
            } else {
                format!("Dept{}", i % 5)
            },
            employee: format!("E{i:05}"),
            kind: Kind::Active,
        };
        if i % 23 == 7 {
            r.last.clear();
            r.kind = Kind::Invalid;
        } else if i % 31 == 11 {
            r.email = format!("user{i:03}-at-example.com");
            r.kind = Kind::Invalid;
        } else if i % 37 == 5 {
            r.kind = Kind::Invalid; // status "sabbatical"
        } else if i % 17 == 3 {
            r.kind = Kind::Leaver {
                exists: i % 34 == 3,
            };
        }
        records.push((i, r));
    }
    // Some active people appear again at the end with a new title: the last row wins.
    let again: Vec<(usize, Record)> = records
        .iter()
        .filter(|(i, r)| i % 40 == 21 && r.kind == Kind::Active)
        .map(|(i, r)| {
            (
                *i,
                Record {
                    title: "Senior Agent".into(),
                    ..r.clone()
                },
            )
        })
        .collect();
    records.extend(again);

    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    out.write_record([
        "Email Address",
        "First Name",
        "Last Name",
        "Status",
        "Job Title",
        "Department",
        "Employee ID",
        "Badge Colour",
    ])
    .expect("header");
    let mut line = 2;
    for (i, r) in records.iter_mut() {
        r.line = line;
        let status = match r.kind {
            Kind::Leaver { .. } => "leaver",
            Kind::Invalid if *i % 37 == 5 => "sabbatical",
            _ if *i % 2 == 0 => "Active",
            _ => "",
        };
        let fields = [
            &r.email,
            &r.first,
            &r.last,
            status,
            &r.title,
            &r.department,
            &r.employee,
            "blue",
        ];
        out.write_record(fields).expect("row");
        line += 1 + r.department.matches('\n').count() as u64;
    }
    let mut records: Vec<Record> = records.into_iter().map(|(_, r)| r).collect();
    // Earlier rows of a repeated userName are superseded by the last one.
    let mut last_line: HashMap<String, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.kind != Kind::Invalid) {
        last_line.insert(r.email.clone(), r.line);
    }
    for r in records.iter_mut() {
        if let Some(&last) = last_line.get(&r.email) {
            if last > r.line && r.kind != Kind::Invalid {
                r.kind = Kind::Superseded(last);
            }
        }
    }
    (out.into_inner().expect("csv"), records)
}

/// Checks the tenant user by user against the file, and the report against its bad rows.
async fn check_outcome(
    scim_url: &str,
    token: &str,
    stack: &Stack,
    records: &[Record],
    source: &str,
) {
    let users = list_users(scim_url, token).await;
    let mut by_name: HashMap<String, Vec<&Value>> = HashMap::new();
    for user in &users {
        let name = user["userName"].as_str().expect("userName").to_lowercase();
        by_name.entry(name).or_default().push(user);
    }
    let mut expected_users = 0;
    for r in records {
        let found = by_name.get(&r.email).map(Vec::as_slice).unwrap_or_default();
        match r.kind {
            Kind::Active => {
                expected_users += 1;
                assert_eq!(
                    found.len(),
                    1,
                    "line {}: {} must exist exactly once",
                    r.line,
                    r.email
                );
                let u = found[0];
                assert_eq!(u["name"]["givenName"], r.first, "line {}", r.line);
                assert_eq!(u["name"]["familyName"], r.last, "line {}", r.line);
                assert_eq!(u["emails"][0]["value"], r.email, "line {}", r.line);
                assert_eq!(u["title"], r.title, "line {}", r.line);
                assert_eq!(u[ENTERPRISE]["department"], r.department, "line {}", r.line);
                assert_eq!(
                    u[ENTERPRISE]["employeeNumber"], r.employee,
                    "line {}",
                    r.line
                );
                assert_eq!(u["active"], true, "line {}", r.line);
            }
            Kind::Leaver { exists: true } => {
                expected_users += 1;
                assert_eq!(
                    found.len(),
                    1,
                    "line {}: leaver {} must exist once",
                    r.line,
                    r.email
                );
                assert_eq!(
                    found[0]["active"], false,
                    "line {}: leaver must be deactivated",
                    r.line
                );
            }
            Kind::Leaver { exists: false } | Kind::Invalid => {
                assert!(
                    found.is_empty(),
                    "line {}: {} must not be created",
                    r.line,
                    r.email
                );
            }
            Kind::Superseded(_) => {}
        }
    }
    assert_eq!(users.len(), expected_users, "no other user may exist");

    let report = report_lines(&stack.sdk, BUCKET).await;
    let line_of = |status: &str, row: u64| {
        report
            .iter()
            .find(|l| l["status"] == status && l["row"] == row && l["source"] == source)
            .cloned()
    };
    for r in records {
        match r.kind {
            Kind::Invalid => {
                let line = line_of("invalid", r.line)
                    .unwrap_or_else(|| panic!("line {} not reported invalid: {report:#?}", r.line));
                assert!(!line["reason"].as_str().unwrap_or_default().is_empty());
            }
            Kind::Superseded(by) => {
                let line = line_of("duplicate", r.line)
                    .unwrap_or_else(|| panic!("line {} not reported duplicate", r.line));
                assert_eq!(line["user_name"], r.email);
                assert!(
                    line["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(&by.to_string()),
                    "{line}"
                );
            }
            Kind::Leaver { exists: false } => {
                let line = line_of("skipped", r.line)
                    .unwrap_or_else(|| panic!("leaver on line {} not reported skipped", r.line));
                assert_eq!(line["user_name"], r.email);
            }
            _ => {}
        }
    }
    assert!(report.iter().any(|l| l["status"] == "ignored"
        && l["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Badge Colour")));
    let failed: Vec<&Value> = report.iter().filter(|l| l["status"] == "failed").collect();
    assert!(failed.is_empty(), "nothing may fail for good: {failed:#?}");
}

/// Uploads the export, sends the S3 event, then drains the work queue through the function.
async fn provision_file(
    stack: &Stack,
    state: &State,
    records_n: usize,
    scim_url: &str,
    token: &str,
) -> (Vec<Record>, Value) {
    let (csv, records) = hr_export(records_n);
    for r in &records {
        if r.kind == (Kind::Leaver { exists: true }) {
            create_user(scim_url, token, &r.email).await;
        }
    }
    put_object(&stack.sdk, BUCKET, "incoming/hr export.csv", csv).await;
    let response = invoke(
        state,
        s3_put_event(BUCKET, "incoming/hr+export.csv"),
        "s3-req-1",
    )
    .await
    .expect("S3 invocation");
    let pumped = pump_in_process(
        &stack.sdk,
        &stack.queues,
        state,
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    assert!(pumped.errors.is_empty(), "{pumped:?}");
    assert!(
        pumped.invocations > 0,
        "the rest of the file went through the queue"
    );
    (records, response)
}

#[tokio::test]
async fn a_csv_upload_is_provisioned_through_the_queue_exactly_once() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    // REPORT_BUCKET as the template sets it: the rows finished from the queue are reported
    // there only (a bucket is never taken from a message), without it only logged.
    let state = stack.state(&[
        ("S3_CYCLE_MAX_OPERATIONS", "100"),
        ("REPORT_BUCKET", BUCKET),
    ]);
    let (records, response) =
        provision_file(&stack, &state, 300, &scim.base_url, &scim.token).await;
    let object = &response["objects"][0];
    assert_eq!(
        object["source"], "s3://scim-uploads/incoming/hr export.csv",
        "{response}"
    );
    assert_eq!(object["provisioned_now"], 100, "{response}");
    assert!(
        object["deferred_to_queue"].as_u64().unwrap() > 100,
        "{response}"
    );
    assert_eq!(
        object["invalid"],
        records.iter().filter(|r| r.kind == Kind::Invalid).count(),
        "{response}"
    );
    assert!(
        object["report"]
            .as_str()
            .unwrap()
            .starts_with("s3://scim-uploads/reports/"),
        "{response}"
    );
    check_outcome(
        &scim.base_url,
        &scim.token,
        &stack,
        &records,
        "s3://scim-uploads/incoming/hr export.csv",
    )
    .await;
}

#[tokio::test]
async fn faults_are_retried_through_the_queue_and_nothing_is_lost_or_doubled() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    // REPORT_BUCKET as the template sets it: the rows finished from the queue are reported
    // there only (a bucket is never taken from a message), without it only logged.
    let state = stack.state(&[
        ("S3_CYCLE_MAX_OPERATIONS", "120"),
        ("REPORT_BUCKET", BUCKET),
    ]);
    proxy.inject_times("POST", "/Bulk", Fault::status(503), 2);
    proxy.inject("POST", "/Bulk", Fault::throttled("1"));
    proxy.inject("POST", "/Bulk", Fault::AppliedButFailed);
    proxy.inject("POST", "/Bulk", Fault::ForwardThenReset);
    proxy.inject("POST", "/Bulk", Fault::html(502));
    let (records, _) = provision_file(&stack, &state, 250, &scim.base_url, &scim.token).await;
    assert_eq!(proxy.pending_faults(), 0, "every fault was met");
    check_outcome(
        &scim.base_url,
        &scim.token,
        &stack,
        &records,
        "s3://scim-uploads/incoming/hr export.csv",
    )
    .await;
}

#[tokio::test]
async fn a_file_without_a_required_column_is_rejected_whole() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = stack.state(&[("REPORT_BUCKET", BUCKET)]);
    let csv = "email,first_name,title\na@example.com,Ada,Analyst\n";
    put_object(&stack.sdk, BUCKET, "incoming/no-last-name.csv", csv).await;
    let response = invoke(
        &state,
        s3_put_event(BUCKET, "incoming/no-last-name.csv"),
        "r1",
    )
    .await
    .expect("handled");
    assert!(
        response["objects"][0]["rejected"]
            .as_str()
            .unwrap()
            .contains("last_name"),
        "{response}"
    );
    assert!(
        list_users(&scim.base_url, &scim.token).await.is_empty(),
        "nothing was sent"
    );
    assert_eq!(
        support::aws::queue_depth(&stack.sdk, &stack.queues.url).await,
        0,
        "nothing was enqueued"
    );
    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0]["status"], "rejected");
    assert_eq!(
        report[0]["source"],
        "s3://scim-uploads/incoming/no-last-name.csv"
    );
    assert!(report[0]["reason"].as_str().unwrap().contains("last_name"));
}

#[tokio::test]
async fn eventbridge_reruns_a_key_or_the_newest_object_under_a_prefix() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = stack.state(&[]);
    put_object(
        &stack.sdk,
        BUCKET,
        "incoming/old.csv",
        "email,first_name,last_name\nold@example.com,Old,One\n",
    )
    .await;
    // S3 times are whole seconds in listings: make the second object clearly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_object(
        &stack.sdk,
        BUCKET,
        "incoming/new file.csv",
        "email,first_name,last_name\nnew@example.com,New,One\n",
    )
    .await;
    let prefix: Value =
        serde_json::from_str(include_str!("../events/eventbridge-rerun-prefix.json")).unwrap();
    let response = invoke(&state, prefix, "r1").await.expect("rerun by prefix");
    assert_eq!(
        response["objects"][0]["source"], "s3://scim-uploads/incoming/new file.csv",
        "{response}"
    );
    let names: Vec<String> = list_users(&scim.base_url, &scim.token)
        .await
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["new@example.com"]);

    let key = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {"bucket": BUCKET, "key": "incoming/old.csv"}});
    invoke(&state, key, "r2").await.expect("rerun by key");
    assert_eq!(list_users(&scim.base_url, &scim.token).await.len(), 2);

    let missing = json!({"detail-type": "Scheduled Event", "detail": {"bucket": BUCKET, "key": "incoming/nope.csv"}});
    let err = invoke(&state, missing, "r3").await.unwrap_err();
    assert!(err.to_string().contains("NoSuchKey"), "{err}");

    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2025-03-04T08:00:00Z", "Bucket": BUCKET});
    assert_eq!(
        invoke(&state, test_event, "r4").await.unwrap(),
        json!({"ignored": "s3:TestEvent"})
    );
}
