//! The function in process on S3 uploads and EventBridge reruns, against moto (S3, SQS,
//! Secrets Manager) and scim2-server: a CSV of a few hundred rows driven through the S3
//! invocation and then the work queue (an event-source-mapping loop) to completion.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use scim_bulk_provisioner::lambda::State;
use serde_json::{json, Value};
use support::aws::{
    bearer_secret, invoke, pump_in_process, put_object, report_lines, s3_put_event, start_stack,
    Stack, BUCKET,
};
use support::faults::{Fault, FaultProxy};
use support::hr::{self, Every, Kind, Record, Shape};
use support::{create_user, list_users, start_scim2_server, ScimOptions};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// An HR export of `n` people (plus repeated rows) with invalid rows, leavers, duplicate
/// userNames, HR-style headers with an unknown column and a quoted multi-line field.
fn hr_export(n: usize) -> (Vec<u8>, Vec<Record>) {
    hr::export(&Shape {
        no_last_name: Every::of(23, 7),
        bad_email: Every::of(31, 11),
        bad_status: Every::of(37, 5),
        leavers: Every::of(17, 3),
        leavers_existing: Every::of(34, 3),
        repeated_after: Every::of(40, 21),
        multiline: Some(50),
        hr_headers: true,
        ..Shape::plain(n, "user")
    })
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

/// Credentials that cannot be used (the secret is not JSON) stop the cycle: the invocation
/// fails, naming the object (the on-failure destination's record carries that message), and
/// the object's report still holds what was learnt (the invalid row) and a `failed` line
/// naming the object and why; the same for an EventBridge rerun.
#[tokio::test]
async fn a_failed_object_leaves_its_report_and_an_error_naming_it() {
    let stack = start_stack("token=not-json-hunter2").await;
    let state = stack.state(&[]);
    let csv = "email,first_name,last_name\nada@example.com,Ada,Lovelace\nno-at-sign,Bad,Row\n";
    put_object(&stack.sdk, BUCKET, "incoming/bad creds.csv", csv).await;
    let source = "s3://scim-uploads/incoming/bad creds.csv";
    let eventbridge = json!({"detail-type": "Scheduled Event", "source": "aws.events",
        "detail": {"bucket": BUCKET, "key": "incoming/bad creds.csv"}});
    for (request, event) in [
        (
            "s3-bad-creds",
            s3_put_event(BUCKET, "incoming/bad+creds.csv"),
        ),
        ("eb-bad-creds", eventbridge),
    ] {
        let err = invoke(&state, event, request)
            .await
            .expect_err("unusable credentials fail the invocation");
        let text = err.to_string();
        assert!(text.contains(source), "{request}: {text}");
        assert!(text.contains("not a JSON object"), "{request}: {text}");
        assert!(!text.contains("hunter2"), "{request}: {text}");
        let keys = support::aws::list_keys(&stack.sdk, BUCKET, "reports/").await;
        let key = keys
            .iter()
            .find(|k| k.contains(request))
            .unwrap_or_else(|| panic!("{request}: no report among {keys:?}"));
        let report: Vec<Value> = support::aws::get_text(&stack.sdk, BUCKET, key)
            .await
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert!(
            report
                .iter()
                .any(|l| l["status"] == "invalid" && l["row"] == 3 && l["source"] == source),
            "{request}: {report:#?}"
        );
        let failed: Vec<&Value> = report.iter().filter(|l| l["status"] == "failed").collect();
        assert_eq!(failed.len(), 1, "{request}: {report:#?}");
        assert_eq!(failed[0]["source"], source);
        let reason = failed[0]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(source) && reason.contains("not a JSON object"),
            "{reason}"
        );
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    // A rerun whose prefix cannot be listed: no object is known; the prefix is named instead.
    let state = stack.state(&[("REPORT_BUCKET", BUCKET)]);
    let prefix = json!({"detail-type": "Scheduled Event", "source": "aws.events",
        "detail": {"bucket": "no-such-bucket", "prefix": "incoming/"}});
    let err = invoke(&state, prefix, "eb-no-bucket")
        .await
        .expect_err("the listing fails");
    let text = err.to_string();
    assert!(
        text.contains("s3://no-such-bucket/incoming/") && text.contains("NoSuchBucket"),
        "{text}"
    );
    let report = report_lines(&stack.sdk, BUCKET).await;
    let failed: Vec<&Value> = report
        .iter()
        .filter(|l| l["source"] == "s3://no-such-bucket/incoming/")
        .collect();
    assert_eq!(failed.len(), 1, "{report:#?}");
    assert_eq!(failed[0]["status"], "failed");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("NoSuchBucket"),
        "{report:#?}"
    );
}

/// A file of 1,000,000 invalid rows (about 50 MB) through the S3 path: the function's peak
/// memory stays under the 256 MB it is deployed with, and the report, streamed to S3 in
/// parts, has one line per row, in file order. The peak is process-wide, so the function runs
/// in a child process (this test binary, running only this test) that no other test shares.
#[test]
fn a_million_invalid_rows_are_reported_within_256_mb() {
    const CHILD: &str = "LAMBDA_S3_MILLION_ROWS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        return runtime.block_on(report_a_million_invalid_rows());
    }
    support::run_alone_in_child("a_million_invalid_rows_are_reported_within_256_mb", CHILD);
}

async fn report_a_million_invalid_rows() {
    const ROWS: u64 = 1_000_000;
    const KEY: &str = "incoming/million-bad.csv";
    support::aws::init_logs();
    // Nothing is sent: every row is invalid (no SCIM peer needed).
    let stack = start_stack(&bearer_secret("http://127.0.0.1:9", "unused-token")).await;
    let state = stack.state(&[]);
    // Written to disk and streamed to moto, so the file is never in this process's memory.
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        writeln!(out, "email,first_name,last_name").unwrap();
        for i in 0..ROWS {
            writeln!(out, "user{i}-at-example.com,Given{i},Family{i}").unwrap();
        }
        out.flush().unwrap();
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(file.path())
        .await
        .expect("file body");
    support::aws::s3(&stack.sdk)
        .put_object()
        .bucket(BUCKET)
        .key(KEY)
        .body(body)
        .send()
        .await
        .expect("upload");

    // Reset the peak to the current RSS (Linux: "5" > clear_refs), so the peak measured below
    // is the invocation's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = support::peak_rss_kib();
    let started = Instant::now();
    // Lambda's longest timeout: this test is about memory, not time.
    let invocation =
        scim_bulk_provisioner::lambda::Invocation::new("million", Duration::from_secs(900));
    let response =
        scim_bulk_provisioner::lambda::handle(&state, s3_put_event(BUCKET, KEY), &invocation)
            .await
            .expect("the S3 invocation");
    let elapsed = started.elapsed();
    let peak = support::peak_rss_kib();
    eprintln!(
        "1,000,000 invalid rows through the S3 path in {elapsed:.1?}; peak RSS {} MiB (was {} MiB)",
        peak / 1024,
        before / 1024
    );
    let object = &response["objects"][0];
    assert_eq!(object["rows"], ROWS, "{response}");
    assert_eq!(object["invalid"], ROWS, "{response}");
    assert!(
        peak < 256 * 1024,
        "peak RSS {} MiB over a 1,000,000-row file: more than the function's 256 MB",
        peak / 1024
    );

    // The report, read as a stream: one `invalid` line per row, in file order.
    let address = object["report"].as_str().expect("a report");
    let key = address
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .expect("in the upload bucket");
    let mut body = support::aws::s3(&stack.sdk)
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("get the report")
        .body;
    let (mut lines, mut partial) = (0u64, Vec::new());
    while let Some(chunk) = body.try_next().await.expect("report body") {
        partial.extend_from_slice(&chunk);
        let end = partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in partial[..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let line = std::str::from_utf8(line).expect("UTF-8");
            // Row i (from 0) is on line i + 2.
            let row = format!("\"row\":{},", lines + 2);
            assert!(
                line.contains(&row) && line.contains("\"status\":\"invalid\""),
                "line {} of the report: {line}",
                lines + 1
            );
            if lines == 0 {
                let first: Value = serde_json::from_str(line).expect("JSON");
                assert_eq!(first["source"], format!("s3://{BUCKET}/{KEY}"));
                assert!(
                    first["reason"].as_str().unwrap_or_default().contains("@"),
                    "{first}"
                );
            }
            lines += 1;
        }
        partial.drain(..end);
    }
    assert!(partial.is_empty(), "the report ends with a line break");
    assert_eq!(lines, ROWS);
}

/// A report too large for one part goes up as a multipart upload; when a part cannot be
/// uploaded the upload is aborted (no parts left behind, billed) and the object fails, naming
/// the report call, so the event is retried.
#[tokio::test]
async fn a_report_upload_that_fails_part_way_is_aborted() {
    use support::faults::{AwsCall, AwsFault, AwsFaultProxy};
    const ROWS: u64 = 80_000; // about 12 MB of report: a part, then the last part at the end
    let stack = start_stack(&bearer_secret("http://127.0.0.1:9", "unused-token")).await;
    let aws = AwsFaultProxy::start(&stack.moto.endpoint);
    let sdk = support::aws::sdk_config_at(&aws.url).await;
    let state = stack.state_via(&sdk, &[]);
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..ROWS {
        csv.push_str(&format!("user{i}-at-example.com,Given{i},Family{i}\n"));
    }
    put_object(&stack.sdk, BUCKET, "incoming/many-bad.csv", csv).await;
    // The first part goes through; every later upload to reports/ fails.
    let parts = AwsCall::s3("PUT", "/scim-uploads/reports/");
    aws.inject_after(parts.clone(), 1, AwsFault::internal_error(), 1000);
    let err = invoke(
        &state,
        s3_put_event(BUCKET, "incoming/many-bad.csv"),
        "upload-fails",
    )
    .await
    .expect_err("the report is part of the work");
    let text = err.to_string();
    assert!(
        text.contains("s3://scim-uploads/incoming/many-bad.csv")
            && text.contains("the report could not be written")
            && text.contains("UploadPart"),
        "{text}"
    );
    assert!(aws.faults_met(&parts) > 0);
    assert_eq!(
        aws.hits(&AwsCall::s3("DELETE", "/scim-uploads/reports/")),
        1,
        "the upload was aborted"
    );
    let uploads = support::aws::s3(&stack.sdk)
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list multipart uploads");
    assert!(uploads.uploads().is_empty(), "{uploads:?}");
    assert!(support::aws::list_keys(&stack.sdk, BUCKET, "reports/")
        .await
        .is_empty());

    // S3 works again: the retry writes the whole report, in parts.
    aws.clear_faults();
    let response = invoke(
        &state,
        s3_put_event(BUCKET, "incoming/many-bad.csv"),
        "upload-works",
    )
    .await
    .expect("the retry");
    assert_eq!(response["objects"][0]["invalid"], ROWS, "{response}");
    assert!(
        aws.hits(&AwsCall::s3("POST", "/scim-uploads/reports/")) >= 2,
        "multipart"
    );
    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len() as u64, ROWS);
    for (i, line) in report.iter().enumerate() {
        assert_eq!(line["row"], i as u64 + 2, "{line}");
        assert_eq!(line["status"], "invalid", "{line}");
    }
}

/// The download of the rows dies mid-way: the invocation fails naming the object, and the
/// report holds the invalid rows read before the cut and a `failed` line saying why.
#[tokio::test]
async fn a_download_cut_mid_way_leaves_the_rows_read_in_the_report() {
    use support::faults::{AwsCall, AwsFault, AwsFaultProxy};
    let stack = start_stack(&bearer_secret("http://127.0.0.1:9", "unused-token")).await;
    let aws = AwsFaultProxy::start(&stack.moto.endpoint);
    let sdk = support::aws::sdk_config_at(&aws.url).await;
    let state = stack.state_via(&sdk, &[]);
    let mut csv = String::from("email,first_name,last_name\n");
    for i in 0..200 {
        csv.push_str(&format!("user{i}-at-example.com,Given{i},Family{i}\n"));
    }
    put_object(&stack.sdk, BUCKET, "incoming/cut.csv", csv).await;
    // The first read (the last row of each userName) works; the second is cut half-way.
    let get = AwsCall::s3("GET", "/scim-uploads/incoming/");
    aws.inject_after(get.clone(), 1, AwsFault::ResetMidBody, 1);
    let err = invoke(&state, s3_put_event(BUCKET, "incoming/cut.csv"), "cut")
        .await
        .expect_err("a download cut short fails the event");
    let text = err.to_string();
    let source = "s3://scim-uploads/incoming/cut.csv";
    assert!(
        text.contains(source) && text.contains("reading the file failed"),
        "{text}"
    );
    assert_eq!(aws.faults_met(&get), 1);
    let report = report_lines(&stack.sdk, BUCKET).await;
    let invalid = report.iter().filter(|l| l["status"] == "invalid").count();
    assert!(
        (1..200).contains(&invalid),
        "rows before the cut: {report:#?}"
    );
    assert!(report
        .iter()
        .any(|l| l["status"] == "invalid" && l["row"] == 2));
    let failed: Vec<&Value> = report.iter().filter(|l| l["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{report:#?}");
    assert_eq!(failed[0]["source"], source);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("reading the file failed"),
        "{report:#?}"
    );
}
