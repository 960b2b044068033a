//! `Devices`: list and filter a tenant's devices, read one, and set its `Offboard` flag.

use serde_json::json;

use super::body::{JsonBody, truncate};
use super::tenants::storage;
use crate::app::AppState;
use crate::clients::tables::{Continuation, Entity, IfMatch, TableClient, TableError, filter};
use crate::domain::{Actor, MachineId, TenantId};
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::store::audit::{self, AuditEntry};
use crate::store::devices::{self, DeviceRow, col};
use crate::store::{self, names, tenants};

const DEFAULT_TOP: u32 = 100;
const MAX_TOP: u32 = 1000;
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
    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    if tenants::get(&tenants_table, &tenant)
        .await
        .map_err(storage)?
        .is_none()
    {
        return Err(super::tenants::unknown(&tenant));
    }
    let table = store::open(state.tables(), names::DEVICES)
        .await
        .map_err(storage)?;
    match (req.method.as_str(), machine) {
        ("GET", None) => list(&table, &tenant, req).await,
        ("GET", Some(m)) => {
            let row = devices::get(&table, &tenant, &m)
                .await
                .map_err(storage)?
                .ok_or_else(|| not_found(&tenant, &m))?;
            Ok(InvocationResponse::http(&HttpResponse::json(
                200,
                &row.to_json(),
            )))
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

/// The OData filter for the query string; every value goes through the quoting helpers.
fn build_filter(tenant: &TenantId, req: &HttpRequestData) -> Result<String, ApiError> {
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
    let mut f = filter::eq("PartitionKey", tenant.as_str());
    for (param, column) in [
        ("stale", col::STALE),
        ("gone", col::GONE),
        ("offboard", col::OFFBOARD),
    ] {
        if let Some(v) = bool_param(req, param)? {
            f = filter::and(&f, &filter::eq(column, v));
        }
    }
    if let Some(dup) = bool_param(req, "duplicate")? {
        let cond = if dup {
            filter::ne(col::DUPLICATE_OF, "")
        } else {
            filter::eq(col::DUPLICATE_OF, "")
        };
        f = filter::and(&f, &cond);
    }
    if let Some(os) = req.query("os").map(str::trim).filter(|s| !s.is_empty()) {
        check_len("os", os)?;
        f = filter::and(&f, &filter::eq(col::OS, os));
    }
    if let Some(name) = req.query("name").map(str::trim).filter(|s| !s.is_empty()) {
        check_len("name", name)?;
        f = filter::and(&f, &filter::starts_with(col::NAME, name));
    }
    Ok(f)
}

fn check_len(name: &str, v: &str) -> Result<(), ApiError> {
    if v.chars().count() > 256 || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "InvalidQuery",
            format!("{name} must be at most 256 printable characters"),
        ));
    }
    Ok(())
}

async fn list(
    table: &TableClient,
    tenant: &TenantId,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let f = build_filter(tenant, req)?;
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
    // A token from another tenant's listing must not read across tenants: the partition
    // filter above stays in force whatever the token says.
    let page = table
        .query(Some(&f), None, Some(top), continuation)
        .await
        .map_err(storage)?;
    let items: Vec<serde_json::Value> = page
        .entities
        .into_iter()
        .map(|entity| DeviceRow { entity }.to_json())
        .collect();
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
    // Two admins flipping the same flag: re-read and re-apply on a lost race.
    for _ in 0..3 {
        let row = devices::get(table, tenant, machine)
            .await
            .map_err(storage)?
            .ok_or_else(|| not_found(tenant, machine))?;
        if offboard && row.flag(col::GONE) {
            return Err(ApiError::unprocessable(
                "DeviceGone",
                "Defender no longer reports this device; there is nothing to offboard",
            ));
        }
        if row.flag(col::OFFBOARD) == offboard {
            return Ok(InvocationResponse::http(&HttpResponse::json(
                200,
                &row.to_json(),
            )));
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
                audit_flag(state, tenant, machine, offboard, &actor).await?;
                let row = devices::get(table, tenant, machine)
                    .await
                    .map_err(storage)?
                    .ok_or_else(|| not_found(tenant, machine))?;
                return Ok(InvocationResponse::http(&HttpResponse::json(
                    200,
                    &row.to_json(),
                )));
            }
            Err(TableError::PreconditionFailed { .. }) => continue,
            Err(TableError::NotFound { .. }) => return Err(not_found(tenant, machine)),
            Err(e) => return Err(storage(e)),
        }
    }
    Err(ApiError::conflict(
        "ConcurrentUpdate",
        "the device kept changing while the flag was being set; retry",
        None,
    ))
}

/// The Audit row of a flag change, with its actor (design §9.2). Written after the flag: a
/// retried PATCH whose flag already matches writes none, so one change has one row.
async fn audit_flag(
    state: &AppState,
    tenant: &TenantId,
    machine: &MachineId,
    offboard: bool,
    actor: &Actor,
) -> Result<(), ApiError> {
    let table = store::open(state.tables(), names::AUDIT)
        .await
        .map_err(storage)?;
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
    audit::append(&table, tenant, &entry, &unique)
        .await
        .map_err(storage)
}
