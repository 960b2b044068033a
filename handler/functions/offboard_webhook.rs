//! `OffboardWebhook`: `POST /api/offboard` from other systems (ITSM, HR leaver flows).
//!
//! An adapter: it reads the caller's headers and body into domain types (a 400 names the
//! field) and turns the outcome into HTTP. Who may do what, and what the request becomes,
//! is decided in [`crate::offboard::webhook`].

use serde_json::json;

use super::body::JsonBody;
use crate::app::AppState;
use crate::domain::request::{DEFAULT_COMMENT, IdempotencyKey, Source};
use crate::domain::{Actor, MachineId, TenantId};
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::offboard::webhook::{self, Credentials, Outcome};
use crate::offboard::{self, NewRequest, Selector};

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
    let key_actor = super::key_actor(req);
    let auth = webhook::authenticate(
        state,
        &Credentials {
            caller_id: req.header("x-caller-id"),
            signature: req.header("x-signature"),
            timestamp: req.header("x-signature-timestamp"),
            body: raw.as_bytes(),
            key_actor: &key_actor,
        },
    )
    .await?;
    let source = if auth.signature.is_some() {
        Source::Webhook
    } else {
        Source::Api
    };
    let new = parse(req, source, auth.actor.clone())?;
    Ok(answer(webhook::submit(state, &auth, new).await?))
}

fn answer(outcome: Outcome) -> InvocationResponse {
    match outcome {
        Outcome::New { request: r, job } => {
            let body = json!({
                "requestId": r.request_id.as_str(),
                "status": r.status.as_str(),
                "statusUrl": offboard::status_url(&r.tenant_id, &r.request_id),
                "machineId": r.machine_id.as_str(),
                "message": r.message,
            });
            // A dry run is answered at once (200); a real request, queued or waiting for an
            // approver, is accepted for later (202).
            if r.dry_run {
                return InvocationResponse::http(&HttpResponse::json(200, &body));
            }
            let accepted = InvocationResponse::http(&HttpResponse::json(202, &body).with_header(
                "Location",
                offboard::status_url(&r.tenant_id, &r.request_id),
            ));
            match job {
                None => accepted,
                Some(job) => accepted.with_queue("jobs", vec![job.to_message()]),
            }
        }
        Outcome::Repeat {
            tenant_id,
            request_id,
            existing,
            job,
        } => {
            let answer = InvocationResponse::http(&HttpResponse::json(
                200,
                &json!({
                    "requestId": request_id.as_str(),
                    "status": existing.as_ref().map_or("Accepted", |r| r.status.as_str()),
                    "statusUrl": offboard::status_url(&tenant_id, &request_id),
                    "machineId": existing.as_ref().map(|r| r.machine_id.as_str()),
                }),
            ));
            match job {
                Some(job) => answer.with_queue("jobs", vec![job.to_message()]),
                None => answer,
            }
        }
    }
}

/// The body as domain types; a 400 names the field at fault.
fn parse(req: &HttpRequestData, source: Source, actor: Actor) -> Result<NewRequest, ApiError> {
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
    Ok(NewRequest {
        tenant_id,
        selector,
        source,
        actor,
        requested_by,
        comment,
        idempotency_key,
        dry_run,
        request_id: None,
    })
}
