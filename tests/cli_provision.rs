//! `provision` against the embedded tenant started in this test process: a real run, a dry run
//! that changes nothing, credential errors that name the field but never the value, and a run
//! that stops midway and still reports everything it knew.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use serde_json::{json, Value};
use support::faults::{Fault, FaultProxy};

const TOKEN: &str = "cli-test-token-5b1f";

const CSV: &str = "\
Work Email,First Name,Last Name,Job Title,Status
ada@example.com,Ada,Lovelace,Analyst,Active
grace@example.com,Grace,Hopper,\"Rear Admiral, Navy\",Active
alan@example.com,Alan,Turing,,Leaver
kat@example.com,Katherine,Johnson,Mathematician,Terminated
zoe@example.com,Zoë,Ångström,Agent,Active
";

struct Setup {
    tenant: Tenant,
    _dir: tempfile::TempDir,
    csv: PathBuf,
    credentials: PathBuf,
}

async fn setup(csv: &str) -> Setup {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: TOKEN.into(),
        ..TenantConfig::default()
    })
    .await
    .unwrap();
    // Grace exists (stale title) and Alan exists (active): one update, one deactivation.
    for (user_name, given, family, title) in [
        ("Grace@Example.com", "Grace", "Hopper", "Ensign"),
        ("alan@example.com", "Alan", "Turing", "Cryptanalyst"),
    ] {
        tenant
            .insert_user(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": user_name,
                "name": {"givenName": given, "familyName": family},
                "emails": [{"value": user_name.to_lowercase(), "type": "work", "primary": true}],
                "title": title,
                "active": true,
            }))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("staff.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let credentials = dir.path().join("scim.json");
    let secret = json!({"base_url": tenant.base_url(), "auth_type": "bearer", "token": TOKEN});
    std::fs::write(&credentials, secret.to_string()).unwrap();
    Setup {
        tenant,
        _dir: dir,
        csv: csv_path,
        credentials,
    }
}

/// Runs the binary off the async runtime, which keeps serving the tenant meanwhile.
async fn run(args: Vec<String>, env: Vec<(&'static str, String)>) -> (i32, String, String) {
    let run = support::run_cli(args, env).await;
    (run.code, run.out, run.err)
}

fn args(items: &[&str], paths: &[&Path]) -> Vec<String> {
    let mut out: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    out.extend(paths.iter().map(|p| p.display().to_string()));
    out
}

fn user<'a>(users: &'a [Value], user_name: &str) -> Option<&'a Value> {
    users.iter().find(|u| {
        u["userName"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(user_name)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_creates_updates_and_deactivates() {
    let s = setup(CSV).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.jsonl");
    let mut argv = args(&["provision", "--csv"], &[&s.csv]);
    argv.extend(args(&["--credentials"], &[&s.credentials]));
    argv.extend(args(&["--report"], &[&report]));
    let (code, out, err) = run(argv, vec![]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("  created                2\n"), "{out}");
    assert!(out.contains("  updated                1\n"), "{out}");
    assert!(out.contains("  deactivated            1\n"), "{out}");
    assert!(out.contains("  skipped                1\n"), "{out}");
    assert!(out.contains("  failed                 0\n"), "{out}");

    let users = s.tenant.users();
    assert_eq!(users.len(), 4, "Katherine never existed and stays absent");
    let ada = user(&users, "ada@example.com").unwrap();
    assert_eq!(ada["name"]["familyName"], "Lovelace");
    assert_eq!(ada["active"], true);
    let grace = user(&users, "grace@example.com").unwrap();
    assert_eq!(grace["title"], "Rear Admiral, Navy");
    // Matched case-insensitively: the tenant's spelling of the userName is kept.
    assert_eq!(grace["userName"], "Grace@Example.com");
    assert_eq!(user(&users, "alan@example.com").unwrap()["active"], false);
    assert_eq!(
        user(&users, "zoe@example.com").unwrap()["name"]["familyName"],
        "Ångström"
    );
    assert!(user(&users, "kat@example.com").is_none());

    let lines = std::fs::read_to_string(&report).unwrap();
    let skipped: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["row"], 5);
    assert_eq!(skipped["user_name"], "kat@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_prints_the_plan() {
    let csv = format!("{CSV}broken-address,No,Body,,Active\n");
    let s = setup(&csv).await;
    let before = s.tenant.users();
    let secret = std::fs::read_to_string(&s.credentials).unwrap();
    // Credentials from the environment this time.
    let env = vec![("SCIM_CREDENTIALS", secret)];
    let argv = args(&["provision", "--dry-run", "--csv"], &[&s.csv]);
    let (code, out, err) = run(argv.clone(), env.clone()).await;
    assert_eq!(
        code, 1,
        "an invalid row makes the exit code 1: {out}\n{err}"
    );
    assert!(out.contains("Dry run: nothing was changed."), "{out}");
    assert!(out.contains("Bulk supported, up to 50 operations"), "{out}");
    for (label, n) in [
        ("create", 2),
        ("update", 1),
        ("deactivate", 1),
        ("skip", 1),
        ("invalid", 1),
    ] {
        let line = format!("  {label:<13}{n:>9}\n");
        assert!(out.contains(&line), "{line:?} not in\n{out}");
    }

    let mut json_args = argv;
    json_args.push("--json".into());
    let (_, out, _) = run(json_args, env).await;
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["create"], 2);
    assert_eq!(plan["update"], 1);
    assert_eq!(plan["unknown"], 0);

    assert_eq!(s.tenant.users(), before, "the dry run changed the tenant");
    let stats = s.tenant.stats();
    assert_eq!(
        (stats.created, stats.updated, stats.bulk_requests),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_credentials_file_exits_2_naming_the_field_not_the_value() {
    let s = setup(CSV).await;
    let bad = s.credentials.with_file_name("bad.json");
    let secret = json!({
        "base_url": s.tenant.base_url(),
        "auth_type": "oauth_client_credentials",
        "client_id": "cli-client",
        "client_secret": "hunter2-very-secret",
    });
    std::fs::write(&bad, secret.to_string()).unwrap();
    let mut argv = args(&["provision", "--csv"], &[&s.csv]);
    argv.extend(args(&["--credentials"], &[&bad]));
    let (code, out, err) = run(argv, vec![]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("token_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(s.tenant.users().len() == 2 && s.tenant.stats().requests == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_exits_2_without_retrying_for_minutes() {
    let s = setup(CSV).await;
    let wrong = s.credentials.with_file_name("wrong.json");
    let secret =
        json!({"base_url": s.tenant.base_url(), "auth_type": "bearer", "token": "not-the-token"});
    std::fs::write(&wrong, secret.to_string()).unwrap();
    let mut argv = args(&["provision", "--csv"], &[&s.csv]);
    argv.extend(args(&["--credentials"], &[&wrong]));
    let (code, out, err) = run(argv, vec![]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_id_reads_the_credentials_from_secrets_manager() {
    let s = setup(CSV).await;
    let moto = support::start_moto().await;
    let sdk = support::aws::sdk_config(&moto).await;
    let secret = std::fs::read_to_string(&s.credentials).unwrap();
    support::aws::create_secret(&sdk, "cli/scim", &secret).await;
    let mut argv = args(
        &["provision", "--secret-id", "cli/scim", "--csv"],
        &[&s.csv],
    );
    argv.push("--json".into());
    let (code, out, err) = run(argv, moto.env()).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN),
        "the token leaked"
    );
    let users = s.tenant.users();
    assert_eq!(users.len(), 4);
    assert!(user(&users, "zoe@example.com").is_some());

    // A secret id that does not exist: a configuration error naming the problem.
    let argv = args(
        &["provision", "--secret-id", "cli/missing", "--csv"],
        &[&s.csv],
    );
    let (code, out, err) = run(argv, moto.env()).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("cli/missing")
            || err.contains("not found")
            || err.contains("ResourceNotFound"),
        "{err}"
    );
}

/// The credentials stop working after the first cycle (the service answers 401 and the token
/// endpoint then refuses the client): the run stops with exit code 2 naming the cause, and the
/// report still holds every line known by then (the invalid row, the skipped leaver of the
/// first cycle) and a `stopped` line saying why and how much was not done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_stops_midway_still_writes_what_it_knows() {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: TOKEN.into(),
        ..TenantConfig::default()
    })
    .await
    .unwrap();
    let proxy = FaultProxy::start(&tenant.base_url(), TOKEN);
    // The first token is issued; every later request for one is refused, as for a client
    // whose secret was revoked during the run.
    proxy.inject("POST", "/oauth/token", Fault::Delay(Duration::ZERO));
    proxy.inject_always("POST", "/oauth/token", Fault::status(401));
    // The first cycle's BulkRequest goes through; the second is answered 401.
    proxy.inject("POST", "/Bulk", Fault::Delay(Duration::ZERO));
    proxy.inject("POST", "/Bulk", Fault::Unauthorized);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("staff.csv");
    std::fs::write(
        &csv,
        "email,first_name,last_name,status\n\
         ada@example.com,Ada,Lovelace,active\n\
         ghost@example.com,Gone,Away,leaver\n\
         nolast@example.com,No,,active\n\
         bob@example.com,Bob,B,active\n\
         cy@example.com,Cy,C,active\n\
         dee@example.com,Dee,D,active\n\
         eve@example.com,Eve,E,active\n",
    )
    .unwrap();
    let credentials = dir.path().join("scim.json");
    let secret = json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": "test-client-secret",
    });
    std::fs::write(&credentials, secret.to_string()).unwrap();
    let report = dir.path().join("report.jsonl");
    let mut argv = args(&["provision", "--quiet", "--batch", "2", "--csv"], &[&csv]);
    argv.extend(args(&["--credentials"], &[&credentials]));
    argv.extend(args(&["--report"], &[&report]));
    let (code, out, err) = run(argv, vec![]).await;

    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains(&report.display().to_string()), "{err}");
    assert!(!err.contains("test-client-secret") && !out.contains("test-client-secret"));
    assert_eq!(
        proxy.pending_faults(),
        1,
        "only the always-refuse rule is left"
    );
    let users = tenant.users();
    assert_eq!(users.len(), 1, "{users:#?}");
    assert!(user(&users, "ada@example.com").is_some());
    assert!(out.contains("  created                1\n"), "{out}");
    assert!(
        out.contains("  not done               4   stopped"),
        "{out}"
    );
    assert!(out.contains("Stopped before the end: "), "{out}");

    let text = std::fs::read_to_string(&report).expect("the report is written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<(&str, Option<u64>)> = lines
        .iter()
        .map(|l| (l["status"].as_str().unwrap(), l["row"].as_u64()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("invalid", Some(4)),
            ("skipped", Some(3)),
            ("stopped", None)
        ],
        "{text}"
    );
    let stopped = &lines[2];
    assert_eq!(stopped["source"], csv.display().to_string());
    let reason = stopped["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the run stopped before the end: ")
            && reason.contains("refused the credentials")
            && reason.contains("4 operation(s) were not done"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_the_same_file_writes_nothing_and_reconcile_finds_drift() {
    let s = setup(CSV).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.json");
    let mut argv = args(&["provision", "--csv"], &[&s.csv]);
    argv.extend(args(&["--credentials"], &[&s.credentials]));
    let with_ledger = |mut argv: Vec<String>| {
        argv.extend(args(&["--ledger"], &[&ledger]));
        argv
    };
    let (code, out, err) = run(with_ledger(argv.clone()), vec![]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("  created                2\n"), "{out}");
    let after_first = s.tenant.stats();

    // With the ledger file, and without it (the tenant is then listed): no write either way.
    for again in [with_ledger(argv.clone()), argv.clone()] {
        let (code, out, err) = run(again, vec![]).await;
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("  unchanged              4\n"), "{out}");
        let stats = s.tenant.stats();
        assert_eq!(
            (stats.created, stats.updated, stats.bulk_operations),
            (
                after_first.created,
                after_first.updated,
                after_first.bulk_operations
            ),
            "a rerun wrote to the tenant"
        );
    }

    // Someone changes Ada's title by hand: reconcile (against the ledger file) says so.
    let mut reconcile = args(&["reconcile", "--credentials"], &[&s.credentials]);
    reconcile.extend(args(&["--json", "--ledger"], &[&ledger]));
    let (code, out, _) = run(reconcile.clone(), vec![]).await;
    assert_eq!(code, 0, "no drift yet: {out}");
    let ada = s
        .tenant
        .users()
        .into_iter()
        .find(|u| u["userName"] == "ada@example.com")
        .unwrap();
    let mut changed = ada.clone();
    changed["title"] = json!("Changed by hand");
    support::put_user(&s.tenant.base_url(), TOKEN, &changed).await;
    let (code, out, _) = run(reconcile, vec![]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["drifted"], 1, "{report}");
    assert!(!out.contains("ada@example.com"), "masked: {out}");
}

/// An HR export streamed in windows (BOM, CRLF, quoted line breaks): 5,000 users, a userName
/// met early and again near the end, an invalid row after quoted line breaks.
struct BigFile {
    text: String,
    /// Lines of the two rows of the duplicated userName, and of the invalid row.
    early: u64,
    late: u64,
    invalid: u64,
}

fn big_file() -> BigFile {
    let mut text = String::from("\u{feff}Work Email,First Name,Last Name,Job Title,Status\r\n");
    let (mut line, mut early, mut late, mut invalid) = (2u64, 0, 0, 0);
    for i in 0..5_000u32 {
        let (email, title) = match i {
            3 => {
                early = line;
                ("Twice@Example.com".to_string(), "Early".to_string())
            }
            4_900 => {
                late = line;
                ("twice@example.com".to_string(), "Late".to_string())
            }
            _ if i % 1_000 == 500 => (format!("user{i}@example.com"), "\"Team\r\nLead\"".into()),
            _ => (format!("user{i}@example.com"), "Agent".to_string()),
        };
        let email = if i == 2_600 {
            invalid = line;
            "not-an-address".to_string()
        } else {
            email
        };
        text.push_str(&format!("{email},F{i},L{i},{title},Active\r\n"));
        line += 1 + u64::from(title.contains('\n'));
    }
    BigFile {
        text,
        early,
        late,
        invalid,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_streamed_in_windows_and_reported_as_if_read_whole() {
    let file = big_file();
    let s = setup(&file.text).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.jsonl");
    // Batches of 50: the queue holds a window of 2,000 operations, so the file's 4,999
    // operations arrive in several windows and the two rows of one userName in different ones.
    let mut argv = args(
        &["provision", "--quiet", "--batch", "50", "--csv"],
        &[&s.csv],
    );
    argv.extend(args(&["--credentials"], &[&s.credentials]));
    argv.extend(args(&["--report"], &[&report]));
    let (code, out, err) = run(argv, vec![]).await;
    assert_eq!(code, 1, "one invalid row: {out}\n{err}");
    assert!(out.contains("  rows read          5,000\n"), "{out}");
    assert!(out.contains("  created            4,998\n"), "{out}");
    assert!(out.contains("  invalid rows           1\n"), "{out}");
    assert!(out.contains("  skipped                1\n"), "{out}");
    let users = s.tenant.users();
    assert_eq!(users.len(), 2 + 4_998, "Grace and Alan were there");
    assert_eq!(user(&users, "twice@example.com").unwrap()["title"], "Late");
    assert_eq!(
        user(&users, "user500@example.com").unwrap()["title"],
        "Team\nLead"
    );

    let text = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<(&str, Option<u64>)> = lines
        .iter()
        .map(|l| (l["status"].as_str().unwrap(), l["row"].as_u64()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("invalid", Some(file.invalid)),
            ("duplicate", Some(file.early))
        ],
        "{text}"
    );
    let by = format!("superseded by line {}", file.late);
    assert!(lines[1]["reason"].as_str().unwrap().contains(&by), "{text}");

    // validate finds the same rows at the same lines.
    let (code, out, _) = run(args(&["validate", "--json", "--csv"], &[&s.csv]), vec![]).await;
    assert_eq!(code, 1);
    let checked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(checked["rows"], 5_000);
    assert_eq!(checked["invalid"][0]["line"], file.invalid);
    assert_eq!(checked["superseded"][0]["line"], file.early);
    assert_eq!(checked["superseded"][0]["reason"], lines[1]["reason"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_plans_a_large_file_window_by_window() {
    let file = big_file();
    let s = setup(&file.text).await;
    let argv = args(&["provision", "--dry-run", "--json", "--csv"], &[&s.csv]);
    let mut argv = argv;
    argv.extend(args(&["--credentials"], &[&s.credentials]));
    let (code, out, err) = run(argv, vec![]).await;
    assert_eq!(code, 1, "one invalid row: {out}\n{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["rows"], 5_000, "{plan}");
    assert_eq!(plan["create"], 4_998, "{plan}");
    assert_eq!(plan["skip"], 1, "{plan}");
    assert_eq!(plan["invalid"], 1, "{plan}");
    let stats = s.tenant.stats();
    assert_eq!((stats.created, stats.bulk_requests), (0, 0));
}
