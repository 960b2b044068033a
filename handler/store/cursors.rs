//! `Cursors` rows: one named position per tenant (the incident watermark), read and moved
//! by the function that owns it.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clients::tables::{Entity, TableClient, TableError};
use crate::domain::TenantId;

/// The cursor name of `IncidentWatch`'s watermark.
pub const INCIDENTS: &str = "incidents";

const VALUE: &str = "Value";
const UPDATED_AT: &str = "UpdatedAt";

/// A cursor that holds a point in time (RFC 3339 in `Value`, readable in Storage Explorer).
///
/// # Errors
/// Storage failures, or a `Value` that is not an RFC 3339 time.
pub async fn get_time(
    table: &TableClient,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<OffsetDateTime>, TableError> {
    let Some(row) = table.get(tenant.as_str(), name).await? else {
        return Ok(None);
    };
    let Some(raw) = row.get_str(VALUE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    OffsetDateTime::parse(raw, &Rfc3339)
        .map(Some)
        .map_err(|e| TableError::Decode(format!("Cursors/{}/{name}: {e}", tenant.as_str())))
}

/// Moves a time cursor. Unconditional: one timer instance owns each cursor (the host runs a
/// timer function as a singleton), and a later value never depends on the earlier one.
///
/// # Errors
/// Storage failures.
pub async fn set_time(
    table: &TableClient,
    tenant: &TenantId,
    name: &str,
    value: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), TableError> {
    let text = value
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| TableError::Decode(e.to_string()))?;
    let row = Entity::new(tenant.as_str(), name)
        .with(VALUE, text)
        .with(UPDATED_AT, now);
    table.upsert_replace(&row).await.map(drop)
}

/// The cursor row `sync`: when the tenant's last device sync ended, and how.
pub const SYNC: &str = "sync";

/// How a device sync run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    Succeeded,
    /// Permanently (credentials, permissions): the next scheduled run tries again.
    Failed,
    /// Transiently: the host retries the job.
    Retrying,
}

impl SyncOutcome {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Retrying => "Retrying",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Succeeded, Self::Failed, Self::Retrying]
            .into_iter()
            .find(|o| o.as_str() == raw)
    }
}

/// The last sync of a tenant, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    pub at: OffsetDateTime,
    pub outcome: SyncOutcome,
    pub run_id: String,
    /// The run's counts, or the error.
    pub detail: String,
}

/// Records how a sync run ended. Best effort: the run's own outcome stands (and is in
/// `Audit`) whether or not this row could be written.
/// `run` is the run's id and when it started.
pub async fn record_sync(
    tables: &crate::clients::tables::TableService,
    tenant: &TenantId,
    outcome: SyncOutcome,
    run: (&str, OffsetDateTime),
    detail: &str,
) {
    let record = SyncRecord {
        at: run.1,
        outcome,
        run_id: run.0.to_owned(),
        detail: detail.to_owned(),
    };
    let record = &record;
    let write = async {
        let table = crate::store::open(tables, crate::store::names::CURSORS).await?;
        let at = record
            .at
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| TableError::Decode(e.to_string()))?;
        let row = Entity::new(tenant.as_str(), SYNC)
            .with(VALUE, at)
            .with("Outcome", record.outcome.as_str())
            .with("RunId", record.run_id.as_str())
            .with("Detail", record.detail.as_str())
            .with(UPDATED_AT, record.at);
        table.upsert_replace(&row).await.map(drop)
    };
    if let Err(e) = write.await {
        tracing::warn!(error = %e, "could not record the sync's outcome in Cursors");
    }
}

/// The last recorded sync of a tenant; `None` before the first, or for a row that no longer
/// reads.
///
/// # Errors
/// Storage failures.
pub async fn last_sync(
    table: &TableClient,
    tenant: &TenantId,
) -> Result<Option<SyncRecord>, TableError> {
    let Some(row) = table.get(tenant.as_str(), SYNC).await? else {
        return Ok(None);
    };
    let at = row
        .get_str(VALUE)
        .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok());
    let outcome = row.get_str("Outcome").and_then(SyncOutcome::parse);
    Ok(at.zip(outcome).map(|(at, outcome)| SyncRecord {
        at,
        outcome,
        run_id: row.get_str("RunId").unwrap_or_default().to_owned(),
        detail: row.get_str("Detail").unwrap_or_default().to_owned(),
    }))
}

/// The cursor row `approval-window`: the creation times of the tenant's latest requests
/// (design §9.4, mode `above`), unix seconds separated by spaces in `Value`.
pub const APPROVAL_WINDOW: &str = "approval-window";

/// How many times [`admit_request`] retries a write another request won.
const WINDOW_ATTEMPTS: u32 = 20;

/// Counts a new request of `tenant` in its window and decides, under `policy`, whether it
/// waits for an approver. Read, decide, write back under the row's ETag (insert when the row
/// is new), and start over when another request of the tenant wrote in between: concurrent
/// requests are counted one after the other, so `above N` lets exactly N through a day.
///
/// `never` and `always` need no count and cost nothing.
///
/// # Errors
/// Storage failures, or a window that stays contended for [`WINDOW_ATTEMPTS`] rounds.
pub async fn admit_request(
    table: &TableClient,
    tenant: &TenantId,
    policy: crate::domain::approval::ApprovalPolicy,
    now: OffsetDateTime,
) -> Result<crate::domain::approval::Gate, TableError> {
    use crate::clients::tables::IfMatch;
    use crate::domain::approval::{ApprovalPolicy, Gate, RecentRequests};
    match policy {
        ApprovalPolicy::Never => return Ok(Gate::Proceed),
        ApprovalPolicy::Always => return Ok(Gate::AwaitApproval),
        ApprovalPolicy::Above { .. } => {}
    }
    for _ in 0..WINDOW_ATTEMPTS {
        let row = table.get(tenant.as_str(), APPROVAL_WINDOW).await?;
        let mut window = row
            .as_ref()
            .and_then(|r| r.get_str(VALUE))
            .map(RecentRequests::from_stored)
            .unwrap_or_default();
        let gate = window.admit(policy, now);
        let entity = Entity::new(tenant.as_str(), APPROVAL_WINDOW)
            .with(VALUE, window.to_stored())
            .with(UPDATED_AT, now);
        let written = match row.and_then(|r| r.etag) {
            Some(etag) => table
                .update_replace(&entity, IfMatch::Etag(etag))
                .await
                .map(drop),
            None => table.insert(&entity).await.map(drop),
        };
        match written {
            Ok(()) => return Ok(gate),
            // Our own retried write landed: counted once, decided as above.
            Err(TableError::Conflict {
                after_retry: true, ..
            }) => return Ok(gate),
            Err(TableError::PreconditionFailed { .. } | TableError::Conflict { .. }) => {
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(TableError::Decode(format!(
        "Cursors/{}/{APPROVAL_WINDOW}: still contended after {WINDOW_ATTEMPTS} attempts",
        tenant.as_str()
    )))
}
