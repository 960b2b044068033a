//! dev-host end to end with a scripted handler (`fake-handler`) and Azurite: routing and
//! keys, the payload envelope, failures, timers, queue delivery, retries and poison,
//! function timeouts and handler restarts.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use dev_host::{Azurite, Host, HostConfig, LogSource, RunningHost};
use serde_json::{Value, json};

struct App {
    root: PathBuf,
    record: PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn write_app() -> App {
    let root =
        std::env::temp_dir().join(format!("dev-host-test-{}", uuid::Uuid::new_v4().simple()));
    let host = json!({
        "version": "2.0",
        "customHandler": {"description": {"defaultExecutablePath": "fake-handler", "arguments": []},
                          "enableForwardingHttpRequest": false},
        "functionTimeout": "00:00:03",
        "extensions": {"http": {"routePrefix": "api"},
                       "queues": {"batchSize": 4, "maxDequeueCount": 3, "visibilityTimeout": "00:00:30"}}
    });
    let http = |auth: &str, methods: Value, route: &str| {
        json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": auth,
             "methods": methods, "route": route},
            {"type": "http", "direction": "out", "name": "res"}]})
    };
    let functions = [
        (
            "Echo",
            http("function", json!(["get", "post"]), "echo/{id}/{rest?}"),
        ),
        ("AdminOnly", http("admin", json!(["put"]), "admin-only")),
        ("BadRes", http("anonymous", json!(["get"]), "bad-res")),
        ("Plain", http("anonymous", json!(["get"]), "plain")),
        ("Slow", http("anonymous", json!(["get"]), "slow")),
        (
            "Fanout",
            json!({"bindings": [
            {"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "%FANOUT_SCHEDULE%"},
            {"type": "queue", "direction": "out", "name": "jobs", "queueName": "work"}]}),
        ),
        (
            "Work",
            json!({"bindings": [
            {"type": "queueTrigger", "direction": "in", "name": "message", "queueName": "work"},
            {"type": "queue", "direction": "out", "name": "done", "queueName": "done"}]}),
        ),
    ];
    for (name, function) in functions {
        let dir = root.join("functions").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("function.json"), function.to_string()).unwrap();
    }
    std::fs::write(root.join("host.json"), host.to_string()).unwrap();
    App {
        record: root.join("record.jsonl"),
        root,
    }
}

async fn start(app: &App, patch: Option<Value>) -> RunningHost {
    start_on(app, patch, &Azurite::shared().await.unwrap()).await
}

async fn start_on(app: &App, patch: Option<Value>, storage: &str) -> RunningHost {
    let mut cfg = HostConfig::new(&app.root, env!("CARGO_BIN_EXE_fake-handler"), storage);
    cfg.env = vec![
        ("FANOUT_SCHEDULE".into(), "0 0 0 1 1 *".into()),
        (
            "FAKE_HANDLER_RECORD".into(),
            app.record.display().to_string(),
        ),
    ];
    cfg.queue_prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    cfg.host_json_patch = patch;
    Host::start(cfg).await.unwrap()
}

fn recorded(app: &App) -> Vec<Value> {
    std::fs::read_to_string(&app.record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn a_function_route_needs_a_key_and_gets_the_payload_mode_envelope() {
    let app = write_app();
    let host = start(&app, None).await;
    let url = format!("{}/api/echo/a1", host.base_url());
    let http = client();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let wrong = http
        .get(&url)
        .header("x-functions-key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let ok = http
        .get(format!("{url}?x=1&x=2"))
        .header("x-functions-key", host.function_key())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/json");
    let payload: Value = ok.json().await.unwrap();
    let req = &payload["Data"]["req"];
    assert_eq!(req["Params"], json!({"id": "a1", "rest": null}));
    assert_eq!(req["Query"], json!({"x": "1,2"}));
    assert_eq!(req["Method"], "GET");
    assert!(req.get("Body").is_none());
    assert_eq!(req["Identities"][0]["Claims"][0]["Value"], "Function");
    assert_eq!(payload["Metadata"]["id"], "\"a1\"");
    assert_eq!(payload["Metadata"]["sys"]["MethodName"], "Echo");

    // The admin key works too, through `code=`, and is an Admin identity.
    let admin = http
        .post(format!("{url}/more?code={}", host.admin_key()))
        .json(&json!({"flag": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    let payload: Value = admin.json().await.unwrap();
    assert_eq!(
        payload["Data"]["req"]["Identities"][0]["Claims"][0]["Value"],
        "Admin"
    );
    assert_eq!(payload["Data"]["req"]["Params"]["rest"], "more");
    assert_eq!(payload["Data"]["req"]["Body"], "{\"flag\":true}");
    assert_eq!(payload["Metadata"]["flag"], "\"True\"");

    // The envelope: chunked, no Content-Length, host headers, path = function name.
    let seen = recorded(&app);
    assert_eq!(seen.len(), 2);
    let headers = &seen[0]["headers"];
    assert_eq!(seen[0]["function"], "Echo");
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert!(headers.get("content-length").is_none());
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert!(
        headers["user-agent"]
            .as_str()
            .unwrap()
            .starts_with("Azure-Functions-Host/")
    );
    assert!(headers["x-azure-functions-hostversion"].is_string());
    assert!(
        uuid::Uuid::parse_str(headers["x-azure-functions-invocationid"].as_str().unwrap()).is_ok()
    );
    assert!(
        host.handler_logs()
            .iter()
            .any(|l| l.source == LogSource::Function("Echo".into()) && l.line == "echo answered")
    );
    assert!(host.handler_log_text().contains("invocation "));
    assert_eq!(host.stats("Echo").succeeded, 2);
}

#[tokio::test]
async fn an_admin_route_refuses_the_function_key_and_unlisted_methods() {
    let app = write_app();
    let host = start(&app, None).await;
    let url = format!("{}/api/admin-only", host.base_url());
    let http = client();
    let refused = http
        .put(&url)
        .header("x-functions-key", host.function_key())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let made = http
        .put(&url)
        .header("x-functions-key", host.admin_key())
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    assert_eq!(made.text().await.unwrap(), "made");
    let get = http
        .get(&url)
        .header("x-functions-key", host.admin_key())
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    assert_eq!(
        http.get(format!("{}/api/nowhere", host.base_url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn handler_answers_the_host_rejects_become_an_empty_500() {
    let app = write_app();
    let host = start(&app, None).await;
    let http = client();
    for route in ["bad-res", "plain"] {
        let response = http
            .get(format!("{}/api/{route}", host.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500, "{route}");
        assert!(response.text().await.unwrap().is_empty());
    }
    assert_eq!(host.stats("BadRes").failed, 1);
    assert_eq!(host.stats("Plain").failed, 1);
}

#[tokio::test]
async fn a_timer_fans_out_through_its_queue_output_to_the_queue_function() {
    let app = write_app();
    let host = start(&app, None).await;
    let invocation = host.fire_timer("Fanout").await.unwrap();
    assert!(invocation.succeeded(), "{:?}", invocation.result);
    host.wait_for_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(host.stats("Work").succeeded, 2);
    let mut done = host.queue_messages("done").await.unwrap();
    done.sort();
    assert_eq!(done, vec!["done {\"n\":1}", "done {\"n\":2}"]);

    let seen = recorded(&app);
    let timer = seen.iter().find(|r| r["function"] == "Fanout").unwrap();
    let body: Value = serde_json::from_str(timer["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["Data"]["timer"]["ScheduleStatus"]["Last"],
        "0001-01-01T00:00:00+00:00"
    );
    assert_eq!(body["Data"]["timer"]["IsPastDue"], false);
    let work = seen.iter().find(|r| r["function"] == "Work").unwrap();
    let body: Value = serde_json::from_str(work["body"].as_str().unwrap()).unwrap();
    assert!(
        body["Data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("\"{\\\"n\\\":")
    );
    assert_eq!(body["Metadata"]["DequeueCount"], "1");
    assert!(body["Metadata"]["n"] == "\"1\"" || body["Metadata"]["n"] == "\"2\"");

    // A second run sees the first one as Last.
    host.fire_timer("Fanout").await.unwrap();
    let seen = recorded(&app);
    let second = seen
        .iter()
        .filter(|r| r["function"] == "Fanout")
        .nth(1)
        .unwrap();
    let body: Value = serde_json::from_str(second["body"].as_str().unwrap()).unwrap();
    assert_ne!(
        body["Data"]["timer"]["ScheduleStatus"]["Last"],
        "0001-01-01T00:00:00+00:00"
    );
}

#[tokio::test]
async fn a_failing_message_is_retried_then_moved_to_the_poison_queue() {
    let app = write_app();
    let host = start(
        &app,
        Some(json!({"extensions": {"queues": {"visibilityTimeout": "00:00:00"}}})),
    )
    .await;
    host.enqueue("work", "please fail").await.unwrap();
    host.wait_for_idle(Duration::from_secs(60)).await.unwrap();
    let stats = host.stats("Work");
    assert_eq!(
        (stats.invocations, stats.failed, stats.poisoned),
        (3, 3, 1),
        "{stats:?}"
    );
    assert_eq!(
        host.poison_messages("work").await.unwrap(),
        vec!["please fail"]
    );
    assert!(host.queue_messages("work").await.unwrap().is_empty());
    let counts: Vec<String> = recorded(&app)
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["Metadata"]["DequeueCount"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(counts, vec!["1", "2", "3"]);
}

#[tokio::test]
async fn a_message_that_is_not_base64_fails_and_is_poisoned_without_reaching_the_handler() {
    let app = write_app();
    let host = start(
        &app,
        Some(json!({"extensions": {"queues": {"visibilityTimeout": "00:00:00"}}})),
    )
    .await;
    let queue = host.queue_name("work");
    host.queue_client().create_queue(&queue).await.unwrap();
    host.queue_client()
        .put_raw(&queue, "not base64!")
        .await
        .unwrap();
    host.wait_for_idle(Duration::from_secs(60)).await.unwrap();
    assert_eq!(host.stats("Work").poisoned, 1);
    assert!(recorded(&app).is_empty());
}

#[tokio::test]
async fn a_function_timeout_restarts_the_handler_on_the_same_port() {
    let app = write_app();
    let host = start(&app, None).await;
    let port = host.handler_port();
    let started = std::time::Instant::now();
    let response = client()
        .get(format!("{}/api/slow", host.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(started.elapsed() < Duration::from_secs(20));
    host.wait_handler_ready(Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while host.handler_starts() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(host.handler_port(), port);
    host.wait_handler_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let ok = client()
        .get(format!("{}/api/echo/x", host.base_url()))
        .header("x-functions-key", host.function_key())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_killed_handler_is_restarted_and_serves_again() {
    let app = write_app();
    let host = start(&app, None).await;
    let before = client()
        .get(format!("{}/api/echo/x", host.base_url()))
        .header("x-functions-key", host.function_key())
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    host.kill_handler();
    tokio::time::timeout(Duration::from_secs(10), async {
        while host.handler_starts() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    host.wait_handler_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let ok = client()
        .get(format!("{}/api/echo/x", host.base_url()))
        .header("x-functions-key", host.function_key())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let pids: std::collections::HashSet<u64> = recorded(&app)
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "the echo after the kill came from a new process"
    );
}

#[tokio::test]
async fn the_admin_api_fires_a_timer_and_needs_the_admin_key() {
    let app = write_app();
    let host = start(&app, None).await;
    let url = format!("{}/admin/functions/Fanout", host.base_url());
    let http = client();
    let refused = http
        .post(&url)
        .header("x-functions-key", host.function_key())
        .json(&json!({"input": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let accepted = http
        .post(&url)
        .header("x-functions-key", host.admin_key())
        .json(&json!({"input": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    tokio::time::timeout(Duration::from_secs(20), async {
        while host.stats("Fanout").succeeded < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    host.wait_for_idle(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn an_unresolved_schedule_setting_stops_start_up_with_its_name() {
    let app = write_app();
    let storage = Azurite::shared().await.unwrap();
    let cfg = HostConfig::new(&app.root, env!("CARGO_BIN_EXE_fake-handler"), &storage);
    let err = format!("{:#}", Host::start(cfg).await.err().unwrap());
    assert!(err.contains("FANOUT_SCHEDULE"), "{err}");
}

#[tokio::test]
async fn queue_listeners_recover_when_azurite_restarts_with_empty_storage() {
    let app = write_app();
    let mut azurite = Azurite::start().await.unwrap();
    let host = start_on(&app, None, &azurite.connection_string()).await;
    host.enqueue("work", "before").await.unwrap();
    host.wait_for_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(host.stats("Work").succeeded, 1);

    azurite.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    azurite.restart().await.unwrap();
    // The trigger queue is gone with the in-memory data; the listener re-creates it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while host.enqueue("work", "after").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "enqueue after restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.wait_for_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(host.stats("Work").succeeded, 2);
    // Its output queue was re-created too.
    assert_eq!(
        host.queue_messages("done").await.unwrap(),
        vec!["done after"]
    );
}
