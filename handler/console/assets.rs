//! The console's stylesheet and icon, compiled into the binary and served as text
//! (payload mode has no binary bodies; CSP `default-src 'self'` allows only these).

use super::page::Page;

const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// `GET /api/console/static/{name}`; `None` for an unknown name.
pub fn serve(name: &str) -> Option<Page> {
    match name {
        "app.css" => Some(Page::asset("text/css; charset=utf-8", APP_CSS)),
        "icon.svg" => Some(Page::asset("image/svg+xml", ICON_SVG)),
        _ => None,
    }
}
