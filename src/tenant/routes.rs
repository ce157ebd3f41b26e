//! The tenant's HTTP layer: throttling, injected failures and bearer auth in front of the SCIM
//! routes (RFC 7644), which translate requests into [`Store`] calls.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::store::{ScimError, Store, MAX_RESULTS};
use super::{Counters, TenantConfig};
use crate::scim::schema::SERVICE_PROVIDER_CONFIG_SCHEMA;

/// The SCIM media type (RFC 7644 §3.1).
const SCIM_JSON: &str = "application/scim+json";

/// Bytes read and dropped past the payload limit, so that the client gets its 413 instead of a
/// connection reset in the middle of sending.
const DRAIN_LIMIT: usize = 16 * 1_048_576;

/// State shared by the handlers and the [`super::Tenant`] handle.
pub(super) struct Shared {
    pub(super) config: TenantConfig,
    base_url: String,
    pub(super) stats: Counters,
    store: Mutex<Store>,
    bucket: Option<Mutex<TokenBucket>>,
    /// The faults' own stream, so that faults do not shift the ids.
    faults: Mutex<StdRng>,
}

/// A fault the profile injects in front of a request.
enum Injected {
    Throttled,
    Unavailable,
}

impl Shared {
    /// State for a tenant serving at `base_url`.
    pub(super) fn new(config: TenantConfig, base_url: &str) -> Self {
        let bucket = config
            .requests_per_second
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|rate| Mutex::new(TokenBucket::new(rate, Instant::now())));
        Self {
            base_url: base_url.to_string(),
            store: Mutex::new(Store::new(base_url, config.seed).with_quirks(config.quirks)),
            stats: Counters::default(),
            bucket,
            faults: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0xd20b_0b5e)),
            config,
        }
    }

    /// The store. A handler that panicked cannot have left it half-updated (updates are
    /// computed first and committed last), so a poisoned lock is still usable.
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long until the request could be served, if it is over the rate limit.
    fn throttle(&self) -> Option<Duration> {
        let bucket = self.bucket.as_ref()?;
        let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.take(Instant::now()).err()
    }

    /// The injected 429 or 503 for this request, if it gets one (one draw per request).
    fn inject_fault(&self) -> Option<Injected> {
        let (throttled, unavailable) = (
            fraction(self.config.faults.throttled),
            fraction(self.config.faults.unavailable),
        );
        if throttled + unavailable <= 0.0 {
            return None;
        }
        let draw: f64 = self
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random();
        if draw < throttled {
            Some(Injected::Throttled)
        } else if draw < throttled + unavailable {
            Some(Injected::Unavailable)
        } else {
            None
        }
    }

    /// Removes the profile's share of a BulkRequest's operations; returns how many it dropped.
    /// A request over `max_operations` is left whole, so that it still gets its 413.
    fn drop_operations(&self, request: &mut Value) -> u64 {
        let rate = fraction(self.config.faults.dropped);
        let max = self.config.max_operations;
        let Some(ops) = request.get_mut("Operations").and_then(Value::as_array_mut) else {
            return 0;
        };
        if rate <= 0.0 || ops.len() > max {
            return 0;
        }
        let before = ops.len();
        let mut rng = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        ops.retain(|_| !rng.random_bool(rate));
        (before - ops.len()) as u64
    }
}

/// A fraction clamped to 0.0..=1.0 (NaN: 0.0), as `random_bool` requires.
fn fraction(f: f64) -> f64 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

/// A token bucket holding about one second of requests.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.rate;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }
}

/// The tenant's routes under `/scim/v2`.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/Users", get(list_users).post(create_user))
        .route(
            "/scim/v2/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/scim/v2/Bulk", post(bulk))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// In front of every route: rate limit (429), the fault profile's 429 or 503, bearer auth (401).
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let stats = &shared.stats;
    stats.requests.fetch_add(1, Relaxed);
    if let Some(wait) = shared.throttle() {
        stats.throttled.fetch_add(1, Relaxed);
        // Whole seconds, rounded up, so that a client waiting that long finds a token.
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let error = ScimError::new(429, None, "Too many requests");
        return error_response(&error, Some(secs));
    }
    match shared.inject_fault() {
        Some(Injected::Throttled) => {
            stats.throttled.fetch_add(1, Relaxed);
            let error = ScimError::new(429, None, "Too many requests");
            return error_response(&error, Some(1));
        }
        Some(Injected::Unavailable) => {
            stats.server_errors.fetch_add(1, Relaxed);
            let error = ScimError::new(503, None, "Service temporarily unavailable");
            return error_response(&error, Some(1));
        }
        None => {}
    }
    if !authorized(request.headers(), &shared.config.bearer_token) {
        stats.unauthorized.fetch_add(1, Relaxed);
        let error = ScimError::new(401, None, "A valid bearer token is required");
        let mut response = error_response(&error, None);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// Whether the request carries `Authorization: Bearer <token>`.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, presented)) = value.trim().split_once(' ') else {
        return false;
    };
    let (a, b) = (presented.trim().as_bytes(), token.as_bytes());
    // Compared without an early exit, so that timing does not reveal the token.
    let same = a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0;
    scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && same
}

async fn service_provider_config(State(shared): State<Arc<Shared>>) -> Response {
    let config = &shared.config;
    let (max_operations, max_payload_size) = if config.bulk_supported {
        (config.max_operations, config.max_payload_size)
    } else {
        (0, 0)
    };
    let location = format!("{}/ServiceProviderConfig", shared.base_url);
    let doc = json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": {"supported": true},
        "bulk": {
            "supported": config.bulk_supported,
            "maxOperations": max_operations,
            "maxPayloadSize": max_payload_size,
        },
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": location},
    });
    scim_response(StatusCode::OK, &doc)
}

async fn list_users(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    shared.stats.searches.fetch_add(1, Relaxed);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let number = |name: &str, default: usize| match param(name).map(|v| v.trim().parse::<i64>()) {
        None => Ok(default),
        // RFC 7644 §3.4.2.4: startIndex below 1 means 1, a negative count means 0.
        Some(Ok(n)) => Ok(usize::try_from(n.max(0)).unwrap_or(usize::MAX)),
        Some(Err(_)) => Err(ScimError::invalid_value(format!(
            "{name} must be an integer"
        ))),
    };
    let result = number("startIndex", 1).and_then(|start| {
        let count = number("count", MAX_RESULTS)?;
        shared.store().list(param("filter"), start, count)
    });
    reply(result, StatusCode::OK)
}

async fn create_user(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    let result = match read_json(&shared, body).await {
        Ok(doc) => shared.store().create(&doc),
        Err(error) => Err(error),
    };
    shared.stats.record("POST", status_of(&result, 201));
    let location = result
        .as_ref()
        .ok()
        .and_then(|user| user["meta"]["location"].as_str())
        .and_then(|l| HeaderValue::from_str(l).ok());
    let mut response = reply(result, StatusCode::CREATED);
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let result = shared.store().get(&id);
    reply(result, StatusCode::OK)
}

async fn replace_user(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let result = match read_json(&shared, body).await {
        Ok(doc) => shared.store().replace(&id, &doc),
        Err(error) => Err(error),
    };
    shared.stats.record("PUT", status_of(&result, 200));
    reply(result, StatusCode::OK)
}

async fn patch_user(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let result = match read_json(&shared, body).await {
        Ok(doc) => shared.store().patch(&id, &doc),
        Err(error) => Err(error),
    };
    shared.stats.record("PATCH", status_of(&result, 200));
    reply(result, StatusCode::OK)
}

async fn delete_user(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let result = shared.store().delete(&id);
    shared.stats.record("DELETE", status_of(&result, 204));
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error_response(&error, None),
    }
}

async fn bulk(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    if !shared.config.bulk_supported {
        // Read the body anyway, so that the client sees the 501 rather than a reset.
        let _ = read_body(body, shared.config.max_payload_size).await;
        return error_response(&ScimError::new(501, None, "Bulk is not supported"), None);
    }
    shared.stats.bulk_requests.fetch_add(1, Relaxed);
    let result = match read_json(&shared, body).await {
        Ok(mut doc) => {
            let dropped = shared.drop_operations(&mut doc);
            shared.stats.dropped_operations.fetch_add(dropped, Relaxed);
            shared.store().bulk(&doc, shared.config.max_operations)
        }
        Err(error) => Err(error),
    };
    if let Ok(response) = &result {
        let ops = response["Operations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        shared
            .stats
            .bulk_operations
            .fetch_add(ops.len() as u64, Relaxed);
        for op in ops {
            let status = op["status"].as_str().and_then(|s| s.parse().ok());
            shared.stats.record(
                op["method"].as_str().unwrap_or_default(),
                status.unwrap_or(0),
            );
        }
    }
    reply(result, StatusCode::OK)
}

async fn not_found(uri: Uri) -> Response {
    let error = ScimError::new(404, None, format!("No endpoint at {}", uri.path()));
    error_response(&error, None)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let detail = format!("{method} is not allowed on {}", uri.path());
    error_response(&ScimError::new(405, None, detail), None)
}

/// Reads a request body of at most `max_payload_size` bytes as JSON.
async fn read_json(shared: &Shared, body: Body) -> Result<Value, ScimError> {
    let bytes = read_body(body, shared.config.max_payload_size).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("The body is not valid JSON: {e}")))
}

/// The body, or 413 if it is longer than `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ScimError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ScimError::invalid_syntax(format!("Could not read the body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > limit.saturating_add(DRAIN_LIMIT) {
            break;
        }
    }
    if total > limit {
        let detail = format!("The request body exceeds maxPayloadSize ({limit} bytes)");
        return Err(ScimError::new(413, None, detail));
    }
    Ok(buf)
}

/// The HTTP status a handler's result will be answered with.
fn status_of<T>(result: &Result<T, ScimError>, success: u16) -> u16 {
    result.as_ref().map_or_else(|e| e.status, |_| success)
}

fn reply(result: Result<Value, ScimError>, success: StatusCode) -> Response {
    match result {
        Ok(doc) => scim_response(success, &doc),
        Err(error) => error_response(&error, None),
    }
}

fn scim_response(status: StatusCode, doc: &Value) -> Response {
    let mut response = (status, doc.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

/// A SCIM Error response, with `Retry-After` (seconds) when given.
fn error_response(error: &ScimError, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = scim_response(status, &error.to_json());
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_second_of_requests_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, start);
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert!(bucket.take(start + Duration::from_millis(500)).is_ok());
        // Idle time does not bank more than the capacity.
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(later).is_ok());
        assert!(bucket.take(later).is_ok());
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn slow_rates_still_allow_one_request() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.1, start);
        assert!(bucket.take(start).is_ok());
        assert_eq!(bucket.take(start).unwrap_err().as_secs(), 10);
    }

    #[test]
    fn bearer_token_must_match() {
        let headers = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            h
        };
        assert!(authorized(&headers("Bearer s3cret"), "s3cret"));
        assert!(authorized(&headers("bearer  s3cret "), "s3cret"));
        assert!(!authorized(&headers("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&headers("Basic s3cret"), "s3cret"));
        assert!(!authorized(&headers("Bearer "), ""));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}
