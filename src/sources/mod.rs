//! Input sources: CSV files and SQS producer messages, validated into [`crate::user::User`]s.
//!
//! Both share [`fields`]: header/key matching with HR-export aliases and per-row validation.
//! File-level problems ([`FileError`], [`MessageError`]) stop a source; row-level ones
//! ([`RowError`]) are reported for that row while the others go on.

pub mod check;
pub mod csv;
pub mod fields;
pub mod last_lines;
pub mod message;
pub mod rows;
pub mod stream;

pub use self::csv::{CsvSource, FileError, Row};

pub use self::fields::{canonical_field, validate, Field, RowError, MAX_FIELD_BYTES};
pub use self::last_lines::{last_lines_by_user, LastLines};
pub use self::message::{parse_message, MessageError, MAX_MESSAGE_BYTES};
pub use self::rows::{fate, RowFate};
