//! A scripted custom handler for dev-host's own tests: behaves by function name and
//! message text, and appends every request it receives (headers and body) as one JSON line
//! to `$FAKE_HANDLER_RECORD`.

use std::io::Write;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn record(function: &str, headers: &HeaderMap, body: &Bytes) {
    let Ok(path) = std::env::var("FAKE_HANDLER_RECORD") else {
        return;
    };
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let line = json!({
        "function": function,
        "headers": headers,
        "body": String::from_utf8_lossy(body),
        "pid": std::process::id(),
    });
    // Invocations run concurrently: one locked, single write per line keeps lines whole.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock();
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

fn json_answer(value: Value) -> Response {
    (
        StatusCode::OK,
        [("Content-Type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn invoke(Path(function): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    record(&function, &headers, &body);
    println!(
        "invocation {} of {function}",
        headers
            .get("x-azure-functions-invocationid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
    );
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Queue text arrives JSON-encoded twice.
    let message = payload
        .pointer("/Data/message")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<String>(s).ok())
        .unwrap_or_default();
    match function.as_str() {
        "Echo" => json_answer(json!({
            "Outputs": {"res": {
                "statusCode": 200,
                "headers": {"Content-Type": "application/json"},
                "body": payload.to_string(),
            }},
            "Logs": ["echo answered"],
        })),
        "AdminOnly" => {
            json_answer(json!({"Outputs": {"res": {"statusCode": "201", "body": "made"}}}))
        }
        "BadRes" => json_answer(json!({"Outputs": {"res": "SomeBlah"}})),
        "Plain" => (StatusCode::OK, "not json").into_response(),
        "Slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json_answer(json!({}))
        }
        "Fanout" => json_answer(json!({
            "Outputs": {"jobs": ["{\"n\":1}", "{\"n\":2}"], "Jobs": ["ignored: wrong case"]},
            "Logs": ["fanned out 2"],
        })),
        "Work" if message.contains("fail") => {
            eprintln!("refusing message {message}");
            (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response()
        }
        "Work" if message.contains("crash") => std::process::exit(3),
        "Work" => json_answer(json!({"Outputs": {"done": [format!("done {message}")]}})),
        _ => (StatusCode::NOT_FOUND, "unknown function").into_response(),
    }
}

#[tokio::main]
async fn main() {
    let port = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT").unwrap_or_else(|_| "8080".into());
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { StatusCode::NOT_FOUND }))
        .route("/{function}", axum::routing::post(invoke));
    let listener = match tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot bind {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("fake handler listening on {port}");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
