//! Building the answer the host expects: `{"Outputs", "Logs", "ReturnValue"}`.
//!
//! Rules from CONTRACT §4: `res` is an object with a numeric `statusCode`, string header
//! values and a string `body`; queue outputs are arrays of strings (the only form the host
//! neither base64-decodes nor re-serialises); `Outputs` keys are binding names, case-sensitive.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The caller-facing HTTP answer, carried in `Outputs.res`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl HttpResponse {
    /// A JSON answer.
    #[must_use]
    pub fn json<T: Serialize>(status: u16, body: &T) -> Self {
        let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
        let mut headers = BTreeMap::new();
        headers.insert(
            "Content-Type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        );
        Self {
            status,
            headers,
            body,
        }
    }

    /// Adds or replaces a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_owned(), value.into());
        self
    }

    fn to_value(&self) -> Value {
        json!({
            "statusCode": self.status,
            "headers": self.headers,
            "body": self.body,
        })
    }
}

/// The handler's answer to one invocation.
#[derive(Debug, Clone, Default)]
pub struct InvocationResponse {
    outputs: Map<String, Value>,
    logs: Vec<String>,
}

impl InvocationResponse {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An answer carrying only the HTTP response in the `res` binding.
    #[must_use]
    pub fn http(res: &HttpResponse) -> Self {
        Self::new().with_http("res", res)
    }

    /// Sets an HTTP output binding.
    #[must_use]
    pub fn with_http(mut self, binding: &str, res: &HttpResponse) -> Self {
        self.outputs.insert(binding.to_owned(), res.to_value());
        self
    }

    /// Sets a queue output binding: one message per string, written verbatim by the host.
    /// An empty list writes nothing (the key is left out).
    #[must_use]
    pub fn with_queue(mut self, binding: &str, messages: Vec<String>) -> Self {
        if !messages.is_empty() {
            self.outputs.insert(
                binding.to_owned(),
                Value::Array(messages.into_iter().map(Value::String).collect()),
            );
        }
        self
    }

    /// Adds a line to the host's invocation log (Information level, after the fact).
    #[must_use]
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    /// The messages set on a queue binding (empty when none).
    pub fn queue_messages(&self, binding: &str) -> Vec<&str> {
        match self.outputs.get(binding) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The JSON body for the host. Always a non-empty object: an empty body would hang
    /// the invocation until `functionTimeout`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "Outputs": self.outputs,
            "Logs": self.logs,
            "ReturnValue": Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_http_answer_has_the_shape_of_the_fixture() {
        let res =
            HttpResponse::json(202, &json!({"requestId": "r1"})).with_header("Location", "/x");
        let answer = InvocationResponse::http(&res)
            .with_queue("jobs", vec![r#"{"requestId":"r1"}"#.to_owned()])
            .log("accepted")
            .to_json();
        let fixture: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/contracts/functions-host/http-trigger.response.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        // Same top-level keys and the same kinds of value in `res` and in a queue output.
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&answer), keys(&fixture));
        assert_eq!(
            keys(&answer["Outputs"]["res"]),
            keys(&fixture["Outputs"]["res"])
        );
        assert!(answer["Outputs"]["res"]["statusCode"].is_u64());
        assert!(answer["Outputs"]["res"]["body"].is_string());
        assert!(answer["Outputs"]["res"]["headers"]["Location"].is_string());
        assert!(answer["Outputs"]["jobs"][0].is_string());
        assert!(fixture["Outputs"]["offboardQueue"][0].is_string());
    }

    #[test]
    fn an_empty_queue_output_is_left_out() {
        let answer = InvocationResponse::new()
            .with_queue("notes", vec![])
            .to_json();
        assert_eq!(answer["Outputs"], json!({}));
        assert_eq!(answer["ReturnValue"], Value::Null);
    }
}
