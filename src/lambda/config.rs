//! The function's settings, read from its environment (README, "Function environment").

use std::time::Duration;

use crate::engine::{EngineConfig, UpdateMethod};
use crate::metrics::{self, MetricsConfig};
use crate::retry::{parse_duration, RetryPolicy, DEFAULT_MAX_AGE, MAX_DELAY};
use crate::runs::guard::GuardLimits;
use crate::runs::SyncMode;
use crate::scim::http::Timeouts;

/// Why the environment does not describe a usable function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is not set; it is required")]
    Missing(&'static str),
    /// A variable's value cannot be used.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value (settings only: no variable read here holds a secret).
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
}

/// Everything the function reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionConfig {
    /// `SCIM_SECRET_ID`: Secrets Manager id or ARN of the credentials.
    pub secret_id: String,
    /// `WORK_QUEUE_URL`: the queue consumed, and where work is re-enqueued.
    pub queue_url: String,
    /// `REPORT_BUCKET`: where reports go (None: the source object's bucket).
    pub report_bucket: Option<String>,
    /// `LEDGER_TABLE`: the DynamoDB table of the ledger (None: no ledger, no state).
    pub ledger_table: Option<String>,
    /// Runs, full sync and the deactivation guard (with the ledger).
    pub runs: RunSettings,
    /// `MAX_ATTEMPTS`, `MAX_RETRY_AGE`, `RETRY_BASE_SECONDS`, `RETRY_MAX_SECONDS` (the cap is
    /// clamped to 900 s).
    pub retry: RetryPolicy,
    /// `SCIM_MAX_OPERATIONS`: operations per BulkRequest at most.
    pub max_operations: usize,
    /// `SCIM_REQUESTS_PER_MINUTE`: unset or 0 is no fixed rate (adaptive, or unlimited).
    pub requests_per_minute: Option<u32>,
    /// `SCIM_ADAPTIVE_PACING`: without a fixed rate, slow down on 429s the pace causes and
    /// probe back up (the default); false sends unpaced and leaves 429s to the queue's delays.
    pub adaptive_pacing: bool,
    /// `SCIM_CONCURRENCY`: requests in flight at once.
    pub concurrency: usize,
    /// `SCIM_UPDATE_METHOD`: `put` or `patch`.
    pub update_method: UpdateMethod,
    /// `SCIM_CREATE_INACTIVE`: create users that arrive inactive.
    pub create_inactive: bool,
    /// `SECRET_CACHE_SECONDS`: how long the credentials secret is cached.
    pub secret_cache: Duration,
    /// `DEADLINE_MARGIN_SECONDS`: kept free before the invocation's deadline.
    pub deadline_margin: Duration,
    /// `S3_CYCLE_MAX_OPERATIONS`: rows of a file provisioned in the S3 invocation itself.
    pub s3_cycle_max_operations: usize,
    /// `SCIM_TIMEOUT_SECONDS` (the most a request is given), `SCIM_CONNECT_TIMEOUT_SECONDS`.
    pub timeouts: Timeouts,
    /// `SCIM_ADAPTIVE_TIMEOUT`: the request timeout follows the tenant's latency (the default);
    /// false gives every request `SCIM_TIMEOUT_SECONDS`.
    pub adaptive_timeout: bool,
    /// `S3_FORCE_PATH_STYLE=true`: path-style S3 addressing (moto, other local endpoints).
    pub s3_force_path_style: bool,
    /// `METRICS_NAMESPACE` and Lambda's `AWS_LAMBDA_FUNCTION_NAME`: where the EMF metrics go.
    pub metrics: MetricsConfig,
}

impl FunctionConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let max_attempts = env.number(
            "MAX_ATTEMPTS",
            8,
            1,
            "a whole number of attempts, at least 1",
        )?;
        let base = env.number("RETRY_BASE_SECONDS", 2, 0, "a whole number of seconds")?;
        let cap = env.number(
            "RETRY_MAX_SECONDS",
            900,
            0,
            "a whole number of seconds (at most 900 is used)",
        )?;
        let max_age = match env.text("MAX_RETRY_AGE") {
            None => DEFAULT_MAX_AGE,
            Some(v) => parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
                invalid(
                    "MAX_RETRY_AGE",
                    v,
                    "a duration of at least 1 second: whole seconds, or with s, m, h or d (24h)",
                )
            })?,
        };
        let rpm = env.number(
            "SCIM_REQUESTS_PER_MINUTE",
            0,
            0,
            "a whole number of requests per minute (0: no fixed rate)",
        )?;
        Ok(Self {
            secret_id: env.required("SCIM_SECRET_ID")?,
            queue_url: env.required("WORK_QUEUE_URL")?,
            report_bucket: env.text("REPORT_BUCKET"),
            ledger_table: env.text("LEDGER_TABLE"),
            runs: RunSettings::read(&env)?,
            retry: RetryPolicy {
                base: Duration::from_secs(base),
                // SQS cannot delay a message longer than 900 s (README, "Function environment").
                cap: Duration::from_secs(cap).min(MAX_DELAY),
                max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
                max_age,
            },
            max_operations: env.number(
                "SCIM_MAX_OPERATIONS",
                50,
                1,
                "a whole number of operations, at least 1",
            )? as usize,
            requests_per_minute: (rpm > 0).then(|| u32::try_from(rpm).unwrap_or(u32::MAX)),
            adaptive_pacing: env.flag_or("SCIM_ADAPTIVE_PACING", true)?,
            concurrency: env.number(
                "SCIM_CONCURRENCY",
                2,
                1,
                "a whole number of requests, at least 1",
            )? as usize,
            update_method: match env
                .text("SCIM_UPDATE_METHOD")
                .map(|v| v.to_ascii_lowercase())
            {
                None => UpdateMethod::Put,
                Some(v) if v == "put" => UpdateMethod::Put,
                Some(v) if v == "patch" => UpdateMethod::Patch,
                Some(v) => return Err(invalid("SCIM_UPDATE_METHOD", v, "put or patch")),
            },
            create_inactive: env.flag("SCIM_CREATE_INACTIVE")?,
            secret_cache: Duration::from_secs(env.number(
                "SECRET_CACHE_SECONDS",
                300,
                0,
                "a whole number of seconds",
            )?),
            deadline_margin: Duration::from_secs(env.number(
                "DEADLINE_MARGIN_SECONDS",
                10,
                0,
                "a whole number of seconds",
            )?),
            s3_cycle_max_operations: env.number(
                "S3_CYCLE_MAX_OPERATIONS",
                500,
                0,
                "a whole number of operations",
            )? as usize,
            timeouts: Timeouts {
                request: Duration::from_secs(env.number(
                    "SCIM_TIMEOUT_SECONDS",
                    30,
                    1,
                    "a whole number of seconds, at least 1",
                )?),
                connect: Duration::from_secs(env.number(
                    "SCIM_CONNECT_TIMEOUT_SECONDS",
                    5,
                    1,
                    "a whole number of seconds, at least 1",
                )?),
            },
            adaptive_timeout: env.flag_or("SCIM_ADAPTIVE_TIMEOUT", true)?,
            s3_force_path_style: env.flag("S3_FORCE_PATH_STYLE")?,
            metrics: MetricsConfig {
                namespace: match env.text("METRICS_NAMESPACE") {
                    None => metrics::DEFAULT_NAMESPACE.to_string(),
                    Some(v) if metrics::valid_namespace(&v) => v,
                    Some(v) => return Err(invalid("METRICS_NAMESPACE", v, NAMESPACE_EXPECTED)),
                },
                function_name: env
                    .text("AWS_LAMBDA_FUNCTION_NAME")
                    .unwrap_or_else(|| metrics::DEFAULT_FUNCTION_NAME.to_string()),
            },
        })
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_operations: self.max_operations,
            update_method: self.update_method,
            create_inactive: self.create_inactive,
            retry: self.retry.clone(),
            concurrency: self.concurrency,
            requests_per_minute: self.requests_per_minute,
            adaptive_pacing: self.adaptive_pacing,
            timeouts: self.timeouts,
            adaptive_timeout: self.adaptive_timeout,
        }
    }
}

/// `EVENT_BUS_NAME`, `SYNC_MODE`, `MAX_DEACTIVATIONS`, `MAX_DEACTIVATION_PERCENT`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// The bus run events are put on.
    pub event_bus: String,
    /// Whether a file is the whole staff list (an EventBridge rerun may say otherwise).
    pub sync_mode: SyncMode,
    /// The deactivation guard's limits.
    pub guard: GuardLimits,
}

impl RunSettings {
    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let sync_mode = match env.text("SYNC_MODE") {
            None => SyncMode::Upsert,
            Some(v) => {
                SyncMode::parse(&v).ok_or_else(|| invalid("SYNC_MODE", v, "upsert or full"))?
            }
        };
        if sync_mode == SyncMode::Full && env.text("LEDGER_TABLE").is_none() {
            return Err(invalid(
                "SYNC_MODE",
                "full".into(),
                "upsert, unless LEDGER_TABLE is set (full sync deactivates only users the ledger records as managed)",
            ));
        }
        Ok(Self {
            event_bus: env
                .text("EVENT_BUS_NAME")
                .unwrap_or_else(|| "default".into()),
            sync_mode,
            guard: GuardLimits {
                max: env.number(
                    "MAX_DEACTIVATIONS",
                    50,
                    0,
                    "a whole number of deactivations",
                )?,
                percent: env.number(
                    "MAX_DEACTIVATION_PERCENT",
                    10,
                    0,
                    "a whole number of percent",
                )?,
            },
        })
    }
}

const NAMESPACE_EXPECTED: &str =
    "a CloudWatch namespace: up to 255 of A-Z a-z 0-9 . - _ / # : and space, not starting with AWS/";

fn invalid(var: &'static str, value: String, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value,
        expected,
    }
}

/// Typed reads of the variables; blank values count as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn text(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.text(var).ok_or(ConfigError::Missing(var))
    }

    fn number(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        match self.text(var) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(invalid(var, v, expected)),
            },
        }
    }

    fn flag(&self, var: &'static str) -> Result<bool, ConfigError> {
        self.flag_or(var, false)
    }

    /// A true/false variable, `default` when unset.
    fn flag_or(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(var).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(_) => Err(invalid(
                var,
                self.text(var).unwrap_or_default(),
                "true or false",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<FunctionConfig, ConfigError> {
        let mut map: HashMap<String, String> =
            [("SCIM_SECRET_ID", "scim"), ("WORK_QUEUE_URL", "http://q")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        for (k, v) in vars {
            map.insert(k.to_string(), v.to_string());
        }
        FunctionConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[]).unwrap();
        assert_eq!(c.secret_id, "scim");
        assert_eq!(c.report_bucket, None);
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.max_operations, 50);
        assert_eq!(c.requests_per_minute, None);
        assert!(
            c.adaptive_pacing,
            "paced from the first 429 with Retry-After"
        );
        assert!(c.adaptive_timeout);
        assert_eq!(c.concurrency, 2);
        assert_eq!(c.update_method, UpdateMethod::Put);
        assert!(!c.create_inactive);
        assert_eq!(c.secret_cache, Duration::from_secs(300));
        assert_eq!(c.deadline_margin, Duration::from_secs(10));
        assert_eq!(c.runs.event_bus, "default");
        assert_eq!(c.runs.sync_mode, SyncMode::Upsert);
        assert_eq!(
            c.runs.guard,
            GuardLimits {
                max: 50,
                percent: 10
            }
        );
        assert_eq!(c.s3_cycle_max_operations, 500);
        assert_eq!(c.timeouts, Timeouts::default());
        assert!(!c.s3_force_path_style);
        assert_eq!(c.metrics.namespace, "ScimBulkProvisioner");
        assert_eq!(c.metrics.function_name, "scim-bulk-provisioner");
        let e = c.engine_config();
        assert_eq!(e.max_operations, 50);
        assert_eq!(e.retry.max_attempts, 8);
        assert!(e.adaptive_pacing);
        assert!(e.adaptive_timeout);
    }

    #[test]
    fn every_setting_is_read() {
        let c = config(&[
            ("REPORT_BUCKET", " reports "),
            ("MAX_ATTEMPTS", "3"),
            ("RETRY_BASE_SECONDS", "0"),
            ("RETRY_MAX_SECONDS", "5000"),
            ("SCIM_MAX_OPERATIONS", "10"),
            ("SCIM_REQUESTS_PER_MINUTE", "120"),
            ("SCIM_CONCURRENCY", "4"),
            ("SCIM_UPDATE_METHOD", "PATCH"),
            ("SCIM_CREATE_INACTIVE", "true"),
            ("SECRET_CACHE_SECONDS", "0"),
            ("DEADLINE_MARGIN_SECONDS", "3"),
            ("S3_CYCLE_MAX_OPERATIONS", "0"),
            ("SCIM_TIMEOUT_SECONDS", "7"),
            ("SCIM_CONNECT_TIMEOUT_SECONDS", "2"),
            ("S3_FORCE_PATH_STYLE", "TRUE"),
            ("SCIM_ADAPTIVE_PACING", "false"),
            ("SCIM_ADAPTIVE_TIMEOUT", "no"),
            ("METRICS_NAMESPACE", "Team/Provisioning"),
            ("AWS_LAMBDA_FUNCTION_NAME", "prod-provisioner"),
            ("MAX_RETRY_AGE", "36h"),
        ])
        .unwrap();
        assert_eq!(c.metrics.namespace, "Team/Provisioning");
        assert_eq!(c.metrics.function_name, "prod-provisioner");
        assert_eq!(c.retry.max_age, Duration::from_secs(36 * 3600));
        assert_eq!(
            config(&[("MAX_RETRY_AGE", "600")]).unwrap().retry.max_age,
            Duration::from_secs(600)
        );
        assert_eq!(c.report_bucket.as_deref(), Some("reports"));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.base, Duration::ZERO);
        assert_eq!(c.retry.cap, MAX_DELAY, "the cap is clamped to 900 s");
        assert_eq!(c.max_operations, 10);
        assert_eq!(c.requests_per_minute, Some(120));
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.update_method, UpdateMethod::Patch);
        assert!(c.create_inactive);
        assert_eq!(c.secret_cache, Duration::ZERO);
        assert_eq!(c.deadline_margin, Duration::from_secs(3));
        assert_eq!(c.s3_cycle_max_operations, 0);
        assert_eq!(c.timeouts.request, Duration::from_secs(7));
        assert_eq!(c.timeouts.connect, Duration::from_secs(2));
        assert!(c.s3_force_path_style);
        assert!(!c.adaptive_pacing);
        assert!(!c.engine_config().adaptive_pacing);
        assert!(!c.adaptive_timeout);
        assert!(!c.engine_config().adaptive_timeout);
        assert_eq!(
            config(&[("SCIM_REQUESTS_PER_MINUTE", "0")])
                .unwrap()
                .requests_per_minute,
            None
        );
    }

    #[test]
    fn required_variables_are_named() {
        let none = FunctionConfig::from_lookup(|_| None).unwrap_err();
        assert_eq!(none, ConfigError::Missing("SCIM_SECRET_ID"));
        let err = config(&[("WORK_QUEUE_URL", "  ")]).unwrap_err();
        assert_eq!(err.to_string(), "WORK_QUEUE_URL is not set; it is required");
    }

    #[test]
    fn bad_values_name_the_variable_and_what_is_expected() {
        let cases = [
            ("MAX_ATTEMPTS", "0"),
            ("MAX_ATTEMPTS", "many"),
            ("RETRY_BASE_SECONDS", "-1"),
            ("RETRY_MAX_SECONDS", "1.5"),
            ("SCIM_MAX_OPERATIONS", "0"),
            ("SCIM_REQUESTS_PER_MINUTE", "fast"),
            ("SCIM_CONCURRENCY", "0"),
            ("SCIM_UPDATE_METHOD", "post"),
            ("SCIM_CREATE_INACTIVE", "maybe"),
            ("S3_FORCE_PATH_STYLE", "on"),
            ("SCIM_ADAPTIVE_PACING", "sometimes"),
            ("SCIM_ADAPTIVE_TIMEOUT", "maybe"),
            ("SCIM_TIMEOUT_SECONDS", "0"),
            ("METRICS_NAMESPACE", "AWS/Lambda"),
            ("MAX_RETRY_AGE", "0"),
            ("MAX_RETRY_AGE", "a day"),
            ("MAX_RETRY_AGE", "1.5h"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, ConfigError::Invalid { var: v, .. } if v == var),
                "{text}"
            );
            assert!(text.starts_with(var) && text.contains("expected"), "{text}");
        }
    }

    #[test]
    fn run_settings_are_read_and_full_sync_needs_the_ledger() {
        let c = config(&[
            ("LEDGER_TABLE", "ledger"),
            ("SYNC_MODE", "Full"),
            ("EVENT_BUS_NAME", "hr"),
            ("MAX_DEACTIVATIONS", "5"),
            ("MAX_DEACTIVATION_PERCENT", "20"),
        ])
        .unwrap();
        assert_eq!(c.runs.sync_mode, SyncMode::Full);
        assert_eq!(c.runs.event_bus, "hr");
        assert_eq!(
            c.runs.guard,
            GuardLimits {
                max: 5,
                percent: 20
            }
        );
        let error = config(&[("SYNC_MODE", "full")]).unwrap_err().to_string();
        assert!(error.contains("LEDGER_TABLE"), "{error}");
        let error = config(&[("SYNC_MODE", "mirror")]).unwrap_err().to_string();
        assert!(error.contains("upsert or full"), "{error}");
        assert!(config(&[("MAX_DEACTIVATIONS", "-1")]).is_err());
    }
}
