//! One device with what surrounds it: the device it duplicates or the ones that duplicate
//! it, and its offboard requests with their histories.

use time::OffsetDateTime;

use crate::clients::tables::{TableError, filter};
use crate::domain::{MachineId, RequestId, TenantId};
use crate::offboard::{self, Tables};
use crate::store::devices::{self, DeviceRow, col};

/// How many requests of one device are shown (newest first).
pub const MAX_REQUESTS: usize = 20;
/// How many duplicates of one device are listed.
pub const MAX_PARTNERS: u32 = 50;

/// One step of a request's history.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Option<String>,
    pub status: Option<String>,
    pub detail: String,
}

/// One offboard request of the device.
#[derive(Debug, Clone)]
pub struct RequestView {
    pub request_id: String,
    pub status: String,
    pub source: String,
    pub requested_by: String,
    pub actor: String,
    pub dry_run: bool,
    pub http_status: Option<i32>,
    /// Defender's message, verbatim.
    pub message: String,
    pub created_at: Option<OffsetDateTime>,
    pub updated_at: Option<OffsetDateTime>,
    pub history: Vec<Step>,
}

/// A device and its surroundings.
#[derive(Debug, Clone)]
pub struct DeviceDetail {
    pub row: DeviceRow,
    /// The device this one duplicates (`DuplicateOf`), when stored.
    pub duplicate_of: Option<DeviceRow>,
    /// Devices that name this one in their `DuplicateOf`.
    pub duplicates: Vec<DeviceRow>,
    pub requests: Vec<RequestView>,
}

/// The device, or `None` when the tenant has no such device.
///
/// # Errors
/// Storage failures.
pub async fn device(
    t: &Tables,
    tenant: &TenantId,
    machine: &MachineId,
) -> Result<Option<DeviceDetail>, TableError> {
    let Some(row) = devices::get(&t.devices, tenant, machine).await? else {
        return Ok(None);
    };
    let duplicate_of = match row.str(col::DUPLICATE_OF).map(MachineId::parse) {
        Some(Ok(other)) => devices::get(&t.devices, tenant, &other).await?,
        _ => None,
    };
    let partners = filter::and(
        &filter::eq("PartitionKey", tenant.as_str()),
        &filter::eq(col::DUPLICATE_OF, machine.as_str()),
    );
    let duplicates = t
        .devices
        .query(Some(&partners), None, Some(MAX_PARTNERS), None)
        .await?
        .entities
        .into_iter()
        .map(|entity| DeviceRow { entity })
        .collect();
    let mine = filter::and(
        &filter::eq("PartitionKey", tenant.as_str()),
        &filter::eq("MachineId", machine.as_str()),
    );
    let mut rows = t.requests.query_all(Some(&mine), None).await?;
    rows.sort_by_key(|e| std::cmp::Reverse(e.get_datetime("CreatedAt")));
    rows.truncate(MAX_REQUESTS);
    let mut requests = Vec::with_capacity(rows.len());
    for e in rows {
        let text = |c: &str| e.get_str(c).unwrap_or_default().to_owned();
        let history = match RequestId::parse(&e.row_key) {
            Ok(id) => offboard::history(t, tenant, &id)
                .await?
                .into_iter()
                .map(|v| Step {
                    at: v["at"].as_str().map(str::to_owned),
                    status: v["status"].as_str().map(str::to_owned),
                    detail: v["detail"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        requests.push(RequestView {
            request_id: e.row_key.clone(),
            status: text("Status"),
            source: text("Source"),
            requested_by: text("RequestedBy"),
            actor: text("Actor"),
            dry_run: e.get_bool("DryRun").unwrap_or(false),
            http_status: e.get_i32("HttpStatus").filter(|s| *s != 0),
            message: text("Message"),
            created_at: e.get_datetime("CreatedAt"),
            updated_at: e.get_datetime("UpdatedAt"),
            history,
        });
    }
    Ok(Some(DeviceDetail {
        row,
        duplicate_of,
        duplicates,
        requests,
    }))
}
