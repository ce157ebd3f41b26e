//! `reconcile`: lists the tenant again into the ledger and reports drift (managed attributes
//! changed in the tenant by someone else since this tool wrote them); changes nothing.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::credentials::{credential_source, CredentialOptions};
use super::{ReconcileArgs, UsageError};
use crate::engine::{Engine, EngineConfig};
use crate::ledger::memory::MemoryLedger;

/// How long the listing may take.
const LISTING_HORIZON: Duration = Duration::from_secs(3600);

/// Runs `reconcile`: exit 0 without drift, 1 with.
pub async fn run(args: ReconcileArgs) -> Result<ExitCode, UsageError> {
    let credentials = credential_source(&CredentialOptions::of(&args.credentials)).await?;
    let ledger = Arc::new(match &args.ledger {
        Some(path) => MemoryLedger::open(path).map_err(|e| UsageError(e.to_string()))?,
        None => MemoryLedger::new(),
    });
    let engine = Engine::new(EngineConfig::default(), credentials)
        .map_err(|e| UsageError(e.to_string()))?
        .with_ledger(ledger.clone());
    let listing = engine
        .reconcile(Instant::now() + LISTING_HORIZON)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    ledger.save().map_err(|e| UsageError(e.to_string()))?;
    if args.json {
        let value = serde_json::json!({
            "users": listing.users,
            "ambiguous": listing.ambiguous,
            "drifted": listing.drift.len(),
            "drift": listing.drift,
            "requests": listing.requests,
        });
        println!("{value:#}");
    } else {
        println!(
            "Listed {} users ({} requests); {} userName(s) shared case-insensitively by several users.",
            listing.users, listing.requests, listing.ambiguous
        );
        if listing.drift.is_empty() {
            println!("No drift: every user this tool manages holds what it last wrote.");
        } else {
            println!(
                "Drift: {} managed user(s) were changed in the tenant by someone else; the next run of the file sets them back:",
                listing.drift.len()
            );
            for name in &listing.drift {
                println!("  {name}");
            }
        }
    }
    Ok(if listing.drift.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
