//! SCIM 2.0 protocol client (RFC 7643/7644): credentials, tokens, HTTP, discovery, the wire
//! names and the User encoding, Bulk and per-resource requests. No AWS types here.

pub mod auth;
pub mod bulk;
pub mod credentials;
pub mod discovery;
pub mod filter;
pub mod http;
pub mod json;
pub mod list;
pub mod managed;
pub mod patch;
pub mod request;
pub mod resource;
pub mod schema;
pub mod user;
