//! Bad SQS bodies and bad credentials secrets, end to end through the function (in process,
//! against moto and scim2-server) and the command-line tool: unusable messages are named in
//! `batchItemFailures` (and reach the dead-letter queue by redrive) while the rest of the batch
//! is provisioned; a bad secret stops the work with an error naming the field, never the value;
//! a token endpoint answering HTML or 500 loses nothing.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use scim_bulk_provisioner::lambda::{HandlerError, State};
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use serde_json::{json, Value};
use support::aws::{
    batch_failures, bearer_secret, create_secret, invoke, pump_in_process, queue_depth, receive,
    report_lines, send, sqs_event, start_stack, Stack, BUCKET,
};
use support::faults::{Fault, FaultProxy, TokenMode};
use support::{find_user, list_users, start_scim2_server, ScimOptions, ScimServer};

/// An SQS event as Lambda's event source mapping builds it, with chosen message ids (so bodies
/// larger than the queue itself accepts can be handed over too).
fn event(messages: &[(&str, String)], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{id}"),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1741076130000",
                               "SenderId": "AIDTEST", "ApproximateFirstReceiveTimestamp": "1741076130001"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

fn person(email: &str) -> Value {
    json!({"email": email, "first_name": "Given", "last_name": "Family"})
}

/// A retry message's operation for `email` (the function's own format), with `extra` fields.
fn retry_op(email: &str, extra: Value) -> Value {
    let mut op = json!({
        "user": {"user_name": email, "email": email, "first_name": "Re", "last_name": "Try", "active": true},
        "source": "s3://scim-uploads/incoming/old.csv",
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        op[k] = v;
    }
    op
}

async fn setup() -> (ScimServer, Stack, State) {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = stack.state(&[("REPORT_BUCKET", BUCKET)]);
    (scim, stack, state)
}

/// Every kind of unusable body in one batch — not JSON, truncated JSON, the wrong shape, an
/// empty `users`, a body over 1 MiB, retry messages of version 0 and 2 or malformed, no body —
/// is named in `batchItemFailures` and provisions nobody; the usable messages of the same batch
/// go: valid users created (from a 300 KiB message too: SQS takes 1 MiB), invalid users
/// reported by index, version-1 retry messages read even without their optional fields or
/// with fields a newer writer added.
#[tokio::test]
async fn unusable_bodies_fail_alone_and_the_rest_of_the_batch_goes() {
    let (scim, stack, state) = setup().await;
    let mut oversized = person("big@example.com");
    oversized["title"] = json!("x".repeat(1024 * 1024));
    let mut wide = person("wide@example.com");
    wide["title"] = json!("w".repeat(300 * 1024));
    let bad: Vec<(&str, String)> = vec![
        ("not-json", "hello, this is not JSON".into()),
        ("truncated", r#"{"users": [{"email": "cut@example.com", "first_na"#.into()),
        ("array", json!([person("array@example.com")]).to_string()),
        ("number", "42".into()),
        ("no-users-key", json!({"people": [person("people@example.com")]}).to_string()),
        ("users-object", json!({"users": person("object@example.com")}).to_string()),
        ("users-string", json!({"users": "string@example.com"}).to_string()),
        ("empty-users", json!({"users": []}).to_string()),
        ("oversized", json!({"users": [oversized]}).to_string()),
        ("retry-v0", json!({"version": 0, "operations": [retry_op("old@example.com", json!({}))]}).to_string()),
        ("retry-v2", json!({"version": 2, "operations": [retry_op("new@example.com", json!({}))], "priority": 1}).to_string()),
        ("retry-v1-malformed", json!({"version": 1, "operations": [{"user": "mal@example.com"}]}).to_string()),
        ("retry-version-text", json!({"version": "1", "operations": [retry_op("text@example.com", json!({}))]}).to_string()),
        ("empty-body", String::new()),
    ];
    assert!(bad[8].1.len() > 1024 * 1024);
    let good: Vec<(&str, String)> = vec![
        (
            "producer",
            json!({"users": [person("ada@example.com"),
                             {"email": "nolast@example.com", "first_name": "No"},
                             {"email": "not-an-address", "first_name": "A", "last_name": "B"}]})
            .to_string(),
        ),
        (
            "all-invalid",
            json!({"users": [{"email": "x", "first_name": "X", "last_name": "Y"}]}).to_string(),
        ),
        // Over the classic 256 KiB, under SQS's 1 MiB.
        ("wide", json!({"users": [wide]}).to_string()),
        // Written by this version but without the optional fields (attempt, row, first_seen).
        (
            "retry-v1-minimal",
            json!({"version": 1, "operations": [retry_op("minimal@example.com", json!({}))]})
                .to_string(),
        ),
        // Version 1 with fields a newer writer might add: they are ignored, the work is done.
        (
            "retry-v1-extra",
            json!({"version": 1, "written_by": "9.9.9", "operations": [retry_op("extra@example.com",
                json!({"attempt": 3, "row": 17, "first_seen": 1741076130, "last_error": "503", "trace": "t-1"}))]})
            .to_string(),
        ),
    ];
    let mut batch = bad.clone();
    batch.extend(good.iter().cloned());
    let response = invoke(&state, event(&batch, &stack.queues.arn), "req-bad-input")
        .await
        .expect("the batch is handled");

    let expected: BTreeSet<String> = bad.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        batch_failures(&response)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        expected,
        "exactly the unusable bodies fail"
    );

    let users = list_users(&scim.base_url, &scim.token).await;
    let mut names: Vec<&str> = users
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "ada@example.com",
            "extra@example.com",
            "minimal@example.com",
            "wide@example.com"
        ],
        "only the usable messages' valid users"
    );
    assert_eq!(
        find_user(&users, "extra@example.com").unwrap()["name"]["familyName"],
        "Try"
    );
    assert_eq!(
        find_user(&users, "wide@example.com").unwrap()["title"]
            .as_str()
            .unwrap()
            .len(),
        300 * 1024
    );

    let report = report_lines(&stack.sdk, BUCKET).await;
    let mut reported: Vec<(String, String)> = report
        .iter()
        .map(|l| {
            assert_eq!(l["status"], "invalid", "{l}");
            (
                l["source"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reported.sort();
    assert_eq!(reported.len(), 3, "{report:#?}");
    assert_eq!(reported[0].0, "sqs:all-invalid");
    assert!(reported[0].1.starts_with("users[0]: email"), "{reported:?}");
    assert_eq!(reported[1].0, "sqs:producer");
    assert_eq!(
        reported[1].1,
        "users[1]: last_name is empty; it is required"
    );
    assert!(reported[2].1.starts_with("users[2]: email"), "{reported:?}");
    assert!(!serde_json::to_string(&report)
        .unwrap()
        .contains("not-an-address"));
    assert_eq!(
        queue_depth(&stack.sdk, &stack.queues.url).await,
        0,
        "nothing was re-enqueued"
    );
}

/// Retry messages are not trusted: anyone allowed to send to the queue can write one. A forged
/// one with an invalid email is reported `invalid` by its message and operation index and
/// nothing is sent; one claiming u32::MAX attempts gets a single last attempt (no overflow, no
/// extra retries): after a 500 (an error that spends an attempt; a 503 would only wait) it is
/// reported failed, not re-enqueued.
#[tokio::test]
async fn forged_retry_messages_are_validated_like_producer_messages() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    let state = stack.state(&[("REPORT_BUCKET", BUCKET)]);
    proxy.inject("POST", "/Bulk", Fault::status(500));
    let mut bad_email = retry_op("not-an-address", json!({}));
    bad_email["user"]["user_name"] = json!("forged@example.com");
    let batch: Vec<(&str, String)> = vec![
        (
            "forged-email",
            json!({"version": 1, "operations": [retry_op("ok@example.com", json!({})), bad_email]})
                .to_string(),
        ),
        (
            "forged-attempt",
            json!({"version": 1, "operations": [retry_op("many@example.com", json!({"attempt": u32::MAX}))]})
                .to_string(),
        ),
    ];
    let response = invoke(&state, event(&batch, &stack.queues.arn), "req-forged")
        .await
        .expect("the batch is handled");
    assert!(batch_failures(&response).is_empty(), "{response}");
    assert_eq!(proxy.pending_faults(), 0, "the 500 was met");

    let users = list_users(&scim.base_url, &scim.token).await;
    assert!(users.is_empty(), "nothing got through the 500: {users:#?}");
    let sent: Vec<String> = proxy
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .map(|body| body.to_string())
        .collect();
    assert!(
        sent.iter()
            .all(|b| !b.contains("not-an-address") && !b.contains("forged@")),
        "the invalid user was never sent: {sent:?}"
    );
    assert_eq!(
        queue_depth(&stack.sdk, &stack.queues.url).await,
        1,
        "only ok@ goes back to the queue after the 500"
    );
    let requeued = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await;
    let body: Value = serde_json::from_str(requeued[0].body().unwrap()).unwrap();
    let ops = body["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1, "{body}");
    assert_eq!(ops[0]["user"]["user_name"], "ok@example.com");

    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len(), 2, "{report:#?}");
    let invalid = report
        .iter()
        .find(|l| l["status"] == "invalid")
        .expect("an invalid line");
    assert_eq!(invalid["source"], "sqs:forged-email");
    let reason = invalid["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("operations[1]: email") && reason.contains("no @"),
        "{reason}"
    );
    let failed = report
        .iter()
        .find(|l| l["status"] == "failed")
        .expect("a failed line");
    assert_eq!(failed["user_name"], "many@example.com");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("gave up after 8 attempts"),
        "MAX_ATTEMPTS is 8: {reason}"
    );
}

/// A retry message's `source` may name any bucket: reports of SQS work go to `REPORT_BUCKET`
/// only, and without it to the log, never to a bucket a message names (created here, and
/// checked empty).
#[tokio::test]
async fn a_forged_source_never_chooses_the_report_bucket() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let victim = "someone-elses-bucket";
    support::aws::create_bucket(&stack.sdk, victim).await;
    // A leaver who does not exist: skipped, which makes a report line.
    let forged = |email: &str| {
        let mut op = retry_op(
            email,
            json!({"source": format!("s3://{victim}/incoming/staff.csv"), "row": 2}),
        );
        op["user"]["active"] = json!(false);
        json!({"version": 1, "operations": [op]}).to_string()
    };
    for (extra, email, request) in [
        (&[][..], "gone@example.com", "req-no-report-bucket"),
        (
            &[("REPORT_BUCKET", BUCKET)][..],
            "left@example.com",
            "req-report-bucket",
        ),
    ] {
        let state = stack.state(extra);
        let response = invoke(
            &state,
            event(&[("forged-source", forged(email))], &stack.queues.arn),
            request,
        )
        .await
        .expect("handled");
        assert!(batch_failures(&response).is_empty(), "{response}");
        assert!(
            support::aws::list_keys(&stack.sdk, victim, "")
                .await
                .is_empty(),
            "{request}: nothing may be written to a bucket a message names"
        );
    }
    let report = report_lines(&stack.sdk, BUCKET).await;
    assert_eq!(report.len(), 1, "only with REPORT_BUCKET: {report:#?}");
    assert_eq!(report[0]["status"], "skipped");
    assert_eq!(report[0]["user_name"], "left@example.com");
    assert_eq!(
        report[0]["source"],
        format!("s3://{victim}/incoming/staff.csv")
    );
    assert!(list_users(&scim.base_url, &scim.token).await.is_empty());
}

/// Poison messages (not JSON, empty `users`, a retry message of version 2) sent through the real
/// queue fail on every delivery and end in the dead-letter queue after `maxReceiveCount`,
/// untouched; the good message beside them is provisioned once.
#[tokio::test]
async fn poison_messages_end_in_the_dead_letter_queue_untouched() {
    let (scim, stack, state) = setup().await;
    let poison = [
        "{\"users\": [".to_string(),
        json!({"users": []}).to_string(),
        json!({"version": 2, "operations": [retry_op("future@example.com", json!({}))]})
            .to_string(),
    ];
    for body in &poison {
        send(&stack.sdk, &stack.queues.url, body).await;
    }
    send(
        &stack.sdk,
        &stack.queues.url,
        &json!({"users": [person("good@example.com")]}).to_string(),
    )
    .await;
    let pumped = pump_in_process(
        &stack.sdk,
        &stack.queues,
        &state,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    assert!(pumped.errors.is_empty(), "{pumped:?}");
    assert_eq!(
        pumped.failures.len(),
        3 * poison.len(),
        "each poison message fails on each of its 3 deliveries: {pumped:?}"
    );
    let users = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(users.len(), 1, "{users:#?}");
    assert!(find_user(&users, "good@example.com").is_some());

    let mut dead = Vec::new();
    for _ in 0..5 {
        let got = receive(
            &stack.sdk,
            &stack.queues.dlq_url,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await;
        dead.extend(got.iter().filter_map(|m| m.body().map(str::to_string)));
        if dead.len() >= poison.len() {
            break;
        }
    }
    dead.sort();
    let mut expected = poison.to_vec();
    expected.sort();
    assert_eq!(dead, expected, "the DLQ holds exactly the poison, as sent");
}

/// A secret that is not JSON, names an unknown auth_type, or misses a field of its auth_type
/// stops the invocation before anything is sent, with an error naming the problem and the field,
/// never a value of the secret.
#[tokio::test]
async fn a_malformed_secret_stops_the_invocation_naming_the_field_not_the_value() {
    let (scim, stack, _) = setup().await;
    let base = scim.base_url.as_str();
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "not-json",
            "token=hunter2-secret-value".to_string(),
            &["not a JSON object"],
        ),
        (
            "unknown-auth-type",
            json!({"base_url": base, "auth_type": "hunter2-basic", "token": "hunter2-secret-value"})
                .to_string(),
            &["`auth_type`", "bearer, oauth_client_credentials, cxone_access_key"],
        ),
        (
            "oauth-without-client-secret",
            json!({"base_url": base, "auth_type": "oauth_client_credentials",
                   "token_url": format!("{base}/oauth/token"), "client_id": "hunter2-client-id"})
            .to_string(),
            &["`client_secret`"],
        ),
        (
            "cxone-token-not-a-string",
            json!({"base_url": base, "auth_type": "cxone_access_key", "token_url": format!("{base}/token"),
                   "access_key_id": "hunter2-key-id", "access_key_secret": 12345678})
            .to_string(),
            &["`access_key_secret` must be a string"],
        ),
    ];
    for (name, text, words) in cases {
        create_secret(&stack.sdk, name, &text).await;
        let state = stack.state(&[("SCIM_SECRET_ID", name)]);
        let batch = [(
            "m-1",
            json!({"users": [person("ada@example.com")]}).to_string(),
        )];
        let err = invoke(&state, event(&batch, &stack.queues.arn), "req-bad-input")
            .await
            .expect_err("a malformed secret stops the invocation");
        let text = err.to_string();
        assert!(matches!(err, HandlerError::Engine(_)), "{name}: {text}");
        for word in words {
            assert!(text.contains(word), "{name}: {word:?} not in {text}");
        }
        assert!(!text.contains("hunter2"), "{name}: a value leaked: {text}");
        assert!(!text.contains("12345678"), "{name}: a value leaked: {text}");
    }
    assert!(list_users(&scim.base_url, &scim.token).await.is_empty());
    assert_eq!(queue_depth(&stack.sdk, &stack.queues.url).await, 0);
}

/// A secret id that does not exist: nothing is sent, nothing is lost — the batch's users go back
/// to the queue with the reason (ResourceNotFound), and no message is failed.
#[tokio::test]
async fn a_missing_secret_sends_nothing_and_requeues_the_work_with_the_reason() {
    let (scim, stack, _) = setup().await;
    let state = stack.state(&[("SCIM_SECRET_ID", "no-such-secret")]);
    let batch = [(
        "m-1",
        json!({"users": [person("ada@example.com")]}).to_string(),
    )];
    let response = invoke(&state, event(&batch, &stack.queues.arn), "req-bad-input")
        .await
        .expect("handled: the work is re-enqueued");
    assert!(batch_failures(&response).is_empty(), "{response}");
    assert!(list_users(&scim.base_url, &scim.token).await.is_empty());
    let requeued = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(requeued.len(), 1);
    let body: Value = serde_json::from_str(requeued[0].body().unwrap()).unwrap();
    assert_eq!(body["version"], 1);
    let op = &body["operations"][0];
    assert_eq!(op["user"]["user_name"], "ada@example.com");
    assert_eq!(op["attempt"], 1);
    let last_error = op["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("credentials could not be read")
            && last_error.contains("ResourceNotFound"),
        "{last_error}"
    );
}

fn oauth_secret(proxy: &FaultProxy) -> String {
    json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": "test-client-secret", "scope": "scim",
    })
    .to_string()
}

/// A token endpoint answering an HTML page (200) or a 500: no message fails, every user goes
/// back to the queue with the reason; once the endpoint recovers, everyone is provisioned
/// exactly once and the dead-letter queue stays empty.
#[tokio::test]
async fn a_token_endpoint_answering_html_or_500_loses_nobody() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&oauth_secret(&proxy)).await;
    let state = stack.state(&[]);
    for (i, mode) in [TokenMode::Html, TokenMode::ServerError]
        .into_iter()
        .enumerate()
    {
        proxy.set_token_mode(mode);
        let users: Vec<Value> = (0..3)
            .map(|j| person(&format!("t{i}-{j}@example.com")))
            .collect();
        send(
            &stack.sdk,
            &stack.queues.url,
            &json!({ "users": users }).to_string(),
        )
        .await;
        let messages = stack.receive_batch().await;
        assert_eq!(messages.len(), 1);
        let response = invoke(
            &state,
            sqs_event(&messages, &stack.queues.arn),
            "req-bad-input",
        )
        .await
        .expect("handled");
        assert!(batch_failures(&response).is_empty(), "{mode:?}: {response}");
        support::aws::delete_all_but(
            &stack.sdk,
            &stack.queues.url,
            &messages,
            &Default::default(),
        )
        .await;
        let requeued = receive(
            &stack.sdk,
            &stack.queues.url,
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(requeued.len(), 1, "{mode:?}: one retry message");
        let body = requeued[0].body().unwrap();
        assert!(
            body.contains("the token endpoint is unavailable"),
            "{mode:?}: {body}"
        );
        assert!(!body.contains("test-client-secret"), "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap()["operations"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(proxy.hits_for("POST", "/Bulk"), 0, "nothing was sent");
    }
    proxy.set_token_mode(TokenMode::Normal);
    support::aws::drain(&stack, &state, Duration::from_secs(60)).await;
    let users = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(users.len(), 6, "{users:#?}");
    for i in 0..2 {
        for j in 0..3 {
            let name = format!("t{i}-{j}@example.com");
            let n = users.iter().filter(|u| u["userName"] == name).count();
            assert_eq!(n, 1, "{name} exactly once");
        }
    }
    assert_eq!(queue_depth(&stack.sdk, &stack.queues.dlq_url).await, 0);
}

/// The command-line tool with a token endpoint answering HTML or 500: exit 2 within seconds,
/// naming the token endpoint, never the client secret; nothing created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_with_a_broken_token_endpoint_exits_2_naming_it() {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: "upstream-token-3f9a".into(),
        ..TenantConfig::default()
    })
    .await
    .unwrap();
    let proxy = FaultProxy::start(&tenant.base_url(), "upstream-token-3f9a");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("staff.csv");
    std::fs::write(
        &csv,
        "email,first_name,last_name\nada@example.com,Ada,Lovelace\n",
    )
    .unwrap();
    let credentials = dir.path().join("scim.json");
    std::fs::write(&credentials, oauth_secret(&proxy)).unwrap();
    for mode in [TokenMode::Html, TokenMode::ServerError] {
        proxy.set_token_mode(mode);
        let args = [
            "provision".to_string(),
            "--quiet".into(),
            "--csv".into(),
            csv.display().to_string(),
            "--credentials".into(),
            credentials.display().to_string(),
        ];
        let started = std::time::Instant::now();
        let run = support::run_cli(args.to_vec(), Vec::new()).await;
        let (stdout, stderr) = (&run.out, &run.err);
        assert_eq!(run.code, 2, "{mode:?}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("the token endpoint is unavailable"),
            "{mode:?}: {stderr}"
        );
        assert!(!stderr.contains("test-client-secret") && !stdout.contains("test-client-secret"));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(tenant.users().is_empty());
    assert_eq!(tenant.stats().bulk_requests, 0);
}
