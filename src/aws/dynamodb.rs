//! DynamoDB items as the ledger and the runs store read and write them: attribute values from
//! Rust values and back.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// One item: attribute name → value.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// A String attribute.
pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

/// A Number attribute.
pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The String attribute `name`, if the item has one.
pub(crate) fn text(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

/// The Number attribute `name` as a whole number, if the item has one.
pub(crate) fn number(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// The Boolean attribute `name`, if the item has one.
pub(crate) fn boolean(item: &Item, name: &str) -> Option<bool> {
    match item.get(name) {
        Some(AttributeValue::Bool(v)) => Some(*v),
        _ => None,
    }
}
