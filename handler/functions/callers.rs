//! `Callers` (admin key): register, read, list and disable the calling systems that sign
//! `POST /api/offboard` (design §9.1). A caller is answered as JSON without any key; a PUT
//! is refused when a key it names is missing from Key Vault or shorter than 32 bytes.

use serde_json::{Value, json};

use super::body::{JsonBody, truncate};
use super::tenants::{rfc3339, storage};
use crate::app::AppState;
use crate::clients::keyvault::KeyVaultError;
use crate::clients::tables::{TableClient, TableError};
use crate::config::SecretName;
use crate::domain::caller::TenantScope;
use crate::domain::signature::check_key_length;
use crate::domain::{Actor, CallerId};
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::store::audit::{self, AuditEntry};
use crate::store::callers::{self, Caller};
use crate::store::{self, names};

const BODY_LIMIT: usize = 64 * 1024;
const FIELDS: &[&str] = &[
    "displayName",
    "tenants",
    "secretName",
    "nextSecretName",
    "enabled",
];

/// GET / PUT / DELETE /api/callers/{callerId?}.
///
/// # Errors
/// [`ApiError`] for the caller.
pub async fn handle(
    state: &AppState,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let id = match req.param("callerId") {
        Some(raw) => Some(
            CallerId::parse(raw)
                .map_err(|e| ApiError::bad_request("InvalidCallerId", format!("callerId: {e}")))?,
        ),
        None => None,
    };
    let actor = super::key_actor(req);
    let table = store::open(state.tables(), names::CALLERS)
        .await
        .map_err(storage)?;
    match (req.method.as_str(), id) {
        ("GET", None) => {
            let items: Vec<Value> = callers::list(&table)
                .await
                .map_err(storage)?
                .iter()
                .map(to_json)
                .collect();
            Ok(ok(200, &json!({ "items": items })))
        }
        ("GET", Some(id)) => match callers::get(&table, &id).await.map_err(storage)? {
            Some(v) => Ok(ok(200, &to_json(&v.caller))),
            None => Err(unknown(&id)),
        },
        ("PUT", Some(id)) => put(state, &table, id, req, &actor).await,
        ("DELETE", Some(id)) => disable(state, &table, &id, &actor).await,
        ("PUT" | "DELETE", None) => Err(ApiError::bad_request(
            "MissingCallerId",
            "the route needs a caller id: /api/callers/{callerId}",
        )),
        (m, _) => Err(ApiError::MethodNotAllowed {
            message: format!("{m} is not supported here (GET, PUT, DELETE)"),
        }),
    }
}

fn ok(status: u16, body: &Value) -> InvocationResponse {
    InvocationResponse::http(&HttpResponse::json(status, body))
}

fn unknown(id: &CallerId) -> ApiError {
    ApiError::not_found("CallerNotFound", format!("caller {id} is not registered"))
}

/// A PUT body, validated.
struct Registration {
    display_name: String,
    tenants: TenantScope,
    secret_name: SecretName,
    next_secret_name: Option<SecretName>,
    enabled: bool,
}

fn parse(id: &CallerId, body: &JsonBody) -> Result<Registration, ApiError> {
    if id.as_str() == CallerId::DEFAULT {
        return Err(ApiError::bad_request(
            "InvalidCallerId",
            "callerId 'default' is the built-in caller of WEBHOOK_HMAC_SECRET; choose another id",
        ));
    }
    body.only(FIELDS)?;
    let display_name = body.str("displayName")?;
    if display_name.chars().count() > 256 || display_name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "InvalidField",
            "displayName must be at most 256 printable characters",
        ));
    }
    let list = body
        .opt_list("tenants")?
        .ok_or_else(|| ApiError::bad_request("MissingField", "tenants is required"))?;
    if let Some(Value::Array(items)) = body.opt_value("tenants")
        && items
            .iter()
            .any(|i| i.as_str().is_some_and(|t| t.trim() != t))
    {
        return Err(ApiError::bad_request(
            "InvalidTenants",
            "tenants: a tenant id with spaces around it; send the bare GUID",
        ));
    }
    let tenants =
        TenantScope::from_list(&list).map_err(|e| ApiError::bad_request("InvalidTenants", e))?;
    let secret = |field: &'static str| -> Result<Option<SecretName>, ApiError> {
        // A field that is there must be valid as sent: a blank name, or one with spaces
        // around it, is an error, not "none" or a silently trimmed name.
        if let Some(Value::String(raw)) = body.opt_value(field)
            && (raw.trim().is_empty() || raw.trim() != raw)
        {
            return Err(ApiError::bad_request(
                "InvalidSecretName",
                format!("{field} must be a Key Vault secret name (1-127 of 0-9, a-z, A-Z, '-')"),
            ));
        }
        body.opt_str(field)?
            .map(|s| {
                SecretName::parse(&s)
                    .map_err(|e| ApiError::bad_request("InvalidSecretName", format!("{field} {e}")))
            })
            .transpose()
    };
    let secret_name = secret("secretName")?
        .ok_or_else(|| ApiError::bad_request("MissingField", "secretName is required"))?;
    let next_secret_name = secret("nextSecretName")?;
    Ok(Registration {
        display_name,
        tenants,
        secret_name,
        next_secret_name,
        enabled: body.opt_bool("enabled")?.unwrap_or(true),
    })
}

async fn put(
    state: &AppState,
    table: &TableClient,
    id: CallerId,
    req: &HttpRequestData,
    actor: &Actor,
) -> Result<InvocationResponse, ApiError> {
    let body = JsonBody::parse(req, BODY_LIMIT)?;
    let reg = parse(&id, &body)?;
    check_key(state, "secretName", &reg.secret_name).await?;
    if let Some(next) = &reg.next_secret_name {
        check_key(state, "nextSecretName", next).await?;
    }
    let now = state.now();
    let mut caller = Caller {
        id: id.clone(),
        display_name: reg.display_name,
        tenants: reg.tenants,
        secret_name: reg.secret_name,
        next_secret_name: reg.next_secret_name,
        enabled: reg.enabled,
        created_at: now,
        updated_at: now,
    };
    let status = match callers::get(table, &id).await.map_err(storage)? {
        None => match callers::insert(table, &caller).await {
            Ok(()) => 201,
            // A concurrent PUT created it first: ours is the later write.
            Err(TableError::Conflict { .. }) => {
                callers::update(table, &caller, None)
                    .await
                    .map_err(storage)?;
                200
            }
            Err(e) => return Err(storage(e)),
        },
        Some(old) => {
            caller.created_at = old.caller.created_at;
            update(table, &caller, old.etag).await?;
            200
        }
    };
    let what = if status == 201 {
        "registered"
    } else {
        "updated"
    };
    audit_change(state, &caller, what, actor).await?;
    tracing::info!(caller.id = %id, status, enabled = caller.enabled, "caller {what}");
    Ok(ok(status, &to_json(&caller)))
}

/// A key the caller will sign with must exist and be at least 32 bytes. Read straight from
/// the vault (this also refreshes this instance's cache after a rotation).
async fn check_key(state: &AppState, field: &str, name: &SecretName) -> Result<(), ApiError> {
    if state.config().notify.webhook_signing_secret.as_ref() == Some(name) {
        return Err(ApiError::bad_request(
            "InvalidSecretName",
            format!(
                "{field} '{name}' is the key outbound events are signed with (NOTIFY_WEBHOOK_SIGNING_SECRET); a caller needs a key of its own"
            ),
        ));
    }
    let Some(vault) = state.vault() else {
        return Err(ApiError::bad_request(
            "KeyVaultNotConfigured",
            "callers' keys live in Key Vault, but KEY_VAULT_URI is not set for this app",
        ));
    };
    match vault.fetch(name).await {
        Ok(secret) => {
            use secrecy::ExposeSecret;
            // Well-formed, but the vault's content is in the way: 422, as for a tenant's secret.
            check_key_length(secret.value.expose_secret().as_bytes()).map_err(|why| {
                ApiError::unprocessable(
                    "KeyTooShort",
                    format!("{field} '{name}': {why}; store a longer random key (e.g. 64 hex characters) first"),
                )
            })
        }
        Err(KeyVaultError::SecretNotFound { .. } | KeyVaultError::Empty { .. }) => {
            Err(ApiError::unprocessable(
                "SecretNotFound",
                format!(
                    "{field} '{}' does not exist in Key Vault (or is empty); store the caller's key there first",
                    truncate(name.as_str())
                ),
            ))
        }
        Err(e) if e.is_transient() => Err(ApiError::Unavailable(
            "Key Vault is not reachable right now; retry later".into(),
        )),
        Err(e) => Err(ApiError::Internal(
            anyhow::Error::new(e).context("checking the caller's key in Key Vault"),
        )),
    }
}

async fn disable(
    state: &AppState,
    table: &TableClient,
    id: &CallerId,
    actor: &Actor,
) -> Result<InvocationResponse, ApiError> {
    let Some(mut v) = callers::get(table, id).await.map_err(storage)? else {
        return Err(unknown(id));
    };
    if v.caller.enabled {
        v.caller.enabled = false;
        v.caller.updated_at = state.now();
        update(table, &v.caller, v.etag).await?;
        audit_change(state, &v.caller, "disabled", actor).await?;
        tracing::info!(caller.id = %id, "caller disabled");
    }
    Ok(ok(200, &to_json(&v.caller)))
}

/// Replaces the caller if nobody changed it since it was read; a lost race is a 409.
async fn update(
    table: &TableClient,
    caller: &Caller,
    etag: Option<crate::clients::tables::ETag>,
) -> Result<(), ApiError> {
    match callers::update(table, caller, etag).await {
        Ok(()) => Ok(()),
        Err(TableError::PreconditionFailed { .. }) => Err(ApiError::conflict(
            "ConcurrentUpdate",
            "the caller was changed by another request at the same time; retry",
            None,
        )),
        Err(e) => Err(storage(e)),
    }
}

/// One Audit row per change, in the app-wide partition, with the actor (design §9.2).
async fn audit_change(
    state: &AppState,
    caller: &Caller,
    what: &str,
    actor: &Actor,
) -> Result<(), ApiError> {
    let table = store::open(state.tables(), names::AUDIT)
        .await
        .map_err(storage)?;
    let detail = format!(
        "caller {} {what} by {actor}: tenants {}, key {}{}, {}",
        caller.id,
        caller.tenants.to_stored(),
        caller.secret_name,
        caller
            .next_secret_name
            .as_ref()
            .map_or(String::new(), |n| format!(", next key {n}")),
        if caller.enabled {
            "enabled"
        } else {
            "disabled"
        },
    );
    let entry = AuditEntry::new("Caller", caller.id.as_str(), detail, caller.updated_at)
        .by(actor)
        .with("Enabled", caller.enabled);
    let unique = format!(
        "caller-{}-{}",
        caller.id,
        caller.updated_at.unix_timestamp_nanos()
    );
    audit::append_app(&table, &entry, &unique)
        .await
        .map_err(storage)
}

fn to_json(c: &Caller) -> Value {
    json!({
        "callerId": c.id.as_str(),
        "displayName": c.display_name,
        "tenants": c.tenants.to_list(),
        "secretName": c.secret_name.as_str(),
        "nextSecretName": c.next_secret_name.as_ref().map(SecretName::as_str),
        "enabled": c.enabled,
        "createdAt": rfc3339(c.created_at),
        "updatedAt": rfc3339(c.updated_at),
    })
}
