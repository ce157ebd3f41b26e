//! The ledger port, the same checks against both implementations: in memory, and DynamoDB
//! (moto_server) as the function uses it.

mod support;

use std::sync::Arc;

use scim_bulk_provisioner::ledger::dynamodb::DynamoLedger;
use scim_bulk_provisioner::ledger::memory::MemoryLedger;
use scim_bulk_provisioner::ledger::{Claim, Confirmed, Ledger, Refusal, TenantMeta};

const TENANT: &str = "https://tenant.example/scim/v2";

fn confirmed(key: &str, id: &str) -> Confirmed {
    Confirmed {
        key: key.into(),
        id: id.into(),
        user_name: key.to_uppercase(),
        external_id: Some(format!("x-{key}")),
        fingerprint: Some(format!("fp-{key}")),
        asked: Some(format!("asked-{key}")),
        active: true,
    }
}

/// What every ledger must do.
async fn conformance(ledger: Arc<dyn Ledger>) {
    // Nothing known yet.
    let keys: Vec<String> = (0..250).map(|i| format!("u{i:03}@example.com")).collect();
    assert!(ledger.get(TENANT, &keys).await.unwrap().is_empty());
    assert_eq!(ledger.meta(TENANT).await.unwrap(), TenantMeta::default());

    // Confirm more users than one batch holds; read them back in batches.
    let users: Vec<Confirmed> = keys
        .iter()
        .map(|k| confirmed(k, &format!("id-{k}")))
        .collect();
    ledger.confirm(TENANT, &users, false).await.unwrap();
    let found = ledger.get(TENANT, &keys).await.unwrap();
    assert_eq!(found.len(), 250);
    let first = &found[&keys[0]];
    assert_eq!(first.id.as_deref(), Some("id-u000@example.com"));
    assert_eq!(first.user_name.as_deref(), Some("U000@EXAMPLE.COM"));
    assert_eq!(first.external_id.as_deref(), Some("x-u000@example.com"));
    assert_eq!(first.fingerprint.as_deref(), Some("fp-u000@example.com"));
    assert_eq!(
        (first.active, first.managed, first.applied_at),
        (Some(true), false, None)
    );
    // externalId is a secondary key.
    let externals = ["x-u001@example.com".to_string(), "x-nobody".to_string()];
    let by_external = ledger.find_external(TENANT, &externals).await.unwrap();
    assert_eq!(by_external.len(), 1, "{by_external:?}");
    assert_eq!(by_external["x-u001@example.com"].key, keys[1]);
    assert!(ledger
        .find_external("https://other.example", &externals)
        .await
        .unwrap()
        .is_empty());
    // Another tenant sees none of them.
    assert!(ledger
        .get("https://other.example", &keys)
        .await
        .unwrap()
        .is_empty());

    // Managed once is managed: a later listing (managed false) does not clear it.
    ledger.confirm(TENANT, &users[..1], true).await.unwrap();
    let mut relisted = confirmed(&keys[0], "id-u000@example.com");
    relisted.fingerprint = Some("fp-drifted".into());
    relisted.asked = None;
    relisted.external_id = None;
    ledger.confirm(TENANT, &[relisted], false).await.unwrap();
    let again = &ledger.get(TENANT, &keys[..1]).await.unwrap()[&keys[0]];
    // The user no longer holds its old externalId: it is not found by it.
    let old = ["x-u000@example.com".to_string()];
    assert!(ledger.find_external(TENANT, &old).await.unwrap().is_empty());
    assert!(again.managed);
    assert_eq!(again.fingerprint.as_deref(), Some("fp-drifted"));
    // A listing says nothing of what was asked: the recorded one stays.
    assert_eq!(again.asked.as_deref(), Some("asked-u000@example.com"));
    assert_eq!(again.external_id, None);
    let managed: Vec<String> = ledger
        .all(TENANT)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.managed)
        .map(|e| e.key)
        .collect();
    assert_eq!(managed, [keys[0].clone()]);
    assert_eq!(ledger.all(TENANT).await.unwrap().len(), 250);

    // Claims: newer or equal times win, older ones lose; more claims than one transaction.
    // (Holds end at 0 here: no claim waits for another.)
    let claim = |key: &String, at: u64| Claim {
        key: key.clone(),
        at,
    };
    let claims: Vec<Claim> = keys.iter().map(|k| claim(k, 1_000)).collect();
    assert!(ledger
        .claim(TENANT, &claims, 10, 0)
        .await
        .unwrap()
        .is_empty());
    let mixed: Vec<Claim> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            claim(
                k,
                if i % 3 == 0 {
                    999
                } else {
                    1_000 + i as u64 % 2
                },
            )
        })
        .collect();
    let lost = ledger.claim(TENANT, &mixed, 10, 0).await.unwrap();
    let expected: Vec<(String, Refusal)> = keys
        .iter()
        .step_by(3)
        .map(|k| (k.clone(), Refusal::Superseded))
        .collect();
    assert_eq!(sorted(lost), expected);
    let after = ledger.get(TENANT, &keys).await.unwrap();
    assert_eq!(after[&keys[0]].applied_at, Some(1_000));
    assert_eq!(after[&keys[1]].applied_at, Some(1_001));
    assert_eq!(after[&keys[2]].applied_at, Some(1_000));
    // A claim on an unknown user creates a claim without an id; confirming keeps the claim.
    let fresh = "new@example.com".to_string();
    assert!(ledger
        .claim(TENANT, &[claim(&fresh, 7)], 10, 0)
        .await
        .unwrap()
        .is_empty());
    let claimed = &ledger
        .get(TENANT, std::slice::from_ref(&fresh))
        .await
        .unwrap()[&fresh];
    assert_eq!((claimed.id.as_deref(), claimed.applied_at), (None, Some(7)));
    ledger
        .confirm(TENANT, &[confirmed(&fresh, "id-new")], true)
        .await
        .unwrap();
    let done = &ledger
        .get(TENANT, std::slice::from_ref(&fresh))
        .await
        .unwrap()[&fresh];
    assert_eq!(
        (done.id.as_deref(), done.applied_at, done.managed),
        (Some("id-new"), Some(7), true)
    );

    // Holds: an older claim still holding its user makes a newer one wait; the same
    // operation again may take it over; once released (or expired), the newer one goes.
    let held = "held@example.com".to_string();
    assert!(ledger
        .claim(TENANT, &[claim(&held, 100)], 1_000, 5_000)
        .await
        .unwrap()
        .is_empty());
    let waiting = ledger
        .claim(TENANT, &[claim(&held, 200)], 1_000, 9_000)
        .await
        .unwrap();
    assert_eq!(waiting, [(held.clone(), Refusal::Busy { until: 5_000 })]);
    assert!(ledger
        .claim(TENANT, &[claim(&held, 100)], 1_000, 6_000)
        .await
        .unwrap()
        .is_empty());
    // Settling someone else's claim does nothing, not even record its confirmation.
    let other = (claim(&held, 99), Some(confirmed(&held, "id-other")));
    ledger.settle(TENANT, &[other]).await.unwrap();
    let entry = &ledger
        .get(TENANT, std::slice::from_ref(&held))
        .await
        .unwrap()[&held];
    assert_eq!(entry.id, None);
    let still = ledger
        .claim(TENANT, &[claim(&held, 200)], 2_000, 9_000)
        .await
        .unwrap();
    assert_eq!(still, [(held.clone(), Refusal::Busy { until: 6_000 })]);
    // Settling its own claim records the user as managed and ends the hold.
    let own = (claim(&held, 100), Some(confirmed(&held, "id-held")));
    ledger.settle(TENANT, &[own]).await.unwrap();
    let entry = &ledger
        .get(TENANT, std::slice::from_ref(&held))
        .await
        .unwrap()[&held];
    assert_eq!(
        (entry.id.as_deref(), entry.managed, entry.held_until),
        (Some("id-held"), true, None)
    );
    assert!(ledger
        .claim(TENANT, &[claim(&held, 200)], 2_000, 9_000)
        .await
        .unwrap()
        .is_empty());
    // Past its hold, a claim no longer stops a newer one (a crashed invocation's claim).
    assert!(ledger
        .claim(TENANT, &[claim(&held, 300)], 9_001, 12_000)
        .await
        .unwrap()
        .is_empty());
    // An older one than all of them is stale, held or not.
    let stale = ledger
        .claim(TENANT, &[claim(&held, 250)], 9_002, 12_000)
        .await
        .unwrap();
    assert_eq!(stale, [(held.clone(), Refusal::Superseded)]);

    // Concurrent claims of one user without holds: whatever the order, the newest time ends
    // applied, and the newest claim is always granted.
    let racer = "race@example.com".to_string();
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let ledger = Arc::clone(&ledger);
            let racer = racer.clone();
            let at = 100 + (i * 7) % 16;
            tokio::spawn(async move {
                let claims = [Claim { key: racer, at }];
                (at, ledger.claim(TENANT, &claims, 10, 0).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (at, lost) = task.await.unwrap();
        if lost.is_empty() {
            winners.push(at);
        }
    }
    assert!(
        winners.contains(&115),
        "the newest claim always wins: {winners:?}"
    );
    let racer_entry = &ledger
        .get(TENANT, std::slice::from_ref(&racer))
        .await
        .unwrap()[&racer];
    assert_eq!(racer_entry.applied_at, Some(115));

    // Forgetting keeps the claim, drops the rest.
    ledger
        .forget(TENANT, std::slice::from_ref(&fresh))
        .await
        .unwrap();
    let forgotten = &ledger
        .get(TENANT, std::slice::from_ref(&fresh))
        .await
        .unwrap()[&fresh];
    assert_eq!(
        (
            forgotten.id.as_deref(),
            forgotten.fingerprint.as_deref(),
            forgotten.managed,
            forgotten.applied_at
        ),
        (None, None, false, Some(7))
    );

    // The tenant's meta.
    let meta = TenantMeta {
        listed_at: Some(42),
        patch_form: Some("value".into()),
    };
    ledger.set_meta(TENANT, &meta).await.unwrap();
    assert_eq!(ledger.meta(TENANT).await.unwrap(), meta);
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[tokio::test]
async fn the_memory_ledger_conforms_and_survives_a_restart_through_its_file() {
    conformance(Arc::new(MemoryLedger::new())).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    let ledger = MemoryLedger::open(&path).unwrap();
    ledger
        .confirm(TENANT, &[confirmed("a@example.com", "id-a")], true)
        .await
        .unwrap();
    let claim = Claim {
        key: "a@example.com".into(),
        at: 5,
    };
    ledger.claim(TENANT, &[claim], 10, 0).await.unwrap();
    ledger.save().unwrap();
    let reopened = MemoryLedger::open(&path).unwrap();
    let entry = &reopened
        .get(TENANT, &["a@example.com".into()])
        .await
        .unwrap()["a@example.com"];
    assert_eq!(
        (entry.id.as_deref(), entry.applied_at, entry.managed),
        (Some("id-a"), Some(5), true)
    );

    std::fs::write(&path, b"not json").unwrap();
    let error = MemoryLedger::open(&path).unwrap_err().to_string();
    assert!(error.contains("not a ledger file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_ledger_conforms_on_moto() {
    let moto = support::start_moto().await;
    let sdk = support::aws::sdk_config(&moto).await;
    support::aws::create_ledger_table(&sdk, "ledger").await;
    conformance(Arc::new(DynamoLedger::new(
        support::aws::dynamodb(&sdk),
        "ledger",
    )))
    .await;

    // A missing table is an error naming the table, not a panic.
    let missing = DynamoLedger::new(support::aws::dynamodb(&sdk), "no-such-table");
    let error = missing
        .get(TENANT, &["a".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no-such-table"), "{error}");
}
