//! `TableError`, and the parsing of the service's error bodies (OData JSON, Azurite's variants, XML).

use serde::Deserialize;

/// Which key of an entity a [`TableError::InvalidKey`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    PartitionKey,
    RowKey,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PartitionKey => "PartitionKey",
            Self::RowKey => "RowKey",
        })
    }
}

/// Everything a Table Storage call can fail with. Callers branch on the semantic variants
/// (`NotFound`, `Conflict`, `PreconditionFailed`, `BatchFailed`); the rest are infrastructure.
///
/// `after_retry` on `Conflict` and `PreconditionFailed` is true when an earlier attempt of the
/// same call may have reached the service (timeout, reset, 5xx): the conflict may then be
/// caused by that attempt's own success, e.g. an insert whose first response was lost.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// 404: the entity or the table does not exist (`code`: `ResourceNotFound`, `TableNotFound`).
    #[error("not found ({code})")]
    NotFound { code: String },
    /// 409: `EntityAlreadyExists`, `TableBeingDeleted`, ...
    #[error("conflict ({code}){}", if *.after_retry { " after a retried attempt" } else { "" })]
    Conflict { code: String, after_retry: bool },
    /// 412: the entity's ETag no longer matches `If-Match`.
    #[error("precondition failed: the entity changed{}", if *.after_retry { " (after a retried attempt)" } else { "" })]
    PreconditionFailed { after_retry: bool },
    /// An operation of an entity-group transaction failed; the service applied none of them.
    /// `after_retry` as for `Conflict`: a lost first attempt may have applied the whole batch.
    #[error("batch operation {index} failed with {status} {code}: {message}")]
    BatchFailed {
        index: usize,
        status: u16,
        code: String,
        message: String,
        after_retry: bool,
    },
    /// A batch refused before sending (size, mixed partitions).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A PartitionKey or RowKey the service would refuse or misread.
    #[error("invalid {kind}: {reason}")]
    InvalidKey { kind: KeyKind, reason: &'static str },
    /// A table name that is not alphanumeric, 3-63 characters, starting with a letter.
    #[error("invalid table name {name:?}: alphanumeric, 3-63 characters, starting with a letter")]
    InvalidTableName { name: String },
    /// A continuation token that this module did not produce.
    #[error("invalid continuation token")]
    InvalidContinuation,
    /// A connection string or service URI that cannot be used (never contains the key).
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// 429, or 503 `ServerBusy`, still answered after every retry.
    #[error("throttled by the table service (status {status})")]
    Throttled { status: u16 },
    /// Any other answer of the service that is not a success.
    #[error("table service answered {status} {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
    },
    /// Connection, TLS or timeout failure after every retry.
    #[error("table service unreachable")]
    Transport(#[source] reqwest::Error),
    /// A token could not be obtained, or the service refused the credentials (401/403).
    #[error("table service authentication failed: {0}")]
    Auth(String),
    /// A body or a property that does not decode as expected.
    #[error("cannot decode table data: {0}")]
    Decode(String),
}

/// `code` and `message` of an error answer, whatever its format.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Deserialize)]
struct JsonEnvelope {
    #[serde(rename = "odata.error", alias = "error")]
    error: JsonError,
}

#[derive(Deserialize)]
struct JsonError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: Option<JsonMessage>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonMessage {
    Text(String),
    Localized { value: String },
}

/// Parses `{"odata.error":{"code","message":{"lang","value"}}}`, its `"error"` / plain-string
/// message variants, or the XML `<error><code/><message/></error>` (any case); falls back to
/// the `x-ms-error-code` header and the raw text.
pub(crate) fn parse_error_body(body: &[u8], header_code: Option<&str>) -> ErrorBody {
    let mut parsed = if let Ok(env) = serde_json::from_slice::<JsonEnvelope>(body) {
        ErrorBody {
            code: env.error.code,
            message: match env.error.message {
                Some(JsonMessage::Text(t) | JsonMessage::Localized { value: t }) => t,
                None => String::new(),
            },
        }
    } else {
        let text = String::from_utf8_lossy(body);
        match (xml_element(&text, "code"), xml_element(&text, "message")) {
            (None, None) => ErrorBody {
                code: String::new(),
                message: text.chars().take(512).collect(),
            },
            (code, message) => ErrorBody {
                code: code.unwrap_or_default(),
                message: message.unwrap_or_default(),
            },
        }
    };
    if parsed.code.is_empty() {
        parsed.code = header_code.unwrap_or_default().to_owned();
    }
    parsed
}

/// The text of the first `<name ...>text</name>` element, matching the name case-insensitively.
fn xml_element(text: &str, name: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let open = format!("<{name}");
    let mut from = 0;
    while let Some(rel) = lower[from..].find(&open) {
        let start = from + rel + open.len();
        let next = lower[start..].chars().next()?;
        if next == '>' || next.is_whitespace() {
            let content_start = start + lower[start..].find('>')? + 1;
            let content_end = content_start + lower[content_start..].find(&format!("</{name}"))?;
            return Some(text[content_start..content_end].trim().to_owned());
        }
        from = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_error_with_localized_message_is_parsed() {
        let body = br#"{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US","value":"The specified entity already exists.\nRequestId:x"}}}"#;
        let e = parse_error_body(body, None);
        assert_eq!(e.code, "EntityAlreadyExists");
        assert!(
            e.message
                .starts_with("The specified entity already exists.")
        );
    }

    #[test]
    fn error_with_plain_message_and_error_key_is_parsed() {
        let e = parse_error_body(br#"{"error":{"code":"X","message":"plain"}}"#, None);
        assert_eq!((e.code.as_str(), e.message.as_str()), ("X", "plain"));
    }

    #[test]
    fn xml_errors_of_both_casings_are_parsed() {
        let odata = r#"<?xml version="1.0" encoding="utf-8"?><error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"><code>TableNotFound</code><message xml:lang="en-US">The table specified does not exist.</message></error>"#;
        let e = parse_error_body(odata.as_bytes(), None);
        assert_eq!(e.code, "TableNotFound");
        assert_eq!(e.message, "The table specified does not exist.");
        let storage =
            "<Error><Code>AuthenticationFailed</Code><Message>Server failed</Message></Error>";
        let e = parse_error_body(storage.as_bytes(), None);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("AuthenticationFailed", "Server failed")
        );
    }

    #[test]
    fn an_unparseable_body_keeps_the_header_code_and_the_text() {
        let e = parse_error_body(b"gateway exploded", Some("ServerBusy"));
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("ServerBusy", "gateway exploded")
        );
    }
}
