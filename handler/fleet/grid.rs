//! The devices grid: one tenant or all, filtered, sorted, a page at a time.
//!
//! # What Table Storage does and what is done here
//! The service filters on columns (equality, ranges) but neither sorts nor searches inside a
//! string. So:
//! - `stale`, `gone`, `duplicate=true`, `os` and `hasResult=true` go to the service as an
//!   OData filter (the same expressions `GET /api/devices` sends). `name` (contains, any
//!   case), `tag` (one of the device's tags, any case), `duplicate=false` and
//!   `hasResult=false` (the columns may be missing on older rows) are checked here, on rows
//!   the service already narrowed.
//! - **Table order** (the default: tenant, then machine id, as stored) pages by keyset: the
//!   page ends with a cursor `(tenant, machine id)` and the next page asks for keys after it.
//!   A page reads what it shows plus one row (to know whether another page follows) when the
//!   service can apply every filter; with a check done here it reads 1,000-row pages until
//!   the page is full, at most [`MAX_SCAN`] rows, then shows what it found and a cursor to go
//!   on from ("searched N devices"). The cost of a page is bounded whatever the fleet.
//! - **Sorted** (by name or by last seen) needs every match: the tenants' matching rows are
//!   read (only the grid's columns), and only the best `page × size` are kept (a partial
//!   selection whenever twice that many are held), so memory is bounded by the page's depth,
//!   not by the fleet. The read is bounded too: past [`MAX_SORT_SCAN`] rows the page says so
//!   and asks for a narrower filter or table order; pages beyond [`MAX_SORTED_DEPTH`] rows
//!   deep are refused likewise.

use std::cmp::Ordering;

use time::OffsetDateTime;

use crate::clients::tables::{TableClient, TableError, filter};
use crate::domain::TenantId;
use crate::store::devices::{DeviceRow, col, split_tags};

/// Rows a table-order page may read from storage before it stops searching.
pub const MAX_SCAN: u64 = 20_000;
/// Rows a sorted page may read (every match must be seen to sort).
pub const MAX_SORT_SCAN: u64 = 100_000;
/// How deep a sorted page may go (`page × size`).
pub const MAX_SORTED_DEPTH: u32 = 10_000;
/// Page sizes offered; the first is the default.
pub const PAGE_SIZES: [u32; 4] = [50, 100, 200, 25];
/// Longest text filter accepted.
const MAX_TEXT: usize = 256;
/// Rows per storage page when a filter is checked here.
const STORAGE_PAGE: u32 = 1000;

/// The columns the grid shows (keys come anyway).
pub const GRID_COLUMNS: &[&str] = &[
    col::NAME,
    col::OS,
    col::OS_VERSION,
    col::HEALTH,
    col::LAST_SEEN,
    col::TAGS,
    col::STALE,
    col::DUPLICATE_OF,
    col::GONE,
    col::OFFBOARD,
    col::RESULT,
    col::RESULT_AT,
];

/// A refused filter value, for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// The grid's filters. Every `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub tenant: Option<TenantId>,
    pub stale: Option<bool>,
    pub duplicate: Option<bool>,
    pub gone: Option<bool>,
    pub has_result: Option<bool>,
    /// Exact `osPlatform` (`Windows11`, `macOS`...).
    pub os: Option<String>,
    /// One of the device's machine tags, any case.
    pub tag: Option<String>,
    /// Part of the device name, any case.
    pub name: Option<String>,
}

/// A text filter: trimmed, empty = none, at most 256 printable characters.
///
/// # Errors
/// Too long, or with control characters.
pub fn text_filter(what: &str, raw: Option<&str>) -> Result<Option<String>, FilterError> {
    let Some(v) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(FilterError(format!(
            "{what} must be at most {MAX_TEXT} printable characters"
        )));
    }
    Ok(Some(v.to_owned()))
}

impl DeviceFilter {
    /// The OData filter for one tenant's partition, keys after `after` (exclusive).
    fn server_filter(&self, tenant: &TenantId, after: Option<&str>) -> String {
        let mut f = filter::eq("PartitionKey", tenant.as_str());
        if let Some(row) = after {
            f = filter::and(&f, &filter::gt("RowKey", row));
        }
        for (v, column) in [(self.stale, col::STALE), (self.gone, col::GONE)] {
            if let Some(v) = v {
                f = filter::and(&f, &filter::eq(column, v));
            }
        }
        if self.duplicate == Some(true) {
            f = filter::and(&f, &filter::ne(col::DUPLICATE_OF, ""));
        }
        if self.has_result == Some(true) {
            f = filter::and(&f, &filter::ne(col::RESULT, ""));
        }
        if let Some(os) = &self.os {
            f = filter::and(&f, &filter::eq(col::OS, os.as_str()));
        }
        f
    }

    /// The service's part of the filter for a whole tenant (the export).
    pub(crate) fn server_filter_for_export(&self, tenant: &TenantId) -> String {
        self.server_filter(tenant, None)
    }

    /// Whether some condition is left for [`DeviceFilter::matches`] after the service's.
    fn checked_here(&self) -> bool {
        self.name.is_some()
            || self.tag.is_some()
            || self.duplicate == Some(false)
            || self.has_result == Some(false)
    }

    /// Every condition, on a row (the service's ones again: cheap, and a row read any other
    /// way is judged the same).
    #[must_use]
    pub fn matches(&self, row: &DeviceRow) -> bool {
        let flag = |want: Option<bool>, have: bool| want.is_none_or(|w| w == have);
        flag(self.stale, row.flag(col::STALE))
            && flag(self.gone, row.flag(col::GONE))
            && flag(self.duplicate, row.str(col::DUPLICATE_OF).is_some())
            && flag(self.has_result, row.str(col::RESULT).is_some())
            && self
                .os
                .as_deref()
                .is_none_or(|os| row.str(col::OS) == Some(os))
            && self.name.as_deref().is_none_or(|part| {
                row.str(col::NAME)
                    .is_some_and(|n| n.to_lowercase().contains(&part.to_lowercase()))
            })
            && self.tag.as_deref().is_none_or(|tag| {
                split_tags(row.entity.get_str(col::TAGS).unwrap_or_default())
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(tag))
            })
    }
}

/// The grid's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Tenant, then machine id: as stored, paged by keyset (the cheap order).
    #[default]
    Table,
    Name,
    NameDesc,
    /// Newest first.
    LastSeen,
    LastSeenOldest,
}

impl Sort {
    pub const ALL: [Sort; 5] = [
        Self::Table,
        Self::Name,
        Self::NameDesc,
        Self::LastSeen,
        Self::LastSeenOldest,
    ];

    /// The query-string value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Table => "",
            Self::Name => "name",
            Self::NameDesc => "name-desc",
            Self::LastSeen => "last-seen",
            Self::LastSeenOldest => "last-seen-asc",
        }
    }

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Table => "Tenant and machine id (fastest)",
            Self::Name => "Name, A to Z",
            Self::NameDesc => "Name, Z to A",
            Self::LastSeen => "Last seen, newest first",
            Self::LastSeenOldest => "Last seen, oldest first",
        }
    }

    /// # Errors
    /// An unknown value.
    pub fn parse(raw: Option<&str>) -> Result<Self, FilterError> {
        let raw = raw.map(str::trim).unwrap_or_default();
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                FilterError("sort must be name, name-desc, last-seen or last-seen-asc".into())
            })
    }
}

/// Where a table-order page starts: after this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub tenant: TenantId,
    pub row: String,
}

impl Cursor {
    /// `tenant:machineId`, for a URL.
    #[must_use]
    pub fn to_param(&self) -> String {
        format!("{}:{}", self.tenant, self.row)
    }

    /// # Errors
    /// Not a `tenant:machineId` this grid produced.
    pub fn parse(raw: &str) -> Result<Self, FilterError> {
        let bad = || FilterError("after is not a position this page produced".into());
        let (t, m) = raw.split_once(':').ok_or_else(bad)?;
        let tenant = TenantId::parse(t).map_err(|_| bad())?;
        let machine = crate::domain::MachineId::parse(m).map_err(|_| bad())?;
        Ok(Self {
            tenant,
            row: machine.as_str().to_owned(),
        })
    }
}

/// One page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridQuery {
    pub filter: DeviceFilter,
    pub sort: Sort,
    pub page_size: u32,
    /// Table order: start after this device.
    pub after: Option<Cursor>,
    /// Sorted: the 1-based page.
    pub page: u32,
}

impl Default for GridQuery {
    fn default() -> Self {
        Self {
            filter: DeviceFilter::default(),
            sort: Sort::Table,
            page_size: PAGE_SIZES[0],
            after: None,
            page: 1,
        }
    }
}

/// What follows this page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    None,
    /// Table order: the next page starts after this device.
    After(Cursor),
    /// Sorted: this page number.
    Page(u32),
}

/// One page of the grid.
#[derive(Debug, Clone)]
pub struct GridPage {
    pub rows: Vec<DeviceRow>,
    pub next: Next,
    /// Rows read from storage for this page.
    pub scanned: u64,
    /// Sorted: how many devices match in all.
    pub total: Option<u64>,
    /// Table order: the search stopped at [`MAX_SCAN`] rows before the page was full.
    pub scan_limited: bool,
}

/// Why a page can't be shown.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(
        "sorting reads every matching device, and more than {limit} devices were read: narrow the filter (a tenant, stale, OS...) or use the table order"
    )]
    TooManyToSort { limit: u64 },
    #[error(
        "a sorted list can be paged through its first {limit} devices: narrow the filter or use the table order"
    )]
    TooDeep { limit: u32 },
}

/// One page of the grid over `tenants` (the registered ones to search; the filter's tenant,
/// when set, narrows them to that one).
///
/// # Errors
/// Storage failures; a sort over too many devices or too deep a page.
pub async fn page(
    devices: &TableClient,
    tenants: &[TenantId],
    q: &GridQuery,
) -> Result<GridPage, GridError> {
    let mut tenants: Vec<&TenantId> = tenants
        .iter()
        .filter(|t| q.filter.tenant.as_ref().is_none_or(|only| only == *t))
        .collect();
    tenants.sort();
    tenants.dedup();
    let size = q.page_size.clamp(1, 1000);
    match q.sort {
        Sort::Table => table_order(devices, &tenants, q, size).await,
        sort => sorted(devices, &tenants, q, sort, size).await,
    }
}

async fn table_order(
    devices: &TableClient,
    tenants: &[&TenantId],
    q: &GridQuery,
    size: u32,
) -> Result<GridPage, GridError> {
    let want = size as usize;
    let top = if q.filter.checked_here() {
        STORAGE_PAGE
    } else {
        // One more than the page: whether a next page exists, in the same query.
        (size + 1).min(STORAGE_PAGE)
    };
    let mut rows = Vec::with_capacity(want);
    let mut scanned = 0u64;
    let mut last_scanned: Option<Cursor> = None;
    let mut last_shown: Option<Cursor> = None;
    let mut more = false;
    'tenants: for tenant in tenants
        .iter()
        .filter(|t| q.after.as_ref().is_none_or(|a| **t >= &a.tenant))
    {
        let after = q
            .after
            .as_ref()
            .filter(|a| a.tenant == **tenant)
            .map(|a| a.row.as_str());
        let f = q.filter.server_filter(tenant, after);
        let mut continuation = None;
        loop {
            let page = devices
                .query(Some(&f), Some(GRID_COLUMNS), Some(top), continuation)
                .await?;
            for entity in page.entities {
                scanned += 1;
                let row = DeviceRow { entity };
                last_scanned = Some(Cursor {
                    tenant: (*tenant).clone(),
                    row: row.machine_id().to_owned(),
                });
                if !q.filter.matches(&row) {
                    continue;
                }
                if rows.len() == want {
                    more = true;
                    break 'tenants;
                }
                last_shown.clone_from(&last_scanned);
                rows.push(row);
            }
            if scanned >= MAX_SCAN {
                let next = if rows.len() == want {
                    // Full, but whether another match follows is not known: offer the next
                    // page from the last row shown.
                    last_shown
                } else {
                    last_scanned.clone()
                };
                return Ok(GridPage {
                    rows,
                    next: next.map_or(Next::None, Next::After),
                    scanned,
                    total: None,
                    scan_limited: true,
                });
            }
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => break,
            }
        }
    }
    let next = match last_shown {
        Some(c) if more => Next::After(c),
        _ => Next::None,
    };
    Ok(GridPage {
        rows,
        next,
        scanned,
        total: None,
        scan_limited: false,
    })
}

/// The sort key of a row: the primary value, then tenant and machine id (a total order, so
/// pages never overlap).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Text(String),
    /// Unix nanoseconds; a device never seen sorts as the oldest.
    Time(i128),
}

fn key_of(row: &DeviceRow, sort: Sort) -> Key {
    match sort {
        Sort::Name | Sort::NameDesc => {
            Key::Text(row.str(col::NAME).unwrap_or_default().to_lowercase())
        }
        _ => Key::Time(
            row.entity
                .get_datetime(col::LAST_SEEN)
                .map_or(i128::MIN, OffsetDateTime::unix_timestamp_nanos),
        ),
    }
}

async fn sorted(
    devices: &TableClient,
    tenants: &[&TenantId],
    q: &GridQuery,
    sort: Sort,
    size: u32,
) -> Result<GridPage, GridError> {
    let page = q.page.max(1);
    let depth = page.saturating_mul(size);
    if depth > MAX_SORTED_DEPTH + size {
        return Err(GridError::TooDeep {
            limit: MAX_SORTED_DEPTH,
        });
    }
    let keep = depth as usize;
    let descending = matches!(sort, Sort::NameDesc | Sort::LastSeen);
    let order = |a: &(Key, DeviceRow), b: &(Key, DeviceRow)| -> Ordering {
        let primary = if descending {
            b.0.cmp(&a.0)
        } else {
            a.0.cmp(&b.0)
        };
        primary
            .then_with(|| a.1.entity.partition_key.cmp(&b.1.entity.partition_key))
            .then_with(|| a.1.entity.row_key.cmp(&b.1.entity.row_key))
    };
    let mut best: Vec<(Key, DeviceRow)> = Vec::with_capacity(keep.min(4096) * 2);
    let mut scanned = 0u64;
    let mut total = 0u64;
    for tenant in tenants {
        let f = q.filter.server_filter(tenant, None);
        let mut continuation = None;
        loop {
            let page = devices
                .query(
                    Some(&f),
                    Some(GRID_COLUMNS),
                    Some(STORAGE_PAGE),
                    continuation,
                )
                .await?;
            scanned += page.entities.len() as u64;
            if scanned > MAX_SORT_SCAN {
                return Err(GridError::TooManyToSort {
                    limit: MAX_SORT_SCAN,
                });
            }
            for entity in page.entities {
                let row = DeviceRow { entity };
                if !q.filter.matches(&row) {
                    continue;
                }
                total += 1;
                best.push((key_of(&row, sort), row));
                if best.len() >= keep * 2 {
                    best.select_nth_unstable_by(keep - 1, order);
                    best.truncate(keep);
                }
            }
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => break,
            }
        }
    }
    best.sort_unstable_by(order);
    best.truncate(keep);
    let skip = ((page - 1) * size) as usize;
    let rows: Vec<DeviceRow> = best.into_iter().skip(skip).map(|(_, r)| r).collect();
    let next = if u64::from(depth) < total && depth < MAX_SORTED_DEPTH {
        Next::Page(page + 1)
    } else {
        Next::None
    };
    Ok(GridPage {
        rows,
        next,
        scanned,
        total: Some(total),
        scan_limited: false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clients::tables::Entity;

    fn row(name: &str, tags: &str, dup: &str, result: Option<&str>) -> DeviceRow {
        let mut e = Entity::new("8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c", "a".repeat(40))
            .with(col::NAME, name)
            .with(col::TAGS, tags)
            .with(col::DUPLICATE_OF, dup)
            .with(col::STALE, false)
            .with(col::GONE, false)
            .with(col::OS, "Windows11");
        if let Some(r) = result {
            e.set(col::RESULT, r);
        }
        DeviceRow { entity: e }
    }

    #[test]
    fn checks_done_here_read_any_case_and_missing_columns_as_empty() {
        let r = row(
            "PC-Finance-07.contoso.local",
            "Finance;DoNotOffboard",
            "",
            None,
        );
        let f = |f: DeviceFilter| f.matches(&r);
        assert!(f(DeviceFilter {
            name: Some("finance-0".into()),
            ..DeviceFilter::default()
        }));
        assert!(!f(DeviceFilter {
            name: Some("hr".into()),
            ..DeviceFilter::default()
        }));
        assert!(f(DeviceFilter {
            tag: Some("donotoffboard".into()),
            ..DeviceFilter::default()
        }));
        assert!(!f(DeviceFilter {
            tag: Some("Do".into()),
            ..DeviceFilter::default()
        }));
        assert!(f(DeviceFilter {
            duplicate: Some(false),
            has_result: Some(false),
            ..DeviceFilter::default()
        }));
        assert!(!f(DeviceFilter {
            has_result: Some(true),
            ..DeviceFilter::default()
        }));
        let with_result = row("x", "", "b".repeat(40).as_str(), Some("Succeeded"));
        assert!(
            DeviceFilter {
                duplicate: Some(true),
                has_result: Some(true),
                ..DeviceFilter::default()
            }
            .matches(&with_result)
        );
    }

    #[test]
    fn cursors_and_sorts_round_trip_and_refuse_what_they_did_not_make() {
        let c = Cursor {
            tenant: TenantId::parse("8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c").unwrap(),
            row: "ab".repeat(20),
        };
        assert_eq!(Cursor::parse(&c.to_param()).unwrap(), c);
        for bad in [
            "",
            "x:y",
            "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c:' or 1 eq 1",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        for s in Sort::ALL {
            assert_eq!(Sort::parse(Some(s.as_str())).unwrap(), s);
        }
        assert_eq!(Sort::parse(None).unwrap(), Sort::Table);
        assert!(Sort::parse(Some("RowKey desc")).is_err());
        assert!(text_filter("name", Some("a\u{7}b")).is_err());
        assert_eq!(text_filter("name", Some("  ")).unwrap(), None);
    }
}
