//! The engine against a real SCIM 2.0 server (scim2-server from PyPI).

mod support;

use scim_bulk_provisioner::engine::{Engine, EngineConfig, UpdateMethod};
use scim_bulk_provisioner::operation::{Operation, Outcome};
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use scim_bulk_provisioner::user::User;
use serde_json::Value;
use support::engine::{bearer, cycle, engine_with, kinds};
use support::{list_users, start_scim2_server, ScimOptions};

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
