//! The handler answers the Functions host exactly as the host contract requires, driven with
//! the contract fixtures over real HTTP/1.1 (chunked request bodies, like the host sends).

use std::collections::HashMap;
use std::path::PathBuf;

use defender_ops::app::{AppState, Application};
use defender_ops::config::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contracts/functions-host")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn start_handler() -> u16 {
    let settings: HashMap<&str, &str> = [
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "0"),
        // Nothing listens here: the protocol must work whatever storage does.
        ("AzureWebJobsStorage", "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"),
    ]
    .into_iter()
    .collect();
    let config =
        Config::from_lookup(&|k| settings.get(k).map(|v| (*v).to_owned())).expect("valid config");
    let app = Application::build(AppState::new(config).expect("state"))
        .await
        .expect("bind");
    let port = app.port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    port
}

/// Sends a raw HTTP/1.1 request and returns (status, content-type, body).
async fn raw(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    // `Connection: close` on every request, so the server closes after answering.
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-type: ")
                .or_else(|| l.strip_prefix("Content-Type: "))
        })
        .unwrap_or_default()
        .to_owned();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, content_type, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A payload-mode invocation as the host sends it: chunked, no Content-Length.
fn invocation(function: &str, port: u16, json: &str) -> Vec<u8> {
    format!(
        "POST /{function} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Azure-Functions-HostVersion: 4.1037.1.23605\r\n\
         X-Azure-Functions-InvocationId: 6e0c1a2b-3d4e-4f5a-8b6c-7d8e9f0a1b2c\r\nUser-Agent: Azure-Functions-Host/4.1037.1.23605\r\n\
         Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
        json.len()
    )
    .into_bytes()
}

fn assert_host_answer_shape(body: &str) -> Value {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}"));
    let obj = v.as_object().expect("the answer is a JSON object");
    assert!(
        obj.contains_key("Outputs") && obj["Outputs"].is_object(),
        "{body}"
    );
    assert!(obj["Logs"].is_array(), "{body}");
    assert!(obj.contains_key("ReturnValue"), "{body}");
    v
}

#[tokio::test]
async fn the_readiness_ping_is_answered() {
    let port = start_handler().await;
    let request = fixture("readiness-ping.request.txt").replace("40263", &port.to_string());
    let request = request.trim_end().to_owned() + "\r\nConnection: close\r\n\r\n";
    let request = request.replace("\r\n", "\n").replace('\n', "\r\n");
    let (status, _, _) = raw(port, request.as_bytes()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_literal_payload_mode_fixture_is_read_despite_chunked_framing() {
    let port = start_handler().await;
    // The fixture is the host's bytes for a queue function; SyncTenant is ours by that name.
    let raw_fixture = fixture("payload-mode.request.http.txt").replace("\r\n", "\n");
    let (head, rest) = raw_fixture.split_once("\n\n").expect("head/body");
    let json = rest
        .lines()
        .nth(1)
        .expect("chunk payload")
        .replace("queueItem", "message");
    let head = head.replace("40263", &port.to_string());
    let mut request = head
        .lines()
        .filter(|l| !l.starts_with("Transfer-Encoding"))
        .collect::<Vec<_>>()
        .join("\r\n");
    request.push_str(&format!(
        "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{json}\r\n0\r\n\r\n",
        json.len()
    ));
    let (status, _, body) = raw(port, request.as_bytes()).await;
    // SyncTenant exists; whether it succeeds depends on its feature, but the envelope must be
    // understood: either an answer in the host's shape, or a deliberate failure (500).
    assert!(status == 200 || status == 500, "status {status}: {body}");
    if status == 200 {
        assert_host_answer_shape(&body);
    }
}

#[tokio::test]
async fn the_http_fixture_gets_a_res_output_with_a_numeric_status_and_string_body() {
    let port = start_handler().await;
    let json: Value = serde_json::from_str(&fixture("http-trigger.request.json")).expect("fixture");
    let (status, content_type, body) =
        raw(port, &invocation("Health", port, &json.to_string())).await;
    assert_eq!(status, 200, "the host must get a 200: {body}");
    assert!(content_type.starts_with("application/json"));
    let answer = assert_host_answer_shape(&body);
    let res = &answer["Outputs"]["res"];
    assert!(res["statusCode"].is_u64(), "{res}");
    assert!(res["body"].is_string(), "{res}");
    for (_, v) in res["headers"].as_object().expect("headers object") {
        assert!(v.is_string(), "header values are strings: {res}");
    }
    let inner: Value = serde_json::from_str(res["body"].as_str().unwrap_or_default())
        .expect("res.body is JSON text");
    assert!(inner.is_object());
}

#[tokio::test]
async fn the_timer_fixture_is_accepted_by_a_timer_function() {
    let port = start_handler().await;
    let json: Value =
        serde_json::from_str(&fixture("timer-trigger.request.json")).expect("fixture");
    let (status, _, body) = raw(port, &invocation("SyncScheduler", port, &json.to_string())).await;
    assert!(status == 200 || status == 500, "status {status}: {body}");
    if status == 200 {
        assert_host_answer_shape(&body);
    }
}

#[tokio::test]
async fn an_unknown_function_fails_the_invocation() {
    let port = start_handler().await;
    let (status, _, body) = raw(
        port,
        &invocation("NoSuchFunction", port, "{\"Data\":{},\"Metadata\":{}}"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("NoSuchFunction"));
}

#[tokio::test]
async fn a_malformed_envelope_fails_the_invocation_without_a_panic() {
    let port = start_handler().await;
    for bad in [
        "not json",
        "[1,2,3]",
        "{\"Data\": 7}",
        "{\"Data\":{\"req\":{\"Url\":5}}}",
        "\u{0}\u{1}",
    ] {
        let (status, _, body) = raw(port, &invocation("Health", port, bad)).await;
        assert!(status == 400 || status == 500, "{bad:?} → {status} {body}");
    }
    // The handler is still alive afterwards.
    let ok: Value = serde_json::from_str(&fixture("http-trigger.request.json")).expect("fixture");
    let (status, _, _) = raw(port, &invocation("Health", port, &ok.to_string())).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_http_function_refusing_its_input_answers_a_json_error_inside_res() {
    let port = start_handler().await;
    let mut json: Value =
        serde_json::from_str(&fixture("http-trigger.request.json")).expect("fixture");
    json["Data"]["req"]["Url"] = Value::String("http://localhost:7071/api/nothing".into());
    let (status, _, body) = raw(port, &invocation("OffboardStatus", port, &json.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let answer = assert_host_answer_shape(&body);
    let code = answer["Outputs"]["res"]["statusCode"]
        .as_u64()
        .expect("statusCode");
    assert!((400..600).contains(&code), "never a fake success: {code}");
    let inner: Value =
        serde_json::from_str(answer["Outputs"]["res"]["body"].as_str().expect("body"))
            .expect("json");
    assert!(inner["error"]["code"].is_string());
}
