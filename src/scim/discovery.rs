//! Discovery of the service provider's limits (`GET /ServiceProviderConfig`, RFC 7643 §5).

use serde_json::Value;

/// What the engine needs to know about the service provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Whether `/Bulk` can be used; false means one request per resource.
    pub bulk: bool,
    /// Operations per BulkRequest (the smaller of the server's and the configured limit).
    pub max_operations: usize,
    /// Bytes per BulkRequest.
    pub max_payload_size: usize,
    /// Whether `filter` works (`filter.supported`; assumed when the server does not say).
    pub filter: bool,
}

/// Payload limit assumed when the server does not say (1 MiB, a common default).
pub const DEFAULT_MAX_PAYLOAD: usize = 1_048_576;

impl ProviderLimits {
    /// Limits for a server without Bulk (or without a ServiceProviderConfig).
    pub fn without_bulk(max_operations: usize) -> Self {
        Self {
            bulk: false,
            max_operations: max_operations.max(1),
            max_payload_size: DEFAULT_MAX_PAYLOAD,
            filter: true,
        }
    }

    /// Reads a ServiceProviderConfig document; `configured_max` caps what the server advertises.
    pub fn from_config(doc: &Value, configured_max: usize) -> Self {
        let bulk = &doc["bulk"];
        let number = |v: &Value| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        };
        let flag = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
            _ => None,
        };
        let supported = flag(&bulk["supported"]).unwrap_or(false);
        let server_max = number(&bulk["maxOperations"]).filter(|n| *n > 0);
        let max_operations = server_max
            .map_or(configured_max, |n| (n as usize).min(configured_max))
            .max(1);
        let max_payload_size = number(&bulk["maxPayloadSize"])
            .filter(|n| *n > 0)
            .map_or(DEFAULT_MAX_PAYLOAD, |n| n as usize);
        Self {
            bulk: supported,
            max_operations,
            max_payload_size,
            filter: flag(&doc["filter"]["supported"]).unwrap_or(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configured_maximum_caps_the_server() {
        let doc =
            json!({"bulk": {"supported": true, "maxOperations": 1000, "maxPayloadSize": 1048576}});
        let l = ProviderLimits::from_config(&doc, 50);
        assert_eq!(
            l,
            ProviderLimits {
                bulk: true,
                max_operations: 50,
                max_payload_size: 1_048_576,
                filter: true,
            }
        );
        let doc = json!({"bulk": {"supported": true, "maxOperations": 10, "maxPayloadSize": 2000}});
        assert_eq!(ProviderLimits::from_config(&doc, 50).max_operations, 10);
    }

    #[test]
    fn unsupported_or_missing_bulk_falls_back() {
        assert!(!ProviderLimits::from_config(&json!({"bulk": {"supported": false}}), 50).bulk);
        assert!(!ProviderLimits::from_config(&json!({}), 50).bulk);
        let l = ProviderLimits::from_config(
            &json!({"bulk": {"supported": "true", "maxOperations": "0"}}),
            50,
        );
        assert!(l.bulk);
        assert_eq!(l.max_operations, 50);
        assert_eq!(l.max_payload_size, DEFAULT_MAX_PAYLOAD);
    }

    #[test]
    fn filter_support_is_assumed_unless_denied() {
        assert!(ProviderLimits::from_config(&json!({}), 50).filter);
        let denied = json!({"filter": {"supported": false, "maxResults": 0}});
        assert!(!ProviderLimits::from_config(&denied, 50).filter);
        assert!(
            !ProviderLimits::from_config(&json!({"filter": {"supported": "false"}}), 50).filter
        );
    }
}
