//! Faults on the AWS side: the function's SDK talks to moto through [`AwsFaultProxy`], which
//! makes Secrets Manager, SQS and S3 answer 500/503, throttle (400 ThrottlingException, 503
//! SlowDown), reset connections, answer late or cut a download mid-stream. Each case is driven
//! to completion once the fault clears, and the tenant (scim2-server) is checked user by user:
//! nobody lost, nobody twice. Also: a poison message is reported once, on its last delivery.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::Message;
use scim_bulk_provisioner::lambda::{HandlerError, State};
use serde_json::{json, Value};
use support::aws::{
    batch_failures, bearer_secret, invoke, pump_in_process, put_object, queue_depth, receive,
    report_lines, s3_put_event, sdk_config_at, send, sqs_event, start_stack, Pumped, Stack, BUCKET,
};
use support::faults::{AwsCall, AwsFault, AwsFaultProxy, Fault, FaultProxy};
use support::{list_users, start_scim2_server, ScimOptions, ScimServer};

/// The SDK's attempts per call (its standard retry mode).
const SDK_ATTEMPTS: usize = 3;

/// moto behind the AWS fault proxy, scim2-server behind the SCIM one, and the function's state
/// whose AWS clients go through the AWS proxy (the test's own clients go straight to moto).
struct Setup {
    scim: ScimServer,
    scim_faults: FaultProxy,
    stack: Stack,
    aws: AwsFaultProxy,
    /// The function's SDK configuration (through `aws`).
    sdk: aws_config::SdkConfig,
    env: Vec<(&'static str, &'static str)>,
    state: State,
}

impl Setup {
    /// A new container's state: it has read no secret yet.
    fn cold_state(&self) -> State {
        self.stack.state_via(&self.sdk, &self.env)
    }

    /// The next batch of the work queue, as the event source mapping would receive it.
    async fn next_batch(&self) -> Vec<Message> {
        let one_second = Duration::from_secs(1);
        receive(
            &self.stack.sdk,
            &self.stack.queues.url,
            one_second,
            one_second,
        )
        .await
    }

    /// The SQS event for `batch`.
    fn event(&self, batch: &[Message]) -> Value {
        sqs_event(batch, &self.stack.queues.arn)
    }
}

async fn setup(extra: &[(&'static str, &'static str)]) -> Setup {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let scim_faults = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&scim_faults.url, &scim.token)).await;
    let aws = AwsFaultProxy::start(&stack.moto.endpoint);
    let sdk = sdk_config_at(&aws.url).await;
    let mut env = vec![("REPORT_BUCKET", BUCKET), ("SECRET_CACHE_SECONDS", "0")];
    env.extend_from_slice(extra);
    let state = stack.state_via(&sdk, &env);
    Setup {
        scim,
        scim_faults,
        stack,
        aws,
        sdk,
        env,
        state,
    }
}

fn producer(prefix: &str, n: usize) -> String {
    let users: Vec<Value> = (0..n)
        .map(|i| {
            json!({"email": format!("{prefix}{i}@example.com"), "first_name": "Given",
                   "last_name": format!("{prefix}{i}")})
        })
        .collect();
    json!({ "users": users }).to_string()
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}@example.com")).collect()
}

/// Drives the work queue to empty through the function (the event source mapping).
async fn drain(s: &Setup) -> Pumped {
    pump_in_process(
        &s.stack.sdk,
        &s.stack.queues,
        &s.state,
        Duration::from_secs(1),
        Duration::from_secs(90),
    )
    .await
}

/// The tenant holds exactly these users, each once, with the family name of its row.
async fn assert_tenant_is(scim: &ScimServer, expected: &[String]) {
    let users = list_users(&scim.base_url, &scim.token).await;
    for name in expected {
        let found: Vec<&Value> = users
            .iter()
            .filter(|u| {
                u["userName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} must exist exactly once: {found:#?}");
        let family = name.split('@').next().unwrap_or_default();
        assert_eq!(found[0]["name"]["familyName"], family, "{name}");
    }
    let expected: HashSet<String> = expected.iter().map(|n| n.to_lowercase()).collect();
    for user in &users {
        let name = user["userName"].as_str().unwrap_or_default().to_lowercase();
        assert!(expected.contains(&name), "unexpected user {name}");
    }
    assert_eq!(users.len(), expected.len());
}

async fn assert_queues_empty(s: &Setup) {
    assert_eq!(queue_depth(&s.stack.sdk, &s.stack.queues.url).await, 0);
    assert_eq!(
        queue_depth(&s.stack.sdk, &s.stack.queues.dlq_url).await,
        0,
        "nothing may reach the dead-letter queue"
    );
}

/// A CSV of `n` rows `s3row{i}@example.com` (family name `s3row{i}`), with line 3 invalid.
fn csv(n: usize) -> (String, Vec<String>) {
    let mut text = String::from("email,first_name,last_name\n");
    let mut valid = Vec::new();
    for i in 0..n {
        if i == 1 {
            text.push_str("not-an-address,Bad,Row\n");
            continue;
        }
        text.push_str(&format!("s3row{i}@example.com,Given,s3row{i}\n"));
        valid.push(format!("s3row{i}@example.com"));
    }
    (text, valid)
}

#[tokio::test]
async fn secret_fetch_failures_are_retried_by_the_sdk_or_through_the_queue_and_nothing_is_lost() {
    let s = setup(&[]).await;
    let secret = AwsCall::target("GetSecretValue");
    let url = &s.stack.queues.url;

    // A short outage: throttled, then a reset; the SDK's third attempt gets the secret.
    s.aws.inject(secret.clone(), AwsFault::throttling(), 1);
    s.aws.inject(secret.clone(), AwsFault::Reset, 1);
    let a = send(&s.stack.sdk, url, &producer("a", 3)).await;
    let batch = s.next_batch().await;
    assert_eq!(batch.len(), 1);
    let response = invoke(&s.state, s.event(&batch), "short")
        .await
        .expect("the SDK retries a throttled or reset GetSecretValue");
    assert!(batch_failures(&response).is_empty(), "{response}");
    assert_eq!(s.aws.faults_met(&secret), 2);
    assert_eq!(
        s.aws.hits(&secret),
        3,
        "two failed attempts, then the secret"
    );
    support::aws::delete_all_but(&s.stack.sdk, url, &batch, &HashSet::new()).await;
    assert_tenant_is(&s.scim, &names("a", 3)).await;

    // A longer outage (every attempt 500) while a new container starts (a warm one keeps the
    // credentials it has): the engine treats unreadable credentials as transient, so the
    // invocation sends nothing and puts every operation back on the queue (attempt counted,
    // the error in the retry message); the batch itself is done.
    let cold = s.cold_state();
    let before = s.aws.faults_met(&secret);
    s.aws
        .inject_always(secret.clone(), AwsFault::internal_error());
    let b = send(&s.stack.sdk, url, &producer("b", 3)).await;
    let batch = s.next_batch().await;
    assert_eq!(batch[0].message_id(), Some(b.as_str()));
    let response = invoke(&cold, s.event(&batch), "long-sqs")
        .await
        .expect("handled: the work is re-enqueued");
    assert!(batch_failures(&response).is_empty(), "{response}");
    support::aws::delete_all_but(&s.stack.sdk, url, &batch, &HashSet::new()).await;
    let (text_csv, valid) = csv(6);
    put_object(&s.stack.sdk, BUCKET, "incoming/secret.csv", text_csv).await;
    let event = s3_put_event(BUCKET, "incoming/secret.csv");
    let response = invoke(&cold, event, "long-s3")
        .await
        .expect("handled: the work is re-enqueued");
    assert_eq!(
        response["objects"][0]["summary"]["retried"], 5,
        "{response}"
    );
    assert_eq!(
        response["objects"][0]["summary"]["requests"], 0,
        "{response}"
    );
    assert_tenant_is(&s.scim, &names("a", 3)).await;
    assert!(
        s.aws.faults_met(&secret) >= before + 2 * SDK_ATTEMPTS,
        "each invocation tried {SDK_ATTEMPTS} times"
    );
    // What an operator sees in the queue: the retry messages say why.
    let queued = receive(
        &s.stack.sdk,
        url,
        Duration::from_secs(3),
        Duration::from_secs(1),
    )
    .await;
    assert!(!queued.is_empty());
    for message in &queued {
        let body: Value = serde_json::from_str(message.body().unwrap_or_default()).expect("JSON");
        for op in body["operations"].as_array().expect("a retry message") {
            let why = op["last_error"].as_str().unwrap_or_default();
            assert!(
                why.contains("GetSecretValue") && why.contains("InternalFailure"),
                "the retry names the call and the code: {why}"
            );
            assert!(!why.contains(&s.scim.token), "{why}");
            assert_eq!(op["attempt"], 1, "{op}");
        }
    }

    // The outage ends: the retry messages are done.
    s.aws.clear_faults();
    let pumped = drain(&s).await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}"
    );
    assert!(!pumped.messages.contains(&a) && !pumped.messages.contains(&b));
    let mut expected = names("a", 3);
    expected.extend(names("b", 3));
    expected.extend(valid);
    assert_tenant_is(&s.scim, &expected).await;
    assert_queues_empty(&s).await;
}

#[tokio::test]
async fn a_failed_re_enqueue_lists_the_message_for_redelivery_and_nothing_is_lost_or_doubled() {
    let s = setup(&[]).await;
    let send_batch = AwsCall::target("SendMessageBatch");
    let url = &s.stack.queues.url;

    // The BulkRequest fails (503): its operations must go back to the queue, and SQS refuses
    // them on every attempt (the SDK's three, times the function's own four).
    s.scim_faults.inject("POST", "/Bulk", Fault::status(503));
    s.aws
        .inject_always(send_batch.clone(), AwsFault::unavailable());
    let c = send(&s.stack.sdk, url, &producer("c", 3)).await;
    let batch = s.next_batch().await;
    let response = invoke(&s.state, s.event(&batch), "requeue-fails")
        .await
        .expect("a partial batch response, not an error");
    assert_eq!(
        batch_failures(&response),
        vec![c.clone()],
        "the message whose work could not be re-enqueued is listed"
    );
    assert_eq!(s.aws.faults_met(&send_batch), 4 * SDK_ATTEMPTS);
    assert_tenant_is(&s.scim, &[]).await;
    support::aws::delete_all_but(&s.stack.sdk, url, &batch, &[c.clone()].into()).await;

    // SQS works again: the message is redelivered and done; once.
    s.aws.clear_faults();
    let pumped = drain(&s).await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}"
    );
    assert!(pumped.messages.contains(&c));
    assert_tenant_is(&s.scim, &names("c", 3)).await;

    // Throttled twice: the SDK's retries absorb it, the retry message goes once.
    s.scim_faults.inject("POST", "/Bulk", Fault::status(503));
    s.aws.inject(send_batch.clone(), AwsFault::throttling(), 2);
    let d = send(&s.stack.sdk, url, &producer("d", 3)).await;
    let batch = s.next_batch().await;
    let response = invoke(&s.state, s.event(&batch), "throttled")
        .await
        .expect("handled");
    assert!(batch_failures(&response).is_empty(), "{response}");
    assert_eq!(s.aws.faults_met(&send_batch), 4 * SDK_ATTEMPTS + 2);
    support::aws::delete_all_but(&s.stack.sdk, url, &batch, &HashSet::new()).await;
    assert!(
        queue_depth(&s.stack.sdk, url).await >= 1,
        "{d}: the retry message is queued"
    );

    // SQS takes the retry message but the answer is lost (reset): the SDK sends it again, so
    // the operations are queued twice; upserts make that harmless.
    s.scim_faults.inject("POST", "/Bulk", Fault::status(503));
    s.aws
        .inject(send_batch.clone(), AwsFault::ForwardThenReset, 1);
    let e = send(&s.stack.sdk, url, &producer("e", 3)).await;
    let batch = loop {
        // The queue also holds d's retry message: wait for e.
        let got = s.next_batch().await;
        if got.iter().any(|m| m.message_id() == Some(e.as_str())) {
            break got;
        }
        let none = HashSet::new();
        let event = s.event(&got);
        if !got.is_empty() {
            let response = invoke(&s.state, event, "d-retry").await.expect("handled");
            assert!(batch_failures(&response).is_empty());
            support::aws::delete_all_but(&s.stack.sdk, url, &got, &none).await;
        }
    };
    let response = invoke(&s.state, s.event(&batch), "reset")
        .await
        .expect("handled");
    assert!(batch_failures(&response).is_empty(), "{response}");
    support::aws::delete_all_but(&s.stack.sdk, url, &batch, &HashSet::new()).await;
    let pumped = drain(&s).await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}"
    );
    let mut expected = names("c", 3);
    expected.extend(names("d", 3));
    expected.extend(names("e", 3));
    assert_tenant_is(&s.scim, &expected).await;
    assert_queues_empty(&s).await;
}

#[tokio::test]
async fn a_hung_send_outlives_the_invocation_and_the_batch_comes_back() {
    let s = setup(&[]).await;
    let url = &s.stack.queues.url;
    // SQS takes the retry message but answers only after the invocation was killed (Lambda's
    // timeout, here a dropped future): the batch is not deleted and comes back.
    s.scim_faults.inject("POST", "/Bulk", Fault::status(503));
    s.aws.inject(
        AwsCall::target("SendMessageBatch"),
        AwsFault::Delay(Duration::from_secs(4)),
        1,
    );
    let f = send(&s.stack.sdk, url, &producer("f", 4)).await;
    let batch = s.next_batch().await;
    let run = invoke(&s.state, s.event(&batch), "killed");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .is_err(),
        "the invocation was still waiting on SQS"
    );
    let pumped = drain(&s).await;
    assert!(pumped.messages.contains(&f), "the batch was redelivered");
    assert!(pumped.errors.is_empty(), "{pumped:?}");
    assert_tenant_is(&s.scim, &names("f", 4)).await;
    assert_queues_empty(&s).await;
}

#[tokio::test]
async fn s3_read_failures_fail_the_event_clearly_and_its_retry_provisions_everyone_once() {
    let s = setup(&[("S3_CYCLE_MAX_OPERATIONS", "10")]).await;
    let (text, valid) = csv(40);
    put_object(&s.stack.sdk, BUCKET, "incoming/staff.csv", text).await;
    let event = s3_put_event(BUCKET, "incoming/staff.csv");
    let get = AwsCall::s3("GET", "/scim-uploads/incoming/");

    // S3 throttles every attempt: a clear error, nothing sent, nothing enqueued.
    s.aws.inject_always(get.clone(), AwsFault::slow_down());
    let error = invoke(&s.state, event.clone(), "slow-down")
        .await
        .expect_err("GetObject fails");
    let text = error.to_string();
    assert!(matches!(error, HandlerError::S3(_)), "{text}");
    assert!(
        text.contains("GetObject s3://scim-uploads/incoming/staff.csv")
            && text.contains("SlowDown"),
        "{text}"
    );
    assert_eq!(s.aws.faults_met(&get), SDK_ATTEMPTS);
    s.aws.clear_faults();

    // The first read dies mid-stream: the file is not taken as ending there, nor rejected.
    s.aws.inject(get.clone(), AwsFault::ResetMidBody, 1);
    let error = invoke(&s.state, event.clone(), "reset-first-pass")
        .await
        .expect_err("a download cut short fails the event");
    let text = error.to_string();
    assert!(matches!(error, HandlerError::Incomplete { .. }), "{text}");
    assert!(
        text.contains("s3://scim-uploads/incoming/staff.csv"),
        "{text}"
    );
    assert!(list_users(&s.scim.base_url, &s.scim.token).await.is_empty());
    assert_eq!(queue_depth(&s.stack.sdk, &s.stack.queues.url).await, 0);
    assert!(
        !report_lines(&s.stack.sdk, BUCKET)
            .await
            .iter()
            .any(|l| l["status"] == "rejected"),
        "a network error must not reject the file"
    );

    // The second read (the rows) dies mid-stream: what was read may have gone; the event fails.
    s.aws
        .inject_after(get.clone(), 1, AwsFault::ResetMidBody, 1);
    let error = invoke(&s.state, event.clone(), "reset-second-pass")
        .await
        .expect_err("a download cut short fails the event");
    assert!(matches!(error, HandlerError::Incomplete { .. }), "{error}");
    assert_eq!(s.aws.faults_met(&get), SDK_ATTEMPTS + 2);

    // Lambda retries the event: everyone is provisioned, once.
    let response = invoke(&s.state, event, "retried").await.expect("the retry");
    assert_eq!(response["objects"][0]["rows"], 40, "{response}");
    let pumped = drain(&s).await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}"
    );
    assert_tenant_is(&s.scim, &valid).await;
    let report = report_lines(&s.stack.sdk, BUCKET).await;
    assert!(
        report
            .iter()
            .any(|l| l["status"] == "invalid" && l["row"] == 3),
        "{report:#?}"
    );
    assert_queues_empty(&s).await;
}

#[tokio::test]
async fn a_report_that_cannot_be_written_brings_the_work_back_until_it_is() {
    let s = setup(&[("S3_CYCLE_MAX_OPERATIONS", "5")]).await;
    let put_report = AwsCall::s3("PUT", "/scim-uploads/reports/");
    let url = &s.stack.queues.url;

    // SQS: a message with an invalid user. Its report cannot be written: the message is
    // listed for redelivery (its valid users were provisioned: they will be upserted again).
    s.aws
        .inject_always(put_report.clone(), AwsFault::internal_error());
    let body = json!({"users": [
        {"email": "g0@example.com", "first_name": "Given", "last_name": "g0"},
        {"email": "g1@example.com", "first_name": "Given", "last_name": "g1"},
        {"email": "no-at-sign", "first_name": "Bad", "last_name": "User"},
    ]})
    .to_string();
    let g = send(&s.stack.sdk, url, &body).await;
    let batch = s.next_batch().await;
    let response = invoke(&s.state, s.event(&batch), "sqs-report")
        .await
        .expect("a partial batch response");
    assert_eq!(batch_failures(&response), vec![g.clone()]);
    assert_eq!(s.aws.faults_met(&put_report), SDK_ATTEMPTS);

    // S3: the file's report cannot be written: the event fails, to be retried whole.
    let (text, valid) = csv(12);
    put_object(&s.stack.sdk, BUCKET, "incoming/report.csv", text).await;
    let event = s3_put_event(BUCKET, "incoming/report.csv");
    let error = invoke(&s.state, event.clone(), "s3-report")
        .await
        .expect_err("the report is part of the work");
    let text = error.to_string();
    assert!(matches!(error, HandlerError::Incomplete { .. }), "{text}");
    assert!(
        text.contains("the report could not be written") && text.contains("PutObject"),
        "{text}"
    );
    assert!(report_lines(&s.stack.sdk, BUCKET).await.is_empty());

    // S3 works again: the event's retry and the redelivered message write their reports.
    s.aws.clear_faults();
    invoke(&s.state, event, "s3-retry")
        .await
        .expect("the retry");
    let pumped = drain(&s).await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}"
    );
    assert!(pumped.messages.contains(&g), "the message was redelivered");
    let mut expected = names("g", 2);
    expected.extend(valid);
    assert_tenant_is(&s.scim, &expected).await;
    let report = report_lines(&s.stack.sdk, BUCKET).await;
    let sqs_lines: Vec<&Value> = report
        .iter()
        .filter(|l| l["source"] == format!("sqs:{g}"))
        .collect();
    assert_eq!(sqs_lines.len(), 1, "{report:#?}");
    assert_eq!(sqs_lines[0]["status"], "invalid");
    let file_lines: Vec<&Value> = report
        .iter()
        .filter(|l| l["source"] == "s3://scim-uploads/incoming/report.csv")
        .filter(|l| l["status"] != "skipped")
        .collect();
    // (The rows enqueued by both invocations meet in one cycle, where the earlier copy is
    // reported "skipped: superseded": noise of the retry, not a loss; not counted here.)
    assert_eq!(file_lines.len(), 1, "{report:#?}");
    assert_eq!(file_lines[0]["status"], "invalid");
    assert_eq!(file_lines[0]["row"], 3);
    assert_queues_empty(&s).await;
}

#[tokio::test]
async fn a_poison_message_is_reported_once_on_its_last_delivery() {
    let s = setup(&[]).await;
    let url = &s.stack.queues.url;
    let poison_lines = |report: &[Value], id: &str| -> Vec<Value> {
        report
            .iter()
            .filter(|l| l["status"] == "poison" && l["source"] == format!("sqs:{id}"))
            .cloned()
            .collect()
    };
    // The work queue's redrive policy (3 receives) is read once: one report, at delivery 3.
    let p = send(&s.stack.sdk, url, r#"{"version": 99, "operations": []}"#).await;
    let pumped = drain(&s).await;
    assert_eq!(pumped.failures, vec![p.clone(); 3], "{pumped:?}");
    let report = report_lines(&s.stack.sdk, BUCKET).await;
    let lines = poison_lines(&report, &p);
    assert_eq!(lines.len(), 1, "{report:#?}");
    let reason = lines[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("version 99") && reason.contains("after 3 deliveries"),
        "{reason}"
    );
    assert_eq!(queue_depth(&s.stack.sdk, &s.stack.queues.dlq_url).await, 1);

    // When the policy cannot be read, the message is reported at every delivery rather than
    // never (the function cannot tell which delivery is the last).
    let attributes = AwsCall::target("GetQueueAttributes");
    let fresh = setup(&[]).await;
    fresh
        .aws
        .inject_always(attributes.clone(), AwsFault::internal_error());
    let q = send(&fresh.stack.sdk, &fresh.stack.queues.url, "not json at all").await;
    let pumped = drain(&fresh).await;
    assert_eq!(pumped.failures.len(), 3, "{pumped:?}");
    assert!(fresh.aws.faults_met(&attributes) >= 3);
    let report = report_lines(&fresh.stack.sdk, BUCKET).await;
    assert_eq!(poison_lines(&report, &q).len(), 3, "{report:#?}");
    assert_eq!(
        queue_depth(&fresh.stack.sdk, &fresh.stack.queues.dlq_url).await,
        1
    );
}
