//! The layout every page extends, and the message page (refusals, errors, signed out).
//!
//! A page's template struct has a `layout: Layout` field and `{% extends "base.html" %}`;
//! askama escapes every `{{ value }}` for HTML, so pages never escape by hand.

use askama::Template;

use super::auth::SignedIn;
use super::page::Page;
use crate::domain::ConsoleRole;

/// What `base.html` shows: the title, the current section and the signed-in person.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// `overview`, `devices`, `tenants` or `` (marks the nav link with `aria-current`).
    pub section: &'static str,
    pub user: Option<UserView>,
}

/// The header's view of the signed-in person.
#[derive(Debug, Clone)]
pub struct UserView {
    pub name: String,
    pub upn: String,
    /// `admin, operator` or `no role`.
    pub roles: String,
    pub csrf: String,
    pub is_admin: bool,
}

impl Layout {
    /// The layout of a page for `user`.
    pub fn new(title: impl Into<String>, section: &'static str, user: Option<&SignedIn>) -> Self {
        Self {
            title: title.into(),
            section,
            user: user.map(|u| {
                let roles: Vec<&str> = u.roles().iter().map(ConsoleRole::label).collect();
                UserView {
                    name: u.name().to_owned(),
                    upn: u.upn().to_owned(),
                    roles: if roles.is_empty() {
                        "no role".to_owned()
                    } else {
                        roles.join(", ")
                    },
                    csrf: u.csrf_token().to_owned(),
                    is_admin: u.may(ConsoleRole::Admin),
                }
            }),
        }
    }
}

/// A link on a message page.
#[derive(Debug, Clone)]
pub struct Link {
    pub href: String,
    pub text: String,
}

/// A page with a heading and one paragraph (refusals, errors, signed out).
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub heading: String,
    pub message: String,
    pub link: Option<Link>,
    /// The invocation id of a 5xx, to find the log lines.
    pub reference: Option<String>,
}

/// Renders a template into an HTML page with `status`; a template that fails to render (it
/// can't, short of a formatting error in a value) becomes a plain 500 page.
pub fn render<T: Template>(status: u16, template: &T) -> Page {
    match template.render() {
        Ok(html) => Page::html(status, html),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            Page::html(
                500,
                "<!doctype html><title>Error</title><p>The page could not be rendered.</p>".into(),
            )
        }
    }
}
