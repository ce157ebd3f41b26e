//! The command line: commands, their options and their help texts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const MAIN_EXAMPLES: &str = "\
Examples:
  scim-bulk-provisioner demo
  scim-bulk-provisioner validate --csv staff.csv
  scim-bulk-provisioner provision --csv staff.csv --credentials scim.json --dry-run
  SCIM_CREDENTIALS=\"$(cat scim.json)\" scim-bulk-provisioner provision --csv staff.csv --report failures.jsonl

Exit codes: 0 all done; 1 some rows failed or were invalid; 2 usage or configuration error.
Under AWS Lambda (AWS_LAMBDA_RUNTIME_API set) the same binary runs as the function instead.";

/// Provision users into a SCIM 2.0 service (NICE CXone or any RFC 7643/7644 server) in bulk.
#[derive(Debug, Parser)]
#[command(name = "scim-bulk-provisioner", version, after_help = MAIN_EXAMPLES)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Provision a bundled sample HR export into an embedded SCIM tenant, then check nothing was lost.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),
    /// Provision a CSV file into a SCIM 2.0 service.
    #[command(after_help = PROVISION_EXAMPLES)]
    Provision(ProvisionArgs),
    /// Check a CSV file offline: header mapping and row errors.
    #[command(after_help = VALIDATE_EXAMPLES)]
    Validate(ValidateArgs),
    /// List the tenant again into the ledger and report drift; change nothing.
    Reconcile(ReconcileArgs),
    /// Show a run's progress and outcome (or the latest runs) from the ledger table.
    Status(StatusArgs),
    /// Approve a run the deactivation guard holds: its deactivations are then sent.
    Approve(ApproveArgs),
}

/// `status` options.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The run (as in its summary and events); without it, the latest runs.
    #[arg(value_name = "RUN_ID")]
    pub run_id: Option<String>,
    /// The ledger's DynamoDB table (AWS credentials and region from the environment).
    #[arg(long, value_name = "TABLE", env = "LEDGER_TABLE")]
    pub table: String,
    /// Print the summary as JSON (the shape of reports/runs/<run_id>.json).
    #[arg(long)]
    pub json: bool,
}

/// `approve` options.
#[derive(Debug, Clone, Args)]
pub struct ApproveArgs {
    /// The held run.
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,
    /// The event bus the function's approval rule listens on.
    #[arg(
        long,
        value_name = "NAME",
        env = "EVENT_BUS_NAME",
        default_value = "default"
    )]
    pub bus: String,
    /// Check in the ledger's table that the run is held, and show what it holds, first.
    #[arg(long, value_name = "TABLE", env = "LEDGER_TABLE")]
    pub table: Option<String>,
}

/// What a provisioning command writes: the report, the summary's form, progress.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Write the JSON Lines report (invalid, skipped and failed rows) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Where a command reads the credentials (else from `SCIM_CREDENTIALS`).
#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
    /// File holding the credentials secret's JSON.
    #[arg(long, value_name = "FILE", conflicts_with = "secret_id")]
    pub credentials: Option<PathBuf>,
    /// Read the credentials from this AWS Secrets Manager secret (id or ARN).
    #[arg(long, value_name = "ID")]
    pub secret_id: Option<String>,
}

/// `reconcile` options.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// Where the credentials come from.
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// The ledger file of `provision --ledger` (drift is judged against what it recorded).
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

const DEMO_EXAMPLES: &str = "\
The embedded tenant listens on 127.0.0.1 only. It advertises Bulk with maxOperations 50 and a
payload limit, answers 429 with Retry-After beyond --rate-limit, fails --error-rate of requests
with 503, and requires a bearer token. Some users of the sample already exist in it.

Examples:
  scim-bulk-provisioner demo
  scim-bulk-provisioner demo --rows 200 --error-rate 0.1
  scim-bulk-provisioner demo --full-sync                       # a truncated export held, then approved
  scim-bulk-provisioner demo --time-scale 1 --rate-limit 50     # real backoff delays
  scim-bulk-provisioner demo --csv staff.csv --report demo.jsonl # your own file, nothing leaves the machine";

/// `demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Use only the first N data rows of the sample.
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
    /// Fraction of requests the tenant fails with 503 (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.02)]
    pub error_rate: f64,
    /// Requests per second the tenant accepts before answering 429.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 25.0)]
    pub rate_limit: f64,
    /// Multiplier of retry and deferral delays (0.01: a 30 s backoff waits 0.3 s).
    #[arg(long, value_name = "FACTOR", default_value_t = 0.01)]
    pub time_scale: f64,
    /// Provision this CSV file instead of the bundled sample.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Seed of the tenant's ids and injected failures, and of the backoff jitter.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where the outcome goes.
    #[command(flatten)]
    pub output: OutputArgs,
    /// The tenant compares userNames case-sensitively (uniqueness and filter), as some do.
    #[arg(long)]
    pub case_sensitive: bool,
    /// The tenant refuses this PATCH form with 400 (the tool switches to the other).
    #[arg(long, value_enum, value_name = "FORM")]
    pub refuse_patch_form: Option<PatchFormArg>,
    /// Then a truncated export in full-sync mode: the guard holds it, then it is approved.
    #[arg(long)]
    pub full_sync: bool,
}

/// A PatchOp form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatchFormArg {
    /// `{"op":"replace","path":"active","value":false}`.
    Path,
    /// `{"op":"replace","value":{"active":false}}`.
    Value,
}

const PROVISION_EXAMPLES: &str = "\
Credentials are the secret's JSON (base_url, auth_type and its fields), from --credentials FILE,
from Secrets Manager with --secret-id, or from the SCIM_CREDENTIALS environment variable, e.g.
  {\"base_url\": \"https://tenant.example/scim/v2\", \"auth_type\": \"bearer\", \"token\": \"...\"}

Examples:
  scim-bulk-provisioner provision --csv staff.csv --credentials scim.json --dry-run
  scim-bulk-provisioner provision --csv staff.csv --credentials scim.json --report failures.jsonl
  scim-bulk-provisioner provision --csv staff.csv --secret-id prod/scim --requests-per-minute 300 --json

Exit codes: 0 all done; 1 some rows failed or were invalid; 2 usage or configuration error.";

/// How existing users are updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpdateMethodArg {
    /// Replace the whole resource (PUT).
    Put,
    /// Replace the provisioned attributes (PATCH).
    Patch,
}

/// `provision` options.
#[derive(Debug, Clone, Args)]
pub struct ProvisionArgs {
    /// The CSV file to provision.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Where the credentials come from.
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// Validate, discover the service's limits, look up who exists, print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the outcome goes.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Requests per minute to the service at most (default: unlimited).
    #[arg(long, value_name = "N")]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub concurrency: usize,
    /// Attempts per operation before it is reported as failed.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_attempts: u32,
    /// How existing users are updated.
    #[arg(long, value_enum, default_value_t = UpdateMethodArg::Put)]
    pub update_method: UpdateMethodArg,
    /// Create users that arrive inactive and do not exist (default: skip them).
    #[arg(long)]
    pub create_inactive: bool,
    /// Operations per bulk cycle at most.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub batch: usize,
    /// Deadline of each bulk cycle, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub cycle_seconds: u64,
    /// Keep the memory of the tenant (ids, fingerprints of the managed attributes, times) in
    /// this JSON file across runs; without it the tenant is listed at the start of each run.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
}

const VALIDATE_EXAMPLES: &str = "\
Examples:
  scim-bulk-provisioner validate --csv staff.csv
  scim-bulk-provisioner validate --csv staff.csv --json | jq '.invalid[].line'

Exit codes: 0 every row is valid; 1 some rows are invalid; 2 the file cannot be used
(unreadable, not UTF-8 CSV, or a required column missing).";

/// `validate` options.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The CSV file to check.
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
