//! `SyncScheduler` (timer): one `device-sync` job per enabled tenant.

use super::jobs::{SyncJob, run_id};
use crate::app::AppState;
use crate::error::InvocationFailure;
use crate::host::InvocationResponse;
use crate::store::{self, names, tenants};

/// Fans the sync out over the queue so each tenant runs in its own invocation (and a
/// failing tenant is retried alone).
///
/// # Errors
/// When the tenant list can't be read (the timer logs it; the next occurrence retries).
pub async fn handle(state: &AppState) -> Result<InvocationResponse, InvocationFailure> {
    let table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(|e| InvocationFailure(anyhow::Error::new(e).context("opening Tenants")))?;
    let enabled = tenants::list(&table, true)
        .await
        .map_err(|e| InvocationFailure(anyhow::Error::new(e).context("listing tenants")))?;
    let now = state.now();
    let run = run_id("sync", now);
    let jobs: Vec<String> = enabled
        .iter()
        .map(|t| {
            SyncJob {
                tenant_id: t.id().clone(),
                run_id: run.clone(),
                reason: "scheduled".into(),
            }
            .to_message()
        })
        .collect();
    tracing::info!(run.id = %run, tenants = jobs.len(), "device sync scheduled");
    let line = format!("device sync {run}: queued {} tenant(s)", jobs.len());
    Ok(InvocationResponse::new().with_queue("jobs", jobs).log(line))
}
