//! `OffboardWebhook`: `POST /api/offboard` from other systems (ITSM, HR leaver flows).
//!
//! Order matters: the signature is checked before anything is read or written; the body is
//! parsed into domain types (400 names the field); the tenant and the device are resolved
//! within that tenant only; policy refusals are 422; the idempotency key is claimed
//! atomically so a repeat (even a concurrent one) gets the first request back with a 200.
//!
//! A replayed signature is 401. A signed call's request id is derived from its signature,
//! so an accepted call's replay meets its own request (as its key's owner, as the device's
//! last request, or as an existing row on insert), and a refused call records the signature
//! in `IdempotencyKeys`. An accepted dry run costs 3 table operations: the device read, the
//! request insert and its audit row (the tenant is read once per 30 s per instance); a real
//! request also writes the device's `Result`. Under load the request rows and the audit rows
//! of a tenant's concurrent requests share batches (group commit, `clients::tables::group`),
//! so a request costs fewer round trips than operations.

use secrecy::ExposeSecret;
use serde_json::json;

use super::body::JsonBody;
use super::tenants::storage;
use crate::app::AppState;
use crate::clients::tables::{Entity, TableError};
use crate::domain::request::{DEFAULT_COMMENT, IdempotencyKey, Source};
use crate::domain::signature::{self, SignatureError};
use crate::domain::{MachineId, RequestId, TenantId};
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::offboard::{self, Accepted, NewRequest, OffboardJob, Refusal, Selector, Tables};
use crate::store::{self, names, tenants};

/// DESIGN §3: bodies of at most 64 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;
const FIELDS: &[&str] = &[
    "tenantId",
    "machineId",
    "deviceName",
    "aadDeviceId",
    "comment",
    "requestedBy",
    "idempotencyKey",
    "dryRun",
];
/// Partition of `IdempotencyKeys` holding the signatures seen in the last 300 s.
const SIGNATURES_PARTITION: &str = "webhook-signatures";

/// POST /api/offboard.
///
/// # Errors
/// [`ApiError`] for the caller.
pub async fn handle(
    state: &AppState,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let raw = req.body.as_deref().unwrap_or_default();
    if raw.len() > BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is larger than {BODY_LIMIT} bytes"
        )));
    }
    let signature = verify_signature(state, req, raw).await?;
    let (mut new, selector) = parse(
        req,
        if signature.is_some() {
            Source::Webhook
        } else {
            Source::Api
        },
    )?;
    tracing::Span::current().record("tenant.id", new.tenant_id.as_str());
    // A signed call's request id follows from its signature: the request row is its own
    // replay guard (see `decide`).
    new.request_id = signature
        .as_deref()
        .map(|s| RequestId::for_signature(&new.tenant_id, s));

    let outcome = decide(state, &new, &selector).await;
    match (signature.as_deref(), outcome) {
        // A refusal writes nothing, so nothing else would notice its replay: remember the
        // signature (one write, on this path only).
        (Some(sig), Err(e)) if is_refusal(&e) => {
            remember_signature(state, sig).await?;
            Err(e)
        }
        (_, outcome) => outcome,
    }
}

fn is_refusal(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::NotFound { .. } | ApiError::Conflict { .. } | ApiError::Unprocessable { .. }
    )
}

fn replayed() -> ApiError {
    ApiError::Unauthorized("this signature was already used; sign each request anew".into())
}

/// Resolves, checks and records the request. For a signed call `new.request_id` is derived
/// from the signature, so a replay finds its own request: as the owner of its idempotency
/// key, as the device's last request, or as a conflicting row when it is inserted. Each of
/// those is answered 401.
async fn decide(
    state: &AppState,
    new: &NewRequest,
    selector: &Selector,
) -> Result<InvocationResponse, ApiError> {
    let t = Tables::open(state.tables()).await.map_err(storage)?;
    let replay_of = |id: &RequestId| new.request_id.as_ref() == Some(id);
    // The tenant, an earlier owner of the idempotency key and the device are independent
    // reads: one round trip instead of three. Their answers are judged in the documented
    // order below.
    let (tenant, owner, device) = tokio::join!(
        check_tenant(state, &new.tenant_id),
        async {
            match &new.idempotency_key {
                Some(key) => crate::store::requests::key_owner(&t.keys, &new.tenant_id, key).await,
                None => Ok(None),
            }
        },
        offboard::resolve_device(&t, &new.tenant_id, selector),
    );
    tenant?;

    // A repeat with a known key answers before any device check: the device may have
    // changed since (it is being offboarded, after all).
    if let Some(owner) = owner.map_err(storage)? {
        if replay_of(&owner) {
            return Err(replayed());
        }
        let existing = crate::store::requests::get(&t.requests, &new.tenant_id, &owner)
            .await
            .map_err(storage)?;
        if let Some(v) = existing {
            return Ok(repeat_answer(&new.tenant_id, &owner, Some(&v.request)));
        }
        // The key's first caller claimed it but never wrote its request (a storage outage or
        // a crash in between): answering "seen before" would lose the request. Go on; accept
        // recreates it under the claimed id.
    }

    let device = match device.map_err(storage)? {
        Ok(d) => d,
        Err(refusal) => return Err(refusal_error(refusal)),
    };
    if device
        .str(crate::store::devices::col::LAST_REQUEST)
        .and_then(|r| RequestId::parse(r).ok())
        .is_some_and(|last| replay_of(&last))
    {
        return Err(replayed());
    }
    if let Err(refusal) = offboard::check_policy(
        &t,
        &new.tenant_id,
        &device,
        &state.config().offboard_exclude_tag,
    )
    .await
    .map_err(storage)?
    {
        return Err(refusal_error(refusal));
    }

    match offboard::accept(&t, new, &device, state.now())
        .await
        .map_err(storage)?
    {
        Accepted::Repeat { request_id, .. } if replay_of(&request_id) => Err(replayed()),
        Accepted::Repeat {
            request_id,
            existing,
        } => Ok(repeat_answer(
            &new.tenant_id,
            &request_id,
            existing.as_ref(),
        )),
        Accepted::New(r) => {
            tracing::Span::current().record("request.id", r.request_id.as_str());
            let body = json!({
                "requestId": r.request_id.as_str(),
                "status": r.status.as_str(),
                "statusUrl": offboard::status_url(&r.tenant_id, &r.request_id),
                "machineId": r.machine_id.as_str(),
                "message": r.message,
            });
            if r.dry_run {
                tracing::debug!(device.id = %r.machine_id, "dry run recorded");
                return Ok(InvocationResponse::http(&HttpResponse::json(200, &body)));
            }
            tracing::info!(device.id = %r.machine_id, source = r.source.as_str(), "offboard request accepted");
            let job = OffboardJob {
                tenant_id: r.tenant_id.clone(),
                request_id: r.request_id.clone(),
            };
            Ok(
                InvocationResponse::http(&HttpResponse::json(202, &body).with_header(
                    "Location",
                    offboard::status_url(&r.tenant_id, &r.request_id),
                ))
                .with_queue("jobs", vec![job.to_message()]),
            )
        }
    }
}

/// 404 for an unknown tenant, 422 for a disabled one. A tenant read as enabled within the
/// last 30 s on this instance is not read again (see [`tenants::RecentlyEnabled`]).
async fn check_tenant(state: &AppState, id: &TenantId) -> Result<(), ApiError> {
    let recent = &state.services().recent_tenants;
    if recent.contains(id) {
        return Ok(());
    }
    let table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    match tenants::get(&table, id).await.map_err(storage)? {
        None => Err(super::tenants::unknown(id)),
        // The tenant's state, not the body, is in the way: 409, like other state conflicts.
        Some(t) if !t.tenant.enabled => Err(ApiError::conflict(
            "TenantDisabled",
            format!("tenant {id} is disabled; enable it with PUT /api/tenants/{id}"),
            None,
        )),
        Some(_) => {
            recent.remember(id);
            Ok(())
        }
    }
}

fn repeat_answer(
    tenant: &TenantId,
    id: &crate::domain::RequestId,
    existing: Option<&crate::store::requests::OffboardRequest>,
) -> InvocationResponse {
    tracing::info!(request.id = %id, "idempotency key seen before; answering with the first request");
    let status = existing.map_or("Accepted", |r| r.status.as_str());
    let answer = InvocationResponse::http(&HttpResponse::json(
        200,
        &json!({
            "requestId": id.as_str(),
            "status": status,
            "statusUrl": offboard::status_url(tenant, id),
            "machineId": existing.map(|r| r.machine_id.as_str()),
        }),
    ));
    // A caller repeats when it didn't get our first answer; the queue message of that first
    // answer may be lost with it (the host writes outputs after we answer). Queue the job
    // again while no worker has started on the request: duplicate jobs are harmless then (the
    // worker's ETag-checked mark lets one of them submit), and the worker ignores jobs of
    // requests already submitted.
    match existing {
        Some(r)
            if r.status == crate::domain::request::RequestStatus::Accepted
                && !r.dry_run
                && r.submitting_at.is_none() =>
        {
            answer.with_queue(
                "jobs",
                vec![
                    OffboardJob {
                        tenant_id: tenant.clone(),
                        request_id: id.clone(),
                    }
                    .to_message(),
                ],
            )
        }
        _ => answer,
    }
}

fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotFound(m) => ApiError::not_found("DeviceNotFound", m),
        Refusal::Ambiguous {
            message,
            candidates,
        } => ApiError::conflict("AmbiguousDevice", message, Some(candidates)),
        Refusal::Policy { code, message } => ApiError::unprocessable(code, message),
    }
}

/// Verifies `X-Signature` when `WEBHOOK_HMAC_SECRET` is configured. Returns the signature
/// to remember (see [`remember_signature`]), `None` when requests are not signed.
async fn verify_signature(
    state: &AppState,
    req: &HttpRequestData,
    raw: &str,
) -> Result<Option<String>, ApiError> {
    let Some(secret_name) = &state.config().webhook_hmac_secret else {
        return Ok(None);
    };
    let vault = state.vault().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "WEBHOOK_HMAC_SECRET is set but Key Vault is not configured"
        ))
    })?;
    let key = vault.get(secret_name).await.map_err(|e| {
        if e.is_transient() {
            ApiError::Unavailable("the signing key can't be read right now; retry later".into())
        } else {
            ApiError::Internal(anyhow::Error::new(e).context("reading the webhook signing key"))
        }
    })?;
    let now = state.now().unix_timestamp();
    signature::verify(
        key.value.expose_secret().as_bytes(),
        req.header("x-signature"),
        req.header("x-signature-timestamp"),
        raw.as_bytes(),
        now,
    )
    .map(Some)
    .map_err(|e: SignatureError| ApiError::Unauthorized(e.to_string()))
}

/// The replay guard of a refused signed call (an accepted one is guarded by its request
/// row): a valid signature is answered once. The row needs no expiry sweep to be correct: an
/// old signature fails the 300 s window anyway.
async fn remember_signature(state: &AppState, sig: &str) -> Result<(), ApiError> {
    let table = store::open(state.tables(), names::IDEMPOTENCY_KEYS)
        .await
        .map_err(storage)?;
    let row = Entity::new(SIGNATURES_PARTITION, sig).with("SeenAt", state.now());
    match table.insert(&row).await {
        // A conflict after our own retry: our first attempt landed.
        Ok(_)
        | Err(TableError::Conflict {
            after_retry: true, ..
        }) => Ok(()),
        Err(TableError::Conflict { .. }) => Err(replayed()),
        Err(e) => Err(storage(e)),
    }
}

/// The body as domain types; a 400 names the field at fault.
fn parse(req: &HttpRequestData, source: Source) -> Result<(NewRequest, Selector), ApiError> {
    let body = JsonBody::parse(req, BODY_LIMIT)?;
    body.only(FIELDS)?;
    let tenant_id = TenantId::parse(&body.str("tenantId")?)
        .map_err(|e| ApiError::bad_request("InvalidTenantId", e.to_string()))?;
    let selectors: Vec<&str> = ["machineId", "deviceName", "aadDeviceId"]
        .into_iter()
        .filter(|f| body.has(f))
        .collect();
    let selector = match selectors.as_slice() {
        ["machineId"] => Selector::MachineId(
            MachineId::parse(&body.str("machineId")?)
                .map_err(|e| ApiError::bad_request("InvalidMachineId", e.to_string()))?,
        ),
        ["deviceName"] => {
            let name = body.str("deviceName")?;
            if name.chars().count() > 255 || name.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "InvalidDeviceName",
                    "deviceName must be at most 255 printable characters",
                ));
            }
            Selector::DeviceName(name)
        }
        ["aadDeviceId"] => {
            let raw = body.str("aadDeviceId")?;
            let id = uuid::Uuid::try_parse(&raw).map_err(|_| {
                ApiError::bad_request("InvalidAadDeviceId", "aadDeviceId must be a GUID")
            })?;
            Selector::AadDeviceId(id.hyphenated().to_string())
        }
        [] => {
            return Err(ApiError::bad_request(
                "MissingDeviceSelector",
                "name the device with exactly one of machineId, deviceName or aadDeviceId",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "AmbiguousDeviceSelector",
                format!(
                    "give exactly one of machineId, deviceName or aadDeviceId, not {}",
                    selectors.join(" and ")
                ),
            ));
        }
    };
    let comment = body
        .opt_str("comment")?
        .unwrap_or_else(|| DEFAULT_COMMENT.to_owned());
    if comment.chars().count() > 1000 {
        return Err(ApiError::bad_request(
            "InvalidField",
            "comment must be at most 1000 characters",
        ));
    }
    let requested_by = body.opt_str("requestedBy")?;
    if requested_by
        .as_ref()
        .is_some_and(|r| r.chars().count() > 256)
    {
        return Err(ApiError::bad_request(
            "InvalidField",
            "requestedBy must be at most 256 characters",
        ));
    }
    if body.has("idempotencyKey") && body.opt_str("idempotencyKey")?.is_none() {
        return Err(ApiError::bad_request(
            "InvalidIdempotencyKey",
            "idempotencyKey is blank; leave it out instead",
        ));
    }
    let idempotency_key = match body.opt_str("idempotencyKey")? {
        Some(k) => Some(
            IdempotencyKey::parse(&k)
                .map_err(|e| ApiError::bad_request("InvalidIdempotencyKey", e))?,
        ),
        None => None,
    };
    let dry_run = body.opt_bool("dryRun")?.unwrap_or(false);
    Ok((
        NewRequest {
            tenant_id,
            source,
            requested_by,
            comment,
            idempotency_key,
            dry_run,
            request_id: None,
        },
        selector,
    ))
}
