//! `OffboardRequests` rows and the `IdempotencyKeys` that point at them.

use time::OffsetDateTime;

use crate::clients::tables::{ETag, EdmValue, Entity, IfMatch, TableClient, TableError, filter};
use crate::domain::request::{IdempotencyKey, KeyBinding, RequestStatus, Source};
use crate::domain::{Actor, MachineId, RequestId, TenantId};

/// One offboard request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffboardRequest {
    pub tenant_id: TenantId,
    pub request_id: RequestId,
    pub machine_id: MachineId,
    pub device_name: Option<String>,
    pub source: Source,
    /// Who asked (design §9.2): `Actor`, and `ActorId` for a signed-in user.
    pub actor: Actor,
    pub requested_by: Option<String>,
    pub comment: String,
    pub idempotency_key: Option<String>,
    pub dry_run: bool,
    pub status: RequestStatus,
    pub action_id: Option<String>,
    pub http_status: Option<u16>,
    /// Defender's message, verbatim, or ours.
    pub message: Option<String>,
    pub attempts: u32,
    /// When a worker first set out to POST the offboard. A later delivery that finds it set
    /// knows an earlier attempt may have reached Defender, and looks for its action first.
    pub submitting_at: Option<OffsetDateTime>,
    /// When the `AwaitingApproval` note went out (`ActionTracker` announces each waiting
    /// request once).
    pub announced_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl OffboardRequest {
    fn to_entity(&self) -> Entity {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        Entity::new(self.tenant_id.as_str(), self.request_id.as_str())
            .with("MachineId", self.machine_id.as_str())
            .with("DeviceName", opt(&self.device_name))
            .with("Source", self.source.as_str())
            .with("Actor", self.actor.label())
            .with("ActorId", self.actor.object_id().unwrap_or_default())
            .with("RequestedBy", opt(&self.requested_by))
            .with("Comment", self.comment.as_str())
            .with("IdempotencyKey", opt(&self.idempotency_key))
            .with("DryRun", self.dry_run)
            .with("Status", self.status.as_str())
            .with("ActionId", opt(&self.action_id))
            .with(
                "HttpStatus",
                EdmValue::Int32(self.http_status.map_or(0, i32::from)),
            )
            .with("Message", opt(&self.message))
            .with(
                "Attempts",
                EdmValue::Int32(i32::try_from(self.attempts).unwrap_or(i32::MAX)),
            )
            .with_opt("SubmittingAt", self.submitting_at)
            .with_opt("AnnouncedAt", self.announced_at)
            .with("CreatedAt", self.created_at)
            .with("UpdatedAt", self.updated_at)
    }

    /// Reads a row back.
    ///
    /// # Errors
    /// A column missing or malformed.
    pub fn from_entity(e: &Entity) -> Result<Self, TableError> {
        let bad = |what: &str, why: String| {
            TableError::Decode(format!("OffboardRequests/{}: {what}: {why}", e.row_key))
        };
        let nonempty = |c: &str| e.get_str(c).filter(|s| !s.is_empty()).map(str::to_owned);
        let source =
            Source::parse(e.get_str("Source").unwrap_or_default()).map_err(|x| bad("Source", x))?;
        let actor = Actor::parse(e.get_str("Actor").unwrap_or_default(), e.get_str("ActorId"))
            .unwrap_or_else(|| legacy_actor(source));
        Ok(Self {
            tenant_id: TenantId::parse(&e.partition_key)
                .map_err(|x| bad("PartitionKey", x.to_string()))?,
            request_id: RequestId::parse(&e.row_key).map_err(|x| bad("RowKey", x.to_string()))?,
            machine_id: MachineId::parse(e.get_str("MachineId").unwrap_or_default())
                .map_err(|x| bad("MachineId", x.to_string()))?,
            device_name: nonempty("DeviceName"),
            source,
            actor,
            requested_by: nonempty("RequestedBy"),
            comment: e.get_str("Comment").unwrap_or_default().to_owned(),
            idempotency_key: nonempty("IdempotencyKey"),
            dry_run: e.get_bool("DryRun").unwrap_or(false),
            status: RequestStatus::parse(e.get_str("Status").unwrap_or_default())
                .map_err(|x| bad("Status", x))?,
            action_id: nonempty("ActionId"),
            http_status: e
                .get_i32("HttpStatus")
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| *s != 0),
            message: nonempty("Message"),
            attempts: e
                .get_i32("Attempts")
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(0),
            submitting_at: e.optional("SubmittingAt")?,
            announced_at: e.optional("AnnouncedAt")?,
            created_at: e.require("CreatedAt")?,
            updated_at: e.require("UpdatedAt")?,
        })
    }
}

/// The actor of a row written before actors were recorded: what its source implied then.
fn legacy_actor(source: Source) -> Actor {
    match source {
        Source::Webhook => Actor::Caller(crate::domain::CallerId::default_caller()),
        Source::Flag => Actor::timer("OffboardFlagged"),
        // Console requests were recorded with their actor from the start.
        Source::Api | Source::Console => Actor::FunctionKey,
    }
}

/// A request read with its ETag, for a conditional update.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub request: OffboardRequest,
    pub etag: Option<ETag>,
}

/// One request of a tenant (another tenant's id is simply not found).
///
/// # Errors
/// Storage failures, or a row that no longer decodes.
pub async fn get(
    table: &TableClient,
    tenant: &TenantId,
    id: &RequestId,
) -> Result<Option<Versioned>, TableError> {
    match table.get(tenant.as_str(), id.as_str()).await? {
        None => Ok(None),
        Some(e) => Ok(Some(Versioned {
            request: OffboardRequest::from_entity(&e)?,
            etag: e.etag.clone(),
        })),
    }
}

/// Creates a request. Concurrent requests of one tenant share a batch (group commit).
///
/// # Errors
/// [`TableError::Conflict`] when the id exists.
pub async fn insert(table: &TableClient, r: &OffboardRequest) -> Result<(), TableError> {
    table.insert_grouped(r.to_entity()).await.map(drop)
}

/// Replaces a request if it still has `etag`; returns the new ETag.
///
/// # Errors
/// [`TableError::PreconditionFailed`] when another writer changed it first.
pub async fn update(
    table: &TableClient,
    r: &OffboardRequest,
    etag: Option<ETag>,
) -> Result<Option<ETag>, TableError> {
    table
        .update_replace(&r.to_entity(), etag.map_or(IfMatch::Any, IfMatch::Etag))
        .await
        .map(Some)
}

/// Requests of a tenant in one of `statuses`, at most `limit`.
///
/// # Errors
/// Storage failures. Undecodable rows are skipped with a warning.
pub async fn with_status(
    table: &TableClient,
    tenant: &TenantId,
    statuses: &[RequestStatus],
    limit: usize,
) -> Result<Vec<Versioned>, TableError> {
    let any = statuses
        .iter()
        .map(|s| filter::eq("Status", s.as_str()))
        .reduce(|a, b| filter::or(&a, &b))
        .unwrap_or_else(|| filter::eq("Status", ""));
    let f = filter::and(&filter::eq("PartitionKey", tenant.as_str()), &any);
    query_limited(table, &f, limit).await
}

/// The requests a filter selects, at most `limit` of them, in row-key order; undecodable rows
/// are skipped with a warning.
async fn query_limited(
    table: &TableClient,
    f: &str,
    limit: usize,
) -> Result<Vec<Versioned>, TableError> {
    let mut out = Vec::new();
    let mut continuation = None;
    loop {
        let page = table.query(Some(f), None, Some(1000), continuation).await?;
        for e in &page.entities {
            match OffboardRequest::from_entity(e) {
                Ok(request) => out.push(Versioned {
                    request,
                    etag: e.etag.clone(),
                }),
                Err(err) => {
                    tracing::warn!(error = %err, "skipping an unreadable OffboardRequests row")
                }
            }
            if out.len() >= limit {
                return Ok(out);
            }
        }
        match page.continuation {
            Some(c) => continuation = Some(c),
            None => return Ok(out),
        }
    }
}

/// A tenant's requests, in `status` when given, at most `limit` of them (the partition is
/// read in row-key order, which is not time order: callers sort).
///
/// # Errors
/// Storage failures. Undecodable rows are skipped with a warning.
pub async fn of_tenant(
    table: &TableClient,
    tenant: &TenantId,
    status: Option<RequestStatus>,
    limit: usize,
) -> Result<Vec<Versioned>, TableError> {
    match status {
        Some(s) => with_status(table, tenant, &[s], limit).await,
        None => {
            let f = filter::eq("PartitionKey", tenant.as_str());
            query_limited(table, &f, limit).await
        }
    }
}

/// An `IdempotencyKeys` row: the request a key belongs to, and what that request was
/// (device selector and `dryRun`) so a repeat can be told from a reuse (design §9.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub request_id: RequestId,
    /// `None` on rows written before bindings were recorded.
    pub selector: Option<String>,
    pub dry_run: bool,
}

impl KeyOwner {
    fn from_entity(e: &Entity) -> Result<Self, TableError> {
        Ok(Self {
            request_id: RequestId::parse(e.get_str("RequestId").unwrap_or_default())
                .map_err(|x| TableError::Decode(format!("IdempotencyKeys/{}: {x}", e.row_key)))?,
            selector: e
                .get_str("Selector")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            dry_run: e.get_bool("DryRun").unwrap_or(false),
        })
    }

    /// Whether a call with `binding` repeats this key's request (200) or reuses the key for
    /// another one (409).
    #[must_use]
    pub fn is_same_request(&self, binding: &KeyBinding) -> bool {
        binding.same_request(self.selector.as_deref(), self.dry_run)
    }
}

/// Claims an idempotency key for `request`: exactly one caller wins, even under concurrent
/// repeats. Returns the key's owner (ours if we won).
///
/// # Errors
/// Storage failures.
pub async fn claim_key(
    table: &TableClient,
    tenant: &TenantId,
    key: &IdempotencyKey,
    binding: &KeyBinding,
    request: &RequestId,
    now: OffsetDateTime,
) -> Result<KeyOwner, TableError> {
    let e = Entity::new(tenant.as_str(), key.as_str())
        .with("RequestId", request.as_str())
        .with("Selector", binding.selector.as_str())
        .with("DryRun", binding.dry_run)
        .with("CreatedAt", now);
    match table.insert(&e).await {
        Ok(_) => Ok(KeyOwner {
            request_id: request.clone(),
            selector: Some(binding.selector.clone()),
            dry_run: binding.dry_run,
        }),
        Err(TableError::Conflict { .. }) => {
            let existing = table
                .get(tenant.as_str(), key.as_str())
                .await?
                .ok_or_else(|| {
                    TableError::Decode("idempotency key vanished after a conflict".into())
                })?;
            KeyOwner::from_entity(&existing)
        }
        Err(e) => Err(e),
    }
}

/// The owner of a key, if the key was seen before.
///
/// # Errors
/// Storage failures.
pub async fn key_owner(
    table: &TableClient,
    tenant: &TenantId,
    key: &IdempotencyKey,
) -> Result<Option<KeyOwner>, TableError> {
    Ok(table
        .get(tenant.as_str(), key.as_str())
        .await?
        .and_then(|e| KeyOwner::from_entity(&e).ok()))
}
