//! The function's CloudWatch metrics as CloudWatch reads them. The handler runs in a child
//! process (this test binary, running one test) whose stdout is the function's log, with the
//! JSON log format on, against moto and scim2-server (behind the fault proxy, for one 429):
//! an S3 upload, the SQS batches it leads to and an event of no known shape each write exactly
//! one EMF object, on a line of its own, whose values are the invocation's summary; the objects
//! validate against the published EMF schema (tests/fixtures/emf_schema.json) and the spec's
//! rules on target members, and carry no email.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scim_bulk_provisioner::logging::{init_with, LogOptions};
use scim_bulk_provisioner::metrics::{emf_object, MetricsConfig};
use scim_bulk_provisioner::pipeline::Summary;
use serde_json::{json, Value};
use support::aws::{bearer_secret, invoke_counted, pump, put_object, s3_put_event, start_stack};
use support::faults::{Fault, FaultProxy};
use support::hr::{self, Every, Kind, Shape};
use support::{start_scim2_server, ScimOptions};

/// Set in the child's environment: run the invocations instead of spawning.
const CHILD: &str = "METRICS_EMF_CHILD";
/// The file where the child records each invocation (its summary, trigger and times).
const RECORD: &str = "METRICS_EMF_RECORD";
const NAMESPACE: &str = "ScimTests/Metrics";
const FUNCTION: &str = "metrics-test-provisioner";
const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/emf_schema.json"
);

/// Each EMF metric and the summary field it must equal.
const FIELDS: &[(&str, &str)] = &[
    ("Created", "created"),
    ("Updated", "updated"),
    ("Unchanged", "unchanged"),
    ("Deactivated", "deactivated"),
    ("Skipped", "skipped"),
    ("Failed", "failed"),
    ("Retried", "retried"),
    ("Deferred", "deferred"),
    ("Throttled", "throttled"),
    ("Invalid", "invalid"),
    ("Requests", "requests"),
    ("RunsHeld", "held"),
];

#[test]
fn every_invocation_writes_one_emf_object_equal_to_its_summary() {
    if std::env::var_os(CHILD).is_some() {
        return run_invocations();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("invocations.jsonl");
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "every_invocation_writes_one_emf_object_equal_to_its_summary",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env(RECORD, &record)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child ran: {stdout}");

    // Every line holding JSON is one whole object (the log's and the metrics' lines never
    // interleave); the others are the test harness's, which also starts the first line with
    // "test NAME ... " before the test prints.
    let harness = "test every_invocation_writes_one_emf_object_equal_to_its_summary ... ";
    let mut emf = Vec::new();
    let mut log_lines = 0;
    for line in stdout.lines().filter(|l| l.contains('{')) {
        let line = line.strip_prefix(harness).unwrap_or(line);
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one whole JSON object ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        if value.get("_aws").is_some() {
            emf.push((line.to_string(), value));
        } else {
            log_lines += 1;
        }
    }
    assert!(log_lines > 0, "the JSON log shares stdout: {stdout}");
    let invocations: Vec<Value> = std::fs::read_to_string(&record)
        .expect("the child's record")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a recorded invocation"))
        .collect();
    assert!(invocations.len() >= 3, "{invocations:?}");
    assert_eq!(
        emf.len(),
        invocations.len(),
        "one EMF object per invocation:\n{stdout}"
    );

    let verdicts = schema_verdicts(&emf.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>());
    let mut totals = std::collections::BTreeMap::<&str, u64>::new();
    let mut triggers = BTreeSet::new();
    for (((line, object), invocation), verdict) in emf.iter().zip(&invocations).zip(&verdicts) {
        assert_eq!(verdict, "ok", "{line}");
        assert_eq!(spec_problems(object), Vec::<String>::new(), "{line}");
        assert!(!line.contains('@'), "no email in the metrics: {line}");
        let directive = &object["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE, "{line}");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]), "{line}");
        assert_eq!(object["FunctionName"], FUNCTION, "{line}");
        assert_eq!(object["Trigger"], invocation["trigger"], "{line}");
        let summary = &invocation["summary"];
        for (metric, field) in FIELDS {
            assert_eq!(object[*metric], summary[*field], "{metric} in {line}");
        }
        let duration = object["Duration"].as_u64().expect("Duration");
        assert!(
            duration <= invocation["wall_ms"].as_u64().unwrap(),
            "{line}"
        );
        let at = object["_aws"]["Timestamp"].as_u64().expect("Timestamp");
        let (from, to) = (&invocation["started_ms"], &invocation["ended_ms"]);
        assert!(
            from.as_u64().unwrap() <= at && at <= to.as_u64().unwrap(),
            "{line}"
        );
        for (_, field) in FIELDS {
            *totals.entry(field).or_default() += summary[*field].as_u64().expect("a count");
        }
        triggers.insert(invocation["trigger"].as_str().unwrap().to_string());
    }
    // The comparison is not vacuous: the run created people, reported bad rows, met a 429.
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("invocations.jsonl.expected")).expect("expected"),
    )
    .expect("expected counts");
    assert_eq!(totals["created"], expected["created"], "{totals:?}");
    assert_eq!(totals["invalid"], expected["invalid"], "{totals:?}");
    assert!(totals["throttled"] >= 1, "{totals:?}");
    assert_eq!(
        triggers,
        BTreeSet::from(["S3".to_string(), "Sqs".into(), "unknown".into()])
    );
}

/// The child: the invocations, each recorded with its summary.
fn run_invocations() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The function's log as under Lambda's JSON log format: JSON lines on stdout.
        init_with(LogOptions {
            json: true,
            ansi: false,
            stdout: true,
        });
        let scim = start_scim2_server(ScimOptions::default()).await;
        let proxy = FaultProxy::in_front_of(&scim);
        let stack = start_stack(&bearer_secret(&proxy.url, &scim.token)).await;
        let state = stack.state(&[
            ("S3_CYCLE_MAX_OPERATIONS", "10"),
            ("SCIM_MAX_OPERATIONS", "5"),
            ("REPORT_BUCKET", support::aws::BUCKET),
            ("METRICS_NAMESPACE", NAMESPACE),
            ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION),
        ]);
        let (csv, records) = hr::export(&Shape {
            bad_email: Every::of(9, 4),
            no_last_name: Every::of(13, 2),
            leavers: Every::of(11, 5),
            ..Shape::plain(40, "emf")
        });
        put_object(&stack.sdk, support::aws::BUCKET, "incoming/emf.csv", csv).await;
        proxy.inject("POST", "/Bulk", Fault::throttled("0"));

        let recorded = Mutex::new(Vec::new());
        let run = |trigger: &'static str, event: Value, request_id: String| {
            let recorded = &recorded;
            let state = &state;
            async move {
                let started_ms = epoch_ms();
                let started = Instant::now();
                let (result, summary) = invoke_counted(state, event, &request_id).await;
                let wall_ms = started.elapsed().as_millis() as u64;
                recorded.lock().unwrap().push(json!({
                    "trigger": trigger,
                    "summary": summary,
                    "started_ms": started_ms,
                    "ended_ms": epoch_ms(),
                    "wall_ms": wall_ms,
                }));
                result.map_err(|e| e.to_string())
            }
        };
        let s3 = s3_put_event(support::aws::BUCKET, "incoming/emf.csv");
        run("S3", s3, "s3-1".into())
            .await
            .expect("the S3 invocation");
        let mut n = 0;
        let pumped = pump(
            &stack.sdk,
            &stack.queues,
            Duration::from_secs(2),
            Duration::from_secs(120),
            |event| {
                n += 1;
                run("Sqs", event, format!("sqs-{n}"))
            },
        )
        .await;
        assert!(pumped.errors.is_empty(), "{pumped:?}");
        assert!(pumped.invocations >= 1, "the rest went through SQS");
        let unknown = run("unknown", json!({"hello": "world"}), "odd-1".into()).await;
        assert!(unknown.is_err(), "an event of no known shape is an error");

        let path = std::env::var_os(RECORD).expect("RECORD is set");
        let mut file = std::fs::File::create(&path).expect("record file");
        for invocation in recorded.into_inner().unwrap() {
            writeln!(file, "{invocation}").expect("write the record");
        }
        let count = |kind: Kind| records.iter().filter(|r| r.kind == kind).count();
        let expected = json!({"created": count(Kind::Active), "invalid": count(Kind::Invalid)});
        let mut expected_path = path.clone();
        expected_path.push(".expected");
        std::fs::write(expected_path, expected.to_string()).expect("expected counts");
    });
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// The published schema's verdict on each line: "ok", or "invalid: " and the reasons.
fn schema_verdicts(lines: &[String]) -> Vec<String> {
    const SCRIPT: &str = r#"
import json, sys
from jsonschema import Draft7Validator
schema = json.load(open(sys.argv[1], encoding="utf-8"))
Draft7Validator.check_schema(schema)
validator = Draft7Validator(schema)
for line in sys.stdin:
    if line.strip():
        errors = sorted(e.message for e in validator.iter_errors(json.loads(line)))
        print("invalid: " + "; ".join(errors) if errors else "ok")
"#;
    let mut child = Command::new(support::venv_bin("python"))
        .args(["-c", SCRIPT, SCHEMA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let input = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the lines");
    let out = child.wait_with_output().expect("python's answer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(verdicts.len(), lines.len(), "{text}");
    verdicts
}

/// The spec's rules the schema cannot state: every metric's and dimension's target member is
/// on the root (a number, or an array of at most 100 numbers; a string of at most 1024
/// characters), at most 100 metrics per directive, and the document fits a log event.
fn spec_problems(object: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if object.to_string().len() > 256 * 1024 {
        problems.push("larger than a log event".to_string());
    }
    let directives = object["_aws"]["CloudWatchMetrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for directive in &directives {
        let metrics = directive["Metrics"].as_array().cloned().unwrap_or_default();
        if metrics.len() > 100 {
            problems.push(format!("{} metrics", metrics.len()));
        }
        for name in metrics.iter().filter_map(|m| m["Name"].as_str()) {
            let numeric = match &object[name] {
                Value::Number(_) => true,
                Value::Array(values) => values.len() <= 100 && values.iter().all(Value::is_number),
                _ => false,
            };
            if !numeric {
                problems.push(format!("metric {name}: no numeric member {name}"));
            }
        }
        let dimensions = directive["Dimensions"].as_array().cloned();
        for name in dimensions.iter().flatten().flat_map(|set| {
            set.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        }) {
            let text = object[&name].as_str();
            if text.is_none_or(|v| v.len() > 1024) {
                problems.push(format!("dimension {name}: no string member {name}"));
            }
        }
    }
    problems
}

/// The checks above can fail: broken copies of a real object are refused, each for its fault.
#[test]
fn the_schema_and_the_spec_checks_refuse_broken_objects() {
    let object = emf_object(
        &MetricsConfig::default(),
        "S3",
        &Summary {
            created: 3,
            ..Summary::default()
        },
        Duration::from_millis(12),
        SystemTime::now(),
    );
    let mut broken = Vec::new();
    let mut breaking = |change: &dyn Fn(&mut Value)| {
        let mut copy = object.clone();
        change(&mut copy);
        broken.push(copy);
    };
    breaking(&|o| o["_aws"]["Timestamp"] = json!("now"));
    breaking(&|o| {
        o["_aws"]["CloudWatchMetrics"][0]
            .as_object_mut()
            .unwrap()
            .remove("Namespace");
    });
    breaking(&|o| o["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([]));
    breaking(&|o| o["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Fortnights"));
    breaking(&|o| {
        o.as_object_mut().unwrap().remove("_aws");
    });
    let lines: Vec<String> = std::iter::once(&object)
        .chain(&broken)
        .map(Value::to_string)
        .collect();
    let verdicts = schema_verdicts(&lines);
    assert_eq!(verdicts[0], "ok", "{}", lines[0]);
    for (line, verdict) in lines.iter().zip(&verdicts).skip(1) {
        assert!(verdict.starts_with("invalid: "), "{verdict}: {line}");
    }

    assert_eq!(spec_problems(&object), Vec::<String>::new());
    let mut no_member = object.clone();
    no_member.as_object_mut().unwrap().remove("Created");
    assert_eq!(
        spec_problems(&no_member),
        ["metric Created: no numeric member Created"]
    );
    let mut text_value = object.clone();
    text_value["Failed"] = json!("none");
    text_value["FunctionName"] = json!(7);
    assert_eq!(
        spec_problems(&text_value),
        [
            "metric Failed: no numeric member Failed",
            "dimension FunctionName: no string member FunctionName"
        ]
    );
    assert!(Path::new(SCHEMA).is_file());
}
