//! The fleet overview (`GET /api/console/`): owned by the console-pages work; until it lands,
//! the landing page says who is signed in and links the sections.

use askama::Template;

use super::Console;
use super::auth::Viewer;
use super::page::Page;
use super::refusal::Refusal;
use super::views::{Layout, render};

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
}

/// `GET /api/console/`.
///
/// # Errors
/// None yet.
pub async fn page(cx: &Console<'_>, _: Viewer) -> Result<Page, Refusal> {
    Ok(render(
        200,
        &OverviewPage {
            layout: cx.layout("Overview", "overview"),
        },
    ))
}
