//! Lambda cold start, peak RSS on a 100,000-row upload and binary size, measured on the real binary.
//!
//! Runs the real binary (the one Cargo builds for this profile: `cargo bench` builds it with
//! the release settings) as AWS runs it: `AWS_LAMBDA_RUNTIME_API` points at a Lambda Runtime
//! API played by this program on 127.0.0.1, moto serves S3, SQS and Secrets Manager, and the
//! project's embedded SCIM tenant is the peer. Measured:
//! - **cold start**: from spawning the process to its first `GET .../invocation/next`, side by
//!   side with the floor of spawning the same binary as `--version` (process start and exit);
//! - **peak RSS** (`VmHWM` of the function process) after handling one S3 event for a
//!   100,000-row CSV, with the time it took and the users the tenant holds afterwards;
//! - **binary size** of the executable.
//!
//! Modes:
//! - no `--bench` (as `cargo test --all-targets` runs it): one short run with a 300-row CSV that
//!   checks the function starts, polls, answers the event and provisions every valid row;
//! - `cargo bench --bench lambda_footprint [-- --runs 20] [--rows 100000]`: the measurements,
//!   medians over `--runs` cold starts. `FOOTPRINT_BIN=target/lambda/scim-bulk-provisioner/bootstrap`
//!   measures the artifact `cargo lambda build --release` made instead of Cargo's own build.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use common::median;

/// The binary measured: `FOOTPRINT_BIN` (e.g. cargo lambda's `bootstrap`), else Cargo's build.
fn bin() -> String {
    std::env::var("FOOTPRINT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_scim-bulk-provisioner").to_string())
}
const KEY: &str = "incoming/hr-export.csv";
const TOKEN: &str = "footprint-token";

/// What the function posted back for an invocation.
#[derive(Debug)]
struct Posted {
    kind: &'static str,
    body: String,
    at: Instant,
}

/// The Lambda Runtime API as the function sees it: one queue of events, their answers.
#[derive(Default)]
struct RuntimeApi {
    events: Mutex<VecDeque<(String, Value)>>,
    event_ready: Notify,
    first_poll: Mutex<Option<Instant>>,
    polled: Notify,
    answers: Mutex<Option<mpsc::UnboundedSender<(String, Posted)>>>,
}

async fn next_invocation(State(api): State<Arc<RuntimeApi>>) -> (HeaderMap, String) {
    {
        let mut first = api.first_poll.lock().unwrap();
        if first.is_none() {
            *first = Some(Instant::now());
            api.polled.notify_waiters();
        }
    }
    loop {
        let ready = api.event_ready.notified();
        if let Some((id, event)) = api.events.lock().unwrap().pop_front() {
            let deadline = SystemTime::now() + Duration::from_secs(900);
            let ms = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis();
            let mut headers = HeaderMap::new();
            headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
            headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(ms as u64));
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static(
                    "arn:aws:lambda:us-east-1:123456789012:function:scim-bulk-provisioner",
                ),
            );
            return (headers, event.to_string());
        }
        ready.await;
    }
}

fn answer(api: &RuntimeApi, id: String, kind: &'static str, body: String) -> StatusCode {
    let posted = Posted {
        kind,
        body,
        at: Instant::now(),
    };
    if let Some(tx) = api.answers.lock().unwrap().as_ref() {
        let _ = tx.send((id, posted));
    }
    StatusCode::ACCEPTED
}

async fn invocation_response(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    answer(&api, id, "response", body)
}

async fn invocation_error(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    answer(&api, id, "error", body)
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: String) -> StatusCode {
    answer(&api, "init".into(), "init error", body)
}

/// A running fake Runtime API.
struct Runtime {
    api: Arc<RuntimeApi>,
    address: SocketAddr,
    answers: mpsc::UnboundedReceiver<(String, Posted)>,
}

impl Runtime {
    async fn start() -> Runtime {
        let api = Arc::new(RuntimeApi::default());
        let (tx, answers) = mpsc::unbounded_channel();
        *api.answers.lock().unwrap() = Some(tx);
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&api));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Runtime {
            api,
            address,
            answers,
        }
    }

    fn push(&self, id: &str, event: Value) {
        self.api
            .events
            .lock()
            .unwrap()
            .push_back((id.to_string(), event));
        self.api.event_ready.notify_waiters();
    }

    async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let polled = self.api.polled.notified();
            if let Some(at) = *self.api.first_poll.lock().unwrap() {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, polled).await.is_err() {
                return None;
            }
        }
    }

    async fn answer(&mut self, timeout: Duration) -> (String, Posted) {
        tokio::time::timeout(timeout, self.answers.recv())
            .await
            .expect("the function answered in time")
            .expect("the runtime API is up")
    }
}

/// The function's process; killed when dropped.
struct Function(Child);

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Function {
    fn spawn(runtime: &Runtime, env: &[(String, String)]) -> Function {
        let mut command = Command::new(bin());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", runtime.address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "scim-bulk-provisioner")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/scim-bulk-provisioner",
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "footprint")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Function(command.spawn().expect("start the function binary"))
    }

    /// Peak resident set size so far, in kB (`VmHWM`).
    fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("the function is still running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

/// moto with the function's resources, and the embedded tenant behind the secret.
struct Peers {
    stack: support::aws::Stack,
    tenant: Tenant,
}

impl Peers {
    async fn start() -> Peers {
        let tenant = Tenant::start(TenantConfig {
            bearer_token: TOKEN.into(),
            ..TenantConfig::default()
        })
        .await
        .expect("start the embedded tenant");
        let secret = support::aws::bearer_secret(&tenant.base_url(), TOKEN);
        let stack = support::aws::start_stack(&secret).await;
        Peers { stack, tenant }
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.stack.function_env(&[]);
        env.extend(
            self.stack
                .moto
                .env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
        env
    }

    /// Uploads an HR export of `rows` rows (every 100th invalid); returns the valid count.
    async fn upload(&self, rows: usize) -> usize {
        let mut csv = Vec::with_capacity(rows * 110);
        writeln!(
            csv,
            "Employee ID,First Name,Last Name,Work Email,Department,Job Title,Status,Phone"
        )
        .unwrap();
        let mut valid = 0;
        for i in 0..rows {
            let email = if i % 100 == 99 {
                format!("broken{i}@@example.com")
            } else {
                valid += 1;
                format!("zoe.dubois{i}@example.com")
            };
            writeln!(
                csv,
                "E{i:07},Zoë,Dubois,{email},\"Sales, EMEA\",Senior Agent,Active,+49 30 9018{:03}",
                i % 1000
            )
            .unwrap();
        }
        support::aws::put_object(&self.stack.sdk, support::aws::BUCKET, KEY, csv).await;
        valid
    }
}

/// One S3 event for `rows` rows, handled by a freshly started function.
struct EventRun {
    valid: usize,
    /// Users in the tenant after the event.
    provisioned: usize,
    /// Operations the function enqueued for later cycles (past S3_CYCLE_MAX_OPERATIONS).
    deferred: usize,
    peak_rss_kb: u64,
    secs: f64,
    kind: &'static str,
}

async fn s3_event_run(rows: usize) -> EventRun {
    let peers = Peers::start().await;
    let valid = peers.upload(rows).await;
    let mut runtime = Runtime::start().await;
    let function = Function::spawn(&runtime, &peers.env());
    runtime
        .first_poll(Duration::from_secs(30))
        .await
        .expect("the function polled the runtime API");
    let sent = Instant::now();
    runtime.push(
        "s3-1",
        support::aws::s3_put_event(support::aws::BUCKET, KEY),
    );
    let (id, posted) = runtime.answer(Duration::from_secs(900)).await;
    assert_eq!(id, "s3-1");
    let peak_rss_kb = function.peak_rss_kb();
    assert_eq!(posted.kind, "response", "{}", posted.body);
    let answer: Value = serde_json::from_str(&posted.body).expect("a JSON answer");
    EventRun {
        valid,
        provisioned: peers.tenant.users().len(),
        deferred: answer["objects"][0]["deferred_to_queue"]
            .as_u64()
            .expect("deferred_to_queue") as usize,
        peak_rss_kb,
        secs: posted.at.duration_since(sent).as_secs_f64(),
        kind: posted.kind,
    }
}

/// Milliseconds from spawning the function to its first poll of the runtime API.
async fn cold_start_ms(env: &[(String, String)]) -> f64 {
    let runtime = Runtime::start().await;
    let spawned = Instant::now();
    let _function = Function::spawn(&runtime, env);
    let polled = runtime
        .first_poll(Duration::from_secs(30))
        .await
        .expect("the function polled the runtime API");
    polled.duration_since(spawned).as_secs_f64() * 1e3
}

/// Milliseconds to spawn the binary as `--version` and see it exit: the floor of any start.
fn exec_floor_ms() -> f64 {
    let spawned = Instant::now();
    let status = Command::new(bin())
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .expect("run --version");
    assert!(status.success());
    spawned.elapsed().as_secs_f64() * 1e3
}

async fn smoke() {
    let run = s3_event_run(300).await;
    assert_eq!(run.kind, "response");
    assert_eq!(run.valid, 297);
    assert_eq!(
        run.provisioned + run.deferred,
        run.valid,
        "every valid row provisioned or enqueued"
    );
    assert!(run.peak_rss_kb > 0);
    println!(
        "lambda_footprint smoke: 300-row S3 event handled, {} users provisioned, peak RSS {} kB (run `cargo bench --bench lambda_footprint` to measure)",
        run.provisioned, run.peak_rss_kb
    );
}

async fn bench(runs: usize, rows: usize) {
    let bin = bin();
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!("lambda_footprint: {bin}");
    println!(
        "binary size: {size} bytes ({:.2} MB, {:.2} MiB)",
        size as f64 / 1e6,
        size as f64 / 1048576.0
    );
    // Configuration as deployed; nothing is contacted before the first event.
    let env: Vec<(String, String)> = [
        ("SCIM_SECRET_ID", "scim-credentials"),
        (
            "WORK_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/scim-work",
        ),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (mut cold, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        floor.push(exec_floor_ms());
        cold.push(cold_start_ms(&env).await);
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "cold start to first poll: median {:.1} ms over {runs} runs [{}]",
        median(&cold),
        show(&cold)
    );
    println!(
        "exec floor (--version, start to exit): median {:.1} ms [{}]",
        median(&floor),
        show(&floor)
    );
    let run = s3_event_run(rows).await;
    assert_eq!(
        run.provisioned + run.deferred,
        run.valid,
        "every valid row provisioned or enqueued"
    );
    println!(
        "S3 event, {rows} rows ({} valid): handled in {:.1} s, {} users provisioned in the cycle, {} operations enqueued, peak RSS {:.1} MB ({} kB)",
        run.valid,
        run.secs,
        run.provisioned,
        run.deferred,
        run.peak_rss_kb as f64 / 1024.0,
        run.peak_rss_kb
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| common::arg_value(&args, name, default) as usize;
    let runtime = common::runtime();
    if args.iter().any(|a| a == "--bench") {
        runtime.block_on(bench(value("--runs", 20), value("--rows", 100_000)));
    } else {
        runtime.block_on(smoke());
    }
}
