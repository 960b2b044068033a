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
