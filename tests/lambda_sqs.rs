//! The function in process on SQS batches, against moto and scim2-server: producer and retry
//! messages in one cycle, partial batch responses, bad bodies, bad secrets, unknown events,
//! and rows whose operations are too large for the queue's messages.

mod support;

use std::time::Duration;

use scim_bulk_provisioner::lambda::HandlerError;
use scim_bulk_provisioner::queue::retry_message::RetryMessage;
use serde_json::{json, Value};
use support::aws::{
    batch_failures, bearer_secret, invoke, put_object, receive, report_lines, s3_put_event, send,
    sqs, sqs_event, start_stack, BUCKET,
};
use support::faults::{Fault, FaultProxy};
use support::{find_user, list_users, start_scim2_server, ScimOptions};

fn producer(users: Value) -> String {
    json!({ "users": users }).to_string()
}

#[tokio::test]
async fn a_batch_runs_in_one_cycle_and_only_unusable_messages_fail() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = stack.state(&[("REPORT_BUCKET", BUCKET)]);
    let url = &stack.queues.url;
    let good = send(
        &stack.sdk,
        url,
        &producer(json!([
            {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "title": "Analyst"},
            {"email": "not-an-address", "first_name": "No", "last_name": "Body"},
        ])),
    )
    .await;
    let garbage = send(&stack.sdk, url, "this is not json").await;
    let future = send(&stack.sdk, url, r#"{"version": 2, "operations": []}"#).await;
    let retry_body: RetryMessage = serde_json::from_value(json!({
        "version": 1,
        "operations": [{
            "user": {"user_name": "grace@example.com", "email": "grace@example.com", "first_name": "Grace",
                     "last_name": "Hopper", "active": true, "employee_number": "1906"},
            "attempt": 2, "source": "s3://scim-uploads/incoming/x.csv", "row": 7, "first_seen": 1741076130,
            "last_error": "503: unavailable"
        }]
    }))
    .unwrap();
    let retry = send(
        &stack.sdk,
        url,
        &serde_json::to_string(&retry_body).unwrap(),
    )
    .await;

    let messages = receive(
        &stack.sdk,
        url,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(messages.len(), 4, "moto delivers the whole batch");
    let response = invoke(&state, sqs_event(&messages, &stack.queues.arn), "req-1")
        .await
        .expect("handled");
    let mut failed = batch_failures(&response);
    failed.sort();
    let mut expected = vec![garbage.clone(), future.clone()];
    expected.sort();
    assert_eq!(failed, expected, "only the unusable bodies fail");
    assert!(!failed.contains(&good) && !failed.contains(&retry));

    let users = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(users.len(), 2, "{users:#?}");
    assert_eq!(
        find_user(&users, "ada@example.com").expect("ada")["title"],
        "Analyst"
    );
    let grace = find_user(&users, "grace@example.com").expect("grace");
    assert_eq!(
        grace["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"],
        "1906"
    );

    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len(), 1, "{report:#?}");
    assert_eq!(report[0]["source"], format!("sqs:{good}"));
    assert_eq!(report[0]["status"], "invalid");
    assert!(
        report[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("users[1]"),
        "{report:?}"
    );
}

#[tokio::test]
async fn producer_messages_survive_faults_through_the_queue() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    let state = stack.state(&[]);
    for m in 0..6 {
        let users: Vec<Value> = (0..20)
            .map(|i| json!({"email": format!("p{m}-{i}@example.com"), "first_name": "P", "last_name": format!("{m}-{i}")}))
            .collect();
        send(
            &stack.sdk,
            &stack.queues.url,
            &producer(Value::Array(users)),
        )
        .await;
    }
    proxy.inject_times("POST", "/Bulk", Fault::status(503), 3);
    proxy.inject("POST", "/Bulk", Fault::throttled("1"));
    proxy.inject("POST", "/Bulk", Fault::AppliedButFailed);
    let pumped = support::aws::drain(&stack, &state, Duration::from_secs(60)).await;
    assert!(
        pumped.invocations > 1,
        "retries went through the queue: {pumped:?}"
    );
    let users = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(users.len(), 120);
    for m in 0..6 {
        for i in 0..20 {
            let name = format!("p{m}-{i}@example.com");
            let matching: Vec<&Value> = users.iter().filter(|u| u["userName"] == name).collect();
            assert_eq!(matching.len(), 1, "{name} exactly once");
            assert_eq!(matching[0]["name"]["familyName"], format!("{m}-{i}"));
        }
    }
    assert_eq!(
        support::aws::queue_depth(&stack.sdk, &stack.queues.dlq_url).await,
        0,
        "nothing in the DLQ"
    );
}

#[tokio::test]
async fn a_secret_missing_a_field_is_a_clear_error() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let secret = json!({"base_url": scim.base_url, "auth_type": "bearer"}).to_string();
    let stack = start_stack(&secret).await;
    let state = stack.state(&[]);
    let id = send(
        &stack.sdk,
        &stack.queues.url,
        &producer(json!([{"email": "a@example.com", "first_name": "A", "last_name": "B"}])),
    )
    .await;
    let messages = stack.receive_batch().await;
    assert_eq!(messages[0].message_id(), Some(id.as_str()));
    let err = invoke(&state, sqs_event(&messages, &stack.queues.arn), "req-1")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HandlerError::Engine(_)), "{text}");
    assert!(
        text.contains("`token`"),
        "the error names the field: {text}"
    );
    assert!(list_users(&scim.base_url, &scim.token).await.is_empty());
}

#[tokio::test]
async fn an_unknown_event_names_its_top_level_keys_only() {
    // No AWS call is made before the event is recognised: no moto needed.
    let state = support::aws::offline_state();
    let event = json!({"hello": "secret@example.com", "items": [1, 2]});
    let err = invoke(&state, event, "req-1").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HandlerError::UnknownEvent(_)), "{text}");
    assert!(text.contains("[hello, items]"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

/// A CSV field holding `text`, quoted.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// A CSV row (email, first_name, last_name, title, department, display_name).
fn csv_row(email: &str, title: &str, department: &str, display_name: &str) -> String {
    format!(
        "{email},Given,Family,{},{},{}\n",
        quoted(title),
        quoted(department),
        quoted(display_name)
    )
}

const WIDE_HEADER: &str = "email,first_name,last_name,title,department,display_name\n";

/// Fields near the 64 KiB a CSV field may hold, each doubled by JSON escaping (quotes): an
/// operation of about 320 KB, more than the old 200 KiB retry message, less than 1 MiB.
fn big_row(email: &str) -> String {
    let quotes = "\"".repeat(64_000);
    csv_row(email, &quotes, &quotes, &"d".repeat(64_000))
}

/// Three fields of 64,000 control characters, each six bytes in JSON (`\u0001`): an operation
/// of 1.15 MB, which no SQS message can carry.
fn huge_row(email: &str) -> String {
    let controls = "\u{1}".repeat(64_000);
    csv_row(email, &controls, &controls, &controls)
}

/// Rows past the S3 cycle go through the queue in messages of up to 1 MiB: a 320 KB operation
/// is deferred and provisioned; one of 1.15 MB is reported `failed` with its line and the
/// reason, the S3 event succeeds, and nothing else is held back or enqueued twice.
#[tokio::test]
async fn a_row_too_large_for_any_message_is_reported_failed_and_the_rest_goes() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = stack.state(&[("REPORT_BUCKET", BUCKET), ("S3_CYCLE_MAX_OPERATIONS", "1")]);
    let csv = [
        WIDE_HEADER.to_string(),
        csv_row("first@example.com", "Agent", "Sales", "First"),
        big_row("big@example.com"),
        huge_row("huge@example.com"),
        csv_row("after@example.com", "Agent", "Sales", "After"),
    ]
    .concat();
    put_object(&stack.sdk, BUCKET, "incoming/wide.csv", csv).await;
    let response = invoke(&state, s3_put_event(BUCKET, "incoming/wide.csv"), "s3-wide")
        .await
        .expect("the S3 event succeeds: nothing is left unreported");
    let object = &response["objects"][0];
    assert_eq!(object["provisioned_now"], 1, "{response}");
    assert_eq!(object["deferred_to_queue"], 2, "{response}");

    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len(), 1, "{report:#?}");
    let line = &report[0];
    assert_eq!(line["status"], "failed");
    assert_eq!(line["row"], 4, "the huge row is line 4");
    assert_eq!(line["source"], "s3://scim-uploads/incoming/wide.csv");
    assert_eq!(line["user_name"], "huge@example.com");
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains("more than the 1032192 bytes") && reason.contains("shorten"),
        "{reason}"
    );

    support::aws::drain(&stack, &state, Duration::from_secs(60)).await;
    let users = list_users(&scim.base_url, &scim.token).await;
    let mut names: Vec<&str> = users
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["after@example.com", "big@example.com", "first@example.com"]
    );
    let big = find_user(&users, "big@example.com").unwrap();
    assert_eq!(big["title"].as_str().unwrap().len(), 64_000);
    assert_eq!(report_lines(&stack.sdk, BUCKET).await.len(), 1);
}

/// On a queue whose `MaximumMessageSize` is the classic 256 KiB, a 320 KB operation that met a
/// 503 in the S3 cycle cannot go back to the queue: it is reported `failed` with its line,
/// the status and the reason, and the event succeeds; the small row after it is deferred.
#[tokio::test]
async fn the_queue_s_own_message_size_limit_is_read_and_respected() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    sqs(&stack.sdk)
        .set_queue_attributes()
        .queue_url(&stack.queues.url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "262144",
        )
        .send()
        .await
        .expect("set MaximumMessageSize");
    let state = stack.state(&[("REPORT_BUCKET", BUCKET), ("S3_CYCLE_MAX_OPERATIONS", "1")]);
    proxy.inject("POST", "/Bulk", Fault::status(503));
    let csv = [
        WIDE_HEADER.to_string(),
        big_row("big@example.com"),
        csv_row("after@example.com", "Agent", "Sales", "After"),
    ]
    .concat();
    put_object(&stack.sdk, BUCKET, "incoming/wide.csv", csv).await;
    let response = invoke(&state, s3_put_event(BUCKET, "incoming/wide.csv"), "s3-wide")
        .await
        .expect("the S3 event succeeds: nothing is left unreported");
    assert_eq!(proxy.pending_faults(), 0, "the 503 was met");
    let object = &response["objects"][0];
    assert_eq!(object["deferred_to_queue"], 1, "{response}");
    assert_eq!(object["summary"]["failed"], 1, "{response}");

    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len(), 1, "{report:#?}");
    let line = &report[0];
    assert_eq!(
        (&line["status"], &line["row"], &line["user_name"]),
        (&json!("failed"), &json!(2), &json!("big@example.com"))
    );
    assert_eq!(line["http_status"], 503);
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 503") && reason.contains("more than the 258048 bytes"),
        "{reason}"
    );
    support::aws::drain(&stack, &state, Duration::from_secs(60)).await;
    let users = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(users.len(), 1, "{users:#?}");
    assert!(find_user(&users, "after@example.com").is_some());
}
