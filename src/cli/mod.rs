//! The command-line tool: `demo`, `provision`, `validate`, `reconcile`, `status` and `approve`. A thin layer over the engine and
//! the pipeline the Lambda uses; it parses arguments, reads files, prints, and picks exit codes:
//! 0 all done, 1 some rows failed or were invalid, 2 usage or configuration error.

mod args;
mod credentials;
mod demo;
mod dry_run;
mod format;
mod input;
mod progress;
mod provision;
mod reconcile;
mod runner;
mod runs;
mod seed;
mod summary;
mod validate;
mod verify;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

pub use args::{
    ApproveArgs, CredentialArgs, DemoArgs, PatchFormArg, ProvisionArgs, ReconcileArgs, StatusArgs,
    UpdateMethodArg, ValidateArgs,
};
use args::{Cli, Command};

pub use summary::RunSummary;

/// Exit code for usage and configuration errors.
const EXIT_USAGE: u8 = 2;

/// A usage or configuration error: printed on stderr, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses the command line and runs the command; the exit code says whether everything was done.
pub async fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    // Boxed: the commands' futures are deep, and inlining them all into main's overflows the
    // compiler's layout query depth.
    let result = match cli.command {
        Command::Demo(args) => Box::pin(demo::run(args)).await,
        Command::Provision(args) => Box::pin(provision::run(args)).await,
        Command::Validate(args) => validate::run(&args.csv, args.json),
        Command::Reconcile(args) => Box::pin(reconcile::run(args)).await,
        Command::Status(args) => Box::pin(runs::status(args)).await,
        Command::Approve(args) => Box::pin(runs::approve(args)).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Logs to stderr, `warn` and above unless `RUST_LOG` says otherwise, so progress stays readable.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Reads a whole input file, or says which and why not.
fn read_file(path: &Path) -> Result<Vec<u8>, UsageError> {
    std::fs::read(path).map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))
}

/// Writes the JSON Lines report.
fn write_report(path: &Path, lines: &[crate::report::ReportLine]) -> Result<(), UsageError> {
    std::fs::write(path, crate::report::to_json_lines(lines))
        .map_err(|e| UsageError(format!("cannot write the report {}: {e}", path.display())))
}
