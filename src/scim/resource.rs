//! Per-resource requests (servers without Bulk) and userName lookups: reading their answers.

use serde_json::Value;

use super::http::Reply;
use super::request::{SubReply, SubResult};
use crate::user::user_name_key;

/// Reads the answer to a single-resource request. A 2xx whose body is present but not JSON
/// (an HTML page from a proxy, a cut-off body) is transient: it proves nothing was done.
pub fn read_reply(reply: &Reply) -> SubResult {
    let body: Option<Value> = if reply.body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&reply.body) {
            Ok(v) => Some(v),
            Err(_) if (200..300).contains(&reply.status) => {
                return SubResult::Transient {
                    status: Some(reply.status),
                    reason: "the answer is not JSON".into(),
                    retry_after: reply.retry_after,
                }
            }
            Err(_) => None,
        }
    };
    let location = reply.location.clone().or_else(|| {
        body.as_ref()
            .and_then(|b| b["meta"]["location"].as_str())
            .map(str::to_string)
    });
    SubReply::new(reply.status, location, body).into()
}

impl From<SubReply> for SubResult {
    fn from(reply: SubReply) -> Self {
        SubResult::Reply(reply)
    }
}

/// The result of looking a user up by userName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Exactly one user has this userName (case-insensitively): the resource as listed (it
    /// has an `id`).
    Found(Value),
    /// No user has this userName.
    NotFound,
    /// Several users match case-insensitively; updating one would be a guess.
    Ambiguous(usize),
}

/// Reads a ListResponse to `filter=userName eq "..."`, keeping only exact case-insensitive
/// matches (a server may match loosely).
pub fn read_lookup(body: &[u8], user_name: &str) -> Option<Lookup> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let resources = match &doc["Resources"] {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        _ => return None,
    };
    let wanted = user_name_key(user_name);
    let found: Vec<&Value> = resources
        .iter()
        .filter(|r| r["userName"].as_str().map(user_name_key).as_deref() == Some(wanted.as_str()))
        .filter(|r| r["id"].is_string())
        .collect();
    Some(match found.as_slice() {
        [] => Lookup::NotFound,
        [resource] => Lookup::Found((*resource).clone()),
        many => Lookup::Ambiguous(many.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn reply(status: u16, body: &str, location: Option<&str>) -> Reply {
        Reply {
            status,
            retry_after: None,
            location: location.map(str::to_string),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn created_with_absolute_or_relative_location() {
        for loc in ["https://t.example/scim/v2/Users/u1", "/Users/u1"] {
            match read_reply(&reply(201, "", Some(loc))) {
                SubResult::Reply(r) => assert_eq!(r.resource_id().as_deref(), Some("u1")),
                other => panic!("{other:?}"),
            }
        }
        match read_reply(&reply(
            201,
            r#"{"id": "u2", "meta": {"location": "/Users/u2"}}"#,
            None,
        )) {
            SubResult::Reply(r) => assert_eq!(r.resource_id().as_deref(), Some("u2")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn patch_204_without_body_is_a_reply() {
        assert!(
            matches!(read_reply(&reply(204, "", None)), SubResult::Reply(r) if r.status == 204)
        );
    }

    #[test]
    fn html_success_is_transient_html_error_keeps_its_status() {
        assert!(matches!(
            read_reply(&reply(200, "<html>", None)),
            SubResult::Transient { .. }
        ));
        assert!(
            matches!(read_reply(&reply(502, "<html>", None)), SubResult::Reply(r) if r.status == 502 && r.body.is_none())
        );
    }

    #[test]
    fn lookup_keeps_exact_case_insensitive_matches() {
        let body = json!({"Resources": [
            {"id": "1", "userName": "Ada@Example.com"},
            {"id": "2", "userName": "ada@example.co"},
        ]})
        .to_string();
        assert_eq!(
            read_lookup(body.as_bytes(), "ada@example.com"),
            Some(Lookup::Found(
                json!({"id": "1", "userName": "Ada@Example.com"})
            ))
        );
        assert_eq!(
            read_lookup(br#"{"totalResults": 0}"#, "x"),
            Some(Lookup::NotFound)
        );
        let two =
            json!({"Resources": [{"id": "1", "userName": "a"}, {"id": "2", "userName": "A"}]})
                .to_string();
        assert_eq!(read_lookup(two.as_bytes(), "a"), Some(Lookup::Ambiguous(2)));
        assert_eq!(read_lookup(b"<html>", "a"), None);
    }
}
