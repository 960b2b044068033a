//! `Callers` rows: the calling systems allowed to sign `POST /api/offboard` (design §9.1).
//! A row holds the *names* of the caller's keys in Key Vault, never a key.

use time::OffsetDateTime;

use crate::clients::tables::{ETag, Entity, IfMatch, TableClient, TableError, filter};
use crate::config::SecretName;
use crate::domain::CallerId;
use crate::domain::caller::TenantScope;

/// The partition every caller row lives in.
pub const PARTITION: &str = "caller";

/// A registered calling system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: CallerId,
    pub display_name: String,
    pub tenants: TenantScope,
    /// Key Vault secret name of the key the caller signs with.
    pub secret_name: SecretName,
    /// During a rotation: the key the caller moves to (either verifies).
    pub next_secret_name: Option<SecretName>,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Caller {
    fn to_entity(&self) -> Entity {
        Entity::new(PARTITION, self.id.as_str())
            .with("DisplayName", self.display_name.as_str())
            .with("Tenants", self.tenants.to_stored())
            .with("SecretName", self.secret_name.as_str())
            .with(
                "NextSecretName",
                self.next_secret_name
                    .as_ref()
                    .map(SecretName::as_str)
                    .unwrap_or_default(),
            )
            .with("Enabled", self.enabled)
            .with("CreatedAt", self.created_at)
            .with("UpdatedAt", self.updated_at)
    }

    fn from_entity(e: &Entity) -> Result<Self, TableError> {
        let bad = |what: &str, why: String| {
            TableError::Decode(format!("Callers/{}: {what}: {why}", e.row_key))
        };
        let secret = |c: &str| -> Result<Option<SecretName>, TableError> {
            match e.get_str(c).filter(|s| !s.is_empty()) {
                Some(s) => SecretName::parse(s).map(Some).map_err(|x| bad(c, x)),
                None => Ok(None),
            }
        };
        let epoch = OffsetDateTime::UNIX_EPOCH;
        Ok(Self {
            id: CallerId::parse(&e.row_key).map_err(|x| bad("RowKey", x.to_string()))?,
            display_name: e.get_str("DisplayName").unwrap_or_default().to_owned(),
            tenants: TenantScope::parse_stored(e.get_str("Tenants").unwrap_or_default())
                .map_err(|x| bad("Tenants", x))?,
            secret_name: secret("SecretName")?
                .ok_or_else(|| bad("SecretName", "missing".into()))?,
            next_secret_name: secret("NextSecretName")?,
            enabled: e.get_bool("Enabled").unwrap_or(false),
            created_at: e.optional("CreatedAt")?.unwrap_or(epoch),
            updated_at: e.optional("UpdatedAt")?.unwrap_or(epoch),
        })
    }
}

/// A caller read with its ETag, for a conditional update.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub caller: Caller,
    pub etag: Option<ETag>,
}

/// One caller.
///
/// # Errors
/// Storage failures, or a row that no longer decodes.
pub async fn get(table: &TableClient, id: &CallerId) -> Result<Option<Versioned>, TableError> {
    match table.get(PARTITION, id.as_str()).await? {
        None => Ok(None),
        Some(e) => Ok(Some(Versioned {
            caller: Caller::from_entity(&e)?,
            etag: e.etag.clone(),
        })),
    }
}

/// Every caller; an unreadable row is skipped with a warning.
///
/// # Errors
/// Storage failures.
pub async fn list(table: &TableClient) -> Result<Vec<Caller>, TableError> {
    let f = filter::eq("PartitionKey", PARTITION);
    Ok(table
        .query_all(Some(&f), None)
        .await?
        .iter()
        .filter_map(|e| match Caller::from_entity(e) {
            Ok(c) => Some(c),
            Err(err) => {
                tracing::warn!(caller.id = %e.row_key, error = %err, "skipping an unreadable Callers row");
                None
            }
        })
        .collect())
}

/// Creates the caller.
///
/// # Errors
/// [`TableError::Conflict`] when it already exists.
pub async fn insert(table: &TableClient, caller: &Caller) -> Result<(), TableError> {
    table.insert(&caller.to_entity()).await.map(drop)
}

/// Replaces the caller if its row still has `etag`.
///
/// # Errors
/// [`TableError::PreconditionFailed`] when someone else changed it first.
pub async fn update(
    table: &TableClient,
    caller: &Caller,
    etag: Option<ETag>,
) -> Result<(), TableError> {
    table
        .update_replace(
            &caller.to_entity(),
            etag.map_or(IfMatch::Any, IfMatch::Etag),
        )
        .await
        .map(drop)
}
