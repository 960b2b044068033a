//! The fleet overview (`GET /api/console/`): every tenant in one table, a broken one first
//! and marked.

use askama::Template;

use super::Console;
use super::auth::Viewer;
use super::display;
use super::page::Page;
use super::refusal::Refusal;
use super::views::{Layout, render};
use crate::fleet::overview::{self, TenantOverview};
use crate::store::cursors::SyncOutcome;

/// One tenant's line, as shown.
struct Line {
    id: String,
    name: String,
    enabled: bool,
    devices: String,
    live: String,
    stale: String,
    duplicates: String,
    gone: String,
    mac_linux: String,
    open_requests: String,
    /// Links into the grid, filtered.
    link_all: String,
    link_stale: String,
    link_dup: String,
    link_gone: String,
    sync_at: String,
    sync_outcome: String,
    /// `good`, `warn`, `bad` (badge class).
    sync_class: &'static str,
    sync_detail: String,
    /// What is wrong with this tenant, in words; empty when nothing is.
    problem: String,
}

impl Line {
    fn new(o: &TenantOverview) -> Self {
        let id = o.tenant.id().as_str().to_owned();
        let link = |extra: &str| format!("{}/devices?tenant={id}{extra}", super::PREFIX);
        let c = &o.counts;
        let (sync_at, sync_outcome, sync_class, sync_detail) = match &o.last_sync {
            None => (String::new(), "never".to_owned(), "warn", String::new()),
            Some(s) => (
                display::time(Some(s.at)),
                s.outcome.as_str().to_owned(),
                match s.outcome {
                    SyncOutcome::Succeeded => "good",
                    SyncOutcome::Retrying => "warn",
                    SyncOutcome::Failed => "bad",
                },
                s.detail.clone(),
            ),
        };
        let problem = match &o.last_sync {
            Some(s) if s.outcome == SyncOutcome::Failed => {
                format!("Last sync failed: {}", s.detail)
            }
            _ => String::new(),
        };
        Self {
            name: o.tenant.display_name.clone(),
            enabled: o.tenant.enabled,
            devices: display::count(c.devices),
            live: display::count(c.live),
            stale: display::count(c.stale),
            duplicates: display::count(c.duplicates),
            gone: display::count(c.gone),
            mac_linux: display::count(c.mac_linux),
            open_requests: display::count(o.open_requests),
            link_all: link(""),
            link_stale: link("&stale=true&gone=false"),
            link_dup: link("&duplicate=true&gone=false"),
            link_gone: link("&gone=true"),
            sync_at,
            sync_outcome,
            sync_class,
            sync_detail,
            problem,
            id,
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    lines: Vec<Line>,
    broken: usize,
    totals: [String; 7],
}

/// `GET /api/console/`.
///
/// # Errors
/// Storage failures (a 500 page with the invocation id).
pub async fn page(cx: &Console<'_>, _: Viewer) -> Result<Page, Refusal> {
    let all = overview::overview(cx.state.tables())
        .await
        .map_err(|e| Refusal::Internal(anyhow::Error::new(e).context("overview")))?;
    let mut lines: Vec<Line> = all.iter().map(Line::new).collect();
    // A broken customer comes first.
    lines.sort_by_key(|l| l.problem.is_empty());
    let sum = |f: fn(&TenantOverview) -> u64| display::count(all.iter().map(f).sum());
    let totals = [
        sum(|o| o.counts.devices),
        sum(|o| o.counts.live),
        sum(|o| o.counts.stale),
        sum(|o| o.counts.duplicates),
        sum(|o| o.counts.gone),
        sum(|o| o.counts.mac_linux),
        sum(|o| o.open_requests),
    ];
    Ok(render(
        200,
        &OverviewPage {
            layout: cx.layout("Overview", "overview"),
            broken: lines.iter().filter(|l| !l.problem.is_empty()).count(),
            lines,
            totals,
        },
    ))
}
