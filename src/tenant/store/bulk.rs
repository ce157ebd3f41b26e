//! SCIM Bulk (RFC 7644 §3.7): a BulkRequest applied operation by operation, in order.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::{ScimError, Store, BULK_RESPONSE_SCHEMA};

impl Store {
    /// Processes a BulkRequest (RFC 7644 §3.7) in order and returns the BulkResponse; more than
    /// `max_operations` operations is a 413 for the whole request.
    pub fn bulk(&mut self, request: &Value, max_operations: usize) -> Result<Value, ScimError> {
        let ops = request
            .get("Operations")
            .and_then(Value::as_array)
            .ok_or_else(|| ScimError::invalid_syntax("A BulkRequest needs an Operations array"))?;
        if ops.len() > max_operations {
            return Err(ScimError::new(
                413,
                Some("tooMany"),
                format!(
                    "The number of operations ({}) exceeds maxOperations ({max_operations})",
                    ops.len()
                ),
            ));
        }
        let fail_on_errors = match request.get("failOnErrors") {
            None | Some(Value::Null) => None,
            // 0 would stop before the first operation; read it as "stop at the first error".
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ScimError::invalid_syntax("failOnErrors must be a non-negative integer")
            })?),
        }
        .map(|n| n.max(1));
        let mut created: HashMap<String, String> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut results = Vec::with_capacity(ops.len());
        let mut errors: u64 = 0;
        for op in ops {
            let (result, failed) = self.bulk_op(op, &mut created, &mut seen);
            errors += u64::from(failed);
            results.push(result);
            if fail_on_errors.is_some_and(|n| errors >= n) {
                break;
            }
        }
        Ok(json!({"schemas": [BULK_RESPONSE_SCHEMA], "Operations": results}))
    }

    /// One operation of a BulkRequest and whether it failed; `created` maps the bulkIds of
    /// earlier POSTs to ids, `seen` holds the POST bulkIds met so far.
    fn bulk_op(
        &mut self,
        op: &Value,
        created: &mut HashMap<String, String>,
        seen: &mut HashSet<String>,
    ) -> (Value, bool) {
        let method = op["method"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let bulk_id = op["bulkId"].as_str();
        let mut result = json!({ "method": method });
        if let Some(b) = bulk_id {
            result["bulkId"] = json!(b);
        }
        let outcome = self.bulk_apply(&method, bulk_id, op, created, seen);
        let failed = outcome.is_err();
        match outcome {
            Ok((status, location)) => {
                result["status"] = json!(status.to_string());
                result["location"] = json!(location);
            }
            Err((error, location)) => {
                result["status"] = json!(error.status.to_string());
                result["response"] = error.to_json();
                if let Some(location) = location {
                    result["location"] = json!(location);
                }
            }
        }
        (result, failed)
    }

    /// Runs one bulk operation: its status and location, or the error and (for an existing
    /// resource) its location.
    fn bulk_apply(
        &mut self,
        method: &str,
        bulk_id: Option<&str>,
        op: &Value,
        created: &mut HashMap<String, String>,
        seen: &mut HashSet<String>,
    ) -> Result<(u16, String), (ScimError, Option<String>)> {
        let path = op["path"]
            .as_str()
            .ok_or_else(|| (ScimError::invalid_syntax("The operation has no path"), None))?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let id = match segments.as_slice() {
            ["Users"] => None,
            ["Users", id] => match id.strip_prefix("bulkId:") {
                Some(reference) => Some(created.get(reference).cloned().ok_or_else(|| {
                    let detail = format!("bulkId {reference} does not name an earlier POST");
                    (ScimError::invalid_value(detail), None)
                })?),
                None => Some((*id).to_string()),
            },
            _ => {
                let detail = format!("No resource endpoint at {path}");
                return Err((ScimError::new(404, None, detail), None));
            }
        };
        let data = &op["data"];
        let Some(id) = id else {
            if method != "POST" {
                let detail = format!("{method} is not allowed on /Users");
                return Err((ScimError::invalid_syntax(detail), None));
            }
            let bulk_id = bulk_id.ok_or_else(|| {
                (
                    ScimError::invalid_syntax("bulkId is required for POST"),
                    None,
                )
            })?;
            if !seen.insert(bulk_id.to_string()) {
                let detail = format!("bulkId {bulk_id} is used twice");
                return Err((ScimError::invalid_value(detail), None));
            }
            let id = self.insert(data).map_err(|e| (e, None))?;
            created.insert(bulk_id.to_string(), id.clone());
            return Ok((201, self.location(&id)));
        };
        let location = self.location(&id);
        let fail = |e| (e, Some(location.clone()));
        let status = match method {
            "PUT" => self.replace(&id, data).map(|_| 200),
            "PATCH" => self.patch(&id, data).map(|_| 200),
            "DELETE" => self.delete(&id).map(|()| 204),
            _ => Err(ScimError::invalid_syntax(format!(
                "Method {method:?} is not allowed on a resource"
            ))),
        }
        .map_err(fail)?;
        Ok((status, location))
    }
}
