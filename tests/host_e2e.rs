//! The product handler driven by dev-host exactly as the Functions host drives it, with the
//! real `host.json` and `functions/*/function.json`: HTTP routes and keys, a timer fired on
//! demand, queue delivery from Azurite, and retries ending in the poison queue.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::unique;
use dev_host::{Azurite, Host, HostConfig, LogSource, RunningHost};
use serde_json::{Value, json};

async fn start_host() -> RunningHost {
    let storage = Azurite::shared().await.expect("Azurite");
    let mut cfg = HostConfig::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        env!("CARGO_BIN_EXE_handler"),
        &storage,
    );
    cfg.env = vec![
        ("TABLE_PREFIX".into(), unique("e2e")),
        ("DEVICE_SYNC_SCHEDULE".into(), "0 0 * * * *".into()),
        ("OFFBOARD_FLAGGED_SCHEDULE".into(), "0 */5 * * * *".into()),
        ("ACTION_TRACKER_SCHEDULE".into(), "0 */5 * * * *".into()),
        ("INCIDENT_WATCH_SCHEDULE".into(), "0 */5 * * * *".into()),
    ];
    cfg.queue_prefix = unique("h");
    cfg.echo_handler_output = std::env::var("ECHO_HANDLER").is_ok();
    // Retries without the 30 s visibility timeout of the real host.json.
    cfg.host_json_patch =
        Some(json!({"extensions": {"queues": {"visibilityTimeout": "00:00:00"}}}));
    Host::start(cfg).await.expect("dev-host starts the handler")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn health_answers_200_with_json_without_a_key() {
    let host = start_host().await;
    let response = http()
        .get(format!("{}/api/health", host.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert!(body.is_object(), "{body}");
    assert_eq!(host.stats("Health").succeeded, 1);
}

#[tokio::test]
async fn a_function_key_route_refuses_callers_without_the_key_and_serves_those_with_it() {
    let host = start_host().await;
    let url = format!(
        "{}/api/devices/8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c",
        host.base_url()
    );
    let refused = http().get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        host.stats("Devices").invocations,
        0,
        "the host refuses before invoking"
    );
    let wrong = http()
        .get(&url)
        .header("x-functions-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let accepted = http()
        .get(&url)
        .header("x-functions-key", host.function_key())
        .send()
        .await
        .unwrap();
    let status = accepted.status().as_u16();
    // Whatever the handler decides (200 list, 404 unknown tenant), it is the handler's
    // answer through `res`, not the host's refusal or its empty 500 for a failed invocation.
    assert_ne!(status, 401);
    let body: Value = accepted
        .json()
        .await
        .expect("a JSON answer from the handler");
    assert!(body.is_object(), "{body}");
    assert_eq!(host.stats("Devices").succeeded, 1);

    // The admin key is accepted for function-level routes too, through `code=`.
    let with_code = http()
        .get(format!("{url}?code={}", host.admin_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(with_code.status().as_u16(), status);
}

#[tokio::test]
async fn a_timer_fired_on_demand_succeeds() {
    let host = start_host().await;
    let invocation = host.fire_timer("SyncScheduler").await.unwrap();
    assert!(invocation.succeeded(), "{:?}", invocation.result);
    assert_eq!(host.stats("SyncScheduler").succeeded, 1);
    // No tenant registered under this prefix: nothing queued.
    host.wait_for_idle(Duration::from_secs(60)).await.unwrap();
    assert_eq!(host.stats("SyncTenant").invocations, 0);
}

#[tokio::test]
async fn a_queue_message_is_delivered_from_azurite_to_its_function() {
    let host = start_host().await;
    let tenant = "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8";
    let job = json!({"tenantId": tenant, "runId": "sync-e2e", "reason": "scheduled"});
    host.enqueue("device-sync", &job.to_string()).await.unwrap();
    host.wait_for_idle(Duration::from_secs(60)).await.unwrap();
    let stats = host.stats("SyncTenant");
    assert_eq!((stats.invocations, stats.succeeded), (1, 1), "{stats:?}");
    assert!(host.queue_messages("device-sync").await.unwrap().is_empty());
    // The handler's Logs line for this message came back through the host.
    assert!(
        host.handler_logs().iter().any(
            |l| l.source == LogSource::Function("SyncTenant".into()) && l.line.contains(tenant)
        ),
        "{}",
        host.handler_log_text()
    );
}

#[tokio::test]
async fn an_unreadable_message_goes_to_the_poison_queue_on_its_first_delivery_with_one_log_line() {
    let host = start_host().await;
    let cases = [
        ("notifications", "Notify", "{not json"),
        ("device-sync", "SyncTenant", r#"{"tenantId":"not-a-guid"}"#),
        (
            "offboard",
            "OffboardWorker",
            r#"{"tenantId":"8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c"}"#,
        ),
    ];
    for (queue, _, text) in cases {
        host.enqueue(queue, text).await.unwrap();
    }
    host.wait_for_idle(Duration::from_secs(90)).await.unwrap();
    let log = host.handler_log_text();
    for (queue, function, text) in cases {
        let stats = host.stats(function);
        // Delivered once, answered with the message on its `poison` output: the host did
        // not retry it, nor move it itself.
        assert_eq!(stats.invocations, 1, "{function}: {stats:?}");
        assert_eq!(stats.failed, 0, "{function}: {stats:?}");
        assert_eq!(stats.poisoned, 0, "{function}: {stats:?}");
        assert_eq!(host.poison_messages(queue).await.unwrap(), vec![text]);
        assert!(host.queue_messages(queue).await.unwrap().is_empty());
        let said = format!("unreadable message moved to {queue}-poison");
        assert_eq!(
            log.lines().filter(|l| l.contains(&said)).count(),
            1,
            "one log line for {queue}:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_killed_handler_is_restarted_and_answers_again() {
    let host = start_host().await;
    host.kill_handler();
    wait_until("a restart", Duration::from_secs(10), || {
        host.handler_starts() >= 2
    })
    .await;
    host.wait_handler_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let response = http()
        .get(format!("{}/api/health", host.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
