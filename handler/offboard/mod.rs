//! Offboarding use cases shared by several functions: resolving and checking a device,
//! accepting a request (webhook, API, flag), and recording each state change on the request,
//! the device's `Result` column and the audit trail.
//!
//! - [`webhook`]: `POST /api/offboard`'s decisions: who the caller is, what it may reach,
//!   and what its request becomes (the function file only adapts HTTP).
//! - [`approvals`]: approve, deny, cancel; expire and announce what waits (design §9.4).
//! - [`console`]: what the console asks for: offboard a set of devices for a person, list
//!   requests across tenants, what awaits approval.
//! - [`tags`]: put a device on the exclusion list (its Defender machine tag) and take it off.

pub mod approvals;
pub mod console;
pub mod tags;
pub mod webhook;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::clients::tables::TableService;
use crate::clients::tables::{Entity, TableClient, TableError, filter};
use crate::domain::approval::{ApprovalPolicy, Gate};
use crate::domain::device::offboard_supported;
use crate::domain::notification::{Event, Note};
use crate::domain::request::{IdempotencyKey, KeyBinding, RequestStatus, Source};
use crate::domain::{Actor, MachineId, RequestId, TenantId};
use crate::store::audit::{self, AuditEntry};
use crate::store::devices::{self, DeviceRow, col};
use crate::store::requests::{self, OffboardRequest, Versioned};
use crate::store::{self, cursors, names};

/// The tables offboarding works on, opened once per invocation.
#[derive(Clone)]
pub struct Tables {
    pub requests: TableClient,
    pub keys: TableClient,
    pub devices: TableClient,
    pub audit: TableClient,
    /// The approval window lives in `Cursors` (row `approval-window` per tenant).
    pub cursors: TableClient,
}

impl Tables {
    /// # Errors
    /// Storage failures.
    pub async fn open(tables: &TableService) -> Result<Self, TableError> {
        Ok(Self {
            requests: store::open(tables, names::OFFBOARD_REQUESTS).await?,
            keys: store::open(tables, names::IDEMPOTENCY_KEYS).await?,
            devices: store::open(tables, names::DEVICES).await?,
            audit: store::open(tables, names::AUDIT).await?,
            cursors: store::open(tables, names::CURSORS).await?,
        })
    }
}

/// How a caller names the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    MachineId(MachineId),
    DeviceName(String),
    AadDeviceId(String),
}

impl Selector {
    /// The selector as an idempotency key is bound to it: a device name compares without
    /// case, as it is resolved.
    #[must_use]
    pub fn binding_text(&self) -> String {
        match self {
            Self::MachineId(id) => format!("machineId:{}", id.as_str().to_ascii_lowercase()),
            Self::DeviceName(n) => format!("deviceName:{}", n.to_ascii_lowercase()),
            Self::AadDeviceId(a) => format!("aadDeviceId:{}", a.to_ascii_lowercase()),
        }
    }
}

/// Why a device can't be offboarded (answered 404/409/422, or written to `Result`).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NotFound(String),
    Ambiguous { message: String, candidates: Value },
    Policy { code: &'static str, message: String },
}

impl Refusal {
    /// The text for a device's `Result` column.
    pub fn message(&self) -> &str {
        match self {
            Self::NotFound(m)
            | Self::Ambiguous { message: m, .. }
            | Self::Policy { message: m, .. } => m,
        }
    }
}

/// Finds the one live device a selector names, within the tenant's partition only.
///
/// # Errors
/// Storage failures (outer); a [`Refusal`] when there is no such device or several.
pub async fn resolve_device(
    t: &Tables,
    tenant: &TenantId,
    selector: &Selector,
) -> Result<Result<DeviceRow, Refusal>, TableError> {
    let candidates: Vec<DeviceRow> = match selector {
        Selector::MachineId(id) => devices::get(&t.devices, tenant, id)
            .await?
            .into_iter()
            .collect(),
        Selector::DeviceName(name) => {
            let mut rows = Vec::new();
            let lower = name.to_ascii_lowercase();
            let mut names = vec![name.clone()];
            if lower != *name {
                names.push(lower.clone());
            }
            for n in &names {
                rows.extend(
                    query_devices(&t.devices, tenant, &filter::eq(col::NAME, n.as_str())).await?,
                );
            }
            // A short name also matches the device's FQDN (`pc-01` → `pc-01.contoso.com`).
            if !lower.contains('.') {
                rows.extend(
                    query_devices(
                        &t.devices,
                        tenant,
                        &filter::starts_with(col::NAME, &format!("{lower}.")),
                    )
                    .await?,
                );
            }
            rows.sort_by(|a, b| a.machine_id().cmp(b.machine_id()));
            rows.dedup_by(|a, b| a.machine_id() == b.machine_id());
            rows
        }
        Selector::AadDeviceId(aad) => {
            query_devices(&t.devices, tenant, &filter::eq(col::AAD, aad.as_str())).await?
        }
    };
    let what = match selector {
        Selector::MachineId(id) => format!("machine {id}"),
        Selector::DeviceName(n) => format!("device name '{n}'"),
        Selector::AadDeviceId(a) => format!("aadDeviceId {a}"),
    };
    if candidates.is_empty() {
        return Ok(Err(Refusal::NotFound(format!(
            "{what} is not known in tenant {tenant}"
        ))));
    }
    let (live, gone): (Vec<DeviceRow>, Vec<DeviceRow>) =
        candidates.into_iter().partition(|d| !d.flag(col::GONE));
    match live.len() {
        1 => Ok(Ok(live.into_iter().next().expect("one element"))),
        0 => Ok(Err(Refusal::Policy {
            code: "DeviceGone",
            message: format!(
                "{what} matches only devices Defender no longer reports ({}); nothing to offboard",
                gone.iter()
                    .map(DeviceRow::machine_id)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })),
        n => Ok(Err(Refusal::Ambiguous {
            message: format!("{what} matches {n} live devices; name one by machineId"),
            candidates: json!({
                "candidates": live.iter().map(|d| json!({
                    "machineId": d.machine_id(),
                    "computerDnsName": d.str(col::NAME),
                    "osPlatform": d.str(col::OS),
                    "lastSeen": d.to_json()["lastSeen"],
                    "duplicateOf": d.str(col::DUPLICATE_OF),
                })).collect::<Vec<_>>()
            }),
        })),
    }
}

async fn query_devices(
    table: &TableClient,
    tenant: &TenantId,
    cond: &str,
) -> Result<Vec<DeviceRow>, TableError> {
    let f = filter::and(&filter::eq("PartitionKey", tenant.as_str()), cond);
    Ok(table
        .query_all(Some(&f), None)
        .await?
        .into_iter()
        .map(|entity| DeviceRow { entity })
        .collect())
}

/// The checks of DESIGN §3: OS Defender's API supports, the exclusion tag, gone devices,
/// already offboarded, or a request already open.
///
/// # Errors
/// Storage failures (outer); the refusal (inner).
pub async fn check_policy(
    t: &Tables,
    tenant: &TenantId,
    device: &DeviceRow,
    exclude_tag: &str,
) -> Result<Result<(), Refusal>, TableError> {
    if device.flag(col::GONE) {
        return Ok(Err(Refusal::Policy {
            code: "DeviceGone",
            message: "Defender no longer reports this device; there is nothing to offboard".into(),
        }));
    }
    let os = device.str(col::OS);
    if !offboard_supported(os) {
        return Ok(Err(Refusal::Policy {
            code: "UnsupportedPlatform",
            message: format!(
                "Defender's offboard API does not support {} devices; offboard it with the local offboarding script",
                os.unwrap_or("this OS")
            ),
        }));
    }
    if !exclude_tag.is_empty()
        && device
            .tags()
            .iter()
            .any(|t| t.eq_ignore_ascii_case(exclude_tag))
    {
        return Ok(Err(Refusal::Policy {
            code: "ExcludedByTag",
            message: format!(
                "the device carries the tag '{exclude_tag}', which excludes it from offboarding"
            ),
        }));
    }
    if let Some(last) = device
        .str(col::LAST_REQUEST)
        .and_then(|r| RequestId::parse(r).ok())
        && let Some(v) = requests::get(&t.requests, tenant, &last).await?
    {
        let s = v.request.status;
        if !s.is_final() {
            return Ok(Err(Refusal::Policy {
                code: "RequestAlreadyOpen",
                message: format!("request {last} for this device is already {s}"),
            }));
        }
        if s == RequestStatus::Succeeded {
            return Ok(Err(Refusal::Policy {
                code: "AlreadyOffboarded",
                message: format!("the device was already offboarded by request {last}"),
            }));
        }
    }
    Ok(Ok(()))
}

/// What a caller asked for, validated.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub tenant_id: TenantId,
    /// The device as the caller named it.
    pub selector: Selector,
    pub source: Source,
    /// Who asked (design §9.2).
    pub actor: Actor,
    pub requested_by: Option<String>,
    pub comment: String,
    pub idempotency_key: Option<IdempotencyKey>,
    pub dry_run: bool,
    /// The id to give the request; `None` mints a random one.
    pub request_id: Option<RequestId>,
}

impl NewRequest {
    /// What this request's idempotency key is bound to (design §9.3).
    #[must_use]
    pub fn key_binding(&self) -> KeyBinding {
        KeyBinding {
            selector: self.selector.binding_text(),
            dry_run: self.dry_run,
        }
    }
}

/// The outcome of [`accept`].
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A new request, `Accepted` (queue the job) or `DryRun` (nothing to do).
    New(OffboardRequest),
    /// The idempotency key was seen before: this is its request (the row may still be
    /// being written by the first caller).
    Repeat {
        request_id: RequestId,
        existing: Option<OffboardRequest>,
    },
    /// The idempotency key belongs to another request (another device or `dryRun`):
    /// nothing was written (answered 409 `IdempotencyKeyReused`).
    KeyReused { request_id: RequestId },
}

/// Records a new request for `device`, atomically bound to its idempotency key. Under the
/// tenant's `approval` it starts `Accepted` or `AwaitingApproval` (counted in the tenant's
/// approval window); a dry run is never held or counted.
///
/// # Errors
/// Storage failures.
pub async fn accept(
    t: &Tables,
    new: &NewRequest,
    device: &DeviceRow,
    approval: ApprovalPolicy,
    now: OffsetDateTime,
) -> Result<Accepted, TableError> {
    let machine_id =
        MachineId::parse(device.machine_id()).map_err(|e| TableError::Decode(e.to_string()))?;
    let mut request_id = new.request_id.clone().unwrap_or_else(RequestId::new_random);
    if let Some(key) = &new.idempotency_key {
        let binding = new.key_binding();
        let owner =
            requests::claim_key(&t.keys, &new.tenant_id, key, &binding, &request_id, now).await?;
        if owner.request_id != request_id && !owner.is_same_request(&binding) {
            return Ok(Accepted::KeyReused {
                request_id: owner.request_id,
            });
        }
        let owner = owner.request_id;
        if owner != request_id {
            let existing = requests::get(&t.requests, &new.tenant_id, &owner).await?;
            match existing {
                Some(v) => {
                    return Ok(Accepted::Repeat {
                        request_id: owner,
                        existing: Some(v.request),
                    });
                }
                // The first caller claimed the key but its request row is not there: either it
                // is being written right now, or the first caller died in between. Recreate
                // it under the claimed id (insert-if-absent settles the race).
                None => request_id = owner,
            }
        }
    }
    // Counted before the insert: a request that then turns out to be a concurrent repeat
    // is counted twice, which errs on the side of asking an approver.
    let status = if new.dry_run {
        RequestStatus::DryRun
    } else {
        match cursors::admit_request(&t.cursors, &new.tenant_id, approval, now).await? {
            Gate::Proceed => RequestStatus::Accepted,
            Gate::AwaitApproval => RequestStatus::AwaitingApproval,
        }
    };
    let message = new.dry_run.then(|| {
        format!(
            "dry run: would ask Defender to offboard {} ({}, {}, last seen {})",
            device.machine_id(),
            device.str(col::NAME).unwrap_or("unnamed"),
            device.str(col::OS).unwrap_or("unknown OS"),
            device.to_json()["lastSeen"].as_str().unwrap_or("never"),
        )
    });
    let request = OffboardRequest {
        tenant_id: new.tenant_id.clone(),
        request_id: request_id.clone(),
        machine_id,
        device_name: device.str(col::NAME).map(str::to_owned),
        source: new.source,
        actor: new.actor.clone(),
        requested_by: new.requested_by.clone(),
        comment: new.comment.clone(),
        idempotency_key: new.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
        dry_run: new.dry_run,
        status,
        action_id: None,
        http_status: None,
        message,
        attempts: 0,
        submitting_at: None,
        announced_at: None,
        created_at: now,
        updated_at: now,
    };
    match requests::insert(&t.requests, &request).await {
        // A conflict after the client's own retry: our first attempt landed.
        Ok(())
        | Err(TableError::Conflict {
            after_retry: true, ..
        }) => {}
        Err(TableError::Conflict { .. }) => {
            let existing = requests::get(&t.requests, &new.tenant_id, &request_id)
                .await?
                .map(|v| v.request);
            return Ok(Accepted::Repeat {
                request_id,
                existing,
            });
        }
        Err(e) => return Err(e),
    }
    let detail = match (&new.requested_by, new.source) {
        (Some(by), s) => format!("{} request by {by}: {}", s.as_str(), new.comment),
        (None, s) => format!("{} request: {}", s.as_str(), new.comment),
    };
    audit_transition(t, &request, &detail, None, now).await?;
    if !new.dry_run {
        set_device_result(t, &request, request.status.as_str(), now).await?;
    }
    Ok(Accepted::New(request))
}

/// The queue message of the `offboard` queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffboardJob {
    pub tenant_id: TenantId,
    pub request_id: RequestId,
}

impl OffboardJob {
    #[must_use]
    pub fn to_message(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Writes the device's operator columns the seed SharePoint list had: `Result`, `ResultAt`,
/// `LastRequestId`. A merge: the `Offboard` flag and Defender's columns stay as they are.
///
/// # Errors
/// Storage failures (a device row that vanished is not an error).
pub async fn set_device_result(
    t: &Tables,
    r: &OffboardRequest,
    result: &str,
    now: OffsetDateTime,
) -> Result<(), TableError> {
    let e = Entity::new(r.tenant_id.as_str(), r.machine_id.as_str())
        .with(col::RESULT, result)
        .with(col::RESULT_AT, now)
        .with(col::LAST_REQUEST, r.request_id.as_str());
    match t
        .devices
        .update_merge(&e, crate::clients::tables::IfMatch::Any)
        .await
    {
        Ok(_) | Err(TableError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends the request's current state to the audit trail, by `by` (an approver, an
/// operator who cancels) or else the request's own actor. The row key is deterministic per
/// (request, status), so a redelivered message rewrites the same row.
///
/// # Errors
/// Storage failures.
pub async fn audit_transition(
    t: &Tables,
    r: &OffboardRequest,
    detail: &str,
    by: Option<&Actor>,
    now: OffsetDateTime,
) -> Result<(), TableError> {
    let entry = AuditEntry::new("Offboard", r.request_id.as_str(), detail, now)
        .by(by.unwrap_or(&r.actor))
        .with("Status", r.status.as_str())
        .with("MachineId", r.machine_id.as_str());
    audit::append(
        &t.audit,
        &r.tenant_id,
        &entry,
        &format!("{}-{}", r.request_id, r.status),
    )
    .await
}

/// The text a device's `Result` column shows for a request state.
#[must_use]
pub fn result_text(r: &OffboardRequest) -> String {
    match (r.status, &r.message) {
        // The seed flow pasted Defender's 400 message as is; users search for it.
        (RequestStatus::Rejected, Some(m)) => m.clone(),
        (RequestStatus::Failed, Some(m)) => format!("Failed: {m}"),
        (s, _) => s.as_str().to_owned(),
    }
}

/// A state change to apply to a request.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub action_id: Option<String>,
    pub http_status: Option<u16>,
    pub message: Option<String>,
    pub detail: String,
    /// Who made this move when it is not the request's actor (approver, operator, timer).
    pub by: Option<Actor>,
    /// The console's link for the note of this move (design §9.4).
    pub console_url: Option<String>,
}

/// Moves a request to `next` (ETag-checked), then updates the device's `Result` and the
/// audit trail. Returns the updated request and, for a final state, the note to send.
/// A move that is not legal from the stored state (a redelivery that lost a race) changes
/// nothing and returns `None`.
///
/// # Errors
/// Storage failures; [`TableError::PreconditionFailed`] when another writer moved the
/// request first (the caller retries or lets the host retry).
pub async fn transition(
    t: &Tables,
    current: &Versioned,
    next: RequestStatus,
    change: Change,
    now: OffsetDateTime,
) -> Result<Option<(OffboardRequest, Option<Note>)>, TableError> {
    if !current.request.status.can_move_to(next) {
        return Ok(None);
    }
    let mut r = current.request.clone();
    r.status = next;
    if change.action_id.is_some() {
        r.action_id = change.action_id;
    }
    if change.http_status.is_some() {
        r.http_status = change.http_status;
    }
    if change.message.is_some() {
        r.message = change.message;
    }
    r.updated_at = now;
    requests::update(&t.requests, &r, current.etag.clone()).await?;
    audit_transition(t, &r, &change.detail, change.by.as_ref(), now).await?;
    set_device_result(t, &r, &result_text(&r), now).await?;
    tracing::info!(request.id = %r.request_id, device.id = %r.machine_id, status = %r.status, "offboard request moved");
    let note = next
        .is_final()
        .then(|| result_note(&r, change.console_url.clone(), now));
    Ok(Some((r, note)))
}

/// The notification for a request that reached a final state, or that awaits approval;
/// `console_url` links the console's page of the request.
#[must_use]
pub fn result_note(r: &OffboardRequest, console_url: Option<String>, now: OffsetDateTime) -> Note {
    Note {
        id: format!("offboard-{}-{}", r.request_id, r.status),
        tenant_id: r.tenant_id.clone(),
        at: now,
        event: Event::OffboardResult {
            request_id: r.request_id.as_str().to_owned(),
            machine_id: r.machine_id.as_str().to_owned(),
            device_name: r.device_name.clone(),
            status: r.status.as_str().to_owned(),
            message: r.message.clone(),
            action_id: r.action_id.clone(),
            console_url,
        },
    }
}

/// The console's page of a request (design §9.4's link), when `CONSOLE_BASE_URL` is set.
#[must_use]
pub fn console_url(base: Option<&url::Url>, r: &OffboardRequest) -> Option<String> {
    let base = base?;
    Some(format!(
        "{}/api/console/requests/{}/{}",
        base.as_str().trim_end_matches('/'),
        r.tenant_id,
        r.request_id
    ))
}

/// The request's history from the audit trail, oldest first: a bounded query over the
/// request's own time span (`store::audit::window_filter`), not the tenant's whole trail.
///
/// # Errors
/// Storage failures.
pub async fn history(t: &Tables, r: &OffboardRequest) -> Result<Vec<Value>, TableError> {
    let f = audit::window_filter(
        &r.tenant_id,
        r.request_id.as_str(),
        r.created_at,
        r.updated_at.max(r.created_at),
    );
    let mut rows: Vec<(OffsetDateTime, Value)> = t
        .audit
        .query_all(Some(&f), None)
        .await?
        .iter()
        .filter_map(|e| {
            let entry = AuditEntry::from_entity(e).ok()?;
            let at = entry.at;
            Some((
                at,
                json!({
                    "at": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "status": e.get_str("Status"),
                    "detail": entry.detail,
                    "actor": e.get_str("Actor"),
                }),
            ))
        })
        .collect();
    rows.sort_by_key(|(at, _)| *at);
    Ok(rows.into_iter().map(|(_, v)| v).collect())
}

/// The JSON of `GET /api/offboard/{tenantId}/{requestId}` (without history).
#[must_use]
pub fn to_json(r: &OffboardRequest) -> Value {
    let ts = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    json!({
        "requestId": r.request_id.as_str(),
        "tenantId": r.tenant_id.as_str(),
        "machineId": r.machine_id.as_str(),
        "deviceName": r.device_name,
        "source": r.source.as_str(),
        "actor": r.actor.label(),
        "actorId": r.actor.object_id(),
        "requestedBy": r.requested_by,
        "comment": r.comment,
        "status": r.status.as_str(),
        "actionId": r.action_id,
        "httpStatus": r.http_status,
        "message": r.message,
        "dryRun": r.dry_run,
        "attempts": r.attempts,
        "createdAt": ts(r.created_at),
        "updatedAt": ts(r.updated_at),
    })
}

/// `/api/offboard/{tenantId}/{requestId}`.
#[must_use]
pub fn status_url(tenant: &TenantId, request: &RequestId) -> String {
    format!("/api/offboard/{tenant}/{request}")
}
