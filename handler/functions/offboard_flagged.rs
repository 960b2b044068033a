//! `OffboardFlagged` (timer): devices an admin flagged become offboard requests (source
//! `flag`), at most `OFFBOARD_MAX_PER_RUN` per tenant and run; each flag is reset and the
//! device's `Result` says what happened, as the seed SharePoint flow did. It also re-queues
//! requests stuck in `Accepted` (an output binding lost to a crash).

use time::Duration;

use crate::app::AppState;
use crate::clients::tables::{Entity, IfMatch, TableError, filter};
use crate::domain::request::{DEFAULT_COMMENT, RequestStatus, Source};
use crate::domain::{Actor, MachineId, TenantId};
use crate::error::InvocationFailure;
use crate::host::InvocationResponse;
use crate::offboard::{self, Accepted, NewRequest, OffboardJob, Selector, Tables};
use crate::store::devices::{DeviceRow, col};
use crate::store::requests;
use crate::store::tenants::{self, Tenant};
use crate::store::{self, names};

/// A request still `Accepted` this long after its last change lost its queue message.
const STUCK_AFTER: Duration = Duration::minutes(10);

/// Turns flags into requests and re-queues stuck ones, tenant by tenant.
///
/// # Errors
/// Only when the tenant list can't be read; a failing tenant is logged and skipped.
pub async fn handle(state: &AppState) -> Result<InvocationResponse, InvocationFailure> {
    let fail = |e: TableError| InvocationFailure(e.into());
    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(fail)?;
    let enabled = tenants::list(&tenants_table, true).await.map_err(fail)?;
    let t = Tables::open(state.tables()).await.map_err(fail)?;
    let mut jobs = Vec::new();
    let (mut flagged, mut requeued) = (0usize, 0usize);
    for tenant in &enabled {
        match flags_of(state, &t, tenant).await {
            Ok(j) => {
                flagged += j.len();
                jobs.extend(j);
            }
            Err(e) => {
                tracing::warn!(tenant.id = %tenant.id(), error = %e, "turning flags into requests failed; next run retries")
            }
        }
        match stuck_of(state, &t, tenant.id()).await {
            Ok(j) => {
                requeued += j.len();
                jobs.extend(j);
            }
            Err(e) => {
                tracing::warn!(tenant.id = %tenant.id(), error = %e, "re-queueing stuck requests failed")
            }
        }
    }
    tracing::info!(flagged, requeued, "flag-driven offboarding queued");
    Ok(InvocationResponse::new()
        .with_queue("jobs", jobs)
        .log(format!(
            "{flagged} flagged device(s) queued, {requeued} stuck request(s) re-queued"
        )))
}

async fn flags_of(
    state: &AppState,
    t: &Tables,
    tenant: &Tenant,
) -> Result<Vec<String>, TableError> {
    let cap = state.config().offboard_max_per_run;
    let f = filter::and(
        &filter::eq("PartitionKey", tenant.id().as_str()),
        &filter::eq(col::OFFBOARD, true),
    );
    let page = t.devices.query(Some(&f), None, Some(cap), None).await?;
    let now = state.now();
    let mut jobs = Vec::new();
    for entity in page.entities.into_iter().take(cap as usize) {
        let device = DeviceRow { entity };
        let outcome = match offboard::check_policy(
            t,
            tenant.id(),
            &device,
            &state.config().offboard_exclude_tag,
        )
        .await?
        {
            Err(refusal) => Err(refusal.message().to_owned()),
            Ok(()) => {
                let Ok(machine) = MachineId::parse(device.machine_id()) else {
                    continue;
                };
                let new = NewRequest {
                    tenant_id: tenant.id().clone(),
                    selector: Selector::MachineId(machine),
                    source: Source::Flag,
                    // Whoever set the flag asked; the timer only carries it out.
                    actor: device
                        .offboard_actor()
                        .unwrap_or_else(|| Actor::timer("OffboardFlagged")),
                    request_id: None,
                    requested_by: Some("Offboard flag".into()),
                    comment: DEFAULT_COMMENT.into(),
                    // One request per flagged device per flag setting: a re-run of this timer
                    // before the flag was reset finds the same key.
                    idempotency_key: crate::domain::request::IdempotencyKey::parse(&format!(
                        "flag-{}-{}",
                        device.machine_id(),
                        device.entity.timestamp.map_or(0, |t| t.unix_timestamp())
                    ))
                    .ok(),
                    dry_run: false,
                };
                match offboard::accept(t, &new, &device, tenant.approval, now).await? {
                    Accepted::New(r) => Ok(Some(r)),
                    Accepted::Repeat { existing, .. } => Ok(existing.filter(|r| {
                        matches!(
                            r.status,
                            RequestStatus::Accepted | RequestStatus::AwaitingApproval
                        )
                    })),
                    // The key names the device and the flag's time: another request can't hold it.
                    Accepted::KeyReused { request_id } => {
                        Err(format!("Flag key already used by request {request_id}"))
                    }
                }
            }
        };
        // Reset the flag, and say what happened in Result, ETag-guarded: an admin who
        // flips the flag again meanwhile wins, and the next run sees it.
        // A request held for approval gets no job: approving it queues one.
        let (result, request, job) = match outcome {
            Ok(Some(r)) if r.status == RequestStatus::AwaitingApproval => {
                (r.status.as_str().to_owned(), Some(r.request_id), None)
            }
            Ok(Some(r)) => {
                let job = OffboardJob {
                    tenant_id: r.tenant_id.clone(),
                    request_id: r.request_id.clone(),
                };
                (
                    "Queued".to_owned(),
                    Some(r.request_id),
                    Some(job.to_message()),
                )
            }
            Ok(None) => ("Queued".to_owned(), None, None),
            Err(reason) => (reason, None, None),
        };
        let mut reset = Entity::new(tenant.id().as_str(), device.machine_id())
            .with(col::OFFBOARD, false)
            .with(col::RESULT, result.as_str())
            .with(col::RESULT_AT, now);
        if let Some(id) = &request {
            reset.set(col::LAST_REQUEST, id.as_str());
        }
        if let Some(message) = &job {
            jobs.push(message.clone());
        }
        // Accepting wrote Result/LastRequestId, so read the row's current ETag; a flag an
        // admin cleared in the meantime stays cleared.
        let Some(fresh) = t
            .devices
            .get(tenant.id().as_str(), device.machine_id())
            .await?
        else {
            continue;
        };
        if fresh.get_bool(col::OFFBOARD) != Some(true) && request.is_none() {
            continue;
        }
        let etag = fresh.etag.clone();
        match t
            .devices
            .update_merge(&reset, etag.map_or(IfMatch::Any, IfMatch::Etag))
            .await
        {
            Ok(_) | Err(TableError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(jobs)
}

async fn stuck_of(
    state: &AppState,
    t: &Tables,
    tenant: &TenantId,
) -> Result<Vec<String>, TableError> {
    let now = state.now();
    let accepted =
        requests::with_status(&t.requests, tenant, &[RequestStatus::Accepted], 500).await?;
    let mut jobs = Vec::new();
    for v in accepted {
        if now - v.request.updated_at < STUCK_AFTER {
            continue;
        }
        // Touch it so the next run waits another 10 minutes before re-queueing again.
        let mut r = v.request.clone();
        r.updated_at = now;
        match requests::update(&t.requests, &r, v.etag.clone()).await {
            Ok(_) => {}
            Err(TableError::PreconditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
        tracing::info!(request.id = %r.request_id, "re-queueing a request stuck in Accepted");
        jobs.push(
            OffboardJob {
                tenant_id: r.tenant_id.clone(),
                request_id: r.request_id.clone(),
            }
            .to_message(),
        );
    }
    Ok(jobs)
}
