//! What the ledger costs and saves on the Lambda path, end to end in process: an S3 upload of
//! an HR export provisioned into the embedded tenant (the first S3 invocation, then the work
//! queue drained as the SQS event source mapping would), with the ledger in DynamoDB (moto),
//! then an EventBridge rerun of the same, unchanged file; and the same first run without the
//! ledger. Every AWS call goes through a counting proxy in front of moto.
//!
//! Measured per run: SCIM requests (counted by the tenant) and writes among them, DynamoDB
//! calls by operation, busy time (the summed wall time of the invocations: what Lambda bills;
//! waiting on queue delays is not), and the process's peak RSS during the run (VmHWM, reset
//! before each run). moto is a process of its own and is not in that figure.
//!
//! - no `--bench` (as `cargo test --all-targets` runs it): 400 rows, checking the rerun writes
//!   nothing;
//! - `cargo bench --bench ledger_rerun [-- --rows 100000]`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use scim_bulk_provisioner::lambda::State;
use scim_bulk_provisioner::pipeline::Summary;
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use serde_json::json;
use support::aws::{
    create_ledger_table, invoke_counted, pump_in_process, put_object, s3_put_event, sdk_config_at,
    start_stack, Stack, BUCKET,
};
use support::faults::AwsFaultProxy;

const KEY: &str = "incoming/staff.csv";

/// One run's figures.
#[derive(Debug, Default)]
struct Figures {
    counts: Summary,
    scim_requests: u64,
    scim_writes: u64,
    dynamodb: BTreeMap<String, usize>,
    busy: Duration,
    invocations: usize,
    peak_rss_mb: f64,
}

/// An HR export of `rows` people, every 50th a leaver (half of them in the tenant).
fn export(rows: usize) -> String {
    let mut csv =
        String::from("Employee ID,First Name,Last Name,Work Email,Department,Job Title,Status\n");
    for i in 0..rows {
        let status = if i % 50 == 7 { "Leaver" } else { "Active" };
        let _ = writeln!(
            csv,
            "E{i:07},Zoë,Dubois {i},zoe.dubois{i}@example.com,\"Sales, EMEA\",Senior Agent,{status}"
        );
    }
    csv
}

/// Resets the process's peak RSS (Linux: writing 5 to clear_refs), so a run measures its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mb() -> f64 {
    support::peak_rss_kib() as f64 / 1024.0
}

struct Setup {
    stack: Stack,
    proxy: AwsFaultProxy,
    tenant: Tenant,
}

async fn setup(rows: usize) -> Setup {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: common::TOKEN.into(),
        ..TenantConfig::default()
    })
    .await
    .expect("tenant");
    // Half the leavers exist already.
    for i in (0..rows).filter(|i| i % 100 == 7) {
        let email = format!("zoe.dubois{i}@example.com");
        tenant
            .insert_user(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email, "name": {"givenName": "Zoë", "familyName": format!("Dubois {i}")},
                "emails": [{"value": email, "type": "work", "primary": true}], "active": true,
            }))
            .expect("seed");
    }
    let secret = support::aws::bearer_secret(&tenant.base_url(), common::TOKEN);
    let stack = start_stack(&secret).await;
    create_ledger_table(&stack.sdk, "ledger").await;
    put_object(&stack.sdk, BUCKET, KEY, export(rows)).await;
    let proxy = AwsFaultProxy::start(&stack.moto.endpoint);
    Setup {
        stack,
        proxy,
        tenant,
    }
}

async fn state(setup: &Setup, ledger: bool) -> State {
    let sdk = sdk_config_at(&setup.proxy.url).await;
    let mut extra = vec![
        ("REPORT_BUCKET", BUCKET),
        // Deferred rows come back within seconds, not at one request a second.
        ("SCIM_REQUESTS_PER_MINUTE", "60000"),
    ];
    if ledger {
        extra.push(("LEDGER_TABLE", "ledger"));
    }
    setup.stack.state_via(&sdk, &extra)
}

/// Runs `event`, then drains the queue; the run's figures.
async fn run(setup: &Setup, state: &State, event: serde_json::Value) -> Figures {
    setup.proxy.clear_log();
    let before = setup.tenant.stats();
    reset_peak();
    let started = Instant::now();
    let (first, mut counts) = invoke_counted(state, event, "object").await;
    first.expect("the object's invocation");
    let mut busy = started.elapsed();
    let pumped = pump_in_process(
        &setup.stack.sdk,
        &setup.stack.queues,
        state,
        Duration::from_secs(30),
        Duration::from_secs(3600),
    )
    .await;
    assert!(pumped.errors.is_empty(), "{:?}", pumped.errors);
    counts.add(&pumped.summary);
    busy += pumped.busy;
    let after = setup.tenant.stats();
    let mut dynamodb = BTreeMap::new();
    for request in setup.proxy.requests() {
        if let Some(target) = request
            .target
            .as_deref()
            .and_then(|t| t.strip_prefix("DynamoDB_20120810."))
        {
            *dynamodb.entry(target.to_string()).or_insert(0) += 1;
        }
    }
    Figures {
        counts,
        scim_requests: after.requests - before.requests,
        // Creates, updates and deactivations applied, and writes refused as conflicts.
        scim_writes: (after.created + after.updated + after.conflicts)
            - (before.created + before.updated + before.conflicts),
        dynamodb,
        busy,
        invocations: 1 + pumped.invocations,
        peak_rss_mb: peak_rss_mb(),
    }
}

fn line(name: &str, rows: usize, f: &Figures) -> String {
    let calls: usize = f.dynamodb.values().sum();
    let c = &f.counts;
    format!(
        "| {name} | {rows} | {} | {} | {calls} ({}) | {:.1} | {} | {:.0} | created {}, updated {}, unchanged {}, deactivated {}, skipped {} |",
        f.scim_requests,
        f.scim_writes,
        f.dynamodb.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        f.busy.as_secs_f64(),
        f.invocations,
        f.peak_rss_mb,
        c.created,
        c.updated,
        c.unchanged,
        c.deactivated,
        c.skipped,
    )
}

async fn measure(rows: usize) -> (Figures, Figures, Figures) {
    let rerun = json!({"detail-type": "Scheduled Event", "source": "aws.events",
                       "detail": {"bucket": BUCKET, "key": KEY}});
    let with = setup(rows).await;
    let state_with = state(&with, true).await;
    let first = run(&with, &state_with, s3_put_event(BUCKET, KEY)).await;
    let again = run(&with, &state_with, rerun).await;
    drop(with);
    let without = setup(rows).await;
    let state_without = state(&without, false).await;
    let plain = run(&without, &state_without, s3_put_event(BUCKET, KEY)).await;
    (first, again, plain)
}

fn table(rows: usize, first: &Figures, again: &Figures, plain: &Figures) -> String {
    [
        "| run | rows | SCIM requests | SCIM writes | DynamoDB calls | busy s | invocations | peak RSS MB | outcomes |".to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
        line("first run, ledger", rows, first),
        line("rerun, unchanged file, ledger", rows, again),
        line("first run, no ledger", rows, plain),
    ]
    .join("\n")
}

async fn smoke() {
    let rows = 400;
    let (first, again, plain) = measure(rows).await;
    println!("{}", table(rows, &first, &again, &plain));
    assert_eq!(again.scim_writes, 0, "the rerun wrote: {again:?}");
    assert_eq!(
        again.counts.unchanged,
        first.counts.created + first.counts.deactivated
    );
    assert!(again.scim_requests <= (rows / 100 + 3) as u64, "{again:?}");
    assert_eq!(plain.counts.created, first.counts.created);
}

async fn bench(rows: usize) {
    let (first, again, plain) = measure(rows).await;
    println!("{}", table(rows, &first, &again, &plain));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = common::runtime();
    if args.iter().any(|a| a == "--bench") {
        runtime.block_on(bench(common::arg_value(&args, "--rows", 100_000) as usize));
    } else {
        runtime.block_on(smoke());
    }
}
