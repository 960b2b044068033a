//! Typed views of an invocation request: HTTP, timer and queue triggers.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::encoding::{decode_scalar, decode_string};

/// Why an invocation envelope can't be used. The handler answers it with a non-2xx, which
/// the host records as a failed invocation (the payload is the host's, not the caller's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the invocation body is not JSON: {0}")]
    NotJson(String),
    #[error("the invocation body is not a JSON object with Data and Metadata")]
    NotAnObject,
    #[error("the invocation has no '{0}' binding in Data")]
    MissingBinding(String),
    #[error("binding '{binding}': {problem}")]
    BadBinding { binding: String, problem: String },
}

/// One invocation as the host sent it.
#[derive(Debug, Clone)]
pub struct Invocation {
    function: String,
    invocation_id: String,
    data: Map<String, Value>,
    metadata: Map<String, Value>,
}

impl Invocation {
    /// Parses the body of `POST /{function}`.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the body is not a JSON object.
    pub fn parse(
        function: &str,
        invocation_id: Option<&str>,
        body: &[u8],
    ) -> Result<Self, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        // Newtonsoft writes "Data"/"Metadata"; accept other casings as the host's reader does.
        let mut take = |name: &str| -> Result<Map<String, Value>, EnvelopeError> {
            let key = top.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
            match key.and_then(|k| top.remove(&k)) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m),
                Some(_) => Err(EnvelopeError::NotAnObject),
            }
        };
        let data = take("Data")?;
        let metadata = take("Metadata")?;
        Ok(Self {
            function: function.to_owned(),
            invocation_id: invocation_id
                .filter(|s| !s.is_empty())
                .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
            data,
            metadata,
        })
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// The host's `X-Azure-Functions-InvocationId` (a fresh id when the header was missing).
    pub fn invocation_id(&self) -> &str {
        &self.invocation_id
    }

    fn binding(&self, name: &str) -> Result<&Value, EnvelopeError> {
        self.data
            .get(name)
            .ok_or_else(|| EnvelopeError::MissingBinding(name.to_owned()))
    }

    fn bad(binding: &str, problem: impl Into<String>) -> EnvelopeError {
        EnvelopeError::BadBinding {
            binding: binding.to_owned(),
            problem: problem.into(),
        }
    }

    /// The HTTP trigger request in `Data.<binding>`.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the binding is missing or not shaped like the host's request.
    pub fn http(&self, binding: &str) -> Result<HttpRequestData, EnvelopeError> {
        let Value::Object(req) = self.binding(binding)? else {
            return Err(Self::bad(binding, "is not an object"));
        };
        let field = |k: &str| {
            req.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        };
        let string = |k: &str| -> Result<String, EnvelopeError> {
            match field(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(Self::bad(
                    binding,
                    format!("{k} is missing or not a string"),
                )),
            }
        };
        let url = string("Url")?;
        let method = string("Method")?.to_ascii_uppercase();
        let query = match field("Query") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => string_map(m),
            // Hosts before late 2020 sent Query as JSON text.
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => string_map(&m),
                _ => return Err(Self::bad(binding, "Query is not an object")),
            },
            Some(_) => return Err(Self::bad(binding, "Query is not an object")),
        };
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match field("Headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let values = match v {
                        Value::Array(items) => items.iter().map(scalar_text).collect(),
                        other => vec![scalar_text(other)],
                    };
                    headers
                        .entry(k.to_ascii_lowercase())
                        .or_default()
                        .extend(values);
                }
            }
            Some(_) => return Err(Self::bad(binding, "Headers is not an object")),
        }
        let params = match field("Params") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::Null => None,
                        Value::String(s) if s.is_empty() => None,
                        other => Some(scalar_text(other)),
                    };
                    (k.clone(), value)
                })
                .collect(),
            Some(_) => return Err(Self::bad(binding, "Params is not an object")),
        };
        let body = match field("Body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // A JSON body read by an older host arrives parsed; keep its text.
            Some(other) => Some(other.to_string()),
        };
        let auth_level = field("Identities").and_then(auth_level_claim);
        Ok(HttpRequestData {
            url,
            method,
            query,
            headers,
            params,
            body,
            auth_level,
        })
    }

    /// The timer trigger data in `Data.<binding>`.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the binding is missing or not an object.
    pub fn timer(&self, binding: &str) -> Result<TimerInfo, EnvelopeError> {
        let Value::Object(t) = self.binding(binding)? else {
            return Err(Self::bad(binding, "is not an object"));
        };
        let is_past_due = match t.get("IsPastDue").map(decode_scalar) {
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let last = t
            .get("ScheduleStatus")
            .and_then(|s| s.get("Last"))
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            // The host writes 0001-01-01 before the first run.
            .filter(|d| d.year() > 1);
        Ok(TimerInfo { is_past_due, last })
    }

    /// The queue trigger message in `Data.<binding>` with its metadata.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the binding is missing or not a string.
    pub fn queue(&self, binding: &str) -> Result<QueueMessage, EnvelopeError> {
        let text = match self.binding(binding)? {
            Value::String(s) => decode_string(s),
            _ => return Err(Self::bad(binding, "is not a string")),
        };
        let meta = |k: &str| self.metadata.get(k).map(decode_scalar);
        let dequeue_count = match meta("DequeueCount") {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
            Some(Value::String(s)) => s.parse().unwrap_or(1),
            _ => 1,
        };
        let id = match meta("Id") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        Ok(QueueMessage {
            text,
            dequeue_count,
            id,
        })
    }
}

/// The host's `.../claims/authlevel` claim (`Admin` for the master key, `Function` for a
/// function key) from `Identities`: an array of serialized `ClaimsIdentity` objects, or
/// that array as JSON text from hosts before Oct 2020. The host checked the key already.
fn auth_level_claim(identities: &Value) -> Option<String> {
    const AUTH_LEVEL: &str = "http://schemas.microsoft.com/2017/07/functions/claims/authlevel";
    let parsed;
    let list = match identities {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            parsed.as_array()?
        }
        Value::Array(items) => items,
        _ => return None,
    };
    list.iter()
        .filter_map(|identity| identity.get("Claims")?.as_array())
        .flatten()
        .find(|claim| claim.get("Type").and_then(Value::as_str) == Some(AUTH_LEVEL))
        .and_then(|claim| claim.get("Value")?.as_str())
        .map(str::to_owned)
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn string_map(m: &Map<String, Value>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect()
}

/// The caller's HTTP request, as the host forwards it in payload mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestData {
    pub url: String,
    /// Upper case (`GET`, `PATCH`).
    pub method: String,
    pub query: BTreeMap<String, String>,
    /// Lower-cased names; a header may carry several values.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Route parameters; `None` for an optional one the route did not match.
    pub params: BTreeMap<String, Option<String>>,
    /// Raw body text; absent when the request had no `Content-Length`.
    pub body: Option<String>,
    /// The key level the host authenticated (`Admin`, `Function`), from the `authlevel`
    /// claim of `Identities`; `None` for an anonymous call.
    pub auth_level: Option<String>,
}

impl HttpRequestData {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A route parameter that matched (non-empty).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Option::as_deref)
    }
}

/// What a timer invocation tells the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerInfo {
    /// A catch-up run of a missed occurrence.
    pub is_past_due: bool,
    /// The previous run, if any.
    pub last: Option<OffsetDateTime>,
}

/// A queue message with the metadata the handler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The message text, decoded.
    pub text: String,
    /// 1 on first delivery; the host moves the message to `<queue>-poison` after
    /// `maxDequeueCount` failed deliveries.
    pub dequeue_count: u32,
    pub id: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/contracts/functions-host/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    #[test]
    fn the_http_fixture_parses_into_a_typed_request() {
        let inv = Invocation::parse(
            "OffboardDevice",
            Some("abc"),
            &fixture("http-trigger.request.json"),
        )
        .unwrap();
        let req = inv.http("req").unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.query("source"), Some("itsm"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.param("id"),
            Some("7c1f0b9d5a3e2f4c6b8a9d0e1f2a3b4c5d6e7f80")
        );
        assert!(req.body.as_deref().unwrap().contains("Leaver HR-4471"));
        assert_eq!(inv.invocation_id(), "abc");
        // Core Tools authenticates every call as Admin (CONTRACT.md, "Identities").
        assert_eq!(req.auth_level.as_deref(), Some("Admin"));
    }

    #[test]
    fn the_key_level_comes_from_the_authlevel_claim_in_either_encoding() {
        let claims = r#"[{"AuthenticationType":"WebJobsAuthLevel","IsAuthenticated":true,"Claims":[{"Type":"http://schemas.microsoft.com/2017/07/functions/claims/authlevel","Value":"Function"},{"Type":"http://schemas.microsoft.com/2017/07/functions/claims/keyid","Value":"default"}]}]"#;
        let as_array: Value = serde_json::from_str(claims).unwrap();
        for identities in [as_array, Value::String(claims.into())] {
            let body = serde_json::json!({"Data":{"req":{"Url":"http://h/api/x","Method":"GET","Identities":identities}},"Metadata":{}});
            let req = Invocation::parse("X", None, body.to_string().as_bytes())
                .unwrap()
                .http("req")
                .unwrap();
            assert_eq!(req.auth_level.as_deref(), Some("Function"));
        }
        let anonymous = br#"{"Data":{"req":{"Url":"http://h/api/x","Method":"GET","Identities":[{"AuthenticationType":null,"IsAuthenticated":false,"Claims":[]}]}},"Metadata":{}}"#;
        let req = Invocation::parse("X", None, anonymous)
            .unwrap()
            .http("req")
            .unwrap();
        assert_eq!(req.auth_level, None);
    }

    #[test]
    fn the_queue_fixture_decodes_its_text_and_dequeue_count() {
        let inv =
            Invocation::parse("SyncTenant", None, &fixture("queue-trigger.request.json")).unwrap();
        let msg = inv.queue("queueItem").unwrap();
        assert_eq!(
            msg.text,
            r#"{"tenantId":"8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c","runId":"sync-20241105-0915","full":true,"attempt":1}"#
        );
        assert_eq!(msg.dequeue_count, 1);
        assert_eq!(
            msg.id.as_deref(),
            Some("3c9a5e1f-7b2d-4f60-8e4a-0d5b6c7e8f91")
        );
    }

    #[test]
    fn the_timer_fixture_parses() {
        let inv =
            Invocation::parse("SyncDevices", None, &fixture("timer-trigger.request.json")).unwrap();
        let t = inv.timer("timer").unwrap();
        assert!(!t.is_past_due);
        assert_eq!(t.last.unwrap().year(), 2024);
    }

    #[test]
    fn a_first_timer_run_has_no_previous_run() {
        let body = br#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00+00:00","Next":"2024-11-05T09:15:00+00:00","LastUpdated":"0001-01-01T00:00:00+00:00"},"IsPastDue":false}},"Metadata":{}}"#;
        let t = Invocation::parse("X", None, body)
            .unwrap()
            .timer("timer")
            .unwrap();
        assert_eq!(t.last, None);
    }

    #[test]
    fn malformed_envelopes_are_errors_not_panics() {
        assert!(matches!(
            Invocation::parse("X", None, b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            Invocation::parse("X", None, b"[1,2]"),
            Err(EnvelopeError::NotAnObject)
        ));
        assert!(matches!(
            Invocation::parse("X", None, br#"{"Data":5}"#),
            Err(EnvelopeError::NotAnObject)
        ));
        let inv = Invocation::parse("X", None, br#"{"Data":{"req":{"Url":1}}}"#).unwrap();
        assert!(matches!(
            inv.http("req"),
            Err(EnvelopeError::BadBinding { .. })
        ));
        assert!(matches!(
            inv.queue("message"),
            Err(EnvelopeError::MissingBinding(_))
        ));
    }

    #[test]
    fn an_unmatched_optional_route_parameter_is_none() {
        let body = br#"{"Data":{"req":{"Url":"http://h/api/devices/t","Method":"get","Query":{},"Headers":{},"Params":{"tenantId":"t","machineId":null}}},"Metadata":{}}"#;
        let req = Invocation::parse("Devices", None, body)
            .unwrap()
            .http("req")
            .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.param("tenantId"), Some("t"));
        assert_eq!(req.param("machineId"), None);
        assert_eq!(req.body, None);
    }

    mod arbitrary_input {
        use super::super::Invocation;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                ".{0,20}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6)
                        .prop_map(serde_json::Value::from),
                    proptest::collection::btree_map("[A-Za-z]{1,8}", inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// The envelope decoder never panics, whatever the bytes.
            #[test]
            fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(inv) = Invocation::parse("F", None, &body) {
                    let _ = inv.http("req");
                    let _ = inv.timer("timer");
                    let _ = inv.queue("message");
                }
            }

            /// Any JSON in Data/Metadata decodes or errors, never panics.
            #[test]
            fn arbitrary_json_envelopes_never_panic(data in json_value(), metadata in json_value(), req in json_value()) {
                let body = serde_json::json!({"Data": {"req": req, "timer": data.clone(), "message": data}, "Metadata": metadata});
                let bytes = serde_json::to_vec(&body).expect("json");
                if let Ok(inv) = Invocation::parse("F", Some("id"), &bytes) {
                    let _ = inv.http("req");
                    let _ = inv.timer("timer");
                    let _ = inv.queue("message");
                }
            }
        }
    }
}
