//! Listing the tenant's users page by page (`GET /Users`, RFC 7644 §3.4.2.4): the request of
//! each page and the reading of its ListResponse. Servers may cap `count` far below what is
//! asked, answer fewer items than `itemsPerPage` says, or miscount `totalResults`: the next
//! page starts after the resources actually received, and an empty page ends the listing.

use serde_json::Value;

use super::schema::ENTERPRISE_SCHEMA;

/// Resources asked for per page; servers answer fewer when their maximum is lower.
pub const PAGE_SIZE: u64 = 500;

/// The attributes a listing asks for (`attributes=`): the managed ones and the matching keys.
pub fn list_attributes() -> String {
    format!(
        "userName,externalId,name,emails,displayName,active,title,phoneNumbers,\
         {ENTERPRISE_SCHEMA}:employeeNumber,{ENTERPRISE_SCHEMA}:department"
    )
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The resources on this page.
    pub resources: Vec<Value>,
    /// `totalResults`, when given.
    pub total: Option<u64>,
}

impl Page {
    /// The `startIndex` of the page after this one (which started at `start`), or None when
    /// the listing is complete.
    pub fn next_start(&self, start: u64) -> Option<u64> {
        let received = self.resources.len() as u64;
        if received == 0 {
            return None;
        }
        let next = start + received;
        match self.total {
            Some(total) if next > total => None,
            _ => Some(next),
        }
    }
}

/// Reads a ListResponse page; None if the body is not one.
pub fn read_page(body: &[u8]) -> Option<Page> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let resources = match doc.get("Resources") {
        Some(Value::Array(items)) => items.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return None,
    };
    let number = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    if !doc.is_object() {
        return None;
    }
    Some(Page {
        resources,
        total: doc.get("totalResults").and_then(number),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paging_follows_what_was_received_not_what_was_asked() {
        let page = |n: usize, total: Option<u64>| Page {
            resources: vec![json!({}); n],
            total,
        };
        // A server capping pages at 2 while 5 exist: 1, 3, 5, then done.
        assert_eq!(page(2, Some(5)).next_start(1), Some(3));
        assert_eq!(page(2, Some(5)).next_start(3), Some(5));
        assert_eq!(page(1, Some(5)).next_start(5), None);
        // No total: go on until an empty page.
        assert_eq!(page(2, None).next_start(1), Some(3));
        assert_eq!(page(0, None).next_start(3), None);
        // A total that undercounts does not hide a full page; an empty page always ends.
        assert_eq!(page(0, Some(100)).next_start(1), None);
    }

    #[test]
    fn pages_are_read_leniently() {
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":"3","Resources":[{"id":"a"}]}"#;
        let page = read_page(body).unwrap();
        assert_eq!((page.resources.len(), page.total), (1, Some(3)));
        let empty = read_page(br#"{"totalResults":0}"#).unwrap();
        assert!(empty.resources.is_empty());
        assert!(read_page(b"<html>").is_none());
        assert!(read_page(br#"{"Resources": 3}"#).is_none());
        assert!(list_attributes().contains("employeeNumber"));
    }
}
