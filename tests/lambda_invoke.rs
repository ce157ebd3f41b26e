//! The function as AWS runs it: the binary under `cargo lambda watch` (the Lambda runtime API
//! emulator), invoked with `cargo lambda invoke` on events/s3-put.json, then on SQS events built
//! from the work queue until it is empty: an S3 → SQS → done round trip against moto and
//! scim2-server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::aws::{bearer_secret, pump, put_object, report_lines, start_stack, BUCKET};
use support::{free_port, list_users, start_scim2_server, venv_bin, ChildGuard, ScimOptions};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// `cargo lambda watch`, stopped by its PID when dropped (and the function it ran after it).
struct Watcher {
    guard: Option<ChildGuard>,
    port: u16,
}

impl Watcher {
    fn start(env: &[(String, String)], dir: &Path) -> Watcher {
        let env_file = dir.join("function.env");
        let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        std::fs::write(&env_file, lines.join("\n") + "\n").expect("env file");
        let port = free_port();
        let mut command = Command::new(venv_bin("cargo-lambda"));
        command
            .args([
                "lambda",
                "watch",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .arg("--env-file")
            .arg(&env_file)
            .current_dir(MANIFEST_DIR)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let guard = ChildGuard::spawn("cargo-lambda-watch", &mut command, &dir.join("watch.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not listen on {port}:\n{}",
                guard.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Watcher {
            guard: Some(guard),
            port,
        }
    }

    /// What the watcher and the function printed so far.
    fn output(&self) -> String {
        self.guard
            .as_ref()
            .map(ChildGuard::output)
            .unwrap_or_default()
    }

    /// `cargo lambda invoke --data-file`: the function's response, or its error.
    fn invoke(&self, data_file: &Path) -> Result<Value, String> {
        let output = Command::new(venv_bin("cargo-lambda"))
            .args([
                "lambda",
                "invoke",
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--output-format",
                "json",
            ])
            .arg("--data-file")
            .arg(data_file)
            .current_dir(MANIFEST_DIR)
            .output()
            .expect("run cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "cargo lambda invoke: {}\n{stdout}\n{stderr}",
                output.status
            ));
        }
        serde_json::from_str(&stdout).map_err(|e| format!("not JSON ({e}): {stdout}\n{stderr}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Its processes (`cargo run`, the function) are found first: killing the watcher by its
        // PID orphans them, and the function then stops as the runtime API is gone.
        let Some(guard) = self.guard.take() else {
            return;
        };
        let descendants = descendants(guard.pid());
        drop(guard); // SIGKILL by PID, then reaped
        let deadline = Instant::now() + Duration::from_secs(10);
        for pid in descendants {
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                // bash's builtin, by PID (pid > 1 always: these are our children).
                let _ = Command::new("bash")
                    .args(["-c", &format!("kill -KILL {pid}")])
                    .status();
            }
        }
    }
}

/// Every process below `pid` (from /proc/PID/task/*/children).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if child > 1 && !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// Whether a process runs (a zombie does not count: it is only waiting to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn write_event(dir: &Path, name: &str, event: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, event.to_string()).expect("event file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_goes_s3_to_sqs_to_done_under_cargo_lambda() {
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env: Vec<(String, String)> = stack
        .moto
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    env.extend(stack.function_env(&[
        ("S3_CYCLE_MAX_OPERATIONS", "3"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ]));
    let watcher = Watcher::start(&env, dir.path());

    let csv = "Email,First Name,Last Name,Status\n\
               a1@example.com,A,One,active\n\
               a2@example.com,A,Two,\n\
               broken@example.com,No Last Name,,active\n\
               a3@example.com,A,Three,active\n\
               a4@example.com,A,Four,active\n\
               a5@example.com,A,Five,active\n\
               a6@example.com,A,Six,active\n\
               a7@example.com,A,Seven,active\n";
    // events/s3-put.json names this key URL-encoded: incoming/hr+export.csv.
    put_object(&stack.sdk, BUCKET, "incoming/hr export.csv", csv).await;
    let s3_event = Path::new(MANIFEST_DIR).join("events/s3-put.json");
    let w = &watcher;
    let response = tokio::task::block_in_place(|| w.invoke(&s3_event))
        .unwrap_or_else(|e| panic!("{e}\nwatcher:\n{}", watcher.output()));
    let object = &response["objects"][0];
    assert_eq!(
        object["source"], "s3://scim-uploads/incoming/hr export.csv",
        "{response}"
    );
    assert_eq!(object["provisioned_now"], 3, "{response}");
    assert_eq!(object["deferred_to_queue"], 4, "{response}");

    let mut n = 0;
    let pumped = pump(
        &stack.sdk,
        &stack.queues,
        Duration::from_secs(2),
        Duration::from_secs(60),
        |event| {
            n += 1;
            let file = write_event(dir.path(), &format!("sqs-{n}.json"), &event);
            async move { tokio::task::block_in_place(|| w.invoke(&file)) }
        },
    )
    .await;
    assert!(
        pumped.errors.is_empty() && pumped.failures.is_empty(),
        "{pumped:?}\n{}",
        watcher.output()
    );
    assert!(
        pumped.invocations >= 1,
        "the deferred rows went through SQS"
    );

    let users = list_users(&scim.base_url, &scim.token).await;
    let mut names: Vec<&str> = users
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    names.sort();
    let expected: Vec<String> = (1..=7).map(|i| format!("a{i}@example.com")).collect();
    assert_eq!(names, expected);
    let report = report_lines(&stack.sdk, BUCKET).await;
    assert!(
        report
            .iter()
            .any(|l| l["status"] == "invalid" && l["row"] == 4),
        "line 4 is reported invalid: {report:?}"
    );
    // Lambda's JSON log format: one JSON object per line, with the invocation summary.
    let logs = watcher.output();
    let summary = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|l| l["message"] == "invocation summary")
        .unwrap_or_else(|| panic!("no JSON summary line in:\n{logs}"));
    assert!(summary["created"].is_u64(), "{summary}");
    assert!(
        !logs.contains("a1@example.com"),
        "emails never reach the logs"
    );
}

#[test]
fn a_missing_setting_stops_the_function_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_scim-bulk-provisioner"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("WORK_QUEUE_URL", "http://127.0.0.1:9/000000000000/q")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line: Value =
        serde_json::from_str(stdout.lines().next().unwrap_or_default()).expect("a JSON log line");
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        line["error"]
            .as_str()
            .unwrap_or_default()
            .contains("SCIM_SECRET_ID is not set"),
        "{line}"
    );
}
