//! Security of a real `provision` run (issue 6, "Security"):
//! - everything the binary prints at `RUST_LOG=trace`/`debug`, through throttling, a 503, an
//!   operation applied but reported failed, token expiry and 409s, holds no client secret, access
//!   key secret, token or full email address, while the report file does name the users;
//! - plain-http SCIM or token URLs to a host that is not loopback are refused before any request;
//! - a redirect is not followed: the host it points to never sees a request nor a credential.
//!
//! The Lambda side is not run here: `tests/lambda_invoke.rs` owns the `cargo lambda watch`
//! harness (process-tree cleanup included), and copying it would duplicate ~150 lines.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use support::faults::{Fault, FaultProxy, TokenConfig, CXONE_TOKEN_PATH, OAUTH_TOKEN_PATH};
use support::{create_user, start_scim2_server, ScimOptions};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bulk-provisioner");
const UPSTREAM_TOKEN: &str = "upstream-bearer-Qz3kV81w";
const CLIENT_SECRET: &str = "oauth-client-secret-Xk29fPqL";
const ACCESS_KEY_SECRET: &str = "cxone-key-secret-Mv83tRwZ";
const REDIRECT_BEARER: &str = "redirect-bearer-Hn47cYe0";
/// Active users in the CSV; the first `PRE_EXISTING` exist before the run (create → 409 → update).
const ACTIVE: usize = 48;
const PRE_EXISTING: usize = 5;

fn active_email(i: usize) -> String {
    format!("leakcheck.person{i:02}@acme-sec.example")
}

/// Terminated users who never existed: skipped, hence in the report with their userName.
fn skipped_emails() -> Vec<String> {
    vec![
        "gone.leaver01@acme-sec.example".into(),
        "gone.leaver02@acme-sec.example".into(),
    ]
}

fn csv() -> String {
    let mut text = String::from("Work Email,First Name,Last Name,Job Title,Status\n");
    for i in 0..ACTIVE {
        text += &format!("{},Pat{i},Tester{i},Engineer,Active\n", active_email(i));
    }
    for email in skipped_emails() {
        text += &format!("{email},Gone,Leaver,,Terminated\n");
    }
    text
}

/// Runs the binary with its output in files; `tick` is called every 10 ms while it runs.
fn run_cli(args: &[String], rust_log: Option<&str>, mut tick: impl FnMut()) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("SCIM_CREDENTIALS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    if let Some(level) = rust_log {
        command.env("RUST_LOG", level);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the CLI did not finish within 60 s");
        }
        tick();
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = std::fs::read_to_string(&out_path).unwrap()
        + "\n--- stderr ---\n"
        + &std::fs::read_to_string(&err_path).unwrap();
    (status.code().unwrap_or(-1), output)
}

fn provision_args(csv: &Path, credentials: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["provision".to_string(), "--csv".into()];
    args.push(csv.display().to_string());
    args.push("--credentials".into());
    args.push(credentials.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[derive(Clone, Copy)]
enum Flow {
    OAuth,
    Cxone,
}

/// A full run through faults; asserts that the log holds no secret and no address.
async fn no_secret_in_the_log(flow: Flow, rust_log: &str, json_output: bool) {
    let scim = start_scim2_server(ScimOptions {
        token: UPSTREAM_TOKEN.into(),
        bulk_max_operations: 10,
        ..ScimOptions::default()
    })
    .await;
    for i in 0..PRE_EXISTING {
        create_user(&scim.base_url, UPSTREAM_TOKEN, &active_email(i)).await;
    }
    let proxy = FaultProxy::in_front_of(&scim);
    proxy.set_token_config(TokenConfig {
        client_id: "leakcheck-client".into(),
        client_secret: CLIENT_SECRET.into(),
        access_key_id: "leakcheck-key-id".into(),
        access_key_secret: ACCESS_KEY_SECRET.into(),
        ..TokenConfig::default()
    });
    let (secret, token_path, credentials) = match flow {
        Flow::OAuth => (
            CLIENT_SECRET,
            OAUTH_TOKEN_PATH,
            json!({"base_url": proxy.url, "auth_type": "oauth_client_credentials",
                   "token_url": proxy.oauth_token_url(), "client_id": "leakcheck-client",
                   "client_secret": CLIENT_SECRET}),
        ),
        Flow::Cxone => (
            ACCESS_KEY_SECRET,
            CXONE_TOKEN_PATH,
            json!({"base_url": proxy.url, "auth_type": "cxone_access_key",
                   "token_url": proxy.cxone_token_url(), "access_key_id": "leakcheck-key-id",
                   "access_key_secret": ACCESS_KEY_SECRET}),
        ),
    };
    // In order, one Bulk request each: 429, 503, applied but reported failed (retry meets 409).
    proxy.inject("POST", "/Bulk", Fault::throttled("1"));
    proxy.inject("POST", "/Bulk", Fault::status(503));
    proxy.inject("POST", "/Bulk", Fault::AppliedButFailed);

    let dir = tempfile::tempdir().unwrap();
    let csv_path = write(dir.path(), "staff.csv", &csv());
    let creds_path = write(dir.path(), "scim.json", &credentials.to_string());
    let report = dir.path().join("report.jsonl");
    let report_arg = report.display().to_string();
    let mut extra = vec!["--report", report_arg.as_str()];
    if json_output {
        extra.push("--json");
    }
    let args = provision_args(&csv_path, &creds_path, &extra);
    let mut expired = false;
    let (code, output) = run_cli(&args, Some(rust_log), || {
        // The first Bulk answer is a 429 with Retry-After 1: the token expires while it waits.
        if !expired && proxy.hits_for("POST", "/Bulk") >= 1 {
            proxy.expire_tokens();
            expired = true;
        }
    });
    assert_eq!(code, 0, "{output}");

    // The secrets and tokens were really used, so their absence from the log means something.
    let requests = proxy.requests();
    let token_calls: Vec<_> = requests.iter().filter(|r| r.path == token_path).collect();
    assert!(
        token_calls
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(secret)),
        "the secret never reached the token endpoint"
    );
    let issued = proxy.issued_tokens();
    assert!(
        issued.len() >= 2,
        "no refresh after expiry: issued {issued:?}"
    );
    for token in &issued {
        assert!(
            requests.iter().any(|r| r.bearer() == Some(token)),
            "issued token {token} was never used"
        );
    }
    assert_eq!(proxy.pending_faults(), 0, "a fault was not reached");
    let applied: Vec<_> = requests.iter().filter_map(|r| r.fault.clone()).collect();
    assert_eq!(applied.len(), 3, "{applied:?}");
    if json_output {
        let start = output.find('{').expect("JSON summary");
        let end = output.find("\n--- stderr ---").unwrap();
        let summary: Value = serde_json::from_str(&output[start..end]).expect("JSON summary");
        assert_eq!(summary["failed"], 0, "{summary}");
        let count = |k: &str| summary[k].as_u64().unwrap_or_default();
        assert!(count("updated") >= PRE_EXISTING as u64, "{summary}");
        // Operations the server applied but answered as failed are found unchanged on retry.
        assert_eq!(
            count("created") + count("updated") + count("unchanged"),
            ACTIVE as u64,
            "{summary}"
        );
    }

    // The log: nothing secret, no full address (masked forms like `l***@domain` are fine).
    let lowered = output.to_lowercase();
    let mut forbidden: Vec<String> = vec![
        CLIENT_SECRET.into(),
        ACCESS_KEY_SECRET.into(),
        UPSTREAM_TOKEN.into(),
    ];
    forbidden.extend(issued.iter().cloned());
    forbidden.extend((0..ACTIVE).map(active_email));
    forbidden.extend(skipped_emails());
    for needle in &forbidden {
        assert!(
            !lowered.contains(&needle.to_lowercase()),
            "{needle} appears in the output (RUST_LOG={rust_log}):\n{output}"
        );
    }
    // The log does speak of the users, masked: the check above looked at the right log.
    assert!(output.contains("l***@acme-sec.example"), "{output}");
    if rust_log == "trace" {
        assert!(output.contains(" TRACE "), "{output}");
    }

    // The report may, and does, name the users it concerns.
    let report_text = std::fs::read_to_string(&report).unwrap();
    for email in skipped_emails() {
        assert!(report_text.contains(&email), "{report_text}");
    }

    // Every active user exists exactly once.
    let users = scim.users().await;
    for i in 0..ACTIVE {
        let email = active_email(i);
        let n = users
            .iter()
            .filter(|u| u["userName"].as_str().unwrap().eq_ignore_ascii_case(&email))
            .count();
        assert_eq!(n, 1, "{email}");
    }
    assert_eq!(users.len(), ACTIVE);
}

#[tokio::test]
async fn oauth_run_at_trace_level_leaks_nothing() {
    no_secret_in_the_log(Flow::OAuth, "trace", false).await;
}

#[tokio::test]
async fn oauth_run_at_debug_level_leaks_nothing() {
    no_secret_in_the_log(Flow::OAuth, "debug", true).await;
}

#[tokio::test]
async fn cxone_run_at_trace_level_leaks_nothing() {
    no_secret_in_the_log(Flow::Cxone, "trace", false).await;
}

#[test]
fn plain_http_to_a_remote_host_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = write(dir.path(), "staff.csv", &csv());
    let cases = [
        (
            json!({"base_url": "http://scim.example.com/scim/v2", "auth_type": "bearer",
                   "token": REDIRECT_BEARER}),
            "base_url",
        ),
        (
            json!({"base_url": "https://scim.example.com/scim/v2",
                   "auth_type": "oauth_client_credentials",
                   "token_url": "http://login.example.com/oauth2/token",
                   "client_id": "c", "client_secret": CLIENT_SECRET}),
            "token_url",
        ),
        (
            json!({"base_url": "https://scim.example.com", "auth_type": "cxone_access_key",
                   "token_url": "http://127.0.0.1.nip.io/token",
                   "access_key_id": "k", "access_key_secret": ACCESS_KEY_SECRET}),
            "token_url",
        ),
        (
            json!({"base_url": "http://localhost.attacker.example", "auth_type": "bearer",
                   "token": REDIRECT_BEARER}),
            "base_url",
        ),
    ];
    for (credentials, field) in cases {
        let creds_path = write(dir.path(), "scim.json", &credentials.to_string());
        let (code, output) = run_cli(&provision_args(&csv_path, &creds_path, &[]), None, || {});
        assert_eq!(code, 2, "{credentials}: {output}");
        assert!(output.contains(&format!("`{field}`")), "{output}");
        assert!(output.contains("https"), "{output}");
        for secret in [REDIRECT_BEARER, CLIENT_SECRET, ACCESS_KEY_SECRET] {
            assert!(!output.contains(secret), "{output}");
        }
    }
}

/// What a server saw: (method, path, Authorization).
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn record(seen: &Seen, request: &Request) {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("?").to_string());
    seen.lock().unwrap().push((
        request.method().to_string(),
        request.uri().path().to_string(),
        auth,
    ));
}

/// A recorder (the redirect's target) and a server answering 307 to it for everything but
/// `/ServiceProviderConfig` (so that the run gets past its preflight).
async fn redirect_pair() -> (String, Seen, Seen) {
    let target_seen: Seen = Arc::default();
    let seen = target_seen.clone();
    let target = serve(Router::new().fallback(move |request: Request| {
        record(&seen, &request);
        async { (StatusCode::OK, "{}") }
    }))
    .await;
    let redirector_seen: Seen = Arc::default();
    let seen = redirector_seen.clone();
    let redirector = serve(Router::new().fallback(move |request: Request| {
        record(&seen, &request);
        let path = request.uri().path().to_string();
        let location = format!("{target}{}", request.uri());
        async move {
            if path.ends_with("/ServiceProviderConfig") {
                let spc = json!({"bulk": {"supported": true, "maxOperations": 100,
                                          "maxPayloadSize": 1_048_576}});
                return (
                    [(header::CONTENT_TYPE, "application/scim+json")],
                    spc.to_string(),
                )
                    .into_response();
            }
            let mut response: Response = StatusCode::TEMPORARY_REDIRECT.into_response();
            response
                .headers_mut()
                .insert(header::LOCATION, location.parse().unwrap());
            response
        }
    }))
    .await;
    (redirector, redirector_seen, target_seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_with_credentials() {
    let (redirector, redirector_seen, target_seen) = redirect_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let csv_path = write(dir.path(), "staff.csv", &csv());
    let credentials = json!({"base_url": format!("{redirector}/scim/v2"), "auth_type": "bearer",
                             "token": REDIRECT_BEARER});
    let creds_path = write(dir.path(), "scim.json", &credentials.to_string());
    let args = provision_args(&csv_path, &creds_path, &["--max-attempts", "2"]);
    let (code, output) = tokio::task::spawn_blocking(move || run_cli(&args, Some("debug"), || {}))
        .await
        .unwrap();

    let seen = redirector_seen.lock().unwrap().clone();
    // The first request past the preflight (the listing of the tenant, or a Bulk request)
    // was answered with the redirect.
    assert!(
        seen.iter()
            .any(|(m, p, a)| (m == "POST" && p.ends_with("/Bulk")
                || m == "GET" && p.ends_with("/Users"))
                && a.as_deref() == Some(&format!("Bearer {REDIRECT_BEARER}"))),
        "the configured host got no authenticated request past its preflight: {seen:?}"
    );
    let target = target_seen.lock().unwrap().clone();
    assert!(target.is_empty(), "the redirect was followed: {target:?}");
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("  failed                50\n"), "{output}");
    assert!(output.contains("redirect"), "{output}");
    assert!(!output.contains(REDIRECT_BEARER), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_token_endpoint_does_not_get_the_secret_forwarded() {
    let (redirector, redirector_seen, target_seen) = redirect_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let csv_path = write(dir.path(), "staff.csv", &csv());
    let credentials = json!({"base_url": redirector, "auth_type": "oauth_client_credentials",
                             "token_url": format!("{redirector}/oauth/token"),
                             "client_id": "c", "client_secret": CLIENT_SECRET});
    let creds_path = write(dir.path(), "scim.json", &credentials.to_string());
    let args = provision_args(&csv_path, &creds_path, &[]);
    let (code, output) = tokio::task::spawn_blocking(move || run_cli(&args, Some("debug"), || {}))
        .await
        .unwrap();

    let seen = redirector_seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(m, p, _)| m == "POST" && p == "/oauth/token"),
        "{seen:?}"
    );
    let target = target_seen.lock().unwrap().clone();
    assert!(target.is_empty(), "the redirect was followed: {target:?}");
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("HTTP 307"), "{output}");
    assert!(!output.contains(CLIENT_SECRET), "{output}");
}
