//! Teams Workflows trigger URLs (202 for any JSON, asynchronous "flow failures" recorded) and
//! the outbound webhook sink.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use url::Url;

use crate::Shared;
use crate::mde::{param, query_pairs};
use crate::server::json_response;
use crate::state::{SinkEvent, TeamsPost};

const ADAPTIVE: &str = "application/vnd.microsoft.card.adaptive";
const MAX_BYTES: usize = 28 * 1024;

/// The trigger URL of workflow `id`, in the Power Platform shape.
pub(crate) fn workflow_url(base: &Url, id: &str, sig: &str) -> Url {
    let mut url = base
        .join(&format!(
            "teams/workflows/{id}/triggers/manual/paths/invoke"
        ))
        .unwrap_or_else(|_| base.clone());
    url.query_pairs_mut()
        .append_pair("api-version", "1")
        .append_pair("sp", "/triggers/manual/run")
        .append_pair("sv", "1.0")
        .append_pair("sig", sig);
    url
}

fn flow_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

fn version_ok(v: &str) -> bool {
    let mut parts = v.split('.');
    let major: u32 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(u32::MAX);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) <= (1, 4)
}

fn has_submit(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(o) => {
            o.get("type").and_then(|t| t.as_str()) == Some("Action.Submit")
                || o.values().any(has_submit)
        }
        serde_json::Value::Array(a) => a.iter().any(has_submit),
        _ => false,
    }
}

/// Why the Workflows flow would fail on this body, if it would.
pub(crate) fn flow_failure(body: &serde_json::Value, size: usize) -> Option<String> {
    if size > MAX_BYTES {
        return Some(format!(
            "The message is {size} bytes, over the ~28 KB Teams limit"
        ));
    }
    if body.get("type").and_then(|t| t.as_str()) != Some("message") {
        return Some("Property 'type' must be 'message'".into());
    }
    let Some(attachments) = body.get("attachments").and_then(|a| a.as_array()) else {
        return Some(
            "The execution of template action 'Send_each_adaptive_card' failed: the result of the evaluation of 'foreach' expression '@triggerOutputs()?['body']?['attachments']' is of type 'Null'. The result must be a valid array.".into(),
        );
    };
    for a in attachments {
        if a.get("contentType").and_then(|t| t.as_str()) != Some(ADAPTIVE) {
            return Some(format!("Attachment contentType must be '{ADAPTIVE}'"));
        }
        let content = a.get("content");
        if content.and_then(|c| c.get("type")).and_then(|t| t.as_str()) != Some("AdaptiveCard") {
            return Some("Property 'type' must be 'AdaptiveCard'".into());
        }
        let version = content
            .and_then(|c| c.get("version"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !version_ok(version) {
            return Some(format!(
                "Adaptive Card version '{version}' is not supported (1.4 or lower)"
            ));
        }
        if content.is_some_and(has_submit) {
            return Some("Action.Submit is not supported by Workflows".into());
        }
    }
    None
}

/// `POST /teams/workflows/{id}/triggers/manual/paths/invoke?...&sig=...`
pub(crate) async fn teams(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let q = query_pairs(raw.as_deref());
    let expected = sh.lock().workflows.get(&id).cloned();
    let Some(expected) = expected else {
        return flow_error(
            StatusCode::NOT_FOUND,
            "WorkflowNotFound",
            &format!("The workflow '{id}' could not be found."),
        );
    };
    if param(&q, "sig") != Some(expected.as_str()) {
        return flow_error(
            StatusCode::UNAUTHORIZED,
            "DirectApiAuthorizationRequired",
            "The request must be authenticated only by Shared Access scheme.",
        );
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return flow_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content is not valid and could not be deserialized.",
        );
    };
    let failure = flow_failure(&v, body.len());
    sh.lock().teams.push(TeamsPost {
        workflow_id: id,
        body: v,
        flow_failure: failure,
        at: OffsetDateTime::now_utc(),
    });
    StatusCode::ACCEPTED.into_response()
}

/// `POST /sink/{id}`: records body and headers, answers 200.
pub(crate) async fn sink(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            let value = if k == http::header::AUTHORIZATION {
                "REDACTED".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect();
    sh.lock().sink.push(SinkEvent {
        sink_id: id,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: OffsetDateTime::now_utc(),
    });
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_card_passes_and_broken_cards_are_flagged() {
        let ok: serde_json::Value = serde_json::from_str(include_str!(
            "../../../contracts/defender-api/teams-webhook.request.json"
        ))
        .expect("fixture parses");
        assert_eq!(flow_failure(&ok, 100), None);
        let mut v15 = ok.clone();
        v15["attachments"][0]["content"]["version"] = "1.5".into();
        assert!(flow_failure(&v15, 100).is_some());
        let none = serde_json::json!({"type": "message"});
        assert!(flow_failure(&none, 10).is_some_and(|m| m.contains("Null")));
    }
}
