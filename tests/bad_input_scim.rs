//! Bad SCIM responses, end to end: the function (in process, moto for SQS and S3) provisions
//! through the project's fault proxy in front of scim2-server, and each run is driven through
//! the work queue to completion. The outcome checked is the one that matters: every user exists
//! exactly once with the right attributes, or is in a report with a reason — never counted as
//! done when the service did not do it.
//!
//! A careful client's rules for answers that lie or cannot be read, as tested here:
//! - a body that is not JSON, cut off, or not a BulkResponse: nothing is proven, retry all;
//! - results are matched by bulkId: unknown bulkIds are ignored, an operation without a result,
//!   or with conflicting results, is retried (an upsert is safe to send again);
//! - a success status is not enough on its own: a "201" without any resource (no location, no
//!   id) or with a SCIM Error document as its body proves nothing was created, so it must not be
//!   counted as created (retry it, or report it), and the user must not be lost.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scim_bulk_provisioner::engine::{Engine, EngineConfig};
use scim_bulk_provisioner::lambda::State;
use scim_bulk_provisioner::operation::{Operation, Outcome};
use scim_bulk_provisioner::scim::credentials::Credentials;
use scim_bulk_provisioner::scim::http::{caps, size};
use scim_bulk_provisioner::user::User;
use serde_json::{json, Value};
use support::aws::{
    bearer_secret, pump_in_process, report_lines, send, start_stack, Pumped, Stack, BUCKET,
};
use support::engine::{bearer, cycle, engine_with};
use support::faults::{Fault, FaultProxy};
use support::{list_users, start_scim2_server, ScimOptions, ScimServer};

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

struct Peer {
    scim: ScimServer,
    proxy: FaultProxy,
    stack: Stack,
    state: State,
}

/// scim2-server behind the fault proxy, and the function pointed at the proxy.
async fn peer(options: ScimOptions) -> Peer {
    support::aws::init_logs();
    let scim = start_scim2_server(options).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
    let state = stack.state(&[("REPORT_BUCKET", BUCKET)]);
    Peer {
        scim,
        proxy,
        stack,
        state,
    }
}

fn email(name: &str) -> String {
    format!("{name}@example.com")
}

/// The producer message's user for `name`, and the family name it must end up with.
fn person(name: &str) -> Value {
    json!({"email": email(name), "first_name": "Given", "last_name": format!("Family-{name}"),
           "title": "Agent"})
}

impl Peer {
    /// Sends one producer message with these users and drains the queue through the function.
    async fn provision(&self, names: &[&str]) -> Pumped {
        let users: Vec<Value> = names.iter().map(|n| person(n)).collect();
        send(
            &self.stack.sdk,
            &self.stack.queues.url,
            &json!({ "users": users }).to_string(),
        )
        .await;
        pump_in_process(
            &self.stack.sdk,
            &self.stack.queues,
            &self.state,
            Duration::from_secs(2),
            Duration::from_secs(90),
        )
        .await
    }

    /// Nobody lost, nobody doubled: each user exists exactly once with its attributes, or is
    /// reported failed with a reason; no message failed. Returns the report lines.
    async fn check(&self, names: &[&str], pumped: &Pumped) -> Vec<Value> {
        assert!(
            pumped.errors.is_empty() && pumped.failures.is_empty(),
            "{pumped:?}"
        );
        let users = list_users(&self.scim.base_url, &self.scim.token).await;
        let report = report_lines(&self.stack.sdk, BUCKET).await;
        for name in names {
            let found: Vec<&Value> = users
                .iter()
                .filter(|u| u["userName"] == email(name))
                .collect();
            let reported = report
                .iter()
                .any(|l| l["user_name"] == email(name) && l["status"] == "failed");
            match found.as_slice() {
                [user] => {
                    assert_eq!(user["name"]["familyName"], format!("Family-{name}"));
                    assert_eq!(user["title"], "Agent");
                    assert!(!reported, "{name} exists but is reported failed: {report:#?}");
                }
                [] => assert!(
                    reported,
                    "{name} is neither in the tenant nor in a report: lost. Users: {users:#?}, report: {report:#?}"
                ),
                many => panic!("{name} exists {} times", many.len()),
            }
        }
        assert_eq!(users.len(), names.len() - failed(&report), "{users:#?}");
        report
    }
}

fn failed(report: &[Value]) -> usize {
    report.iter().filter(|l| l["status"] == "failed").count()
}

/// A 200 answer with this JSON body, sent without forwarding (the server does nothing).
fn answer_200(body: Value) -> Fault {
    Fault::Status {
        code: 200,
        retry_after: None,
        body: Some(body.to_string()),
    }
}

/// A BulkResponse that is an HTML page, then one cut off in the middle (after the server applied
/// it): both retried through the queue; the retry of the applied one meets a 409 and updates.
#[tokio::test]
async fn non_json_or_truncated_bulk_responses_are_retried_to_completion() {
    let p = peer(ScimOptions::default()).await;
    p.proxy.inject("POST", "/Bulk", Fault::html(200));
    p.proxy.inject("POST", "/Bulk", Fault::Truncate);
    let names = ["html-a", "html-b", "html-c"];
    let pumped = p.provision(&names).await;
    let report = p.check(&names, &pumped).await;
    assert!(report.is_empty(), "{report:#?}");
    assert_eq!(p.proxy.pending_faults(), 0, "both faults were met");
    assert!(pumped.invocations >= 3, "two retries: {pumped:?}");
}

/// A BulkResponse with results for unknown bulkIds (and none), a duplicate result, and
/// conflicting results for one operation: results are matched by bulkId only; the operation
/// whose only answer had an unknown bulkId and the one with conflicting answers are retried;
/// in the end everyone exists exactly once with the right attributes.
#[tokio::test]
async fn unknown_and_duplicate_bulk_ids_are_matched_by_id_and_the_rest_retried() {
    let p = peer(ScimOptions::default()).await;
    // op0's user really exists (as the tool would create it), so its "201" is true.
    let first = scim_bulk_provisioner::sources::parse_message(
        &json!({"users": [person("bulk-0")]}).to_string(),
    )
    .unwrap()
    .remove(0)
    .unwrap();
    let created = support::http_client()
        .post(format!("{}/Users", p.scim.base_url))
        .bearer_auth(&p.scim.token)
        .header("content-type", "application/scim+json")
        .body(first.to_scim().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = serde_json::from_slice(&created.bytes().await.unwrap()).unwrap();
    let id0 = created["id"].as_str().unwrap().to_string();
    let at = |id: &str| format!("{}/Users/{id}", p.proxy.url);
    let lies = json!({
        "schemas": [BULK_RESPONSE],
        "Operations": [
            {"bulkId": "op99", "method": "POST", "status": "201", "location": at("ghost-1")},
            {"bulkId": "op0", "method": "POST", "status": "201", "location": at(&id0)},
            {"bulkId": "op0", "method": "POST", "status": "201", "location": at(&id0)},
            {"bulkId": "op1", "method": "POST", "status": "201", "location": at("ghost-2")},
            {"bulkId": "op1", "method": "POST", "status": "500",
             "response": {"schemas": [ERROR_SCHEMA], "status": "500", "detail": "oops"}},
            {"method": "POST", "status": "201", "location": at("ghost-3")},
            {"bulkId": null, "method": "POST", "status": "201"},
        ]
    });
    p.proxy.inject("POST", "/Bulk", answer_200(lies));
    let names = ["bulk-0", "bulk-1", "bulk-2"];
    let pumped = p.provision(&names).await;
    let report = p.check(&names, &pumped).await;
    assert!(report.is_empty(), "{report:#?}");
    assert_eq!(p.proxy.pending_faults(), 0);
    // The first BulkRequest named all three; the retry only the two without a usable answer.
    let bulks: Vec<Value> = p
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/Bulk"))
        .filter_map(|r| r.json())
        .collect();
    let sent = |b: &Value| -> Vec<String> {
        b["Operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["data"]["userName"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(sent(&bulks[0]).len(), 3);
    let mut retried: Vec<String> = bulks[1..].iter().flat_map(sent).collect();
    retried.sort();
    assert_eq!(retried, [email("bulk-1"), email("bulk-2")], "{bulks:#?}");
}

/// A whole-request "200" whose body is a SCIM Error document, not a BulkResponse (a gateway or
/// a confused server): nothing is taken as done; the users are retried and provisioned.
#[tokio::test]
async fn a_200_carrying_an_error_document_instead_of_a_bulk_response_is_retried() {
    let p = peer(ScimOptions::default()).await;
    let error = json!({"schemas": [ERROR_SCHEMA], "status": "400", "scimType": "invalidSyntax",
                       "detail": "request rejected by policy"});
    p.proxy.inject("POST", "/Bulk", answer_200(error));
    let names = ["err-doc-a", "err-doc-b"];
    let pumped = p.provision(&names).await;
    let report = p.check(&names, &pumped).await;
    assert!(report.is_empty(), "{report:#?}");
    assert!(pumped.invocations >= 2, "{pumped:?}");
}

/// A BulkResponse claiming success for operations the server did not do: a "201" with no
/// location and no resource, and a "200" whose response is a SCIM Error document. Neither may
/// be counted as created: the users must end up provisioned (after a retry) or reported.
#[tokio::test]
async fn a_bulk_success_without_a_resource_or_with_an_error_body_is_not_taken_as_created() {
    let p = peer(ScimOptions::default()).await;
    let lies = json!({
        "schemas": [BULK_RESPONSE],
        "Operations": [
            {"bulkId": "op0", "method": "POST", "status": "201"},
            {"bulkId": "op1", "method": "POST", "status": "200",
             "response": {"schemas": [ERROR_SCHEMA], "status": "409", "scimType": "uniqueness",
                          "detail": "userName is already taken"}},
        ]
    });
    p.proxy.inject("POST", "/Bulk", answer_200(lies));
    let names = ["claimed-0", "claimed-1"];
    let pumped = p.provision(&names).await;
    p.check(&names, &pumped).await;
}

/// Without Bulk (one request per user): a POST answered "200" with a SCIM Error document as its
/// body did not create the user, so it must not be counted as created.
#[tokio::test]
async fn a_post_answered_200_with_an_error_body_is_not_taken_as_created() {
    let p = peer(ScimOptions {
        bulk_supported: false,
        ..ScimOptions::default()
    })
    .await;
    let error = json!({"schemas": [ERROR_SCHEMA], "status": "409", "scimType": "uniqueness",
                       "detail": "userName is already taken"});
    p.proxy.inject_times("POST", "/Users", answer_200(error), 2);
    let names = ["single-a", "single-b"];
    let pumped = p.provision(&names).await;
    p.check(&names, &pumped).await;
    assert_eq!(
        p.proxy.hits_for("POST", "/Bulk"),
        0,
        "no bulk on this server"
    );
}

/// Without Bulk: the update (PUT) of an existing user answered "200" with a SCIM Error document
/// whose status is 503 did not update anyone, so it must not be counted as updated: it is retried
/// and the user ends up with the new attributes.
#[tokio::test]
async fn an_update_answered_200_with_an_error_body_is_not_taken_as_updated() {
    let p = peer(ScimOptions {
        bulk_supported: false,
        ..ScimOptions::default()
    })
    .await;
    let existing = support::create_user(&p.scim.base_url, &p.scim.token, &email("stale")).await;
    let id = existing["id"].as_str().expect("the created user's id");
    let error = json!({"schemas": [ERROR_SCHEMA], "status": "503",
                       "detail": "service temporarily unavailable"});
    p.proxy
        .inject("PUT", &format!("/Users/{id}"), answer_200(error));
    let names = ["stale"];
    let pumped = p.provision(&names).await;
    let report = p.check(&names, &pumped).await;
    assert!(report.is_empty(), "{report:#?}");
    assert_eq!(p.proxy.pending_faults(), 0, "the lying answer was met");
    assert!(
        pumped.invocations >= 2,
        "retried through the queue: {pumped:?}"
    );
}

// --- Answers too large, and the server's words (issue 15, items 5, 8b and 11) ---
// One cycle of the engine through the fault proxy: what each operation's outcome says.

fn operation(name: &str) -> Operation {
    let user = User {
        user_name: email(name),
        email: email(name),
        first_name: "Given".into(),
        last_name: format!("Family-{name}"),
        active: true,
        display_name: None,
        external_id: None,
        title: None,
        department: None,
        employee_number: None,
        phone: None,
    };
    Operation::new(user, "test", None)
}

/// The engine pointed at the proxy.
fn engine_via(proxy: &FaultProxy, scim: &ScimServer) -> Engine {
    engine_with(bearer(&proxy.url, &scim.token), EngineConfig::default())
}

/// The outcome's status and reason, which must be a retry.
fn retried(outcome: &Outcome) -> (Option<u16>, String) {
    match outcome {
        Outcome::Retry { status, reason, .. } => (*status, reason.clone()),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// `len` zero bytes, gzipped a MiB at a time.
fn gzip_zeros(len: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        encoder.write_all(&block[..n]).unwrap();
        left -= n;
    }
    encoder.finish().unwrap()
}

/// A userName lookup answered with a ListResponse past the cap (valid JSON, naming the user):
/// the client stops reading at the cap, says so, and retries the user later instead of trusting
/// or holding the answer.
#[tokio::test]
async fn a_lookup_answer_past_its_cap_is_not_read_and_the_user_is_retried() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    support::create_user(&scim.base_url, &scim.token, &email("big-list")).await;
    let list = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 1,
        "Resources": [{"id": "padded", "userName": email("big-list"),
                       "padding": "x".repeat(caps::ANSWER)}],
    });
    proxy.inject("GET", "/Users", answer_200(list));
    let report = cycle(&engine_via(&proxy, &scim), vec![operation("big-list")]).await;
    let (status, reason) = retried(&report.results[0].outcome);
    assert_eq!(status, Some(200));
    assert!(reason.contains("GET /Users"), "{reason}");
    assert!(
        reason.contains(&format!("larger than {}", size(caps::ANSWER))),
        "{reason}"
    );
    assert_eq!(proxy.pending_faults(), 0, "the lookup met the fault");
    assert_eq!(
        proxy.hits_for("PUT", "/Users/padded"),
        0,
        "nothing was trusted"
    );
}

/// A BulkResponse of a few hundred KiB that inflates (gzip) far past the cap: decompression
/// stops at the cap, and an answer that could not be read is no refusal: every operation is
/// retried, none failed.
#[tokio::test]
async fn a_gzipped_bulk_answer_inflating_past_its_cap_is_retried_not_failed() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let inflated = 4 * caps::bulk_answer(0);
    let gzipped = gzip_zeros(inflated);
    assert!(gzipped.len() < inflated / 500, "{} bytes", gzipped.len());
    proxy.inject(
        "POST",
        "/Bulk",
        Fault::Gzip {
            code: 200,
            gzipped: gzipped.into(),
        },
    );
    let ops = vec![operation("bomb-a"), operation("bomb-b")];
    let report = cycle(&engine_via(&proxy, &scim), ops).await;
    for result in &report.results {
        let (status, reason) = retried(&result.outcome);
        assert_eq!(status, Some(200));
        assert!(reason.contains("POST /Bulk"), "{reason}");
        assert!(
            reason.contains(&format!("larger than {}", size(caps::bulk_answer(0)))),
            "{reason}"
        );
    }
    assert_eq!(proxy.pending_faults(), 0);
}

const DETAIL: &str = "directory sync for ada.lovelace@example.com failed";

/// The same server error in a Bulk result and in a per-resource answer reads the same: the
/// status and the server's detail, its address masked.
#[tokio::test]
async fn a_server_detail_reads_the_same_in_a_bulk_result_and_a_per_resource_answer() {
    let error = json!({"schemas": [ERROR_SCHEMA], "status": "500", "detail": DETAIL});

    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let results = json!({"schemas": [BULK_RESPONSE], "Operations": [
        {"bulkId": "op0", "method": "POST", "status": "500", "response": error}]});
    proxy.inject("POST", "/Bulk", answer_200(results));
    let report = cycle(&engine_via(&proxy, &scim), vec![operation("same-words")]).await;
    let in_bulk = retried(&report.results[0].outcome);

    let scim = start_scim2_server(ScimOptions {
        bulk_supported: false,
        ..ScimOptions::default()
    })
    .await;
    let proxy = FaultProxy::in_front_of(&scim);
    let answer = Fault::Status {
        code: 500,
        retry_after: None,
        body: Some(error.to_string()),
    };
    proxy.inject("POST", "/Users", answer);
    let report = cycle(&engine_via(&proxy, &scim), vec![operation("same-words")]).await;
    let per_resource = retried(&report.results[0].outcome);

    let expected = (
        Some(500),
        "the service answered HTTP 500: directory sync for a***@example.com failed".to_string(),
    );
    assert_eq!(in_bulk, expected);
    assert_eq!(per_resource, expected);
}

/// Log lines written on this thread (the function runs in process on the test's thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Without a report bucket the failures are logged instead: the server's detail there has its
/// addresses masked, and a 100 KB detail is cut short.
#[tokio::test(flavor = "current_thread")]
async fn without_a_report_bucket_the_logged_server_detail_is_masked_and_bounded() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _logs = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish(),
    );
    let p = peer(ScimOptions::default()).await;
    let state = p.stack.state(&[]);
    let refused = |id: &str, detail: String| {
        json!({"bulkId": id, "method": "POST", "status": "400",
               "response": {"schemas": [ERROR_SCHEMA], "status": "400", "detail": detail}})
    };
    let results = json!({"schemas": [BULK_RESPONSE], "Operations": [
        refused("op0", DETAIL.into()), refused("op1", "é".repeat(50_000))]});
    p.proxy.inject("POST", "/Bulk", answer_200(results));
    let users = json!({"users": [person("logged-a"), person("logged-b")]});
    send(&p.stack.sdk, &p.stack.queues.url, &users.to_string()).await;
    let pumped = pump_in_process(
        &p.stack.sdk,
        &p.stack.queues,
        &state,
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    assert!(pumped.errors.is_empty(), "{pumped:?}");

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let reasons: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("REPORT_BUCKET")
        })
        .map(|l| l["fields"]["reason"].as_str().unwrap_or("").to_string())
        .collect();
    // Only the start of each reason in a failure message: unbounded ones are 100 KB.
    let starts: Vec<String> = reasons
        .iter()
        .map(|r| r.chars().take(80).collect())
        .collect();
    assert_eq!(reasons.len(), 2, "{starts:?}");
    assert!(
        reasons.contains(&"directory sync for a***@example.com failed".to_string()),
        "{starts:?}"
    );
    assert!(
        !text.contains("ada.lovelace"),
        "an address in the log: {starts:?}"
    );
    for reason in &reasons {
        assert!(
            reason.chars().count() <= 1000,
            "{} chars",
            reason.chars().count()
        );
    }
}

/// A token endpoint (the stand-in's) announcing a token that lives for u64::MAX seconds: the
/// life is clamped, nothing overflows, and the one token serves the whole cycle.
#[tokio::test]
async fn a_token_with_an_endless_expires_in_is_used_without_overflow() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    proxy.set_expires_in(u64::MAX);
    let credentials = json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": "test-client-secret",
    });
    let credentials = Credentials::from_json(&credentials.to_string()).unwrap();
    let engine = engine_with(credentials, EngineConfig::default());
    let report = cycle(
        &engine,
        vec![operation("endless-a"), operation("endless-b")],
    )
    .await;
    for result in &report.results {
        assert!(
            matches!(result.outcome, Outcome::Created { .. }),
            "{:?}",
            result.outcome
        );
    }
    assert_eq!(proxy.tokens_issued(), 1);
}
