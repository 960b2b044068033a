//! `IncidentWatch` (timer): new and changed Defender incidents per tenant, from Graph
//! `/v1.0/security/incidents` since the tenant's watermark.
//!
//! Per tenant: read the watermark (`Cursors`, RowKey `incidents`), list incidents updated
//! since it minus [`OVERLAP`] (all pages, `$expand=alerts`), compare each with its
//! `Incidents` row by fingerprint, write the rows, then move the watermark to the newest
//! `lastUpdateDateTime` seen, and return the notes.
//!
//! Ordering: rows, then cursor, then the answer that carries the notes. The notes are only
//! enqueued by the host after the answer; if the host dies in between they are lost (the
//! rows already say "notified"). The alternative, writing rows after the notes are queued,
//! is impossible from inside one invocation. The risk is one host crash wide and accepted.
//! Note ids are deterministic (`incident-<tenant>-<id>-<fingerprint>`) and dated by the
//! incident's last update, so a re-run that emits a note again is deduplicated by `Outbox`.

use std::collections::HashSet;

use anyhow::Context;
use futures::TryStreamExt;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::clients::graph::{GraphClient, GraphSettings, Incident, IncidentQuery, Severity};
use crate::clients::tables::{TableClient, TableError};
use crate::config::MinSeverity;
use crate::domain::notification::{DeviceRef, Event, MAX_DEVICES_PER_NOTE, Note};
use crate::domain::{IncidentId, TenantId};
use crate::error::InvocationFailure;
use crate::host::InvocationResponse;
use crate::store::audit::{self, AuditEntry};
use crate::store::incidents::{self, IncidentRow, IncidentState};
use crate::store::tenants::{self, Tenant};
use crate::store::{self, cursors, devices::col as device_col, names};

/// Re-read this much before the watermark: Graph's `lastUpdateDateTime` and page boundaries
/// can shift under concurrent updates; re-reading is free (unchanged rows are silent).
pub const OVERLAP: time::Duration = time::Duration::minutes(2);
/// How far back the first run of a tenant looks.
pub const FIRST_LOOKBACK: time::Duration = time::Duration::hours(24);

/// The tables one run uses.
struct Tables {
    incidents: TableClient,
    cursors: TableClient,
    devices: TableClient,
    audit: TableClient,
}

/// What one tenant's watch found.
#[derive(Debug, Default)]
struct TenantRun {
    notes: Vec<Note>,
    seen: u64,
    new: u64,
    changed: u64,
}

/// Watches every enabled tenant and returns the notes.
///
/// # Errors
/// When the tenant list or the tables can't be read (the next occurrence retries).
pub async fn handle(state: &AppState) -> Result<InvocationResponse, InvocationFailure> {
    let (notes, lines) = run(state).await.map_err(InvocationFailure)?;
    let answer =
        InvocationResponse::new().with_queue("notes", notes.iter().map(Note::to_message).collect());
    Ok(lines.into_iter().fold(answer, InvocationResponse::log))
}

/// One run over every enabled tenant: the notes, and a log line per tenant. A tenant whose
/// Graph call fails is logged and audited and does not stop the others.
///
/// # Errors
/// When the tenant list or the tables can't be read.
async fn run(state: &AppState) -> anyhow::Result<(Vec<Note>, Vec<String>)> {
    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .context("opening Tenants")?;
    let enabled = tenants::list(&tenants_table, true)
        .await
        .context("listing tenants")?;
    let tables = open_tables(state).await?;
    let now = state.now();
    let mut notes = Vec::new();
    let mut lines = Vec::new();
    for tenant in &enabled {
        let mut run = TenantRun::default();
        match watch_tenant(state, &tables, tenant, now, &mut run).await {
            Ok(()) => lines.push(format!(
                "tenant {}: {} incident(s) seen, {} new, {} changed",
                tenant.id(),
                run.seen,
                run.new,
                run.changed
            )),
            Err(e) => {
                record_failure(&tables.audit, tenant.id(), &e, now).await;
                lines.push(format!("tenant {} failed: {e:#}", tenant.id()));
            }
        }
        // Notes of rows already written go out even when a later page failed.
        notes.append(&mut run.notes);
    }
    tracing::info!(
        tenants = enabled.len(),
        notes = notes.len(),
        "incident watch done"
    );
    Ok((notes, lines))
}

async fn record_failure(
    audit_table: &TableClient,
    tenant: &TenantId,
    e: &anyhow::Error,
    now: OffsetDateTime,
) {
    tracing::warn!(tenant.id = %tenant, error = format!("{e:#}"), "incident watch failed for a tenant");
    let entry = AuditEntry::new(
        "IncidentWatchFailed",
        "incidents",
        format!("incident watch failed: {e:#}"),
        now,
    );
    let unique = format!("incidents-{}", now.unix_timestamp());
    if let Err(ae) = audit::append(audit_table, tenant, &entry, &unique).await {
        tracing::warn!(tenant.id = %tenant, error = %ae, "could not audit the failure");
    }
}

async fn open_tables(state: &AppState) -> anyhow::Result<Tables> {
    let open = |name: &'static str| async move {
        store::open(state.tables(), name)
            .await
            .with_context(|| format!("opening {name}"))
    };
    Ok(Tables {
        incidents: open(names::INCIDENTS).await?,
        cursors: open(names::CURSORS).await?,
        devices: open(names::DEVICES).await?,
        audit: open(names::AUDIT).await?,
    })
}

fn min_rank(min: MinSeverity) -> u8 {
    match min {
        MinSeverity::Low => Severity::Low.rank(),
        MinSeverity::Medium => Severity::Medium.rank(),
        MinSeverity::High => Severity::High.rank(),
    }
}

fn state_of(i: &Incident) -> IncidentState {
    IncidentState::new(
        i.status.as_ref().map(|s| s.as_str()).unwrap_or_default(),
        i.severity.as_ref().map(|s| s.as_str()).unwrap_or_default(),
        i.classification.as_deref().unwrap_or_default(),
        i.assigned_to.as_deref().unwrap_or_default(),
    )
}

/// The deterministic id of the note about this state of the incident.
#[must_use]
pub fn note_id(tenant: &TenantId, incident: &IncidentId, fingerprint: &str) -> String {
    format!(
        "incident-{}-{}-{fingerprint}",
        tenant.as_str(),
        incident.as_str()
    )
}

async fn watch_tenant(
    state: &AppState,
    tables: &Tables,
    tenant: &Tenant,
    now: OffsetDateTime,
    run: &mut TenantRun,
) -> anyhow::Result<()> {
    let tenant_id = tenant.id();
    let watermark = cursors::get_time(&tables.cursors, tenant_id, cursors::INCIDENTS)
        .await
        .context("reading the incident watermark")?;
    let since = watermark.map_or(now - FIRST_LOOKBACK, |w| w - OVERLAP);
    let services = state.services();
    let graph = GraphClient::new(
        services.http.clone(),
        GraphSettings::new(state.config().graph_api_base.clone()),
        services.credentials.clone(),
        tenant.auth.clone(),
    );
    let min = min_rank(state.config().incident_min_severity);
    let mut newest = watermark;
    let mut seen_ids = HashSet::new();
    let mut pages = std::pin::pin!(graph.incidents(IncidentQuery {
        since: Some(since),
        page_size: None,
    }));
    while let Some(page) = pages.try_next().await.context("listing incidents")? {
        for incident in page {
            let Ok(id) = IncidentId::parse(&incident.id) else {
                tracing::warn!(tenant.id = %tenant_id, "skipping an incident with an unusable id");
                continue;
            };
            // Paging under concurrent updates can list one incident twice.
            if !seen_ids.insert(id.clone()) {
                continue;
            }
            run.seen += 1;
            if let Some(note) = observe(tables, tenant_id, &id, &incident, min, now).await? {
                match note.event {
                    Event::IncidentNew { .. } => run.new += 1,
                    _ => run.changed += 1,
                }
                run.notes.push(note);
            }
            newest = newest.max(incident.last_update_date_time);
        }
    }
    if newest > watermark
        && let Some(w) = newest
    {
        cursors::set_time(&tables.cursors, tenant_id, cursors::INCIDENTS, w, now)
            .await
            .context("moving the incident watermark")?;
    }
    Ok(())
}

/// Compares one incident with its row, writes the row when the state changed, and returns
/// the note to send, if any.
async fn observe(
    tables: &Tables,
    tenant: &TenantId,
    id: &IncidentId,
    incident: &Incident,
    min_rank: u8,
    now: OffsetDateTime,
) -> Result<Option<Note>, TableError> {
    let current = state_of(incident);
    let fingerprint = current.fingerprint();
    let before = incidents::get(&tables.incidents, tenant, id).await?;
    if before
        .as_ref()
        .is_some_and(|b| b.fingerprint == fingerprint)
    {
        return Ok(None);
    }
    let title = incident
        .display_name
        .clone()
        .unwrap_or_else(|| format!("Incident {}", id.as_str()));
    let rank = |s: &str| Severity::parse(s).rank();
    let event = match &before {
        None if rank(&current.severity) >= min_rank => Some(Event::IncidentNew {
            incident_id: id.as_str().to_owned(),
            title: title.clone(),
            severity: current.severity.clone(),
            status: current.status.clone(),
            url: incident.incident_web_url.clone(),
            devices: linked_devices(&tables.devices, tenant, incident).await?,
        }),
        // Changes matter while the incident is, or was, at the threshold: a low incident
        // raised to high is news, a low one closed is not.
        Some(b) if rank(&current.severity).max(rank(&b.state.severity)) >= min_rank => {
            Some(Event::IncidentChanged {
                incident_id: id.as_str().to_owned(),
                title: title.clone(),
                severity: current.severity.clone(),
                status: current.status.clone(),
                changes: current.changes_since(&b.state),
                url: incident.incident_web_url.clone(),
            })
        }
        _ => None,
    };
    let row = IncidentRow {
        title,
        state: current,
        last_update: incident.last_update_date_time,
        fingerprint: fingerprint.clone(),
    };
    incidents::put(&tables.incidents, tenant, id, &row, now).await?;
    Ok(event.map(|event| Note {
        id: note_id(tenant, id, &fingerprint),
        tenant_id: tenant.clone(),
        // Dated by the incident, not the run: a re-run's note lands in the same Outbox day.
        at: incident.last_update_date_time.unwrap_or(now),
        event,
    }))
}

/// The incident's devices (MDE ids from device evidence), named from `Devices` when synced,
/// else from the evidence.
async fn linked_devices(
    devices: &TableClient,
    tenant: &TenantId,
    incident: &Incident,
) -> Result<Vec<DeviceRef>, TableError> {
    let mut out = Vec::new();
    for machine_id in incident
        .mde_device_ids()
        .into_iter()
        .take(MAX_DEVICES_PER_NOTE)
    {
        let stored = match devices.get(tenant.as_str(), machine_id).await {
            Ok(row) => row.and_then(|r| {
                r.get_str(device_col::NAME)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
            }),
            // A machine id the table can't key is just not linked.
            Err(TableError::InvalidKey { .. }) => None,
            Err(e) => return Err(e),
        };
        let from_evidence = || {
            incident
                .alerts
                .iter()
                .flat_map(|a| a.evidence.iter())
                .find(|e| e.mde_device_id.as_deref() == Some(machine_id))
                .and_then(|e| e.device_dns_name.clone())
        };
        out.push(DeviceRef {
            machine_id: machine_id.to_owned(),
            name: stored.or_else(from_evidence),
        });
    }
    Ok(out)
}
