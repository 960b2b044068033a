//! The operator console (DESIGN §9.5): server-rendered pages under `/api/console`, signed in
//! with Entra ID, served by the function `Console` (`functions::console` hands every
//! invocation to [`handle`]).
//!
//! # How a request goes
//! 1. [`handle`] routes by method and path (`req.param("path")`, the `{*path}` of the route).
//!    Without a session: `static/app.css`, `static/icon.svg`, `auth/signin`, `auth/callback`.
//! 2. Everything else needs the sealed cookie ([`session`]): none, expired, forged or sealed
//!    under another key → `303` to sign-in (which returns to the page afterwards).
//! 3. Every POST: the body is parsed as a form and its `csrf` field checked against the
//!    session's token, here, once ([`form`]); a mismatch is a 403 page.
//! 4. Every page needs at least the viewer's rights: a person with no role gets a 403 page.
//! 5. [`routes`] picks the page; a page returns `Result<Page, Refusal>`.
//!
//! # Writing a page (API for the page modules)
//! ```ignore
//! pub async fn devices(cx: &Console<'_>, _: Viewer) -> Result<Page, Refusal> {
//!     let rows = ...; // the same store/use-case code the functions call
//!     Ok(render(200, &DevicesPage { layout: cx.layout("Devices", "devices"), rows }))
//! }
//! // an action: the role proof is a parameter, so the handler can't run without the check
//! pub async fn offboard(cx: &Console<'_>, _: Operator) -> Result<Page, Refusal> {
//!     let machine = cx.form.get("machineId").ok_or_else(|| Refusal::BadRequest(...))?;
//!     ...; Ok(Page::redirect(format!("{PREFIX}/devices/...")))   // post/redirect/get
//! }
//! ```
//! and one line in [`routes::dispatch`]: `("GET", ["devices"]) => devices(cx, cx.user.require()?).await`.
//! - [`Console`]: `state`, `req` (query: `cx.req.query("stale")`), `user` ([`SignedIn`]: upn,
//!   object id, name, roles, `actor()` for Audit rows, `may(ConsoleRole::Operator)` to decide
//!   whether to show a control), `form` (the POST's fields, CSRF already checked), `now`.
//! - Roles: [`Viewer`], [`Operator`], [`Approver`], [`Admin`] from `cx.user.require::<R>()?`
//!   (403 page otherwise). Roles are independent; any role may view.
//! - Templates (askama, `handler/console/templates/`, escape HTML by default): a struct with
//!   `layout: Layout` (from `cx.layout(title, section)`) and `{% extends "base.html" %}`, the
//!   content in `{% block content %}`. Every form: `method="post"` and
//!   `<input type="hidden" name="csrf" value="{{ layout.user.as_ref().unwrap().csrf }}">`, or
//!   simpler, a `csrf: String` field on the page struct from `cx.csrf()`.
//!   No inline `<script>`/`style=`/event attributes (CSP `default-src 'self'`); classes of
//!   `assets/app.css` (`table`, `th.num`/`td.num`, `.badge.good|bad|warn`, `.notice`,
//!   `form.stack`, `.field`, `.hint`, `button.secondary|danger`).
//! - Answers: [`Page::html`] (via [`views::render`]), [`Page::redirect`] (303),
//!   [`Page::text`] (CSV); [`page`] adds the security headers to every one.
//!   Links are absolute paths under [`PREFIX`].

pub mod assets;
pub mod auth;
pub mod devices;
pub mod display;
pub mod form;
pub mod overview;
pub mod page;
pub mod refusal;
pub mod routes;
pub mod session;
pub mod signin;
pub mod views;

use time::OffsetDateTime;

use crate::app::AppState;
use crate::host::{HttpRequestData, HttpResponse};

pub use auth::{Admin, Approver, Operator, Role, SignedIn, Viewer};
pub use form::Form;
pub use page::Page;
pub use refusal::Refusal;
pub use views::{Layout, render};

/// Where the console lives (the host's route prefix `api` + the function's route).
pub const PREFIX: &str = "/api/console";

/// One console request of a signed-in person, CSRF already checked for a POST.
pub struct Console<'a> {
    pub state: &'a AppState,
    pub req: &'a HttpRequestData,
    pub user: SignedIn,
    /// The posted form (empty for a GET).
    pub form: Form,
    pub now: OffsetDateTime,
    invocation_id: &'a str,
}

impl Console<'_> {
    /// The layout of a page of this request.
    pub fn layout(&self, title: impl Into<String>, section: &'static str) -> Layout {
        Layout::new(title, section, Some(&self.user))
    }

    /// The session's CSRF token, for a form's hidden `csrf` field.
    pub fn csrf(&self) -> &str {
        self.user.csrf_token()
    }

    /// The host's invocation id (shown on error pages, logged).
    pub fn invocation_id(&self) -> &str {
        self.invocation_id
    }
}

/// The sign-in address that returns to `return_to` (a console path) afterwards.
pub fn sign_in_url(return_to: &str) -> String {
    let mut url = format!("{PREFIX}/auth/signin");
    if return_to != PREFIX && return_to != format!("{PREFIX}/") {
        url.push_str("?returnTo=");
        url.extend(url::form_urlencoded::byte_serialize(return_to.as_bytes()));
    }
    url
}

/// Answers one invocation of `Console`.
pub async fn handle(state: &AppState, req: &HttpRequestData, invocation_id: &str) -> HttpResponse {
    let path = req.param("path").unwrap_or_default().trim_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method.as_str();
    tracing::Span::current().record("console.path", path);
    let page = match (method, segments.as_slice()) {
        ("GET" | "HEAD", ["static", name]) => {
            assets::serve(name).unwrap_or_else(|| Refusal::NotFound.into_page(None, invocation_id))
        }
        ("GET", ["auth", "signin"]) => signin::start(state, req)
            .await
            .unwrap_or_else(|r| r.into_page(None, invocation_id)),
        ("GET", ["auth", "callback"]) => signin::callback(state, req)
            .await
            .unwrap_or_else(|r| r.into_page(None, invocation_id)),
        _ => signed_in(state, req, method, &segments, path, invocation_id).await,
    };
    page.into_response()
}

async fn signed_in(
    state: &AppState,
    req: &HttpRequestData,
    method: &str,
    segments: &[&str],
    path: &str,
    invocation_id: &str,
) -> Page {
    let user = match signin::current_user(state, req).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let return_to = if method == "GET" && !path.is_empty() {
                format!("{PREFIX}/{path}")
            } else {
                PREFIX.to_owned()
            };
            return Refusal::SignIn { return_to }.into_page(None, invocation_id);
        }
        Err(r) => return r.into_page(None, invocation_id),
    };
    tracing::Span::current().record("actor", user.actor().label());
    let form = if method == "POST" {
        let Some(form) = Form::parse(req.body.as_deref().unwrap_or_default()) else {
            return Refusal::BadRequest("The form is too large.".into())
                .into_page(Some(&user), invocation_id);
        };
        if !form.csrf_matches(user.csrf_token()) {
            return Refusal::Csrf.into_page(Some(&user), invocation_id);
        }
        form
    } else {
        Form::default()
    };
    if let ("POST", ["auth", "signout"]) = (method, segments) {
        return signin::sign_out();
    }
    if let Err(r) = user.require::<Viewer>() {
        return r.into_page(Some(&user), invocation_id);
    }
    let cx = Console {
        state,
        req,
        user,
        form,
        now: state.now(),
        invocation_id,
    };
    match routes::dispatch(&cx, method, segments).await {
        Ok(page) => page,
        Err(r) => r.into_page(Some(&cx.user), invocation_id),
    }
}
