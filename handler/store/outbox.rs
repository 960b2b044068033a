//! `Outbox` rows: one per notification (PartitionKey = UTC day `YYYYMMDD` of the note,
//! RowKey = the note's deterministic id), with the state of each channel, so a redelivered
//! note sends nothing twice and a failed one says which channel failed and why.
//!
//! Columns: `Kind`, `TenantId`, `Channels` (planned, `teams,email`), `Payload` (the note's
//! JSON: it holds no secret), `CreatedAt`, `SentAt` (every planned channel done), and per
//! channel `<C>SentAt`, `<C>Attempts`, `<C>LastError`, `<C>LastErrorAt`, `<C>ClaimedAt`,
//! `<C>ClaimId` with `<C>` = `Teams`, `Email`, `Webhook`. An empty `<C>ClaimId` = unclaimed.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::clients::tables::{ETag, EdmValue, Entity, IfMatch, TableClient, TableError};
use crate::domain::Channel;

/// The row's partition: the note's UTC day.
#[must_use]
pub fn day_of(at: OffsetDateTime) -> String {
    let d = at.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The column prefix of a channel (`Teams`, `Email`, `Webhook`).
#[must_use]
pub fn prefix(channel: Channel) -> &'static str {
    match channel {
        Channel::Teams => "Teams",
        Channel::Email => "Email",
        Channel::Webhook => "Webhook",
    }
}

fn col(channel: Channel, name: &str) -> String {
    format!("{}{name}", prefix(channel))
}

/// One channel's delivery state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelState {
    pub sent_at: Option<OffsetDateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub claimed_at: Option<OffsetDateTime>,
    pub claim_id: Option<String>,
}

/// One `Outbox` row, with its ETag for conditional updates.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub day: String,
    pub note_id: String,
    pub channels: Vec<Channel>,
    pub sent_at: Option<OffsetDateTime>,
    pub state: BTreeMap<Channel, ChannelState>,
    pub etag: Option<ETag>,
}

impl OutboxRow {
    fn from_entity(e: &Entity) -> Self {
        let channels = e
            .get_str("Channels")
            .unwrap_or_default()
            .split(',')
            .filter_map(|c| Channel::parse(c).ok())
            .collect();
        let state = Channel::ALL
            .into_iter()
            .map(|c| {
                let s = ChannelState {
                    sent_at: e.get_datetime(&col(c, "SentAt")),
                    attempts: e.get_i32(&col(c, "Attempts")).unwrap_or(0),
                    last_error: e
                        .get_str(&col(c, "LastError"))
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned),
                    claimed_at: e.get_datetime(&col(c, "ClaimedAt")),
                    claim_id: e
                        .get_str(&col(c, "ClaimId"))
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned),
                };
                (c, s)
            })
            .collect();
        Self {
            day: e.partition_key.clone(),
            note_id: e.row_key.clone(),
            channels,
            sent_at: e.get_datetime("SentAt"),
            state,
            etag: e.etag.clone(),
        }
    }

    /// The state of `channel` (default when never touched).
    #[must_use]
    pub fn channel(&self, channel: Channel) -> ChannelState {
        self.state.get(&channel).cloned().unwrap_or_default()
    }

    fn if_match(&self) -> IfMatch {
        self.etag.clone().map_or(IfMatch::Any, IfMatch::Etag)
    }

    fn patch(&self) -> Entity {
        Entity::new(self.day.as_str(), self.note_id.as_str())
    }
}

/// What a new row records.
#[derive(Debug, Clone)]
pub struct NewOutbox<'a> {
    pub day: String,
    pub note_id: &'a str,
    pub kind: &'a str,
    pub tenant_id: &'a str,
    pub channels: &'a [Channel],
    pub payload: &'a str,
}

/// Inserts the row unless it exists (a redelivery keeps the first row and its planned
/// channels), then reads it back with its ETag.
///
/// # Errors
/// Storage failures; [`TableError::InvalidKey`] for a note id the table can't key.
pub async fn record(
    table: &TableClient,
    new: &NewOutbox<'_>,
    now: OffsetDateTime,
) -> Result<OutboxRow, TableError> {
    let channels = new
        .channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let e = Entity::new(new.day.as_str(), new.note_id)
        .with("Kind", new.kind)
        .with("TenantId", new.tenant_id)
        .with("Channels", channels)
        .with("Payload", new.payload)
        .with("CreatedAt", now);
    match table.insert(&e).await {
        Ok(_) | Err(TableError::Conflict { .. }) => {}
        Err(e) => return Err(e),
    }
    get(table, &new.day, new.note_id)
        .await?
        .ok_or_else(|| TableError::Decode("the Outbox row vanished after its insert".into()))
}

/// One row.
///
/// # Errors
/// Storage failures.
pub async fn get(
    table: &TableClient,
    day: &str,
    note_id: &str,
) -> Result<Option<OutboxRow>, TableError> {
    Ok(table
        .get(day, note_id)
        .await?
        .map(|e| OutboxRow::from_entity(&e)))
}

/// Claims `channel` for `claim_id` if the row is unchanged since it was read, counting an
/// attempt. Returns the row's new ETag.
///
/// # Errors
/// [`TableError::PreconditionFailed`] when someone else wrote the row first.
pub async fn claim(
    table: &TableClient,
    row: &OutboxRow,
    channel: Channel,
    claim_id: &str,
    now: OffsetDateTime,
) -> Result<ETag, TableError> {
    let attempts = row.channel(channel).attempts.saturating_add(1);
    let e = row
        .patch()
        .with(col(channel, "ClaimedAt"), now)
        .with(col(channel, "ClaimId"), claim_id)
        .with(col(channel, "Attempts"), EdmValue::Int32(attempts));
    table.update_merge(&e, row.if_match()).await
}

/// Marks `channel` sent and releases the claim. `etag` is the claim's: a 412 means the claim
/// was taken over (the lease ran out while sending).
///
/// # Errors
/// [`TableError::PreconditionFailed`] as above; storage failures.
pub async fn mark_sent(
    table: &TableClient,
    row: &OutboxRow,
    channel: Channel,
    if_match: IfMatch,
    now: OffsetDateTime,
) -> Result<ETag, TableError> {
    let e = row
        .patch()
        .with(col(channel, "SentAt"), now)
        .with(col(channel, "ClaimId"), "")
        .with(col(channel, "LastError"), "");
    table.update_merge(&e, if_match).await
}

/// Records why `channel` failed (no secret, no URL in `error`) and releases the claim so the
/// next delivery may try at once.
///
/// # Errors
/// Storage failures.
pub async fn mark_failed(
    table: &TableClient,
    row: &OutboxRow,
    channel: Channel,
    if_match: IfMatch,
    error: &str,
    now: OffsetDateTime,
) -> Result<ETag, TableError> {
    let e = row
        .patch()
        .with(col(channel, "LastError"), error)
        .with(col(channel, "LastErrorAt"), now)
        .with(col(channel, "ClaimId"), "");
    table.update_merge(&e, if_match).await
}

/// Marks the whole note delivered (every planned channel sent).
///
/// # Errors
/// Storage failures.
pub async fn mark_done(
    table: &TableClient,
    row: &OutboxRow,
    now: OffsetDateTime,
) -> Result<(), TableError> {
    let e = row.patch().with("SentAt", now);
    table.update_merge(&e, IfMatch::Any).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_partition_is_the_utc_day_of_the_note() {
        assert_eq!(day_of(datetime!(2026-11-06 23:30 -02:00)), "20261107");
        assert_eq!(day_of(datetime!(2026-01-05 00:00 UTC)), "20260105");
    }
}
