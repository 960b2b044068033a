//! `Tenants` (admin key): register, read, list and disable customer tenants.
//!
//! PUT validates everything before writing (GUIDs, auth mode, that the secret exists in
//! Key Vault) and queues a first sync when a tenant is created or re-enabled.

use serde_json::{Value, json};
use url::Url;

use super::body::{JsonBody, truncate};
use super::jobs::SyncJob;
use crate::app::AppState;
use crate::clients::credentials::{AuthMode, TenantAuth};
use crate::clients::keyvault::KeyVaultError;
use crate::clients::tables::TableError;
use crate::config::SecretName;
use crate::domain::api_base::check_defender_api_base;
use crate::domain::approval::ApprovalPolicy;
use crate::domain::{ChannelSet, TenantId};
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::store::tenants::{self, Tenant};
use crate::store::{self, names};

const BODY_LIMIT: usize = 16 * 1024;
const FIELDS: &[&str] = &[
    "displayName",
    "clientId",
    "authMode",
    "secretName",
    "enabled",
    "defenderApiBase",
    "notifyChannels",
    "approval",
];

/// GET / PUT / DELETE /api/tenants/{tenantId?}.
///
/// # Errors
/// [`ApiError`] for the caller.
pub async fn handle(
    state: &AppState,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let tenant_id = match req.param("tenantId") {
        Some(raw) => Some(
            TenantId::parse(raw)
                .map_err(|e| ApiError::bad_request("InvalidTenantId", e.to_string()))?,
        ),
        None => None,
    };
    if let Some(t) = &tenant_id {
        tracing::Span::current().record("tenant.id", t.as_str());
    }
    let table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(storage)?;
    match (req.method.as_str(), tenant_id) {
        ("GET", None) => {
            let all = tenants::list(&table, false).await.map_err(storage)?;
            let items: Vec<Value> = all.iter().map(to_json).collect();
            Ok(InvocationResponse::http(&HttpResponse::json(
                200,
                &json!({ "items": items }),
            )))
        }
        ("GET", Some(id)) => match tenants::get(&table, &id).await.map_err(storage)? {
            Some(v) => Ok(InvocationResponse::http(&HttpResponse::json(
                200,
                &to_json(&v.tenant),
            ))),
            None => Err(unknown(&id)),
        },
        ("PUT", Some(id)) => put(state, &table, id, req).await,
        ("DELETE", Some(id)) => disable(state, &table, &id, &super::key_actor(req)).await,
        ("PUT" | "DELETE", None) => Err(ApiError::bad_request(
            "MissingTenantId",
            "the route needs a tenant id: /api/tenants/{tenantId}",
        )),
        (m, _) => Err(ApiError::MethodNotAllowed {
            message: format!("{m} is not supported here (GET, PUT, DELETE)"),
        }),
    }
}

/// 404 for a tenant that is not registered (every function that takes a tenant id).
pub(crate) fn unknown(id: &TenantId) -> ApiError {
    ApiError::not_found("TenantNotFound", format!("tenant {id} is not registered"))
}

pub(crate) fn storage(e: TableError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e).context("Table Storage"))
}

/// The registration fields of a PUT body, validated.
pub(crate) struct Registration {
    auth: TenantAuth,
    display_name: String,
    enabled: bool,
    defender_api_base: Option<Url>,
    notify_channels: ChannelSet,
    approval: Option<ApprovalPolicy>,
}

/// A registration as sent, before validation: from a JSON body (the API) or a form (the
/// console); both go through [`validate`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TenantFields {
    pub display_name: String,
    pub client_id: String,
    pub auth_mode: String,
    pub secret_name: Option<String>,
    pub enabled: Option<bool>,
    pub defender_api_base: Option<String>,
    pub notify_channels: Option<Vec<String>>,
    /// `None`: keep the stored policy (the console's form has no approval fields); the API's
    /// PUT always gives one (absent = `never`, a PUT replaces the registration).
    pub approval: Option<ApprovalPolicy>,
}

fn parse_registration(
    id: TenantId,
    body: &JsonBody,
    configured_api_base: &Url,
) -> Result<Registration, ApiError> {
    body.only(FIELDS)?;
    // A field that is there must be valid: a blank secretName or defenderApiBase is an
    // error, not "none" (openapi.yaml's patterns say so, and a typo must not pass).
    for name in ["secretName", "defenderApiBase"] {
        if body.has(name) && body.opt_str(name)?.is_none() {
            return Err(ApiError::bad_request(
                if name == "secretName" {
                    "InvalidSecretName"
                } else {
                    "InvalidField"
                },
                format!("{name} is blank; leave it out instead"),
            ));
        }
    }
    if body.has("notifyChannels") && !body.is_array("notifyChannels") {
        return Err(ApiError::bad_request(
            "InvalidField",
            "notifyChannels must be a list, e.g. [\"teams\", \"email\"]",
        ));
    }
    let fields = TenantFields {
        display_name: body.str("displayName")?,
        client_id: body.str("clientId")?,
        auth_mode: body.str("authMode")?,
        secret_name: body.opt_str("secretName")?,
        enabled: body.opt_bool("enabled")?,
        defender_api_base: body.opt_str("defenderApiBase")?,
        notify_channels: body.opt_list("notifyChannels")?,
        approval: Some(match body.opt_value("approval") {
            Some(v) => parse_approval(v)?,
            None => ApprovalPolicy::Never,
        }),
    };
    validate(id, fields, configured_api_base)
}

/// Validates a registration (the one rule set of the API and the console).
///
/// # Errors
/// 400 naming the field at fault.
pub(crate) fn validate(
    id: TenantId,
    fields: TenantFields,
    configured_api_base: &Url,
) -> Result<Registration, ApiError> {
    let display_name = fields.display_name;
    if display_name.chars().count() > 256 || display_name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "InvalidField",
            "displayName must be at most 256 printable characters",
        ));
    }
    let client_id = fields.client_id;
    let mode_raw = fields.auth_mode;
    let mode = AuthMode::parse(&mode_raw).map_err(|_| {
        ApiError::bad_request(
            "InvalidAuthMode",
            format!(
                "authMode must be 'secret' or 'federated', not '{}'",
                truncate(&mode_raw)
            ),
        )
    })?;
    let secret_name =
        match fields.secret_name {
            Some(s) => Some(SecretName::parse(&s).map_err(|e| {
                ApiError::bad_request("InvalidSecretName", format!("secretName {e}"))
            })?),
            None => None,
        };
    let auth = TenantAuth::new(id, &client_id, mode, secret_name).map_err(|e| {
        let code = match e {
            crate::clients::credentials::TenantAuthError::InvalidClientId => "InvalidClientId",
            crate::clients::credentials::TenantAuthError::MissingSecretName => "MissingSecretName",
            crate::clients::credentials::TenantAuthError::UnknownMode(_) => "InvalidAuthMode",
        };
        ApiError::bad_request(code, e.to_string())
    })?;
    let defender_api_base = match fields.defender_api_base {
        Some(raw) => {
            let url = Url::parse(&raw)
                .ok()
                .filter(|u| u.scheme() == "https" && u.host_str().is_some())
                .ok_or_else(|| {
                    ApiError::bad_request("InvalidField", "defenderApiBase must be an https:// URL")
                })?;
            // The tenant's token (with Machine.Offboard) goes to this host: Microsoft's only.
            check_defender_api_base(&url, configured_api_base)
                .map_err(|e| ApiError::bad_request("DefenderApiBaseNotAllowed", e.to_string()))?;
            Some(url)
        }
        None => None,
    };
    let notify_channels = match fields.notify_channels {
        Some(names) => ChannelSet::from_names(names.iter().map(String::as_str))
            .map_err(|e| ApiError::bad_request("InvalidField", format!("notifyChannels: {e}")))?,
        None => ChannelSet::default(),
    };
    Ok(Registration {
        approval: fields.approval,
        auth,
        display_name,
        enabled: fields.enabled.unwrap_or(true),
        defender_api_base,
        notify_channels,
    })
}

/// `{"mode": "never"|"always"|"above", "threshold": N}` (design §9.4).
fn parse_approval(v: &Value) -> Result<ApprovalPolicy, ApiError> {
    let bad = |m: String| ApiError::bad_request("InvalidApproval", m);
    let Value::Object(o) = v else {
        return Err(bad(
            "approval must be an object: {\"mode\": \"never\"|\"always\"|\"above\", \"threshold\": N}".into(),
        ));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["mode", "threshold"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field 'approval.{}'; expected mode, threshold",
            truncate(k)
        )));
    }
    let mode = match o.get("mode") {
        Some(Value::String(m)) => m.as_str(),
        None | Some(Value::Null) => return Err(bad("approval.mode is required".into())),
        Some(_) => return Err(bad("approval.mode must be a string".into())),
    };
    let threshold = match o.get("threshold") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| bad("approval.threshold must be a whole number".into()))?,
        ),
        Some(_) => return Err(bad("approval.threshold must be a number".into())),
    };
    // Checked whatever the mode, so a bad threshold is never stored silently.
    if let Some(n) = threshold
        && !(0..=i64::from(crate::domain::approval::MAX_THRESHOLD)).contains(&n)
    {
        return Err(bad(format!(
            "approval.threshold must be a whole number from 0 to {}",
            crate::domain::approval::MAX_THRESHOLD
        )));
    }
    ApprovalPolicy::parse(mode, threshold).map_err(|e| bad(truncate_message(&e)))
}

fn truncate_message(m: &str) -> String {
    m.chars().filter(|c| !c.is_control()).take(200).collect()
}

async fn put(
    state: &AppState,
    table: &crate::clients::tables::TableClient,
    id: TenantId,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let body = JsonBody::parse(req, BODY_LIMIT)?;
    let reg = parse_registration(id.clone(), &body, &state.config().defender_api_base)?;
    let saved = save(state, table, reg, &super::key_actor(req)).await?;
    let mut answer =
        InvocationResponse::http(&HttpResponse::json(saved.status, &to_json(&saved.tenant)));
    if let Some(job) = saved.first_sync {
        answer = answer.with_queue("jobs", vec![job]);
    }
    Ok(answer)
}

/// A registration written: 201 created or 200 updated, and the first-sync job to queue on
/// `jobs` when the tenant was created or re-enabled.
pub(crate) struct Saved {
    pub status: u16,
    pub tenant: Tenant,
    pub first_sync: Option<String>,
}

/// Writes a validated registration (the API's PUT and the console's forms): checks the
/// secret exists first, keeps `createdAt`, refuses a lost race with 409.
///
/// # Errors
/// [`ApiError`] for the caller.
pub(crate) async fn save(
    state: &AppState,
    table: &crate::clients::tables::TableClient,
    reg: Registration,
    actor: &crate::domain::Actor,
) -> Result<Saved, ApiError> {
    check_secret_exists(state, &reg.auth).await?;
    let id = reg.auth.tenant_id().clone();

    let now = state.now();
    let existing = tenants::get(table, &id).await.map_err(storage)?;
    let mut tenant = Tenant {
        auth: reg.auth,
        display_name: reg.display_name,
        enabled: reg.enabled,
        defender_api_base: reg.defender_api_base,
        notify_channels: reg.notify_channels,
        approval: reg
            .approval
            .or_else(|| existing.as_ref().map(|v| v.tenant.approval))
            .unwrap_or(ApprovalPolicy::Never),
        created_at: now,
        updated_at: now,
    };
    let (status, queue_sync) = match existing {
        None => match tenants::insert(table, &tenant).await {
            Ok(()) => (201, tenant.enabled),
            // A concurrent PUT created it first: ours is the later write.
            Err(TableError::Conflict { .. }) => {
                tenants::update(table, &tenant, None)
                    .await
                    .map_err(storage)?;
                (200, false)
            }
            Err(e) => return Err(storage(e)),
        },
        Some(old) => {
            tenant.created_at = old.tenant.created_at;
            update(table, &tenant, old.etag).await?;
            (200, tenant.enabled && !old.tenant.enabled)
        }
    };
    let what = if status == 201 {
        "registered"
    } else {
        "updated"
    };
    audit_change(state, &tenant, what, actor).await?;
    // The client secret may have been rotated along with this registration.
    state.services().credentials.forget(&tenant.auth);
    state.services().recent_tenants.forget(&id);
    tracing::info!(status, first_sync = queue_sync, "tenant registered");
    let first_sync = queue_sync.then(|| SyncJob::new(&id, "registered", now).to_message());
    Ok(Saved {
        status,
        tenant,
        first_sync,
    })
}

/// A `secret` tenant's secret must exist before the tenant is accepted: finding out at the
/// first sync, hours later, is worse.
async fn check_secret_exists(state: &AppState, auth: &TenantAuth) -> Result<(), ApiError> {
    let Some(name) = auth.secret_name() else {
        return Ok(());
    };
    let Some(vault) = state.vault() else {
        return Err(ApiError::bad_request(
            "KeyVaultNotConfigured",
            "authMode 'secret' needs Key Vault, but KEY_VAULT_URI is not set for this app",
        ));
    };
    match vault.fetch(name).await {
        Ok(_) => Ok(()),
        // Well-formed but not there yet: 422, the body is fine and the vault is not.
        Err(KeyVaultError::SecretNotFound { .. } | KeyVaultError::Empty { .. }) => {
            Err(ApiError::unprocessable(
                "SecretNotFound",
                format!(
                    "secretName '{name}' does not exist in Key Vault (or is empty); store the client secret there first"
                ),
            ))
        }
        Err(e) if e.is_transient() => Err(ApiError::Unavailable(
            "Key Vault is not reachable right now; retry later".into(),
        )),
        Err(e) => Err(ApiError::Internal(
            anyhow::Error::new(e).context("checking the tenant's secret in Key Vault"),
        )),
    }
}

async fn disable(
    state: &AppState,
    table: &crate::clients::tables::TableClient,
    id: &TenantId,
    actor: &crate::domain::Actor,
) -> Result<InvocationResponse, ApiError> {
    let tenant = disable_tenant(state, table, id, actor).await?;
    Ok(InvocationResponse::http(&HttpResponse::json(
        200,
        &to_json(&tenant),
    )))
}

/// Disables a tenant (its data is kept); idempotent.
///
/// # Errors
/// 404 for an unknown tenant, 409 for a lost race.
pub(crate) async fn disable_tenant(
    state: &AppState,
    table: &crate::clients::tables::TableClient,
    id: &TenantId,
    actor: &crate::domain::Actor,
) -> Result<Tenant, ApiError> {
    let Some(mut v) = tenants::get(table, id).await.map_err(storage)? else {
        return Err(unknown(id));
    };
    if v.tenant.enabled {
        v.tenant.enabled = false;
        v.tenant.updated_at = state.now();
        update(table, &v.tenant, v.etag).await?;
        audit_change(state, &v.tenant, "disabled", actor).await?;
        state.services().recent_tenants.forget(id);
        tracing::info!("tenant disabled; its data is kept");
    }
    Ok(v.tenant)
}

/// Replaces the tenant if nobody changed it since it was read; a lost race is a 409.
async fn update(
    table: &crate::clients::tables::TableClient,
    tenant: &Tenant,
    etag: Option<crate::clients::tables::ETag>,
) -> Result<(), ApiError> {
    match tenants::update(table, tenant, etag).await {
        Ok(()) => Ok(()),
        Err(TableError::PreconditionFailed { .. }) => Err(ApiError::conflict(
            "ConcurrentUpdate",
            "the tenant was changed by another request at the same time; retry",
            None,
        )),
        Err(e) => Err(storage(e)),
    }
}

fn to_json(t: &Tenant) -> Value {
    json!({
        "tenantId": t.id().as_str(),
        "displayName": t.display_name,
        "clientId": t.auth.client_id(),
        "authMode": t.auth.mode().as_str(),
        "secretName": t.auth.secret_name().map(SecretName::as_str),
        "enabled": t.enabled,
        "defenderApiBase": t.defender_api_base.as_ref().map(Url::as_str),
        "notifyChannels": t.notify_channels.channels().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "approval": approval_json(t.approval),
        "createdAt": rfc3339(t.created_at),
        "updatedAt": rfc3339(t.updated_at),
    })
}

/// The tenant's approval as in the API (`threshold` only with `above`).
pub(crate) fn approval_json(p: ApprovalPolicy) -> Value {
    match p {
        ApprovalPolicy::Above { threshold } => json!({"mode": "above", "threshold": threshold}),
        other => json!({"mode": other.mode()}),
    }
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The Audit row of a tenant change, in the tenant's partition, with its actor (design §9.2).
async fn audit_change(
    state: &AppState,
    tenant: &Tenant,
    what: &str,
    actor: &crate::domain::Actor,
) -> Result<(), ApiError> {
    use crate::store::audit::{self, AuditEntry};
    let table = store::open(state.tables(), names::AUDIT)
        .await
        .map_err(storage)?;
    let detail = format!(
        "tenant {what} by {actor}: {} ({}, {}, approval {})",
        tenant.display_name,
        tenant.auth.mode().as_str(),
        if tenant.enabled {
            "enabled"
        } else {
            "disabled"
        },
        tenant.approval
    );
    let entry = AuditEntry::new("Tenant", tenant.id().as_str(), detail, tenant.updated_at)
        .by(actor)
        .with("Enabled", tenant.enabled);
    let unique = format!("tenant-{}", tenant.updated_at.unix_timestamp_nanos());
    audit::append(&table, tenant.id(), &entry, &unique)
        .await
        .map_err(storage)
}
