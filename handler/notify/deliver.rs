//! Once-per-channel delivery of a note through the `Outbox` row.
//!
//! Per channel: read the row; skip a channel already sent; wait (briefly) while another
//! delivery holds a fresh claim; claim with an ETag-checked merge (`<C>ClaimId`,
//! `<C>ClaimedAt`, `<C>Attempts`); send; mark sent with the claim's ETag. Two deliveries of
//! one note race on the claim and only the winner sends.
//!
//! Limits (at-least-once underneath): a crash, or a storage failure, between the send and
//! the mark leaves a claim that expires after [`CLAIM_LEASE`]; the next delivery then sends
//! again. The window is one table write long. A send that timed out may have been received
//! and is retried too. Receivers that must not see duplicates dedupe on the note id (in the
//! webhook body; in the card and mail as the request/incident/run ids).

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::clients::tables::{ETag, IfMatch, TableClient, TableError};
use crate::domain::Channel;
use crate::store::outbox::{self, OutboxRow};

/// How long a claim protects a send in flight; far above one send (20 s timeout, ≤ 2 short
/// `Retry-After` waits).
pub const CLAIM_LEASE: time::Duration = time::Duration::minutes(2);
/// How long a delivery waits for another delivery's claim before failing (and being retried
/// by the host).
const WAIT_FOR_OTHER: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// How one channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOutcome {
    /// Sent now.
    Sent,
    /// An earlier (or concurrent) delivery sent it.
    AlreadySent,
    /// Another delivery is still sending it: retry later.
    Busy,
    /// The send failed; the reason is in `<C>LastError`.
    Failed(String),
}

/// Claims `channel` of row (`day`, `id`), runs `send`, and records the outcome.
///
/// # Errors
/// Storage failures (the invocation fails and is retried).
pub async fn channel<F, Fut>(
    table: &TableClient,
    day: &str,
    id: &str,
    channel: Channel,
    now: impl Fn() -> OffsetDateTime,
    send: F,
) -> Result<ChannelOutcome, TableError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let claim_id = uuid::Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + WAIT_FOR_OTHER;
    let (row, etag) = loop {
        let row = outbox::get(table, day, id)
            .await?
            .ok_or_else(|| TableError::Decode(format!("Outbox row {day}/{id} is missing")))?;
        let st = row.channel(channel);
        if st.sent_at.is_some() {
            return Ok(ChannelOutcome::AlreadySent);
        }
        let held =
            st.claim_id.is_some() && st.claimed_at.is_some_and(|at| now() - at < CLAIM_LEASE);
        if held {
            if Instant::now() >= deadline {
                return Ok(ChannelOutcome::Busy);
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        match outbox::claim(table, &row, channel, &claim_id, now()).await {
            Ok(etag) => break (row, etag),
            // Someone wrote first: look again (sent? claimed? or just another channel).
            Err(TableError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    };
    match send().await {
        Ok(()) => {
            mark(table, &row, channel, etag, now(), None).await?;
            Ok(ChannelOutcome::Sent)
        }
        Err(reason) => {
            mark(table, &row, channel, etag, now(), Some(&reason)).await?;
            Ok(ChannelOutcome::Failed(reason))
        }
    }
}

async fn mark(
    table: &TableClient,
    row: &OutboxRow,
    channel: Channel,
    etag: ETag,
    now: OffsetDateTime,
    error: Option<&str>,
) -> Result<(), TableError> {
    let write = |if_match: IfMatch| async move {
        match error {
            None => outbox::mark_sent(table, row, channel, if_match, now).await,
            Some(e) => outbox::mark_failed(table, row, channel, if_match, e, now).await,
        }
    };
    match write(IfMatch::Etag(etag)).await {
        Ok(_) => Ok(()),
        Err(TableError::PreconditionFailed { after_retry }) => {
            // Our lease ran out mid-send and another delivery took the channel over (or our
            // own first attempt of this write landed): record the outcome anyway.
            if !after_retry {
                tracing::warn!(
                    notification.id = %row.note_id,
                    channel = channel.as_str(),
                    "the claim was taken over while sending; the channel may be sent twice"
                );
            }
            write(IfMatch::Any).await.map(drop)
        }
        Err(e) => Err(e),
    }
}
