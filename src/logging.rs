//! Log output through `tracing`: JSON lines under Lambda's JSON log format, plain text otherwise.
//!
//! Personal data: log emails and userNames only through [`crate::mask::mask_email`], never a
//! whole user, message body or secret.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Where and how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// One JSON object per line (CloudWatch's JSON log format) instead of text.
    pub json: bool,
    /// Colours in text output (terminals only).
    pub ansi: bool,
    /// Write to stdout (Lambda) rather than stderr (CLI, whose stdout carries results).
    pub stdout: bool,
}

/// Installs the global subscriber for the command-line tool: text on stderr (coloured on a
/// terminal) or JSON lines; level from `RUST_LOG`, else info.
pub fn init(json: bool) {
    init_with(LogOptions {
        json,
        ansi: !json && std::io::stderr().is_terminal(),
        stdout: false,
    });
}

/// Installs the global subscriber for the Lambda function: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`,
/// else text without colours or timestamps (CloudWatch adds them); level from `RUST_LOG`, else
/// `AWS_LAMBDA_LOG_LEVEL`, else info.
pub fn init_lambda() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    init_with(LogOptions {
        json,
        ansi: false,
        stdout: true,
    });
}

/// Installs the global subscriber; a second call (tests) leaves the first one in place.
pub fn init_with(options: LogOptions) {
    let filter = EnvFilter::new(filter_directives(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(options.ansi);
    let installed = match (options.json, options.stdout) {
        (true, true) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        (true, false) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .try_init(),
        // CloudWatch stamps every text line itself.
        (false, true) => builder.without_time().try_init(),
        (false, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    // Already installed (several tests in one process): the first subscriber stays.
    drop(installed);
}

/// The filter: `RUST_LOG` when set, else Lambda's level (`FATAL` has no tracing level: `error`),
/// else `info`.
fn filter_directives(rust_log: Option<&str>, lambda_level: Option<&str>) -> String {
    if let Some(directives) = rust_log.map(str::trim).filter(|d| !d.is_empty()) {
        return directives.to_string();
    }
    match lambda_level
        .map(|l| l.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some(level @ ("trace" | "debug" | "info" | "warn" | "error")) => level.to_string(),
        Some("fatal") => "error".to_string(),
        _ => "info".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_then_the_lambda_level_then_info() {
        assert_eq!(
            filter_directives(Some("scim=debug"), Some("ERROR")),
            "scim=debug"
        );
        assert_eq!(filter_directives(Some(" "), Some("DEBUG")), "debug");
        assert_eq!(filter_directives(None, Some("FATAL")), "error");
        assert_eq!(filter_directives(None, Some("verbose")), "info");
        assert_eq!(filter_directives(None, None), "info");
    }
}
