//! Queue message bodies the functions exchange (JSON text, one message per string).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::TenantId;

/// A `device-sync` job: sync one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncJob {
    pub tenant_id: TenantId,
    pub run_id: String,
    /// `scheduled` or `registered`.
    pub reason: String,
}

impl SyncJob {
    #[must_use]
    pub fn new(tenant: &TenantId, reason: &str, now: OffsetDateTime) -> Self {
        Self {
            tenant_id: tenant.clone(),
            run_id: run_id("sync", now),
            reason: reason.to_owned(),
        }
    }

    #[must_use]
    pub fn to_message(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `sync-20261129T070000Z-<8 hex>`: sortable by time, unique per run.
#[must_use]
pub fn run_id(kind: &str, now: OffsetDateTime) -> String {
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{kind}-{stamp}-{}", &suffix[..8])
}
