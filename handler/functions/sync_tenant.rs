//! `SyncTenant` (queue `device-sync`): reconcile one tenant's devices with Defender.
//!
//! Streams every page of machines without holding the tenant in memory, writes only rows
//! whose content changed (batches of 100, one partition), marks devices Defender no longer
//! returns as `Gone` (never deletes), recomputes `Stale` and `DuplicateOf`, and never
//! touches the operator columns. Every write is an idempotent merge, so a redelivered or
//! concurrent run of the same job is harmless.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::jobs::SyncJob;
use crate::app::AppState;
use crate::clients::defender::{DefenderClient, DefenderError, MachineQuery, MachineSummary};
use crate::clients::tables::{
    BatchOp, EdmValue, Entity, MAX_BATCH_OPERATIONS, TableClient, TableError,
};
use crate::domain::device::{DeviceContent, is_stale};
use crate::domain::duplicates::{self, DupKey};
use crate::domain::notification::{DeviceRef, Event, MAX_DEVICES_PER_NOTE, Note};
use crate::domain::{CompactMachineId, MachineId, TenantId};
use crate::error::InvocationFailure;
use crate::host::{InvocationResponse, QueueMessage};
use crate::store::audit::{self, AuditEntry};
use crate::store::cursors::{self, SyncOutcome};
use crate::store::devices::{self, col};
use crate::store::tenants::{self, Tenant};
use crate::store::{self, names};

/// Batches written at once; Azurite and the Table service both serialise per partition, so
/// a few in flight hide latency without queueing behind each other.
const BATCHES_IN_FLIGHT: usize = 4;
/// Rows held back for the duplicate pass at most (their content, well under 1 KB each);
/// beyond, candidates are written at once and their mark, if any, later as a second write.
const MAX_HELD_ROWS: usize = 20_000;

/// The counts of one run, written to `Audit`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub seen: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub gone: u64,
    pub stale: u64,
    pub duplicates: u64,
    pub pages: u64,
    pub api_calls: u64,
    pub table_writes: u64,
    pub skipped_invalid: u64,
    pub duration_ms: u64,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Defender(#[from] DefenderError),
    #[error("Table Storage: {0}")]
    Table(#[from] TableError),
}

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
    let job: SyncJob = serde_json::from_str(&msg.text).map_err(|e| {
        InvocationFailure::msg(format!("the message is not a device-sync job: {e}"))
    })?;
    let span = tracing::Span::current();
    span.record("tenant.id", job.tenant_id.as_str());
    let fail = |e: anyhow::Error| InvocationFailure(e);

    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(|e| fail(e.into()))?;
    let Some(tenant) = tenants::get(&tenants_table, &job.tenant_id)
        .await
        .map_err(|e| fail(e.into()))?
    else {
        tracing::warn!(run.id = %job.run_id, "tenant is not registered; nothing to sync");
        return Ok(
            InvocationResponse::new().log(format!("tenant {} is not registered", job.tenant_id))
        );
    };
    let tenant = tenant.tenant;
    if !tenant.enabled {
        tracing::info!(run.id = %job.run_id, "tenant is disabled; not syncing");
        return Ok(InvocationResponse::new().log(format!("tenant {} is disabled", job.tenant_id)));
    }

    let devices_table = store::open(state.tables(), names::DEVICES)
        .await
        .map_err(|e| fail(e.into()))?;
    let audit_table = store::open(state.tables(), names::AUDIT)
        .await
        .map_err(|e| fail(e.into()))?;
    let client = state.defender(&tenant).await.map_err(fail)?;
    let now = state.now();
    let started = Instant::now();

    let outcome = sync(state, &client, &devices_table, &tenant, &job, now).await;
    let tenant_id = tenant.id().clone();
    match outcome {
        Ok((mut report, notes)) => {
            report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            report.api_calls = client.api_calls();
            let entry = success_entry(&job, &report, now);
            audit::append(&audit_table, &tenant_id, &entry, &job.run_id)
                .await
                .map_err(|e| fail(e.into()))?;
            tracing::info!(
                run.id = %job.run_id,
                seen = report.seen,
                inserted = report.inserted,
                updated = report.updated,
                unchanged = report.unchanged,
                gone = report.gone,
                stale = report.stale,
                duplicates = report.duplicates,
                pages = report.pages,
                api_calls = report.api_calls,
                table_writes = report.table_writes,
                duration_ms = report.duration_ms,
                "tenant synced"
            );
            let run = (job.run_id.as_str(), now);
            cursors::record_sync(
                state.tables(),
                &tenant_id,
                SyncOutcome::Succeeded,
                run,
                &entry.detail,
            )
            .await;
            let line = format!("tenant {tenant_id} sync {}: {}", job.run_id, entry.detail);
            Ok(InvocationResponse::new()
                .with_queue("notes", notes.iter().map(Note::to_message).collect())
                .log(line))
        }
        Err(SyncError::Defender(e)) if !e.is_transient() => {
            // Bad secret, missing permission, wrong tenant: a retry would fail the same way.
            let message = format!("device sync failed: {e}");
            tracing::warn!(run.id = %job.run_id, error = %e, "tenant sync failed permanently");
            let entry = AuditEntry::new("DeviceSyncFailed", &job.run_id, message.clone(), now);
            audit::append(&audit_table, &tenant_id, &entry, &job.run_id)
                .await
                .map_err(|e| fail(e.into()))?;
            let run = (job.run_id.as_str(), now);
            cursors::record_sync(
                state.tables(),
                &tenant_id,
                SyncOutcome::Failed,
                run,
                &message,
            )
            .await;
            let note = Note {
                id: format!("{}-{}-failed", job.run_id, tenant_id),
                tenant_id: tenant_id.clone(),
                at: now,
                event: Event::SyncFailed {
                    run_id: job.run_id.clone(),
                    message,
                },
            };
            Ok(InvocationResponse::new()
                .with_queue("notes", vec![note.to_message()])
                .log(format!(
                    "tenant {tenant_id} sync {} failed: {e}",
                    job.run_id
                )))
        }
        Err(e) => {
            let entry = AuditEntry::new(
                "DeviceSyncRetry",
                &job.run_id,
                format!(
                    "attempt {} failed, the host retries: {e}",
                    msg.dequeue_count
                ),
                now,
            );
            // Best effort: the invocation fails either way.
            let run = (job.run_id.as_str(), now);
            cursors::record_sync(
                state.tables(),
                &tenant_id,
                SyncOutcome::Retrying,
                run,
                &entry.detail,
            )
            .await;
            let _ = audit::append(
                &audit_table,
                &tenant_id,
                &entry,
                &format!("{}-{}", job.run_id, msg.dequeue_count),
            )
            .await;
            Err(InvocationFailure(
                anyhow::Error::new(e).context("device sync"),
            ))
        }
    }
}

fn success_entry(job: &SyncJob, r: &SyncReport, now: OffsetDateTime) -> AuditEntry {
    let detail = format!(
        "{} seen, {} new, {} updated, {} unchanged, {} gone, {} stale, {} duplicates; {} page(s), {} API call(s), {} table write(s) in {} ms",
        r.seen,
        r.inserted,
        r.updated,
        r.unchanged,
        r.gone,
        r.stale,
        r.duplicates,
        r.pages,
        r.api_calls,
        r.table_writes,
        r.duration_ms
    );
    let n = |v: u64| EdmValue::Int64(i64::try_from(v).unwrap_or(i64::MAX));
    AuditEntry::new("DeviceSync", &job.run_id, detail, now)
        .with("Seen", n(r.seen))
        .with("Inserted", n(r.inserted))
        .with("Updated", n(r.updated))
        .with("Unchanged", n(r.unchanged))
        .with("Gone", n(r.gone))
        .with("Stale", n(r.stale))
        .with("Duplicates", n(r.duplicates))
        .with("Pages", n(r.pages))
        .with("ApiCalls", n(r.api_calls))
        .with("TableWrites", n(r.table_writes))
        .with("DurationMs", n(r.duration_ms))
}

/// Converts Defender's machine into the stored content; `None` for an id that is not 40 hex
/// characters (it could never be a table key nor be offboarded).
#[must_use]
pub fn to_content(m: impl Into<MachineSummary>) -> Option<DeviceContent> {
    let m: MachineSummary = m.into();
    let machine_id = MachineId::parse(&m.id).ok()?;
    let nonempty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    Some(DeviceContent {
        machine_id,
        computer_dns_name: nonempty(m.computer_dns_name),
        os_platform: nonempty(m.os_platform),
        os_version: nonempty(m.os_version).or(nonempty(m.version)),
        health_status: m.health_status.map(|h| h.as_str().to_owned()),
        onboarding_status: m.onboarding_status.map(|o| o.as_str().to_owned()),
        last_seen: m.last_seen,
        first_seen: m.first_seen,
        last_ip_address: nonempty(m.last_ip_address),
        aad_device_id: nonempty(m.aad_device_id),
        machine_tags: m
            .machine_tags
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect(),
        risk_score: m.risk_score.map(|r| r.as_str().to_owned()),
        exposure_level: m.exposure_level.map(|e| e.as_str().to_owned()),
        merged_into: m
            .merged_into_machine_id
            .as_deref()
            .and_then(|id| MachineId::parse(id).ok()),
        potential_duplicate: m.is_potential_duplication,
    })
}

type BatchFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TableError>> + Send + 'a>>;

/// Writes batches of one partition with a few in flight.
struct Writer<'a> {
    table: &'a TableClient,
    pending: Vec<BatchOp>,
    /// RowKey → index in `pending`: a batch may name an entity only once, so a second write
    /// to the same row (content, then its DuplicateOf) is folded into the first.
    pending_rows: HashMap<String, usize>,
    in_flight: FuturesUnordered<BatchFuture<'a>>,
    writes: u64,
}

impl<'a> Writer<'a> {
    fn new(table: &'a TableClient) -> Self {
        Self {
            table,
            pending: Vec::with_capacity(MAX_BATCH_OPERATIONS),
            pending_rows: HashMap::with_capacity(MAX_BATCH_OPERATIONS),
            in_flight: FuturesUnordered::new(),
            writes: 0,
        }
    }

    async fn push(&mut self, entity: Entity) -> Result<(), TableError> {
        if let Some(&i) = self.pending_rows.get(&entity.row_key)
            && let Some(BatchOp::UpsertMerge(existing)) = self.pending.get_mut(i)
        {
            existing.props.extend(entity.props);
            return Ok(());
        }
        self.pending_rows
            .insert(entity.row_key.clone(), self.pending.len());
        self.pending.push(BatchOp::UpsertMerge(entity));
        if self.pending.len() >= MAX_BATCH_OPERATIONS {
            self.flush_pending().await?;
        }
        Ok(())
    }

    /// Whether a write to `row_key` is waiting in the next batch (not sent yet).
    fn is_pending(&self, row_key: &str) -> bool {
        self.pending_rows.contains_key(row_key)
    }

    async fn flush_pending(&mut self) -> Result<(), TableError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= BATCHES_IN_FLIGHT {
            if let Some(r) = self.in_flight.next().await {
                r?;
            }
        }
        let ops = std::mem::replace(&mut self.pending, Vec::with_capacity(MAX_BATCH_OPERATIONS));
        self.pending_rows.clear();
        self.writes += ops.len() as u64;
        let table = self.table;
        self.in_flight.push(Box::pin(async move {
            if ops.len() == 1 {
                // One operation costs the same as a batch and is simpler on the wire.
                if let Some(BatchOp::UpsertMerge(e)) = ops.first() {
                    return table.upsert_merge(e).await.map(drop);
                }
            }
            table.batch(&ops).await.map(drop)
        }));
        Ok(())
    }

    /// Waits for every batch in flight: later writes to the same rows must not race earlier
    /// ones (batches in flight may land in any order). Rows still pending stay pending: a
    /// later write to one of them is folded into it, and the batch stays full.
    async fn settle(&mut self) -> Result<(), TableError> {
        while let Some(r) = self.in_flight.next().await {
            r?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, TableError> {
        self.flush_pending().await?;
        self.settle().await?;
        Ok(self.writes)
    }
}

/// A device row to write: its content as listed, and whether the row is new.
struct Held {
    content: DeviceContent,
    stale: bool,
    is_new: bool,
}

impl Held {
    fn entity(&self, tenant: &TenantId, now: OffsetDateTime) -> Entity {
        let e = devices::content_entity(tenant, &self.content, self.stale, now);
        if self.is_new {
            // Defaults for the columns the API filters on (a filter never matches a missing
            // property).
            e.with(col::DUPLICATE_OF, "").with(col::OFFBOARD, false)
        } else {
            e
        }
    }
}

fn device_ref(d: &DeviceContent) -> DeviceRef {
    DeviceRef {
        machine_id: d.machine_id.as_str().to_owned(),
        name: d.computer_dns_name.clone(),
    }
}

async fn sync(
    state: &AppState,
    client: &DefenderClient,
    table: &TableClient,
    tenant: &Tenant,
    job: &SyncJob,
    now: OffsetDateTime,
) -> Result<(SyncReport, Vec<Note>), SyncError> {
    let tenant_id: &TenantId = tenant.id();
    let stale_days = state.config().stale_after_days;
    let mut report = SyncReport::default();

    let started = std::time::Instant::now();
    let mut index = devices::load_index(table, tenant_id).await?;
    tracing::debug!(
        rows = index.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "stored index read"
    );
    let first_sync = index.is_empty();
    // Every device listed in this run, so a machine listed twice (paging under concurrent
    // change) is handled once: a stored device seen again must not pass for a new one (its
    // row would be rewritten with the defaults, clearing an operator's Offboard flag).
    let mut listed: HashSet<CompactMachineId> = HashSet::new();
    // For every live device: its duplicate key, and its DuplicateOf as stored (side by side,
    // so duplicate resolution reads the keys without a copy).
    let mut live_keys: Vec<DupKey> = Vec::new();
    let mut live_dups: Vec<Option<CompactMachineId>> = Vec::new();
    // A row to write for a device that may be a duplicate (Defender flags it, or it shares a
    // name or Entra id with a device listed earlier) waits for the duplicate pass, which
    // writes it once with its DuplicateOf: writing it now and marking it later would be two
    // writes, and a merge into an existing row costs Azurite more than an insert.
    let mut seen_keys = duplicates::SeenKeys::default();
    let mut held: HashMap<usize, Held> = HashMap::new();
    let mut onboarded: Vec<DeviceRef> = Vec::new();
    let mut turned_stale: Vec<DeviceRef> = Vec::new();
    let mut onboarded_count = 0u64;
    let mut turned_stale_count = 0u64;

    let mut writer = Writer::new(table);
    // The page loop produces rows; the writer consumes them. Through the channel, the next
    // Defender page is fetched and decoded while earlier batches are still being written.
    let (rows, queued) = tokio::sync::mpsc::channel::<Entity>(4 * MAX_BATCH_OPERATIONS);
    let producer = async {
        let rows = rows;
        let mut pages =
            std::pin::pin!(client.machine_pages::<MachineSummary>(MachineQuery::default()));
        while let Some(page) = pages.try_next().await? {
            report.pages += 1;
            tracing::debug!(
                page = report.pages,
                devices = page.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "page of machines read"
            );
            for machine in page {
                let Some(content) = to_content(machine) else {
                    report.skipped_invalid += 1;
                    continue;
                };
                let stale = is_stale(
                    content.last_seen,
                    content.health_status.as_deref(),
                    now,
                    stale_days,
                );
                let compact = CompactMachineId::from(&content.machine_id);
                if !listed.insert(compact) {
                    continue;
                }
                let stored = index.remove(&compact);
                let stored_dup = stored.as_ref().and_then(|s| s.duplicate_of);
                report.seen += 1;
                if stale {
                    report.stale += 1;
                }
                let key = DupKey::new(
                    content.machine_id.clone(),
                    content.computer_dns_name.as_deref(),
                    content.aad_device_id.as_deref(),
                    content.last_seen,
                    content.first_seen,
                    content.merged_into.clone(),
                );
                let candidate = seen_keys.insert(&key)
                    || content.potential_duplicate
                    || content.merged_into.is_some();
                // Some(is_new) when the row must be written.
                let write = match stored {
                    None => {
                        report.inserted += 1;
                        onboarded_count += 1;
                        if onboarded.len() < MAX_DEVICES_PER_NOTE {
                            onboarded.push(device_ref(&content));
                        }
                        Some(true)
                    }
                    Some(s) if s.hash != content.content_hash() || s.gone || s.stale != stale => {
                        report.updated += 1;
                        if stale && !s.stale && !s.gone {
                            turned_stale_count += 1;
                            if turned_stale.len() < MAX_DEVICES_PER_NOTE {
                                turned_stale.push(device_ref(&content));
                            }
                        }
                        Some(false)
                    }
                    Some(_) => {
                        report.unchanged += 1;
                        None
                    }
                };
                if let Some(is_new) = write {
                    let row = Held {
                        content,
                        stale,
                        is_new,
                    };
                    if candidate && held.len() < MAX_HELD_ROWS {
                        held.insert(live_keys.len(), row);
                    } else if rows.send(row.entity(tenant_id, now)).await.is_err() {
                        return Ok(());
                    }
                }
                live_keys.push(key);
                live_dups.push(stored_dup);
            }
        }
        Ok::<(), SyncError>(())
    };
    let consumer = async {
        // Owned here, so a failed write drops the receiver and the producer stops.
        let mut queued = queued;
        while let Some(e) = queued.recv().await {
            writer.push(e).await?;
        }
        Ok::<(), TableError>(())
    };
    // A failed write drops the receiver, which stops the producer at its next row.
    let (produced, consumed) = tokio::join!(producer, consumer);
    consumed?;
    produced?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "every page read and queued for writing"
    );

    // Only after every page was read: a partial listing must never mark devices gone.
    for (machine_id, summary) in &index {
        if !summary.gone {
            report.gone += 1;
            let e = Entity::new(tenant_id.as_str(), machine_id.to_machine_id().as_str())
                .with(col::GONE, true)
                .with(col::SYNCED_AT, now);
            writer.push(e).await?;
        }
    }

    // The DuplicateOf pass rewrites rows the content pass may still have in flight (a new
    // row is written with an empty DuplicateOf): let those land first.
    writer.settle().await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "content written"
    );
    drop(index);
    drop(listed);
    drop(seen_keys);
    let primaries: HashMap<CompactMachineId, CompactMachineId> = duplicates::resolve(&live_keys);
    report.duplicates = primaries.len() as u64;
    // Rows still pending in the writer (not sent yet) take their mark by folding it into the
    // pending write; every other write of this pass goes after them. Once a pending batch is
    // sent, no later write may touch its rows: two batches in flight on one row land in any
    // order, and a content write (DuplicateOf "") landing last would erase the mark.
    let mark = |dup: Option<CompactMachineId>| {
        dup.map(|p| p.to_machine_id().as_str().to_owned())
            .unwrap_or_default()
    };
    let mut later: Vec<(usize, Option<CompactMachineId>)> = Vec::new();
    for (i, (key, stored_dup)) in live_keys.iter().zip(&live_dups).enumerate() {
        let now_dup = primaries.get(&key.machine_id).copied();
        let is_held = held.contains_key(&i);
        if !is_held && now_dup == *stored_dup {
            continue;
        }
        let machine_id = key.machine_id.to_machine_id();
        if !is_held && writer.is_pending(machine_id.as_str()) {
            let e = Entity::new(tenant_id.as_str(), machine_id.as_str())
                .with(col::DUPLICATE_OF, mark(now_dup));
            writer.push(e).await?;
        } else {
            later.push((i, now_dup));
        }
    }
    for (i, now_dup) in later {
        let e = match held.remove(&i) {
            Some(row) => row.entity(tenant_id, now),
            None => Entity::new(
                tenant_id.as_str(),
                live_keys[i].machine_id.to_machine_id().as_str(),
            ),
        };
        writer
            .push(e.with(col::DUPLICATE_OF, mark(now_dup)))
            .await?;
    }
    report.table_writes = writer.finish().await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "duplicate marks written"
    );

    let mut notes = Vec::new();
    // The first sync of a tenant finds every device "new": that is not news.
    if !first_sync && onboarded_count > 0 {
        notes.push(Note {
            id: format!("{}-{}-onboarded", job.run_id, tenant_id),
            tenant_id: tenant_id.clone(),
            at: now,
            event: Event::DevicesOnboarded {
                run_id: job.run_id.clone(),
                count: onboarded_count,
                devices: onboarded,
            },
        });
    }
    if turned_stale_count > 0 {
        notes.push(Note {
            id: format!("{}-{}-stale", job.run_id, tenant_id),
            tenant_id: tenant_id.clone(),
            at: now,
            event: Event::DevicesStale {
                run_id: job.run_id.clone(),
                count: turned_stale_count,
                stale_after_days: stale_days,
                devices: turned_stale,
            },
        });
    }
    Ok((report, notes))
}
