//! What the console asks of offboarding, as use cases without HTTP: offboard a set of
//! devices for a signed-in person (the webhook's acceptance, policies and idempotency, one
//! answer per device), list requests across tenants, list what awaits approval.

use crate::app::AppState;
use crate::domain::request::{IdempotencyKey, RequestStatus, Source};
use crate::domain::{Actor, MachineId, TenantId};
use crate::error::ApiError;
use crate::store::requests::{self, OffboardRequest};
use crate::store::{self, names, tenants};

use super::webhook::{self, Outcome};
use super::{NewRequest, OffboardJob, Selector};

/// The longest reason kept (it becomes Defender's `Comment`).
pub const MAX_REASON_CHARS: usize = 500;

/// An offboarding form, as submitted.
#[derive(Debug, Clone)]
pub struct Selection {
    pub tenant_id: TenantId,
    pub machines: Vec<MachineId>,
    pub reason: String,
    /// The form's one-time value: a double click or a reload sends it again, and each
    /// device's idempotency key (`console-<nonce>-<machineId>`) finds the first request.
    pub nonce: String,
}

/// What became of one device of a selection.
#[derive(Debug, Clone)]
pub enum DeviceAnswer {
    /// A new request: `Accepted` (its job queued) or `AwaitingApproval`.
    New(OffboardRequest),
    /// This form was submitted before: its request.
    Repeat(Option<OffboardRequest>),
    /// Refused, with the policy's code and reason (as the webhook would answer).
    Refused { code: &'static str, message: String },
}

/// One device's answer.
#[derive(Debug, Clone)]
pub struct DeviceOutcome {
    pub machine_id: MachineId,
    pub answer: DeviceAnswer,
}

/// A form nonce: 8-64 of letters, digits and `-`.
///
/// # Errors
/// 400 otherwise.
pub fn check_nonce(nonce: &str) -> Result<(), ApiError> {
    let ok = (8..=64).contains(&nonce.len())
        && nonce.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidNonce",
            "the form's nonce must be 8-64 letters, digits or '-'; reload the page",
        ))
    }
}

/// Offboards each device of `selection` for `actor`: the webhook's use case per device
/// (tenant, device, policy, the tenant's approval mode, idempotency), so a device is
/// accepted, held for approval or refused exactly as a webhook call would be. At most
/// `OFFBOARD_MAX_PER_RUN` devices per submission. Returns each device's answer and the
/// jobs to queue.
///
/// # Errors
/// 400 for an empty or oversized selection, a missing or long reason, a bad nonce; 404
/// unknown tenant; 5xx storage (devices answered before it stay answered: a resubmission
/// of the same form repeats them).
pub async fn offboard_devices(
    state: &AppState,
    actor: &Actor,
    selection: &Selection,
) -> Result<(Vec<DeviceOutcome>, Vec<OffboardJob>), ApiError> {
    check_nonce(&selection.nonce)?;
    let reason = selection.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(
            "InvalidReason",
            format!("give a reason of 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    let cap = state.config().offboard_max_per_run as usize;
    if selection.machines.is_empty() || selection.machines.len() > cap {
        return Err(ApiError::bad_request(
            "InvalidSelection",
            format!("select 1 to {cap} devices (OFFBOARD_MAX_PER_RUN) per submission"),
        ));
    }
    webhook::check_tenant(state, &selection.tenant_id).await?;
    let mut machines = selection.machines.clone();
    machines.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    machines.dedup();
    let mut outcomes = Vec::with_capacity(machines.len());
    let mut jobs = Vec::new();
    for machine in machines {
        let key = IdempotencyKey::parse(&format!(
            "console-{}-{}",
            selection.nonce,
            machine.as_str().to_ascii_lowercase()
        ))
        .map_err(|e| ApiError::bad_request("InvalidNonce", e))?;
        let new = NewRequest {
            tenant_id: selection.tenant_id.clone(),
            selector: Selector::MachineId(machine.clone()),
            source: Source::Console,
            actor: actor.clone(),
            requested_by: None,
            comment: reason.to_owned(),
            idempotency_key: Some(key),
            dry_run: false,
            request_id: None,
        };
        let answer = match webhook::decide(state, &new).await {
            Ok(Outcome::New { request, job }) => {
                jobs.extend(job);
                DeviceAnswer::New(request)
            }
            Ok(Outcome::Repeat { existing, job, .. }) => {
                jobs.extend(job);
                DeviceAnswer::Repeat(existing)
            }
            Err(e) if e.status() < 500 => DeviceAnswer::Refused {
                code: e.code(),
                message: e.to_string(),
            },
            Err(e) => return Err(e),
        };
        outcomes.push(DeviceOutcome {
            machine_id: machine,
            answer,
        });
    }
    Ok((outcomes, jobs))
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub tenant: Option<TenantId>,
    pub status: Option<RequestStatus>,
}

/// Requests across every registered tenant (or one), newest first, at most `limit`. Reads
/// at most `limit` rows per tenant: a tenant's partition is not in time order, so with more
/// requests than that in one tenant the newest may be missed; filter by state to narrow.
///
/// # Errors
/// 5xx storage.
pub async fn list_requests(
    state: &AppState,
    filter: &RequestFilter,
    limit: usize,
) -> Result<Vec<OffboardRequest>, ApiError> {
    let storage = |e| ApiError::Internal(anyhow::Error::new(e).context("Table Storage"));
    let tenant_ids: Vec<TenantId> = match &filter.tenant {
        Some(t) => vec![t.clone()],
        None => {
            let table = store::open(state.tables(), names::TENANTS)
                .await
                .map_err(storage)?;
            tenants::list(&table, false)
                .await
                .map_err(storage)?
                .iter()
                .map(|t| t.id().clone())
                .collect()
        }
    };
    let table = store::open(state.tables(), names::OFFBOARD_REQUESTS)
        .await
        .map_err(storage)?;
    let mut out = Vec::new();
    for tenant in &tenant_ids {
        out.extend(
            requests::of_tenant(&table, tenant, filter.status, limit)
                .await
                .map_err(storage)?
                .into_iter()
                .map(|v| v.request),
        );
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    out.truncate(limit);
    Ok(out)
}

/// What waits for an approver, oldest first (the first to expire on top).
///
/// # Errors
/// 5xx storage.
pub async fn awaiting_approval(
    state: &AppState,
    limit: usize,
) -> Result<Vec<OffboardRequest>, ApiError> {
    let filter = RequestFilter {
        tenant: None,
        status: Some(RequestStatus::AwaitingApproval),
    };
    let mut waiting = list_requests(state, &filter, limit).await?;
    waiting.reverse();
    Ok(waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_nonces_are_short_safe_key_parts() {
        assert!(check_nonce("a1b2c3d4").is_ok());
        assert!(check_nonce(&"a".repeat(64)).is_ok());
        for bad in ["short", "", "has space1", "sl/ash123", &"a".repeat(65)] {
            assert!(check_nonce(bad).is_err(), "{bad}");
        }
    }
}
