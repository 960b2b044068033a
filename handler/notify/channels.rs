//! The channel senders: Teams Workflows and the outbound webhook (HTTPS POST to a URL held
//! in Key Vault) and mail (Graph `sendMail` as the home app). Failures carry no URL, no
//! secret and no token: their text goes to logs and to `Outbox.<C>LastError`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::email::Mail;
use super::{card, event};
use crate::app::AppState;
use crate::clients::credentials::{AuthMode, TenantAuth};
use crate::clients::graph::{GraphClient, GraphSettings, OutgoingMail};
use crate::clients::http::{RetryPolicy, error_chain, retry_after};
use crate::config::{Config, SecretName};
use crate::domain::{Channel, TenantId};

/// One POST's limit: keeps a claim's lease (see `deliver`) well above a whole send.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest `Retry-After` waited in place; longer ones fail the invocation and the
/// host's retry comes back later.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(10);
/// 429s answered in place before giving up.
const MAX_THROTTLED_RETRIES: u32 = 2;

/// Why a channel could not send. The text is safe to log and store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChannelError(pub String);

/// The channels configured for the whole app (a channel is on when its settings are set).
#[must_use]
pub fn configured(config: &Config) -> Vec<Channel> {
    let n = &config.notify;
    let mut on = Vec::new();
    if n.teams_secret.is_some() {
        on.push(Channel::Teams);
    }
    if n.email_from.is_some() && !n.email_to.is_empty() && config.home_app.is_some() {
        on.push(Channel::Email);
    }
    if n.webhook_secret.is_some() {
        on.push(Channel::Webhook);
    }
    on
}

/// Reads a URL kept as a Key Vault secret; the value never appears in an error.
async fn secret_url(
    state: &AppState,
    setting: &str,
    name: &SecretName,
) -> Result<Url, ChannelError> {
    let vault = state
        .vault()
        .ok_or_else(|| ChannelError(format!("{setting} is set but KEY_VAULT_URI is not")))?;
    let secret = vault
        .get(name)
        .await
        .map_err(|e| ChannelError(format!("reading the {setting} secret: {e}")))?;
    let url = Url::parse(secret.value.expose_secret().trim()).map_err(|_| {
        ChannelError(format!(
            "the Key Vault secret '{name}' ({setting}) does not hold a URL"
        ))
    })?;
    if url.scheme() != "https" {
        return Err(ChannelError(format!(
            "the Key Vault secret '{name}' ({setting}) must hold an https URL"
        )));
    }
    Ok(url)
}

/// POSTs a JSON body, waiting out short 429s and retrying refused connections (nothing was
/// received then). Anything else is one attempt: a POST that timed out may have been
/// received, and the caller's retry decides.
async fn post(
    http: &reqwest::Client,
    url: &Url,
    body: &[u8],
    headers: &[(&str, String)],
    what: &str,
) -> Result<(), (ChannelError, Option<StatusCode>)> {
    let mut throttled = 0u32;
    let mut refused = 0u32;
    loop {
        let mut req = http
            .post(url.clone())
            .timeout(SEND_TIMEOUT)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(res) if res.status().is_success() => return Ok(()),
            Ok(res) if res.status() == StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(res.headers(), SystemTime::now());
                let short = wait.unwrap_or(Duration::from_secs(1)) <= MAX_INLINE_RETRY_AFTER;
                if throttled < MAX_THROTTLED_RETRIES && short {
                    throttled += 1;
                    let wait = wait.unwrap_or(Duration::from_secs(1));
                    tracing::info!(
                        channel = what,
                        retry.delay_ms = wait.as_millis() as u64,
                        "throttled; waiting before the next try"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let after = wait
                    .map(|d| format!("; retry after {}s", d.as_secs()))
                    .unwrap_or_default();
                return Err((
                    ChannelError(format!("{what} throttled the post (429){after}")),
                    Some(StatusCode::TOO_MANY_REQUESTS),
                ));
            }
            Ok(res) => {
                let status = res.status();
                // Only the error code: messages may echo the URL's ids.
                let code = res
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/code")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default();
                return Err((
                    ChannelError(format!("{what} answered {}{code}", status.as_u16())),
                    Some(status),
                ));
            }
            Err(e) if e.is_connect() && refused < 2 => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(refused))).await;
            }
            Err(e) => {
                let e = e.without_url();
                let maybe = if e.is_connect() {
                    ""
                } else {
                    " (it may have been received)"
                };
                return Err((
                    ChannelError(format!("{what}: no answer: {}{maybe}", error_chain(&e))),
                    None,
                ));
            }
        }
    }
}

/// Sends and forgets a cached URL the receiver refused (it may have been rotated).
async fn post_to_secret_url(
    state: &AppState,
    setting: &str,
    name: &SecretName,
    body: &[u8],
    headers: &[(&str, String)],
    what: &str,
) -> Result<(), ChannelError> {
    let url = secret_url(state, setting, name).await?;
    match post(&state.services().http, &url, body, headers, what).await {
        Ok(()) => Ok(()),
        Err((e, status)) => {
            if matches!(
                status,
                Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
            ) && let Some(vault) = state.vault()
            {
                vault.invalidate(name);
            }
            Err(e)
        }
    }
}

/// Posts an Adaptive Card to the Teams workflow, after the structural check (Workflows
/// answer 202 even for a card they then fail to render).
///
/// # Errors
/// A refused card, the secret, or the post.
pub async fn send_teams(state: &AppState, body: &Value) -> Result<(), ChannelError> {
    card::check(body).map_err(|e| ChannelError(format!("card refused before sending: {e}")))?;
    let name = state
        .config()
        .notify
        .teams_secret
        .as_ref()
        .ok_or_else(|| ChannelError("NOTIFY_TEAMS_SECRET is not set".into()))?;
    let bytes = serde_json::to_vec(body).map_err(|e| ChannelError(e.to_string()))?;
    post_to_secret_url(
        state,
        "NOTIFY_TEAMS_SECRET",
        name,
        &bytes,
        &[],
        "the Teams workflow",
    )
    .await
}

static UNSIGNED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Posts the JSON event to the outbound webhook, signed with its own key
/// (`NOTIFY_WEBHOOK_SIGNING_SECRET`) when that is set. Never with `WEBHOOK_HMAC_SECRET` or a
/// caller's key: a receiver that verifies events must not hold a key that can offboard.
///
/// # Errors
/// The secrets, or the post.
pub async fn send_webhook(state: &AppState, body: &Value) -> Result<(), ChannelError> {
    let name = state
        .config()
        .notify
        .webhook_secret
        .as_ref()
        .ok_or_else(|| ChannelError("NOTIFY_WEBHOOK_SECRET is not set".into()))?;
    let bytes = serde_json::to_vec(body).map_err(|e| ChannelError(e.to_string()))?;
    let mut headers = Vec::new();
    match (&state.config().notify.webhook_signing_secret, state.vault()) {
        (Some(key_name), Some(vault)) => {
            let key = vault.get(key_name).await.map_err(|e| {
                ChannelError(format!(
                    "reading the NOTIFY_WEBHOOK_SIGNING_SECRET secret: {e}"
                ))
            })?;
            let ts = state.now().unix_timestamp();
            let sig = event::signature(key.value.expose_secret().as_bytes(), ts, &bytes);
            headers.push((event::SIGNATURE_HEADER, sig));
            headers.push((event::TIMESTAMP_HEADER, ts.to_string()));
        }
        _ => {
            if !UNSIGNED_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "NOTIFY_WEBHOOK_SIGNING_SECRET is not set: outbound webhook events are sent unsigned"
                );
            }
        }
    }
    post_to_secret_url(
        state,
        "NOTIFY_WEBHOOK_SECRET",
        name,
        &bytes,
        &headers,
        "the outbound webhook",
    )
    .await
}

/// Sends the mail with Graph as the home app (`HOME_*`), from `NOTIFY_EMAIL_FROM` to
/// `NOTIFY_EMAIL_TO`, as a MIME mail with a plain-text and an HTML part.
///
/// # Errors
/// Missing settings, a token, or Graph (403 names Mail.Send).
pub async fn send_email(state: &AppState, mail: &Mail) -> Result<(), ChannelError> {
    let config = state.config();
    let (Some(home), Some(from)) = (&config.home_app, &config.notify.email_from) else {
        return Err(ChannelError(
            "email needs NOTIFY_EMAIL_FROM, NOTIFY_EMAIL_TO and the HOME_* app".into(),
        ));
    };
    let tenant = TenantId::parse(&home.tenant_id)
        .map_err(|e| ChannelError(format!("HOME_TENANT_ID: {e}")))?;
    let mode = if home.secret_name.is_some() {
        AuthMode::Secret
    } else {
        AuthMode::Federated
    };
    let auth = TenantAuth::new(tenant, &home.client_id, mode, home.secret_name.clone())
        .map_err(|e| ChannelError(format!("the home app: {e}")))?;
    let services = state.services();
    let mut settings = GraphSettings::new(config.graph_api_base.clone());
    settings.retry = RetryPolicy {
        max_retries: 2,
        initial_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
        max_retry_after: MAX_INLINE_RETRY_AFTER,
    };
    let graph = GraphClient::new(
        services.http.clone(),
        settings,
        Arc::clone(&services.credentials),
        auth,
    );
    let outgoing = OutgoingMail {
        subject: &mail.subject,
        text: &mail.text,
        html: &mail.html,
        key: mail.note_id.as_deref(),
    };
    graph
        .send_mail(from, &config.notify.email_to, &outgoing)
        .await
        .map_err(|e| ChannelError(format!("Graph sendMail: {e}")))
}
