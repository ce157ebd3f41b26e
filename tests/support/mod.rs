//! Shared helpers of the integration tests: each test file says `mod support;`.
//!
//! The peers are real programs from the project's Python venv (`bash infra/test.sh`
//! creates it from `infra/requirements-test.txt`): `scim2-server` as the SCIM
//! tenant and `moto_server` for S3, SQS and Secrets Manager. Each is started on a
//! free port of 127.0.0.1 by the test that needs it and killed by PID when its
//! guard drops. [`faults::FaultProxy`] sits in front of a SCIM server to script
//! failures and to play the OAuth / CXone token endpoints.
//!
//! A missing peer is a panic telling how to install it: tests never skip silently.
#![allow(dead_code)] // every test file compiles this module and uses a part of it

pub mod aws;
pub mod engine;
pub mod faults;
pub mod hr;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What a run of the project's binary as a command-line tool printed.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

/// Runs the project's binary as a command-line tool with `args`, without the test's own
/// `SCIM_CREDENTIALS` and `RUST_LOG` but with `env`, off the async runtime (which keeps serving
/// an in-process tenant meanwhile).
pub async fn run_cli(args: Vec<String>, env: Vec<(&'static str, String)>) -> CliRun {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_scim-bulk-provisioner"))
            .args(args)
            .env_remove("SCIM_CREDENTIALS")
            .env_remove("RUST_LOG")
            .envs(env)
            .output()
            .expect("run the binary")
    })
    .await
    .expect("join the CLI run");
    CliRun {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How long a peer may take to answer after it was spawned.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The venv holding the test peers: `$SCIM_TEST_VENV`, else `<crate>/.venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("SCIM_TEST_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
    }
}

/// Path of a program of the venv; panics with the fix when it is not installed.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv_dir().join("bin").join(name);
    if !path.is_file() {
        panic!(
            "test peer `{name}` not found at {}: run the tests with `bash infra/test.sh`, \
             which creates .venv and installs infra/requirements-test.txt",
            path.display()
        );
    }
    path
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind 127.0.0.1:0 to find a free port")
}

/// A spawned peer whose stdout and stderr go to a log file; killed and reaped on drop.
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with its output appended to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> ChildGuard {
        let out = File::create(log)
            .unwrap_or_else(|e| panic!("cannot create log {}: {e}", log.display()));
        let err = out.try_clone().expect("cannot clone log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name} ({command:?}): {e}"));
        ChildGuard {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.child.id())
    }
}

/// A reqwest client for tests: no proxy from the environment, 10 s timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("cannot build reqwest client")
}

/// Spawns a peer with `make(port)` and polls `probe_url` until it answers
/// (`need_success`: with a 2xx), retrying on another port when the chosen
/// one was taken in between. Panics with the peer's output on failure.
async fn spawn_and_wait(
    name: &str,
    dir: &Path,
    probe: &str,
    token: Option<&str>,
    need_success: bool,
    make: impl Fn(u16) -> Command,
) -> (ChildGuard, u16) {
    let client = http_client();
    for attempt in 1..=3 {
        let port = free_port();
        let log = dir.join(format!("{name}-{attempt}.log"));
        let mut guard = ChildGuard::spawn(name, &mut make(port), &log);
        let url = format!("http://127.0.0.1:{port}{probe}");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = guard.exited() {
                let output = guard.output();
                if output.contains("Address already in use") && attempt < 3 {
                    break; // lost the port race: try another port
                }
                panic!("{name} exited with {status} before answering {url}; its output:\n{output}");
            }
            let mut request = client.get(&url).timeout(Duration::from_secs(2));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let last = match request.send().await {
                Ok(response) if !need_success || response.status().is_success() => {
                    return (guard, port);
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "{name} did not answer {url} within {STARTUP_TIMEOUT:?} (last: {last}); its output:\n{}",
                    guard.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    unreachable!("the third attempt panics instead of breaking")
}

/// Options of [`start_scim2_server`]: its bearer token and the
/// ServiceProviderConfig it announces and enforces. The defaults are those
/// of scim2-server itself (bulk supported, 1000 operations, 1 MiB, 1000 results).
#[derive(Clone, Debug)]
pub struct ScimOptions {
    pub token: String,
    pub bulk_supported: bool,
    /// More operations in one BulkRequest: 413 "The number of operations exceeds the maxOperations (N)".
    pub bulk_max_operations: u64,
    /// A larger BulkRequest body: 413 "The payload exceeds the maxPayloadSize (N bytes)".
    pub bulk_max_payload_size: u64,
    /// Page size cap of list and filter answers (`count` above it is lowered).
    pub filter_max_results: u64,
    /// Advertise `filter.supported: false` (the server still filters if asked).
    pub filter_supported: bool,
    /// userName `caseExact: true`: uniqueness and `filter eq` compare case-sensitively, as
    /// some servers do despite RFC 7643.
    pub case_exact_user_name: bool,
}

impl Default for ScimOptions {
    fn default() -> Self {
        ScimOptions {
            token: "scim-test-token".to_string(),
            bulk_supported: true,
            bulk_max_operations: 1000,
            bulk_max_payload_size: 1_048_576,
            filter_max_results: 1000,
            filter_supported: true,
            case_exact_user_name: false,
        }
    }
}

impl ScimOptions {
    /// The ServiceProviderConfig document written for `--service-provider-config`.
    pub fn service_provider_config(&self) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {
                "supported": self.bulk_supported,
                "maxOperations": self.bulk_max_operations,
                "maxPayloadSize": self.bulk_max_payload_size,
            },
            "filter": {"supported": self.filter_supported, "maxResults": self.filter_max_results},
            "changePassword": {"supported": true},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [],
        })
    }
}

/// A running scim2-server (in-memory SCIM tenant at the root of `base_url`).
pub struct ScimServer {
    /// "http://127.0.0.1:PORT", no trailing slash; `/Users`, `/Bulk`, ... hang below it.
    pub base_url: String,
    pub token: String,
    pub port: u16,
    pub options: ScimOptions,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl ScimServer {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The server's log (one line per request, tracebacks).
    pub fn output(&self) -> String {
        self.guard.output()
    }

    /// Every user of the tenant.
    pub async fn users(&self) -> Vec<Value> {
        list_users(&self.base_url, &self.token).await
    }
}

/// Starts scim2-server on a free port and waits until `GET /ServiceProviderConfig` is 200.
///
/// It runs with `--reverse-proxy`, so that behind [`faults::FaultProxy`] the
/// `location`s it writes name the proxy (harmless without a proxy).
pub async fn start_scim2_server(options: ScimOptions) -> ScimServer {
    let dir = tempfile::tempdir().expect("cannot create temp dir");
    let spc = dir.path().join("service-provider-config.json");
    let spc_text =
        serde_json::to_string_pretty(&options.service_provider_config()).expect("serializable SPC");
    std::fs::write(&spc, spc_text).expect("cannot write SPC file");
    let schemas = options
        .case_exact_user_name
        .then(|| case_exact_schemas(dir.path()));
    let bin = venv_bin("scim2-server");
    let (guard, port) = spawn_and_wait(
        "scim2-server",
        dir.path(),
        "/ServiceProviderConfig",
        Some(&options.token),
        true,
        |port| {
            let mut command = Command::new(&bin);
            command
                .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
                .args(["--bearer-token", &options.token])
                .arg("--service-provider-config")
                .arg(&spc)
                .arg("--reverse-proxy");
            if let Some(schemas) = &schemas {
                command.arg("--schema").arg(schemas);
            }
            command
        },
    )
    .await;
    ScimServer {
        base_url: format!("http://127.0.0.1:{port}"),
        token: options.token.clone(),
        port,
        options,
        guard,
        _dir: dir,
    }
}

/// scim2-server's own schemas with the User's `userName` made `caseExact: true`, written
/// into `dir`; returns the file.
fn case_exact_schemas(dir: &Path) -> PathBuf {
    let python = venv_bin("python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import json, pathlib, scim2_server; \
             p = pathlib.Path(scim2_server.__file__).parent / 'resources' / 'default-schemas.json'; \
             print(p.read_text())",
        ])
        .output()
        .expect("python of the venv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut schemas: Value = serde_json::from_slice(&out.stdout).expect("scim2-server's schemas");
    let user = schemas
        .as_array_mut()
        .and_then(|all| {
            all.iter_mut()
                .find(|s| s["id"] == "urn:ietf:params:scim:schemas:core:2.0:User")
        })
        .expect("the User schema");
    let user_name = user["attributes"]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|a| a["name"] == "userName"))
        .expect("userName");
    user_name["caseExact"] = Value::Bool(true);
    let path = dir.join("schemas.json");
    std::fs::write(&path, schemas.to_string()).expect("cannot write schemas");
    path
}

/// Runs test `name` of this test binary again, alone, in a child process with `marker` set in
/// its environment (the test then does its work instead of spawning): for measurements that
/// are process-wide, such as peak memory. Panics unless the child ran it and it passed.
#[allow(dead_code)] // only the memory checks use it
pub fn run_alone_in_child(name: &str, marker: &str) {
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(marker, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
}

/// Peak resident memory of this process (VmHWM), in KiB.
#[allow(dead_code)] // only the memory checks use it
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A running moto_server (S3, SQS, Secrets Manager, ... all at one endpoint).
pub struct Moto {
    /// "http://127.0.0.1:PORT": give it to the AWS SDK as `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    pub port: u16,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn output(&self) -> String {
        self.guard.output()
    }

    /// Environment that points the AWS SDK (or the binary) at this moto, with dummy credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("S3_FORCE_PATH_STYLE", "true".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }
}

/// Starts moto_server on a free port and waits until it answers.
pub async fn start_moto() -> Moto {
    let dir = tempfile::tempdir().expect("cannot create temp dir");
    let bin = venv_bin("moto_server");
    let (guard, port) = spawn_and_wait(
        "moto_server",
        dir.path(),
        "/moto-api/",
        None,
        true,
        |port| {
            let mut command = Command::new(&bin);
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            command
        },
    )
    .await;
    Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        guard,
        _dir: dir,
    }
}

/// `GET url` with a bearer token; panics unless it is a 2xx JSON answer.
pub async fn get_json(url: &str, token: &str) -> Value {
    // A check of the peer's state, not a request under test: a peer slow to answer on a loaded
    // machine (a 10 s timeout) is asked again a few times before the test gives up.
    let mut tries = 0;
    let response = loop {
        tries += 1;
        match http_client().get(url).bearer_auth(token).send().await {
            Ok(response) => break response,
            Err(e) if tries < 5 => {
                eprintln!("GET {url}: {e}; asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("GET {url}: {e}"),
        }
    };
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        panic!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {url}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// Every user of a SCIM tenant, following `startIndex` pages until `totalResults`.
pub async fn list_users(base_url: &str, token: &str) -> Vec<Value> {
    let base = base_url.trim_end_matches('/');
    let mut users: Vec<Value> = Vec::new();
    loop {
        let url = format!("{base}/Users?count=10000&startIndex={}", users.len() + 1);
        let page = get_json(&url, token).await;
        let total = page["totalResults"].as_u64().unwrap_or(0) as usize;
        let resources = page["Resources"].as_array().cloned().unwrap_or_default();
        if resources.is_empty() {
            break;
        }
        users.extend(resources);
        if users.len() >= total {
            break;
        }
    }
    users
}

/// The user with this userName, if any.
pub fn find_user<'a>(users: &'a [Value], user_name: &str) -> Option<&'a Value> {
    users.iter().find(|u| u["userName"] == user_name)
}

/// A minimal SCIM User resource.
pub fn scim_user(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": user_name},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true,
    })
}

/// A BulkRequest creating one user per userName (bulkIds "op0", "op1", ...).
pub fn bulk_create(user_names: &[&str]) -> Value {
    let operations: Vec<Value> = user_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"method": "POST", "path": "/Users", "bulkId": format!("op{i}"), "data": scim_user(name)})
        })
        .collect();
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": operations,
    })
}

/// Creates a user directly (not through the code under test); panics unless 201.
pub async fn create_user(base_url: &str, token: &str, user_name: &str) -> Value {
    post_user(base_url, token, &scim_user(user_name)).await
}

/// PUTs a User resource (with its `id`) straight to the server, as an administrator would
/// change it by hand; panics unless 200.
#[allow(dead_code)] // not every test file changes users this way
pub async fn put_user(base_url: &str, token: &str, user: &Value) -> Value {
    let id = user["id"].as_str().expect("the user's id");
    let url = format!("{}/Users/{id}", base_url.trim_end_matches('/'));
    let response = http_client()
        .put(&url)
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(user.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    assert_eq!(
        status.as_u16(),
        200,
        "PUT {url}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("replaced user is JSON")
}

/// POSTs a User resource straight to the server (asserting 201); the created resource.
#[allow(dead_code)] // not every test file seeds users this way
pub async fn post_user(base_url: &str, token: &str, user: &Value) -> Value {
    let url = format!("{}/Users", base_url.trim_end_matches('/'));
    let response = http_client()
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/scim+json")
        .body(user.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    assert_eq!(
        status.as_u16(),
        201,
        "POST {url}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("created user is JSON")
}
