//! The chaos profile of issue 18, over many seeds: a tenant that throttles hard and misbehaves
//! (a request rate limit answered with 429 + Retry-After, random 429s, 503s, resets, answers
//! lost after the request was applied, stalls past the function's request timeout, per-operation
//! 503 / missing / applied-but-500 inside BulkResponses, tokens expiring fast), pre-existing
//! users with mixed-case userNames to update and to deactivate. Each seed: the S3 upload and the
//! work queue driven to empty, then an EventBridge rerun of the unchanged file, driven to empty.
//! Nothing in the profile is a refusal, so nothing may be reported `failed`, and every user must
//! be right after each pass. Odd seeds run without the ledger (the rerun then meets a 409 for
//! every user), even seeds with it.
//!
//! `CHAOS_SEEDS` (default 20), `CHAOS_PROFILE_USERS` (users per seed, default 60),
//! `CHAOS_PARALLEL` (seeds at once, default 6), `CHAOS_PROFILE_LIMIT_SECONDS` (per pass,
//! default 240).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use axum::http::Method;
use futures_util::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use scim_bulk_provisioner::lambda::{handle_counted, Invocation, State};
use serde_json::{json, Value};

use super::support::aws::{
    batch_failures, create_bucket, create_ledger_table, create_queues, create_secret,
    delete_all_but, put_object, queue_depth, receive, report_lines, s3_put_event, sqs_event,
    start_stack, Queues, Stack,
};
use super::support::faults::{Chooser, Fault, FaultProxy, TokenConfig};
use super::support::{list_users, post_user, start_scim2_server, ScimServer};
use super::{env_number, ENTERPRISE};

const KEY: &str = "incoming/profile.csv";
/// Users in the tenant before the run, with stale attributes, to be updated.
const TO_UPDATE: usize = 10;
/// Users in the tenant before the run, active, that the file says left.
const LEAVERS_IN_TENANT: usize = 6;
/// Leavers the tenant never had: skipped.
const LEAVERS_UNKNOWN: usize = 2;
/// The tenant's request rate limit (requests per second), answered 429 + Retry-After.
const RATE_LIMIT: f64 = 10.0;
/// The function's request timeout here, and how long a stalled answer takes (past it).
const TIMEOUT_SECONDS: &str = "1";
const STALL: Duration = Duration::from_millis(1500);

/// One person of the file.
struct Person {
    /// userName as the file spells it.
    file_name: String,
    /// userName as the tenant spells it, when the tenant has the user before the run.
    tenant_name: Option<String>,
    active: bool,
    title: String,
    employee: String,
}

impl Person {
    fn key(&self) -> String {
        self.file_name.to_lowercase()
    }
}

/// The file's people: the first ones already in the tenant (mixed case on one side or the
/// other), then leavers in the tenant, leavers it never had, and new people.
fn people(seed: u64, n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| {
            let lower = format!("p{seed}-{i:03}@example.com");
            let mixed = format!("P{seed}-{i:03}@Example.COM");
            let in_tenant = i < TO_UPDATE + LEAVERS_IN_TENANT;
            // Even: the tenant has it in mixed case; odd: the file writes it so.
            let (file_name, tenant_name) = match i % 2 {
                0 => (lower.clone(), in_tenant.then(|| mixed.clone())),
                _ => (mixed.clone(), in_tenant.then(|| lower.clone())),
            };
            Person {
                file_name,
                tenant_name,
                active: !(TO_UPDATE..TO_UPDATE + LEAVERS_IN_TENANT + LEAVERS_UNKNOWN).contains(&i),
                title: format!("Title {}", i % 7),
                employee: format!("E{seed}-{i}"),
            }
        })
        .collect()
}

fn csv(people: &[Person]) -> Vec<u8> {
    let mut out =
        String::from("user_name,email,first_name,last_name,title,employee_number,status\n");
    for p in people {
        let status = if p.active { "active" } else { "leaver" };
        let _ = writeln!(
            out,
            "{},{},Given,Family {},{},{},{status}",
            p.file_name,
            p.file_name.to_lowercase(),
            p.key(),
            p.title,
            p.employee
        );
    }
    out.into_bytes()
}

/// Puts the pre-existing users in the tenant: stale attributes, active (leavers included),
/// some of those to update inactive (the file reactivates them).
async fn seed_tenant(scim: &ScimServer, people: &[Person]) {
    for (i, p) in people.iter().enumerate() {
        let Some(name) = &p.tenant_name else { continue };
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "userName": name,
            "name": {"givenName": "Stale", "familyName": "Person"},
            "emails": [{"value": p.key(), "type": "work", "primary": true}],
            "title": "Stale Title",
            "active": !(i < TO_UPDATE && i % 3 == 0),
            ENTERPRISE: {"employeeNumber": "STALE"},
        });
        post_user(&scim.base_url, &scim.token, &user).await;
    }
}

/// Counts of what the chooser did.
#[derive(Debug, Default, Clone)]
struct Met {
    rate_limited: usize,
    kinds: BTreeMap<&'static str, usize>,
}

/// The profile: over the rate limit, 429 + Retry-After; else at random 20% 429, 10% 503, 3%
/// resets, 3% answers lost after being applied (502, reset, 500), 1% stalls; a BulkResponse
/// that got through has 5% of its results 503, 5% missing, 5% 500 (all applied).
fn chooser(seed: u64, met: Arc<Mutex<Met>>) -> Chooser {
    let state = Mutex::new((
        StdRng::seed_from_u64(seed ^ 0x18),
        RATE_LIMIT,
        Instant::now(),
    ));
    Arc::new(move |method: &Method, path: &str| {
        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
        let (rng, tokens, last) = &mut *guard;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * RATE_LIMIT).min(RATE_LIMIT);
        *last = now;
        let mut met = met.lock().unwrap_or_else(|p| p.into_inner());
        if *tokens < 1.0 {
            met.rate_limited += 1;
            return Some(Fault::throttled("1"));
        }
        *tokens -= 1.0;
        let roll = rng.random_range(0..1000u32);
        let (kind, fault) = match roll {
            0..200 => ("429", Fault::throttled("1")),
            200..300 => ("503", Fault::status(503)),
            300..330 => ("reset", Fault::Reset),
            330..340 => ("lost 502", Fault::Lost(502)),
            340..350 => ("lost reset", Fault::ForwardThenReset),
            350..360 => ("lost 500", Fault::AppliedButFailed),
            360..370 => ("stall", Fault::Delay(STALL)),
            _ if method == Method::POST && path.ends_with("/Bulk") => (
                "per-operation",
                Fault::PerOperation {
                    seed: rng.random(),
                    unavailable: 5,
                    missing: 5,
                    failed: 5,
                },
            ),
            _ => return None,
        };
        *met.kinds.entry(kind).or_default() += 1;
        Some(fault)
    })
}

/// What one pass (first or rerun) did.
#[derive(Debug, Default, Clone)]
struct Pass {
    invocations: usize,
    requests: u64,
    throttled: u64,
    retried: u64,
    deferred: u64,
    failed_lines: usize,
    wrong: Vec<String>,
    busy: Duration,
    wall: Duration,
}

/// One seed's result.
struct SeedRun {
    seed: u64,
    ledger: bool,
    first: Pass,
    rerun: Pass,
    met: Met,
    tokens: usize,
}

/// One invocation, its counts added to `pass`; the message ids to keep (not delete).
async fn invoke(state: &State, event: Value, id: String, pass: &mut Pass) -> Option<Value> {
    let started = Instant::now();
    let invocation = Invocation::new(id, Duration::from_secs(60));
    let (result, summary) = handle_counted(state, event, &invocation).await;
    pass.invocations += 1;
    pass.busy += started.elapsed();
    pass.requests += summary.requests;
    pass.throttled += summary.throttled;
    pass.retried += summary.retried;
    pass.deferred += summary.deferred;
    match result {
        Ok(response) => Some(response),
        Err(e) => {
            pass.wrong.push(format!("handler error: {e}"));
            None
        }
    }
}

/// Feeds the work queue to the function until it is empty, as the event source mapping does.
async fn drain(sdk: &SdkConfig, queues: &Queues, state: &State, label: &str, pass: &mut Pass) {
    let limit = Duration::from_secs(env_number("CHAOS_PROFILE_LIMIT_SECONDS", 240));
    let started = Instant::now();
    let mut n = 0;
    loop {
        if started.elapsed() > limit {
            pass.wrong.push(format!(
                "{label}: the queue was not drained within {limit:?} (depth {})",
                queue_depth(sdk, &queues.url).await
            ));
            return;
        }
        let batch = receive(
            sdk,
            &queues.url,
            Duration::from_secs(1),
            Duration::from_secs(20),
        )
        .await;
        if batch.is_empty() {
            if queue_depth(sdk, &queues.url).await == 0 {
                return;
            }
            continue;
        }
        n += 1;
        let event = sqs_event(&batch, &queues.arn);
        let keep = match invoke(state, event, format!("{label}-{n}"), pass).await {
            Some(response) => batch_failures(&response).into_iter().collect(),
            None => batch
                .iter()
                .filter_map(|m| m.message_id().map(str::to_string))
                .collect(),
        };
        delete_all_but(sdk, &queues.url, &batch, &keep).await;
    }
}

/// What is wrong in the tenant, user by user, against the file.
async fn wrong_users(scim: &ScimServer, people: &[Person]) -> Vec<String> {
    let users = list_users(&scim.base_url, &scim.token).await;
    let mut by_key: HashMap<String, Vec<&Value>> = HashMap::new();
    for u in &users {
        let key = u["userName"].as_str().unwrap_or_default().to_lowercase();
        by_key.entry(key).or_default().push(u);
    }
    let mut wrong = Vec::new();
    for p in people {
        let found = by_key.remove(&p.key()).unwrap_or_default();
        let exists = p.active || p.tenant_name.is_some();
        if !exists {
            if !found.is_empty() {
                wrong.push(format!(
                    "{}: a leaver the tenant never had was created",
                    p.key()
                ));
            }
            continue;
        }
        let [u] = found.as_slice() else {
            wrong.push(format!("{}: {} users, expected 1", p.key(), found.len()));
            continue;
        };
        if let Some(name) = &p.tenant_name {
            // Matched case-insensitively: the tenant's spelling is kept.
            if u["userName"] != name.as_str() {
                wrong.push(format!("{}: userName became {}", p.key(), u["userName"]));
            }
        }
        if u["active"] != p.active {
            wrong.push(format!("{}: active is {}", p.key(), u["active"]));
        }
        if p.active {
            let right = u["title"] == p.title.as_str()
                && u[ENTERPRISE]["employeeNumber"] == p.employee.as_str()
                && u["name"]["familyName"] == format!("Family {}", p.key()).as_str();
            if !right {
                wrong.push(format!("{}: stale attributes: {u}", p.key()));
            }
        }
    }
    for key in by_key.keys() {
        wrong.push(format!("{key}: in the tenant but not in the file"));
    }
    wrong
}

/// The seed's `failed` report lines, each as its text.
async fn failed_lines(sdk: &SdkConfig, bucket: &str) -> Vec<String> {
    let lines = report_lines(sdk, bucket).await;
    lines
        .iter()
        .filter(|l| l["status"] == "failed")
        .map(Value::to_string)
        .collect()
}

/// Notes the failed lines of a pass (those not seen before it) among what is wrong.
fn note_failed(pass: &mut Pass, lines: &[String], before: &[String]) {
    let new: Vec<&String> = lines.iter().filter(|l| !before.contains(l)).collect();
    pass.failed_lines = new.len();
    for line in new.into_iter().take(5) {
        pass.wrong.push(format!("failed line: {line}"));
    }
}

async fn run_seed(stack: &Stack, seed: u64, users: usize) -> SeedRun {
    let ledger = seed % 2 == 0;
    let scim = start_scim2_server(Default::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    // Tokens live 3 s (refreshed before), and the proxy expires them every 3 s besides.
    proxy.set_token_config(TokenConfig {
        expires_in: 3,
        ..TokenConfig::default()
    });
    let people = people(seed, users);
    seed_tenant(&scim, &people).await;

    let sdk = &stack.sdk;
    let bucket = format!("profile-{seed}");
    create_bucket(sdk, &bucket).await;
    put_object(sdk, &bucket, KEY, csv(&people)).await;
    let queues = create_queues(sdk, &format!("profile-{seed}"), 5).await;
    let secret_id = format!("profile-{seed}");
    let secret = json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": "test-client-secret",
    });
    create_secret(sdk, &secret_id, &secret.to_string()).await;
    let table = format!("profile-ledger-{seed}");
    let mut env = vec![
        ("SCIM_SECRET_ID", secret_id.as_str()),
        ("WORK_QUEUE_URL", queues.url.as_str()),
        ("REPORT_BUCKET", bucket.as_str()),
        ("RETRY_BASE_SECONDS", "1"),
        ("RETRY_MAX_SECONDS", "2"),
        ("SCIM_TIMEOUT_SECONDS", TIMEOUT_SECONDS),
        ("MAX_RETRY_AGE", "24h"),
    ];
    if ledger {
        create_ledger_table(sdk, &table).await;
        env.push(("LEDGER_TABLE", table.as_str()));
    }
    let state = stack.state(&env);

    let met = Arc::new(Mutex::new(Met::default()));
    proxy.set_chooser(Some(chooser(seed, met.clone())));
    let proxy = Arc::new(proxy);
    let expiring = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                proxy.expire_tokens();
            }
        })
    };

    let mut first = Pass::default();
    let started = Instant::now();
    let event = s3_put_event(&bucket, KEY);
    if let Some(response) = invoke(&state, event, format!("s3-{seed}"), &mut first).await {
        if response.get("batchItemFailures").is_some() {
            first.wrong.push(format!("unexpected S3 answer {response}"));
        }
    }
    drain(sdk, &queues, &state, &format!("first-{seed}"), &mut first).await;
    first.wall = started.elapsed();
    let after_first = failed_lines(sdk, &bucket).await;
    note_failed(&mut first, &after_first, &[]);
    first.wrong.extend(wrong_users(&scim, &people).await);

    let mut rerun = Pass::default();
    let started = Instant::now();
    let event = json!({
        "version": "0", "id": format!("rerun-{seed}"), "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-01-01T06:00:00Z",
        "region": "us-east-1", "resources": [], "detail": {"bucket": bucket, "key": KEY},
    });
    invoke(&state, event, format!("rerun-{seed}"), &mut rerun).await;
    drain(sdk, &queues, &state, &format!("rerun-{seed}"), &mut rerun).await;
    rerun.wall = started.elapsed();
    note_failed(&mut rerun, &failed_lines(sdk, &bucket).await, &after_first);
    rerun.wrong.extend(wrong_users(&scim, &people).await);

    expiring.abort();
    proxy.set_chooser(None);
    let met = met.lock().unwrap_or_else(|p| p.into_inner()).clone();
    SeedRun {
        seed,
        ledger,
        first,
        rerun,
        met,
        tokens: proxy.tokens_issued(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_profile_nobody_failed_whom_patience_provisions_over_20_seeds() {
    let seeds = env_number("CHAOS_SEEDS", 20);
    let users = env_number("CHAOS_PROFILE_USERS", 60).max(TO_UPDATE as u64 + 10) as usize;
    let parallel = env_number("CHAOS_PARALLEL", 6).max(1) as usize;
    let started = Instant::now();
    let stack = start_stack("{}").await;
    let stack = &stack;
    let mut runs: Vec<SeedRun> = stream::iter(1..=seeds)
        .map(|seed| run_seed(stack, seed, users))
        .buffer_unordered(parallel)
        .collect()
        .await;
    runs.sort_by_key(|r| r.seed);

    println!(
        "issue 18 chaos profile: {seeds} seeds x {users} users, {parallel} at once, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "seed ledger | first: wall busy invoc requests 429s retried deferred failed wrong | rerun: wall busy invoc requests 429s retried failed wrong | rate-429s tokens faults"
    );
    let mut total = Met::default();
    for r in &runs {
        let p = |p: &Pass| {
            format!(
                "{:5.1} {:5.1} {:3} {:5} {:4} {:4} {:3} {} {}",
                p.wall.as_secs_f64(),
                p.busy.as_secs_f64(),
                p.invocations,
                p.requests,
                p.throttled,
                p.retried,
                p.deferred,
                p.failed_lines,
                p.wrong.len()
            )
        };
        println!(
            "{:4} {:6} | {} | {} | {} {} {:?}",
            r.seed,
            r.ledger,
            p(&r.first),
            p(&r.rerun),
            r.met.rate_limited,
            r.tokens,
            r.met.kinds
        );
        total.rate_limited += r.met.rate_limited;
        for (k, n) in &r.met.kinds {
            *total.kinds.entry(k).or_default() += n;
        }
    }
    println!(
        "faults met in all: rate limit {} {:?}",
        total.rate_limited, total.kinds
    );

    // The profile must have been met, or the run proves nothing (a few seeds may miss a kind).
    if seeds >= 10 {
        assert!(total.rate_limited > 0, "the rate limit was never met");
        for kind in [
            "429",
            "503",
            "reset",
            "lost 502",
            "lost reset",
            "lost 500",
            "stall",
            "per-operation",
        ] {
            assert!(
                total.kinds.contains_key(kind),
                "no {kind} was met: {:?}",
                total.kinds
            );
        }
    }
    let mut problems = Vec::new();
    for r in &runs {
        for (name, pass) in [("first pass", &r.first), ("rerun", &r.rerun)] {
            if pass.failed_lines > 0 || !pass.wrong.is_empty() {
                problems.push(format!(
                    "seed {} ({}), {name}: {} failed lines; {:#?}",
                    r.seed,
                    if r.ledger { "ledger" } else { "no ledger" },
                    pass.failed_lines,
                    pass.wrong
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
