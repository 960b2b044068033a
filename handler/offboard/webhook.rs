//! `POST /api/offboard`'s decisions, shared with the console: who the caller is (design
//! §9.1), what it may reach, and what its request becomes.
//!
//! Order matters: the caller and its signature are checked before anything is read or
//! written (an unknown or disabled caller, or a wrong key, is 401); a tenant outside the
//! caller's scope is answered exactly like an unknown tenant (404 `TenantNotFound`), before
//! the tenant is read; the device is resolved within that tenant only; policy refusals are
//! 422; the idempotency key is claimed atomically, so a repeat (even a concurrent one) gets
//! the first request back with a 200, and a key reused for another device or `dryRun` is
//! 409 `IdempotencyKeyReused` with nothing written (design §9.3).
//!
//! A replayed signature is 401. A signed call's request id is derived from its signature,
//! so an accepted call's replay meets its own request (as its key's owner, as the device's
//! last request, or as an existing row on insert), and a refused call records the signature
//! in `IdempotencyKeys`. An accepted dry run costs 3 table operations: the device read, the
//! request insert and its audit row (the tenant is read once per 30 s per instance); a real
//! request also writes the device's `Result`; a call with `X-Caller-Id` reads its caller
//! row too (its keys come from the Key Vault cache). Under load the request rows and the
//! audit rows of a tenant's concurrent requests share batches (group commit,
//! `clients::tables::group`), so a request costs fewer round trips than operations.

use secrecy::ExposeSecret;

use super::{Accepted, NewRequest, OffboardJob, Refusal, Tables};
use crate::app::AppState;
use crate::clients::keyvault::KeyVaultError;
use crate::clients::tables::{Entity, TableError};
use crate::config::SecretName;
use crate::domain::approval::ApprovalPolicy;
use crate::domain::caller::{self, ClaimError, Claimed, TenantScope};
use crate::domain::request::RequestStatus;
use crate::domain::signature::SignatureError;
use crate::domain::{Actor, CallerId, RequestId, TenantId};
use crate::error::ApiError;
use crate::store::requests::OffboardRequest;
use crate::store::{self, callers, names, tenants};

/// Partition of `IdempotencyKeys` holding the signatures seen in the last 300 s.
const SIGNATURES_PARTITION: &str = "webhook-signatures";

/// What a call presents about itself, from its headers.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub caller_id: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    /// The raw body, as signed.
    pub body: &'a [u8],
    /// Who the host let in (function key or admin key): the actor of an unsigned call.
    pub key_actor: &'a Actor,
}

/// A caller whose signature verified (or an allowed unsigned call).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub actor: Actor,
    pub scope: TenantScope,
    /// The normalised signature, for the replay guard; `None` for an unsigned call.
    pub signature: Option<String>,
}

/// What became of an accepted call.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new request: `Accepted` (queue `job`) or `DryRun` (nothing to queue).
    New {
        request: OffboardRequest,
        job: Option<OffboardJob>,
    },
    /// The idempotency key was seen before for this same request: that request (its row
    /// may still be being written). `job` re-queues it while no worker has started on it.
    Repeat {
        tenant_id: TenantId,
        request_id: RequestId,
        existing: Option<OffboardRequest>,
        job: Option<OffboardJob>,
    },
}

fn storage(e: TableError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e).context("Table Storage"))
}

fn replayed() -> ApiError {
    ApiError::Unauthorized("this signature was already used; sign each request anew".into())
}

/// Who is calling: a registered caller (`X-Caller-Id`, its key or its next key), the
/// built-in `default` caller (`WEBHOOK_HMAC_SECRET`, every tenant), or an unsigned call
/// when `WEBHOOK_ALLOW_UNSIGNED=true` (the key holder, every tenant).
///
/// # Errors
/// 401 for an unknown or disabled caller, a missing or wrong signature; 503 when a key
/// can't be read right now.
pub async fn authenticate(
    state: &AppState,
    c: &Credentials<'_>,
) -> Result<Authenticated, ApiError> {
    let config = state.config();
    let signed = c.signature.is_some() || c.timestamp.is_some();
    let claimed = caller::claim(
        c.caller_id,
        signed,
        config.webhook_hmac_secret.is_some(),
        config.webhook_allow_unsigned,
    )
    .map_err(|e: ClaimError| ApiError::Unauthorized(e.to_string()))?;
    let authenticated = verify_claim(state, c, claimed).await?;
    tracing::Span::current().record("actor", authenticated.actor.label());
    Ok(authenticated)
}

async fn verify_claim(
    state: &AppState,
    c: &Credentials<'_>,
    claimed: Claimed,
) -> Result<Authenticated, ApiError> {
    let config = state.config();
    let now = state.now().unix_timestamp();
    let verify = |current: &[u8], next: Option<&[u8]>| {
        caller::verify_either(current, next, c.signature, c.timestamp, c.body, now)
            .map_err(|e: SignatureError| ApiError::Unauthorized(e.to_string()))
    };
    match claimed {
        Claimed::Unsigned => Ok(Authenticated {
            actor: c.key_actor.clone(),
            scope: TenantScope::All,
            signature: None,
        }),
        Claimed::Default => {
            let name = config.webhook_hmac_secret.as_ref().ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("the default caller has no key"))
            })?;
            let key = read_key(state, name).await?.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "the WEBHOOK_HMAC_SECRET secret does not exist in Key Vault"
                ))
            })?;
            let sig = verify(key.expose_secret().as_bytes(), None)?;
            Ok(Authenticated {
                actor: Actor::Caller(CallerId::default_caller()),
                scope: TenantScope::All,
                signature: Some(sig),
            })
        }
        Claimed::Caller(id) => {
            let table = store::open(state.tables(), names::CALLERS)
                .await
                .map_err(storage)?;
            let unknown = || ApiError::Unauthorized(ClaimError::UnknownCaller.to_string());
            let Some(v) = callers::get(&table, &id).await.map_err(storage)? else {
                return Err(unknown());
            };
            if !v.caller.enabled {
                tracing::info!(caller.id = %id, "a disabled caller was refused");
                // The same answer as an unknown caller: a cut-off system learns nothing.
                return Err(unknown());
            }
            let current = read_key(state, &v.caller.secret_name).await?;
            let next = match &v.caller.next_secret_name {
                Some(name) => read_key(state, name).await?,
                None => None,
            };
            let Some(current) = current.or_else(|| next.clone()) else {
                tracing::warn!(caller.id = %id, "neither of the caller's keys exists in Key Vault");
                return Err(ApiError::Unauthorized(SignatureError::Mismatch.to_string()));
            };
            let sig = verify(
                current.expose_secret().as_bytes(),
                next.as_ref().map(|k| k.expose_secret().as_bytes()),
            )?;
            Ok(Authenticated {
                actor: Actor::Caller(id),
                scope: v.caller.tenants,
                signature: Some(sig),
            })
        }
    }
}

/// A signing key from the Key Vault cache (no vault read per request); `None` when the
/// secret does not exist.
async fn read_key(
    state: &AppState,
    name: &SecretName,
) -> Result<Option<secrecy::SecretString>, ApiError> {
    let vault = state.vault().ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "a signing key is configured but Key Vault is not (KEY_VAULT_URI)"
        ))
    })?;
    match vault.get(name).await {
        Ok(secret) => Ok(Some(secret.value)),
        Err(KeyVaultError::SecretNotFound { .. } | KeyVaultError::Empty { .. }) => Ok(None),
        Err(e) if e.is_transient() => Err(ApiError::Unavailable(
            "the signing key can't be read right now; retry later".into(),
        )),
        Err(e) => Err(ApiError::Internal(
            anyhow::Error::new(e).context("reading a webhook signing key"),
        )),
    }
}

/// Records the request of an authenticated call, or says why not.
///
/// # Errors
/// 404 (unknown or out-of-scope tenant, unknown device), 409 (ambiguous device, key
/// reused), 422 (policy), 401 (replay), 5xx (storage).
pub async fn submit(
    state: &AppState,
    auth: &Authenticated,
    mut new: NewRequest,
) -> Result<Outcome, ApiError> {
    tracing::Span::current().record("tenant.id", new.tenant_id.as_str());
    // A signed call's request id follows from its signature: the request row is its own
    // replay guard (see `decide`).
    new.request_id = auth
        .signature
        .as_deref()
        .map(|s| RequestId::for_signature(&new.tenant_id, s));
    let outcome = if auth.scope.contains(&new.tenant_id) {
        decide(state, &new).await
    } else {
        tracing::info!(actor = %auth.actor, "a tenant outside the caller's scope was refused");
        // Word for word what an unknown tenant gets, replay guard included.
        Err(crate::functions::tenants::unknown(&new.tenant_id))
    };
    match (auth.signature.as_deref(), outcome) {
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

fn key_reused(key: Option<&str>, request: &RequestId) -> ApiError {
    ApiError::conflict(
        "IdempotencyKeyReused",
        format!(
            "idempotencyKey '{}' belongs to request {request}, made for another device or dryRun; use a new key for a new request",
            key.unwrap_or_default()
        ),
        None,
    )
}

/// Resolves, checks and records the request. For a signed call `new.request_id` is derived
/// from the signature, so a replay finds its own request: as the owner of its idempotency
/// key, as the device's last request, or as a conflicting row when it is inserted. Each of
/// those is answered 401.
pub(crate) async fn decide(state: &AppState, new: &NewRequest) -> Result<Outcome, ApiError> {
    let t = Tables::open(state.tables()).await.map_err(storage)?;
    let replay_of = |id: &RequestId| new.request_id.as_ref() == Some(id);
    let key_text = new.idempotency_key.as_ref().map(|k| k.as_str());
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
        super::resolve_device(&t, &new.tenant_id, &new.selector),
    );
    let approval = tenant?;

    // A repeat with a known key answers before any device check: the device may have
    // changed since (it is being offboarded, after all).
    if let Some(owner) = owner.map_err(storage)? {
        if replay_of(&owner.request_id) {
            return Err(replayed());
        }
        if !owner.is_same_request(&new.key_binding()) {
            return Err(key_reused(key_text, &owner.request_id));
        }
        let existing = crate::store::requests::get(&t.requests, &new.tenant_id, &owner.request_id)
            .await
            .map_err(storage)?;
        if let Some(v) = existing {
            return Ok(repeat(&new.tenant_id, &owner.request_id, Some(v.request)));
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
    if let Err(refusal) = super::check_policy(
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

    match super::accept(&t, new, &device, approval, state.now())
        .await
        .map_err(storage)?
    {
        Accepted::Repeat { request_id, .. } if replay_of(&request_id) => Err(replayed()),
        Accepted::Repeat {
            request_id,
            existing,
        } => Ok(repeat(&new.tenant_id, &request_id, existing)),
        Accepted::KeyReused { request_id } => Err(key_reused(key_text, &request_id)),
        Accepted::New(r) => {
            tracing::Span::current().record("request.id", r.request_id.as_str());
            let job = (r.status == RequestStatus::Accepted).then(|| OffboardJob {
                tenant_id: r.tenant_id.clone(),
                request_id: r.request_id.clone(),
            });
            if r.dry_run {
                tracing::debug!(device.id = %r.machine_id, "dry run recorded");
            } else if r.status == RequestStatus::AwaitingApproval {
                tracing::info!(device.id = %r.machine_id, source = r.source.as_str(), actor = %r.actor, "offboard request awaits approval");
            } else {
                tracing::info!(device.id = %r.machine_id, source = r.source.as_str(), actor = %r.actor, "offboard request accepted");
            }
            Ok(Outcome::New { request: r, job })
        }
    }
}

/// 404 for an unknown tenant, 422 for a disabled one; the tenant's approval mode. A tenant
/// read as enabled within the last 30 s on this instance is not read again (see
/// [`tenants::RecentlyEnabled`]).
pub(crate) async fn check_tenant(
    state: &AppState,
    id: &TenantId,
) -> Result<ApprovalPolicy, ApiError> {
    let recent = &state.services().recent_tenants;
    if let Some(policy) = recent.get(id) {
        return Ok(policy);
    }
    let table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    match tenants::get(&table, id).await.map_err(storage)? {
        None => Err(crate::functions::tenants::unknown(id)),
        // The tenant's state, not the body, is in the way: 409, like other state conflicts.
        Some(t) if !t.tenant.enabled => Err(ApiError::conflict(
            "TenantDisabled",
            format!("tenant {id} is disabled; enable it with PUT /api/tenants/{id}"),
            None,
        )),
        Some(t) => {
            recent.remember(id, t.tenant.approval);
            Ok(t.tenant.approval)
        }
    }
}

/// A repeat of a known key. A caller repeats when it didn't get our first answer; the queue
/// message of that first answer may be lost with it (the host writes outputs after we
/// answer). Queue the job again while no worker has started on the request: duplicate jobs
/// are harmless then (the worker's ETag-checked mark lets one of them submit), and the
/// worker ignores jobs of requests already submitted.
fn repeat(tenant: &TenantId, id: &RequestId, existing: Option<OffboardRequest>) -> Outcome {
    tracing::info!(request.id = %id, "idempotency key seen before; answering with the first request");
    let job = existing
        .as_ref()
        .filter(|r| r.status == RequestStatus::Accepted && !r.dry_run && r.submitting_at.is_none())
        .map(|_| OffboardJob {
            tenant_id: tenant.clone(),
            request_id: id.clone(),
        });
    Outcome::Repeat {
        tenant_id: tenant.clone(),
        request_id: id.clone(),
        existing,
        job,
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
