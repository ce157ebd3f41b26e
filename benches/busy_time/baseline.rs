//! The baseline of the busy-time benchmark: a plain client that sleeps nowhere but honours
//! `Retry-After`. One request chain per user (create; on 409 look up and replace; a leaver is
//! looked up and deactivated), two users at a time, with a fixed request timeout; whatever
//! fails for a retryable reason goes back to its queue with a delay of 1, 2, 4, 8 s, never below
//! `Retry-After`, up to 12 attempts (a 429 does not spend one), and starts its chain again from the create.
//! Its busy time is counted as the engine's: the summed wall time of its batches, waiting in
//! the queue unbilled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use scim_bulk_provisioner::user::User;
use serde_json::{json, Value};

/// Attempts before a user is given up, as the engine's `MAX_ATTEMPTS` in this benchmark.
pub const MAX_ATTEMPTS: u32 = 12;

/// One user's work and how many times it was tried.
#[derive(Debug, Clone)]
struct Item {
    user: User,
    attempt: u32,
}

/// What became of one try.
enum Try {
    Done,
    /// Retry after at least this (`Retry-After`), spending an attempt.
    Retry(Duration),
    /// 429: retry after at least this, without spending an attempt (throttling is not failure).
    Throttled(Duration),
    Failed,
}

/// The plain client's own delay queue (a stand-in for SQS, as the engine's `DelayQueue`).
struct Queue {
    scale: f64,
    heap: Mutex<BinaryHeap<Reverse<(Instant, u64, usize)>>>,
    items: Mutex<Vec<Option<Item>>>,
}

impl Queue {
    fn push(&self, item: Item, delay: Duration) {
        let mut items = self.items.lock().expect("queue");
        let index = items.len();
        items.push(Some(item));
        let at = Instant::now() + delay.mul_f64(self.scale);
        self.heap
            .lock()
            .expect("queue")
            .push(Reverse((at, index as u64, index)));
    }

    /// Waits (unbilled) for the first visible item, then for the batching window, and takes
    /// up to `max` visible items.
    async fn batch(&self, max: usize, window: Duration) -> Vec<Item> {
        let first = match self.heap.lock().expect("queue").peek() {
            Some(Reverse((at, _, _))) => *at,
            None => return Vec::new(),
        };
        tokio::time::sleep_until(first.into()).await;
        tokio::time::sleep(window.mul_f64(self.scale)).await;
        let now = Instant::now();
        let mut heap = self.heap.lock().expect("queue");
        let mut items = self.items.lock().expect("queue");
        let mut out = Vec::new();
        while out.len() < max {
            match heap.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => break,
            }
            if let Some(Reverse((_, _, index))) = heap.pop() {
                out.extend(items[index].take());
            }
        }
        out
    }
}

/// What a baseline run did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub busy: Duration,
    pub batches: u64,
    pub failed: u64,
    pub timeouts: u64,
}

/// The plain client against `base_url`, with OAuth client credentials at `token_url`.
pub struct Plain {
    http: reqwest::Client,
    base_url: String,
    token_url: String,
    client: (String, String),
    token: tokio::sync::Mutex<Option<String>>,
    timeouts: std::sync::atomic::AtomicU64,
}

impl Plain {
    pub fn new(
        base_url: String,
        token_url: String,
        client: (String, String),
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("reqwest client");
        Self {
            http,
            base_url,
            token_url,
            client,
            token: tokio::sync::Mutex::new(None),
            timeouts: Default::default(),
        }
    }

    /// Provisions `users` as batches of at most `batch` from its queue, two at a time.
    pub async fn run(
        &self,
        users: Vec<User>,
        batch: usize,
        scale: f64,
        window: Duration,
    ) -> Outcome {
        let queue = Queue {
            scale,
            heap: Mutex::new(BinaryHeap::new()),
            items: Mutex::new(Vec::new()),
        };
        for user in users {
            queue.push(Item { user, attempt: 0 }, Duration::ZERO);
        }
        let mut outcome = Outcome::default();
        loop {
            let items = queue.batch(batch, window).await;
            if items.is_empty() {
                break;
            }
            let started = Instant::now();
            let tries: Vec<(Item, Try)> = stream::iter(items)
                .map(|item| async move {
                    let result = self.provision(&item.user).await;
                    (item, result)
                })
                .buffer_unordered(2)
                .collect()
                .await;
            outcome.busy += started.elapsed();
            outcome.batches += 1;
            for (mut item, result) in tries {
                match result {
                    Try::Done => {}
                    Try::Failed => outcome.failed += 1,
                    Try::Throttled(retry_after) => {
                        queue.push(item.clone(), backoff(item.attempt, retry_after));
                    }
                    Try::Retry(retry_after) => {
                        let delay = backoff(item.attempt, retry_after);
                        item.attempt += 1;
                        if item.attempt >= MAX_ATTEMPTS {
                            outcome.failed += 1;
                        } else {
                            queue.push(item, delay);
                        }
                    }
                }
            }
        }
        outcome.timeouts = self.timeouts.load(std::sync::atomic::Ordering::Relaxed);
        outcome
    }

    async fn provision(&self, user: &User) -> Try {
        let doc = user.to_scim();
        if user.active {
            match self.send(reqwest::Method::POST, "/Users", Some(&doc)).await {
                Ok((201, _)) => return Try::Done,
                Ok((409, _)) => {}
                Ok((status, _)) => return self.judge(status, None),
                Err(t) => return t,
            }
        }
        let filter = format!("/Users?filter=userName%20eq%20%22{}%22", user.user_name);
        let id = match self.send(reqwest::Method::GET, &filter, None).await {
            Ok((200, body)) => body["Resources"][0]["id"].as_str().map(str::to_string),
            Ok((status, _)) => return self.judge(status, None),
            Err(t) => return t,
        };
        let Some(id) = id else {
            // A leaver that does not exist: nothing to do; a user that does not exist after a
            // 409: someone deleted it meanwhile, start again.
            return if user.active {
                Try::Retry(Duration::ZERO)
            } else {
                Try::Done
            };
        };
        let (method, body) = if user.active {
            (reqwest::Method::PUT, doc)
        } else {
            let patch = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": false}],
            });
            (reqwest::Method::PATCH, patch)
        };
        match self
            .send(method, &format!("/Users/{id}"), Some(&body))
            .await
        {
            Ok((200 | 204, _)) => Try::Done,
            Ok((status, _)) => self.judge(status, None),
            Err(t) => t,
        }
    }

    /// Retry a retryable status (after `Retry-After` if given), fail the rest.
    fn judge(&self, status: u16, retry_after: Option<Duration>) -> Try {
        if status == 429 {
            Try::Throttled(retry_after.unwrap_or_default())
        } else if status == 408 || status >= 500 {
            Try::Retry(retry_after.unwrap_or_default())
        } else {
            Try::Failed
        }
    }

    /// One request with the cached token (fetched again once on 401); a retryable answer or
    /// error comes back as the `Try` to make of it.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Try> {
        for _ in 0..2 {
            let token = self.token().await?;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base_url))
                .bearer_auth(&token)
                .header("accept", "application/scim+json");
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/scim+json")
                    .body(body.to_string());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return Err(self.network(e)),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if status == 401 {
                *self.token.lock().await = None;
                continue;
            }
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => return Err(self.network(e)),
            };
            if status == 429 || status >= 500 {
                return Err(self.judge(status, retry_after));
            }
            let doc = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok((status, doc));
        }
        Err(Try::Retry(Duration::ZERO))
    }

    fn network(&self, error: reqwest::Error) -> Try {
        if error.is_timeout() {
            self.timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Try::Retry(Duration::ZERO)
    }

    async fn token(&self) -> Result<String, Try> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client.0.as_str()),
            ("client_secret", self.client.1.as_str()),
        ];
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| self.network(e))?;
        let bytes = response.bytes().await.map_err(|e| self.network(e))?;
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let token = doc["access_token"]
            .as_str()
            .ok_or(Try::Retry(Duration::ZERO))?
            .to_string();
        *cached = Some(token.clone());
        Ok(token)
    }
}

/// The backoff of retry `attempt` (1, 2, 4, 8 s), never below `Retry-After`.
pub fn backoff(attempt: u32, retry_after: Duration) -> Duration {
    Duration::from_secs(1 << attempt.min(3)).max(retry_after)
}
