//! SCIM Bulk (RFC 7644 §3.7): request encoding, chunking under the server's limits, and mapping
//! every result back to its operation by bulkId (or, for PUT/PATCH, by location), never by position.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::discovery::ProviderLimits;
use super::json;
use super::request::{
    id_from_location, parse_status, SubOp, SubReply, SubResult, Verb, BULK_ID_PREFIX,
};
use super::schema::BULK_REQUEST;

/// A BulkRequest body is `HEAD_OPEN BULK_REQUEST HEAD_CLOSE`, the operations, `ENVELOPE_TAIL`.
const HEAD_OPEN: &str = r#"{"schemas":[""#;
const HEAD_CLOSE: &str = r#""],"Operations":["#;
const ENVELOPE_HEAD_LEN: usize = HEAD_OPEN.len() + BULK_REQUEST.len() + HEAD_CLOSE.len();
const ENVELOPE_TAIL: &str = "]}";

/// Serializes one operation of a BulkRequest.
fn encode_op(op: &SubOp, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"method":""#);
    out.extend_from_slice(op.verb.as_str().as_bytes());
    out.extend_from_slice(br#"","bulkId":""#);
    out.extend_from_slice(BULK_ID_PREFIX.as_bytes());
    push_decimal(out, op.key);
    out.extend_from_slice(br#"","path":"#);
    json::push_str(out, &op.path);
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(op.data.as_bytes());
    out.push(b'}');
}

/// The serialized size of one operation inside a BulkRequest, computed without serializing it.
pub fn encoded_len(op: &SubOp) -> usize {
    const FIXED: usize = r#"{"method":"","bulkId":"","path":,"data":}"#.len();
    FIXED
        + op.verb.as_str().len()
        + BULK_ID_PREFIX.len()
        + decimal_digits(op.key)
        + json::str_len(&op.path)
        + op.data.as_bytes().len()
}

/// Appends `n` in decimal (without the formatting machinery: this runs once per operation).
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The BulkRequest body for these operations.
pub fn encode(ops: &[&SubOp]) -> Vec<u8> {
    let size = ENVELOPE_HEAD_LEN
        + ENVELOPE_TAIL.len()
        + ops.iter().map(|op| encoded_len(op) + 1).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    for part in [HEAD_OPEN, BULK_REQUEST, HEAD_CLOSE] {
        out.extend_from_slice(part.as_bytes());
    }
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_op(op, &mut out);
    }
    out.extend_from_slice(ENVELOPE_TAIL.as_bytes());
    out
}

/// Splits operations (by index into `ops`) into requests within maxOperations and maxPayloadSize.
/// An operation too large on its own gets a chunk of its own (the server will answer 413).
pub fn chunk(ops: &[SubOp], limits: &ProviderLimits) -> Vec<Vec<usize>> {
    let envelope = ENVELOPE_HEAD_LEN + ENVELOPE_TAIL.len();
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = envelope;
    for (i, op) in ops.iter().enumerate() {
        let len = encoded_len(op) + 1;
        let full = current.len() >= limits.max_operations || size + len > limits.max_payload_size;
        if full && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            size = envelope;
        }
        current.push(i);
        size += len;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Why a BulkResponse body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BulkParseError {
    /// Not JSON (HTML error page, truncated body).
    #[error("the BulkResponse is not JSON")]
    NotJson,
    /// JSON without an `Operations` array.
    #[error("the BulkResponse has no Operations array")]
    NoOperations,
}

/// Maps each result of a BulkResponse to the sent operation it answers. Results that match no
/// sent operation are ignored; operations with no result, or with conflicting results, come back
/// as transient (retryable), since an upsert is safe to send again.
pub fn parse_response(
    body: &[u8],
    sent: &[&SubOp],
    retry_after: Option<Duration>,
) -> Result<Vec<(usize, SubResult)>, BulkParseError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| BulkParseError::NotJson)?;
    let results = doc["Operations"]
        .as_array()
        .ok_or(BulkParseError::NoOperations)?;
    let by_bulk_id: HashMap<String, usize> = sent.iter().map(|op| (op.bulk_id(), op.key)).collect();
    let by_resource: HashMap<String, usize> = sent
        .iter()
        .filter(|op| op.verb != Verb::Post)
        .filter_map(|op| Some((id_from_location(&op.path)?, op.key)))
        .collect();
    let mut found: HashMap<usize, Option<SubReply>> = HashMap::new();
    for result in results {
        let key = result["bulkId"]
            .as_str()
            .and_then(|id| by_bulk_id.get(id))
            .or_else(|| {
                let loc = result["location"].as_str().or(result["path"].as_str())?;
                by_resource.get(&id_from_location(loc)?)
            });
        let Some(&key) = key else { continue };
        let reply = parse_status(&result["status"]).map(|status| {
            SubReply::new(
                status,
                result["location"].as_str().map(str::to_string),
                result.get("response").filter(|r| r.is_object()).cloned(),
            )
        });
        found
            .entry(key)
            .and_modify(|prev| {
                if prev.as_ref().map(|p| p.status) != reply.as_ref().map(|r| r.status) {
                    *prev = None;
                }
            })
            .or_insert(reply);
    }
    Ok(sent
        .iter()
        .map(|op| {
            let result = match found.remove(&op.key) {
                Some(Some(reply)) => SubResult::Reply(reply),
                Some(None) => SubResult::Transient {
                    status: None,
                    reason: "the BulkResponse gave this operation no status, or conflicting ones"
                        .into(),
                    retry_after,
                },
                None => SubResult::Transient {
                    status: None,
                    reason: "missing from the BulkResponse".into(),
                    retry_after,
                },
            };
            (op.key, result)
        })
        .collect())
}

#[cfg(test)]
mod tests;
