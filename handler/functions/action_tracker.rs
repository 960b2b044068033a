//! `ActionTracker` (timer): follow submitted machine actions to a final status.
//!
//! An offline device keeps its action `Pending` for days; that is normal and the request
//! stays `Submitted` until Defender itself ends the action (Succeeded, Failed, TimeOut,
//! Cancelled). Each tenant is checked within its rate budget, oldest requests first, and a
//! run stops early rather than use up the budget the offboard workers need.
//!
//! It also walks the requests waiting for an approver (design §9.4): those past
//! `APPROVAL_TTL_HOURS` become `Expired`, the others are announced once. This timer does it
//! because it already walks each tenant's open requests every few minutes and is the one
//! with the `notes` output those notes need (no Defender call, no budget used).

use crate::app::AppState;
use std::collections::HashMap;

use crate::clients::defender::{DefenderError, MachineAction};
use crate::domain::notification::Note;
use crate::domain::request::RequestStatus;
use crate::error::InvocationFailure;
use crate::host::InvocationResponse;
use crate::offboard::{self, Change, Tables};
use crate::store::requests;
use crate::store::tenants::{self, Tenant};
use crate::store::{self, names};

/// Single machine-action lookups per tenant and run (of the 100 calls a minute Defender
/// allows), for requests the list call didn't cover.
const MAX_LOOKUPS_PER_TENANT: usize = 30;
/// Our clock and Defender's differ; list actions created a little before our oldest request.
const LIST_SKEW: time::Duration = time::Duration::minutes(10);

/// Polls every tracked request of every enabled tenant.
///
/// # Errors
/// Only when the tenant list can't be read; a failing tenant is logged and skipped.
pub async fn handle(state: &AppState) -> Result<InvocationResponse, InvocationFailure> {
    let fail = |e: anyhow::Error| InvocationFailure(e);
    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(|e| fail(e.into()))?;
    let enabled = tenants::list(&tenants_table, true)
        .await
        .map_err(|e| fail(e.into()))?;
    let t = Tables::open(state.tables())
        .await
        .map_err(|e| fail(e.into()))?;
    let mut notes: Vec<Note> = Vec::new();
    let mut checked = 0usize;
    let ttl = time::Duration::hours(i64::from(state.config().approval_ttl_hours));
    let console_base = state.config().console.base_url.clone();
    for tenant in &enabled {
        match offboard::approvals::sweep_waiting(
            &t,
            tenant.id(),
            ttl,
            console_base.as_ref(),
            state.now(),
        )
        .await
        {
            Ok(n) => notes.extend(n),
            Err(e) => {
                tracing::warn!(tenant.id = %tenant.id(), error = %e, "expiring and announcing waiting requests failed; next run retries")
            }
        }
        match track_tenant(state, &t, tenant, &mut notes).await {
            Ok(n) => checked += n,
            Err(e) => {
                tracing::warn!(tenant.id = %tenant.id(), error = %format!("{e:#}"), "tracking this tenant's actions failed; next run retries")
            }
        }
    }
    let line = format!(
        "checked {checked} machine action(s), {} note(s) (final states, approvals)",
        notes.len()
    );
    Ok(InvocationResponse::new()
        .with_queue("notes", notes.iter().map(Note::to_message).collect())
        .log(line))
}

async fn track_tenant(
    state: &AppState,
    t: &Tables,
    tenant: &Tenant,
    notes: &mut Vec<Note>,
) -> anyhow::Result<usize> {
    let mut tracked = requests::with_status(
        &t.requests,
        tenant.id(),
        &[RequestStatus::Submitted, RequestStatus::InProgress],
        usize::MAX,
    )
    .await?;
    if tracked.is_empty() {
        return Ok(0);
    }
    // Oldest first, so a long tail can't starve the first requests.
    tracked.sort_by_key(|v| v.request.updated_at);
    let client = state.defender(tenant).await?;
    // One list call covers every tracked request (created since the oldest, with room for
    // clock skew); single lookups are only for what the list missed, and capped.
    let listed: HashMap<String, MachineAction> = if tracked.len() > 1 {
        let oldest = tracked
            .iter()
            .map(|v| v.request.created_at)
            .min()
            .unwrap_or_else(|| state.now());
        match client.offboard_actions_since(oldest - LIST_SKEW).await {
            Ok(actions) => actions.into_iter().map(|a| (a.id.clone(), a)).collect(),
            Err(DefenderError::Throttled { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    } else {
        HashMap::new()
    };
    let mut checked = 0;
    let mut lookups = 0;
    for current in tracked {
        let Some(action_id) = current.request.action_id.clone() else {
            continue;
        };
        let action = if let Some(a) = listed.get(&action_id) {
            a.clone()
        } else {
            if lookups >= MAX_LOOKUPS_PER_TENANT {
                continue;
            }
            lookups += 1;
            match client.machine_action(&action_id).await {
                Ok(a) => a,
                Err(DefenderError::Throttled { .. }) => break,
                Err(DefenderError::NotFound { message }) => {
                    let change = Change {
                        message: Some(message),
                        detail: format!("Defender no longer knows machine action {action_id}"),
                        ..Change::default()
                    };
                    if let Some((_, Some(note))) = offboard::transition(
                        t,
                        &current,
                        RequestStatus::Failed,
                        change,
                        state.now(),
                    )
                    .await?
                    {
                        notes.push(note);
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        };
        checked += 1;
        let Some(next) = action
            .status
            .as_ref()
            .and_then(|s| RequestStatus::from_action_status(s.as_str()))
        else {
            continue;
        };
        if next == current.request.status {
            continue;
        }
        let change = Change {
            detail: format!(
                "machine action {action_id} is {}",
                action.status.as_ref().map_or("", |s| s.as_str())
            ),
            ..Change::default()
        };
        match offboard::transition(t, &current, next, change, state.now()).await {
            Ok(Some((_, Some(note)))) => notes.push(note),
            Ok(_) => {}
            // A worker or another tracker moved it meanwhile: the next run sees the new state.
            Err(crate::clients::tables::TableError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(checked)
}
