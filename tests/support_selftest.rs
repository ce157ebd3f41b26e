//! Checks the test support itself: the peers start, the fault proxy does what
//! it says, and the guards leave no process behind.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::faults::{Fault, FaultProxy, TokenConfig, TokenMode};
use support::{ScimOptions, ScimServer};

/// Whether a process with this PID still exists (zombies included).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, reqwest::Error> {
    send_with(support::http_client(), method, url, token, body).await
}

async fn send_with(
    client: reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, reqwest::Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

async fn bulk(url: &str, token: &str, users: &[&str]) -> Reply {
    let body = support::bulk_create(users);
    send("POST", &format!("{url}/Bulk"), Some(token), Some(&body))
        .await
        .expect("bulk request")
}

#[tokio::test]
async fn scim_server_answers_paginates_and_dies_with_its_guard() {
    let scim = support::start_scim2_server(ScimOptions {
        filter_max_results: 2,
        ..ScimOptions::default()
    })
    .await;
    let spc = support::get_json(
        &format!("{}/ServiceProviderConfig", scim.base_url),
        &scim.token,
    )
    .await;
    assert_eq!(
        spc["filter"]["maxResults"], 2,
        "custom SPC is served: {spc}"
    );

    let reply = bulk(
        &scim.base_url,
        &scim.token,
        &["a@example.com", "b@example.com", "c@example.com"],
    )
    .await;
    assert_eq!(reply.status, 200);
    let ops = reply.json()["Operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ops.len(), 3);
    assert!(
        ops.iter().all(|op| op["status"] == "201"),
        "statuses are strings: {ops:?}"
    );

    support::create_user(&scim.base_url, &scim.token, "d@example.com").await;
    let users = scim.users().await;
    assert_eq!(users.len(), 4, "all pages are read with a page cap of 2");
    assert!(support::find_user(&users, "b@example.com").is_some());

    let unauthorized = send(
        "GET",
        &format!("{}/Users", scim.base_url),
        Some("wrong"),
        None,
    )
    .await
    .expect("request");
    assert_eq!(unauthorized.status, 401);

    let pid = scim.pid();
    assert!(alive(pid));
    drop(scim);
    assert!(!alive(pid), "scim2-server pid {pid} survived its guard");
}

#[tokio::test]
async fn service_provider_config_limits_are_enforced() {
    let small = support::start_scim2_server(ScimOptions {
        bulk_max_payload_size: 600,
        bulk_max_operations: 3,
        ..ScimOptions::default()
    })
    .await;
    let reply = bulk(&small.base_url, &small.token, &["x1@example.com"]).await;
    assert_eq!(reply.status, 200, "a small bulk passes");
    let many: Vec<String> = (0..6).map(|i| format!("user{i}@example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let reply = bulk(&small.base_url, &small.token, &many).await;
    assert_eq!(reply.status, 413, "payload over maxPayloadSize");
    assert_eq!(reply.json()["status"], "413");

    let roomy = support::start_scim2_server(ScimOptions {
        bulk_max_operations: 2,
        ..ScimOptions::default()
    })
    .await;
    let reply = bulk(&roomy.base_url, &roomy.token, &["a@x", "b@x", "c@x"]).await;
    assert_eq!(reply.status, 413, "operations over maxOperations");
    assert!(reply.json()["detail"]
        .as_str()
        .unwrap_or("")
        .contains("maxOperations"));

    let no_bulk = support::start_scim2_server(ScimOptions {
        bulk_supported: false,
        bulk_max_operations: 0,
        bulk_max_payload_size: 0,
        ..ScimOptions::default()
    })
    .await;
    let reply = bulk(&no_bulk.base_url, &no_bulk.token, &["a@x"]).await;
    assert_eq!(reply.status, 501, "bulk unsupported");
    assert_eq!(reply.json()["status"], "501");
    assert!(no_bulk.users().await.is_empty());
}

async fn scim_and_proxy() -> (ScimServer, FaultProxy) {
    let scim = support::start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    (scim, proxy)
}

#[tokio::test]
async fn proxy_forwards_and_scripts_status_faults() {
    let (scim, proxy) = scim_and_proxy().await;
    let users_url = format!("{}/Users", proxy.url);
    let reply = send("GET", &users_url, Some(&scim.token), None)
        .await
        .expect("request");
    assert_eq!(reply.status, 200);

    proxy.inject("POST", "/Bulk", Fault::throttled("7"));
    proxy.inject("POST", "/Bulk", Fault::html(503));
    let first = bulk(&proxy.url, &scim.token, &["a@example.com"]).await;
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("7"));
    let second = bulk(&proxy.url, &scim.token, &["a@example.com"]).await;
    assert_eq!(second.status, 503);
    assert!(second
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(
        scim.users().await.is_empty(),
        "faulted requests are not forwarded"
    );

    let third = bulk(&proxy.url, &scim.token, &["a@example.com"]).await;
    assert_eq!(third.status, 200);
    let location = third.json()["Operations"][0]["location"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        location.starts_with(&proxy.url),
        "locations name the proxy: {location}"
    );
    assert_eq!(scim.users().await.len(), 1);

    assert_eq!(proxy.hits("/Bulk"), 3);
    assert_eq!(proxy.hits_for("GET", "/Users"), 1);
    assert_eq!(proxy.pending_faults(), 0);
    let seen = proxy.requests();
    assert!(seen.iter().all(|r| r.bearer() == Some(scim.token.as_str())));
    assert!(matches!(
        seen[1].fault,
        Some(Fault::Status { code: 429, .. })
    ));
    assert_eq!(
        seen[1].json().expect("bulk body")["Operations"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let unknown = send("GET", &users_url, Some("made-up"), None)
        .await
        .expect("request");
    assert_eq!(unknown.status, 401);
}

#[tokio::test]
async fn proxy_alters_forwarded_bulk_answers() {
    let (scim, proxy) = scim_and_proxy().await;
    proxy.inject("POST", "/Bulk", Fault::DropBulkOps(1));
    let reply = bulk(&proxy.url, &scim.token, &["a@x", "b@x", "c@x"]).await;
    assert_eq!(reply.status, 200);
    let ops = reply.json()["Operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ops.len(), 2, "one result dropped: {ops:?}");
    assert_eq!(ops[1]["bulkId"], "op1");
    assert_eq!(scim.users().await.len(), 3, "all three were applied");

    proxy.inject("POST", "/Bulk", Fault::AppliedButFailed);
    let reply = bulk(&proxy.url, &scim.token, &["d@x"]).await;
    assert_eq!(reply.json()["Operations"][0]["status"], "500");
    assert!(
        support::find_user(&scim.users().await, "d@x").is_some(),
        "applied anyway"
    );

    proxy.inject("POST", "/Bulk", Fault::Truncate);
    let reply = bulk(&proxy.url, &scim.token, &["e@x"]).await;
    assert_eq!(reply.status, 200);
    assert!(
        serde_json::from_slice::<Value>(&reply.body).is_err(),
        "truncated body is not JSON"
    );

    proxy.inject("GET", "/Users", Fault::Unauthorized);
    let reply = send(
        "GET",
        &format!("{}/Users", proxy.url),
        Some(&scim.token),
        None,
    )
    .await
    .expect("request");
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn proxy_resets_and_delays() {
    let (scim, proxy) = scim_and_proxy().await;
    proxy.inject("POST", "/Bulk", Fault::Reset);
    let err = bulk_err(&proxy.url, &scim.token, "a@x", None).await;
    assert!(!err.is_timeout(), "reset, not timeout: {err:?}");
    assert!(
        scim.users().await.is_empty(),
        "a reset request is not forwarded"
    );

    proxy.inject("POST", "/Bulk", Fault::ForwardThenReset);
    bulk_err(&proxy.url, &scim.token, "b@x", None).await;
    assert_eq!(scim.users().await.len(), 1, "forwarded, then reset");

    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::from_secs(2)));
    let err = bulk_err(
        &proxy.url,
        &scim.token,
        "c@x",
        Some(Duration::from_millis(500)),
    )
    .await;
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        scim.users().await.len(),
        2,
        "a delayed request is applied at once"
    );

    let reply = bulk(&proxy.url, &scim.token, &["d@x"]).await;
    assert_eq!(reply.status, 200, "the proxy still serves after faults");
}

async fn bulk_err(url: &str, token: &str, user: &str, timeout: Option<Duration>) -> reqwest::Error {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    let client = builder.build().expect("client");
    let body = support::bulk_create(&[user]);
    match send_with(
        client,
        "POST",
        &format!("{url}/Bulk"),
        Some(token),
        Some(&body),
    )
    .await
    {
        Ok(reply) => panic!("expected a failed request, got HTTP {}", reply.status),
        Err(e) => e,
    }
}

#[tokio::test]
async fn token_endpoints_issue_tokens_the_proxy_accepts() {
    let (scim, proxy) = scim_and_proxy().await;
    proxy.set_token_config(TokenConfig {
        scope: Some("scim".into()),
        expires_in: 120,
        ..TokenConfig::default()
    });
    let config = proxy.token_config();
    let client = support::http_client();
    let oauth = |secret: &str| {
        client.post(proxy.oauth_token_url()).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", config.client_id.as_str()),
            ("client_secret", secret),
            ("scope", "scim"),
        ])
    };
    let denied = oauth("wrong").send().await.expect("token request");
    assert_eq!(denied.status().as_u16(), 401);
    let granted = oauth(&config.client_secret)
        .send()
        .await
        .expect("token request");
    assert_eq!(granted.status().as_u16(), 200);
    let granted: Value =
        serde_json::from_slice(&granted.bytes().await.expect("body")).expect("json");
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], 120);
    let oauth_token = granted["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();

    let users_url = format!("{}/Users", proxy.url);
    let reply = send("GET", &users_url, Some(&oauth_token), None)
        .await
        .expect("request");
    assert_eq!(reply.status, 200, "issued token is accepted");
    assert_eq!(
        proxy
            .requests()
            .last()
            .and_then(|r| r.bearer().map(str::to_string)),
        Some(oauth_token.clone())
    );

    let keys =
        json!({"accessKeyId": config.access_key_id, "accessKeySecret": config.access_key_secret});
    let cxone = send("POST", &proxy.cxone_token_url(), None, Some(&keys))
        .await
        .expect("request");
    assert_eq!(cxone.status, 200);
    let cxone_token = cxone.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let bad_keys = json!({"accessKeyId": config.access_key_id, "accessKeySecret": "nope"});
    let denied = send("POST", &proxy.cxone_token_url(), None, Some(&bad_keys))
        .await
        .expect("request");
    assert_eq!(denied.status, 401);
    assert_eq!(proxy.tokens_issued(), 2);
    let reply = support::bulk_create(&["t@x"]);
    let reply = send(
        "POST",
        &format!("{}/Bulk", proxy.url),
        Some(&cxone_token),
        Some(&reply),
    )
    .await
    .expect("bulk");
    assert_eq!(reply.status, 200);
    assert_eq!(scim.users().await.len(), 1);

    proxy.expire_tokens();
    let reply = send("GET", &users_url, Some(&oauth_token), None)
        .await
        .expect("request");
    assert_eq!(reply.status, 401, "expired token");

    proxy.set_token_mode(TokenMode::Html);
    let html = send("POST", &proxy.cxone_token_url(), None, Some(&keys))
        .await
        .expect("request");
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    proxy.set_token_mode(TokenMode::ServerError);
    let failed = send("POST", &proxy.cxone_token_url(), None, Some(&keys))
        .await
        .expect("request");
    assert_eq!(failed.status, 500);
    assert_eq!(proxy.tokens_issued(), 2);
}

#[tokio::test]
async fn moto_answers_and_dies_with_its_guard() {
    let moto = support::start_moto().await;
    let reply = send("GET", &format!("{}/moto-api/", moto.endpoint), None, None)
        .await
        .expect("moto");
    assert_eq!(reply.status, 200);
    assert!(moto
        .env()
        .iter()
        .any(|(k, v)| *k == "AWS_ENDPOINT_URL" && *v == moto.endpoint));
    let pid = moto.pid();
    assert!(alive(pid));
    drop(moto);
    assert!(!alive(pid), "moto_server pid {pid} survived its guard");
}
