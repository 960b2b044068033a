//! `Notify` (queue `notifications`): send one note on each channel, once (see
//! [`crate::notify`]). A note that can't be read goes to `notifications-poison` on its first
//! delivery.

use super::jobs::unreadable;
use super::queues;
use crate::app::AppState;
use crate::domain::notification::Note;
use crate::error::InvocationFailure;
use crate::host::{InvocationResponse, QueueMessage};
use crate::notify;

/// Delivers one note.
///
/// # Errors
/// Storage failures, or any channel that failed or is still being sent
/// by another delivery: the host retries, and after `maxDequeueCount` the message lands in
/// the poison queue while `Outbox` says which channel failed and why.
pub async fn handle(
    state: &AppState,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    let note = match Note::read(&msg.text, state.now()) {
        Ok(note) => note,
        Err(e) => return Ok(unreadable(queues::NOTIFICATIONS, msg, &e)),
    };
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
