//! CloudWatch Embedded Metric Format (EMF): one JSON object per invocation, carrying the
//! invocation's counts, written to stdout as one line; CloudWatch Logs turns it into metrics
//! (README, "Metrics").
//!
//! Built with serde_json rather than the `metrics_cloudwatch_embedded` crate: that crate is a
//! recorder for the `metrics` facade, installed process-wide and flushed after each invocation,
//! so handlers running side by side in one process (the tests, the chaos run) would share and
//! flush each other's counters. Here the object is made from the invocation's own
//! [`Summary`], which holds counts only: no userName, email or other personal data can reach it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::pipeline::Summary;

/// The namespace when `METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "ScimBulkProvisioner";

/// The function name when `AWS_LAMBDA_FUNCTION_NAME` is unset (local runs, tests).
pub const DEFAULT_FUNCTION_NAME: &str = env!("CARGO_PKG_NAME");

/// The one dimension: a deployment's metrics stay apart from another's in the same namespace,
/// and every metric exists once per deployment (low cardinality: the trigger is a property).
pub const DIMENSION: &str = "FunctionName";

/// The wall time of the invocation, in milliseconds.
pub const DURATION: &str = "Duration";

/// A Count metric: its name and how it is read from an invocation's summary.
pub type CountMetric = (&'static str, fn(&Summary) -> u64);

/// The Count metrics, in the order they are emitted.
pub const COUNTS: &[CountMetric] = &[
    ("Created", |s| s.created),
    ("Updated", |s| s.updated),
    ("Unchanged", |s| s.unchanged),
    ("Deactivated", |s| s.deactivated),
    ("Skipped", |s| s.skipped),
    ("Failed", |s| s.failed),
    ("Retried", |s| s.retried),
    ("Deferred", |s| s.deferred),
    ("Throttled", |s| s.throttled),
    ("Invalid", |s| s.invalid),
    ("Requests", |s| s.requests),
    ("RunsHeld", |s| s.held),
];

/// Where the function's metrics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `METRICS_NAMESPACE`: the CloudWatch namespace.
    pub namespace: String,
    /// `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda): the value of the `FunctionName` dimension.
    pub function_name: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_string(),
            function_name: DEFAULT_FUNCTION_NAME.to_string(),
        }
    }
}

/// Whether CloudWatch accepts `namespace` for custom metrics: 1 to 255 characters among
/// letters, digits and `. - _ / # : space`, not starting with `:` nor with the reserved `AWS/`.
pub fn valid_namespace(namespace: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    (1..=255).contains(&namespace.len())
        && namespace.chars().all(allowed)
        && !namespace.starts_with(':')
        && !namespace.starts_with("AWS/")
}

/// The EMF object of one invocation: `trigger` names what invoked it (a property, not a
/// dimension), `duration` is its wall time, `at` the time of the metrics.
pub fn emf_object(
    config: &MetricsConfig,
    trigger: &str,
    summary: &Summary,
    duration: Duration,
    at: SystemTime,
) -> Value {
    let mut definitions: Vec<Value> = COUNTS
        .iter()
        .map(|(name, _)| json!({"Name": name, "Unit": "Count"}))
        .collect();
    definitions.push(json!({"Name": DURATION, "Unit": "Milliseconds"}));
    let timestamp = at.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0);
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": config.namespace,
                "Dimensions": [[DIMENSION]],
                "Metrics": definitions,
            }],
        }),
    );
    root.insert(DIMENSION.into(), json!(config.function_name));
    root.insert("Trigger".into(), json!(trigger));
    for (name, read) in COUNTS {
        root.insert((*name).into(), json!(read(summary)));
    }
    root.insert(DURATION.into(), json!(millis(duration)));
    Value::Object(root)
}

/// Writes the invocation's EMF object to stdout as one line. `println!` writes the whole line
/// under stdout's lock, the lock the log subscriber also takes for each of its lines (see
/// [`crate::logging`]): the two never interleave within a line. A failed write to stdout
/// panics, as every log line would fail with it: Lambda's stdout is its log pipe.
pub fn emit(config: &MetricsConfig, trigger: &str, summary: &Summary, duration: Duration) {
    let object = emf_object(config, trigger, summary, duration, SystemTime::now());
    println!("{object}");
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_carries_every_count_under_its_own_name() {
        let summary = Summary {
            created: 1,
            updated: 2,
            unchanged: 3,
            deactivated: 4,
            skipped: 5,
            failed: 6,
            retried: 7,
            deferred: 8,
            throttled: 9,
            invalid: 10,
            requests: 11,
            held: 12,
        };
        let config = MetricsConfig {
            namespace: "Team/Provisioning".into(),
            function_name: "prod-provisioner".into(),
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_750_000_000_123);
        let object = emf_object(&config, "Sqs", &summary, Duration::from_millis(4321), at);
        let directive = &object["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(object["_aws"]["Timestamp"], 1_750_000_000_123u64);
        assert_eq!(directive["Namespace"], "Team/Provisioning");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(object["FunctionName"], "prod-provisioner");
        assert_eq!(object["Trigger"], "Sqs");
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Created",
                "Updated",
                "Unchanged",
                "Deactivated",
                "Skipped",
                "Failed",
                "Retried",
                "Deferred",
                "Throttled",
                "Invalid",
                "Requests",
                "RunsHeld",
                "Duration"
            ]
        );
        for (i, name) in names[..12].iter().enumerate() {
            assert_eq!(object[*name], i as u64 + 1, "{name}");
            assert_eq!(directive["Metrics"][i]["Unit"], "Count", "{name}");
        }
        assert_eq!(object["Duration"], 4321);
        assert_eq!(directive["Metrics"][12]["Unit"], "Milliseconds");
    }

    #[test]
    fn namespaces_cloudwatch_refuses_are_refused() {
        for good in [
            DEFAULT_NAMESPACE,
            "Team/Provisioning",
            "a",
            "HR sync #2: prod",
        ] {
            assert!(valid_namespace(good), "{good}");
        }
        let long = "n".repeat(256);
        for bad in ["", "AWS/Lambda", ":x", "café", "a\nb", long.as_str()] {
            assert!(!valid_namespace(bad), "{bad:?}");
        }
    }
}
