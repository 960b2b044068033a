//! The console's read use cases (`defender_ops::fleet`) against a real Azurite: the overview's
//! counts, the grid's filters, keyset paging and sorts, and the CSV export, each compared
//! with a plain model of the seeded rows.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use defender_ops::clients::tables::{BatchOp, Entity, TableClient, TableOptions, TableService};
use defender_ops::config::StorageSettings;
use defender_ops::domain::TenantId;
use defender_ops::fleet::grid::{self, Cursor, GridError, Next};
use defender_ops::fleet::{DeviceFilter, GridQuery, Sort, export, overview};
use defender_ops::store::cursors::{self, SyncOutcome};
use defender_ops::store::devices::col;
use defender_ops::store::{self, names};
use dev_host::azurite::Azurite;
use time::OffsetDateTime;
use time::macros::datetime;

const T1: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
const T2: &str = "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8";
const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

/// One seeded device, as the model sees it.
#[derive(Debug, Clone)]
struct Dev {
    tenant: &'static str,
    id: String,
    name: String,
    os: &'static str,
    stale: bool,
    gone: bool,
    dup: bool,
    tags: Vec<String>,
    result: Option<&'static str>,
    last_seen: OffsetDateTime,
}

fn fleet(tenant: &'static str, n: u32, salt: u32) -> Vec<Dev> {
    (0..n)
        .map(|i| {
            let name = match i {
                3 => "=cmd|' /C calc'!A0".to_owned(),
                6 => "<b>bold</b>, \"quoted\"".to_owned(),
                _ => format!("PC-{:03}.contoso.local", (i * 37 + salt) % 1000),
            };
            Dev {
                tenant,
                id: format!("{:08x}{:032x}", salt, u128::from(i) * 7919),
                name,
                os: if i % 5 == 0 {
                    "macOS"
                } else if i % 11 == 0 {
                    "Linux"
                } else {
                    "Windows11"
                },
                stale: i % 3 == 0,
                gone: i % 10 == 9,
                dup: i % 7 == 2,
                tags: if i % 4 == 0 {
                    vec!["Finance".into(), "a;b".into()]
                } else {
                    vec![]
                },
                result: (i % 6 == 1).then_some("Succeeded"),
                last_seen: NOW - time::Duration::minutes(i64::from((i * 7919) % 5000)),
            }
        })
        .collect()
}

fn entity(d: &Dev) -> Entity {
    let mut e = Entity::new(d.tenant, d.id.as_str())
        .with(col::NAME, d.name.as_str())
        .with(col::OS, d.os)
        .with(col::STALE, d.stale)
        .with(col::GONE, d.gone)
        .with(
            col::DUPLICATE_OF,
            if d.dup { "f".repeat(40) } else { String::new() },
        )
        .with(col::TAGS, defender_ops::store::devices::join_tags(&d.tags))
        .with(col::OFFBOARD, false)
        .with(col::LAST_SEEN, d.last_seen);
    if let Some(r) = d.result {
        e.set(col::RESULT, r);
    }
    e
}

struct Seeded {
    tables: TableService,
    devices: TableClient,
    model: Vec<Dev>,
    tenants: Vec<TenantId>,
    names: BTreeMap<TenantId, String>,
}

async fn seed() -> Seeded {
    let conn = Azurite::shared().await.expect("Azurite");
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let tables = TableService::from_settings(
        &StorageSettings::ConnectionString(conn.into()),
        TableOptions::with_prefix(prefix),
    )
    .unwrap();
    let tenants_table = store::open(&tables, names::TENANTS).await.unwrap();
    for (id, name) in [(T1, "Contoso"), (T2, "Fabrikam")] {
        let row = Entity::new("tenant", id)
            .with("DisplayName", name)
            .with("ClientId", "11111111-1111-4111-8111-111111111111")
            .with("AuthMode", "secret")
            .with("SecretName", "tenant-secret")
            .with("Enabled", true);
        tenants_table.upsert_replace(&row).await.unwrap();
    }
    let devices = store::open(&tables, names::DEVICES).await.unwrap();
    let mut model = fleet(T1, 130, 1);
    model.extend(fleet(T2, 45, 2));
    for tenant in [T1, T2] {
        let ops: Vec<BatchOp> = model
            .iter()
            .filter(|d| d.tenant == tenant)
            .map(|d| BatchOp::UpsertReplace(entity(d)))
            .collect();
        for chunk in ops.chunks(100) {
            devices.batch(chunk).await.unwrap();
        }
    }
    let requests = store::open(&tables, names::OFFBOARD_REQUESTS)
        .await
        .unwrap();
    for (rk, status) in [
        ("r1", "Accepted"),
        ("r2", "InProgress"),
        ("r3", "Succeeded"),
    ] {
        requests
            .upsert_replace(&Entity::new(T1, rk).with("Status", status))
            .await
            .unwrap();
    }
    let tenants = vec![TenantId::parse(T1).unwrap(), TenantId::parse(T2).unwrap()];
    let names = tenants
        .iter()
        .cloned()
        .zip(["Contoso".to_owned(), "Fabrikam".to_owned()])
        .collect();
    Seeded {
        tables,
        devices,
        model,
        tenants,
        names,
    }
}

fn keys(model: &[Dev], keep: impl Fn(&Dev) -> bool) -> Vec<(String, String)> {
    let mut v: Vec<_> = model
        .iter()
        .filter(|d| keep(d))
        .map(|d| (d.tenant.to_owned(), d.id.clone()))
        .collect();
    v.sort();
    v
}

/// Every page of a table-order query, following the cursors.
async fn all_pages(s: &Seeded, filter: &DeviceFilter, size: u32) -> Vec<(String, String)> {
    let mut q = GridQuery {
        filter: filter.clone(),
        page_size: size,
        ..GridQuery::default()
    };
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = grid::page(&s.devices, &s.tenants, &q).await.unwrap();
        assert!(page.rows.len() <= size as usize);
        out.extend(
            page.rows
                .iter()
                .map(|r| (r.entity.partition_key.clone(), r.machine_id().to_owned())),
        );
        match page.next {
            Next::After(c) => q.after = Some(Cursor::parse(&c.to_param()).unwrap()),
            Next::None => return out,
            Next::Page(_) => panic!("table order pages by cursor"),
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn the_overview_counts_each_tenant_as_the_model_does() {
    let s = seed().await;
    cursors::record_sync(
        &s.tables,
        &s.tenants[0],
        SyncOutcome::Failed,
        ("run-1", NOW),
        "device sync failed: 403 missing Machine.Read.All",
    )
    .await;
    let lines = overview::overview(&s.tables).await.unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| l.tenant.display_name.as_str())
            .collect::<Vec<_>>(),
        ["Contoso", "Fabrikam"]
    );
    for line in &lines {
        let t = line.tenant.id().as_str();
        let mine: Vec<&Dev> = s.model.iter().filter(|d| d.tenant == t).collect();
        let live: Vec<&&Dev> = mine.iter().filter(|d| !d.gone).collect();
        let c = line.counts;
        assert_eq!(c.devices as usize, mine.len(), "{t}");
        assert_eq!(c.live as usize, live.len());
        assert_eq!(c.gone as usize, mine.len() - live.len());
        assert_eq!(c.stale as usize, live.iter().filter(|d| d.stale).count());
        assert_eq!(c.duplicates as usize, live.iter().filter(|d| d.dup).count());
        assert_eq!(
            c.mac_linux as usize,
            live.iter().filter(|d| d.os != "Windows11").count()
        );
    }
    assert_eq!(
        lines[0].open_requests, 2,
        "Accepted and InProgress, not Succeeded"
    );
    assert_eq!(lines[1].open_requests, 0);
    let sync = lines[0].last_sync.as_ref().expect("recorded");
    assert_eq!(sync.outcome, SyncOutcome::Failed);
    assert_eq!(sync.at, NOW);
    assert!(sync.detail.contains("Machine.Read.All"));
    assert!(lines[1].last_sync.is_none());
}

#[tokio::test]
async fn table_order_pages_cover_every_match_once_for_service_and_local_filters() {
    let s = seed().await;
    let cases: Vec<(DeviceFilter, Box<dyn Fn(&Dev) -> bool>)> = vec![
        (DeviceFilter::default(), Box::new(|_: &Dev| true)),
        (
            DeviceFilter {
                stale: Some(true),
                ..DeviceFilter::default()
            },
            Box::new(|d: &Dev| d.stale),
        ),
        (
            DeviceFilter {
                tenant: Some(TenantId::parse(T2).unwrap()),
                gone: Some(false),
                duplicate: Some(false),
                ..DeviceFilter::default()
            },
            Box::new(|d: &Dev| d.tenant == T2 && !d.gone && !d.dup),
        ),
        (
            DeviceFilter {
                name: Some("pc-0".into()),
                tag: Some("finance".into()),
                ..DeviceFilter::default()
            },
            Box::new(|d: &Dev| {
                d.name.to_lowercase().contains("pc-0") && d.tags.iter().any(|t| t == "Finance")
            }),
        ),
        (
            DeviceFilter {
                has_result: Some(true),
                os: Some("Windows11".into()),
                ..DeviceFilter::default()
            },
            Box::new(|d: &Dev| d.result.is_some() && d.os == "Windows11"),
        ),
        (
            DeviceFilter {
                has_result: Some(false),
                stale: Some(false),
                ..DeviceFilter::default()
            },
            Box::new(|d: &Dev| d.result.is_none() && !d.stale),
        ),
    ];
    for (filter, keep) in &cases {
        let want = keys(&s.model, keep);
        assert!(!want.is_empty(), "{filter:?} selects something");
        for size in [7, 50] {
            assert_eq!(
                all_pages(&s, filter, size).await,
                want,
                "{filter:?} by {size}"
            );
        }
    }
}

#[tokio::test]
async fn sorted_pages_follow_name_and_last_seen_and_count_the_matches() {
    let s = seed().await;
    let filter = DeviceFilter {
        gone: Some(false),
        ..DeviceFilter::default()
    };
    let live: Vec<&Dev> = s.model.iter().filter(|d| !d.gone).collect();
    for sort in [
        Sort::Name,
        Sort::NameDesc,
        Sort::LastSeen,
        Sort::LastSeenOldest,
    ] {
        let mut want: Vec<&Dev> = live.clone();
        want.sort_by(|a, b| {
            let primary = match sort {
                Sort::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
                Sort::NameDesc => b.name.to_lowercase().cmp(&a.name.to_lowercase()),
                Sort::LastSeen => b.last_seen.cmp(&a.last_seen),
                _ => a.last_seen.cmp(&b.last_seen),
            };
            primary
                .then_with(|| a.tenant.cmp(b.tenant))
                .then_with(|| a.id.cmp(&b.id))
        });
        let want: Vec<String> = want.iter().map(|d| d.id.clone()).collect();
        let mut got = Vec::new();
        let mut q = GridQuery {
            filter: filter.clone(),
            sort,
            page_size: 20,
            ..GridQuery::default()
        };
        loop {
            let page = grid::page(&s.devices, &s.tenants, &q).await.unwrap();
            assert_eq!(page.total, Some(live.len() as u64));
            got.extend(page.rows.iter().map(|r| r.machine_id().to_owned()));
            match page.next {
                Next::Page(n) => q.page = n,
                Next::None => break,
                Next::After(_) => panic!("a sorted grid pages by number"),
            }
        }
        assert_eq!(got, want, "{sort:?}");
    }
    let deep = GridQuery {
        sort: Sort::Name,
        page: 1000,
        ..GridQuery::default()
    };
    assert!(matches!(
        grid::page(&s.devices, &s.tenants, &deep).await,
        Err(GridError::TooDeep { .. })
    ));
}

#[tokio::test]
async fn the_csv_export_has_every_match_once_quoted_and_formula_guarded() {
    let s = seed().await;
    let filter = DeviceFilter {
        stale: Some(true),
        ..DeviceFilter::default()
    };
    let csv = export::csv(&s.devices, &s.names, &filter).await.unwrap();
    assert!(csv.starts_with("tenantId,tenantName,machineId,computerDnsName,"));
    let want = keys(&s.model, |d| d.stale);
    // Every record starts with the tenant id: count records, not lines (a quoted name may
    // hold a line break in other data).
    let records: Vec<&str> = csv
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(records.len(), want.len());
    for (record, (tenant, id)) in records.iter().zip(&want) {
        assert!(record.starts_with(&format!("{tenant},")), "{record}");
        assert!(record.contains(&format!(",{id},")), "{record}");
    }
    assert!(
        csv.contains(",'=cmd|' /C calc'!A0,"),
        "the formula is defused"
    );
    assert!(
        csv.contains("\"<b>bold</b>, \"\"quoted\"\"\""),
        "quoted per RFC 4180"
    );
    assert!(csv.contains(",Finance;a;b,"), "tags as the API lists them");
}
