//! Builds payload-mode invocation bodies (`{"Data", "Metadata"}`) exactly as the host does
//! (see `contracts/functions-host/CONTRACT.md` §3): .NET-style double encoding of
//! strings and scalars, `sys` binding data, HTTP request objects, identities, TimerInfo and
//! queue binding data.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

/// Host version sent in `X-Azure-Functions-HostVersion` and `User-Agent`.
pub const HOST_VERSION: &str = "4.1037.1.23605";

/// A string JSON-encoded once more and carried as a string (`hello` → `"\"hello\""`).
pub fn json_encoded(text: &str) -> Value {
    Value::String(Value::String(text.to_string()).to_string())
}

/// A .NET `DateTime` string as `ToString()` writes it with the invariant culture, when
/// Newtonsoft would have read `text` as a date (`yyyy-MM-ddTHH:mm:ss...`); `None` otherwise.
pub fn dotnet_date_text(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if !(19..=40).contains(&b.len()) || b.get(10) != Some(&b'T') || !b[0].is_ascii_digit() {
        return None;
    }
    const FORMAT: &str = "%m/%d/%Y %H:%M:%S";
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        // `Z` stays UTC; an offset becomes host-local time, which is UTC in Azure.
        return Some(t.with_timezone(&Utc).format(FORMAT).to_string());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.format(FORMAT).to_string())
}

/// A JSON value converted to a string the way .NET does (`true` → `True`, dates reformatted);
/// `None` for objects, arrays and null.
pub fn dotnet_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(dotnet_date_text(s).unwrap_or_else(|| s.clone())),
        Value::Bool(true) => Some("True".to_string()),
        Value::Bool(false) => Some("False".to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One top-level property of a JSON-object body or message as it lands in `Metadata`:
/// scalars stringified .NET-style then JSON-encoded, objects kept, arrays and nulls dropped.
pub fn metadata_property(value: &Value) -> Option<Value> {
    match value {
        Value::Object(_) => Some(value.clone()),
        other => dotnet_text(other).map(|t| json_encoded(&t)),
    }
}

/// Adds each top-level property of `text` (if it is a JSON object) to `metadata`.
pub fn add_object_properties(metadata: &mut Map<String, Value>, text: &str) {
    if let Ok(Value::Object(props)) = serde_json::from_str::<Value>(text) {
        for (k, v) in props {
            if let Some(v) = metadata_property(&v) {
                metadata.insert(k, v);
            }
        }
    }
}

/// `UtcNow` of `sys`: ISO UTC with 7 fractional digits and `Z`.
pub fn utc_now_text(t: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

/// A `DateTimeOffset` at seconds precision: `2024-11-12T09:15:01+00:00`.
pub fn offset_seconds_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Newtonsoft's round-trip format of a local `DateTime` on a UTC host: up to 7 fractional
/// digits with trailing zeros trimmed, then `+00:00` (`2024-11-05T09:15:00+00:00`).
pub fn roundtrip_text(t: DateTime<Utc>) -> String {
    let ticks = t.timestamp_subsec_nanos() / 100;
    let fraction = format!("{ticks:07}");
    let fraction = fraction.trim_end_matches('0');
    let dot = if fraction.is_empty() { "" } else { "." };
    format!("{}{dot}{fraction}+00:00", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// The `sys` binding data.
pub fn sys(function: &str, now: DateTime<Utc>) -> Value {
    json!({
        "MethodName": function,
        "UtcNow": utc_now_text(now),
        "RandGuid": uuid::Uuid::new_v4().to_string(),
    })
}

/// Who the host authenticated a request as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No (valid) key.
    Anonymous,
    /// A function key, by name.
    FunctionKey(String),
    /// The admin (master) key.
    AdminKey,
}

/// The serialized `ClaimsIdentity` list of `Data.req.Identities`.
pub fn identities(caller: &Caller) -> Value {
    const NAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
    const ROLE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";
    let claim = |kind: &str, value: &str| {
        json!({
            "Issuer": "LOCAL AUTHORITY",
            "OriginalIssuer": "LOCAL AUTHORITY",
            "Properties": {},
            "Type": format!("http://schemas.microsoft.com/2017/07/functions/claims/{kind}"),
            "Value": value,
            "ValueType": "http://www.w3.org/2001/XMLSchema#string",
        })
    };
    let (auth_type, authenticated, claims) = match caller {
        Caller::Anonymous => (Value::Null, false, vec![]),
        Caller::FunctionKey(name) => (
            json!("WebJobsAuthLevel"),
            true,
            vec![
                claim("authlevel", "Function"),
                claim("invoke", "true"),
                claim("keyid", name),
            ],
        ),
        Caller::AdminKey => (
            json!("WebJobsAuthLevel"),
            true,
            vec![
                claim("authlevel", "Admin"),
                claim("invoke", "true"),
                claim("keyid", "master"),
            ],
        ),
    };
    json!([{
        "AuthenticationType": auth_type,
        "IsAuthenticated": authenticated,
        "Actor": null,
        "BootstrapContext": null,
        "Claims": claims,
        "Label": null,
        "Name": null,
        "NameClaimType": NAME,
        "RoleClaimType": ROLE,
    }])
}

/// The canonical casing Kestrel reports for well-known headers; others keep the (lower)
/// case in which they arrived.
pub fn header_display_name(lower: &str) -> String {
    const KNOWN: &[&str] = &[
        "Accept",
        "Accept-Charset",
        "Accept-Encoding",
        "Accept-Language",
        "Authorization",
        "Cache-Control",
        "Connection",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-MD5",
        "Content-Type",
        "Cookie",
        "Date",
        "Expect",
        "From",
        "Host",
        "If-Match",
        "If-Modified-Since",
        "If-None-Match",
        "If-Range",
        "If-Unmodified-Since",
        "Keep-Alive",
        "Max-Forwards",
        "Origin",
        "Pragma",
        "Proxy-Authorization",
        "Range",
        "Referer",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "User-Agent",
        "Via",
        "Warning",
        "traceparent",
        "tracestate",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(lower))
        .map_or_else(|| lower.to_string(), |k| (*k).to_string())
}

/// What the front end received, reduced to what the payload needs.
#[derive(Debug, Clone)]
pub struct HttpRequestData {
    /// Method, e.g. `POST`.
    pub method: String,
    /// `http://{Host}{path}{?query}` as received.
    pub url: String,
    /// Raw query string (without `?`), if any.
    pub query: Option<String>,
    /// Headers in arrival order (names as displayed).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpRequestData {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> u64 {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Builds the HTTP-trigger payload (`Data.<binding>` and `Metadata`, CONTRACT §3.3).
pub fn http_payload(
    function: &str,
    binding: &str,
    request: &HttpRequestData,
    params: &Map<String, Value>,
    caller: &Caller,
    now: DateTime<Utc>,
) -> Value {
    let pairs = request.query_pairs();
    // Data.req.Query: repeated keys comma-joined; Metadata.Query: last value wins.
    let mut query_joined: Vec<(String, String)> = Vec::new();
    let mut query_last = Map::new();
    for (k, v) in &pairs {
        match query_joined.iter_mut().find(|(qk, _)| qk == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(v);
            }
            None => query_joined.push((k.clone(), v.clone())),
        }
        query_last.insert(k.clone(), Value::String(v.clone()));
    }
    let query_object: Map<String, Value> = query_joined
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();

    let mut headers_arrays = Map::new();
    let mut headers_joined = Map::new();
    for (name, value) in &request.headers {
        let entry = headers_arrays
            .entry(name.clone())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(values) = entry {
            values.push(Value::String(value.clone()));
        }
        let joined = headers_joined
            .entry(name.clone())
            .or_insert_with(|| Value::String(String::new()));
        if let Value::String(s) = joined {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(value);
        }
    }

    let mut req = Map::new();
    req.insert("Url".into(), Value::String(request.url.clone()));
    req.insert("Method".into(), Value::String(request.method.clone()));
    req.insert("Query".into(), Value::Object(query_object));
    req.insert("Headers".into(), Value::Object(headers_arrays));
    req.insert("Params".into(), Value::Object(params.clone()));
    req.insert("Identities".into(), identities(caller));
    let has_body = request.content_length() > 0 && !request.body.is_empty();
    if has_body {
        let content_type = request
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = if content_type.starts_with("application/octet-stream")
            || content_type.starts_with("multipart/")
        {
            STANDARD.encode(&request.body)
        } else {
            String::from_utf8_lossy(&request.body).into_owned()
        };
        req.insert("Body".into(), Value::String(body));
    }

    let mut metadata = Map::new();
    if has_body {
        add_object_properties(&mut metadata, &String::from_utf8_lossy(&request.body));
    }
    for (k, v) in &query_last {
        if k != "code"
            && let Value::String(v) = v
        {
            metadata.insert(k.clone(), json_encoded(v));
        }
    }
    for (k, v) in params {
        if let Value::String(v) = v {
            metadata.insert(k.clone(), json_encoded(v));
        }
    }
    metadata.insert("Query".into(), Value::Object(query_last));
    metadata.insert("Headers".into(), Value::Object(headers_joined));
    metadata.insert("sys".into(), sys(function, now));

    let mut data = Map::new();
    data.insert(binding.to_string(), Value::Object(req));
    json!({"Data": data, "Metadata": metadata})
}

/// `ScheduleStatus` of a timer: the status *before* this run.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleStatus {
    /// Previous run (`0001-01-01` on the first run).
    pub last: Option<DateTime<Utc>>,
    /// This occurrence.
    pub next: DateTime<Utc>,
    /// When the status was last written (`0001-01-01` on the first run).
    pub last_updated: Option<DateTime<Utc>>,
}

/// Builds the timer payload (CONTRACT §3.4); `status` is `None` when `useMonitor` is false.
pub fn timer_payload(
    function: &str,
    binding: &str,
    adjust_for_dst: bool,
    status: Option<ScheduleStatus>,
    is_past_due: bool,
    now: DateTime<Utc>,
) -> Value {
    const NEVER: &str = "0001-01-01T00:00:00+00:00";
    let text = |t: Option<DateTime<Utc>>| t.map_or_else(|| NEVER.to_string(), roundtrip_text);
    let status = status.map_or(Value::Null, |s| {
        json!({
            "Last": text(s.last),
            "Next": roundtrip_text(s.next),
            "LastUpdated": text(s.last_updated),
        })
    });
    let mut data = Map::new();
    data.insert(
        binding.to_string(),
        json!({
            "Schedule": {"AdjustForDST": adjust_for_dst},
            "ScheduleStatus": status,
            "IsPastDue": is_past_due,
        }),
    );
    json!({"Data": data, "Metadata": {"sys": sys(function, now)}})
}

/// Queue message fields for a queue-trigger payload.
#[derive(Debug, Clone)]
pub struct QueueTriggerData {
    /// Message id (`None` for an admin-API invocation without a queue message).
    pub id: Option<String>,
    /// Pop receipt.
    pub pop_receipt: Option<String>,
    /// Dequeue count.
    pub dequeue_count: u64,
    /// Insertion time.
    pub insertion_time: Option<DateTime<Utc>>,
    /// Expiration time (`None` = never: `9999-12-31T23:59:59+00:00`).
    pub expiration_time: Option<DateTime<Utc>>,
    /// Next visible time.
    pub next_visible_time: Option<DateTime<Utc>>,
    /// The decoded message bytes.
    pub bytes: Vec<u8>,
}

/// Builds the queue-trigger payload (CONTRACT §3.5).
pub fn queue_payload(
    function: &str,
    binding: &str,
    binary: bool,
    message: &QueueTriggerData,
    now: DateTime<Utc>,
) -> Value {
    let text = String::from_utf8_lossy(&message.bytes).into_owned();
    let value = if binary {
        Value::String(STANDARD.encode(&message.bytes))
    } else {
        json_encoded(&text)
    };
    let mut metadata = Map::new();
    metadata.insert(
        "DequeueCount".into(),
        Value::String(message.dequeue_count.to_string()),
    );
    metadata.insert(
        "ExpirationTime".into(),
        Value::String(message.expiration_time.map_or_else(
            || "9999-12-31T23:59:59+00:00".to_string(),
            offset_seconds_text,
        )),
    );
    if let Some(id) = &message.id {
        metadata.insert("Id".into(), json_encoded(id));
    }
    if let Some(t) = message.insertion_time {
        metadata.insert(
            "InsertionTime".into(),
            Value::String(offset_seconds_text(t)),
        );
    }
    if let Some(t) = message.next_visible_time {
        metadata.insert(
            "NextVisibleTime".into(),
            Value::String(offset_seconds_text(t)),
        );
    }
    if let Some(receipt) = &message.pop_receipt {
        metadata.insert("PopReceipt".into(), json_encoded(receipt));
    }
    metadata.insert("sys".into(), sys(function, now));
    add_object_properties(&mut metadata, &text);
    let mut data = Map::new();
    data.insert(binding.to_string(), value);
    json!({"Data": data, "Metadata": metadata})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn strings_are_encoded_twice() {
        assert_eq!(json_encoded("hello"), json!("\"hello\""));
        assert_eq!(
            json_encoded(r#"{"a":"b"}"#),
            Value::String(r#""{\"a\":\"b\"}""#.to_string())
        );
    }

    #[test]
    fn scalars_are_stringified_the_dotnet_way_then_encoded() {
        assert_eq!(metadata_property(&json!(true)), Some(json!("\"True\"")));
        assert_eq!(metadata_property(&json!(false)), Some(json!("\"False\"")));
        assert_eq!(metadata_property(&json!(1)), Some(json!("\"1\"")));
        assert_eq!(metadata_property(&json!("x")), Some(json!("\"x\"")));
        assert_eq!(metadata_property(&json!({"a": 1})), Some(json!({"a": 1})));
        assert_eq!(metadata_property(&json!([1])), None);
        assert_eq!(metadata_property(&Value::Null), None);
    }

    #[test]
    fn iso_dates_are_reformatted_like_newtonsoft_reads_them() {
        assert_eq!(
            dotnet_date_text("2024-11-05T09:15:01Z").as_deref(),
            Some("11/05/2024 09:15:01")
        );
        assert_eq!(
            dotnet_date_text("2024-11-05T10:15:01+01:00").as_deref(),
            Some("11/05/2024 09:15:01")
        );
        assert_eq!(
            dotnet_date_text("2024-11-05T09:15:01.123").as_deref(),
            Some("11/05/2024 09:15:01")
        );
        assert_eq!(dotnet_date_text("2024-11-05"), None);
        assert_eq!(dotnet_date_text("not a date at all, really"), None);
    }

    #[test]
    fn times_are_written_in_the_hosts_formats() {
        let t = Utc.with_ymd_and_hms(2024, 11, 5, 9, 15, 0).unwrap();
        assert_eq!(roundtrip_text(t), "2024-11-05T09:15:00+00:00");
        let t2 = t + chrono::Duration::nanoseconds(4_971_300);
        assert_eq!(roundtrip_text(t2), "2024-11-05T09:15:00.0049713+00:00");
        assert_eq!(utc_now_text(t), "2024-11-05T09:15:00.0000000Z");
        assert_eq!(utc_now_text(t2), "2024-11-05T09:15:00.0049713Z");
        assert_eq!(offset_seconds_text(t2), "2024-11-05T09:15:00+00:00");
    }

    #[test]
    fn well_known_headers_get_their_canonical_casing() {
        assert_eq!(header_display_name("content-type"), "Content-Type");
        assert_eq!(header_display_name("x-functions-key"), "x-functions-key");
    }

    #[test]
    fn an_anonymous_caller_has_an_unauthenticated_identity() {
        let ids = identities(&Caller::Anonymous);
        assert_eq!(ids[0]["IsAuthenticated"], json!(false));
        assert_eq!(ids[0]["Claims"], json!([]));
        let ids = identities(&Caller::FunctionKey("default".into()));
        assert_eq!(ids[0]["Claims"][0]["Value"], json!("Function"));
        assert_eq!(ids[0]["Claims"][2]["Value"], json!("default"));
    }

    #[test]
    fn a_get_has_no_body_and_repeated_query_keys_are_joined() {
        let request = HttpRequestData {
            method: "GET".into(),
            url: "http://h/api/x?a=1&a=2&code=k".into(),
            query: Some("a=1&a=2&code=k".into()),
            headers: vec![("Host".into(), "h".into())],
            body: vec![],
        };
        let p = http_payload(
            "X",
            "req",
            &request,
            &Map::new(),
            &Caller::AdminKey,
            Utc::now(),
        );
        assert_eq!(p["Data"]["req"]["Query"], json!({"a": "1,2", "code": "k"}));
        assert!(p["Data"]["req"].get("Body").is_none());
        assert_eq!(p["Metadata"]["Query"], json!({"a": "2", "code": "k"}));
        assert_eq!(p["Metadata"]["a"], json!("\"2\""));
        assert!(p["Metadata"].get("code").is_none());
    }

    #[test]
    fn a_binary_body_is_sent_as_base64() {
        let request = HttpRequestData {
            method: "POST".into(),
            url: "http://h/api/x".into(),
            query: None,
            headers: vec![
                ("Content-Type".into(), "application/octet-stream".into()),
                ("Content-Length".into(), "3".into()),
            ],
            body: vec![0, 1, 2],
        };
        let p = http_payload(
            "X",
            "req",
            &request,
            &Map::new(),
            &Caller::Anonymous,
            Utc::now(),
        );
        assert_eq!(p["Data"]["req"]["Body"], json!("AAEC"));
    }

    #[test]
    fn a_message_property_overrides_queue_metadata() {
        let message = QueueTriggerData {
            id: Some("real".into()),
            pop_receipt: Some("r".into()),
            dequeue_count: 1,
            insertion_time: None,
            expiration_time: None,
            next_visible_time: None,
            bytes: br#"{"Id":"fake","n":2}"#.to_vec(),
        };
        let p = queue_payload("Q", "message", false, &message, Utc::now());
        assert_eq!(p["Metadata"]["Id"], json!("\"fake\""));
        assert_eq!(p["Metadata"]["n"], json!("\"2\""));
        assert_eq!(
            p["Metadata"]["ExpirationTime"],
            json!("9999-12-31T23:59:59+00:00")
        );
    }
}
