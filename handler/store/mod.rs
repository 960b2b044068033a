//! Typed access to the product's tables (DESIGN §4): domain rows in, domain rows out.
//!
//! Table names get `TABLE_PREFIX` from the [`TableService`]; each table is created on first
//! use by this process (one call per table per process).

pub mod audit;
pub mod callers;
pub mod cursors;
pub mod devices;
pub mod incidents;
pub mod outbox;
pub mod requests;
pub mod tenants;

use crate::clients::tables::{TableClient, TableError, TableService};

/// Logical table names (before `TABLE_PREFIX`).
pub mod names {
    pub const TENANTS: &str = "Tenants";
    pub const DEVICES: &str = "Devices";
    pub const OFFBOARD_REQUESTS: &str = "OffboardRequests";
    pub const IDEMPOTENCY_KEYS: &str = "IdempotencyKeys";
    pub const AUDIT: &str = "Audit";
    pub const INCIDENTS: &str = "Incidents";
    pub const CURSORS: &str = "Cursors";
    pub const OUTBOX: &str = "Outbox";
    pub const RATE_BUDGET: &str = "RateBudget";
    pub const CALLERS: &str = "Callers";
    /// The console's tenant checks (`store::tenants::TenantHealth`).
    pub const TENANT_HEALTH: &str = "TenantHealth";

    /// Every table the product uses (the infra test checks Bicep creates each one).
    pub const ALL: &[&str] = &[
        TENANTS,
        DEVICES,
        OFFBOARD_REQUESTS,
        IDEMPOTENCY_KEYS,
        AUDIT,
        INCIDENTS,
        CURSORS,
        OUTBOX,
        RATE_BUDGET,
        CALLERS,
        TENANT_HEALTH,
    ];
}

/// A table, created if this process hasn't seen it yet.
///
/// # Errors
/// Any storage failure.
pub async fn open(tables: &TableService, name: &str) -> Result<TableClient, TableError> {
    let table = tables.table(name)?;
    table.create_if_not_exists().await?;
    Ok(table)
}
