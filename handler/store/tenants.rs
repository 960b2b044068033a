//! `Tenants` rows: the customer tenants and how to reach their Defender.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use url::Url;

use crate::clients::credentials::{AuthMode, TenantAuth};
use crate::clients::tables::{Entity, IfMatch, TableClient, TableError, filter};
use crate::config::SecretName;
use crate::domain::approval::ApprovalPolicy;
use crate::domain::{ChannelSet, TenantId};

/// The partition every tenant row lives in (DESIGN §4).
pub const PARTITION: &str = "tenant";

/// A registered tenant. Holds a secret's *name*, never a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub auth: TenantAuth,
    pub display_name: String,
    pub enabled: bool,
    /// A regional or government MDE host; `None` = the app's `DEFENDER_API_BASE`.
    pub defender_api_base: Option<Url>,
    pub notify_channels: ChannelSet,
    /// Which new requests wait for an approver (design §9.4); a row without the columns is
    /// `never`.
    pub approval: ApprovalPolicy,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Tenant {
    pub fn id(&self) -> &TenantId {
        self.auth.tenant_id()
    }

    fn to_entity(&self) -> Entity {
        Entity::new(PARTITION, self.id().as_str())
            .with("DisplayName", self.display_name.as_str())
            .with("ClientId", self.auth.client_id())
            .with("AuthMode", self.auth.mode().as_str())
            .with(
                "SecretName",
                self.auth
                    .secret_name()
                    .map(SecretName::as_str)
                    .unwrap_or_default(),
            )
            .with("Enabled", self.enabled)
            .with(
                "DefenderApiBase",
                self.defender_api_base
                    .as_ref()
                    .map(Url::as_str)
                    .unwrap_or_default(),
            )
            .with("NotifyChannels", self.notify_channels.to_stored())
            .with("ApprovalMode", self.approval.mode())
            .with(
                "ApprovalThreshold",
                crate::clients::tables::EdmValue::Int32(
                    i32::try_from(self.approval.threshold()).unwrap_or(i32::MAX),
                ),
            )
            .with("CreatedAt", self.created_at)
            .with("UpdatedAt", self.updated_at)
    }

    fn from_entity(e: &Entity) -> Result<Self, TableError> {
        let bad = |what: &str, why: String| {
            TableError::Decode(format!("Tenants/{}: {what}: {why}", e.row_key))
        };
        let tenant_id = TenantId::parse(&e.row_key).map_err(|x| bad("RowKey", x.to_string()))?;
        let mode_raw: String = e.require("AuthMode")?;
        let mode = AuthMode::parse(&mode_raw).map_err(|x| bad("AuthMode", x.to_string()))?;
        let secret_name = match e
            .optional::<String>("SecretName")?
            .filter(|s| !s.is_empty())
        {
            Some(s) => Some(SecretName::parse(&s).map_err(|x| bad("SecretName", x))?),
            None => None,
        };
        let client_id: String = e.require("ClientId")?;
        let auth = TenantAuth::new(tenant_id, &client_id, mode, secret_name)
            .map_err(|x| bad("auth", x.to_string()))?;
        let defender_api_base = match e
            .optional::<String>("DefenderApiBase")?
            .filter(|s| !s.is_empty())
        {
            Some(s) => Some(Url::parse(&s).map_err(|x| bad("DefenderApiBase", x.to_string()))?),
            None => None,
        };
        let notify_channels =
            ChannelSet::parse(&e.optional::<String>("NotifyChannels")?.unwrap_or_default())
                .map_err(|x| bad("NotifyChannels", x))?;
        let approval = match e
            .optional::<String>("ApprovalMode")?
            .filter(|s| !s.is_empty())
        {
            Some(mode) => {
                ApprovalPolicy::parse(&mode, e.get_i32("ApprovalThreshold").map(i64::from))
                    .map_err(|x| bad("ApprovalMode", x))?
            }
            None => ApprovalPolicy::Never,
        };
        let now = OffsetDateTime::UNIX_EPOCH;
        Ok(Self {
            auth,
            display_name: e.optional("DisplayName")?.unwrap_or_default(),
            enabled: e.optional("Enabled")?.unwrap_or(false),
            defender_api_base,
            notify_channels,
            approval,
            created_at: e.optional("CreatedAt")?.unwrap_or(now),
            updated_at: e.optional("UpdatedAt")?.unwrap_or(now),
        })
    }
}

/// A tenant read with its ETag, for a conditional update.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub tenant: Tenant,
    pub etag: Option<crate::clients::tables::ETag>,
}

/// One tenant.
///
/// # Errors
/// Storage failures, or a row that no longer decodes.
pub async fn get(table: &TableClient, id: &TenantId) -> Result<Option<Versioned>, TableError> {
    match table.get(PARTITION, id.as_str()).await? {
        None => Ok(None),
        Some(e) => Ok(Some(Versioned {
            tenant: Tenant::from_entity(&e)?,
            etag: e.etag.clone(),
        })),
    }
}

/// Every tenant (a handful to a few thousand: one partition, paged by the client).
///
/// # Errors
/// Storage failures. A row that doesn't decode is skipped with a warning, so one bad row
/// can't stop every tenant's sync.
pub async fn list(table: &TableClient, only_enabled: bool) -> Result<Vec<Tenant>, TableError> {
    let mut f = filter::eq("PartitionKey", PARTITION);
    if only_enabled {
        f = filter::and(&f, &filter::eq("Enabled", true));
    }
    let rows = table.query_all(Some(&f), None).await?;
    Ok(rows
        .iter()
        .filter_map(|e| match Tenant::from_entity(e) {
            Ok(t) => Some(t),
            Err(err) => {
                tracing::warn!(tenant.id = %e.row_key, error = %err, "skipping an unreadable Tenants row");
                None
            }
        })
        .collect())
}

/// Creates the tenant.
///
/// # Errors
/// [`TableError::Conflict`] when it already exists.
pub async fn insert(table: &TableClient, tenant: &Tenant) -> Result<(), TableError> {
    table.insert(&tenant.to_entity()).await.map(drop)
}

/// Replaces the tenant if its row still has `etag`.
///
/// # Errors
/// [`TableError::PreconditionFailed`] when someone else changed it first.
pub async fn update(
    table: &TableClient,
    tenant: &Tenant,
    etag: Option<crate::clients::tables::ETag>,
) -> Result<(), TableError> {
    let if_match = etag.map_or(IfMatch::Any, IfMatch::Etag);
    table
        .update_replace(&tenant.to_entity(), if_match)
        .await
        .map(drop)
}

/// Tenants this instance recently read as enabled, with their approval mode, so the
/// webhook's hot path can skip the read for a caller that sends many requests for one tenant.
///
/// Safe to be briefly out of date: a tenant disabled on another instance keeps being
/// accepted here for at most the TTL, and the offboard worker reads the tenant again before
/// it calls Defender (a request of a disabled tenant ends without a call). This instance
/// forgets a tenant as soon as it changes it. An approval mode changed on another instance
/// applies here within the TTL (30 s) too.
#[derive(Debug)]
pub struct RecentlyEnabled {
    ttl: Duration,
    seen: Mutex<HashMap<TenantId, (Instant, ApprovalPolicy)>>,
}

impl RecentlyEnabled {
    /// Bounds the map: an MSP has hundreds of tenants, not this many.
    const MAX_ENTRIES: usize = 10_000;

    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            seen: Mutex::default(),
        }
    }

    /// The approval mode of `id` if it was read as enabled within the TTL.
    pub fn get(&self, id: &TenantId) -> Option<ApprovalPolicy> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, p)| *p)
    }

    /// Whether `id` was read as enabled within the TTL.
    pub fn contains(&self, id: &TenantId) -> bool {
        self.get(id).is_some()
    }

    /// Records that `id` was just read as enabled, with its approval mode.
    pub fn remember(&self, id: &TenantId, approval: ApprovalPolicy) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= Self::MAX_ENTRIES {
            let ttl = self.ttl;
            seen.retain(|_, (at, _)| at.elapsed() < ttl);
            if seen.len() >= Self::MAX_ENTRIES {
                seen.clear();
            }
        }
        seen.insert(id.clone(), (Instant::now(), approval));
    }

    /// Forgets `id` (it was just changed here).
    pub fn forget(&self, id: &TenantId) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod recently_enabled_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(n: u8) -> TenantId {
        TenantId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02x}")).unwrap()
    }

    #[test]
    fn a_remembered_tenant_is_known_until_forgotten_or_expired() {
        let cache = RecentlyEnabled::new(Duration::from_secs(60));
        assert!(!cache.contains(&id(1)));
        cache.remember(&id(1), ApprovalPolicy::Always);
        assert!(cache.contains(&id(1)));
        assert_eq!(cache.get(&id(1)), Some(ApprovalPolicy::Always));
        assert!(!cache.contains(&id(2)));
        cache.forget(&id(1));
        assert!(!cache.contains(&id(1)));

        let expired = RecentlyEnabled::new(Duration::ZERO);
        expired.remember(&id(3), ApprovalPolicy::Never);
        assert!(!expired.contains(&id(3)));
    }
}

/// The last connection check of a tenant (table `TenantHealth`, PartitionKey `health`,
/// RowKey the tenant id): written by the console's "check" button, read by the overview.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantHealth {
    pub tenant_id: TenantId,
    pub checked_at: OffsetDateTime,
    /// A Defender token was obtained.
    pub token_ok: bool,
    /// Application permissions in the tokens' `roles` (Defender and Graph).
    pub granted: Vec<String>,
    /// Required permissions the tokens lack.
    pub missing: Vec<String>,
    /// The test call and its outcome, e.g. `GET /api/machineactions: 200`.
    pub test_call: String,
    /// The first problem, if any (token refused, 403...).
    pub error: Option<String>,
}

impl TenantHealth {
    /// Everything needed works: a token, every permission, the test call.
    pub fn is_healthy(&self) -> bool {
        self.token_ok && self.missing.is_empty() && self.error.is_none()
    }
}

/// The partition of the `TenantHealth` rows.
pub const HEALTH_PARTITION: &str = "health";

/// Stores a tenant's latest check (replacing the previous one).
///
/// # Errors
/// Storage failures.
pub async fn record_health(table: &TableClient, h: &TenantHealth) -> Result<(), TableError> {
    let e = Entity::new(HEALTH_PARTITION, h.tenant_id.as_str())
        .with("CheckedAt", h.checked_at)
        .with("TokenOk", h.token_ok)
        .with("Granted", h.granted.join(","))
        .with("Missing", h.missing.join(","))
        .with("TestCall", h.test_call.as_str())
        .with("LastError", h.error.as_deref().unwrap_or_default());
    table.upsert_replace(&e).await.map(drop)
}

fn health_from_entity(e: &Entity) -> Result<TenantHealth, TableError> {
    let list = |v: Option<String>| -> Vec<String> {
        v.unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(TenantHealth {
        tenant_id: TenantId::parse(&e.row_key)
            .map_err(|x| TableError::Decode(format!("TenantHealth/{}: {x}", e.row_key)))?,
        checked_at: e.require("CheckedAt")?,
        token_ok: e.optional("TokenOk")?.unwrap_or(false),
        granted: list(e.optional("Granted")?),
        missing: list(e.optional("Missing")?),
        test_call: e.optional("TestCall")?.unwrap_or_default(),
        error: e.optional::<String>("LastError")?.filter(|s| !s.is_empty()),
    })
}

/// The latest check of every tenant checked so far.
///
/// # Errors
/// Storage failures; unreadable rows are skipped.
pub async fn all_health(table: &TableClient) -> Result<Vec<TenantHealth>, TableError> {
    let rows = table
        .query_all(Some(&filter::eq("PartitionKey", HEALTH_PARTITION)), None)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|e| health_from_entity(e).ok())
        .collect())
}
