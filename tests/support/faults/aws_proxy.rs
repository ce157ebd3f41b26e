//! The AWS side of the fault stand-in: a reverse proxy in front of moto that fails chosen AWS
//! calls on cue, so the function's SDK clients (pointed at [`AwsFaultProxy::url`]) meet 500s,
//! 503s, throttling, resets, slow answers and bodies cut mid-stream.
//!
//! ```ignore
//! let aws = AwsFaultProxy::start(&stack.moto.endpoint);
//! aws.inject(AwsCall::target("GetSecretValue"), AwsFault::throttling(), 1);
//! aws.inject(AwsCall::s3("GET", "/scim-uploads/incoming/"), AwsFault::ResetMidBody, 1);
//! // ... build the function's State with support::aws::sdk_config_at(&aws.url) ...
//! assert_eq!(aws.faults_met(&AwsCall::target("GetSecretValue")), 1);
//! ```
//!
//! Calls are told apart as moto does: the JSON protocols (SQS, Secrets Manager) by the
//! `X-Amz-Target` header (`AmazonSQS.SendMessageBatch`, `secretsmanager.GetSecretValue`), S3
//! by method and path (path-style: `/bucket/key`). Requests pass through unchanged otherwise
//! (moto does not check signatures, so the changed Host does not matter).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;

use super::is_hop_header;
use super::reset::{Conn, ServerThread};
use super::rules::FaultQueue;

/// Which AWS calls a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsCall {
    /// A JSON-protocol call whose `X-Amz-Target` ends with `.{0}` (e.g. `SendMessageBatch`).
    Target(String),
    /// An S3 call: this method (`None`: any) on a path starting with this prefix.
    S3 {
        method: Option<Method>,
        path_prefix: String,
    },
}

impl AwsCall {
    /// A Secrets Manager or SQS operation by name (`GetSecretValue`, `SendMessageBatch`, ...).
    pub fn target(operation: &str) -> AwsCall {
        AwsCall::Target(operation.to_string())
    }

    /// S3 requests with this method ("*": any) under this path (`/bucket/prefix`).
    pub fn s3(method: &str, path_prefix: &str) -> AwsCall {
        let method = match method {
            "*" | "" => None,
            m => Some(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).expect("HTTP method")),
        };
        AwsCall::S3 {
            method,
            path_prefix: path_prefix.to_string(),
        }
    }

    fn matches(&self, method: &Method, path: &str, target: Option<&str>) -> bool {
        match self {
            AwsCall::Target(operation) => {
                target.is_some_and(|t| t.rsplit('.').next() == Some(operation.as_str()))
            }
            AwsCall::S3 {
                method: want,
                path_prefix,
            } => {
                target.is_none()
                    && want.as_ref().is_none_or(|m| m == method)
                    && path.starts_with(path_prefix.as_str())
            }
        }
    }
}

/// What to do to one AWS call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsFault {
    /// Answer this status and error code without forwarding (`{"__type": code}` for the JSON
    /// protocols, `<Error><Code>` for S3).
    Error { status: u16, code: String },
    /// Close the connection (TCP RST) without any answer; not forwarded.
    Reset,
    /// Forward (moto applies the call), then reset the connection: the caller cannot know.
    ForwardThenReset,
    /// Forward at once (moto applies the call), answer only after the delay.
    Delay(Duration),
    /// Forward, answer the status, the headers (full Content-Length) and half of the body,
    /// then reset the connection: a download that dies mid-stream.
    ResetMidBody,
}

impl AwsFault {
    /// 500 InternalError (S3) / InternalFailure (JSON protocols).
    pub fn internal_error() -> AwsFault {
        AwsFault::Error {
            status: 500,
            code: "InternalFailure".into(),
        }
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable() -> AwsFault {
        AwsFault::Error {
            status: 503,
            code: "ServiceUnavailable".into(),
        }
    }

    /// 400 ThrottlingException, as SQS and Secrets Manager throttle.
    pub fn throttling() -> AwsFault {
        AwsFault::Error {
            status: 400,
            code: "ThrottlingException".into(),
        }
    }

    /// 503 SlowDown, as S3 throttles.
    pub fn slow_down() -> AwsFault {
        AwsFault::Error {
            status: 503,
            code: "SlowDown".into(),
        }
    }
}

/// A request as the proxy received it.
#[derive(Clone, Debug)]
pub struct AwsSeen {
    pub method: String,
    pub path: String,
    /// The `X-Amz-Target` header (JSON protocols).
    pub target: Option<String>,
    /// The fault applied to it, if any.
    pub fault: Option<AwsFault>,
}

impl AwsSeen {
    /// Whether this request is one of `call`.
    pub fn is(&self, call: &AwsCall) -> bool {
        let method = Method::from_bytes(self.method.as_bytes()).unwrap_or(Method::GET);
        call.matches(&method, &self.path, self.target.as_deref())
    }
}

#[derive(Default)]
struct ProxyState {
    faults: FaultQueue<AwsCall, AwsFault, AwsSeen>,
}

impl ProxyState {
    fn take_fault(
        &mut self,
        method: &Method,
        path: &str,
        target: Option<&str>,
    ) -> Option<AwsFault> {
        self.faults.take(|call| call.matches(method, path, target))
    }
}

struct Shared {
    upstream: String,
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

/// The AWS fault stand-in; stops when dropped.
pub struct AwsFaultProxy {
    /// "http://127.0.0.1:PORT": the endpoint to give the function's AWS SDK.
    pub url: String,
    shared: Arc<Shared>,
    _server: ServerThread,
}

impl AwsFaultProxy {
    /// Starts a proxy to `upstream` (moto's endpoint), on a thread and runtime of its own.
    pub fn start(upstream: &str) -> AwsFaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("AWS fault proxy: reqwest client"),
            state: Mutex::default(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (url, server) = ServerThread::start("aws-fault-proxy", |_| app);
        AwsFaultProxy {
            url,
            shared,
            _server: server,
        }
    }

    /// Applies `fault` to the next `times` calls of `call`.
    pub fn inject(&self, call: AwsCall, fault: AwsFault, times: usize) {
        self.inject_after(call, 0, fault, times);
    }

    /// Lets `skip` calls of `call` through, then applies `fault` to the next `times`.
    pub fn inject_after(&self, call: AwsCall, skip: usize, fault: AwsFault, times: usize) {
        self.shared
            .state()
            .faults
            .push(call, fault, skip, Some(times));
    }

    /// Applies `fault` to every call of `call` until [`AwsFaultProxy::clear_faults`].
    pub fn inject_always(&self, call: AwsCall, fault: AwsFault) {
        self.shared.state().faults.push(call, fault, 0, None);
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// Queued rules not used up yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.state().faults.pending()
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<AwsSeen> {
        self.shared.state().faults.log().to_vec()
    }

    /// Requests of `call` seen so far.
    pub fn hits(&self, call: &AwsCall) -> usize {
        let state = self.shared.state();
        state.faults.log().iter().filter(|r| r.is(call)).count()
    }

    /// Requests of `call` that met a fault.
    pub fn faults_met(&self, call: &AwsCall) -> usize {
        let state = self.shared.state();
        let log = state.faults.log();
        log.iter()
            .filter(|r| r.fault.is_some() && r.is(call))
            .count()
    }

    pub fn clear_log(&self) {
        self.shared.state().faults.clear_log();
    }
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
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let fault = {
        let mut state = shared.state();
        let fault = state.take_fault(&parts.method, &path, target.as_deref());
        state.faults.record(AwsSeen {
            method: parts.method.to_string(),
            path: path.clone(),
            target: target.clone(),
            fault: fault.clone(),
        });
        fault
    };
    match &fault {
        Some(AwsFault::Error { status, code }) => {
            return error_answer(*status, code, target.is_some());
        }
        Some(AwsFault::Reset) => {
            conn.reset();
            return plain(500, "never sent: the connection is reset");
        }
        _ => {}
    }
    let upstream = forward(
        &shared,
        &parts.method,
        parts.uri.path_and_query(),
        &parts.headers,
        body,
    )
    .await;
    let (status, headers, body) = match upstream {
        Ok(answer) => answer,
        Err(problem) => return plain(502, &problem),
    };
    match fault {
        Some(AwsFault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(AwsFault::ForwardThenReset) => {
            conn.reset();
            return plain(500, "never sent: the connection is reset");
        }
        Some(AwsFault::ResetMidBody) => return cut_mid_body(status, &headers, body, conn),
        _ => {}
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    copy_headers(&headers, response.headers_mut());
    response
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_header(name.as_str()) && name != header::CONTENT_ENCODING {
            to.append(name.clone(), value.clone());
        }
    }
}

fn plain(status: u16, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// An AWS error answer in the protocol the caller speaks.
fn error_answer(status: u16, code: &str, json_protocol: bool) -> Response {
    let message = "AWS fault proxy: injected failure";
    let (content_type, body) = if json_protocol {
        (
            "application/x-amz-json-1.0",
            serde_json::json!({"__type": code, "message": message}).to_string(),
        )
    } else {
        (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULT</RequestId></Error>"
            ),
        )
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(code) {
        headers.insert("x-amzn-errortype", value);
    }
    headers.insert("x-amzn-requestid", HeaderValue::from_static("FAULT"));
    response
}

/// The status, the headers with the full Content-Length and half of the body; then, a moment
/// later, a reset: the client has started reading and the stream dies.
fn cut_mid_body(status: StatusCode, headers: &HeaderMap, body: Bytes, conn: Conn) -> Response {
    let full = body.len();
    let half = body.slice(..full / 2);
    let chunks = futures_util::stream::unfold(0u8, move |step| {
        let half = half.clone();
        let conn = conn.clone();
        async move {
            match step {
                0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    conn.reset();
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "AWS fault proxy: reset mid-body",
                        )),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    copy_headers(headers, response.headers_mut());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full));
    response
}

async fn forward(
    shared: &Shared,
    method: &Method,
    path_and_query: Option<&axum::http::uri::PathAndQuery>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let url = format!(
        "{}{}",
        shared.upstream,
        path_and_query.map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = shared.client.request(method.clone(), &url).body(body);
    for (name, value) in headers {
        if !is_hop_header(name.as_str()) && name != header::ACCEPT_ENCODING {
            request = request.header(name.clone(), value.clone());
        }
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("AWS fault proxy: upstream {url}: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("AWS fault proxy: upstream body: {e}"))?;
    Ok((status, headers, body))
}
