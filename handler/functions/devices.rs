//! `Devices`: list and filter a tenant's devices, read one, and set its `Offboard` flag
//! ([`crate::devices`]).

use serde_json::json;

use super::body::{JsonBody, truncate};
use super::tenants::storage;
use crate::app::AppState;
use crate::clients::tables::{Continuation, TableClient};
use crate::devices::{self, DEFAULT_TOP, DeviceFilter, FlagError, MAX_TOP};
use crate::domain::{MachineId, TenantId};
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::store::devices::DeviceRow;

const QUERY_PARAMS: &[&str] = &[
    "stale",
    "duplicate",
    "gone",
    "offboard",
    "os",
    "name",
    "top",
    "continuationToken",
    "code",
];

/// GET /api/devices/{tenantId}[/{machineId}], PATCH /api/devices/{tenantId}/{machineId}.
///
/// # Errors
/// [`ApiError`] for the caller.
pub async fn handle(
    state: &AppState,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let tenant = super::route_tenant(req)?;
    let machine = match req.param("machineId") {
        Some(raw) => Some(
            MachineId::parse(raw)
                .map_err(|e| ApiError::bad_request("InvalidMachineId", e.to_string()))?,
        ),
        None => None,
    };
    let table = devices::open_for(state.tables(), &tenant)
        .await
        .map_err(storage)?
        .ok_or_else(|| super::tenants::unknown(&tenant))?;
    match (req.method.as_str(), machine) {
        ("GET", None) => list(&table, &tenant, req).await,
        ("GET", Some(m)) => {
            let row = crate::store::devices::get(&table, &tenant, &m)
                .await
                .map_err(storage)?
                .ok_or_else(|| not_found(&tenant, &m))?;
            Ok(device(&row))
        }
        ("PATCH", Some(m)) => patch(state, &table, &tenant, &m, req).await,
        ("PATCH", None) => Err(ApiError::bad_request(
            "MissingMachineId",
            "PATCH needs a device: /api/devices/{tenantId}/{machineId}",
        )),
        (m, _) => Err(ApiError::MethodNotAllowed {
            message: format!("{m} is not supported here (GET, PATCH)"),
        }),
    }
}

fn device(row: &DeviceRow) -> InvocationResponse {
    InvocationResponse::http(&HttpResponse::json(200, &row.to_json()))
}

fn not_found(tenant: &TenantId, machine: &MachineId) -> ApiError {
    ApiError::not_found(
        "DeviceNotFound",
        format!("device {machine} is not known in tenant {tenant}"),
    )
}

fn bool_param(req: &HttpRequestData, name: &str) -> Result<Option<bool>, ApiError> {
    match req.query(name).map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_request(
            "InvalidQuery",
            format!("{name} must be true or false, not '{}'", truncate(v)),
        )),
    }
}

fn text_param(req: &HttpRequestData, name: &str) -> Result<Option<String>, ApiError> {
    match req.query(name).map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) if devices::is_valid_text(v) => Ok(Some(v.to_owned())),
        Some(_) => Err(ApiError::bad_request(
            "InvalidQuery",
            format!(
                "{name} must be at most {} printable characters",
                devices::MAX_TEXT_CHARS
            ),
        )),
    }
}

/// The filter the query string asks for.
fn device_filter(req: &HttpRequestData) -> Result<DeviceFilter, ApiError> {
    if let Some(unknown) = req
        .query
        .keys()
        .find(|k| !QUERY_PARAMS.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(
            "InvalidQuery",
            format!(
                "unknown query parameter '{}'; use {}",
                truncate(unknown),
                QUERY_PARAMS[..8].join(", ")
            ),
        ));
    }
    Ok(DeviceFilter {
        stale: bool_param(req, "stale")?,
        duplicate: bool_param(req, "duplicate")?,
        gone: bool_param(req, "gone")?,
        offboard: bool_param(req, "offboard")?,
        os: text_param(req, "os")?,
        name: text_param(req, "name")?,
    })
}

async fn list(
    table: &TableClient,
    tenant: &TenantId,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let filter = device_filter(req)?;
    let top = match req.query("top").map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_TOP,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_TOP).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidQuery",
                    format!("top must be a number from 1 to {MAX_TOP}"),
                )
            })?,
    };
    let continuation = match req
        .query("continuationToken")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(t) => Some(Continuation::from_token(t).map_err(|_| {
            ApiError::bad_request(
                "InvalidContinuationToken",
                "continuationToken is not one this API returned",
            )
        })?),
    };
    let page = devices::list(table, tenant, &filter, top, continuation)
        .await
        .map_err(storage)?;
    let items: Vec<serde_json::Value> = page.items.iter().map(DeviceRow::to_json).collect();
    let token = page.continuation.map(|c| c.to_token());
    Ok(InvocationResponse::http(&HttpResponse::json(
        200,
        &json!({ "items": items, "continuationToken": token }),
    )))
}

async fn patch(
    state: &AppState,
    table: &TableClient,
    tenant: &TenantId,
    machine: &MachineId,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let body = JsonBody::parse(req, 4096)?;
    body.only(&["offboard"])?;
    let offboard = body.opt_bool("offboard")?.ok_or_else(|| {
        ApiError::bad_request("MissingField", "offboard (true or false) is required")
    })?;
    let actor = super::key_actor(req);
    match devices::set_offboard_flag(state, table, tenant, machine, offboard, &actor).await {
        Ok(row) => Ok(device(&row)),
        Err(FlagError::NotFound { .. }) => Err(not_found(tenant, machine)),
        Err(e @ FlagError::Gone) => Err(ApiError::unprocessable("DeviceGone", e.to_string())),
        Err(e @ FlagError::Concurrent) => {
            Err(ApiError::conflict("ConcurrentUpdate", e.to_string(), None))
        }
        Err(FlagError::Storage(e)) => Err(storage(e)),
    }
}
