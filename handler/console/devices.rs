//! The devices grid (`GET /api/console/devices`), its CSV (`GET .../devices.csv`) and one
//! device (`GET .../devices/{tenantId}/{machineId}`). The filters are GET parameters, so a
//! view can be bookmarked and the CSV link exports exactly what is shown.

use std::collections::BTreeMap;

use askama::Template;

use super::Console;
use super::auth::Viewer;
use super::display;
use super::page::Page;
use super::refusal::Refusal;
use super::views::{Layout, render};
use crate::domain::{MachineId, TenantId};
use crate::fleet::detail::{self, DeviceDetail, RequestView};
use crate::fleet::export::{self, ExportError};
use crate::fleet::grid::{
    self, Cursor, DeviceFilter, FilterError, GridError, GridQuery, Next, PAGE_SIZES, Sort,
    text_filter,
};
use crate::store::devices::{DeviceRow, col};
use crate::store::{self, names, tenants};

fn internal(e: impl Into<anyhow::Error>, what: &'static str) -> Refusal {
    Refusal::Internal(e.into().context(what))
}

fn bad(e: FilterError) -> Refusal {
    Refusal::BadRequest(e.0)
}

/// The registered tenants, id → display name.
async fn tenant_names(cx: &Console<'_>) -> Result<BTreeMap<TenantId, String>, Refusal> {
    let table = store::open(cx.state.tables(), names::TENANTS)
        .await
        .map_err(|e| internal(e, "tenants"))?;
    Ok(tenants::list(&table, false)
        .await
        .map_err(|e| internal(e, "tenants"))?
        .into_iter()
        .map(|t| (t.id().clone(), t.display_name))
        .collect())
}

fn bool_param(cx: &Console<'_>, name: &str) -> Result<Option<bool>, Refusal> {
    match cx.req.query(name).map(str::trim) {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Refusal::BadRequest(format!(
            "{name} must be true, false or empty."
        ))),
    }
}

/// The filters of the query string.
fn filter_of(cx: &Console<'_>) -> Result<DeviceFilter, Refusal> {
    let tenant = match cx
        .req
        .query("tenant")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        None => None,
        Some(t) => Some(
            TenantId::parse(t)
                .map_err(|_| Refusal::BadRequest("tenant must be a tenant id (a GUID).".into()))?,
        ),
    };
    Ok(DeviceFilter {
        tenant,
        stale: bool_param(cx, "stale")?,
        duplicate: bool_param(cx, "duplicate")?,
        gone: bool_param(cx, "gone")?,
        has_result: bool_param(cx, "result")?,
        os: text_filter("os", cx.req.query("os")).map_err(bad)?,
        tag: text_filter("tag", cx.req.query("tag")).map_err(bad)?,
        name: text_filter("name", cx.req.query("name")).map_err(bad)?,
    })
}

fn grid_query(cx: &Console<'_>) -> Result<GridQuery, Refusal> {
    let filter = filter_of(cx)?;
    let sort = Sort::parse(cx.req.query("sort")).map_err(bad)?;
    let page_size = match cx
        .req
        .query("size")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => PAGE_SIZES[0],
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| PAGE_SIZES.contains(n))
            .ok_or_else(|| Refusal::BadRequest("size must be 25, 50, 100 or 200.".into()))?,
    };
    let after = match cx
        .req
        .query("after")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(a) => Some(Cursor::parse(a).map_err(bad)?),
    };
    let page = match cx
        .req
        .query("page")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => 1,
        Some(p) => p
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Refusal::BadRequest("page must be a number from 1.".into()))?,
    };
    Ok(GridQuery {
        filter,
        sort,
        page_size,
        after,
        page,
    })
}

/// The query string of a filter (and sort and size), for links.
fn params(q: &GridQuery) -> url::form_urlencoded::Serializer<'static, String> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    let f = &q.filter;
    if let Some(t) = &f.tenant {
        s.append_pair("tenant", t.as_str());
    }
    for (name, v) in [
        ("stale", f.stale),
        ("duplicate", f.duplicate),
        ("gone", f.gone),
        ("result", f.has_result),
    ] {
        if let Some(v) = v {
            s.append_pair(name, if v { "true" } else { "false" });
        }
    }
    for (name, v) in [("os", &f.os), ("tag", &f.tag), ("name", &f.name)] {
        if let Some(v) = v {
            s.append_pair(name, v);
        }
    }
    if q.sort != Sort::Table {
        s.append_pair("sort", q.sort.as_str());
    }
    if q.page_size != PAGE_SIZES[0] {
        s.append_pair("size", &q.page_size.to_string());
    }
    s
}

/// A choice in a `<select>`.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn tri(v: Option<bool>, yes: &str, no: &str) -> Vec<Choice> {
    [("", "Any"), ("true", yes), ("false", no)]
        .into_iter()
        .map(|(value, label)| Choice {
            value: value.into(),
            label: label.into(),
            selected: match v {
                None => value.is_empty(),
                Some(b) => value == if b { "true" } else { "false" },
            },
        })
        .collect()
}

/// One grid row, as shown.
struct RowView {
    tenant_name: String,
    name: String,
    detail_link: String,
    portal_link: String,
    os: String,
    health: String,
    last_seen: String,
    tags: String,
    stale: bool,
    duplicate: bool,
    gone: bool,
    offboard: bool,
    result: String,
}

impl RowView {
    fn new(r: &DeviceRow, tenants: &BTreeMap<TenantId, String>) -> Self {
        let tenant = r.entity.partition_key.as_str();
        let tenant_name = TenantId::parse(tenant)
            .ok()
            .and_then(|t| tenants.get(&t).cloned())
            .unwrap_or_else(|| tenant.to_owned());
        let os = match (r.str(col::OS), r.str(col::OS_VERSION)) {
            (Some(p), Some(v)) => format!("{p} {v}"),
            (Some(p), None) => p.to_owned(),
            _ => String::new(),
        };
        Self {
            tenant_name,
            name: r.str(col::NAME).unwrap_or("(no name)").to_owned(),
            detail_link: format!("{}/devices/{tenant}/{}", super::PREFIX, r.machine_id()),
            portal_link: display::defender_portal(r.machine_id(), tenant),
            os,
            health: r.str(col::HEALTH).unwrap_or_default().to_owned(),
            last_seen: display::time(r.entity.get_datetime(col::LAST_SEEN)),
            tags: r.tags().join(", "),
            stale: r.flag(col::STALE),
            duplicate: r.str(col::DUPLICATE_OF).is_some(),
            gone: r.flag(col::GONE),
            offboard: r.flag(col::OFFBOARD),
            result: r.str(col::RESULT).unwrap_or_default().to_owned(),
        }
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    layout: Layout,
    tenants: Vec<Choice>,
    stale: Vec<Choice>,
    duplicate: Vec<Choice>,
    gone: Vec<Choice>,
    result: Vec<Choice>,
    sorts: Vec<Choice>,
    sizes: Vec<Choice>,
    os: String,
    tag: String,
    name: String,
    rows: Vec<RowView>,
    /// What the page shows, in words ("devices 1–50 of 812", "50 devices").
    summary: String,
    notice: String,
    next_link: String,
    first_link: String,
    csv_link: String,
    show_tenant: bool,
}

/// `GET /api/console/devices`.
///
/// # Errors
/// Bad parameters (400 page), storage failures.
pub async fn list(cx: &Console<'_>, _: Viewer) -> Result<Page, Refusal> {
    let q = grid_query(cx)?;
    let names = tenant_names(cx).await?;
    let ids: Vec<TenantId> = names.keys().cloned().collect();
    let table = store::open(cx.state.tables(), names::DEVICES)
        .await
        .map_err(|e| internal(e, "devices"))?;
    let base = params(&q).finish();
    let link = |extra: &str| {
        let mut l = format!("{}/devices", super::PREFIX);
        let qs = [base.as_str(), extra]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("&");
        if !qs.is_empty() {
            l.push('?');
            l.push_str(&qs);
        }
        l
    };
    let (rows, summary, notice, next_link) = match grid::page(&table, &ids, &q).await {
        Ok(page) => {
            let shown = page.rows.len();
            let summary = match page.total {
                Some(total) => {
                    let from = (q.page - 1) * q.page_size + 1;
                    if shown == 0 {
                        format!("{} devices match", display::count(total))
                    } else {
                        format!(
                            "Devices {}–{} of {}",
                            display::count(u64::from(from)),
                            display::count(u64::from(from) + shown as u64 - 1),
                            display::count(total)
                        )
                    }
                }
                None => format!(
                    "{} device{}{}",
                    display::count(shown as u64),
                    if shown == 1 { "" } else { "s" },
                    if q.after.is_some() {
                        " (a later page)"
                    } else {
                        ""
                    }
                ),
            };
            let notice = if page.scan_limited {
                format!(
                    "The search read {} devices without filling the page (name and tag are checked here, not by Table Storage). Next page goes on from there.",
                    display::count(page.scanned)
                )
            } else {
                String::new()
            };
            let next_link = match page.next {
                Next::None => String::new(),
                Next::After(c) => {
                    let mut s = url::form_urlencoded::Serializer::new(String::new());
                    s.append_pair("after", &c.to_param());
                    link(&s.finish())
                }
                Next::Page(n) => link(&format!("page={n}")),
            };
            let rows = page.rows.iter().map(|r| RowView::new(r, &names)).collect();
            (rows, summary, notice, next_link)
        }
        Err(GridError::Table(e)) => return Err(internal(e, "devices grid")),
        Err(e) => (Vec::new(), String::new(), e.to_string(), String::new()),
    };
    let first_link = if q.after.is_some() || q.page > 1 {
        link("")
    } else {
        String::new()
    };
    let csv_link = {
        let mut f = q.clone();
        f.sort = Sort::Table;
        f.page_size = PAGE_SIZES[0];
        let qs = params(&f).finish();
        if qs.is_empty() {
            format!("{}/devices.csv", super::PREFIX)
        } else {
            format!("{}/devices.csv?{qs}", super::PREFIX)
        }
    };
    let mut tenants = vec![Choice {
        value: String::new(),
        label: "All tenants".into(),
        selected: q.filter.tenant.is_none(),
    }];
    tenants.extend(names.iter().map(|(id, name)| Choice {
        value: id.as_str().to_owned(),
        label: name.clone(),
        selected: q.filter.tenant.as_ref() == Some(id),
    }));
    let f = &q.filter;
    Ok(render(
        200,
        &DevicesPage {
            layout: cx.layout("Devices", "devices"),
            show_tenant: f.tenant.is_none(),
            tenants,
            stale: tri(f.stale, "Stale", "Reporting"),
            duplicate: tri(f.duplicate, "Duplicates", "Not duplicates"),
            gone: tri(f.gone, "Gone from Defender", "In Defender"),
            result: tri(f.has_result, "With a result", "Without"),
            sorts: Sort::ALL
                .into_iter()
                .map(|s| Choice {
                    value: s.as_str().into(),
                    label: s.label().into(),
                    selected: s == q.sort,
                })
                .collect(),
            sizes: PAGE_SIZES
                .into_iter()
                .map(|n| Choice {
                    value: n.to_string(),
                    label: format!("{n} per page"),
                    selected: n == q.page_size,
                })
                .collect(),
            os: f.os.clone().unwrap_or_default(),
            tag: f.tag.clone().unwrap_or_default(),
            name: f.name.clone().unwrap_or_default(),
            rows,
            summary,
            notice,
            next_link,
            first_link,
            csv_link,
        },
    ))
}

/// `GET /api/console/devices.csv`: every device the filters match (table order).
///
/// # Errors
/// Bad parameters, too many devices (400 page), storage failures.
pub async fn csv(cx: &Console<'_>, _: Viewer) -> Result<Page, Refusal> {
    let filter = filter_of(cx)?;
    let names = tenant_names(cx).await?;
    let table = store::open(cx.state.tables(), names::DEVICES)
        .await
        .map_err(|e| internal(e, "devices"))?;
    match export::csv(&table, &names, &filter).await {
        Ok(body) => {
            Ok(Page::text(200, "text/csv; charset=utf-8", body).as_attachment("devices.csv"))
        }
        Err(ExportError::Table(e)) => Err(internal(e, "CSV export")),
        Err(e @ ExportError::TooMany { .. }) => Err(Refusal::BadRequest(format!("{e}."))),
    }
}

/// One request, as shown.
struct RequestLine {
    r: RequestView,
    created: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    layout: Layout,
    tenant_name: String,
    tenant_id: String,
    row: RowView,
    fields: Vec<(&'static str, String)>,
    result_at: String,
    duplicate_of: Option<RowView>,
    duplicates: Vec<RowView>,
    requests: Vec<RequestLine>,
}

/// `GET /api/console/devices/{tenantId}/{machineId}`.
///
/// # Errors
/// Malformed ids (400), an unknown device (404), storage failures.
pub async fn device(
    cx: &Console<'_>,
    _: Viewer,
    tenant: &str,
    machine: &str,
) -> Result<Page, Refusal> {
    let tenant = TenantId::parse(tenant)
        .map_err(|_| Refusal::BadRequest("The tenant id in the address is not a GUID.".into()))?;
    let machine = MachineId::parse(machine).map_err(|_| {
        Refusal::BadRequest("The machine id in the address is not 40 hexadecimal digits.".into())
    })?;
    let names = tenant_names(cx).await?;
    let Some(tenant_name) = names.get(&tenant).cloned() else {
        return Err(Refusal::NotFound);
    };
    let t = crate::offboard::Tables::open(cx.state.tables())
        .await
        .map_err(|e| internal(e, "tables"))?;
    let Some(DeviceDetail {
        row,
        duplicate_of,
        duplicates,
        requests,
    }) = detail::device(&t, &tenant, &machine)
        .await
        .map_err(|e| internal(e, "device"))?
    else {
        return Err(Refusal::NotFound);
    };
    let s = |c: &str| row.str(c).unwrap_or_default().to_owned();
    let fields = vec![
        ("Machine id", row.machine_id().to_owned()),
        ("OS", s(col::OS)),
        ("OS version", s(col::OS_VERSION)),
        ("Health", s(col::HEALTH)),
        ("Onboarding", s(col::ONBOARDING)),
        (
            "Last seen",
            display::time(row.entity.get_datetime(col::LAST_SEEN)),
        ),
        (
            "First seen",
            display::time(row.entity.get_datetime(col::FIRST_SEEN)),
        ),
        ("Last IP address", s(col::LAST_IP)),
        ("Entra device id", s(col::AAD)),
        ("Tags", row.tags().join(", ")),
        ("Risk score", s(col::RISK)),
        ("Exposure level", s(col::EXPOSURE)),
        ("Merged into", s(col::MERGED_INTO)),
        ("Last request", s(col::LAST_REQUEST)),
        (
            "Synced",
            display::time(row.entity.get_datetime(col::SYNCED_AT)),
        ),
    ];
    Ok(render(
        200,
        &DevicePage {
            layout: cx.layout(row.str(col::NAME).unwrap_or("Device").to_owned(), "devices"),
            tenant_name,
            tenant_id: tenant.as_str().to_owned(),
            result_at: display::time(row.entity.get_datetime(col::RESULT_AT)),
            row: RowView::new(&row, &names),
            fields,
            duplicate_of: duplicate_of.as_ref().map(|r| RowView::new(r, &names)),
            duplicates: duplicates.iter().map(|r| RowView::new(r, &names)).collect(),
            requests: requests
                .into_iter()
                .map(|r| RequestLine {
                    created: display::time(r.created_at),
                    updated: display::time(r.updated_at),
                    r,
                })
                .collect(),
        },
    ))
}
