//! Sign-in and sign-out: the session key, the current user, and the OIDC routes.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use url::Url;

use crate::app::AppState;
use crate::config::HomeApp;
use crate::host::HttpRequestData;

use super::PREFIX;
use super::auth::SignedIn;
use super::oidc::{Oidc, SignInError};
use super::page::Page;
use super::refusal::Refusal;
use super::session::{self, Sealed, SessionKey};
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

/// The home app of a configured console.
fn home(state: &AppState) -> Result<&HomeApp, Refusal> {
    state.config().home_app.as_ref().ok_or_else(|| {
        Refusal::Unavailable(
            "The console is not configured: set HOME_TENANT_ID and HOME_CLIENT_ID.".into(),
        )
    })
}

/// The OIDC redirect URI: `CONSOLE_BASE_URL` or the origin of the request as the Functions
/// host reports it, + `/api/console/auth/callback`.
pub fn redirect_uri(state: &AppState, req: &HttpRequestData) -> Result<String, Refusal> {
    let origin = match &state.config().console.base_url {
        Some(base) => base.origin().ascii_serialization(),
        None => Url::parse(&req.url)
            .ok()
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .ok_or_else(|| Refusal::BadRequest("The request has no usable URL.".into()))?,
    };
    Ok(format!("{origin}{PREFIX}/auth/callback"))
}

/// A console path to return to after sign-in; anything else (another site, `//host`) is
/// replaced by the overview, so sign-in can't be used as an open redirect.
fn safe_return_to(raw: Option<&str>) -> String {
    let home = format!("{PREFIX}/");
    let Some(raw) = raw else { return home };
    let rest = raw.strip_prefix(PREFIX);
    let ok = rest.is_some_and(|r| {
        (r.is_empty() || r.starts_with('/') || r.starts_with('?'))
            && !r.contains("//")
            && !r.contains('\\')
            && !r.chars().any(char::is_control)
    });
    if ok { raw.to_owned() } else { home }
}

/// `GET /api/console/auth/signin?returnTo=...`: seals state, nonce and PKCE verifier in the
/// cookie and redirects to the identity provider.
///
/// # Errors
/// When the console is not configured.
pub async fn start(state: &AppState, req: &HttpRequestData) -> Result<Page, Refusal> {
    let key = session_key(state).await?;
    let home = home(state)?;
    let redirect_uri = redirect_uri(state, req)?;
    let pending = Sealed::Pending {
        state: session::random_token(),
        nonce: session::random_token(),
        verifier: session::random_token(),
        return_to: safe_return_to(req.query("returnTo")),
        exp: state.now().unix_timestamp() + session::PENDING_SECONDS,
    };
    let Sealed::Pending {
        state: st,
        nonce,
        verifier,
        ..
    } = &pending
    else {
        return Err(Refusal::Internal(anyhow::anyhow!("pending sign-in")));
    };
    let location = Oidc::new(&state.config().authority_host, home).authorize_url(
        &redirect_uri,
        st,
        nonce,
        verifier,
    );
    Ok(Page::redirect(location).with_cookie(session::set_cookie(
        &key.seal(&pending),
        session::PENDING_SECONDS,
    )))
}

/// `GET /api/console/auth/callback?code=...&state=...`: checks the state against the sealed
/// cookie, redeems the code, validates the ID token and starts the session.
///
/// # Errors
/// A readable page when the sign-in was refused, expired or does not belong to this browser.
pub async fn callback(state: &AppState, req: &HttpRequestData) -> Result<Page, Refusal> {
    let key = session_key(state).await?;
    let home = home(state)?;
    if let Some(error) = req.query("error") {
        let description = req
            .query("error_description")
            .and_then(|d| d.lines().next())
            .unwrap_or_default();
        return Ok(failed(format!(
            "Entra ID did not sign you in: {error}. {description}"
        )));
    }
    let pending = session::cookie_value(cookie_headers(req)).and_then(|v| key.open(v, state.now()));
    let Some(Sealed::Pending {
        state: expected_state,
        nonce,
        verifier,
        return_to,
        ..
    }) = pending
    else {
        return Ok(failed(
            "This sign-in has expired or was started in another browser window. Start again."
                .into(),
        ));
    };
    let same_state = req
        .query("state")
        .is_some_and(|s| verify_slices_are_equal(s.as_bytes(), expected_state.as_bytes()).is_ok());
    let Some(code) = req.query("code").filter(|_| same_state) else {
        return Ok(failed(
            "The answer from Entra ID does not belong to this sign-in. Start again.".into(),
        ));
    };
    let redirect_uri = redirect_uri(state, req)?;
    let oidc = Oidc::new(&state.config().authority_host, home);
    let claims = match oidc
        .redeem(state, home, code, &verifier, &redirect_uri, &nonce)
        .await
    {
        Ok(claims) => claims,
        Err(SignInError::Unavailable(why)) => {
            tracing::warn!(%why, "sign-in could not complete");
            return Err(Refusal::Unavailable(
                "Sign-in can't complete right now (Entra ID or Key Vault is not reachable). Try again in a minute.".into(),
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "sign-in refused");
            return Ok(failed(format!("Sign-in failed: {e}.")));
        }
    };
    let user = Sealed::user(
        claims.upn(),
        claims.oid.clone(),
        claims.name.clone().unwrap_or_else(|| claims.upn()),
        claims.roles(),
        state.now(),
    );
    tracing::info!(actor = %format!("user:{}", claims.upn()), roles = claims.roles.len(), "signed in to the console");
    Ok(Page::redirect(return_to).with_cookie(session::set_cookie(
        &key.seal(&user),
        session::SESSION_SECONDS,
    )))
}

/// A sign-in that did not work: a 400 page with a link to start again, the cookie cleared.
fn failed(message: String) -> Page {
    render(
        400,
        &MessagePage {
            layout: Layout::new("Sign-in failed", "", None),
            heading: "Sign-in failed".into(),
            message,
            link: Some(Link {
                href: format!("{PREFIX}/auth/signin"),
                text: "Sign in again".into(),
            }),
            reference: None,
        },
    )
    .with_cookie(session::clear_cookie())
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
