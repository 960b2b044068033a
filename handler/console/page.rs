//! Every answer the console gives goes through here, so none leaves without the §9.5 headers.
//!
//! Pages (HTML) and redirects get `Cache-Control: no-store`; the static assets are cacheable
//! (they carry no user data). All carry `Content-Security-Policy: default-src 'self'`,
//! `X-Frame-Options: DENY`, `Referrer-Policy: same-origin` and `X-Content-Type-Options: nosniff`.
//! At most one cookie is set per answer: the host hands back one string per header name.

use crate::host::HttpResponse;

pub const CSP: &str = "default-src 'self'";

/// A console answer being built: status, body, content type, caching and at most one cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    status: u16,
    content_type: &'static str,
    body: String,
    location: Option<String>,
    cookie: Option<String>,
    cacheable: bool,
    /// `Content-Disposition: attachment; filename=...` (a download, e.g. the CSV).
    attachment: Option<&'static str>,
}

impl Page {
    /// An HTML page (`text/html`), never cached.
    pub fn html(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/html; charset=utf-8",
            body,
            location: None,
            cookie: None,
            cacheable: false,
            attachment: None,
        }
    }

    /// A `303 See Other` to `location` (a path of this site, or the identity provider).
    pub fn redirect(location: impl Into<String>) -> Self {
        Self {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: String::new(),
            location: Some(location.into()),
            cookie: None,
            cacheable: false,
            attachment: None,
        }
    }

    /// A static asset served as text (CSS, SVG), cacheable for a day.
    pub fn asset(content_type: &'static str, body: &'static str) -> Self {
        Self {
            status: 200,
            content_type,
            body: body.to_owned(),
            location: None,
            cookie: None,
            cacheable: true,
            attachment: None,
        }
    }

    /// Plain text (e.g. a CSV export), never cached.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            content_type,
            body,
            location: None,
            cookie: None,
            cacheable: false,
            attachment: None,
        }
    }

    /// Sets the one `Set-Cookie` of this answer (a full cookie string), replacing any earlier.
    #[must_use]
    pub fn with_cookie(mut self, set_cookie: String) -> Self {
        self.cookie = Some(set_cookie);
        self
    }

    /// Makes the answer a download named `filename` (a fixed name: no quoting needed).
    #[must_use]
    pub fn as_attachment(mut self, filename: &'static str) -> Self {
        self.attachment = Some(filename);
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response the host returns to the browser.
    pub fn into_response(self) -> HttpResponse {
        let mut res = HttpResponse {
            status: self.status,
            headers: std::collections::BTreeMap::new(),
            body: self.body,
        }
        .with_header("Content-Type", self.content_type)
        .with_header("Content-Security-Policy", CSP)
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "same-origin")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header(
            "Cache-Control",
            if self.cacheable {
                "public, max-age=86400"
            } else {
                "no-store"
            },
        );
        if let Some(location) = self.location {
            res = res.with_header("Location", location);
        }
        if let Some(name) = self.attachment {
            res = res.with_header(
                "Content-Disposition",
                format!("attachment; filename=\"{name}\""),
            );
        }
        if let Some(cookie) = self.cookie {
            res = res.with_header("Set-Cookie", cookie);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_the_security_headers() {
        for page in [
            Page::html(200, "<p>x</p>".into()),
            Page::redirect("/api/console"),
            Page::asset("text/css; charset=utf-8", "body{}"),
            Page::html(403, String::new()).with_cookie("a=b".into()),
        ] {
            let res = page.into_response();
            assert_eq!(res.headers["Content-Security-Policy"], "default-src 'self'");
            assert_eq!(res.headers["X-Frame-Options"], "DENY");
            assert_eq!(res.headers["Referrer-Policy"], "same-origin");
            assert_eq!(res.headers["X-Content-Type-Options"], "nosniff");
            assert!(res.headers.contains_key("Cache-Control"));
        }
    }

    #[test]
    fn pages_are_not_cached_but_assets_are() {
        let page = Page::html(200, String::new()).into_response();
        assert_eq!(page.headers["Cache-Control"], "no-store");
        let css = Page::asset("text/css; charset=utf-8", "").into_response();
        assert!(css.headers["Cache-Control"].contains("max-age"));
    }
}
