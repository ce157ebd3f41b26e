//! The function with its ledger (DynamoDB on moto) as AWS runs it, in process: a rerun of an
//! unchanged file writes nothing and reads little, and an older operation never overwrites a
//! newer one, whether they meet in one batch, in later batches or in two invocations at once.

mod support;

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use scim_bulk_provisioner::lambda::State;
use scim_bulk_provisioner::pipeline::Summary;
use serde_json::{json, Value};
use support::aws::{
    bearer_secret, create_ledger_table, delete_all_but, invoke, invoke_counted, pump_in_process,
    put_object, receive, s3_put_event, send, sqs_event, start_stack, Stack, BUCKET,
};
use support::faults::FaultProxy;
use support::{list_users, post_user, start_scim2_server, ScimOptions, ScimServer};

const KEY: &str = "incoming/staff.csv";
const TABLE: &str = "ledger";

/// The function's state with a ledger and reports in the upload bucket, as the template sets.
async fn state(stack: &Stack) -> State {
    create_ledger_table(&stack.sdk, TABLE).await;
    stack.state(&[
        ("LEDGER_TABLE", TABLE),
        ("REPORT_BUCKET", BUCKET),
        ("S3_CYCLE_MAX_OPERATIONS", "300"),
    ])
}

/// `n` people: every 20th a leaver (every other one of them in the tenant beforehand), every
/// 7th in the tenant beforehand under a differently-cased userName with an older title.
fn staff(n: usize) -> (String, Vec<Value>) {
    let mut csv = String::from("email,first_name,last_name,title,status\n");
    let mut existing = Vec::new();
    for i in 0..n {
        let email = format!("person{i:05}@example.com");
        let leaver = i % 20 == 3;
        let status = if leaver { "leaver" } else { "active" };
        csv.push_str(&format!(
            "{email},Given{i},Family{i},Agent {},{status}\n",
            i % 5
        ));
        if (leaver && i % 40 == 3) || (!leaver && i % 7 == 0) {
            existing.push(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email.to_uppercase(),
                "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
                "emails": [{"value": email, "type": "work", "primary": true}],
                "title": "Old title",
                "active": true,
            }));
        }
    }
    (csv, existing)
}

fn writes(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Runs an object's invocation, then the work queue until it is empty; the counts of all.
async fn run_to_the_end(stack: &Stack, state: &State, event: Value, id: &str) -> Summary {
    let (first, mut counts) = invoke_counted(state, event, id).await;
    first.expect("the object's invocation");
    let pumped = pump_in_process(
        &stack.sdk,
        &stack.queues,
        state,
        Duration::from_secs(2),
        Duration::from_secs(120),
    )
    .await;
    assert!(pumped.errors.is_empty(), "{pumped:?}");
    counts.add(&pumped.summary);
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_an_unchanged_file_writes_nothing_and_reads_little() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    let state = state(&stack).await;
    let n = 2_000;
    let (csv, existing) = staff(n);
    for user in &existing {
        post_user(&scim.base_url, &scim.token, user).await;
    }
    put_object(&stack.sdk, BUCKET, KEY, csv).await;

    let first = run_to_the_end(&stack, &state, s3_put_event(BUCKET, KEY), "first").await;
    let provisioned = first.created + first.updated + first.deactivated;
    let leavers = n / 20;
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(provisioned + first.skipped, n as u64, "{first:?}");
    assert_eq!(first.deactivated, (leavers / 2) as u64, "{first:?}");
    let users = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(
        users.len(),
        n - leavers / 2,
        "nobody twice, leavers never created"
    );

    // The same file again (an EventBridge rerun): every row is as the tenant holds it.
    proxy.clear_log();
    let rerun = json!({"detail-type": "Scheduled Event", "source": "aws.events",
                       "detail": {"bucket": BUCKET, "key": KEY}});
    let again = run_to_the_end(&stack, &state, rerun, "rerun").await;
    assert_eq!(
        writes(&proxy),
        Vec::<String>::new(),
        "no POST, PUT, PATCH or Bulk"
    );
    assert_eq!(again.unchanged, provisioned, "{again:?}");
    assert_eq!(
        again.created + again.updated + again.deactivated,
        0,
        "{again:?}"
    );
    assert_eq!(again.skipped, first.skipped, "{again:?}");
    let reads = proxy.requests().len();
    assert!(reads <= n / 100 + 3, "{reads} reads for {n} users");
}

/// A retry message as the function writes it, for one user with this title and time.
fn retry_body(email: &str, title: &str, at: u64) -> String {
    json!({"version": 1, "operations": [{
        "user": {"user_name": email, "email": email, "first_name": "Bob", "last_name": "Stale",
                 "active": true, "title": title},
        "attempt": 1, "source": "sqs:earlier", "first_seen": at / 1000, "source_time": at,
    }]})
    .to_string()
}

fn producer_body(email: &str, title: &str, status: &str) -> String {
    json!({"users": [{"email": email, "first_name": "Bob", "last_name": "Newer",
                      "title": title, "status": status}]})
    .to_string()
}

async fn bob(scim: &ScimServer) -> Value {
    let users = list_users(&scim.base_url, &scim.token).await;
    users
        .into_iter()
        .find(|u| u["userName"] == "bob@example.com")
        .expect("Bob exists")
}

/// Receives the queue's messages (SentTimestamp included), as the event source mapping does.
async fn batch_event(stack: &Stack) -> Value {
    let messages = stack.receive_batch().await;
    assert!(
        messages.iter().all(|m| m
            .attributes()
            .is_some_and(|a| a.contains_key(&MessageSystemAttributeName::SentTimestamp))),
        "SentTimestamp is delivered"
    );
    sqs_event(&messages, &stack.queues.arn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_retry_never_overwrites_newer_data() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = state(&stack).await;
    let stale = millis_now() - 60_000;

    // Same batch: a newer producer message and a stale retry ("Bob active, old title").
    send(
        &stack.sdk,
        &stack.queues.url,
        &producer_body("bob@example.com", "Newer", "active"),
    )
    .await;
    send(
        &stack.sdk,
        &stack.queues.url,
        &retry_body("bob@example.com", "Stale", stale),
    )
    .await;
    let event = batch_event(&stack).await;
    invoke(&state, event, "same-batch")
        .await
        .expect("invocation");
    assert_eq!(bob(&scim).await["title"], "Newer");

    // A later batch: the newer message made Bob a leaver; the stale retry comes back after.
    send(
        &stack.sdk,
        &stack.queues.url,
        &producer_body("bob@example.com", "Newer", "leaver"),
    )
    .await;
    let event = batch_event(&stack).await;
    invoke(&state, event, "leaver").await.expect("invocation");
    send(
        &stack.sdk,
        &stack.queues.url,
        &retry_body("bob@example.com", "Stale", stale),
    )
    .await;
    let event = batch_event(&stack).await;
    let (response, counts) = invoke_counted(&state, event, "late-retry").await;
    response.expect("invocation");
    assert_eq!(counts.skipped, 1, "{counts:?}");
    let now = bob(&scim).await;
    assert_eq!(
        (&now["active"], &now["title"]),
        (&json!(false), &json!("Newer"))
    );

    // Two invocations at once (two containers, one ledger): the older one never lands last.
    // (Times in the past: a retry message's time is never taken beyond the present.)
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let newer = millis_now() - 10;
        let older = newer - 20;
        let title = |t: &str| format!("{t} {round}");
        let ((a, _), (b, b_counts)) = tokio::join!(
            async {
                let event = json!({"Records": [sqs_record(&retry_body("bob@example.com", &title("older"), older), "a")]});
                invoke_counted(&state, event, "older").await
            },
            async {
                let event = json!({"Records": [sqs_record(&retry_body("bob@example.com", &title("newer"), newer), "b")]});
                invoke_counted(&state, event, "newer").await
            },
        );
        let (a, b) = (a.expect("older"), b.expect("newer"));
        // The newer one waited for the older one's write: it comes back from the queue (after
        // a few seconds at most) and goes then.
        if b_counts.deferred == 1 {
            let mut delivered = Vec::new();
            for _ in 0..10 {
                let (wait, visibility) = (Duration::from_secs(2), Duration::from_secs(30));
                delivered = receive(&stack.sdk, &stack.queues.url, wait, visibility).await;
                if !delivered.is_empty() {
                    break;
                }
            }
            assert_eq!(delivered.len(), 1, "the waiting operation came back");
            let event = sqs_event(&delivered, &stack.queues.arn);
            let (again, counts) = invoke_counted(&state, event, "waited").await;
            again.expect("invocation");
            assert_eq!(counts.updated, 1, "{counts:?}");
            delete_all_but(
                &stack.sdk,
                &stack.queues.url,
                &delivered,
                &Default::default(),
            )
            .await;
        }
        assert_eq!(
            bob(&scim).await["title"],
            title("newer"),
            "round {round}: {a} / {b} / {b_counts:?}"
        );
    }
    // And Bob was never created twice.
    let bobs = list_users(&scim.base_url, &scim.token)
        .await
        .into_iter()
        .filter(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("bob@example.com"))
        })
        .count();
    assert_eq!(bobs, 1);
}

fn millis_now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_millis() as u64
}

/// An SQS record as Lambda delivers it, with its SentTimestamp.
fn sqs_record(body: &str, id: &str) -> Value {
    json!({
        "messageId": id, "receiptHandle": id, "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:scim-work", "awsRegion": "us-east-1"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_drift_and_fixes_it_only_when_asked() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let state = state(&stack).await;
    let (csv, _) = staff(20);
    put_object(&stack.sdk, BUCKET, KEY, csv).await;
    let first = run_to_the_end(&stack, &state, s3_put_event(BUCKET, KEY), "first").await;
    assert_eq!(first.created, 19, "{first:?}");

    // Someone changes a managed attribute in the tenant.
    let users = list_users(&scim.base_url, &scim.token).await;
    let mut changed = users[0].clone();
    changed["title"] = json!("Changed by hand");
    support::put_user(&scim.base_url, &scim.token, &changed).await;

    let reconcile = json!({"detail-type": "Reconcile", "source": "ops",
                           "detail": {"reconcile": true}});
    let answer = invoke(&state, reconcile, "reconcile")
        .await
        .expect("reconcile");
    assert_eq!(answer["reconciled"]["drifted"], 1, "{answer}");
    assert_eq!(answer["reconciled"]["users"], 19, "{answer}");
    let sample = answer["reconciled"]["drift_sample"][0].as_str().unwrap();
    assert!(sample.contains("***"), "masked: {sample}");
    let title = |users: &[Value]| {
        users
            .iter()
            .find(|u| u["id"] == changed["id"])
            .map(|u| u["title"].clone())
    };
    let now = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(
        title(&now),
        Some(json!("Changed by hand")),
        "nothing changed"
    );

    let fix = json!({"detail-type": "Reconcile", "source": "ops",
                     "detail": {"reconcile": true, "fix": true, "bucket": BUCKET, "key": KEY}});
    let (answer, counts) = invoke_counted(&state, fix, "fix").await;
    answer.expect("reconcile and fix");
    assert_eq!((counts.updated, counts.unchanged), (1, 18), "{counts:?}");
    let now = list_users(&scim.base_url, &scim.token).await;
    assert_eq!(title(&now), Some(users[0]["title"].clone()), "set back");
}
