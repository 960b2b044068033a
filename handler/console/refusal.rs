//! Why a console request was not served, and the page that says so.

use super::auth::SignedIn;
use super::page::Page;
use super::views::{Layout, Link, MessagePage, render};
use crate::domain::ConsoleRole;

/// A request the console does not serve as asked. Each becomes a readable page (or the
/// redirect to sign in); none carries an internal detail.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No session (or an expired, forged or other-key one): sign in, then go to `return_to`.
    #[error("sign-in needed")]
    SignIn { return_to: String },
    /// Signed in without any console role.
    #[error("no console role")]
    NoRole,
    /// Signed in without the role this needs.
    #[error("needs {needed}")]
    Forbidden { needed: ConsoleRole },
    /// A POST whose CSRF field is missing or wrong.
    #[error("CSRF token missing or wrong")]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Bad input, said in words for the person (shown as text).
    #[error("{0}")]
    BadRequest(String),
    /// The console can't work right now (not configured, Key Vault down...); said in words.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of ours; logged with its cause, shown with the invocation id only.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Refusal {
    /// The answer for this refusal. `user` fills the header when someone is signed in;
    /// `invocation_id` is shown on 5xx pages.
    pub fn into_page(self, user: Option<&SignedIn>, invocation_id: &str) -> Page {
        let (status, heading, message, link) = match self {
            Self::SignIn { return_to } => {
                return Page::redirect(super::sign_in_url(&return_to));
            }
            Self::NoRole => (
                403,
                "No access to the console",
                "You are signed in, but your account has no role in the defender-ops console. Ask an administrator to assign you one of the app roles Console.Viewer, Console.Operator, Console.Approver or Console.Admin, then sign in again.".to_owned(),
                None,
            ),
            Self::Forbidden { needed } => (
                403,
                "Not allowed",
                format!("This needs the {needed} role, which your account does not have."),
                Some(home()),
            ),
            Self::Csrf => (
                403,
                "Form expired",
                "The form was not sent from this console session (its security token is missing or out of date). Go back, reload the page and try again.".to_owned(),
                Some(home()),
            ),
            Self::NotFound => (
                404,
                "Not found",
                "There is no console page at this address.".to_owned(),
                Some(home()),
            ),
            Self::MethodNotAllowed => (
                405,
                "Not allowed",
                "This page can't be used that way.".to_owned(),
                Some(home()),
            ),
            Self::BadRequest(message) => (400, "Not accepted", message, Some(home())),
            Self::Unavailable(message) => {
                tracing::warn!(%message, "console unavailable");
                (503, "Console unavailable", message, None)
            }
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "console page failed");
                (
                    500,
                    "Something went wrong",
                    "The page could not be produced. The reference below finds the details in the logs.".to_owned(),
                    Some(home()),
                )
            }
        };
        let reference = (status >= 500).then(|| invocation_id.to_owned());
        if status < 500 {
            tracing::info!(status, heading, "console request refused");
        }
        render(
            status,
            &MessagePage {
                layout: Layout::new(heading, "", user),
                heading: heading.to_owned(),
                message,
                link,
                reference,
            },
        )
    }
}

fn home() -> Link {
    Link {
        href: super::PREFIX.to_owned() + "/",
        text: "Back to the overview".into(),
    }
}
