//! Interprets the handler's answer as the host does (CONTRACT §4): what counts as a failed
//! invocation, `Outputs`/`Logs`/`ReturnValue`, the HTTP response of `res`, and the
//! conversions applied to queue output values before they are enqueued.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::payload::{dotnet_date_text, dotnet_text};

/// A successful handler answer (2xx, JSON object).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerAnswer {
    /// `Outputs` (binding name → value); case-sensitive keys.
    pub outputs: Map<String, Value>,
    /// `Logs` lines.
    pub logs: Vec<String>,
    /// `ReturnValue`.
    pub return_value: Value,
}

/// Checks the handler's HTTP answer; `Err` holds why the host would fail the invocation.
///
/// # Errors
/// Non-2xx, a content type other than JSON, an empty body or `null` (the real host would
/// hang until `functionTimeout`), invalid JSON, a non-object, or `Logs`/`Outputs` of the
/// wrong shape.
pub fn parse_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<HandlerAnswer, String> {
    if !(200..300).contains(&status) {
        return Err(format!(
            "Response status code does not indicate success: {status}"
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "the handler answered an empty body: the real host would hang until functionTimeout \
             and then restart the handler"
                .to_string(),
        );
    }
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" && media != "text/json" {
        return Err(format!(
            "No MediaTypeFormatter is available to read the answer with media type {media:?}"
        ));
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("Invalid HttpResponseMessage: not JSON ({e})"))?;
    let object = match json {
        Value::Object(o) => o,
        Value::Null => {
            return Err(
                "the handler answered null: the real host would hang until functionTimeout and \
                 then restart the handler"
                    .to_string(),
            );
        }
        other => {
            return Err(format!(
                "the answer must be a JSON object, got {}",
                kind(&other)
            ));
        }
    };
    let mut answer = HandlerAnswer::default();
    for (key, value) in object {
        match key.to_ascii_lowercase().as_str() {
            "outputs" => match value {
                Value::Object(o) => answer.outputs = o,
                Value::Null => {}
                other => return Err(format!("Outputs must be an object, got {}", kind(&other))),
            },
            "logs" => match value {
                Value::Array(lines) => {
                    for line in lines {
                        match line {
                            Value::Null => {}
                            Value::Array(_) | Value::Object(_) => {
                                return Err(
                                    "Logs must be an array of strings (an element is an object or array)"
                                        .to_string(),
                                );
                            }
                            other => answer.logs.push(dotnet_text(&other).unwrap_or_default()),
                        }
                    }
                }
                Value::Null => {}
                other => return Err(format!("Logs must be an array, got {}", kind(&other))),
            },
            "returnvalue" => answer.return_value = value,
            _ => {}
        }
    }
    Ok(answer)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The HTTP response a caller receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// 500 with an empty body: what the caller sees when the invocation failed.
    pub fn failed() -> Self {
        Self {
            status: 500,
            headers: vec![],
            body: vec![],
        }
    }
}

fn get_ci<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(_) | Value::Number(_) => dotnet_text(value).unwrap_or_default(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// Maps the value of an `http` output binding (`Outputs.res`) to the caller's response;
/// `None` (no `res` in Outputs) is 200 `{}`.
///
/// # Errors
/// When `res` is not an object (or a string holding one) or `statusCode` is not numeric.
pub fn http_answer(res: Option<&Value>) -> Result<HttpAnswer, String> {
    let Some(res) = res else {
        return Ok(HttpAnswer {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: b"{}".to_vec(),
        });
    };
    let parsed;
    let object = match res {
        Value::Object(o) => o,
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => {
                parsed = o;
                &parsed
            }
            _ => {
                return Err(
                    "Failed while trying to Deserialize to httpOutputBindingResponse: res is a plain string"
                        .to_string(),
                );
            }
        },
        other => {
            return Err(format!(
                "Failed while trying to Deserialize to httpOutputBindingResponse: res is {}",
                kind(other)
            ));
        }
    };
    let status = match get_ci(object, "statusCode") {
        None | Some(Value::Null) => 200,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (100..1000).contains(n))
            .ok_or_else(|| format!("statusCode {n} is not an HTTP status"))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..1000).contains(n))
            .ok_or_else(|| format!("statusCode {s:?} is not an HTTP status"))?,
        Some(other) => return Err(format!("statusCode is {}", kind(other))),
    };
    let mut headers = Vec::new();
    match get_ci(object, "headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                headers.push((name.clone(), value_text(value)));
            }
        }
        Some(other) => return Err(format!("res.headers is {}", kind(other))),
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
    }
    let body = get_ci(object, "body").map(value_text).unwrap_or_default();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.into_bytes(),
    })
}

/// Maps an HTTP `$return` value: an object with a `body` key is a response, anything else
/// is written as the body with 200.
///
/// # Errors
/// As [`http_answer`].
pub fn http_return_answer(value: &Value) -> Result<HttpAnswer, String> {
    match value {
        Value::Object(o) if get_ci(o, "body").is_some() => http_answer(Some(value)),
        Value::Null => Ok(HttpAnswer {
            status: 204,
            headers: vec![],
            body: vec![],
        }),
        other => Ok(HttpAnswer {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: value_text(other).into_bytes(),
        }),
    }
}

/// .NET's `Convert.FromBase64String`: whitespace ignored, length a multiple of 4, padding
/// only at the end.
fn dotnet_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.len().is_multiple_of(4) {
        return None;
    }
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    engine.decode(compact).ok()
}

fn element_message(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(
            dotnet_date_text(s)
                .unwrap_or_else(|| s.clone())
                .into_bytes(),
        ),
        other => Some(value_text(other).into_bytes()),
    }
}

/// The messages a queue output value becomes (CONTRACT §4.4): an array of strings is
/// written verbatim; a single base64-looking string is decoded; a JSON-looking string is
/// re-serialized indented (an array becomes several messages); objects are indented JSON;
/// scalars their .NET text; ISO-date strings are reformatted as Newtonsoft reads them.
pub fn queue_messages(value: &Value, binary: bool) -> Vec<Vec<u8>> {
    match value {
        Value::Null => vec![],
        Value::Array(items) => items.iter().filter_map(element_message).collect(),
        Value::String(s) => {
            if !binary && let Some(bytes) = dotnet_base64(s) {
                return vec![bytes];
            }
            let trimmed = s.trim_start();
            if trimmed.starts_with('{') || trimmed.starts_with('[') {
                match serde_json::from_str::<Value>(s) {
                    Ok(Value::Array(items)) => {
                        return items.iter().filter_map(element_message).collect();
                    }
                    Ok(other @ Value::Object(_)) => return vec![value_text(&other).into_bytes()],
                    _ => {}
                }
            }
            vec![
                dotnet_date_text(s)
                    .unwrap_or_else(|| s.clone())
                    .into_bytes(),
            ]
        }
        other => element_message(other).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ok(body: &str) -> Result<HandlerAnswer, String> {
        parse_answer(
            200,
            Some("application/json; charset=utf-8"),
            body.as_bytes(),
        )
    }

    fn texts(messages: Vec<Vec<u8>>) -> Vec<String> {
        messages
            .into_iter()
            .map(|m| String::from_utf8(m).unwrap())
            .collect()
    }

    #[test]
    fn the_fixture_answer_is_accepted() {
        let body = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../contracts/functions-host/http-trigger.response.json"
        ))
        .unwrap();
        let answer = ok(&body).unwrap();
        assert_eq!(answer.logs.len(), 1);
        let http = http_answer(answer.outputs.get("res")).unwrap();
        assert_eq!(http.status, 202);
        assert!(http.headers.contains(&(
            "Location".into(),
            "/api/offboard-requests/2f6d8e4a-91b3-4c7d-a5e0-6b1f2c3d4e5f".into()
        )));
        assert!(
            String::from_utf8(http.body)
                .unwrap()
                .starts_with("{\"requestId\"")
        );
    }

    #[test]
    fn failures_are_what_the_host_treats_as_failed_invocations() {
        assert!(parse_answer(400, Some("application/json"), b"{}").is_err());
        assert!(parse_answer(200, Some("text/plain"), b"{}").is_err());
        assert!(parse_answer(200, None, b"{}").is_err());
        assert!(ok("").is_err());
        assert!(ok("null").is_err());
        assert!(ok("{not json").is_err());
        assert!(ok("[1]").is_err());
        assert!(ok(r#"{"Logs": [{"a": 1}]}"#).is_err());
        assert!(ok(r#"{"Outputs": "x"}"#).is_err());
        assert!(parse_answer(200, Some("text/json"), b"{}").is_ok());
    }

    #[test]
    fn top_level_names_are_case_insensitive_but_output_keys_are_not() {
        let answer =
            ok(r#"{"outputs": {"Res": {"statusCode": 201}}, "logs": ["a", 1, true]}"#).unwrap();
        assert!(answer.outputs.contains_key("Res"));
        assert!(!answer.outputs.contains_key("res"));
        assert_eq!(answer.logs, vec!["a", "1", "True"]);
    }

    #[test]
    fn res_maps_status_headers_and_body() {
        let a = http_answer(Some(
            &json!({"statusCode": "404", "headers": {"X-A": "b"}, "body": "nope"}),
        ))
        .unwrap();
        assert_eq!(a.status, 404);
        assert!(
            a.headers
                .contains(&("Content-Type".into(), "text/plain; charset=utf-8".into()))
        );
        assert_eq!(a.body, b"nope");
        let a = http_answer(Some(&json!({"body": {"a": 1}}))).unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"{\n  \"a\": 1\n}");
        let a = http_answer(None).unwrap();
        assert_eq!((a.status, a.body), (200, b"{}".to_vec()));
    }

    #[test]
    fn a_res_that_is_not_an_object_fails_the_invocation() {
        assert!(http_answer(Some(&json!("SomeBlah"))).is_err());
        assert!(http_answer(Some(&json!(5))).is_err());
        assert!(http_answer(Some(&json!({"statusCode": "abc"}))).is_err());
        assert!(http_answer(Some(&json!("{\"statusCode\": 201}"))).is_ok());
    }

    #[test]
    fn http_return_needs_a_body_key_to_be_a_response() {
        let a = http_return_answer(&json!({"statusCode": 201, "body": "x"})).unwrap();
        assert_eq!(a.status, 201);
        let a = http_return_answer(&json!({"statusCode": 201})).unwrap();
        assert_eq!(a.status, 200);
    }

    #[test]
    fn an_array_of_strings_is_enqueued_verbatim() {
        let v = json!(["{\"a\":1}", "plain", "dGVzdA=="]);
        assert_eq!(
            texts(queue_messages(&v, false)),
            vec!["{\"a\":1}", "plain", "dGVzdA=="]
        );
    }

    #[test]
    fn a_single_base64_looking_string_is_decoded() {
        assert_eq!(
            queue_messages(&json!("dGVzdA=="), false),
            vec![b"test".to_vec()]
        );
        // "test" is valid base64 too: the handler bug shows up as junk bytes.
        assert_eq!(
            queue_messages(&json!("test"), false),
            vec![vec![0xb5, 0xeb, 0x2d]]
        );
    }

    #[test]
    fn a_single_json_string_is_reserialized_indented() {
        assert_eq!(
            texts(queue_messages(&json!("{\"a\":1}"), false)),
            vec!["{\n  \"a\": 1\n}"]
        );
        assert_eq!(
            texts(queue_messages(&json!("[\"x y\",\"z w\"]"), false)),
            vec!["x y", "z w"]
        );
    }

    #[test]
    fn objects_scalars_and_dates_convert_like_dotnet() {
        assert_eq!(
            texts(queue_messages(&json!({"a": 1}), false)),
            vec!["{\n  \"a\": 1\n}"]
        );
        assert_eq!(
            texts(queue_messages(&json!([{"a": 1}, {"b": 2}]), false)).len(),
            2
        );
        assert_eq!(texts(queue_messages(&json!(5), false)), vec!["5"]);
        assert_eq!(texts(queue_messages(&json!(true), false)), vec!["True"]);
        assert_eq!(
            texts(queue_messages(&json!("hello world"), false)),
            vec!["hello world"]
        );
        assert_eq!(
            texts(queue_messages(&json!(["2024-11-05T09:15:01Z"]), false)),
            vec!["11/05/2024 09:15:01"]
        );
        assert!(queue_messages(&Value::Null, false).is_empty());
    }
}
