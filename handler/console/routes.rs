//! Which page answers which method and path (relative to `/api/console`). Each line asks
//! for the role proof the page needs; add one line per page.

use super::page::Page;
use super::refusal::Refusal;
use super::{Console, devices, overview};

/// The page for `method` and the path's segments.
///
/// # Errors
/// The page's [`Refusal`]; [`Refusal::NotFound`] for an unknown path.
pub async fn dispatch(cx: &Console<'_>, method: &str, path: &[&str]) -> Result<Page, Refusal> {
    match (method, path) {
        ("GET", []) => overview::page(cx, cx.user.require()?).await,
        ("GET", ["devices"]) => devices::list(cx, cx.user.require()?).await,
        ("GET", ["devices.csv"]) => devices::csv(cx, cx.user.require()?).await,
        ("GET", ["devices", tenant, machine]) => {
            devices::device(cx, cx.user.require()?, tenant, machine).await
        }
        (_, [] | ["auth", ..]) => Err(Refusal::MethodNotAllowed),
        _ => Err(Refusal::NotFound),
    }
}
