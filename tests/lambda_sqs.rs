//! The function in process on SQS batches, against moto and scim2-server: producer and retry
//! messages in one cycle, partial batch responses, bad bodies, bad secrets, unknown events.

mod support;

use std::time::Duration;

use scim_bulk_provisioner::aws::sqs::RetryMessage;
use scim_bulk_provisioner::lambda::HandlerError;
use serde_json::{json, Value};
use support::aws::{
    batch_failures, bearer_secret, invoke, pump_in_process, receive, report_lines, send, sqs_event,
    start_stack, BUCKET,
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
    let pumped = pump_in_process(
        &stack.sdk,
        &stack.queues,
        &state,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}"
    );
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
    let messages = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;
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
