//! Sign-in and sign-out: the session key, the current user, and the OIDC routes.

use crate::app::AppState;
use crate::host::HttpRequestData;

use super::PREFIX;
use super::auth::SignedIn;
use super::page::Page;
use super::refusal::Refusal;
use super::session::{self, SessionKey};
use super::views::{Layout, Link, MessagePage, render};

/// The cookie's key, from the Key Vault secret named by `CONSOLE_SESSION_SECRET`.
///
/// # Errors
/// [`Refusal::Unavailable`] when the console is not configured, the vault can't be read or
/// the secret is shorter than 32 bytes.
pub async fn session_key(state: &AppState) -> Result<SessionKey, Refusal> {
    use secrecy::ExposeSecret;
    let config = state.config();
    let (Some(name), Some(_)) = (&config.console.session_secret, &config.home_app) else {
        return Err(Refusal::Unavailable(
            "The console is not configured: set CONSOLE_SESSION_SECRET (a Key Vault secret of at least 32 bytes), HOME_TENANT_ID and HOME_CLIENT_ID.".into(),
        ));
    };
    let Some(vault) = state.vault() else {
        return Err(Refusal::Unavailable(
            "The console needs Key Vault (KEY_VAULT_URI) for its session key.".into(),
        ));
    };
    let secret = vault.get(name).await.map_err(|e| {
        tracing::warn!(error = %e, secret = %name, "console session secret unavailable");
        Refusal::Unavailable("The console's session key can't be read from Key Vault right now. Try again in a minute.".into())
    })?;
    SessionKey::derive(secret.value.expose_secret().as_bytes()).map_err(|e| {
        tracing::error!(error = %e, secret = %name, "console session secret too short");
        Refusal::Unavailable(format!(
            "The console's session secret ({name}) is too short: {e}."
        ))
    })
}

/// The signed-in person of the request's cookie; `None` without a valid, unexpired session.
///
/// # Errors
/// When the session key is unavailable.
pub async fn current_user(
    state: &AppState,
    req: &HttpRequestData,
) -> Result<Option<SignedIn>, Refusal> {
    let Some(value) = session::cookie_value(cookie_headers(req)) else {
        return Ok(None);
    };
    let key = session_key(state).await?;
    Ok(key.open(value, state.now()).and_then(SignedIn::from_sealed))
}

pub(super) fn cookie_headers(req: &HttpRequestData) -> impl Iterator<Item = &str> {
    req.headers
        .get("cookie")
        .into_iter()
        .flatten()
        .map(String::as_str)
}

/// `GET /api/console/auth/signin?returnTo=...`: seals state, nonce and PKCE verifier in the
/// cookie and redirects to the identity provider.
///
/// # Errors
/// When the console is not configured.
pub async fn start(state: &AppState, _req: &HttpRequestData) -> Result<Page, Refusal> {
    let _key = session_key(state).await?;
    Err(Refusal::Unavailable("Sign-in is not built yet.".into()))
}

/// `GET /api/console/auth/callback?code=...&state=...`.
///
/// # Errors
/// When the answer of the identity provider is not a valid sign-in.
pub async fn callback(state: &AppState, _req: &HttpRequestData) -> Result<Page, Refusal> {
    let _key = session_key(state).await?;
    Err(Refusal::Unavailable("Sign-in is not built yet.".into()))
}

/// `POST /api/console/auth/signout` (CSRF checked): clears the cookie.
pub fn sign_out() -> Page {
    render(
        200,
        &MessagePage {
            layout: Layout::new("Signed out", "", None),
            heading: "Signed out".into(),
            message: "You are signed out of the defender-ops console.".into(),
            link: Some(Link {
                href: format!("{PREFIX}/"),
                text: "Sign in again".into(),
            }),
            reference: None,
        },
    )
    .with_cookie(session::clear_cookie())
}
