//! Microsoft Graph client (CONTRACT §4.2, §5.3): security incidents with their alerts and
//! evidence as a stream of pages, and `sendMail` of a MIME multipart/alternative mail. Graph
//! errors are `{"error":{"code","message","innerError"}}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::Stream;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::domain::mail::is_mail_address;

use super::credentials::{AuthError, CredentialProvider, Scope, TenantAuth};
use super::defender::{flexible_int, lenient_time};
use super::http::{
    Answer, NoAnswer, PageLimit, RetryPolicy, body_limit, nullable, read_answer, rebase_link,
    retry_after, send_with_retry, string_enum,
};

/// Graph's cap on `$top` for `/security/incidents`.
pub const MAX_INCIDENT_PAGE_SIZE: u32 = 50;

/// The most incident pages one listing reads (10,000 incidents at 50 a page).
pub const MAX_INCIDENT_PAGES: u32 = 200;

/// The application permission `sendMail` needs.
pub const MAIL_SEND: &str = "Mail.Send";
/// The application permission incidents need.
pub const SECURITY_INCIDENT_READ_ALL: &str = "SecurityIncident.Read.All";

/// Names the version 5 UUIDs that make a keyed mail's `Message-ID`.
const MESSAGE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1c_0b52_9d3e_4a87_b6e4_2c9a_51d7_e803);

/// A mail for [`GraphClient::send_mail`]. It goes out as `multipart/alternative`, the
/// plain-text part first and the HTML part second (readers show the last part they can).
#[derive(Debug, Clone, Copy)]
pub struct OutgoingMail<'a> {
    /// One line; non-ASCII is RFC 2047 encoded.
    pub subject: &'a str,
    /// The plain-text part.
    pub text: &'a str,
    /// The HTML part, already escaped by the caller.
    pub html: &'a str,
    /// A stable key (a notification id): every send of one key gets the same `Message-ID`,
    /// so a resend after an uncertain answer is recognisably the same mail. `None` draws a
    /// random one.
    pub key: Option<&'a str>,
}

/// Where and how to call Graph.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// `GRAPH_API_BASE`, e.g. `https://graph.microsoft.com`.
    pub base_url: Url,
    /// `$top` of incident pages (≤ 50).
    pub page_size: u32,
    /// Retries of 429 / 5xx / timeouts.
    pub retry: RetryPolicy,
}

impl GraphSettings {
    /// Settings with pages of 50 and the default retry policy.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            page_size: MAX_INCIDENT_PAGE_SIZE,
            retry: RetryPolicy::default(),
        }
    }
}

/// Why a Graph call failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// 429 after the retries (or `Retry-After` over the cap).
    #[error("Microsoft Graph throttled{}", retry_after.map(|d| format!("; retry in {}s", d.as_secs())).unwrap_or_default())]
    Throttled {
        /// When to try again, if known.
        retry_after: Option<Duration>,
    },
    /// 403: the app lacks `permission` (Mail.Send, SecurityIncident.Read.All), or an
    /// Exchange application access policy blocks the mailbox.
    #[error(
        "Microsoft Graph refused the app: it needs the {permission} application permission (or the mailbox is blocked by an access policy): {message}"
    )]
    Forbidden {
        /// The permission the call needs.
        permission: &'static str,
        /// Graph's code (`ErrorAccessDenied`, `Forbidden`).
        code: String,
        /// Graph's message.
        message: String,
    },
    /// sendMail 404: the sender is not a mailbox of the tenant (`ErrorInvalidUser`,
    /// `MailboxNotEnabledForRESTAPI`).
    #[error("unknown or unusable mailbox '{mailbox}': {message}")]
    MailboxNotFound {
        /// The sender address used.
        mailbox: String,
        /// Graph's code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// sendMail: no recipient, or one that cannot be written in a mail header. Nothing was
    /// sent.
    #[error("unusable mail recipients: {message}")]
    InvalidRecipients {
        /// Which address and why.
        message: String,
    },
    /// Any other 404.
    #[error("not found: {message}")]
    NotFound {
        /// Graph's message.
        message: String,
    },
    /// 400 (e.g. `$top` over 50, bad filter); Graph's message verbatim.
    #[error("Microsoft Graph refused the request ({code}): {message}")]
    BadRequest {
        /// Graph's code (may be empty).
        code: String,
        /// Graph's message.
        message: String,
    },
    /// 401 even with a fresh token.
    #[error("Microsoft Graph refused the token (401): {message}")]
    Unauthorized {
        /// Graph's message.
        message: String,
    },
    /// Server errors or no answer, after the retries.
    #[error("Microsoft Graph unavailable{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Transient {
        /// The last status, if an answer came.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
    /// sendMail may or may not have been accepted (timeout or reset after sending).
    #[error("the mail may or may not have been sent: {message}")]
    Uncertain {
        /// What happened.
        message: String,
    },
    /// No token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An answer this client does not understand.
    #[error("unexpected answer from Microsoft Graph: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
}

impl GraphError {
    /// True when the same call may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::Transient { .. } => true,
            Self::Auth(error) => error.is_transient(),
            _ => false,
        }
    }
}

string_enum! {
    /// Incident and alert severity.
    pub enum Severity {
        /// Unknown.
        UnknownSeverity = "unknown",
        /// Informational.
        Informational = "informational",
        /// Low.
        Low = "low",
        /// Medium.
        Medium = "medium",
        /// High.
        High = "high",
        /// Sentinel for values newer than the client.
        UnknownFutureValue = "unknownFutureValue",
    }
}

impl Severity {
    /// Ordering rank: unknown values rank lowest.
    pub fn rank(&self) -> u8 {
        match self {
            Self::High => 4,
            Self::Medium => 3,
            Self::Low => 2,
            Self::Informational => 1,
            _ => 0,
        }
    }
}

string_enum! {
    /// Incident status.
    pub enum IncidentStatus {
        /// Active.
        Active = "active",
        /// Resolved.
        Resolved = "resolved",
        /// In progress.
        InProgress = "inProgress",
        /// Merged into another incident.
        Redirected = "redirected",
        /// Awaiting action (needs `Prefer: include-unknown-enum-members`).
        AwaitingAction = "awaitingAction",
        /// Sentinel for values newer than the client.
        UnknownFutureValue = "unknownFutureValue",
    }
}

/// A comment on an incident.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IncidentComment {
    /// Text.
    pub comment: Option<String>,
    /// Author (`createdBy` in some docs).
    #[serde(alias = "createdBy")]
    pub created_by_display_name: Option<String>,
    /// When.
    #[serde(with = "lenient_time")]
    pub created_date_time: Option<OffsetDateTime>,
}

/// One piece of alert evidence. Only device evidence is read in detail; other kinds keep
/// their `@odata.type` and common fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Evidence {
    /// e.g. `#microsoft.graph.security.deviceEvidence`.
    #[serde(rename = "@odata.type")]
    pub odata_type: Option<String>,
    /// `suspicious`, `malicious`...
    pub verdict: Option<String>,
    /// `none`, `remediated`...
    pub remediation_status: Option<String>,
    /// When recorded.
    #[serde(with = "lenient_time")]
    pub created_date_time: Option<OffsetDateTime>,
    /// Device evidence: the MDE machine id.
    pub mde_device_id: Option<String>,
    /// Device evidence: the Entra device id.
    pub azure_ad_device_id: Option<String>,
    /// Device evidence: the device name.
    pub device_dns_name: Option<String>,
    /// Device evidence: OS platform.
    pub os_platform: Option<String>,
    /// Device evidence: OS build.
    #[serde(with = "flexible_int")]
    pub os_build: Option<i64>,
    /// Device evidence: health (`active`...).
    pub health_status: Option<String>,
    /// Device evidence: risk score.
    pub risk_score: Option<String>,
    /// Device evidence: onboarding status.
    pub onboarding_status: Option<String>,
    /// Device evidence: device group id.
    #[serde(with = "flexible_int")]
    pub rbac_group_id: Option<i64>,
    /// Device evidence: device group name.
    pub rbac_group_name: Option<String>,
    /// Device evidence: tags.
    #[serde(deserialize_with = "nullable::or_default")]
    pub tags: Vec<String>,
}

impl Evidence {
    /// True for `#microsoft.graph.security.deviceEvidence`.
    pub fn is_device(&self) -> bool {
        self.odata_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("#microsoft.graph.security.deviceEvidence"))
    }
}

/// An alert of an incident (`$expand=alerts`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Alert {
    /// Alert id.
    pub id: String,
    /// Provider's id.
    pub provider_alert_id: Option<String>,
    /// Incident id.
    pub incident_id: Option<String>,
    /// `new`, `inProgress`, `resolved`...
    pub status: Option<String>,
    /// Severity.
    pub severity: Option<Severity>,
    /// Classification.
    pub classification: Option<String>,
    /// Determination.
    pub determination: Option<String>,
    /// e.g. `microsoftDefenderForEndpoint`.
    pub service_source: Option<String>,
    /// e.g. `antivirus`.
    pub detection_source: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Recommended actions.
    pub recommended_actions: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Portal link.
    pub alert_web_url: Option<String>,
    /// Threat name.
    pub threat_display_name: Option<String>,
    /// MITRE techniques.
    #[serde(deserialize_with = "nullable::or_default")]
    pub mitre_techniques: Vec<String>,
    /// Created.
    #[serde(with = "lenient_time")]
    pub created_date_time: Option<OffsetDateTime>,
    /// Last update.
    #[serde(with = "lenient_time")]
    pub last_update_date_time: Option<OffsetDateTime>,
    /// Resolved.
    #[serde(with = "lenient_time")]
    pub resolved_date_time: Option<OffsetDateTime>,
    /// Evidence.
    #[serde(deserialize_with = "nullable::or_default")]
    pub evidence: Vec<Evidence>,
}

/// A Graph security incident.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Incident {
    /// Incident id (a string of digits).
    pub id: String,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Status.
    pub status: Option<IncidentStatus>,
    /// Portal link.
    pub incident_web_url: Option<String>,
    /// Set when merged.
    pub redirect_incident_id: Option<String>,
    /// Title.
    pub display_name: Option<String>,
    /// Created.
    #[serde(with = "lenient_time")]
    pub created_date_time: Option<OffsetDateTime>,
    /// Last update (the watermark of `IncidentWatch`).
    #[serde(with = "lenient_time")]
    pub last_update_date_time: Option<OffsetDateTime>,
    /// Assignee.
    pub assigned_to: Option<String>,
    /// Classification.
    pub classification: Option<String>,
    /// Determination.
    pub determination: Option<String>,
    /// Severity.
    pub severity: Option<Severity>,
    /// Custom tags.
    #[serde(deserialize_with = "nullable::or_default")]
    pub custom_tags: Vec<String>,
    /// System tags.
    #[serde(deserialize_with = "nullable::or_default")]
    pub system_tags: Vec<String>,
    /// Description.
    pub description: Option<String>,
    /// Summary.
    pub summary: Option<String>,
    /// Resolving comment.
    pub resolving_comment: Option<String>,
    /// Last modified by.
    pub last_modified_by: Option<String>,
    /// 0-100 or null.
    #[serde(with = "flexible_int")]
    pub priority_score: Option<i64>,
    /// Comments.
    #[serde(deserialize_with = "nullable::or_default")]
    pub comments: Vec<IncidentComment>,
    /// Alerts (with `$expand=alerts`).
    #[serde(deserialize_with = "nullable::or_default")]
    pub alerts: Vec<Alert>,
}

impl Incident {
    /// MDE machine ids named by the device evidence of the incident's alerts, deduplicated.
    pub fn mde_device_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .alerts
            .iter()
            .flat_map(|alert| alert.evidence.iter())
            .filter(|e| e.is_device())
            .filter_map(|e| e.mde_device_id.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Which incidents [`GraphClient::incidents`] reads.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    /// `lastUpdateDateTime ge since`.
    pub since: Option<OffsetDateTime>,
    /// `$top` override (≤ 50).
    pub page_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct IncidentPage {
    #[serde(default, deserialize_with = "nullable::or_default")]
    value: Vec<Incident>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GraphErrorBody {
    error: Option<GraphErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GraphErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// What a call is, for error mapping.
#[derive(Clone, Copy)]
enum Call<'a> {
    Incidents,
    SendMail { from: &'a str },
}

/// A Microsoft Graph client for one tenant (the customer tenant for incidents, the home
/// tenant's app for sendMail). Cheap to build per invocation.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    settings: GraphSettings,
    credentials: Arc<CredentialProvider>,
    tenant: TenantAuth,
    calls: Arc<AtomicU64>,
}

impl GraphClient {
    /// A client for `tenant`.
    pub fn new(
        http: reqwest::Client,
        settings: GraphSettings,
        credentials: Arc<CredentialProvider>,
        tenant: TenantAuth,
    ) -> Self {
        Self {
            http,
            settings,
            credentials,
            tenant,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// HTTP requests sent so far by this client (retries included).
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Incidents updated since `query.since` with their alerts, newest first, page by page
    /// (`$top` ≤ 50, `$expand=alerts`, following `@odata.nextLink` on the configured host).
    pub fn incidents(
        &self,
        query: IncidentQuery,
    ) -> impl Stream<Item = Result<Vec<Incident>, GraphError>> + Send + '_ {
        let top = query
            .page_size
            .unwrap_or(self.settings.page_size)
            .clamp(1, MAX_INCIDENT_PAGE_SIZE);
        let mut first = self.url("v1.0/security/incidents");
        {
            let mut pairs = first.query_pairs_mut();
            pairs.append_pair("$top", &top.to_string());
            pairs.append_pair("$expand", "alerts");
            if let Some(since) = query.since {
                let since = since
                    .to_offset(time::UtcOffset::UTC)
                    .format(&Rfc3339)
                    .unwrap_or_default();
                pairs.append_pair("$filter", &format!("lastUpdateDateTime ge {since}"));
            }
        }
        let pages = PageLimit::new(MAX_INCIDENT_PAGES);
        futures::stream::try_unfold((Some(first), pages), move |(next, mut pages)| async move {
            let Some(url) = next else {
                return Ok(None);
            };
            pages
                .next(&url)
                .map_err(|message| GraphError::Protocol { message })?;
            let answer = self.send(Method::GET, url, None, Call::Incidents).await?;
            let page: IncidentPage = decode(answer, Call::Incidents)?;
            let next = match page.next_link {
                Some(_) if page.value.is_empty() => None,
                Some(link) => {
                    Some(rebase_link(&self.settings.base_url, &link).ok_or_else(|| {
                        GraphError::Protocol {
                            message: "unusable @odata.nextLink".into(),
                        }
                    })?)
                }
                None => None,
            };
            Ok(Some((page.value, (next, pages))))
        })
    }

    /// Sends `mail` from the mailbox `from` to `to` (`POST /v1.0/users/{from}/sendMail`, 202)
    /// in Graph's MIME form: the body is the base64 of an RFC 5322 message, sent as
    /// `Content-Type: text/plain`.
    ///
    /// The MIME form has no `saveToSentItems`: Exchange saves the mail in the sender's Sent
    /// Items (user-sendmail.md: "This method saves the message in the Sent Items folder").
    /// The JSON form could skip that but carries only one body, HTML or text.
    ///
    /// # Errors
    /// [`GraphError::Forbidden`] naming Mail.Send on 403, [`GraphError::MailboxNotFound`] on
    /// 404 or an unusable `from`, [`GraphError::InvalidRecipients`] before sending,
    /// [`GraphError::Uncertain`] when the request may have been received without an
    /// answer (or a 5xx), [`GraphError::Throttled`] on 429 after the retries, ...
    pub async fn send_mail(
        &self,
        from: &str,
        to: &[String],
        mail: &OutgoingMail<'_>,
    ) -> Result<(), GraphError> {
        let valid_mailbox = is_mail_address(from) && !from.contains(['/', '?', '#', '\\']);
        if !valid_mailbox {
            return Err(GraphError::MailboxNotFound {
                mailbox: from.to_owned(),
                code: "InvalidMailbox".into(),
                message: "not a mailbox address".into(),
            });
        }
        if to.is_empty() {
            return Err(GraphError::InvalidRecipients {
                message: "no recipient".into(),
            });
        }
        if let Some(bad) = to.iter().find(|a| !is_mail_address(a)) {
            return Err(GraphError::InvalidRecipients {
                message: format!("'{}' is not a mail address", bad.escape_debug()),
            });
        }
        let message_id = message_id(from, mail.key);
        let mime = mime_message(from, to, mail, &message_id);
        let body = BASE64.encode(mime);
        let url = self.url(&format!("v1.0/users/{from}/sendMail"));
        let call = Call::SendMail { from };
        let answer = self.send(Method::POST, url, Some(&body), call).await?;
        if answer.status.is_success() {
            tracing::info!(
                recipients = to.len(),
                mail.message_id = %message_id,
                "mail handed to Graph"
            );
            return Ok(());
        }
        if answer.status.is_server_error() {
            return Err(GraphError::Uncertain {
                message: format!("Graph answered {}", answer.status.as_u16()),
            });
        }
        Err(map_status(&answer, call))
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.settings.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}/{path}"));
        url
    }

    /// `mime` is a base64 MIME message, sent as `text/plain` (Graph's MIME form).
    async fn send(
        &self,
        method: Method,
        url: Url,
        mime: Option<&str>,
        call: Call<'_>,
    ) -> Result<Answer, GraphError> {
        let mut refreshed = false;
        loop {
            let answer = self.send_once(&method, &url, mime, call).await?;
            if answer.status == StatusCode::UNAUTHORIZED && !refreshed {
                self.credentials.forget(&self.tenant);
                refreshed = true;
                continue;
            }
            return Ok(answer);
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        mime: Option<&str>,
        call: Call<'_>,
    ) -> Result<Answer, GraphError> {
        let idempotent = matches!(call, Call::Incidents);
        let result = send_with_retry(&self.settings.retry, idempotent, || async {
            let token = self.credentials.token(&self.tenant, Scope::Graph).await?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.token.secret())
                .header(ACCEPT, "application/json")
                .header("Prefer", "include-unknown-enum-members");
            if let Some(mime) = mime {
                request = request
                    .header(CONTENT_TYPE, "text/plain")
                    .body(mime.to_owned());
            }
            Ok::<_, GraphError>(request.send().await)
        })
        .await;
        read_answer(result, body_limit::GRAPH)
            .await
            .map_err(|lost| match lost {
                NoAnswer::Before(error) => error,
                NoAnswer::TooLarge { status, limit } if !idempotent => GraphError::Uncertain {
                    message: NoAnswer::<()>::too_large_message(status, limit),
                },
                NoAnswer::TooLarge { status, limit } => GraphError::Protocol {
                    message: NoAnswer::<()>::too_large_message(status, limit),
                },
                // Only a sendMail that may have been delivered is uncertain; reads are retried.
                NoAnswer::Lost {
                    message,
                    maybe_sent: true,
                    ..
                } if !idempotent => GraphError::Uncertain { message },
                NoAnswer::Lost {
                    message, status, ..
                } => GraphError::Transient {
                    status: status.map(|s| s.as_u16()),
                    message,
                },
            })
    }
}

/// `<uuid@sender-domain>` without the brackets: a version 5 UUID of `key` (the same for every
/// send of one key), else a random one.
fn message_id(from: &str, key: Option<&str>) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .filter(|d| {
            d.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        })
        .unwrap_or("defender-ops.invalid");
    let id = match key {
        Some(key) => uuid::Uuid::new_v5(&MESSAGE_ID_NAMESPACE, key.as_bytes()),
        None => uuid::Uuid::new_v4(),
    };
    format!("{}@{domain}", id.simple())
}

/// The RFC 5322 message: From, To, Subject, Message-ID, Date and MIME-Version headers and a
/// `multipart/alternative` body (text/plain then text/html, UTF-8, the transfer encoding
/// chosen by mail-builder). A mail with one empty body goes out with the other part alone.
fn mime_message(from: &str, to: &[String], mail: &OutgoingMail<'_>, message_id: &str) -> Vec<u8> {
    let recipients: Vec<Address<'_>> = to.iter().map(|a| Address::from(a.as_str())).collect();
    let mut builder = MessageBuilder::new()
        .from(from)
        .to(recipients)
        .subject(mail.subject)
        .message_id(message_id);
    if !mail.text.trim().is_empty() || mail.html.trim().is_empty() {
        builder = builder.text_body(mail.text);
    }
    if !mail.html.trim().is_empty() {
        builder = builder.html_body(mail.html);
    }
    let mut out = Vec::new();
    builder.serialize(&mut out);
    out
}

fn decode<T: serde::de::DeserializeOwned>(answer: Answer, call: Call<'_>) -> Result<T, GraphError> {
    if !answer.status.is_success() {
        return Err(map_status(&answer, call));
    }
    serde_json::from_slice(&answer.body).map_err(|error| GraphError::Protocol {
        message: format!("undecodable body ({}): {error}", answer.status.as_u16()),
    })
}

fn map_status(answer: &Answer, call: Call<'_>) -> GraphError {
    let parsed: Option<GraphErrorDetail> = serde_json::from_slice::<GraphErrorBody>(&answer.body)
        .ok()
        .and_then(|b| b.error);
    let (code, message) = match parsed {
        Some(detail) => (
            detail.code.unwrap_or_default(),
            detail.message.unwrap_or_default(),
        ),
        None => (
            String::new(),
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(500)
                .collect(),
        ),
    };
    match (answer.status, call) {
        (StatusCode::BAD_REQUEST, _) => GraphError::BadRequest { code, message },
        (StatusCode::UNAUTHORIZED, _) => GraphError::Unauthorized { message },
        (StatusCode::FORBIDDEN, Call::SendMail { .. }) => GraphError::Forbidden {
            permission: MAIL_SEND,
            code,
            message,
        },
        (StatusCode::FORBIDDEN, Call::Incidents) => GraphError::Forbidden {
            permission: SECURITY_INCIDENT_READ_ALL,
            code,
            message,
        },
        (StatusCode::NOT_FOUND, Call::SendMail { from }) => GraphError::MailboxNotFound {
            mailbox: from.to_owned(),
            code,
            message,
        },
        (StatusCode::NOT_FOUND, _) => GraphError::NotFound { message },
        (StatusCode::TOO_MANY_REQUESTS, _) => GraphError::Throttled {
            retry_after: retry_after(&answer.headers, SystemTime::now()),
        },
        (status, _) if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => {
            GraphError::Transient {
                status: Some(status.as_u16()),
                message,
            }
        }
        (status, _) => GraphError::Protocol {
            message: format!("status {}: {message}", status.as_u16()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contracts/defender-api");

    #[test]
    fn incidents_parse_with_alerts_and_device_evidence() {
        let path = format!("{FIXTURES}/incidents.json");
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        let page: IncidentPage = serde_json::from_str(&body).expect("page");
        assert_eq!(page.value.len(), 3);
        let first = &page.value[0];
        assert_eq!(first.severity, Some(Severity::High));
        assert_eq!(first.status, Some(IncidentStatus::Active));
        assert_eq!(
            first.mde_device_ids(),
            vec!["a3f9c2e17b5d48e09c1f6a2b3d4e5f60718293ab"]
        );
        assert_eq!(page.value[1].status, Some(IncidentStatus::InProgress));
        assert!(page.next_link.is_some());
    }

    fn mail<'a>(key: Option<&'a str>) -> OutgoingMail<'a> {
        OutgoingMail {
            subject: "[Defender] Offboarding Rejected: pc-01 – Zürich",
            text: "Offboarding Rejected\n\nMessage: <b>OsPlatformNotSupported</b> & co\n",
            html: "<p>Message: &lt;b&gt;OsPlatformNotSupported&lt;/b&gt; &amp; co – Zürich</p>",
            key,
        }
    }

    #[test]
    fn a_mail_is_multipart_alternative_with_the_text_part_before_the_html_part() {
        let to = vec![
            "secops@contoso.com".to_owned(),
            "soc@contoso.com".to_owned(),
        ];
        let raw = mime_message("noreply@contoso.com", &to, &mail(None), "id-1@contoso.com");
        let raw = String::from_utf8(raw).expect("MIME is ASCII");
        let (headers, body) = raw.split_once("\r\n\r\n").expect("headers end");
        assert!(headers.contains("From: <noreply@contoso.com>"), "{headers}");
        assert!(headers.contains("secops@contoso.com") && headers.contains("soc@contoso.com"));
        assert!(
            headers.contains("Message-ID: <id-1@contoso.com>"),
            "{headers}"
        );
        assert!(headers.contains("Date: "), "{headers}");
        assert!(headers.contains("MIME-Version: 1.0"), "{headers}");
        assert!(
            headers.contains("Subject: =?utf-8?"),
            "non-ASCII subject encoded: {headers}"
        );
        assert!(headers.contains("multipart/alternative"), "{headers}");
        let text_at = body
            .find("text/plain; charset=\"utf-8\"")
            .expect("a text part");
        let html_at = body
            .find("text/html; charset=\"utf-8\"")
            .expect("an HTML part");
        assert!(text_at < html_at, "text first, HTML second");
        assert!(raw.is_ascii(), "bodies are transfer-encoded");
    }

    #[test]
    fn a_keyed_mail_keeps_its_message_id_and_an_unkeyed_one_does_not() {
        let first = message_id("noreply@contoso.com", Some("offboard-r1-Rejected"));
        assert_eq!(
            first,
            message_id("noreply@contoso.com", Some("offboard-r1-Rejected"))
        );
        assert!(first.ends_with("@contoso.com"), "{first}");
        assert_ne!(
            first,
            message_id("noreply@contoso.com", Some("offboard-r2-Rejected"))
        );
        assert_ne!(
            message_id("noreply@contoso.com", None),
            message_id("noreply@contoso.com", None)
        );
    }

    #[test]
    fn sendmail_errors_name_the_permission_and_the_mailbox() {
        let forbidden = Answer {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied. Check credentials and try again."}}"#),
        };
        let error = map_status(
            &forbidden,
            Call::SendMail {
                from: "a@contoso.com",
            },
        );
        assert!(matches!(
            error,
            GraphError::Forbidden {
                permission: MAIL_SEND,
                ..
            }
        ));
        assert!(error.to_string().contains("Mail.Send"));
        let unknown = Answer {
            status: StatusCode::NOT_FOUND,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"error":{"code":"ErrorInvalidUser","message":"The requested user 'x' is invalid."}}"#),
        };
        assert!(matches!(
            map_status(&unknown, Call::SendMail { from: "x@contoso.com" }),
            GraphError::MailboxNotFound { mailbox, code, .. } if mailbox == "x@contoso.com" && code == "ErrorInvalidUser"
        ));
    }
}
