//! The audit trail: one row per event, newest first within a tenant.

use time::OffsetDateTime;

use crate::clients::tables::{EdmValue, Entity, TableClient, TableError};
use crate::domain::{Actor, TenantId};

/// The partition of app-wide events that belong to no tenant (caller changes).
pub const APP_PARTITION: &str = "app";

/// One audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub kind: String,
    /// What the event is about: a request id, a machine id, a sync run id.
    pub subject: String,
    pub detail: String,
    pub at: OffsetDateTime,
    /// Extra typed columns (counts of a sync run, an HTTP status...).
    pub extra: Vec<(String, EdmValue)>,
}

/// Row key that sorts newest first: ticks left until the end of time, then a unique suffix
/// (two events in the same 100 ns tick stay distinct and in a stable order).
#[must_use]
pub fn row_key(at: OffsetDateTime, unique: &str) -> String {
    let ticks = i64::try_from(at.unix_timestamp_nanos() / 100).unwrap_or(i64::MAX);
    format!("{:019}-{unique}", i64::MAX - ticks.max(0))
}

/// How far outside a subject's own time span its events are looked for (clocks of two
/// instances, a write that took its `now` a little before the request row's).
pub const WINDOW_SLACK: time::Duration = time::Duration::minutes(5);

fn tick_prefix(at: OffsetDateTime) -> String {
    let ticks = i64::try_from(at.unix_timestamp_nanos() / 100).unwrap_or(i64::MAX);
    format!("{:019}", i64::MAX - ticks.max(0))
}

/// The query for one subject's events written between `from` and `to`: a RowKey range of the
/// tenant's partition (keys sort newest first), so the service reads only the rows of that
/// time span instead of the whole partition, and the subject filter picks among them. Rows
/// keep the existing key format: old data stays readable.
#[must_use]
pub fn window_filter(
    tenant: &TenantId,
    subject: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> String {
    use crate::clients::tables::filter;
    let newest = tick_prefix(to + WINDOW_SLACK);
    // '.' sorts right after '-', the separator of `row_key`: every key of the oldest tick.
    let oldest = format!("{}.", tick_prefix(from - WINDOW_SLACK));
    filter::and(
        &filter::and(
            &filter::eq("PartitionKey", tenant.as_str()),
            &filter::and(
                &filter::ge("RowKey", newest.as_str()),
                &filter::lt("RowKey", oldest.as_str()),
            ),
        ),
        &filter::eq("Subject", subject),
    )
}

impl AuditEntry {
    #[must_use]
    pub fn new(kind: &str, subject: &str, detail: impl Into<String>, at: OffsetDateTime) -> Self {
        Self {
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            detail: detail.into(),
            at,
            extra: Vec::new(),
        }
    }

    /// Records who caused the event: `Actor`, and `ActorId` for a signed-in user.
    #[must_use]
    pub fn by(self, actor: &Actor) -> Self {
        let entry = self.with("Actor", actor.label());
        match actor.object_id() {
            Some(id) => entry.with("ActorId", id.to_owned()),
            None => entry,
        }
    }

    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<EdmValue>) -> Self {
        self.extra.push((name.to_owned(), value.into()));
        self
    }

    /// The row, keyed by `unique` (deterministic for at-least-once writers: writing the same
    /// event twice overwrites one row instead of adding a second).
    #[must_use]
    pub fn to_entity(&self, tenant: &TenantId, unique: &str) -> Entity {
        self.to_entity_in(tenant.as_str(), unique)
    }

    fn to_entity_in(&self, partition: &str, unique: &str) -> Entity {
        let mut e = Entity::new(partition, row_key(self.at, unique))
            .with("Kind", self.kind.as_str())
            .with("Subject", self.subject.as_str())
            .with("Detail", self.detail.as_str())
            .with("At", self.at);
        for (k, v) in &self.extra {
            e.set(k.as_str(), v.clone());
        }
        e
    }

    /// Reads a row back.
    ///
    /// # Errors
    /// [`TableError::Decode`] when a column is missing.
    pub fn from_entity(e: &Entity) -> Result<Self, TableError> {
        Ok(Self {
            kind: e.require("Kind")?,
            subject: e.optional("Subject")?.unwrap_or_default(),
            detail: e.optional("Detail")?.unwrap_or_default(),
            at: e.require("At")?,
            extra: Vec::new(),
        })
    }
}

/// Appends (or idempotently rewrites) an event. Concurrent events of one tenant share a
/// batch (group commit).
///
/// # Errors
/// Any storage failure.
pub async fn append(
    table: &TableClient,
    tenant: &TenantId,
    entry: &AuditEntry,
    unique: &str,
) -> Result<(), TableError> {
    table
        .upsert_replace_grouped(entry.to_entity(tenant, unique))
        .await
        .map(drop)
}

/// Appends an app-wide event (no tenant) to [`APP_PARTITION`].
///
/// # Errors
/// Any storage failure.
pub async fn append_app(
    table: &TableClient,
    entry: &AuditEntry,
    unique: &str,
) -> Result<(), TableError> {
    table
        .upsert_replace(&entry.to_entity_in(APP_PARTITION, unique))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The RowKey bounds of [`window_filter`], as the service compares them (strings).
    fn in_window(key: &str, from: OffsetDateTime, to: OffsetDateTime) -> bool {
        let newest = tick_prefix(to + WINDOW_SLACK);
        let oldest = format!("{}.", tick_prefix(from - WINDOW_SLACK));
        key >= newest.as_str() && key < oldest.as_str()
    }

    #[test]
    fn a_window_holds_every_row_of_its_span_and_none_far_outside() {
        let from = datetime!(2026-11-29 10:00 UTC);
        let to = datetime!(2026-11-29 10:20 UTC);
        let unique = "0d0e5c80-fe1c-4101-bba5-a6650cd3341e-Succeeded";
        for inside in [
            from,
            to,
            from + time::Duration::minutes(7),
            to + WINDOW_SLACK,
        ] {
            assert!(in_window(&row_key(inside, unique), from, to), "{inside}");
        }
        for outside in [
            from - WINDOW_SLACK - time::Duration::seconds(1),
            to + WINDOW_SLACK + time::Duration::seconds(1),
            datetime!(2026-11-01 10:00 UTC),
            datetime!(2026-12-29 10:00 UTC),
        ] {
            assert!(!in_window(&row_key(outside, unique), from, to), "{outside}");
        }
        let tenant = TenantId::parse("8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c").expect("tenant");
        let f = window_filter(&tenant, "req-1", from, to);
        assert!(
            f.contains("RowKey ge '") && f.contains("RowKey lt '"),
            "{f}"
        );
        assert!(f.contains("Subject eq 'req-1'"), "{f}");
    }

    #[test]
    fn newer_events_sort_first() {
        let older = row_key(datetime!(2026-11-01 10:00 UTC), "a");
        let newer = row_key(datetime!(2026-11-29 10:00 UTC), "a");
        assert!(newer < older);
        assert_eq!(older.len(), newer.len());
    }
}
