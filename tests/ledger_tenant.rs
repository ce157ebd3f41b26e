//! The engine with a ledger against SCIM servers that do not enforce RFC 7643 themselves:
//! scim2-server made case-sensitive or without filter support, and the embedded tenant with
//! its quirks. Matching, unchanged users, attribute ownership, PATCH forms and order.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use scim_bulk_provisioner::engine::{Engine, EngineConfig, UpdateMethod};
use scim_bulk_provisioner::ledger::memory::MemoryLedger;
use scim_bulk_provisioner::ledger::Ledger;
use scim_bulk_provisioner::operation::{Operation, Outcome};
use scim_bulk_provisioner::scim::schema::{ENTERPRISE_SCHEMA, USER_SCHEMA};
use scim_bulk_provisioner::tenant::{PatchForm, Quirks, Tenant, TenantConfig};
use scim_bulk_provisioner::user::User;
use serde_json::{json, Value};
use support::engine::{bearer, cycle, engine_with, kinds};
use support::faults::FaultProxy;
use support::{post_user, start_scim2_server, ScimOptions, ScimServer};

fn user(user_name: &str, title: &str) -> User {
    User {
        user_name: user_name.into(),
        email: user_name.to_lowercase(),
        first_name: "Given".into(),
        last_name: "Family".into(),
        active: true,
        display_name: None,
        external_id: None,
        title: Some(title.into()),
        department: None,
        employee_number: None,
        phone: None,
    }
}

fn op(u: User) -> Operation {
    Operation::new(u, "test", None)
}

fn timed(u: User, at: u64) -> Operation {
    op(u).with_source_time(at)
}

fn ledger_engine(
    base_url: &str,
    token: &str,
    config: EngineConfig,
    ledger: Arc<dyn Ledger>,
) -> Engine {
    engine_with(bearer(base_url, token), config).with_ledger(ledger)
}

/// A user as an administrator left it in the tenant, with attributes the HR file does not map.
fn admin_owned(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "userName": user_name,
        "nickName": "Countess",
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [
            {"value": user_name.to_lowercase(), "type": "work", "primary": true},
            {"value": "private@home.example", "type": "home"}
        ],
        "phoneNumbers": [{"value": "+44 7700 900123", "type": "mobile"}],
        "roles": [{"value": "supervisor"}],
        "title": "Agent",
        "active": true,
        ENTERPRISE_SCHEMA: {"manager": {"value": "boss-id"}, "costCenter": "CC-7"}
    })
}

async fn users_named(server: &ScimServer, user_name: &str) -> Vec<Value> {
    server
        .users()
        .await
        .into_iter()
        .filter(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        })
        .collect()
}

fn case_sensitive() -> ScimOptions {
    ScimOptions {
        case_exact_user_name: true,
        ..ScimOptions::default()
    }
}

#[tokio::test]
async fn on_a_case_sensitive_server_case_variants_are_matched_never_duplicated() {
    let server = start_scim2_server(case_sensitive()).await;
    post_user(
        &server.base_url,
        &server.token,
        &admin_owned("Ada@Example.com"),
    )
    .await;
    post_user(
        &server.base_url,
        &server.token,
        &admin_owned("Grace@Example.com"),
    )
    .await;
    let ledger = Arc::new(MemoryLedger::new());
    let engine = ledger_engine(
        &server.base_url,
        &server.token,
        EngineConfig::default(),
        ledger,
    );
    let mut grace = user("grace@example.com", "Agent");
    grace.active = false;
    let report = cycle(
        &engine,
        vec![op(user("ada@example.com", "Senior Agent")), op(grace)],
    )
    .await;
    assert_eq!(
        kinds(&report),
        ["updated", "deactivated"],
        "{:?}",
        report.results
    );
    let ada = users_named(&server, "ada@example.com").await;
    assert_eq!(ada.len(), 1, "{ada:?}");
    assert_eq!(ada[0]["title"], "Senior Agent");
    assert_eq!(
        ada[0]["userName"], "Ada@Example.com",
        "the tenant's spelling is kept"
    );
    let grace = users_named(&server, "grace@example.com").await;
    assert_eq!((grace.len(), &grace[0]["active"]), (1, &json!(false)));

    // The same server without the ledger's matching: the server itself would duplicate Ada
    // (and not find Grace), which is what the ledger prevents.
    let plain = engine_with(
        bearer(&server.base_url, &server.token),
        EngineConfig::default(),
    );
    let report = cycle(&plain, vec![op(user("ada@example.com", "Senior Agent"))]).await;
    assert_eq!(kinds(&report), ["created"]);
    assert_eq!(users_named(&server, "ada@example.com").await.len(), 2);
}

#[tokio::test]
async fn the_embedded_tenant_made_case_sensitive_is_matched_too() {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: "t".into(),
        quirks: Quirks {
            case_exact_user_names: true,
            refused_patch: None,
        },
        ..TenantConfig::default()
    })
    .await
    .unwrap();
    tenant.insert_user(admin_owned("Alan@Example.com")).unwrap();
    let ledger = Arc::new(MemoryLedger::new());
    let engine = ledger_engine(&tenant.base_url(), "t", EngineConfig::default(), ledger);
    let mut alan = user("ALAN@example.com", "Agent");
    alan.active = false;
    let report = cycle(
        &engine,
        vec![op(alan), op(user("new@example.com", "Agent"))],
    )
    .await;
    assert_eq!(kinds(&report), ["deactivated", "created"]);
    let users = tenant.users();
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(users[0]["active"], false);
    tenant.shutdown().await;
}

#[tokio::test]
async fn without_filter_support_the_ledger_is_the_only_lookup() {
    let server = start_scim2_server(ScimOptions {
        filter_supported: false,
        ..case_sensitive()
    })
    .await;
    post_user(
        &server.base_url,
        &server.token,
        &admin_owned("Bob@Example.com"),
    )
    .await;
    let proxy = FaultProxy::in_front_of(&server);
    let ledger = Arc::new(MemoryLedger::new());
    let engine = ledger_engine(&proxy.url, &server.token, EngineConfig::default(), ledger);
    let report = cycle(&engine, vec![op(user("bob@example.com", "Lead"))]).await;
    assert_eq!(kinds(&report), ["updated"], "{:?}", report.results);
    assert_eq!(users_named(&server, "bob@example.com").await.len(), 1);
    let filtered = proxy
        .requests()
        .iter()
        .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("filter")))
        .count();
    assert_eq!(
        filtered, 0,
        "no filter is sent to a server that says it has none"
    );
}

async fn admin_attributes_survive(method: UpdateMethod) {
    let server = start_scim2_server(ScimOptions::default()).await;
    post_user(
        &server.base_url,
        &server.token,
        &admin_owned("Ada@Example.com"),
    )
    .await;
    let config = EngineConfig {
        update_method: method,
        ..EngineConfig::default()
    };
    let engine = ledger_engine(
        &server.base_url,
        &server.token,
        config,
        Arc::new(MemoryLedger::new()),
    );
    let mut ada = user("ada@example.com", "Team Lead");
    ada.last_name = "Lovelace".into();
    ada.phone = Some("+44 20 7946 0000".into());
    ada.department = Some("Analytics".into());
    let report = cycle(&engine, vec![op(ada)]).await;
    assert_eq!(
        kinds(&report),
        ["updated"],
        "{method:?}: {:?}",
        report.results
    );
    let stored = users_named(&server, "ada@example.com").await.remove(0);
    // What the file manages changed...
    assert_eq!(stored["title"], "Team Lead", "{method:?}: {stored}");
    assert_eq!(stored["name"]["familyName"], "Lovelace", "{method:?}");
    assert_eq!(
        stored[ENTERPRISE_SCHEMA]["department"], "Analytics",
        "{method:?}"
    );
    let phones = stored["phoneNumbers"].as_array().unwrap();
    assert!(
        phones
            .iter()
            .any(|p| p["value"] == "+44 20 7946 0000" && p["type"] == "work"),
        "{method:?}: {stored}"
    );
    // ...and what the administrator set is still there.
    assert_eq!(stored["userName"], "Ada@Example.com", "{method:?}");
    assert_eq!(stored["nickName"], "Countess", "{method:?}: {stored}");
    let emails = stored["emails"].as_array().unwrap();
    assert!(
        emails.iter().any(|e| e["value"] == "private@home.example"),
        "{method:?}: {stored}"
    );
    assert!(
        phones.iter().any(|p| p["value"] == "+44 7700 900123"),
        "{method:?}: {stored}"
    );
    assert_eq!(
        stored["roles"][0]["value"], "supervisor",
        "{method:?}: {stored}"
    );
    assert_eq!(
        stored[ENTERPRISE_SCHEMA]["manager"]["value"], "boss-id",
        "{method:?}: {stored}"
    );
    assert_eq!(
        stored[ENTERPRISE_SCHEMA]["costCenter"], "CC-7",
        "{method:?}"
    );
}

#[tokio::test]
async fn admin_owned_attributes_survive_a_put_update() {
    admin_attributes_survive(UpdateMethod::Put).await;
}

#[tokio::test]
async fn admin_owned_attributes_survive_a_patch_update() {
    admin_attributes_survive(UpdateMethod::Patch).await;
}

#[tokio::test]
async fn a_rerun_of_unchanged_users_writes_nothing() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&server);
    let users: Vec<User> = (0..30)
        .map(|i| user(&format!("u{i}@example.com"), "Agent"))
        .collect();
    let first = ledger_engine(
        &proxy.url,
        &server.token,
        EngineConfig::default(),
        Arc::new(MemoryLedger::new()),
    );
    let report = cycle(&first, users.iter().cloned().map(op).collect()).await;
    assert_eq!(kinds(&report), ["created"; 30]);
    // Another process, with no memory: it lists the tenant and finds everyone as the file says.
    proxy.clear_log();
    let second = ledger_engine(
        &proxy.url,
        &server.token,
        EngineConfig::default(),
        Arc::new(MemoryLedger::new()),
    );
    let report = cycle(&second, users.iter().cloned().map(op).collect()).await;
    assert_eq!(kinds(&report), ["unchanged"; 30]);
    let writes: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // Reads: the ServiceProviderConfig and one page of the listing.
    assert!(proxy.requests().len() <= 2, "{:?}", proxy.requests().len());
}

#[tokio::test]
async fn a_refused_patch_form_is_not_sent_again_and_the_other_is_remembered() {
    for refused in [PatchForm::Path, PatchForm::Value] {
        let tenant = Tenant::start(TenantConfig {
            bearer_token: "t".into(),
            quirks: Quirks {
                case_exact_user_names: false,
                refused_patch: Some(refused),
            },
            ..TenantConfig::default()
        })
        .await
        .unwrap();
        for name in ["a@example.com", "b@example.com", "c@example.com"] {
            tenant.insert_user(user(name, "Agent").to_scim()).unwrap();
        }
        let ledger = Arc::new(MemoryLedger::new());
        let config = EngineConfig {
            update_method: UpdateMethod::Patch,
            ..EngineConfig::default()
        };
        let engine = ledger_engine(&tenant.base_url(), "t", config.clone(), ledger.clone());
        let leaver = |name: &str| {
            let mut u = user(name, "Agent");
            u.active = false;
            op(u)
        };
        let report = cycle(
            &engine,
            vec![leaver("a@example.com"), op(user("b@example.com", "Lead"))],
        )
        .await;
        assert_eq!(
            kinds(&report),
            ["deactivated", "updated"],
            "{refused:?}: {:?}",
            report.results
        );
        let first_patches = tenant.stats().requests;
        // The next deactivation goes straight to the form that works, even in a new process
        // (the ledger remembers it).
        let engine = ledger_engine(&tenant.base_url(), "t", config, ledger);
        let report = cycle(&engine, vec![leaver("c@example.com")]).await;
        assert_eq!(kinds(&report), ["deactivated"], "{refused:?}");
        let users = tenant.users();
        assert!(users
            .iter()
            .filter(|u| u["userName"] != "b@example.com")
            .all(|u| u["active"] == false));
        assert_eq!(users[1]["title"], "Lead");
        // The ServiceProviderConfig and one PATCH (the tenant is listed in the ledger already):
        // no refused attempt first.
        assert_eq!(tenant.stats().requests - first_patches, 2, "{refused:?}");
        tenant.shutdown().await;
    }
}

#[tokio::test]
async fn an_older_operation_never_overwrites_a_newer_one() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let ledger: Arc<MemoryLedger> = Arc::new(MemoryLedger::new());
    let engine = ledger_engine(
        &server.base_url,
        &server.token,
        EngineConfig::default(),
        ledger.clone(),
    );
    let title = |server: &ScimServer| {
        let server_url = server.base_url.clone();
        let token = server.token.clone();
        async move {
            let users = support::list_users(&server_url, &token).await;
            users
                .iter()
                .find(|u| u["userName"] == "bob@example.com")
                .map(|u| (u["title"].clone(), u["active"].clone()))
        }
    };
    let bob = |t: &str| user("bob@example.com", t);
    let mut leaver = bob("Agent");
    leaver.active = false;

    // Same batch: the newer one wins whatever the batch order.
    let report = cycle(
        &engine,
        vec![timed(bob("New"), 200), timed(bob("Old"), 100)],
    )
    .await;
    assert_eq!(kinds(&report), ["created", "skipped"]);
    assert_eq!(title(&server).await, Some((json!("New"), json!(true))));

    // A later batch: a stale retry ("Bob active") after a newer file made him a leaver.
    let report = cycle(&engine, vec![timed(leaver.clone(), 300)]).await;
    assert_eq!(kinds(&report), ["deactivated"]);
    let report = cycle(&engine, vec![timed(bob("Stale"), 250)]).await;
    match &report.results[0].outcome {
        Outcome::Skipped { reason } => assert_eq!(reason, "superseded by newer data"),
        other => panic!("{other:?}"),
    }
    assert_eq!(title(&server).await, Some((json!("New"), json!(false))));

    // Two invocations at once, sharing the ledger: the newer lands last, whatever the timing.
    for round in 0..6u64 {
        let base = 1_000 + round * 10;
        let older = ledger_engine(
            &server.base_url,
            &server.token,
            EngineConfig::default(),
            ledger.clone(),
        );
        let newer = ledger_engine(
            &server.base_url,
            &server.token,
            EngineConfig::default(),
            ledger.clone(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let (a, b) = if round % 2 == 0 {
            tokio::join!(
                older.run_cycle(vec![timed(bob(&format!("older {round}")), base)], deadline),
                newer.run_cycle(
                    vec![timed(bob(&format!("newer {round}")), base + 5)],
                    deadline
                ),
            )
        } else {
            let (b, a) = tokio::join!(
                newer.run_cycle(
                    vec![timed(bob(&format!("newer {round}")), base + 5)],
                    deadline
                ),
                older.run_cycle(vec![timed(bob(&format!("older {round}")), base)], deadline),
            );
            (a, b)
        };
        let (a, b) = (a.unwrap(), b.unwrap());
        // The newer one either went (and the older was superseded, or went first) or waits
        // for the older one and goes after it.
        let newer_outcome = &b.results[0].outcome;
        if let Outcome::Deferred { .. } = newer_outcome {
            assert!(
                matches!(a.results[0].outcome, Outcome::Updated { .. }),
                "{a:?}"
            );
            let again = newer
                .run_cycle(
                    vec![timed(bob(&format!("newer {round}")), base + 5)],
                    Instant::now() + Duration::from_secs(30),
                )
                .await
                .unwrap();
            assert!(
                matches!(again.results[0].outcome, Outcome::Updated { .. }),
                "{again:?}"
            );
        }
        assert_eq!(
            title(&server).await.map(|t| t.0),
            Some(json!(format!("newer {round}"))),
            "round {round}: {a:?} / {b:?}"
        );
    }
}

#[tokio::test]
async fn a_user_whose_user_name_changed_is_found_by_external_id_and_renamed() {
    let server = start_scim2_server(ScimOptions::default()).await;
    let mut before = admin_owned("Old.Name@Example.com");
    before["externalId"] = json!("HR-0042");
    post_user(&server.base_url, &server.token, &before).await;
    let ledger = Arc::new(MemoryLedger::new());
    let engine = ledger_engine(
        &server.base_url,
        &server.token,
        EngineConfig::default(),
        ledger.clone(),
    );
    let mut renamed = user("new.name@example.com", "Agent");
    renamed.external_id = Some("HR-0042".into());
    let report = cycle(&engine, vec![op(renamed.clone())]).await;
    assert_eq!(kinds(&report), ["updated"], "{:?}", report.results);
    let users = server.users().await;
    assert_eq!(users.len(), 1, "renamed, not created again: {users:?}");
    assert_eq!(users[0]["userName"], "new.name@example.com");
    assert_eq!(
        users[0]["nickName"], "Countess",
        "what the administrator set is kept"
    );
    // The ledger knows the user by its new userName only; a rerun leaves it unchanged.
    let tenant = scim_bulk_provisioner::ledger::tenant_id(&server.base_url);
    let old = ledger
        .get(&tenant, &["old.name@example.com".into()])
        .await
        .unwrap();
    assert!(old.values().all(|e| e.id.is_none()), "{old:?}");
    let report = cycle(&engine, vec![op(renamed)]).await;
    assert_eq!(kinds(&report), ["unchanged"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_be_read_sends_nothing_and_retries_everything() {
    use scim_bulk_provisioner::ledger::dynamodb::DynamoLedger;
    use support::faults::{AwsCall, AwsFault, AwsFaultProxy};
    let server = start_scim2_server(ScimOptions::default()).await;
    let moto = support::start_moto().await;
    let sdk = support::aws::sdk_config(&moto).await;
    support::aws::create_ledger_table(&sdk, "ledger").await;
    let proxy = AwsFaultProxy::start(&moto.endpoint);
    let through = support::aws::sdk_config_at(&proxy.url).await;
    let ledger = Arc::new(DynamoLedger::new(
        support::aws::dynamodb(&through),
        "ledger",
    ));
    let engine = ledger_engine(
        &server.base_url,
        &server.token,
        EngineConfig::default(),
        ledger,
    );
    // The tenant is listed (first contact), then every read of the users' entries fails.
    proxy.inject_always(AwsCall::target("BatchGetItem"), AwsFault::internal_error());
    let ops = vec![
        op(user("a@example.com", "Agent")),
        op(user("b@example.com", "Agent")),
    ];
    let report = cycle(&engine, ops).await;
    assert_eq!(kinds(&report), ["retry", "retry"], "{:?}", report.results);
    for result in &report.results {
        match &result.outcome {
            Outcome::Retry { reason, .. } => assert!(reason.contains("ledger"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(server.users().await.is_empty(), "nothing was sent");
}
