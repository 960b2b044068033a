//! The fleet overview: one line per registered tenant with its device counts, open
//! requests and last sync.

use futures::{StreamExt, TryStreamExt};

use crate::clients::tables::{TableError, TableService, filter};
use crate::domain::TenantId;
use crate::domain::request::RequestStatus;
use crate::store::cursors::{self, SyncRecord};
use crate::store::devices::col;
use crate::store::tenants::{self, Tenant};
use crate::store::{self, names};

/// How many tenants are counted at once (each is one paged scan of its partition).
const CONCURRENT_TENANTS: usize = 4;

/// Device counts of one tenant. `stale`, `duplicates` and `mac_linux` count live devices
/// only (a gone device is neither stale nor a duplicate any more), as `run-local` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Every stored row, gone ones included.
    pub devices: u64,
    /// Not gone.
    pub live: u64,
    pub stale: u64,
    pub duplicates: u64,
    pub gone: u64,
    pub mac_linux: u64,
}

impl DeviceCounts {
    fn add(&mut self, stale: bool, duplicate: bool, gone: bool, os: &str) {
        self.devices += 1;
        if gone {
            self.gone += 1;
            return;
        }
        self.live += 1;
        self.stale += u64::from(stale);
        self.duplicates += u64::from(duplicate);
        self.mac_linux += u64::from(matches!(os, "macOS" | "Linux"));
    }
}

/// One line of the overview.
#[derive(Debug, Clone)]
pub struct TenantOverview {
    pub tenant: Tenant,
    pub counts: DeviceCounts,
    /// Offboard requests not in a final state (waiting, submitted, in progress).
    pub open_requests: u64,
    pub last_sync: Option<SyncRecord>,
}

/// The overview of every registered tenant (disabled ones too), by display name.
///
/// Cost: per tenant one paged scan of its `Devices` partition reading four columns, one
/// query of its open requests and one point read; tenants are counted four at a time.
///
/// # Errors
/// Storage failures.
pub async fn overview(tables: &TableService) -> Result<Vec<TenantOverview>, TableError> {
    let tenants_table = store::open(tables, names::TENANTS).await?;
    let mut list = tenants::list(&tenants_table, false).await?;
    list.sort_by(|a, b| {
        a.display_name
            .to_lowercase()
            .cmp(&b.display_name.to_lowercase())
            .then_with(|| a.id().as_str().cmp(b.id().as_str()))
    });
    let devices = store::open(tables, names::DEVICES).await?;
    let requests = store::open(tables, names::OFFBOARD_REQUESTS).await?;
    let cursors_table = store::open(tables, names::CURSORS).await?;
    futures::stream::iter(list)
        .map(|tenant| {
            let (devices, requests, cursors_table) = (&devices, &requests, &cursors_table);
            async move {
                let id = tenant.id().clone();
                let (counts, open_requests, last_sync) = futures::try_join!(
                    device_counts(devices, &id),
                    open_requests(requests, &id),
                    cursors::last_sync(cursors_table, &id),
                )?;
                Ok(TenantOverview {
                    tenant,
                    counts,
                    open_requests,
                    last_sync,
                })
            }
        })
        .buffered(CONCURRENT_TENANTS)
        .try_collect()
        .await
}

/// The device counts of one tenant.
///
/// # Errors
/// Storage failures.
pub async fn device_counts(
    devices: &crate::clients::tables::TableClient,
    tenant: &TenantId,
) -> Result<DeviceCounts, TableError> {
    let f = filter::eq("PartitionKey", tenant.as_str());
    let select = [col::STALE, col::DUPLICATE_OF, col::GONE, col::OS];
    let mut counts = DeviceCounts::default();
    let mut pages = std::pin::pin!(devices.query_pages(Some(&f), Some(&select)));
    while let Some(page) = pages.try_next().await? {
        for e in page {
            counts.add(
                e.get_bool(col::STALE).unwrap_or(false),
                e.get_str(col::DUPLICATE_OF).is_some_and(|d| !d.is_empty()),
                e.get_bool(col::GONE).unwrap_or(false),
                e.get_str(col::OS).unwrap_or_default(),
            );
        }
    }
    Ok(counts)
}

/// How many of a tenant's requests are not final yet.
///
/// # Errors
/// Storage failures.
pub async fn open_requests(
    requests: &crate::clients::tables::TableClient,
    tenant: &TenantId,
) -> Result<u64, TableError> {
    let any_open = RequestStatus::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .map(|s| filter::eq("Status", s.as_str()))
        .reduce(|a, b| filter::or(&a, &b))
        .unwrap_or_else(|| filter::eq("Status", ""));
    let f = filter::and(&filter::eq("PartitionKey", tenant.as_str()), &any_open);
    let select = ["Status"];
    let mut n = 0u64;
    let mut pages = std::pin::pin!(requests.query_pages(Some(&f), Some(&select)));
    while let Some(page) = pages.try_next().await? {
        n += page.len() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_devices_count_only_as_gone() {
        let mut c = DeviceCounts::default();
        c.add(true, true, true, "macOS");
        c.add(true, false, false, "Windows11");
        c.add(false, true, false, "Linux");
        c.add(false, false, false, "macOS");
        assert_eq!(
            c,
            DeviceCounts {
                devices: 4,
                live: 3,
                stale: 1,
                duplicates: 1,
                gone: 1,
                mac_linux: 2,
            }
        );
    }
}
