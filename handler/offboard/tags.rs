//! The exclusion list (design §3's `OFFBOARD_EXCLUDE_TAG`): an operator puts a device on it,
//! or takes it off, through Defender's "Add or Remove Tag for a machine" API (needs
//! `Machine.ReadWrite.All`). Defender is the source of truth: the device row's `MachineTags`
//! takes the tags Defender answers with, the next sync reads the same, and an Audit row
//! records who did it.

use crate::app::AppState;
use crate::clients::defender::DefenderError;
use crate::clients::tables::{Entity, IfMatch, TableError};
use crate::domain::{Actor, MachineId, TenantId};
use crate::error::ApiError;
use crate::store::audit::{self, AuditEntry};
use crate::store::devices::{self, DeviceRow, col, join_tags};
use crate::store::{self, names, tenants};

fn storage(e: TableError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e).context("Table Storage"))
}

/// Adds (`exclude = true`) or removes the exclusion tag on one device of `tenant`, for
/// `actor`, and answers the device row as it now is.
///
/// # Errors
/// 404 unknown tenant or device; 422 disabled tenant, or no exclusion tag configured; 503
/// when Defender throttles or is down; 502-like internal errors for a refused permission
/// (the message names `Machine.ReadWrite.All`).
pub async fn set_exclusion(
    state: &AppState,
    tenant_id: &TenantId,
    machine: &MachineId,
    exclude: bool,
    actor: &Actor,
) -> Result<DeviceRow, ApiError> {
    let tag = state.config().offboard_exclude_tag.clone();
    if tag.is_empty() {
        return Err(ApiError::unprocessable(
            "NoExclusionTag",
            "OFFBOARD_EXCLUDE_TAG is empty: there is no exclusion tag to set",
        ));
    }
    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    let tenant = match tenants::get(&tenants_table, tenant_id)
        .await
        .map_err(storage)?
    {
        None => return Err(crate::functions::tenants::unknown(tenant_id)),
        Some(v) if !v.tenant.enabled => {
            return Err(ApiError::unprocessable(
                "TenantDisabled",
                format!("tenant {tenant_id} is disabled"),
            ));
        }
        Some(v) => v.tenant,
    };
    let devices_table = store::open(state.tables(), names::DEVICES)
        .await
        .map_err(storage)?;
    if devices::get(&devices_table, tenant_id, machine)
        .await
        .map_err(storage)?
        .is_none()
    {
        return Err(ApiError::not_found(
            "DeviceNotFound",
            format!("machine {machine} is not known in tenant {tenant_id}"),
        ));
    }
    let client = state.defender(&tenant).await.map_err(ApiError::Internal)?;
    let answered = client
        .tag_machine(machine, &tag, exclude)
        .await
        .map_err(defender_error)?;
    let now = state.now();
    let row = Entity::new(tenant_id.as_str(), machine.as_str())
        .with(col::TAGS, join_tags(&answered.machine_tags));
    match devices_table.update_merge(&row, IfMatch::Any).await {
        Ok(_) | Err(TableError::NotFound { .. }) => {}
        Err(e) => return Err(storage(e)),
    }
    let what = if exclude { "added" } else { "removed" };
    let entry = AuditEntry::new(
        "Tag",
        machine.as_str(),
        format!("exclusion tag '{tag}' {what} by {actor}"),
        now,
    )
    .by(actor)
    .with("Tag", tag.as_str())
    .with("Action", if exclude { "Add" } else { "Remove" });
    let audit_table = store::open(state.tables(), names::AUDIT)
        .await
        .map_err(storage)?;
    audit::append(
        &audit_table,
        tenant_id,
        &entry,
        &format!("tag-{}-{}", machine, now.unix_timestamp_nanos()),
    )
    .await
    .map_err(storage)?;
    tracing::info!(tenant.id = %tenant_id, device.id = %machine, actor = %actor, exclude, "exclusion tag changed");
    devices::get(&devices_table, tenant_id, machine)
        .await
        .map_err(storage)?
        .ok_or_else(|| {
            ApiError::not_found(
                "DeviceNotFound",
                format!("machine {machine} is not known in tenant {tenant_id}"),
            )
        })
}

fn defender_error(e: DefenderError) -> ApiError {
    match e {
        DefenderError::NotFound { message } => ApiError::not_found("DeviceNotFound", message),
        DefenderError::Forbidden { message, .. } => ApiError::unprocessable(
            "MissingPermission",
            format!(
                "Defender refused the tag change: the tenant's app needs Machine.ReadWrite.All (grant it and give admin consent): {message}"
            ),
        ),
        DefenderError::BadRequest { message, .. } => {
            ApiError::unprocessable("DefenderRefused", message)
        }
        e if e.is_transient() => ApiError::Unavailable(format!(
            "Defender can't take the tag change right now; retry later ({e})"
        )),
        e => ApiError::Internal(anyhow::Error::new(e).context("changing a machine tag")),
    }
}
