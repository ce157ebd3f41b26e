//! The fault stand-in: a reverse proxy in front of a SCIM server that fails on cue,
//! and the token endpoints of the OAuth client-credentials and CXone access-key flows.
//!
//! ```ignore
//! let scim = support::start_scim2_server(Default::default()).await;
//! let proxy = FaultProxy::in_front_of(&scim);
//! proxy.inject("POST", "/Bulk", Fault::throttled("3"));   // next POST .../Bulk: 429
//! // ... point the code under test at proxy.url ...
//! assert_eq!(proxy.hits("/Bulk"), 2);
//! ```
//!
//! Each request, in order:
//! 1. is logged ([`SeenRequest`]: method, path, Authorization as sent, body);
//! 2. outside the token paths, has its bearer token checked: the upstream's own
//!    token passes as is, a token this proxy issued (and did not expire) is
//!    replaced by the upstream's, anything else gets a 401 from the proxy;
//! 3. takes the first queued rule whose method and path suffix match, if any;
//! 4. is answered by the fault, or forwarded (to the upstream, or to the token
//!    endpoints for [`OAUTH_TOKEN_PATH`] / [`CXONE_TOKEN_PATH`]) and the answer
//!    altered by the fault.
//!
//! The proxy runs on a thread and runtime of its own, so it keeps answering while
//! a test blocks (e.g. on `std::process::Command::output` running the binary).
//! To add a fault: a variant of [`Fault`], and a branch in `answer_early` (answer
//! without forwarding) or `alter` (change the forwarded answer). The token
//! endpoints live in `faults/tokens.rs`, the connection reset in `faults/reset.rs`.
//!
//! [`AwsFaultProxy`] (`faults/aws_proxy.rs`) is the same idea in front of moto: it fails
//! chosen Secrets Manager, SQS and S3 calls of the function's AWS SDK.
//!
//! [`FaultProxy::set_random`] (`faults/random.rs`) adds faults at random, seeded, to the
//! requests no queued rule matched: for soak runs and benchmarks.

mod aws_proxy;
mod random;
mod reset;
mod rules;
mod tokens;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

#[allow(unused_imports)] // not every test file uses the AWS side
pub use aws_proxy::{AwsCall, AwsFault, AwsFaultProxy, AwsSeen};
use random::{Plan, RandomState};
#[allow(unused_imports)] // not every test file uses random faults
pub use random::{RandomCounts, RandomFaults};
use reset::{Conn, ServerThread};
use rules::FaultQueue;
use tokens::{issue, token_endpoint};
pub use tokens::{TokenConfig, TokenMode};

pub const OAUTH_TOKEN_PATH: &str = "/oauth/token";
pub const CXONE_TOKEN_PATH: &str = "/cxone/token";

/// What to do to one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status without forwarding. `body: None` is a SCIM error
    /// document; a body starting with `<` is sent as text/html, with `{` as
    /// application/scim+json, else text/plain.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Close the connection (TCP RST) without any answer; not forwarded.
    Reset,
    /// Forward (the upstream applies the request), then reset the connection.
    ForwardThenReset,
    /// Forward at once (the upstream applies it), answer only after the delay.
    Delay(Duration),
    /// Forward, then remove the last `n` entries of the BulkResponse's `Operations`.
    DropBulkOps(usize),
    /// Forward, then set every bulk result's `status` to "500" with an error
    /// `response` (the work was done, the client is told it failed). A non-bulk
    /// answer gets HTTP status 500 instead.
    AppliedButFailed,
    /// Answer 401 (as for an expired token) without forwarding.
    Unauthorized,
    /// Forward, then send only the first half of the body (invalid JSON).
    Truncate,
    /// Answer this status with `gzipped` (already compressed) under `Content-Encoding: gzip`,
    /// without forwarding: e.g. a small body that inflates to far more (a decompression bomb).
    Gzip { code: u16, gzipped: Bytes },
    /// Forward (the upstream applies it), then answer this status instead, with a SCIM error:
    /// an answer lost on the way back (a gateway's 502).
    Lost(u16),
    /// Forward, then change each BulkResponse result at random (seeded): of a hundred,
    /// `unavailable` get status 503, `missing` are left out, `failed` get 500 (all applied).
    PerOperation {
        seed: u64,
        unavailable: u8,
        missing: u8,
        failed: u8,
    },
}

impl Fault {
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            body: None,
        }
    }

    /// 429 Too Many Requests with this Retry-After (seconds or an HTTP date).
    pub fn throttled(retry_after: &str) -> Fault {
        Fault::Status {
            code: 429,
            retry_after: Some(retry_after.to_string()),
            body: None,
        }
    }

    /// This status with an HTML page, as a gateway or login portal would send.
    pub fn html(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after: None,
            body: Some(
                "<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>".into(),
            ),
        }
    }
}

/// A request as the proxy received it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The Authorization header the client sent (before any rewriting).
    pub authorization: Option<String>,
    pub body: Bytes,
    /// The fault applied to it, if any.
    pub fault: Option<Fault>,
}

impl SeenRequest {
    /// The token of a `Bearer` Authorization header.
    pub fn bearer(&self) -> Option<&str> {
        self.authorization.as_deref()?.strip_prefix("Bearer ")
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Which requests a rule applies to: a method (`None`: any) and a path suffix.
type RequestMatch = (Option<Method>, String);

/// Picks a fault for a request no queued rule matched (method, path), e.g. at random.
pub type Chooser = Arc<dyn Fn(&Method, &str) -> Option<Fault> + Send + Sync>;

#[derive(Default)]
struct ProxyState {
    faults: FaultQueue<RequestMatch, Fault, SeenRequest>,
    chooser: Option<Chooser>,
    tokens: TokenConfig,
    issued: Vec<String>,
    /// When each issued token was issued (for [`RandomFaults::token_lifetime`]).
    issued_at: HashMap<String, Instant>,
    expired: HashSet<String>,
    random: Option<RandomState>,
    random_counts: RandomCounts,
}

impl ProxyState {
    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        self.faults
            .take(|(m, suffix)| {
                m.as_ref().is_none_or(|m| m == method) && path.ends_with(suffix.as_str())
            })
            .or_else(|| {
                self.chooser
                    .as_ref()
                    .and_then(|choose| choose(method, path))
            })
    }
}

struct Shared {
    url: String,
    upstream: String,
    upstream_token: String,
    client: reqwest::Client,
    state: Mutex<ProxyState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ProxyState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fault stand-in; stops when dropped.
pub struct FaultProxy {
    /// "http://127.0.0.1:PORT": the SCIM base URL to give the code under test.
    pub url: String,
    shared: Arc<Shared>,
    _server: ServerThread,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a base URL) whose static bearer token is `upstream_token`.
    pub fn start(upstream: &str, upstream_token: &str) -> FaultProxy {
        let mut shared = None;
        let (url, server) = ServerThread::start("fault-proxy", |url| {
            let state = Arc::new(Shared {
                url: url.to_string(),
                upstream: upstream.trim_end_matches('/').to_string(),
                upstream_token: upstream_token.to_string(),
                client: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("fault proxy: reqwest client"),
                state: Mutex::default(),
            });
            shared = Some(Arc::clone(&state));
            Router::new().fallback(handle).with_state(state)
        });
        FaultProxy {
            url,
            shared: shared.expect("the app was built"),
            _server: server,
        }
    }

    /// A proxy in front of a scim2-server started by the support module.
    pub fn in_front_of(scim: &super::ScimServer) -> FaultProxy {
        FaultProxy::start(&scim.base_url, &scim.token)
    }

    /// Applies `fault` once to the next request with this method ("*": any) and path suffix.
    pub fn inject(&self, method: &str, path_suffix: &str, fault: Fault) {
        self.push_rule(method, path_suffix, fault, Some(1));
    }

    /// Applies `fault` to the next `times` matching requests.
    pub fn inject_times(&self, method: &str, path_suffix: &str, fault: Fault, times: usize) {
        self.push_rule(method, path_suffix, fault, Some(times));
    }

    /// Applies `fault` to every matching request until [`FaultProxy::clear_faults`].
    pub fn inject_always(&self, method: &str, path_suffix: &str, fault: Fault) {
        self.push_rule(method, path_suffix, fault, None);
    }

    fn push_rule(&self, method: &str, path_suffix: &str, fault: Fault, remaining: Option<usize>) {
        let method = match method {
            "*" | "" => None,
            m => Some(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).expect("HTTP method")),
        };
        let matcher = (method, path_suffix.to_string());
        self.shared
            .state()
            .faults
            .push(matcher, fault, 0, remaining);
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// From now on, a request of the SCIM API (not the token endpoints) that no queued rule
    /// matches gets the fault `chooser` picks, if any (`None`: no chooser).
    #[allow(dead_code)] // only the chaos profile picks faults this way
    pub fn set_chooser(&self, chooser: Option<Chooser>) {
        self.shared.state().chooser = chooser;
    }

    /// From now on, requests no queued rule matches meet `faults` at random (module
    /// `faults/random.rs`); the counts start again from zero.
    pub fn set_random(&self, faults: RandomFaults) {
        let mut state = self.shared.state();
        state.random = Some(RandomState::new(faults));
        state.random_counts = RandomCounts::default();
    }

    /// What the random faults did so far.
    pub fn random_counts(&self) -> RandomCounts {
        self.shared.state().random_counts
    }

    /// Queued rules not used up yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.state().faults.pending()
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.state().faults.log().to_vec()
    }

    /// Number of requests whose path ends with `path_suffix` (any method).
    pub fn hits(&self, path_suffix: &str) -> usize {
        let state = self.shared.state();
        let log = state.faults.log();
        log.iter().filter(|r| r.path.ends_with(path_suffix)).count()
    }

    /// Number of requests with this method and path suffix.
    pub fn hits_for(&self, method: &str, path_suffix: &str) -> usize {
        let state = self.shared.state();
        let log = state.faults.log();
        log.iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.ends_with(path_suffix))
            .count()
    }

    pub fn clear_log(&self) {
        self.shared.state().faults.clear_log();
    }

    pub fn oauth_token_url(&self) -> String {
        format!("{}{OAUTH_TOKEN_PATH}", self.url)
    }

    pub fn cxone_token_url(&self) -> String {
        format!("{}{CXONE_TOKEN_PATH}", self.url)
    }

    pub fn set_token_config(&self, config: TokenConfig) {
        self.shared.state().tokens = config;
    }

    pub fn token_config(&self) -> TokenConfig {
        self.shared.state().tokens.clone()
    }

    pub fn set_token_mode(&self, mode: TokenMode) {
        self.shared.state().tokens.mode = mode;
    }

    pub fn set_expires_in(&self, seconds: u64) {
        self.shared.state().tokens.expires_in = seconds;
    }

    /// How many tokens the token endpoints issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.state().issued.len()
    }

    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.state().issued.clone()
    }

    /// From now on every token issued so far is answered 401 by the proxy.
    pub fn expire_tokens(&self) {
        let mut state = self.shared.state();
        let issued = state.issued.clone();
        state.expired.extend(issued);
    }

    /// Issues a token without going through an endpoint (counts as issued).
    pub fn issue_token(&self) -> String {
        issue(&mut self.shared.state(), &self.url, "direct")
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers,
            body: body.into(),
        }
    }

    fn json(status: u16, value: Value) -> Answer {
        Answer::new(status, "application/json", value.to_string())
    }

    fn scim_error(status: u16, detail: &str) -> Answer {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": status.to_string(),
            "detail": detail,
        });
        Answer::new(status, "application/scim+json", body.to_string())
    }

    fn unauthorized(detail: &str) -> Answer {
        let mut answer = Answer::scim_error(401, detail);
        answer.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        answer
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        for (name, value) in &self.headers {
            if !is_hop_header(name.as_str()) && name != header::CONTENT_ENCODING {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        response
    }
}

fn is_hop_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
    )
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token_path = path == OAUTH_TOKEN_PATH || path == CXONE_TOKEN_PATH;

    // Log, check the token, pick the fault: one critical section.
    let (upstream_auth, fault, plan) = {
        let mut state = shared.state();
        let check = if token_path {
            Ok(None)
        } else {
            check_token(&mut state, &shared.upstream_token, authorization.as_deref())
        };
        let fault = match check {
            Ok(_) if token_path => state.faults.take(|(m, suffix)| {
                m.as_ref().is_none_or(|m| m == parts.method) && path.ends_with(suffix.as_str())
            }),
            Ok(_) => state.take_fault(&parts.method, &path),
            Err(_) => None,
        };
        let plan = match (&fault, &check) {
            (None, Ok(_)) if !token_path => {
                let ProxyState {
                    random,
                    random_counts,
                    ..
                } = &mut *state;
                random.as_mut().map(|r| r.plan(&path, &body, random_counts))
            }
            _ => None,
        };
        let fault = fault.or_else(|| plan.as_ref().and_then(|p| p.fault.clone()));
        state.faults.record(SeenRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            authorization,
            body: body.clone(),
            fault: fault.clone(),
        });
        match check {
            Ok(auth) => (auth, fault, plan.unwrap_or_default()),
            Err(detail) => return Answer::unauthorized(detail).into_response(),
        }
    };

    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    if let Some(Fault::Gzip { code, gzipped }) = &fault {
        // Built here: `Answer::into_response` drops Content-Encoding (forwarded bodies are plain).
        let mut response = Response::new(Body::from(gzipped.clone()));
        *response.status_mut() = StatusCode::from_u16(*code).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        );
        return response;
    }
    if let Some(answer) = fault.as_ref().and_then(|f| answer_early(f, &conn)) {
        return answer.into_response();
    }
    let Plan {
        lost,
        body: replaced,
        refused,
        ..
    } = plan;
    let answer = if token_path {
        token_endpoint(&shared, &path, &body)
    } else {
        let body = replaced.map_or(body, Bytes::from);
        forward(
            &shared,
            &parts.method,
            &path,
            query.as_deref(),
            &parts.headers,
            upstream_auth,
            body,
        )
        .await
    };
    let mut answer = answer;
    if path.ends_with("/Bulk") && answer.status.is_success() {
        let mut state = shared.state();
        let ProxyState {
            random,
            random_counts,
            ..
        } = &mut *state;
        if let Some(body) = random
            .as_mut()
            .and_then(|r| r.alter_bulk(&answer.body, refused, random_counts))
        {
            answer.body = body.into();
        }
    }
    if lost {
        answer = Answer::new(502, "text/plain", "fault proxy: the answer was lost");
    }
    match fault {
        Some(fault) => alter(&fault, answer, &conn).await.into_response(),
        None => answer.into_response(),
    }
}

/// `Ok(Some(header))`: the Authorization to send upstream; `Ok(None)`: leave it out.
fn check_token(
    state: &mut ProxyState,
    upstream_token: &str,
    authorization: Option<&str>,
) -> Result<Option<String>, &'static str> {
    let Some(authorization) = authorization else {
        return Ok(None); // the upstream answers for itself
    };
    let token = authorization.strip_prefix("Bearer ").unwrap_or("");
    if token == upstream_token {
        Ok(Some(authorization.to_string()))
    } else if state.expired.contains(token) {
        Err("fault proxy: the token has expired")
    } else if state.random.as_ref().is_some_and(|r| {
        state
            .issued_at
            .get(token)
            .is_some_and(|at| r.expired(*at, Instant::now()))
    }) {
        state.random_counts.expired += 1;
        Err("fault proxy: the token has expired")
    } else if state.issued.iter().any(|t| t == token) {
        Ok(Some(format!("Bearer {upstream_token}")))
    } else {
        Err("fault proxy: the token was not issued by this server")
    }
}

/// Faults answered without forwarding.
fn answer_early(fault: &Fault, conn: &Conn) -> Option<Answer> {
    match fault {
        Fault::Status {
            code,
            retry_after,
            body,
        } => {
            let mut answer = match body {
                None => Answer::scim_error(*code, "fault proxy: injected failure"),
                Some(body) => {
                    let content_type = match body.trim_start().chars().next() {
                        Some('<') => "text/html; charset=utf-8",
                        Some('{') | Some('[') => "application/scim+json",
                        _ => "text/plain; charset=utf-8",
                    };
                    Answer::new(*code, content_type, body.clone())
                }
            };
            if let Some(value) = retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                answer.headers.insert(header::RETRY_AFTER, value);
            }
            Some(answer)
        }
        Fault::Unauthorized => Some(Answer::unauthorized("fault proxy: the token has expired")),
        Fault::Reset => {
            conn.reset();
            Some(Answer::new(
                500,
                "text/plain",
                "never sent: the connection is reset",
            ))
        }
        _ => None,
    }
}

/// Faults that change a forwarded answer.
async fn alter(fault: &Fault, mut answer: Answer, conn: &Conn) -> Answer {
    match fault {
        Fault::Delay(delay) => tokio::time::sleep(*delay).await,
        Fault::ForwardThenReset => conn.reset(),
        Fault::Truncate => answer.body = answer.body.slice(..answer.body.len() / 2),
        Fault::DropBulkOps(n) => {
            if let Ok(mut doc) = serde_json::from_slice::<Value>(&answer.body) {
                if let Some(ops) = doc.get_mut("Operations").and_then(Value::as_array_mut) {
                    ops.truncate(ops.len().saturating_sub(*n));
                    answer.body = doc.to_string().into();
                }
            }
        }
        Fault::AppliedButFailed => {
            let mut doc = serde_json::from_slice::<Value>(&answer.body).unwrap_or(Value::Null);
            match doc.get_mut("Operations").and_then(Value::as_array_mut) {
                Some(ops) => {
                    for op in ops.iter_mut() {
                        op["status"] = if op["status"].is_number() {
                            json!(500)
                        } else {
                            json!("500")
                        };
                        op["response"] = json!({
                            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                            "status": "500",
                            "detail": "fault proxy: applied, reported as failed",
                        });
                    }
                    answer.body = doc.to_string().into();
                }
                None => answer.status = StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        Fault::Lost(code) => {
            answer = Answer::scim_error(*code, "fault proxy: applied, the answer was lost");
        }
        Fault::PerOperation {
            seed,
            unavailable,
            missing,
            failed,
        } => {
            use rand::{Rng as _, SeedableRng as _};
            let mut rng = rand::rngs::StdRng::seed_from_u64(*seed);
            let mut doc = serde_json::from_slice::<Value>(&answer.body).unwrap_or(Value::Null);
            if let Some(ops) = doc.get_mut("Operations").and_then(Value::as_array_mut) {
                let (unavailable, missing, failed) =
                    (*unavailable as u32, *missing as u32, *failed as u32);
                ops.retain_mut(|op| {
                    let roll: u32 = rng.random_range(0..100);
                    let status = if roll < unavailable {
                        503
                    } else if roll < unavailable + missing {
                        return false;
                    } else if roll < unavailable + missing + failed {
                        500
                    } else {
                        return true;
                    };
                    op["status"] = json!(status.to_string());
                    op["response"] = json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": status.to_string(),
                        "detail": "fault proxy: applied, reported as failed",
                    });
                    true
                });
                answer.body = doc.to_string().into();
            }
        }
        Fault::Status { .. } | Fault::Reset | Fault::Unauthorized | Fault::Gzip { .. } => {}
    }
    answer
}

async fn forward(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    authorization: Option<String>,
    body: Bytes,
) -> Answer {
    let url = match query {
        Some(q) => format!("{}{path}?{q}", shared.upstream),
        None => format!("{}{path}", shared.upstream),
    };
    let mut request = shared.client.request(method.clone(), &url).body(body);
    for (name, value) in headers {
        let skip = is_hop_header(name.as_str())
            || name == header::AUTHORIZATION
            || name == header::ACCEPT_ENCODING
            || name.as_str().starts_with("x-forwarded-");
        if !skip {
            request = request.header(name.clone(), value.clone());
        }
    }
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    // scim2-server runs with --reverse-proxy: its locations then name this proxy.
    let host = shared.url.trim_start_matches("http://").to_string();
    request = request
        .header("x-forwarded-host", host)
        .header("x-forwarded-proto", "http");
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            match response.bytes().await {
                Ok(body) => Answer {
                    status,
                    headers,
                    body,
                },
                Err(e) => Answer::new(
                    502,
                    "text/plain",
                    format!("fault proxy: upstream body: {e}"),
                ),
            }
        }
        Err(e) => Answer::new(
            502,
            "text/plain",
            format!("fault proxy: upstream {url}: {e}"),
        ),
    }
}
