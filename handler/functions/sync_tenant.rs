//! `SyncTenant` (queue `device-sync`): one tenant's device sync ([`crate::sync`]), its
//! notifications queued to `notes`, an unreadable message to `poison`.

use super::jobs::unreadable;
use super::queues;
use crate::app::AppState;
use crate::domain::notification::Note;
use crate::error::InvocationFailure;
use crate::host::{InvocationResponse, QueueMessage};
use crate::sync::{self, Outcome, SyncJob};

/// Runs one `device-sync` job.
///
/// # Errors
/// Transient failures (throttling, 5xx, storage) fail the invocation so the host retries;
/// permanent ones (bad credentials, missing permission) are recorded in `Audit` and notified,
/// and the invocation succeeds: retrying them would change nothing.
pub async fn handle(
    state: &AppState,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    let job = match SyncJob::read(&msg.text, msg.id.as_deref(), state.now()) {
        Ok(job) => job,
        Err(e) => return Ok(unreadable(queues::DEVICE_SYNC, msg, &e)),
    };
    tracing::Span::current().record("tenant.id", job.tenant_id.as_str());
    let tenant = &job.tenant_id;
    let run = &job.run_id;
    Ok(match sync::run(state, &job, msg.dequeue_count).await? {
        Outcome::NotRegistered => {
            InvocationResponse::new().log(format!("tenant {tenant} is not registered"))
        }
        Outcome::Disabled => InvocationResponse::new().log(format!("tenant {tenant} is disabled")),
        Outcome::Synced { detail, notes, .. } => InvocationResponse::new()
            .with_queue("notes", notes.iter().map(Note::to_message).collect())
            .log(format!("tenant {tenant} sync {run}: {detail}")),
        Outcome::Failed { error, note } => InvocationResponse::new()
            .with_queue("notes", vec![note.to_message()])
            .log(format!("tenant {tenant} sync {run} failed: {error}")),
    })
}
