//! The function against its invocation's deadline, in process against moto and scim2-server: a
//! stalling token endpoint or secret read ends the cycle by the deadline with the work deferred,
//! and a file too large for one invocation is continued, through the work queue, until every
//! row is provisioned exactly once. Each invocation is stopped at its deadline as Lambda would.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use scim_bulk_provisioner::lambda::{handle, HandlerError, Invocation, State};
use serde_json::{json, Value};
use support::aws::{
    bearer_secret, delete_all_but, pump, put_object, queue_depth, receive, report_lines,
    s3_put_event, sdk_config_at, send, sqs_event, start_stack, Stack, BUCKET,
};
use support::faults::{AwsCall, AwsFault, AwsFaultProxy, Fault, FaultProxy, OAUTH_TOKEN_PATH};
use support::hr::{self, Every, Kind, Record, Shape};
use support::{list_users, start_scim2_server, ScimOptions};

/// Runs one invocation with `remaining` time, stopped there as Lambda stops a function
/// ("Task timed out"): `None` when it did not end in time.
async fn invoke_within(
    state: &State,
    event: Value,
    request_id: &str,
    remaining: Duration,
) -> Option<Result<Value, HandlerError>> {
    let invocation = Invocation::new(request_id, remaining);
    tokio::time::timeout(remaining, handle(state, event, &invocation))
        .await
        .ok()
}

/// Sends one producer message and hands it to the function as the event source mapping would
/// (deleting it unless listed as failed); returns the response.
async fn one_message(stack: &Stack, state: &State, remaining: Duration) -> Value {
    let body = json!({"users": [
        {"email": "late@example.com", "first_name": "Late", "last_name": "Comer"}
    ]});
    send(&stack.sdk, &stack.queues.url, &body.to_string()).await;
    let messages = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(messages.len(), 1);
    let event = sqs_event(&messages, &stack.queues.arn);
    let response = invoke_within(state, event, "r1", remaining)
        .await
        .expect("the invocation ends by its deadline")
        .expect("handled");
    let failed = support::aws::batch_failures(&response)
        .into_iter()
        .collect();
    delete_all_but(&stack.sdk, &stack.queues.url, &messages, &failed).await;
    response
}

/// The operations the function put back on the queue (waiting out their delay).
async fn requeued(stack: &Stack) -> Vec<Value> {
    let messages = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await;
    messages
        .iter()
        .flat_map(|m| {
            let body: Value = serde_json::from_str(m.body().expect("body")).expect("JSON body");
            body["operations"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

/// The work comes back unsent: deferred, not retried (its attempt is not counted).
fn assert_deferred(operations: &[Value]) {
    assert_eq!(operations.len(), 1, "{operations:?}");
    let op = &operations[0];
    assert_eq!(op["user"]["user_name"], "late@example.com", "{op}");
    assert_eq!(op["attempt"], 0, "deferred, not a failed attempt: {op}");
    assert!(op.get("last_error").is_none(), "{op}");
}

#[tokio::test]
async fn a_stalling_token_endpoint_is_given_up_at_the_deadline_and_the_work_deferred() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let secret = json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": "test-client-secret",
    });
    let stack = start_stack(&secret.to_string()).await;
    let state = stack.state(&[("DEADLINE_MARGIN_SECONDS", "2")]);
    // The token endpoint answers only after two minutes; the token request's own timeout is
    // 30 s, the invocation has 10 s (8 s before the margin).
    proxy.inject_always(
        "POST",
        OAUTH_TOKEN_PATH,
        Fault::Delay(Duration::from_secs(120)),
    );
    let response = one_message(&stack, &state, Duration::from_secs(10)).await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    assert_deferred(&requeued(&stack).await);
    assert_eq!(proxy.hits_for("POST", "/Bulk"), 0);
    assert!(scim.users().await.is_empty());
}

#[tokio::test]
async fn a_stalling_secret_read_is_given_up_at_the_deadline_and_the_work_deferred() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let aws = AwsFaultProxy::start(&stack.moto.endpoint);
    aws.inject_always(
        AwsCall::target("GetSecretValue"),
        AwsFault::Delay(Duration::from_secs(120)),
    );
    let sdk = sdk_config_at(&aws.url).await;
    let state = stack.state_via(&sdk, &[("DEADLINE_MARGIN_SECONDS", "2")]);
    let response = one_message(&stack, &state, Duration::from_secs(10)).await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    assert_deferred(&requeued(&stack).await);
    assert!(scim.users().await.is_empty());
}

/// `n` people, some rows invalid (no last name), and some people again at the very end of the
/// file with a new title (the earlier row is superseded across any split of the file).
fn large_export(n: usize) -> (Vec<u8>, Vec<Record>) {
    hr::export(&Shape {
        no_last_name: Every::of(97, 13),
        repeated_after: Every::of(150, 7),
        ..Shape::plain(n, "person")
    })
}

#[tokio::test]
async fn a_file_too_large_for_one_invocation_continues_through_the_queue_exactly_once() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    // Enqueueing is slow (4 s per SendMessageBatch of up to 500 deferred rows): with 12 s per
    // invocation (5 s of margin) one invocation enqueues about 500 rows, and the whole file
    // would take about 16 s.
    let aws = AwsFaultProxy::start(&stack.moto.endpoint);
    aws.inject_always(
        AwsCall::target("SendMessageBatch"),
        AwsFault::Delay(Duration::from_secs(4)),
    );
    let sdk = sdk_config_at(&aws.url).await;
    let state = stack.state_via(
        &sdk,
        &[
            ("REPORT_BUCKET", BUCKET),
            ("S3_CYCLE_MAX_OPERATIONS", "50"),
            ("SCIM_TIMEOUT_SECONDS", "5"),
            // Deferred rows come back within a second or two, not paced over minutes.
            ("SCIM_REQUESTS_PER_MINUTE", "6000"),
        ],
    );
    let remaining = Duration::from_secs(12);
    let (csv, records) = large_export(1700);
    let source = "s3://scim-uploads/incoming/large.csv";
    put_object(&stack.sdk, BUCKET, "incoming/large.csv", csv).await;

    // S3 invokes asynchronously: an invocation that fails or is stopped is tried twice more.
    let event = s3_put_event(BUCKET, "incoming/large.csv");
    let mut response = None;
    for attempt in 1..=3 {
        let id = format!("s3-{attempt}");
        match invoke_within(&state, event.clone(), &id, remaining).await {
            Some(Ok(value)) => {
                response = Some(value);
                break;
            }
            Some(Err(error)) => eprintln!("S3 attempt {attempt}: {error}"),
            None => eprintln!("S3 attempt {attempt}: stopped at its deadline"),
        }
    }
    let response = response.expect("an S3 invocation ended by its deadline");
    let object = &response["objects"][0];
    assert!(
        object["continued_at"]["line"].as_u64().unwrap() > 2,
        "the file was continued: {response}"
    );

    // The event source mapping: every batch an invocation with the same time limit.
    let mut n = 0;
    let pumped = pump(
        &stack.sdk,
        &stack.queues,
        Duration::from_secs(15),
        Duration::from_secs(240),
        |event| {
            n += 1;
            let (state, id) = (&state, format!("sqs-{n}"));
            async move {
                match invoke_within(state, event, &id, remaining).await {
                    Some(result) => result.map_err(|e| e.to_string()),
                    None => Err(format!("{id}: stopped at its deadline")),
                }
            }
        },
    )
    .await;
    assert!(pumped.errors.is_empty(), "{pumped:?}");
    assert!(pumped.failures.is_empty(), "{pumped:?}");
    assert_eq!(queue_depth(&stack.sdk, &stack.queues.dlq_url).await, 0);

    // The tenant, user by user.
    let users = list_users(&scim.base_url, &scim.token).await;
    let by_name: HashMap<String, Vec<&Value>> =
        users.iter().fold(HashMap::new(), |mut map, user| {
            let name = user["userName"].as_str().unwrap().to_lowercase();
            map.entry(name).or_default().push(user);
            map
        });
    let expected: Vec<&Record> = records.iter().filter(|r| r.kind == Kind::Active).collect();
    for r in &expected {
        let found = by_name.get(&r.email).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(found.len(), 1, "line {}: {} exactly once", r.line, r.email);
        assert_eq!(found[0]["name"]["givenName"], r.first, "line {}", r.line);
        assert_eq!(found[0]["name"]["familyName"], r.last, "line {}", r.line);
        assert_eq!(
            found[0]["title"], r.title,
            "line {}: the last row wins",
            r.line
        );
    }
    assert_eq!(users.len(), expected.len(), "no other user");

    // Every row sent once: one create per user, never a second (no update after a 409).
    let mut creates: HashMap<String, usize> = HashMap::new();
    for request in proxy.requests() {
        if request.path.ends_with("/Bulk") {
            let body = request.json().expect("a BulkRequest");
            for op in body["Operations"].as_array().unwrap() {
                assert_eq!(op["method"], "POST", "nothing is sent twice: {op}");
                let name = op["data"]["userName"].as_str().unwrap().to_lowercase();
                *creates.entry(name).or_default() += 1;
            }
        } else {
            assert!(
                request.method == "GET",
                "{} {}",
                request.method,
                request.path
            );
        }
    }
    for r in &expected {
        assert_eq!(creates.get(&r.email), Some(&1), "line {}", r.line);
    }
    assert_eq!(creates.len(), expected.len());

    // Each invalid and superseded row reported once, whichever invocation read it.
    let report = report_lines(&stack.sdk, BUCKET).await;
    let lines_of = |status: &str, row: u64| {
        report
            .iter()
            .filter(|l| l["status"] == status && l["row"] == row && l["source"] == source)
            .count()
    };
    for r in &records {
        match r.kind {
            Kind::Invalid => assert_eq!(lines_of("invalid", r.line), 1, "line {}", r.line),
            Kind::Superseded(_) => {
                assert_eq!(lines_of("duplicate", r.line), 1, "line {}", r.line)
            }
            Kind::Active | Kind::Leaver { .. } => {}
        }
    }
    let failed: Vec<&Value> = report.iter().filter(|l| l["status"] == "failed").collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
