//! Microsoft Graph routes: security incidents (`$top` ≤ 50, `$filter`, `$expand=alerts`,
//! `@odata.nextLink`) and `sendMail` in its JSON and MIME forms, with Graph's error shape.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use time::OffsetDateTime;

use crate::mde::{next_link, paging, param, query_pairs};
use crate::model::Incident;
use crate::odata::{self, Filterable, Val, opt_str};
use crate::server::{Auth, json_response};
use crate::state::{MailFormat, SentMail};
use crate::token::Claims;
use crate::{Shared, audiences, roles};

const MAX_TOP: usize = 50;
const INCIDENT_ROLES: &[&str] = &[
    roles::SECURITY_INCIDENT_READ_ALL,
    "SecurityIncident.ReadWrite.All",
];

fn inner_error() -> serde_json::Value {
    let id = uuid::Uuid::new_v4().to_string();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    serde_json::json!({
        "date": OffsetDateTime::now_utc().format(&fmt).unwrap_or_default(),
        "request-id": id,
        "client-request-id": id,
    })
}

fn with_request_id(mut resp: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        resp.headers_mut().insert("request-id", v.clone());
        resp.headers_mut().insert("client-request-id", v);
    }
    resp
}

/// A Graph error answer (`{"error":{"code","message","innerError"}}`).
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    with_request_id(json_response(
        status,
        &serde_json::json!({"error": {"code": code, "message": message, "innerError": inner_error()}}),
    ))
}

/// The Graph error without `innerError`, as the sendMail fixtures show it.
fn mail_error(status: StatusCode, code: &str, message: &str) -> Response {
    with_request_id(json_response(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    ))
}

fn authenticate(auth: &Auth) -> Result<Claims, Response> {
    let Some(c) = &auth.claims else {
        let message = if auth.had_bearer {
            "Lifetime validation failed, the token is expired or invalid."
        } else {
            "Access token is empty."
        };
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        ));
    };
    if c.aud != audiences::GRAPH {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Invalid audience.",
        ));
    }
    Ok(c.clone())
}

impl Filterable for Incident {
    fn field(&self, name: &str) -> Option<Val> {
        Some(match name {
            "lastUpdateDateTime" => Val::Date(self.last_update_date_time),
            "createdDateTime" => Val::Date(self.created_date_time),
            "status" => Val::Str(self.status.clone()),
            "severity" => Val::Str(self.severity.clone()),
            "assignedTo" => opt_str(&self.assigned_to),
            "classification" => Val::Str(self.classification.clone()),
            "determination" => Val::Str(self.determination.clone()),
            _ => return None,
        })
    }
}

fn bad_query(message: &str) -> Response {
    with_request_id(json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": {
            "code": "",
            "message": message,
            "details": [],
            "innerError": inner_error(),
        }}),
    ))
}

fn incident_json(i: &Incident, expand: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(i).unwrap_or_default();
    if !expand && let Some(o) = v.as_object_mut() {
        o.remove("alerts");
    }
    v
}

fn graph_ok(body: &serde_json::Value) -> Response {
    let mut resp = with_request_id(json_response(StatusCode::OK, body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        ),
    );
    h.insert("odata-version", HeaderValue::from_static("4.0"));
    resp
}

fn expand_alerts(q: &[(String, String)]) -> Result<bool, Response> {
    match param(q, "$expand") {
        None => Ok(false),
        Some(e) if e.trim().eq_ignore_ascii_case("alerts") => Ok(true),
        Some(e) => Err(bad_query(&format!(
            "Could not find a property named '{e}' on type 'microsoft.graph.security.incident'."
        ))),
    }
}

/// `GET /v1.0/security/incidents`
pub(crate) async fn list_incidents(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = match authenticate(&auth) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !c.has_any_role(INCIDENT_ROLES) {
        return forbidden_incidents(&c);
    }
    let q = query_pairs(raw.as_deref());
    let (top, skip) = match paging(&q, MAX_TOP, MAX_TOP) {
        Ok(p) => p,
        Err(Some(v)) => {
            return bad_query(&format!(
                "The query specified in the URI is not valid. The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{v}'."
            ));
        }
        Err(None) => {
            return bad_query(
                "The query specified in the URI is not valid. Invalid $top or $skip.",
            );
        }
    };
    let expand = match expand_alerts(&q) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let filter = match param(&q, "$filter").map(odata::parse).transpose() {
        Ok(f) => f,
        Err(e) => return bad_query(&format!("Invalid filter clause: {e}")),
    };
    let st = sh.lock();
    let mut items: Vec<Incident> = st
        .tenants
        .get(&c.tid)
        .map(|t| t.incidents.clone())
        .unwrap_or_default();
    drop(st);
    if let (Some(f), Some(first)) = (&filter, items.first())
        && let Err(e) = f.check_fields(first)
    {
        return bad_query(&format!("Invalid filter clause: {e}"));
    }
    items.retain(|i| filter.as_ref().is_none_or(|f| f.matches(i)));
    items.sort_by(|a, b| {
        b.created_date_time
            .cmp(&a.created_date_time)
            .then_with(|| b.id.cmp(&a.id))
    });
    let total = items.len();
    let page: Vec<serde_json::Value> = items
        .iter()
        .skip(skip)
        .take(top)
        .map(|i| incident_json(i, expand))
        .collect();
    let mut body = serde_json::json!({
        "@odata.context": format!(
            "{}/v1.0/$metadata#security/incidents{}",
            sh.base_str(),
            if expand { "(alerts())" } else { "" }
        ),
        "value": page,
    });
    if skip + page.len() < total && top > 0 {
        body["@odata.nextLink"] = serde_json::Value::String(next_link(
            &sh,
            "v1.0/security/incidents",
            &q,
            skip + page.len(),
        ));
    }
    graph_ok(&body)
}

fn forbidden_incidents(c: &Claims) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "Missing application roles. API required roles: {}. Application roles: {}.",
            INCIDENT_ROLES.join(","),
            c.roles.join(",")
        ),
    )
}

/// `GET /v1.0/security/incidents/{id}`
pub(crate) async fn get_incident(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = match authenticate(&auth) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !c.has_any_role(INCIDENT_ROLES) {
        return forbidden_incidents(&c);
    }
    let q = query_pairs(raw.as_deref());
    let expand = match expand_alerts(&q) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let found = sh
        .lock()
        .tenants
        .get(&c.tid)
        .and_then(|t| t.incidents.iter().find(|i| i.id == id).cloned());
    match found {
        Some(i) => {
            let mut v = incident_json(&i, expand);
            v["@odata.context"] = serde_json::Value::String(format!(
                "{}/v1.0/$metadata#security/incidents/$entity",
                sh.base_str()
            ));
            graph_ok(&v)
        }
        None => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Incident {id} was not found."),
        ),
    }
}

fn addresses(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.get("message")
        .and_then(|m| m.get(key))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    r.pointer("/emailAddress/address")?
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /v1.0/users/{upn}/sendMail`, in either of Graph's forms: JSON
/// (`Content-Type: application/json`) or MIME (`Content-Type: text/plain`, the base64 of an
/// RFC 5322 message).
pub(crate) async fn user_action(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path((upn, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !action.eq_ignore_ascii_case("sendMail") {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{action}'."),
        );
    }
    let c = match authenticate(&auth) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !c.has_any_role(&[roles::MAIL_SEND]) {
        return mail_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    let known = sh
        .lock()
        .tenants
        .get(&c.tid)
        .is_some_and(|t| t.mailboxes.contains(&upn.to_ascii_lowercase()));
    if !known {
        return mail_error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{upn}' is invalid."),
        );
    }
    let is_mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    let received = if is_mime {
        mime_mail(&upn, &body)
    } else {
        json_mail(&body)
    };
    let received = match received {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mail = SentMail {
        tenant: c.tid.clone(),
        from: upn,
        subject: received.subject,
        to: received.to,
        cc: received.cc,
        format: if is_mime {
            MailFormat::Mime
        } else {
            MailFormat::Json
        },
        text: received.text,
        html: received.html,
        content_type: received.content_type,
        parts: received.parts,
        message_id: received.message_id,
        body: received.body,
        at: OffsetDateTime::now_utc(),
    };
    sh.lock().mails.push(mail);
    with_request_id(StatusCode::ACCEPTED.into_response())
}

/// What a sendMail body says, in either form.
#[derive(Default)]
struct Received {
    subject: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
    text: Option<String>,
    html: Option<String>,
    content_type: Option<String>,
    parts: Vec<String>,
    message_id: Option<String>,
    body: serde_json::Value,
}

fn json_mail(body: &[u8]) -> Result<Received, Response> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let Some(v) = parsed.filter(|v| v.get("message").is_some_and(serde_json::Value::is_object))
    else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "Cannot read the request body: a JSON object with 'message' is expected.",
        ));
    };
    let content = v
        .pointer("/message/body/content")
        .and_then(|s| s.as_str())
        .map(str::to_owned);
    let is_html = v
        .pointer("/message/body/contentType")
        .and_then(|s| s.as_str())
        .is_some_and(|t| t.eq_ignore_ascii_case("html"));
    let (text, html) = if is_html {
        (None, content)
    } else {
        (content, None)
    };
    Ok(Received {
        subject: v
            .pointer("/message/subject")
            .and_then(|s| s.as_str())
            .map(str::to_owned),
        to: addresses(&v, "toRecipients"),
        cc: addresses(&v, "ccRecipients"),
        text,
        html,
        body: v,
        ..Received::default()
    })
}

/// Graph's answer to MIME content it cannot use (the code of `ErrorMimeContentInvalid`; the
/// message of the "send MIME" page, with what is missing).
fn invalid_mime(what: &str) -> Response {
    mail_error(
        StatusCode::BAD_REQUEST,
        "ErrorMimeContentInvalid",
        &format!(
            "MIME content does not contain all required information, malformed formatting, or empty: {what}."
        ),
    )
}

fn mime_mail(upn: &str, body: &[u8]) -> Result<Received, Response> {
    // Like .NET's Convert.FromBase64String: whitespace (line breaks) is skipped, padding is
    // required.
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(raw) = BASE64.decode(&compact) else {
        return Err(mail_error(
            StatusCode::BAD_REQUEST,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        ));
    };
    let Some(message) = MessageParser::default()
        .parse(&raw)
        .filter(|m| !m.headers().is_empty())
    else {
        return Err(invalid_mime("no message"));
    };
    let list = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|a| a.address().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
    };
    let Some(from) = list(message.from()).into_iter().next() else {
        return Err(invalid_mime("no From address"));
    };
    if !from.eq_ignore_ascii_case(upn) {
        return Err(mail_error(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        ));
    }
    let to = list(message.to());
    if to.is_empty() {
        return Err(invalid_mime("no To address"));
    }
    let mut received = Received {
        subject: message.subject().map(str::to_owned),
        to,
        cc: list(message.cc()),
        content_type: message.content_type().map(mime_type),
        message_id: message.message_id().map(str::to_owned),
        body: serde_json::json!({ "mime": String::from_utf8_lossy(&raw) }),
        ..Received::default()
    };
    for part in &message.parts {
        if part.is_multipart() {
            continue;
        }
        let kind = part
            .content_type()
            .map_or_else(|| "text/plain".to_owned(), mime_type);
        match &part.body {
            PartType::Text(text) if kind == "text/plain" && received.text.is_none() => {
                received.text = Some(text.to_string());
            }
            PartType::Html(html) if received.html.is_none() => {
                received.html = Some(html.to_string());
            }
            _ => {}
        }
        received.parts.push(kind);
    }
    Ok(received)
}

/// `type/subtype`, lower case.
fn mime_type(ct: &mail_parser::ContentType<'_>) -> String {
    match ct.subtype() {
        Some(sub) => format!("{}/{sub}", ct.ctype()).to_ascii_lowercase(),
        None => ct.ctype().to_ascii_lowercase(),
    }
}
