//! `Notify` (queue `notifications`): send one note on each channel, once (see
//! [`crate::notify`]). A malformed note fails every delivery and ends in
//! `notifications-poison`, the right place for garbage.

use crate::app::AppState;
use crate::domain::notification::Note;
use crate::error::InvocationFailure;
use crate::host::{InvocationResponse, QueueMessage};
use crate::notify;

/// Delivers one note.
///
/// # Errors
/// A malformed note, storage failures, or any channel that failed or is still being sent
/// by another delivery: the host retries, and after `maxDequeueCount` the message lands in
/// the poison queue while `Outbox` says which channel failed and why.
pub async fn handle(
    state: &AppState,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    let note: Note = serde_json::from_str(&msg.text)
        .map_err(|e| InvocationFailure::msg(format!("the message is not a notification: {e}")))?;
    tracing::Span::current().record("tenant.id", note.tenant_id.as_str());
    let report = notify::send_note(state, &note)
        .await
        .map_err(|e| InvocationFailure(e.context(format!("notification {}", note.id))))?;
    let line = format!("notification {}: {}", note.id, report.summary());
    if report.complete() {
        Ok(InvocationResponse::new().log(line))
    } else {
        Err(InvocationFailure::msg(line))
    }
}
