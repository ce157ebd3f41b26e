//! The tenant over HTTP, as a SCIM client sees it.

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::Method;
use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "t0ken";

struct Peer {
    tenant: Tenant,
    client: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Peer {
    async fn start(config: TenantConfig) -> Self {
        let config = TenantConfig {
            bearer_token: TOKEN.into(),
            ..config
        };
        let tenant = Tenant::start(config).await.unwrap();
        Self {
            tenant,
            client: reqwest::Client::new(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.tenant.base_url()))
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/scim+json")
                .body(body.to_string());
        }
        send(request).await
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true,
    })
}

fn header(answer: &Answer, name: reqwest::header::HeaderName) -> &str {
    answer.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn service_provider_config_advertises_the_limits() {
    let peer = Peer::start(TenantConfig::default()).await;
    let spc = peer.call(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(spc.status, 200);
    assert_eq!(header(&spc, CONTENT_TYPE), "application/scim+json");
    let doc = &spc.body;
    assert_eq!(
        doc["bulk"],
        json!({"supported": true, "maxOperations": 50, "maxPayloadSize": 1_048_576})
    );
    assert_eq!(doc["patch"]["supported"], true);
    assert_eq!(doc["filter"], json!({"supported": true, "maxResults": 200}));
    assert_eq!(doc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn users_lifecycle_with_conflict_and_lookup() {
    let peer = Peer::start(TenantConfig::default()).await;
    let created = peer
        .call(Method::POST, "/Users", Some(user("Ada@Example.com")))
        .await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap().to_string();
    let location = header(&created, LOCATION).to_string();
    assert_eq!(location, format!("{}/Users/{id}", peer.tenant.base_url()));
    assert_eq!(created.body["meta"]["location"], location.as_str());

    let duplicate = peer
        .call(Method::POST, "/Users", Some(user("ada@EXAMPLE.com")))
        .await;
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.body["scimType"], "uniqueness");
    assert_eq!(duplicate.body["status"], "409");
    assert_eq!(header(&duplicate, CONTENT_TYPE), "application/scim+json");

    let filter = crate::scim::filter::user_name_eq("ADA@example.com");
    let found = send(
        peer.request(Method::GET, "/Users")
            .query(&[("filter", filter.as_str())]),
    )
    .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["totalResults"], 1);
    assert_eq!(found.body["Resources"][0]["id"], id.as_str());

    let bad = send(
        peer.request(Method::GET, "/Users")
            .query(&[("filter", "userName eq ada")]),
    )
    .await;
    assert_eq!(
        (bad.status, &bad.body["scimType"]),
        (400, &json!("invalidFilter"))
    );

    let path = format!("/Users/{id}");
    let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    let patched = peer.call(Method::PATCH, &path, Some(deactivate)).await;
    assert_eq!(
        (patched.status, &patched.body["active"]),
        (200, &json!(false))
    );
    let replaced = peer
        .call(Method::PUT, &path, Some(user("ada@example.com")))
        .await;
    assert_eq!(
        (replaced.status, &replaced.body["active"]),
        (200, &json!(true))
    );
    let missing = peer.call(Method::PUT, "/Users/nope", Some(user("x"))).await;
    assert_eq!(missing.status, 404);
    let invalid = peer
        .call(Method::POST, "/Users", Some(json!({"active": true})))
        .await;
    assert_eq!(
        (invalid.status, &invalid.body["scimType"]),
        (400, &json!("invalidValue"))
    );
    let not_json = send(peer.request(Method::POST, "/Users").body("{")).await;
    assert_eq!(
        (not_json.status, &not_json.body["scimType"]),
        (400, &json!("invalidSyntax"))
    );

    assert_eq!(peer.call(Method::GET, &path, None).await.status, 200);
    let deleted = peer.call(Method::DELETE, &path, None).await;
    assert_eq!((deleted.status, deleted.body), (204, Value::Null));
    assert_eq!(peer.call(Method::GET, &path, None).await.status, 404);

    let stats = peer.tenant.stats();
    assert_eq!(
        (stats.created, stats.updated, stats.deleted, stats.conflicts),
        (1, 2, 1, 1)
    );
    assert_eq!(stats.searches, 2);
    assert!(peer.tenant.users().is_empty());
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn bulk_answers_every_operation_with_string_statuses() {
    let peer = Peer::start(TenantConfig::default()).await;
    let existing = peer
        .tenant
        .insert_user(user("existing@example.com"))
        .unwrap();
    let request = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
    "Operations": [
        {"method": "POST", "bulkId": "op0", "path": "/Users", "data": user("new@example.com")},
        {"method": "POST", "bulkId": "op1", "path": "/Users", "data": user("EXISTING@example.com")},
        {"method": "PATCH", "bulkId": "op2", "path": format!("/Users/{existing}"),
            "data": {"Operations": [{"op": "replace", "path": "active", "value": false}]}},
        {"method": "PUT", "bulkId": "op3", "path": "/Users/missing", "data": user("x@example.com")},
    ]});
    let answer = peer.call(Method::POST, "/Bulk", Some(request)).await;
    assert_eq!(answer.status, 200);
    let ops = answer.body["Operations"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = ops
        .iter()
        .map(|o| (o["bulkId"].as_str().unwrap(), o["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("op0", "201"),
            ("op1", "409"),
            ("op2", "200"),
            ("op3", "404")
        ]
    );
    let base = peer.tenant.base_url();
    assert!(ops[0]["location"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/Users/")));
    assert_eq!(ops[1]["response"]["scimType"], "uniqueness");
    assert_eq!(ops[2]["location"], format!("{base}/Users/{existing}"));
    assert_eq!(ops[3]["response"]["status"], "404");

    let users = peer.tenant.users();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["active"], false);
    let stats = peer.tenant.stats();
    assert_eq!((stats.bulk_requests, stats.bulk_operations), (1, 4));
    assert_eq!((stats.created, stats.updated, stats.conflicts), (1, 1, 1));
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn oversized_requests_get_413() {
    let config = TenantConfig {
        max_payload_size: 2_000,
        max_operations: 2,
        ..TenantConfig::default()
    };
    let peer = Peer::start(config).await;
    let big = json!({"Operations": [{"method": "POST", "bulkId": "a", "path": "/Users",
        "data": user(&"x".repeat(3_000))}]});
    let answer = peer.call(Method::POST, "/Bulk", Some(big)).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (413, &json!("413"))
    );
    let single = peer
        .call(Method::POST, "/Users", Some(user(&"y".repeat(3_000))))
        .await;
    assert_eq!(single.status, 413);

    let ops: Vec<Value> = (0..3)
        .map(|i| json!({"method": "DELETE", "bulkId": format!("d{i}"), "path": "/Users/x"}))
        .collect();
    let answer = peer
        .call(Method::POST, "/Bulk", Some(json!({"Operations": ops})))
        .await;
    assert_eq!(
        (answer.status, &answer.body["scimType"]),
        (413, &json!("tooMany"))
    );
    assert!(peer.tenant.users().is_empty());
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_and_not_applied() {
    let config = TenantConfig {
        requests_per_second: Some(1.0),
        ..TenantConfig::default()
    };
    let peer = Peer::start(config).await;
    assert_eq!(
        peer.call(Method::GET, "/ServiceProviderConfig", None)
            .await
            .status,
        200
    );
    let answer = peer.call(Method::POST, "/Users", Some(user("ada"))).await;
    assert_eq!(answer.status, 429);
    let retry_after: u64 = header(&answer, RETRY_AFTER).parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(answer.body["status"], "429");
    assert!(peer.tenant.users().is_empty());
    let stats = peer.tenant.stats();
    assert_eq!((stats.requests, stats.throttled, stats.created), (2, 1, 0));
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn injected_failures_are_503_and_not_applied() {
    let config = TenantConfig {
        faults: FaultProfile {
            unavailable: 1.0,
            ..FaultProfile::default()
        },
        ..TenantConfig::default()
    };
    let peer = Peer::start(config).await;
    let answer = peer.call(Method::POST, "/Users", Some(user("ada"))).await;
    assert_eq!((answer.status, header(&answer, RETRY_AFTER)), (503, "1"));
    assert_eq!(answer.body["status"], "503");
    assert!(peer.tenant.users().is_empty());
    assert_eq!(peer.tenant.stats().server_errors, 1);
    peer.tenant.shutdown().await;
}

async fn start_with_faults(faults: FaultProfile) -> Peer {
    let config = TenantConfig {
        bearer_token: TOKEN.into(),
        seed: 11,
        faults,
        ..TenantConfig::default()
    };
    Peer {
        tenant: Tenant::start(config).await.unwrap(),
        client: reqwest::Client::new(),
    }
}

fn bulk_of(names: &[String]) -> Value {
    let ops: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"method": "POST", "bulkId": format!("b{i}"), "path": "/Users", "data": user(n)}))
        .collect();
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops})
}

#[tokio::test]
async fn a_fault_profile_throttles_and_fails_whole_requests_unapplied() {
    for (faults, status) in [
        (
            FaultProfile {
                throttled: 1.0,
                ..FaultProfile::default()
            },
            429,
        ),
        (
            FaultProfile {
                unavailable: 1.0,
                ..FaultProfile::default()
            },
            503,
        ),
    ] {
        let peer = start_with_faults(faults).await;
        let answer = peer.call(Method::POST, "/Users", Some(user("ada"))).await;
        assert_eq!((answer.status, header(&answer, RETRY_AFTER)), (status, "1"));
        assert_eq!(answer.body["status"], status.to_string());
        assert!(peer.tenant.users().is_empty());
        let stats = peer.tenant.stats();
        assert_eq!(
            (stats.throttled, stats.server_errors),
            if status == 429 { (1, 0) } else { (0, 1) }
        );
        peer.tenant.shutdown().await;
    }
}

#[tokio::test]
async fn a_fault_profile_drops_bulk_operations_unapplied_and_unanswered() {
    let faults = FaultProfile {
        dropped: 0.5,
        ..FaultProfile::default()
    };
    assert!(faults.is_active() && !FaultProfile::default().is_active());
    let peer = start_with_faults(faults).await;
    let names: Vec<String> = (0..40).map(|i| format!("u{i}@example.com")).collect();
    let answer = peer
        .call(Method::POST, "/Bulk", Some(bulk_of(&names)))
        .await;
    assert_eq!(answer.status, 200);
    let answered = answer.body["Operations"].as_array().unwrap().len();
    let stats = peer.tenant.stats();
    assert!(answered > 0 && answered < 40, "{answered} of 40 answered");
    assert_eq!(stats.dropped_operations, 40 - answered as u64);
    assert_eq!(
        (stats.created, peer.tenant.users().len()),
        (answered as u64, answered)
    );
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn fault_fractions_are_seeded_and_roughly_kept() {
    let faults = FaultProfile {
        throttled: 0.1,
        unavailable: 0.05,
        dropped: 0.0,
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let peer = start_with_faults(faults).await;
        for _ in 0..400 {
            peer.call(Method::GET, "/Users?count=0", None).await;
        }
        let stats = peer.tenant.stats();
        runs.push((stats.throttled, stats.server_errors));
        peer.tenant.shutdown().await;
    }
    assert_eq!(runs[0], runs[1], "the same seed injects the same faults");
    let (throttled, unavailable) = runs[0];
    assert!(
        (20..=60).contains(&throttled),
        "{throttled} of 400 throttled"
    );
    assert!(
        (5..=40).contains(&unavailable),
        "{unavailable} of 400 unavailable"
    );
}

#[tokio::test]
async fn requests_without_the_token_get_401() {
    let peer = Peer::start(TenantConfig::default()).await;
    let url = format!("{}/Users", peer.tenant.base_url());
    let none = send(peer.client.get(&url)).await;
    assert_eq!((none.status, &none.body["status"]), (401, &json!("401")));
    let wrong = send(peer.client.get(&url).bearer_auth("other")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(peer.tenant.stats().unauthorized, 2);
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn bulk_unsupported_is_501() {
    let config = TenantConfig {
        bulk_supported: false,
        ..TenantConfig::default()
    };
    let peer = Peer::start(config).await;
    let spc = peer.call(Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(spc.body["bulk"]["supported"], false);
    let answer = peer
        .call(Method::POST, "/Bulk", Some(json!({"Operations": []})))
        .await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (501, &json!("501"))
    );
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn unknown_endpoints_and_methods_are_scim_errors() {
    let peer = Peer::start(TenantConfig::default()).await;
    let answer = peer.call(Method::GET, "/Groups", None).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (404, &json!("404"))
    );
    let answer = peer.call(Method::DELETE, "/Users", None).await;
    assert_eq!(
        (answer.status, &answer.body["status"]),
        (405, &json!("405"))
    );
    peer.tenant.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let peer = Peer::start(TenantConfig::default()).await;
    let url = format!("{}/ServiceProviderConfig", peer.tenant.base_url());
    assert_eq!(
        peer.call(Method::GET, "/ServiceProviderConfig", None)
            .await
            .status,
        200
    );
    peer.tenant.shutdown().await;
    assert!(peer.client.get(&url).send().await.is_err());
}

#[test]
fn config_debug_hides_the_token() {
    let text = format!("{:?}", TenantConfig::default());
    assert!(!text.contains("demo-token"), "{text}");
}
