//! Queue message bodies the functions exchange (JSON text, one message per string); each
//! lives with its use case. A message that can't be read goes to `<queue>-poison` at once.

use crate::host::{InvocationResponse, QueueMessage};
pub use crate::offboard::OffboardJob;
pub use crate::sync::{SyncJob, run_id};

/// The output binding of each queue function that writes to its own `<queue>-poison`.
pub const POISON: &str = "poison";

/// The answer to a message that can't be read at all: it goes to `<queue>-poison` through
/// the `poison` output binding and the invocation succeeds, so the host deletes it instead
/// of delivering it `maxDequeueCount` times (it would fail the same way each time). The
/// handler can't move a message itself; the host writes the output binding and deletes the
/// trigger message in one completed invocation (docs/design.md, "Queue messages").
pub fn unreadable(
    queue: &str,
    msg: &QueueMessage,
    error: &dyn std::fmt::Display,
) -> InvocationResponse {
    tracing::warn!(
        queue,
        message.id = msg.id.as_deref().unwrap_or_default(),
        dequeue_count = msg.dequeue_count,
        error = %error,
        "unreadable message moved to {queue}-poison"
    );
    InvocationResponse::new().with_queue(POISON, vec![msg.text.clone()])
}
