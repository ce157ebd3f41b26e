//! The engine against faults a real peer cannot be made to produce: the project's fault proxy in
//! front of scim2-server (429, 503, resets, timeouts, HTML, dropped results, expired tokens).

mod support;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use scim_bulk_provisioner::engine::{EngineConfig, EngineError};
use scim_bulk_provisioner::operation::{Operation, Outcome};
use scim_bulk_provisioner::retry::RetryPolicy;
use scim_bulk_provisioner::scim::credentials::Credentials;
use scim_bulk_provisioner::scim::http::Timeouts;
use scim_bulk_provisioner::user::User;
use serde_json::json;
use support::engine::{cycle, engine_with, kinds};
use support::faults::{Fault, FaultProxy, TokenMode};
use support::{start_scim2_server, ScimOptions, ScimServer};

fn user(name: &str) -> User {
    User {
        user_name: format!("{name}@example.com"),
        email: format!("{name}@example.com"),
        first_name: "Given".into(),
        last_name: name.into(),
        active: true,
        display_name: None,
        external_id: None,
        title: None,
        department: None,
        employee_number: None,
        phone: None,
    }
}

fn ops(prefix: &str, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|i| Operation::new(user(&format!("{prefix}{i}")), "test", None))
        .collect()
}

fn bearer(proxy: &FaultProxy, scim: &ScimServer) -> Credentials {
    support::engine::bearer(&proxy.url, &scim.token)
}

async fn setup() -> (ScimServer, FaultProxy) {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    (scim, proxy)
}

fn retry_of(outcome: &Outcome) -> (Option<u16>, String, Duration) {
    match outcome {
        Outcome::Retry {
            status,
            reason,
            delay,
            ..
        } => (*status, reason.clone(), *delay),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// Whether a retry spends an attempt (a refusal, an ambiguous error) or only waits.
fn spends_attempt(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Retry { attempt_spent, .. } => *attempt_spent,
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn throttled_request_retries_no_sooner_than_retry_after() {
    let (scim, proxy) = setup().await;
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    proxy.inject("POST", "/Bulk", Fault::throttled("120"));
    let report = cycle(&engine, ops("throttled", 3)).await;
    assert_eq!(report.stats.throttled, 1);
    for r in &report.results {
        let (status, _, delay) = retry_of(&r.outcome);
        assert_eq!(status, Some(429));
        assert!(delay >= Duration::from_secs(120), "{delay:?}");
        assert!(delay <= Duration::from_secs(900));
    }
    assert!(scim.users().await.is_empty());
}

#[tokio::test]
async fn whole_request_errors_make_every_operation_retryable() {
    let (scim, proxy) = setup().await;
    let config = EngineConfig {
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(1),
        },
        ..EngineConfig::default()
    };
    let engine = engine_with(bearer(&proxy, &scim), config);
    // Unavailability, resets and stalls wait without spending an attempt; an answer that
    // cannot be read (it may be the operation's doing) spends one.
    let cases = [
        (Fault::status(503), Some(503), "503", false),
        (Fault::status(502), Some(502), "502", false),
        (Fault::status(500), Some(500), "500", true),
        (Fault::Reset, None, "network", false),
        (
            Fault::Delay(Duration::from_secs(3)),
            None,
            "timed out",
            false,
        ),
        (Fault::html(200), Some(200), "not JSON", true),
        (Fault::Truncate, Some(200), "not JSON", true),
    ];
    for (i, (fault, expected_status, words, spent)) in cases.into_iter().enumerate() {
        proxy.inject("POST", "/Bulk", fault.clone());
        let report = cycle(&engine, ops(&format!("whole{i}-"), 2)).await;
        for r in &report.results {
            let (status, reason, _) = retry_of(&r.outcome);
            assert_eq!(status, expected_status, "{fault:?}");
            assert!(reason.contains(words), "{fault:?}: {reason}");
            assert_eq!(spends_attempt(&r.outcome), spent, "{fault:?}");
            let again = r.requeued().expect("re-enqueued");
            assert_eq!(
                (again.attempt, again.waits),
                if spent { (1, 0) } else { (0, 1) },
                "{fault:?}"
            );
        }
    }
}

#[tokio::test]
async fn operations_missing_from_the_response_are_retried_and_never_duplicated() {
    let (scim, proxy) = setup().await;
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    proxy.inject("POST", "/Bulk", Fault::DropBulkOps(2));
    let first = cycle(&engine, ops("dropped", 5)).await;
    assert_eq!(
        kinds(&first),
        ["created", "created", "created", "retry", "retry"]
    );
    // The server did apply the dropped ones: the retry meets a 409, finds them holding what the
    // operation asks, and writes nothing more. A lost answer waits: no attempt is spent.
    let again: Vec<Operation> = first.results.iter().filter_map(|r| r.requeued()).collect();
    assert_eq!(again.len(), 2);
    assert!(again
        .iter()
        .all(|op| op.attempt == 0 && op.waits == 1 && op.last_error.is_some()));
    let second = cycle(&engine, again).await;
    assert_eq!(kinds(&second), ["unchanged", "unchanged"]);
    assert_eq!(scim.users().await.len(), 5);
}

#[tokio::test]
async fn applied_but_reported_as_failed_resolves_by_lookup_and_update() {
    let (scim, proxy) = setup().await;
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    proxy.inject("POST", "/Bulk", Fault::AppliedButFailed);
    let first = cycle(&engine, ops("applied", 4)).await;
    assert!(first
        .results
        .iter()
        .all(|r| retry_of(&r.outcome).0 == Some(500)));
    let again = first.results.iter().filter_map(|r| r.requeued()).collect();
    proxy.clear_log();
    let second = cycle(&engine, again).await;
    assert_eq!(kinds(&second), ["unchanged"; 4]);
    assert_eq!(scim.users().await.len(), 4);
    // Found by lookup with the values asked: no PUT or PATCH.
    assert_eq!(proxy.hits_for("PUT", "") + proxy.hits_for("PATCH", ""), 0);
}

#[tokio::test]
async fn a_413_splits_the_request_until_it_fits() {
    let scim = start_scim2_server(ScimOptions {
        bulk_max_payload_size: 2_000,
        ..ScimOptions::default()
    })
    .await;
    let proxy = FaultProxy::in_front_of(&scim);
    // The server claims a larger limit than it enforces, as some do.
    let spc =
        json!({"bulk": {"supported": true, "maxOperations": 1000, "maxPayloadSize": 10_000_000}});
    proxy.inject(
        "GET",
        "/ServiceProviderConfig",
        Fault::Status {
            code: 200,
            retry_after: None,
            body: Some(spc.to_string()),
        },
    );
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    let report = cycle(&engine, ops("split", 20)).await;
    assert_eq!(kinds(&report), ["created"; 20], "{:?}", report.results);
    assert!(report.stats.splits >= 3, "{:?}", report.stats);
    assert_eq!(scim.users().await.len(), 20);
}

#[tokio::test]
async fn bulk_answering_404_falls_back_to_single_requests() {
    let (scim, proxy) = setup().await;
    proxy.inject_always("POST", "/Bulk", Fault::status(404));
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    let report = cycle(&engine, ops("nobulk", 3)).await;
    assert_eq!(kinds(&report), ["created"; 3]);
    assert_eq!(
        proxy.hits_for("POST", "/Bulk"),
        1,
        "bulk is not tried again"
    );
    assert_eq!(proxy.hits_for("POST", "/Users"), 3);
    let mut changed = ops("nobulk", 1);
    changed[0].user.title = Some("Supervisor".into());
    let again = cycle(&engine, changed).await;
    assert_eq!(kinds(&again), ["updated"]);
    assert_eq!(proxy.hits_for("POST", "/Bulk"), 1);
    assert_eq!(proxy.hits_for("PUT", ""), 1);
}

#[tokio::test]
async fn exhausted_operations_fail_with_their_last_error() {
    let (scim, proxy) = setup().await;
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    proxy.inject("POST", "/Bulk", Fault::status(500));
    let mut tired = ops("tired", 1);
    tired[0].attempt = 7;
    let report = cycle(&engine, tired.clone()).await;
    match &report.results[0].outcome {
        Outcome::Failed { status, detail, .. } => {
            assert_eq!(*status, Some(500));
            assert!(detail.contains("gave up after 8 attempts"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Throttling and unavailability spend no attempt: the same operation only waits.
    for fault in [Fault::status(503), Fault::throttled("1")] {
        proxy.inject("POST", "/Bulk", fault.clone());
        let report = cycle(&engine, tired.clone()).await;
        assert!(!spends_attempt(&report.results[0].outcome), "{fault:?}");
    }
    assert!(scim.users().await.is_empty());
}

#[tokio::test]
async fn work_that_waits_past_max_retry_age_fails_saying_so_with_its_last_error() {
    let (scim, proxy) = setup().await;
    let config = EngineConfig {
        retry: RetryPolicy {
            max_age: Duration::from_secs(3600),
            ..RetryPolicy::default()
        },
        ..EngineConfig::default()
    };
    let engine = engine_with(bearer(&proxy, &scim), config);
    let mut batch = ops("aged", 2);
    // The first was read two hours ago, the second a minute ago.
    batch[0].first_seen -= 7200;
    batch[0].waits = 40;
    batch[1].first_seen -= 60;
    proxy.inject("POST", "/Bulk", Fault::status(503));
    let report = cycle(&engine, batch).await;
    match &report.results[0].outcome {
        Outcome::Failed { status, detail, .. } => {
            assert_eq!(*status, Some(503));
            assert!(
                detail.starts_with("not provisioned within MAX_RETRY_AGE (1h)")
                    && detail.contains("first read 2.0 h ago")
                    && detail.contains("last error: 503: the service answered HTTP 503"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!spends_attempt(&report.results[1].outcome));
    assert!(scim.users().await.is_empty());
}

#[tokio::test]
async fn backoff_is_deterministic_with_an_injected_rng() {
    let (scim, proxy) = setup().await;
    let mut delays = Vec::new();
    for _ in 0..2 {
        let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default())
            .with_rng(StdRng::seed_from_u64(99));
        proxy.inject("POST", "/Bulk", Fault::status(503));
        let mut batch = ops("seeded", 4);
        batch.iter_mut().for_each(|op| op.attempt = 5);
        let report = cycle(&engine, batch).await;
        delays.push(
            report
                .results
                .iter()
                .map(|r| retry_of(&r.outcome).2)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(delays[0], delays[1]);
    assert!(
        delays[0].iter().all(|d| *d <= Duration::from_secs(64)),
        "{delays:?}"
    );
}

#[tokio::test]
async fn work_past_the_deadline_or_rate_is_deferred_unsent() {
    let (scim, proxy) = setup().await;
    let config = EngineConfig {
        max_operations: 2,
        requests_per_minute: Some(60),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        },
        concurrency: 1,
        ..EngineConfig::default()
    };
    let engine = engine_with(bearer(&proxy, &scim), config);
    engine.discover().await.expect("discovery");
    let report = engine
        .run_cycle(
            ops("paced", 10),
            Instant::now() + Duration::from_millis(2_900),
        )
        .await
        .expect("cycle");
    let created = kinds(&report).iter().filter(|k| **k == "created").count();
    let deferred: Vec<Duration> = report
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Deferred { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(
        created, 4,
        "two requests of two fit in 2.9 s at one a second (1 s window each)"
    );
    assert_eq!(deferred.len(), 6);
    assert!(deferred.windows(2).all(|w| w[0] <= w[1]), "{deferred:?}");
    assert!(
        deferred[5] > deferred[0],
        "deferrals are spread: {deferred:?}"
    );
    assert_eq!(scim.users().await.len(), 4);
}

fn oauth(proxy: &FaultProxy, secret: &str) -> Credentials {
    let json = json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": secret, "scope": "scim",
    });
    Credentials::from_json(&json.to_string()).expect("credentials")
}

#[tokio::test]
async fn oauth_token_is_shared_refreshed_on_401_and_before_expiry() {
    let (_scim, proxy) = setup().await;
    let config = EngineConfig {
        concurrency: 4,
        ..EngineConfig::default()
    };
    let engine = engine_with(oauth(&proxy, "test-client-secret"), config);
    let first = cycle(&engine, ops("oauth", 20)).await;
    assert_eq!(kinds(&first), ["created"; 20]);
    assert_eq!(
        proxy.tokens_issued(),
        1,
        "one token for concurrent requests"
    );

    // Expired mid-run: the 401 is answered by one refresh and a resend.
    proxy.expire_tokens();
    let second = cycle(&engine, ops("oauth-b", 3)).await;
    assert_eq!(kinds(&second), ["created"; 3]);
    assert_eq!(proxy.tokens_issued(), 2);
    let issued = proxy.issued_tokens();
    let bulk: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/Bulk"))
        .collect();
    let last = bulk.last().expect("bulk requests");
    assert_eq!(last.bearer(), Some(issued[1].as_str()));

    // Short-lived tokens are refreshed before they expire, without a 401.
    proxy.set_expires_in(2);
    proxy.expire_tokens();
    cycle(&engine, ops("oauth-c", 1)).await;
    let before = proxy.tokens_issued();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let bulk_before = proxy.hits_for("POST", "/Bulk");
    let report = cycle(&engine, ops("oauth-d", 1)).await;
    assert_eq!(kinds(&report), ["created"]);
    assert_eq!(
        proxy.tokens_issued(),
        before + 1,
        "refreshed ahead of expiry"
    );
    assert_eq!(
        proxy.hits_for("POST", "/Bulk"),
        bulk_before + 1,
        "no 401 and resend"
    );
}

#[tokio::test]
async fn cxone_access_key_flow() {
    let (_scim, proxy) = setup().await;
    let json = json!({
        "base_url": proxy.url, "auth_type": "cxone_access_key",
        "token_url": proxy.cxone_token_url(),
        "access_key_id": "test-access-key-id", "access_key_secret": "test-access-key-secret",
    });
    let engine = engine_with(
        Credentials::from_json(&json.to_string()).unwrap(),
        EngineConfig::default(),
    );
    let report = cycle(&engine, ops("cxone", 2)).await;
    assert_eq!(kinds(&report), ["created"; 2]);
    assert_eq!(proxy.tokens_issued(), 1);
    let token_request = proxy
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/cxone/token"))
        .expect("token request");
    assert_eq!(
        token_request.json().unwrap()["accessKeyId"],
        "test-access-key-id"
    );
}

#[tokio::test]
async fn token_endpoint_failures() {
    let (scim, proxy) = setup().await;
    // HTML or 500 from the token endpoint: transient, nothing lost.
    for mode in [TokenMode::Html, TokenMode::ServerError] {
        proxy.set_token_mode(mode);
        let engine = engine_with(oauth(&proxy, "test-client-secret"), EngineConfig::default());
        let report = cycle(&engine, ops("tokenfail", 2)).await;
        for r in &report.results {
            let (_, reason, _) = retry_of(&r.outcome);
            assert!(reason.contains("token endpoint"), "{mode:?}: {reason}");
        }
    }
    proxy.set_token_mode(TokenMode::Normal);
    // Wrong client secret: the cycle stops with a message that names no secret.
    let engine = engine_with(oauth(&proxy, "wrong-secret-value"), EngineConfig::default());
    let err = engine
        .run_cycle(ops("rejected", 1), Instant::now() + Duration::from_secs(30))
        .await
        .expect_err("rejected credentials stop the cycle");
    assert!(matches!(err, EngineError::Auth(_)));
    let text = err.to_string();
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("wrong-secret-value"));
    assert!(scim.users().await.is_empty());
}

#[tokio::test]
async fn a_deadline_shorter_than_the_timeout_cuts_the_request_short() {
    let (scim, proxy) = setup().await;
    // The default 30 s request timeout is longer than the whole budget: work is still sent,
    // and a slow answer is abandoned at the deadline, not after 30 s.
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    engine.discover().await.expect("discovery");
    let sent = engine
        .run_cycle(ops("short", 2), Instant::now() + Duration::from_secs(8))
        .await
        .expect("cycle");
    assert_eq!(kinds(&sent), ["created"; 2]);
    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(20)));
    let started = Instant::now();
    let report = engine
        .run_cycle(
            ops("short-slow", 2),
            Instant::now() + Duration::from_secs(7),
        )
        .await
        .expect("cycle");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for r in &report.results {
        let (_, reason, _) = retry_of(&r.outcome);
        assert!(reason.contains("timed out"), "{reason}");
    }
}

#[tokio::test]
async fn a_request_is_not_started_when_the_time_left_cannot_hold_it() {
    let (scim, proxy) = setup().await;
    let engine = engine_with(bearer(&proxy, &scim), EngineConfig::default());
    engine.discover().await.expect("discovery");
    proxy.clear_log();
    // 3 s left: more than the old 2 s minimum, less than min(request timeout, 5 s). Nothing is
    // sent to be cut mid-flight; the work comes back deferred, its attempt not counted.
    let report = engine
        .run_cycle(ops("late", 3), Instant::now() + Duration::from_secs(3))
        .await
        .expect("cycle");
    assert_eq!(kinds(&report), ["deferred"; 3]);
    assert_eq!(report.stats.requests, 0);
    assert_eq!(proxy.requests().len(), 0, "{:?}", proxy.requests());
    assert!(scim.users().await.is_empty());
    for r in &report.results {
        assert_eq!(r.requeued().expect("re-enqueued").attempt, 0);
    }
    // A tenant seen to answer slowly needs more: a 4 s answer makes 6 s left too little.
    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(4)));
    let slow = engine
        .run_cycle(ops("slow", 1), Instant::now() + Duration::from_secs(30))
        .await
        .expect("cycle");
    assert_eq!(kinds(&slow), ["created"]);
    let report = engine
        .run_cycle(
            ops("after-slow", 1),
            Instant::now() + Duration::from_secs(6),
        )
        .await
        .expect("cycle");
    assert_eq!(kinds(&report), ["deferred"]);
    assert_eq!(scim.users().await.len(), 1);
}
