//! Under Lambda (`AWS_LAMBDA_RUNTIME_API` set) the binary is the function; otherwise it is the CLI.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        scim_bulk_provisioner::lambda::run().await
    } else {
        scim_bulk_provisioner::cli::run().await
    }
}
