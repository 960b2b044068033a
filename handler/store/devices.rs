//! `Devices` rows: Defender's content (rewritten by each sync only when it changed) and the
//! operator columns (`Offboard`, `Result`, `ResultAt`, `LastRequestId`) that no sync touches.

use std::collections::HashMap;

use futures::TryStreamExt;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::clients::tables::{EdmValue, Entity, TableClient, TableError};
use crate::domain::device::DeviceContent;
use crate::domain::{CompactMachineId, MachineId, TenantId};

/// Columns a sync writes. Operator columns are deliberately absent: a merge leaves them be.
pub mod col {
    pub const NAME: &str = "ComputerDnsName";
    pub const OS: &str = "OsPlatform";
    pub const OS_VERSION: &str = "OsVersion";
    pub const HEALTH: &str = "HealthStatus";
    pub const ONBOARDING: &str = "OnboardingStatus";
    pub const LAST_SEEN: &str = "LastSeen";
    pub const FIRST_SEEN: &str = "FirstSeen";
    pub const LAST_IP: &str = "LastIpAddress";
    pub const AAD: &str = "AadDeviceId";
    pub const TAGS: &str = "MachineTags";
    pub const RISK: &str = "RiskScore";
    pub const EXPOSURE: &str = "ExposureLevel";
    pub const MERGED_INTO: &str = "MergedIntoMachineId";
    pub const POTENTIAL_DUP: &str = "PotentialDuplicate";
    pub const STALE: &str = "Stale";
    pub const DUPLICATE_OF: &str = "DuplicateOf";
    pub const GONE: &str = "Gone";
    pub const SYNCED_AT: &str = "SyncedAt";
    pub const HASH: &str = "ContentHash";
    // Operator columns.
    pub const OFFBOARD: &str = "Offboard";
    /// Who last set `Offboard` to true (an `Actor` label), and a user's object id.
    pub const OFFBOARD_BY: &str = "OffboardBy";
    pub const OFFBOARD_BY_ID: &str = "OffboardById";
    pub const RESULT: &str = "Result";
    pub const RESULT_AT: &str = "ResultAt";
    pub const LAST_REQUEST: &str = "LastRequestId";
}

/// Tags are a list; the column holds them `;`-separated with `;` itself escaped, so the
/// column stays readable in Storage Explorer (the SharePoint list users came from shows the
/// same).
#[must_use]
pub fn join_tags(tags: &[String]) -> String {
    tags.iter()
        .map(|t| t.replace('\\', "\\\\").replace(';', "\\;"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Inverse of [`join_tags`].
#[must_use]
pub fn split_tags(stored: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ';' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out
}

fn text(v: Option<&String>) -> EdmValue {
    // Empty rather than absent: a merge must clear a value Defender stopped reporting.
    EdmValue::String(v.cloned().unwrap_or_default())
}

/// The merge-safe row for a device's content, with the derived `Stale` flag.
#[must_use]
pub fn content_entity(
    tenant: &TenantId,
    d: &DeviceContent,
    stale: bool,
    now: OffsetDateTime,
) -> Entity {
    let mut e = Entity::new(tenant.as_str(), d.machine_id.as_str())
        .with(col::NAME, text(d.computer_dns_name.as_ref()))
        .with(col::OS, text(d.os_platform.as_ref()))
        .with(col::OS_VERSION, text(d.os_version.as_ref()))
        .with(col::HEALTH, text(d.health_status.as_ref()))
        .with(col::ONBOARDING, text(d.onboarding_status.as_ref()))
        .with(col::LAST_IP, text(d.last_ip_address.as_ref()))
        .with(col::AAD, text(d.aad_device_id.as_ref()))
        .with(col::TAGS, join_tags(&d.machine_tags))
        .with(col::RISK, text(d.risk_score.as_ref()))
        .with(col::EXPOSURE, text(d.exposure_level.as_ref()))
        .with(
            col::MERGED_INTO,
            d.merged_into
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
        )
        .with(col::POTENTIAL_DUP, d.potential_duplicate)
        .with(col::STALE, stale)
        .with(col::GONE, false)
        .with(col::SYNCED_AT, now)
        // The hash's bits, as Int64 (the table has no unsigned type).
        .with(
            col::HASH,
            EdmValue::Int64(i64::from_ne_bytes(d.content_hash().to_ne_bytes())),
        );
    if let Some(t) = d.last_seen {
        e.set(col::LAST_SEEN, t);
    }
    if let Some(t) = d.first_seen {
        e.set(col::FIRST_SEEN, t);
    }
    e
}

/// What a sync needs to know of a stored row to decide whether to write it (about 48 bytes:
/// a sync holds one per stored device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSummary {
    pub hash: u64,
    pub stale: bool,
    pub duplicate_of: Option<CompactMachineId>,
    pub gone: bool,
}

/// The summary of every stored device of a tenant (one query, paged). Rows whose key is not a
/// machine id (written by hand?) are skipped with a warning.
///
/// # Errors
/// Storage failures.
pub async fn load_index(
    table: &TableClient,
    tenant: &TenantId,
) -> Result<HashMap<CompactMachineId, StoredSummary>, TableError> {
    let filter = crate::clients::tables::filter::eq("PartitionKey", tenant.as_str());
    let select = [col::HASH, col::STALE, col::DUPLICATE_OF, col::GONE];
    let mut index = HashMap::new();
    let mut pages = std::pin::pin!(table.query_pages(Some(&filter), Some(&select)));
    while let Some(page) = pages.try_next().await? {
        for e in page {
            let Some(id) = CompactMachineId::parse(&e.row_key) else {
                tracing::warn!(row = %e.row_key, "a Devices row whose key is not a machine id; ignored by the sync");
                continue;
            };
            let hash = e
                .get_i64(col::HASH)
                .map_or(0, |h| u64::from_ne_bytes(h.to_ne_bytes()));
            let summary = StoredSummary {
                hash,
                stale: e.get_bool(col::STALE).unwrap_or(false),
                duplicate_of: e
                    .get_str(col::DUPLICATE_OF)
                    .and_then(CompactMachineId::parse),
                gone: e.get_bool(col::GONE).unwrap_or(false),
            };
            index.insert(id, summary);
        }
    }
    Ok(index)
}

/// A whole stored device, as the API shows it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub entity: Entity,
}

impl DeviceRow {
    pub fn machine_id(&self) -> &str {
        &self.entity.row_key
    }

    pub fn str(&self, c: &str) -> Option<&str> {
        self.entity.get_str(c).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, c: &str) -> bool {
        self.entity.get_bool(c).unwrap_or(false)
    }

    pub fn tags(&self) -> Vec<String> {
        split_tags(self.entity.get_str(col::TAGS).unwrap_or_default())
    }

    /// Who set the `Offboard` flag, when that was recorded.
    #[must_use]
    pub fn offboard_actor(&self) -> Option<crate::domain::Actor> {
        crate::domain::Actor::parse(self.str(col::OFFBOARD_BY)?, self.str(col::OFFBOARD_BY_ID))
    }

    /// The camelCase JSON of the HTTP API.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let e = &self.entity;
        let time = |c: &str| {
            e.get_datetime(c).and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        };
        json!({
            "tenantId": e.partition_key,
            "machineId": e.row_key,
            "computerDnsName": self.str(col::NAME),
            "osPlatform": self.str(col::OS),
            "osVersion": self.str(col::OS_VERSION),
            "healthStatus": self.str(col::HEALTH),
            "onboardingStatus": self.str(col::ONBOARDING),
            "lastSeen": time(col::LAST_SEEN),
            "firstSeen": time(col::FIRST_SEEN),
            "lastIpAddress": self.str(col::LAST_IP),
            "aadDeviceId": self.str(col::AAD),
            "machineTags": self.tags(),
            "riskScore": self.str(col::RISK),
            "exposureLevel": self.str(col::EXPOSURE),
            "mergedIntoMachineId": self.str(col::MERGED_INTO),
            "stale": self.flag(col::STALE),
            "duplicateOf": self.str(col::DUPLICATE_OF),
            "gone": self.flag(col::GONE),
            "offboard": self.flag(col::OFFBOARD),
            "offboardBy": self.str(col::OFFBOARD_BY),
            "result": self.str(col::RESULT),
            "resultAt": time(col::RESULT_AT),
            "lastRequestId": self.str(col::LAST_REQUEST),
            "syncedAt": time(col::SYNCED_AT),
        })
    }
}

/// One device row.
///
/// # Errors
/// Storage failures.
pub async fn get(
    table: &TableClient,
    tenant: &TenantId,
    machine: &MachineId,
) -> Result<Option<DeviceRow>, TableError> {
    Ok(table
        .get(tenant.as_str(), machine.as_str())
        .await?
        .map(|entity| DeviceRow { entity }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tags_with_separators_survive_the_column() {
        let tags = vec![
            "a;b".to_owned(),
            "c\\d".to_owned(),
            String::new(),
            "DoNotOffboard".to_owned(),
        ];
        assert_eq!(split_tags(&join_tags(&tags)), tags);
        assert!(split_tags("").is_empty());
    }

    proptest! {
        #[test]
        fn any_tag_list_round_trips(tags in proptest::collection::vec(".{1,12}", 0..6)) {
            prop_assert_eq!(split_tags(&join_tags(&tags)), tags);
        }
    }
}
