//! The engine against a real SCIM 2.0 server (scim2-server from PyPI).

mod support;

use scim_bulk_provisioner::engine::{Engine, EngineConfig, UpdateMethod};
use scim_bulk_provisioner::operation::{Operation, Outcome};
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use scim_bulk_provisioner::user::User;
use serde_json::Value;
use support::engine::{bearer, cycle, engine_with, kinds};
use support::faults::{Fault, FaultProxy};
use support::{create_user, list_users, start_scim2_server, ScimOptions};

fn user(name: &str) -> User {
    User {
        user_name: name.into(),
        email: format!("{}@example.com", name.replace(['"', '\\', ' '], "_")),
        first_name: "Given".into(),
        last_name: format!("Family {name}"),
        active: true,
        display_name: None,
        external_id: None,
        title: Some("Agent".into()),
        department: Some("Support".into()),
        employee_number: None,
        phone: None,
    }
}

fn op(u: User) -> Operation {
    Operation::new(u, "test", None)
}

fn engine(base_url: &str, token: &str, config: EngineConfig) -> Engine {
    engine_with(bearer(base_url, token), config)
}

fn find<'a>(users: &'a [Value], user_name: &str) -> Vec<&'a Value> {
    users
        .iter()
        .filter(|u| u["userName"].as_str().map(str::to_lowercase) == Some(user_name.to_lowercase()))
        .collect()
}

#[tokio::test]
async fn creates_users_with_every_attribute() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let engine = engine(&server.base_url, &server.token, EngineConfig::default());
    let mut ada = user("ada");
    ada.phone = Some("+44 20 7946 0000".into());
    ada.employee_number = Some("E-1".into());
    let ops = vec![op(ada), op(user("grace")), op(user("zoë"))];
    let report = cycle(&engine, ops).await;
    assert_eq!(kinds(&report), ["created", "created", "created"]);
    assert_eq!(report.stats.bulk_requests, 1);
    let users = list_users(&server.base_url, &server.token).await;
    assert_eq!(users.len(), 3);
    let ada = find(&users, "ada")[0];
    assert_eq!(ada["name"]["familyName"], "Family ada");
    assert_eq!(ada["emails"][0]["value"], "ada@example.com");
    assert_eq!(ada["phoneNumbers"][0]["value"], "+44 20 7946 0000");
    assert_eq!(
        ada["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"],
        "E-1"
    );
    for r in &report.results {
        match &r.outcome {
            Outcome::Created { id } => assert!(!id.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn duplicate_user_name_is_upserted_case_insensitively() {
    let server = start_scim2_server(ScimOptions::default()).await;
    for method in [UpdateMethod::Put, UpdateMethod::Patch] {
        let config = EngineConfig {
            update_method: method,
            ..EngineConfig::default()
        };
        let engine = engine(&server.base_url, &server.token, config);
        let name = format!("Upsert.{method:?}");
        let first = cycle(&engine, vec![op(user(&name))]).await;
        assert_eq!(kinds(&first), ["created"]);
        let mut changed = user(&name.to_uppercase());
        changed.title = Some("Team Lead".into());
        let second = cycle(&engine, vec![op(changed)]).await;
        assert_eq!(
            kinds(&second),
            ["updated"],
            "{method:?}: {:?}",
            second.results
        );
        assert_eq!(second.stats.lookups, 1);
        let users = list_users(&server.base_url, &server.token).await;
        let matches = find(&users, &name);
        assert_eq!(matches.len(), 1, "{method:?}: exactly one user");
        assert_eq!(matches[0]["title"], "Team Lead", "{method:?}");
    }
}

#[tokio::test]
async fn deactivates_existing_users_and_skips_unknown_ones() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let engine = engine(&server.base_url, &server.token, EngineConfig::default());
    assert_eq!(
        kinds(&cycle(&engine, vec![op(user("leaver"))]).await),
        ["created"]
    );
    let mut leaver = user("LEAVER");
    leaver.active = false;
    let mut stranger = user("never-existed");
    stranger.active = false;
    let report = cycle(&engine, vec![op(leaver), op(stranger)]).await;
    assert_eq!(kinds(&report), ["deactivated", "skipped"]);
    let users = list_users(&server.base_url, &server.token).await;
    assert_eq!(find(&users, "leaver")[0]["active"], false);
    assert!(find(&users, "never-existed").is_empty());
    match &report.results[1].outcome {
        Outcome::Skipped { reason } => assert!(reason.contains("nothing to deactivate")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn create_inactive_when_configured() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let config = EngineConfig {
        create_inactive: true,
        ..EngineConfig::default()
    };
    let engine = engine(&server.base_url, &server.token, config);
    let mut newcomer = user("inactive-newcomer");
    newcomer.active = false;
    assert_eq!(
        kinds(&cycle(&engine, vec![op(newcomer.clone())]).await),
        ["created"]
    );
    // Found inactive already: nothing to write.
    assert_eq!(
        kinds(&cycle(&engine, vec![op(newcomer)]).await),
        ["unchanged"]
    );
    let users = list_users(&server.base_url, &server.token).await;
    assert_eq!(find(&users, "inactive-newcomer")[0]["active"], false);
}

#[tokio::test]
async fn lookup_handles_quotes_backslashes_and_non_ascii() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let engine = engine(&server.base_url, &server.token, EngineConfig::default());
    let names = [r#"o"brien"#, r#"back\slash"#, "Ærøskøbing", "名前"];
    let ops: Vec<Operation> = names.iter().map(|n| op(user(n))).collect();
    assert_eq!(kinds(&cycle(&engine, ops).await), ["created"; 4]);
    let again: Vec<Operation> = names.iter().map(|n| op(user(&n.to_uppercase()))).collect();
    let report = cycle(&engine, again).await;
    // Each was found by its upper-cased name; "名前" has no case, so nothing changed for it.
    assert_eq!(
        kinds(&report),
        ["updated", "updated", "updated", "unchanged"],
        "{:?}",
        report.results
    );
    assert_eq!(list_users(&server.base_url, &server.token).await.len(), 4);
}

#[tokio::test]
async fn chunks_follow_max_operations_and_payload_size() {
    let server = start_scim2_server(ScimOptions {
        bulk_max_operations: 7,
        bulk_max_payload_size: 2_500,
        ..ScimOptions::default()
    })
    .await;
    let engine = engine(&server.base_url, &server.token, EngineConfig::default());
    let ops: Vec<Operation> = (0..40).map(|i| op(user(&format!("chunk{i:02}")))).collect();
    let report = cycle(&engine, ops).await;
    assert!(
        kinds(&report).iter().all(|k| *k == "created"),
        "{:?}",
        kinds(&report)
    );
    // 40 users of ~450 bytes: the 4,000-byte limit, not the 7-operation one, sets the chunk size.
    assert!(
        report.stats.bulk_requests > 40 / 7 + 1,
        "{:?}",
        report.stats
    );
    assert_eq!(list_users(&server.base_url, &server.token).await.len(), 40);
}

#[tokio::test]
async fn falls_back_to_one_request_per_user_without_bulk() {
    let server = start_scim2_server(ScimOptions {
        bulk_supported: false,
        ..ScimOptions::default()
    })
    .await;
    let engine = engine(&server.base_url, &server.token, EngineConfig::default());
    let ops: Vec<Operation> = (0..5).map(|i| op(user(&format!("single{i}")))).collect();
    let report = cycle(&engine, ops).await;
    assert_eq!(kinds(&report), ["created"; 5]);
    assert_eq!(report.stats.bulk_requests, 0);
    let mut again = user("SINGLE0");
    again.title = Some("Changed".into());
    let mut gone = user("single1");
    gone.active = false;
    let report = cycle(&engine, vec![op(again), op(gone)]).await;
    assert_eq!(
        kinds(&report),
        ["updated", "deactivated"],
        "{:?}",
        report.results
    );
    let users = list_users(&server.base_url, &server.token).await;
    assert_eq!(find(&users, "single0")[0]["title"], "Changed");
    assert_eq!(find(&users, "single1")[0]["active"], false);
}

// scim2-server accepts any userName, even an empty one: the embedded tenant rejects it like CXone.
#[tokio::test]
async fn invalid_user_fails_permanently_and_the_rest_go() {
    let tenant = Tenant::start(TenantConfig::default())
        .await
        .expect("tenant");
    let engine = engine(
        &tenant.base_url(),
        &TenantConfig::default().bearer_token,
        EngineConfig::default(),
    );
    let mut bad = user("bad-one");
    bad.user_name = String::new();
    let report = cycle(&engine, vec![op(user("good-one")), op(bad)]).await;
    assert_eq!(
        kinds(&report),
        ["created", "failed"],
        "{:?}",
        report.results
    );
    match &report.results[1].outcome {
        Outcome::Failed { status, detail, .. } => {
            assert_eq!(*status, Some(400));
            assert!(!detail.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tenant.users().len(), 1);
}

/// A retry resumes where it stopped: the create met 409, the lookup found the user (in the
/// tenant under another case), the update was lost (503). The retry carries the id found and
/// sends the update alone: no POST again, no lookup again, no attempt spent.
#[tokio::test]
async fn a_retried_update_resumes_from_the_id_found_and_does_not_post_again() {
    let server = start_scim2_server(ScimOptions {
        bulk_supported: false,
        ..ScimOptions::default()
    })
    .await;
    let proxy = FaultProxy::in_front_of(&server);
    let engine = engine(&proxy.url, &server.token, EngineConfig::default());
    let existing = create_user(&server.base_url, &server.token, "Ada.Resume").await;
    let id = existing["id"].as_str().expect("id").to_string();
    engine.discover().await.expect("discovery");
    proxy.clear_log();
    proxy.inject("PUT", &format!("/Users/{id}"), Fault::status(503));

    let first = cycle(&engine, vec![op(user("ada.resume"))]).await;
    let requests = |proxy: &FaultProxy| -> Vec<String> {
        proxy
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    assert_eq!(
        requests(&proxy),
        [
            "POST /Users".to_string(),
            "GET /Users".into(),
            format!("PUT /Users/{id}")
        ]
    );
    match &first.results[0].outcome {
        Outcome::Retry {
            status,
            attempt_spent,
            resource_id,
            ..
        } => {
            assert_eq!(*status, Some(503));
            assert!(!attempt_spent, "unavailability waits");
            assert_eq!(resource_id.as_deref(), Some(id.as_str()));
        }
        other => panic!("{other:?}"),
    }
    let again = first.results[0].requeued().expect("re-enqueued");
    assert_eq!(again.resource_id.as_deref(), Some(id.as_str()));
    assert_eq!((again.attempt, again.waits), (0, 1));
    // Through the retry message's JSON, as the queue carries it.
    let again: Operation = serde_json::from_str(&serde_json::to_string(&again).unwrap()).unwrap();

    proxy.clear_log();
    let second = cycle(&engine, vec![again]).await;
    assert_eq!(kinds(&second), ["updated"]);
    assert_eq!(
        requests(&proxy),
        [format!("GET /Users/{id}"), format!("PUT /Users/{id}")],
        "the retry fetches and updates the user it found: no create, no lookup"
    );
    let users = list_users(&server.base_url, &server.token).await;
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0]["userName"], "Ada.Resume",
        "the tenant's spelling is kept"
    );
    assert_eq!(users[0]["title"], "Agent");
}

/// A carried id is a hint: a 404 on it (the user was deleted and made again) or a resource
/// of another user (a recycled id, a forged message) falls back to a lookup by userName; the
/// other user is not touched, nothing fails, and no create is sent for a user that exists.
#[tokio::test]
async fn a_carried_id_that_is_gone_or_names_another_user_falls_back_to_a_lookup() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&server);
    let engine = engine(&proxy.url, &server.token, EngineConfig::default());
    let grace = create_user(&server.base_url, &server.token, "Grace.Hint").await;
    let grace_id = grace["id"].as_str().expect("id").to_string();
    for name in ["Linus.Gone", "Alan.Other"] {
        create_user(&server.base_url, &server.token, name).await;
    }
    let hinted = |name: &str, id: &str| {
        let mut op = op(user(name));
        op.resource_id = Some(id.to_string());
        op
    };
    let ops = vec![
        hinted("grace.hint", &grace_id),
        hinted("linus.gone", "no-such-id"),
        hinted("alan.other", &grace_id),
        // A leaver whose id is gone and who is nowhere else: nothing to deactivate.
        {
            let mut leaver = hinted("nobody.left", "no-such-id-either");
            leaver.user.active = false;
            leaver
        },
    ];
    let report = cycle(&engine, ops).await;
    assert_eq!(kinds(&report), ["updated", "updated", "updated", "skipped"]);
    let seen = proxy.requests();
    let posted_users = seen
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Users"))
        .count();
    let bulk_posts: usize = seen
        .iter()
        .filter(|r| r.path.ends_with("/Bulk"))
        .filter_map(|r| r.json())
        .map(|b| {
            b["Operations"].as_array().map_or(0, |ops| {
                ops.iter().filter(|o| o["method"] == "POST").count()
            })
        })
        .sum();
    assert_eq!((posted_users, bulk_posts), (0, 0), "no create was sent");
    let users = list_users(&server.base_url, &server.token).await;
    assert_eq!(users.len(), 3);
    let grace = find(&users, "grace.hint")[0];
    assert_eq!(grace["id"], grace_id.as_str());
    assert_eq!(
        grace["userName"], "Grace.Hint",
        "not renamed by another's hint"
    );
    assert_eq!(grace["name"]["familyName"], "Family grace.hint");
    for name in ["linus.gone", "alan.other"] {
        assert_eq!(find(&users, name)[0]["title"], "Agent", "{name}");
    }
}
