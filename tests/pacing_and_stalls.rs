//! Pacing and stalls through real peers: a stalled BulkRequest is given up after the adaptive
//! timeout (seconds, not the configured 30 s) and retried without creating anyone twice; a
//! slow but healthy BulkRequest is not cut; random 429s (the fault proxy's) do not collapse the
//! pace while a rate limit (the embedded tenant's) is found; and a warm Lambda container keeps
//! its pace from one invocation to the next.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use scim_bulk_provisioner::engine::{Engine, EngineConfig};
use scim_bulk_provisioner::operation::{Operation, Outcome};
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use scim_bulk_provisioner::user::User;
use serde_json::json;
use support::aws::{bearer_secret, invoke, send, sqs_event, start_stack};
use support::engine::{bearer, cycle, engine_with, kinds};
use support::faults::{Fault, FaultProxy, RandomFaults};
use support::{list_users, start_scim2_server, ScimOptions};

fn user(name: &str) -> User {
    serde_json::from_value(json!({
        "user_name": format!("{name}@example.com"),
        "email": format!("{name}@example.com"),
        "first_name": "Given",
        "last_name": name,
        "active": true,
    }))
    .expect("a valid user")
}

fn ops(prefix: &str, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|i| Operation::new(user(&format!("{prefix}{i}")), "test", None))
        .collect()
}

/// Runs cycles until every operation settles, re-queueing retries at once; returns the cycles.
async fn settle(engine: &Engine, mut pending: Vec<Operation>) -> usize {
    let mut cycles = 0;
    while !pending.is_empty() {
        cycles += 1;
        assert!(
            cycles < 50,
            "still pending after 50 cycles: {}",
            pending.len()
        );
        let report = cycle(engine, pending).await;
        for r in &report.results {
            assert!(
                !matches!(r.outcome, Outcome::Failed { .. }),
                "{:?}",
                r.outcome
            );
        }
        pending = report.results.iter().filter_map(|r| r.requeued()).collect();
    }
    cycles
}

#[tokio::test]
async fn a_stalled_bulk_is_given_up_after_seconds_and_retried_without_duplicates() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    // The configured maximum stays the default 30 s: the adaptive timeout is what cuts.
    let config = EngineConfig::default();
    assert_eq!(config.timeouts.request, Duration::from_secs(30));
    let engine = engine_with(bearer(&proxy.url, &scim.token), config);
    // Five BulkRequests answered quickly: the tenant's latency is known.
    for i in 0..5 {
        let report = cycle(&engine, ops(&format!("warm{i}-"), 2)).await;
        assert_eq!(kinds(&report), ["created"; 2]);
    }
    // The next BulkRequest is applied at once but answered only after 20 s.
    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(20)));
    let started = Instant::now();
    let stalled = cycle(&engine, ops("stalled", 3)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "given up long before the 20 s stall and the 30 s maximum: {took:?}"
    );
    let again: Vec<Operation> = stalled
        .results
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Retry { reason, .. } => {
                assert!(reason.contains("timed out"), "{reason}");
                r.requeued().expect("re-queued")
            }
            other => panic!("expected a retry, got {other:?}"),
        })
        .collect();
    // The retry meets users the stalled request already created: upserted, not duplicated.
    let retried = cycle(&engine, again).await;
    // Updated, or found already holding the values (the stalled request had written them).
    for kind in kinds(&retried) {
        assert!(["updated", "unchanged"].contains(&kind), "{kind}");
    }
    let users = list_users(&scim.base_url, &scim.token).await;
    let names: Vec<&str> = users
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(unique.len(), 13, "nobody twice: {names:?}");
}

#[tokio::test]
async fn a_slow_but_healthy_bulk_is_not_cut_by_the_adaptive_timeout() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let engine = engine_with(bearer(&proxy.url, &scim.token), EngineConfig::default());
    // Before enough answers are known, a 3 s answer fits the starting timeout (10 s)...
    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(3)));
    assert_eq!(
        kinds(&cycle(&engine, ops("slow-first", 2)).await),
        ["created"; 2]
    );
    // ...and once it is known, four times it (the p99 of five answers) holds the next ones.
    for i in 0..4 {
        proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(3)));
        let report = cycle(&engine, ops(&format!("slow{i}-"), 2)).await;
        assert_eq!(kinds(&report), ["created"; 2], "slow answer {i}");
    }
    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(4)));
    assert_eq!(
        kinds(&cycle(&engine, ops("slower", 2)).await),
        ["created"; 2]
    );
}

/// An engine provisioning through a fault proxy in front of an embedded tenant.
async fn tenant_behind_proxy(config: TenantConfig) -> (Tenant, FaultProxy) {
    let token = config.bearer_token.clone();
    let tenant = Tenant::start(config).await.expect("tenant");
    let proxy = FaultProxy::start(&tenant.base_url(), &token);
    (tenant, proxy)
}

#[tokio::test]
async fn random_429s_do_not_collapse_the_pace_but_a_rate_limit_is_found() {
    // One operation per BulkRequest: one request per user.
    // Attempts are not what is tested here: a user meeting several random 429s in a row
    // must not fail.
    let config = || EngineConfig {
        max_operations: 1,
        retry: scim_bulk_provisioner::retry::RetryPolicy {
            max_attempts: 100,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    // 30% of requests answered 429 with Retry-After at random, whatever the pace.
    let (random_tenant, proxy) = tenant_behind_proxy(TenantConfig::default()).await;
    proxy.set_random(RandomFaults {
        throttled: 0.3,
        ..RandomFaults::seeded(3)
    });
    let engine = engine_with(bearer(&proxy.url, "demo-token"), config());
    settle(&engine, ops("random", 300)).await;
    let counts = proxy.random_counts();
    assert!(counts.throttled > 60, "{counts:?}");
    assert_eq!(random_tenant.stats().created, 300);
    // Pacing at its floor would be one request a second; it stays far above.
    let interval = engine.pacing_interval();
    assert!(
        interval < Duration::from_millis(100),
        "random 429s collapsed the pace to {interval:?}"
    );

    // A rate limit of 40 requests a second (429 with Retry-After beyond it), no random 429s.
    let limited = Tenant::start(TenantConfig {
        requests_per_second: Some(40.0),
        ..TenantConfig::default()
    })
    .await
    .expect("tenant");
    let engine = engine_with(bearer(&limited.base_url(), "demo-token"), config());
    settle(&engine, ops("first", 150)).await;
    let paced = engine.pacing_interval();
    assert!(
        paced >= Duration::from_millis(15),
        "paced near 40/s: {paced:?}"
    );
    // Once paced, the next users meet few 429s.
    let before = limited.stats();
    settle(&engine, ops("second", 150)).await;
    let after = limited.stats();
    let requests = after.requests - before.requests;
    let throttled = after.throttled - before.throttled;
    assert!(
        throttled * 10 <= requests,
        "{throttled} of {requests} answered 429 once paced"
    );
    assert_eq!(after.created, 300);
}

/// Sends `n` producer users to the queue and has `state` handle them in one invocation;
/// returns the 429s the tenant answered meanwhile.
async fn invocation(
    stack: &support::aws::Stack,
    state: &scim_bulk_provisioner::lambda::State,
    tenant: &Tenant,
    tag: &str,
    n: usize,
) -> u64 {
    let users: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            json!({"email": format!("{tag}-{i}@example.com"), "first_name": "W",
                   "last_name": format!("{i}")})
        })
        .collect();
    send(
        &stack.sdk,
        &stack.queues.url,
        &json!({ "users": users }).to_string(),
    )
    .await;
    // Only this producer message: retry messages of earlier invocations may be visible too.
    let messages: Vec<_> = stack
        .receive_batch()
        .await
        .into_iter()
        .filter(|m| m.body().is_some_and(|b| b.starts_with("{\"users\"")))
        .collect();
    assert_eq!(messages.len(), 1);
    let before = tenant.stats().throttled;
    invoke(state, sqs_event(&messages, &stack.queues.arn), tag)
        .await
        .expect("handled");
    tenant.stats().throttled - before
}

#[tokio::test]
async fn a_warm_container_keeps_its_pace_across_invocations() {
    support::aws::init_logs();
    let tenant = Tenant::start(TenantConfig {
        requests_per_second: Some(40.0),
        ..TenantConfig::default()
    })
    .await
    .expect("tenant");
    let stack = start_stack(&bearer_secret(&tenant.base_url(), "demo-token")).await;
    // One operation per BulkRequest, so that one invocation sends enough requests to meet the
    // limit (429s go back to the queue, which this test does not drain).
    let env = [("SCIM_MAX_OPERATIONS", "1")];
    let warm = stack.state(&env);
    let first = invocation(&stack, &warm, &tenant, "first", 240).await;
    assert!(first >= 5, "the limit was met: {first}");
    let pace = warm.pacing_interval();
    assert!(pace > Duration::ZERO, "paced after the first invocation");
    // The next invocation of the warm container starts at that pace; a new container
    // (a fresh state) starts unpaced and meets the limit again. Each after the tenant's
    // bucket has refilled.
    let refill = Duration::from_millis(1500);
    tokio::time::sleep(refill).await;
    let again = invocation(&stack, &warm, &tenant, "again", 120).await;
    let cold = stack.state(&env);
    assert_eq!(cold.pacing_interval(), Duration::ZERO);
    tokio::time::sleep(refill).await;
    let fresh = invocation(&stack, &cold, &tenant, "fresh", 120).await;
    eprintln!("429s: first {first}, warm again {again}, new container {fresh}; pace {pace:?}");
    assert!(fresh >= 5, "{fresh}");
    assert!(again * 2 <= fresh, "warm {again}, new {fresh}");
}
