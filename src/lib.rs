//! scim-bulk-provisioner: provision users into a SCIM 2.0 service in bulk.
//!
//! The engine ([`engine`], [`scim`], [`retry`], [`rate_limit`]) is plain Rust with no AWS types;
//! [`lambda`], [`cli`] and [`aws`] are thin layers around it.

pub mod aws;
pub mod cli;
pub mod engine;
pub mod lambda;
pub mod ledger;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod operation;
pub mod pipeline;
pub mod queue;
pub mod rate_limit;
pub mod report;
pub mod retry;
pub mod runs;
pub mod scim;
pub mod sources;
pub mod tenant;
pub mod user;

/// The tool's name and version, as sent in `User-Agent`.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));
