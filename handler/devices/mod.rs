//! Device queries and the `Offboard` flag, shared by `Devices` (HTTP API) and the console:
//! a tenant's devices listed a page at a time under a filter, one device read, its flag set.
//! Every query stays inside the tenant's partition, whatever a continuation token says.

use crate::app::AppState;
use crate::clients::tables::{
    Continuation, Entity, IfMatch, TableClient, TableError, TableService, filter,
};
use crate::domain::{Actor, MachineId, TenantId};
use crate::store::audit::{self, AuditEntry};
use crate::store::devices::{self, DeviceRow, col};
use crate::store::{self, names, tenants};

/// A page when the caller names no size.
pub const DEFAULT_TOP: u32 = 100;
/// The largest page a caller may ask for.
pub const MAX_TOP: u32 = 1000;
/// The longest `os` or `name` criterion, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// Which devices to list; `None` leaves a column unfiltered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub stale: Option<bool>,
    /// `true`: marked a duplicate of another device; `false`: not marked.
    pub duplicate: Option<bool>,
    pub gone: Option<bool>,
    pub offboard: Option<bool>,
    /// The OS platform, exactly (`Windows11`, `macOS`...).
    pub os: Option<String>,
    /// A prefix of the device's DNS name.
    pub name: Option<String>,
}

impl DeviceFilter {
    /// The OData filter; every value goes through the quoting helpers.
    #[must_use]
    pub fn to_odata(&self, tenant: &TenantId) -> String {
        let mut f = filter::eq("PartitionKey", tenant.as_str());
        for (value, column) in [
            (self.stale, col::STALE),
            (self.gone, col::GONE),
            (self.offboard, col::OFFBOARD),
        ] {
            if let Some(v) = value {
                f = filter::and(&f, &filter::eq(column, v));
            }
        }
        if let Some(dup) = self.duplicate {
            let cond = if dup {
                filter::ne(col::DUPLICATE_OF, "")
            } else {
                filter::eq(col::DUPLICATE_OF, "")
            };
            f = filter::and(&f, &cond);
        }
        if let Some(os) = &self.os {
            f = filter::and(&f, &filter::eq(col::OS, os.as_str()));
        }
        if let Some(name) = &self.name {
            f = filter::and(&f, &filter::starts_with(col::NAME, name));
        }
        f
    }
}

/// Whether `v` may be an `os` or `name` criterion: at most [`MAX_TEXT_CHARS`] printable
/// characters.
#[must_use]
pub fn is_valid_text(v: &str) -> bool {
    v.chars().count() <= MAX_TEXT_CHARS && !v.chars().any(char::is_control)
}

/// One page of a listing, and where the next one starts.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<DeviceRow>,
    pub continuation: Option<Continuation>,
}

/// The `Devices` table when `tenant` is registered, `None` when it is not.
///
/// # Errors
/// Storage failures.
pub async fn open_for(
    tables: &TableService,
    tenant: &TenantId,
) -> Result<Option<TableClient>, TableError> {
    let tenants_table = store::open(tables, names::TENANTS).await?;
    if tenants::get(&tenants_table, tenant).await?.is_none() {
        return Ok(None);
    }
    store::open(tables, names::DEVICES).await.map(Some)
}

/// One page of the tenant's devices that match `filter`.
///
/// # Errors
/// Storage failures.
pub async fn list(
    table: &TableClient,
    tenant: &TenantId,
    filter: &DeviceFilter,
    top: u32,
    continuation: Option<Continuation>,
) -> Result<Page, TableError> {
    // A token from another tenant's listing must not read across tenants: the partition
    // filter stays in force whatever the token says.
    let f = filter.to_odata(tenant);
    let page = table.query(Some(&f), None, Some(top), continuation).await?;
    Ok(Page {
        items: page
            .entities
            .into_iter()
            .map(|entity| DeviceRow { entity })
            .collect(),
        continuation: page.continuation,
    })
}

/// Why the flag was not set.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("device {machine} is not known in tenant {tenant}")]
    NotFound {
        tenant: TenantId,
        machine: MachineId,
    },
    #[error("Defender no longer reports this device; there is nothing to offboard")]
    Gone,
    #[error("the device kept changing while the flag was being set; retry")]
    Concurrent,
    #[error(transparent)]
    Storage(#[from] TableError),
}

/// Sets the device's `Offboard` flag (`OffboardFlagged` picks it up) and returns the row as
/// it is afterwards; setting it to what it already is writes nothing.
///
/// # Errors
/// [`FlagError`]: unknown device, a gone device flagged, a lost race three times, storage.
pub async fn set_offboard_flag(
    state: &AppState,
    table: &TableClient,
    tenant: &TenantId,
    machine: &MachineId,
    offboard: bool,
    actor: &Actor,
) -> Result<DeviceRow, FlagError> {
    let not_found = || FlagError::NotFound {
        tenant: tenant.clone(),
        machine: machine.clone(),
    };
    // Two admins flipping the same flag: re-read and re-apply on a lost race.
    for _ in 0..3 {
        let row = devices::get(table, tenant, machine)
            .await?
            .ok_or_else(not_found)?;
        if offboard && row.flag(col::GONE) {
            return Err(FlagError::Gone);
        }
        if row.flag(col::OFFBOARD) == offboard {
            return Ok(row);
        }
        let etag = row.entity.etag.clone();
        let mut update =
            Entity::new(tenant.as_str(), machine.as_str()).with(col::OFFBOARD, offboard);
        if offboard {
            // The request the flag becomes says who asked (design §9.2).
            update = update
                .with(col::OFFBOARD_BY, actor.label())
                .with(col::OFFBOARD_BY_ID, actor.object_id().unwrap_or_default());
        }
        match table
            .update_merge(&update, etag.map_or(IfMatch::Any, IfMatch::Etag))
            .await
        {
            Ok(_) => {
                tracing::info!(device.id = %machine, offboard, actor = %actor, "offboard flag set");
                audit_flag(state, tenant, machine, offboard, actor).await?;
                return devices::get(table, tenant, machine)
                    .await?
                    .ok_or_else(not_found);
            }
            Err(TableError::PreconditionFailed { .. }) => continue,
            Err(TableError::NotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(FlagError::Concurrent)
}

/// The Audit row of a flag change, with its actor (design §9.2). Written after the flag: a
/// retried PATCH whose flag already matches writes none, so one change has one row.
async fn audit_flag(
    state: &AppState,
    tenant: &TenantId,
    machine: &MachineId,
    offboard: bool,
    actor: &Actor,
) -> Result<(), TableError> {
    let table = store::open(state.tables(), names::AUDIT).await?;
    let now = state.now();
    let detail = format!(
        "Offboard flag {} by {actor}",
        if offboard { "set" } else { "cleared" }
    );
    let entry = AuditEntry::new("DeviceFlag", machine.as_str(), detail, now)
        .by(actor)
        .with("Offboard", offboard)
        .with("MachineId", machine.as_str());
    let unique = format!("flag-{machine}-{}", now.unix_timestamp_nanos());
    audit::append(&table, tenant, &entry, &unique).await
}
