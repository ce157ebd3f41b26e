//! EventBridge: reruns of a CSV (scheduled or custom events with `detail` `{"bucket", "key"}`
//! or `{"bucket", "prefix"}` for the newest object under it), S3 "Object Created" events
//! (`detail` `{"bucket": {"name"}, "object": {"key"}}`, keys not URL-encoded), and reconciles
//! (`{"reconcile": true}`: the tenant listed again into the ledger, drift reported; with
//! `"fix": true` and a file named as for a rerun, that file is provisioned afterwards).

use std::time::Instant;

use serde_json::{json, Value};

use super::s3::{process, NewRun, ObjectRef};
use super::{reports, HandlerError, Invocation, State};
use crate::aws::s3::S3Error;
use crate::pipeline::Summary;
use crate::report::ReportLine;
use crate::runs::SyncMode;

/// What the event's detail names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// One object.
    Object(ObjectRef),
    /// The newest object under a prefix.
    Newest { bucket: String, prefix: String },
}

/// Lists the tenant again into the ledger and reports the drift found (masked userNames);
/// changes nothing in the tenant.
async fn reconcile(state: &State, deadline: Instant) -> Result<Value, HandlerError> {
    let listing =
        state
            .engine
            .reconcile(deadline)
            .await
            .map_err(|error| HandlerError::Incomplete {
                origin: "reconcile".into(),
                problem: error.to_string(),
            })?;
    if listing.drift.is_empty() {
        tracing::info!(users = listing.users, "reconciled: no drift");
    } else {
        tracing::warn!(
            users = listing.users,
            drifted = listing.drift.len(),
            sample = ?listing.drift.iter().take(10).collect::<Vec<_>>(),
            "reconciled: managed attributes were changed in the tenant by someone else; the next run of the file sets them back"
        );
    }
    Ok(json!({
        "users": listing.users,
        "ambiguous": listing.ambiguous,
        "drifted": listing.drift.len(),
        "drift_sample": listing.drift.iter().take(10).collect::<Vec<_>>(),
        "requests": listing.requests,
    }))
}

/// Reads the target from `detail`.
pub(super) fn target(detail: &Value) -> Result<Target, HandlerError> {
    let text = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let bucket = text(&detail["bucket"]).or_else(|| text(&detail["bucket"]["name"]));
    let key = text(&detail["key"]).or_else(|| text(&detail["object"]["key"]));
    let version_id = text(&detail["object"]["version-id"]);
    let prefix = detail["prefix"].as_str().map(str::to_string);
    match (bucket, key, prefix) {
        (Some(bucket), Some(key), _) => Ok(Target::Object(ObjectRef { bucket, key, version_id })),
        (Some(bucket), None, Some(prefix)) => Ok(Target::Newest { bucket, prefix }),
        _ => Err(HandlerError::BadEvent(
            "the EventBridge detail must name a \"bucket\" and a \"key\" (or a \"prefix\" to rerun its newest object)".into(),
        )),
    }
}

/// Handles an EventBridge event: provisions the object it names.
pub(super) async fn handle(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    event: Value,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    let detail_type = event["detail-type"].as_str().unwrap_or_default();
    tracing::info!(detail_type, "EventBridge event");
    let detail = &event["detail"];
    if let Some(run_id) = detail.get("approve_run") {
        let run_id = run_id.as_str().ok_or_else(|| {
            HandlerError::BadEvent("approve_run is not a string (a run id)".into())
        })?;
        return super::runs::approve(state, run_id, deadline).await;
    }
    let mut reconciled = None;
    if detail["reconcile"] == Value::Bool(true) {
        let listing = reconcile(state, deadline).await?;
        if detail["fix"] != Value::Bool(true) {
            return Ok(json!({ "reconciled": listing }));
        }
        reconciled = Some(listing);
    }
    let object = match target(detail)? {
        Target::Object(object) => object,
        Target::Newest { bucket, prefix } => {
            let newest = match state.s3.newest_object(&bucket, &prefix).await {
                Ok(newest) => newest,
                Err(error) => return Err(listing_failed(state, invocation, error).await),
            };
            match newest {
                Some(key) => ObjectRef {
                    bucket,
                    key,
                    version_id: None,
                },
                None => {
                    tracing::warn!(
                        bucket,
                        prefix,
                        "no object under the prefix: nothing to rerun"
                    );
                    return Ok(json!({"bucket": bucket, "prefix": prefix, "objects": []}));
                }
            }
        }
    };
    if state.runs.is_none() && mode(detail)? == Some(SyncMode::Full) {
        return Err(HandlerError::BadEvent(
            "\"mode\": \"full\" needs LEDGER_TABLE: full sync deactivates only users the ledger records as managed".into(),
        ));
    }
    let run = match &state.runs {
        Some(runs) => Some(NewRun {
            // The same event delivered twice is the same run: its id names it.
            id: super::runs::run_id(&[
                event["id"].as_str().unwrap_or(&invocation.request_id),
                &object.bucket,
                &object.key,
            ]),
            mode: mode(detail)?.unwrap_or(runs.settings.sync_mode),
        }),
        None => None,
    };
    let result = process(state, invocation, deadline, &object, run, summary).await?;
    Ok(json!({ "objects": [result], "reconciled": reconciled }))
}

/// The sync mode a rerun asks for (`"mode": "full" | "upsert"`), if any.
fn mode(detail: &Value) -> Result<Option<SyncMode>, HandlerError> {
    match detail.get("mode") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => SyncMode::parse(text).map(Some).ok_or_else(|| {
            HandlerError::BadEvent("the detail's mode is neither \"full\" nor \"upsert\"".into())
        }),
        Some(_) => Err(HandlerError::BadEvent(
            "the detail's mode is not a string (\"full\" or \"upsert\")".into(),
        )),
    }
}

/// A prefix that cannot be listed: no object is known, so the report's one `failed` line names
/// the prefix (as the error does) and why.
async fn listing_failed(state: &State, invocation: &Invocation, error: S3Error) -> HandlerError {
    let source = format!("s3://{}/{}", error.bucket, error.key);
    let reason = format!("the newest object under the prefix could not be found: {error}");
    let line = ReportLine::new(source.as_str(), "failed", reason);
    if let Err(written) = reports::write(state, &source, &invocation.request_id, &[line]).await {
        tracing::error!(error = %written, "the failed rerun's report could not be written");
    }
    HandlerError::S3(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_name_an_object_or_a_prefix() {
        let object = |bucket: &str, key: &str, version: Option<&str>| {
            Target::Object(ObjectRef {
                bucket: bucket.into(),
                key: key.into(),
                version_id: version.map(Into::into),
            })
        };
        assert_eq!(
            target(&json!({"bucket": "b", "key": "in/a b.csv"})).unwrap(),
            object("b", "in/a b.csv", None)
        );
        assert_eq!(
            target(&json!({"bucket": "b", "prefix": "incoming/"})).unwrap(),
            Target::Newest {
                bucket: "b".into(),
                prefix: "incoming/".into()
            }
        );
        let s3 =
            json!({"bucket": {"name": "b"}, "object": {"key": "in/x.csv", "version-id": "v1"}});
        assert_eq!(target(&s3).unwrap(), object("b", "in/x.csv", Some("v1")));
        assert!(matches!(
            target(&json!({"key": "k"})),
            Err(HandlerError::BadEvent(_))
        ));
        assert!(matches!(
            target(&json!({"bucket": "b"})),
            Err(HandlerError::BadEvent(_))
        ));
    }
}
