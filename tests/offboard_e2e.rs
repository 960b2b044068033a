//! Offboarding end to end: webhook, flag and API requests followed to a final result,
//! through dev/host + handler + Azurite + dev/sim.

mod common;

use std::time::Duration;

use common::{APP1, APP2, Env, Options, T1, T2, mid};
use defender_ops::domain::signature;
use dev_sim::{Fault, Machine, RouteFamily};
use reqwest::Method;
use serde_json::{Value, json};

const HMAC_KEY: &str = "webhook-signing-key-for-tests-0123456789";

/// A tenant with a handful of synced devices: 1-5 Windows, 6 macOS, 7 excluded by tag,
/// 8 and 9 share a name (a reinstall), 10 offline (its action will stay Pending).
async fn seeded(options: Options) -> Env {
    let env = Env::start_with(options).await;
    let now = env.sim.now();
    let mut machines: Vec<Machine> = (1..=5)
        .map(|n| Machine::new(mid(n), format!("pc-{n:02}.contoso.com"), now))
        .collect();
    let mut mac = Machine::new(mid(6), "mac-06.contoso.com", now);
    mac.os_platform = Some("macOS".into());
    let mut excluded = Machine::new(mid(7), "dc-07.contoso.com", now);
    excluded.machine_tags = vec!["DoNotOffboard".into()];
    machines.extend([
        mac,
        excluded,
        Machine::new(mid(8), "twin.contoso.com", now),
        Machine::new(mid(9), "twin.contoso.com", now - time::Duration::hours(1)),
        Machine::new(mid(10), "laptop-10.contoso.com", now),
    ]);
    env.sim.add_tenant(T1);
    env.sim.add_machines(T1, machines);
    env.sim.set_machine_offline(T1, &mid(10), true);
    env.sim.add_tenant(T2);
    env.sim
        .add_machines(T2, vec![Machine::new(mid(100), "other-100", now)]);
    env.register_tenant(T1, APP1).await;
    env.register_tenant(T2, APP2).await;
    env.settle().await;
    assert_eq!(env.rows("Devices", T1).await.len(), 10);
    env
}

/// These tests call the API unsigned, as a function-key holder: that needs
/// `WEBHOOK_ALLOW_UNSIGNED=true` (design §9.1).
fn unsigned_options() -> Options {
    Options {
        settings: vec![("WEBHOOK_ALLOW_UNSIGNED".into(), "true".into())],
        ..Options::default()
    }
}

fn signed_options() -> Options {
    Options {
        settings: vec![("WEBHOOK_HMAC_SECRET".into(), "webhook-hmac".into())],
        ..Options::default()
    }
}

async fn post_offboard(env: &Env, body: &Value) -> (u16, Value) {
    env.call(Method::POST, "offboard", Some(body)).await
}

/// Posts a body signed with the test key at `ts` (unix seconds).
async fn post_signed(env: &Env, body: &str, ts: i64, key: &str) -> (u16, Value) {
    let sig = signature::sign(key.as_bytes(), ts, body.as_bytes());
    let res = env
        .http
        .post(env.url("offboard"))
        .header("x-functions-key", env.host.function_key())
        .header("content-type", "application/json")
        .header("x-signature", sig)
        .header("x-signature-timestamp", ts.to_string())
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_str(&res.text().await.unwrap_or_default()).unwrap_or(Value::Null),
    )
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn posts_for(env: &Env, machine: &str) -> usize {
    common::posts_for(&env.sim, machine)
}

async fn status_of(env: &Env, request: &str) -> Value {
    let (status, body) = env
        .call(Method::GET, &format!("offboard/{T1}/{request}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Advances Defender's clock and runs the tracker until the queues are quiet.
async fn track(env: &Env, by: Duration) {
    env.sim.advance(by);
    let run = env.host.fire_timer("ActionTracker").await.expect("tracker");
    assert!(run.succeeded(), "{:?}", run.result);
    env.settle().await;
}

#[tokio::test]
async fn a_webhook_request_is_followed_to_succeeded_with_one_post() {
    let env = seeded(unsigned_options()).await;
    let (status, accepted) = post_offboard(
        &env,
        &json!({"tenantId": T1, "machineId": mid(1), "comment": "Leaver HR-4471", "requestedBy": "itsm@contoso.com"}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "Accepted");
    let id = accepted["requestId"]
        .as_str()
        .expect("request id")
        .to_owned();
    assert_eq!(accepted["statusUrl"], format!("/api/offboard/{T1}/{id}"));

    env.settle().await;
    let submitted = status_of(&env, &id).await;
    assert_eq!(submitted["status"], "Submitted", "{submitted}");
    assert!(submitted["actionId"].is_string());
    assert_eq!(
        submitted["source"], "api",
        "an unsigned call is an API request"
    );
    assert_eq!(
        submitted["actor"], "function-key",
        "an unsigned call's actor is the key holder"
    );
    // A first attempt costs one Defender call (the POST): no lookup of earlier actions.
    let lookups = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::MachineActions))
        .count();
    assert_eq!(lookups, 0);

    track(&env, Duration::from_secs(600)).await;
    let done = status_of(&env, &id).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let history: Vec<&str> = done["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["status"].as_str())
        .collect();
    assert_eq!(history, ["Accepted", "Submitted", "Succeeded"]);
    assert_eq!(posts_for(&env, &mid(1)), 1);
    let post = &env.sim.offboard_posts()[0];
    assert_eq!(post.comment.as_deref(), Some("Leaver HR-4471"));

    let device = env.row("Devices", T1, &mid(1)).await.expect("device");
    assert_eq!(device.get_str("Result"), Some("Succeeded"));
    assert_eq!(device.get_str("LastRequestId"), Some(id.as_str()));
    // A second request for an offboarded device is refused by policy.
    let (status, again) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(1)})).await;
    assert_eq!(status, 422, "{again}");
    assert_eq!(again["error"]["code"], "AlreadyOffboarded");
}

#[tokio::test]
async fn the_request_records_the_status_defender_answered_200_or_201() {
    let env = seeded(unsigned_options()).await;
    // Current docs: 200 OK. Older docs and the seed's flow: 201 Created. Both are success,
    // and the request keeps the one Defender really sent.
    let mut recorded = Vec::new();
    for (machine, respond_201) in [(1, false), (2, true)] {
        env.sim.set_offboard_config(dev_sim::OffboardConfig {
            respond_201,
            ..Default::default()
        });
        let (status, accepted) =
            post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(machine)})).await;
        assert_eq!(status, 202, "{accepted}");
        env.settle().await;
        let id = accepted["requestId"].as_str().expect("request id");
        let submitted = status_of(&env, id).await;
        assert_eq!(submitted["status"], "Submitted", "{submitted}");
        recorded.push(submitted["httpStatus"].clone());
        let row = env
            .row("OffboardRequests", T1, id)
            .await
            .expect("the request's row");
        assert_eq!(
            row.get_i32("HttpStatus"),
            submitted["httpStatus"]
                .as_i64()
                .and_then(|s| i32::try_from(s).ok()),
            "the table and the API agree"
        );
    }
    assert_eq!(recorded, [json!(200), json!(201)]);
}

#[tokio::test]
async fn defenders_400_message_is_recorded_verbatim_on_the_request_and_the_device() {
    let env = seeded(unsigned_options()).await;
    // Defender now reports the device as Linux, which its offboard API refuses.
    env.sim
        .update_machine(T1, &mid(2), |m| m.os_platform = Some("Linux".into()));
    let (status, accepted) =
        post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(2)})).await;
    assert_eq!(status, 202, "{accepted}");
    env.settle().await;
    let id = accepted["requestId"].as_str().expect("id");
    let r = status_of(&env, id).await;
    assert_eq!(r["status"], "Rejected", "{r}");
    assert_eq!(r["httpStatus"], 400);
    let message = r["message"].as_str().expect("message");
    let post = env
        .sim
        .requests()
        .into_iter()
        .find(|q| q.family == Some(RouteFamily::Offboard))
        .expect("one POST");
    assert_eq!(post.status, 400);
    assert!(
        message.contains("isn't supported"),
        "Defender's own text: {message}"
    );
    let device = env.row("Devices", T1, &mid(2)).await.expect("device");
    assert_eq!(
        device.get_str("Result"),
        Some(message),
        "pasted verbatim, as the seed flow did"
    );
}

#[tokio::test]
async fn repeats_with_one_idempotency_key_make_one_request_and_one_post() {
    let env = seeded(unsigned_options()).await;
    let body = json!({"tenantId": T1, "machineId": mid(3), "idempotencyKey": "CHG0012345"});
    let (first, a) = post_offboard(&env, &body).await;
    assert_eq!(first, 202, "{a}");
    let (second, b) = post_offboard(&env, &body).await;
    assert_eq!(second, 200, "{b}");
    assert_eq!(a["requestId"], b["requestId"]);

    // Ten concurrent repeats of another key.
    let body = json!({"tenantId": T1, "machineId": mid(4), "idempotencyKey": "CHG0099999"});
    let answers = futures::future::join_all((0..10).map(|_| post_offboard(&env, &body))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, v)| v["requestId"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 202).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|(s, _)| *s == 202 || *s == 200),
        "{answers:?}"
    );

    env.settle().await;
    assert_eq!(posts_for(&env, &mid(3)), 1);
    assert_eq!(posts_for(&env, &mid(4)), 1);
    let requests = env.rows("OffboardRequests", T1).await;
    assert_eq!(requests.len(), 2);

    // A key whose first caller claimed it and died (or lost storage) before writing its
    // request: the repeat must create the request under the claimed id, not answer "seen".
    let claimed = "0b4c1d2e-3f40-4152-8364-758697a8b9c0";
    env.tables
        .table("IdempotencyKeys")
        .expect("table")
        .insert(
            &defender_ops::clients::tables::Entity::new(T1, "CHG0077777")
                .with("RequestId", claimed)
                .with("CreatedAt", time::OffsetDateTime::now_utc()),
        )
        .await
        .expect("claim");
    let body = json!({"tenantId": T1, "machineId": mid(5), "idempotencyKey": "CHG0077777"});
    let (status, answer) = post_offboard(&env, &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["requestId"], claimed);
    env.settle().await;
    assert_eq!(
        posts_for(&env, &mid(5)),
        1,
        "the orphaned key's request was submitted"
    );
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_one_device_and_one_dry_run() {
    let env = seeded(unsigned_options()).await;
    let key = "CHG0055555";
    let (status, first) = post_offboard(
        &env,
        &json!({"tenantId": T1, "machineId": mid(1), "idempotencyKey": key, "dryRun": true}),
    )
    .await;
    assert_eq!(status, 200, "a dry run: {first}");
    let rows_before = (
        env.rows("OffboardRequests", T1).await.len(),
        env.rows("Audit", T1).await.len(),
        env.rows("IdempotencyKeys", T1).await.len(),
    );
    // The same key for the real request, or for another device: 409, nothing written.
    for (body, what) in [
        (
            json!({"tenantId": T1, "machineId": mid(1), "idempotencyKey": key}),
            "dryRun differs",
        ),
        (
            json!({"tenantId": T1, "machineId": mid(2), "idempotencyKey": key, "dryRun": true}),
            "another device",
        ),
        (
            json!({"tenantId": T1, "deviceName": "pc-01", "idempotencyKey": key, "dryRun": true}),
            "another selector",
        ),
    ] {
        let (status, e) = post_offboard(&env, &body).await;
        assert_eq!(status, 409, "{what}: {e}");
        assert_eq!(e["error"]["code"], "IdempotencyKeyReused", "{what}: {e}");
    }
    assert_eq!(
        (
            env.rows("OffboardRequests", T1).await.len(),
            env.rows("Audit", T1).await.len(),
            env.rows("IdempotencyKeys", T1).await.len(),
        ),
        rows_before,
        "a reused key writes nothing"
    );
    // The same request again: 200 and the first request.
    let (status, again) = post_offboard(
        &env,
        &json!({"tenantId": T1, "machineId": mid(1), "idempotencyKey": key, "dryRun": true}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["requestId"], first["requestId"]);
    env.settle().await;
    assert_eq!(
        env.sim.offboard_posts().len(),
        0,
        "nothing reached Defender"
    );
}

#[tokio::test]
async fn a_redelivered_job_and_a_crash_after_the_post_never_offboard_twice() {
    let env = seeded(unsigned_options()).await;
    let (_, a) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(5)})).await;
    let id = a["requestId"].as_str().expect("id").to_owned();
    env.settle().await;
    // The same job delivered again.
    let job = json!({"tenantId": T1, "requestId": id}).to_string();
    env.host.enqueue("offboard", &job).await.expect("enqueue");
    env.host.enqueue("offboard", &job).await.expect("enqueue");
    env.settle().await;
    assert_eq!(posts_for(&env, &mid(5)), 1);

    // A worker that died after Defender accepted its POST: the action exists in Defender,
    // our row still says Accepted. The retry must link it, not post again.
    let (_, b) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(3)})).await;
    let id_b = b["requestId"].as_str().expect("id").to_owned();
    env.settle().await;
    let posts_before = posts_for(&env, &mid(3));
    assert_eq!(posts_before, 1);
    let action_id = env
        .sim
        .offboard_posts()
        .iter()
        .find(|p| p.machine_id == mid(3))
        .and_then(|p| p.action_id.clone())
        .expect("action");
    // Rewind our request to Accepted, as if the row update never happened.
    let requests = env.tables.table("OffboardRequests").expect("table");
    let mut row = requests.get(T1, &id_b).await.expect("get").expect("row");
    row.set("Status", "Accepted");
    row.set("ActionId", "");
    requests.upsert_replace(&row).await.expect("rewind");
    env.host
        .enqueue(
            "offboard",
            &json!({"tenantId": T1, "requestId": id_b}).to_string(),
        )
        .await
        .expect("enqueue");
    env.settle().await;
    assert_eq!(posts_for(&env, &mid(3)), 1, "no second POST");
    let r = status_of(&env, &id_b).await;
    assert_eq!(
        r["actionId"], action_id,
        "the retry linked the existing action: {r}"
    );
    assert!(
        matches!(
            r["status"].as_str(),
            Some("Submitted" | "InProgress" | "Succeeded")
        ),
        "{r}"
    );
}

#[tokio::test]
async fn device_resolution_and_policy_refusals_answer_404_409_422() {
    let env = seeded(unsigned_options()).await;
    let cases = [
        (
            json!({"tenantId": T1, "deviceName": "twin.contoso.com"}),
            409,
            "AmbiguousDevice",
        ),
        (
            json!({"tenantId": T1, "machineId": mid(100)}),
            404,
            "DeviceNotFound",
        ),
        (
            json!({"tenantId": T1, "machineId": mid(6)}),
            422,
            "UnsupportedPlatform",
        ),
        (
            json!({"tenantId": T1, "machineId": mid(7)}),
            422,
            "ExcludedByTag",
        ),
        (
            json!({"tenantId": "3c8d0e52-1b7e-4d40-9f26-a5e3b1c8d9e0", "machineId": mid(1)}),
            404,
            "TenantNotFound",
        ),
        (json!({"tenantId": T1}), 400, "MissingDeviceSelector"),
        (
            json!({"tenantId": T1, "machineId": mid(1), "deviceName": "pc-01"}),
            400,
            "AmbiguousDeviceSelector",
        ),
        (
            json!({"tenantId": T1, "machineId": "xyz"}),
            400,
            "InvalidMachineId",
        ),
        (
            json!({"tenantId": "nope", "machineId": mid(1)}),
            400,
            "InvalidTenantId",
        ),
        (
            json!({"tenantId": T1, "machineId": mid(1), "dryRun": "yes"}),
            400,
            "InvalidField",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = post_offboard(&env, &body).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
    }
    let (_, ambiguous) = post_offboard(
        &env,
        &json!({"tenantId": T1, "deviceName": "twin.contoso.com"}),
    )
    .await;
    let candidates: Vec<&str> = ambiguous["error"]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .filter_map(|c| c["machineId"].as_str())
        .collect();
    assert_eq!(candidates.len(), 2);
    // A unique short name resolves to its FQDN.
    let (status, ok) = post_offboard(
        &env,
        &json!({"tenantId": T1, "deviceName": "PC-02", "dryRun": true}),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["machineId"], mid(2));
    let requests = env.rows("OffboardRequests", T1).await;
    assert_eq!(requests.len(), 1, "the dry run is recorded");
    assert_eq!(requests[0].get_str("Status"), Some("DryRun"));
    assert!(env.sim.offboard_posts().is_empty());
}

#[tokio::test]
async fn a_dry_run_is_recorded_and_never_calls_defender() {
    let env = seeded(unsigned_options()).await;
    let (status, r) = post_offboard(
        &env,
        &json!({"tenantId": T1, "machineId": mid(1), "dryRun": true}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "DryRun");
    assert!(r["message"].as_str().is_some_and(|m| m.contains("would")));
    let before = env.row("Devices", T1, &mid(1)).await.expect("device");
    env.settle().await;
    assert!(env.sim.offboard_posts().is_empty());
    let id = r["requestId"].as_str().expect("request id");
    let recorded = env
        .row("OffboardRequests", T1, id)
        .await
        .expect("the dry run is recorded");
    assert_eq!(recorded.get_str("Status"), Some("DryRun"));
    let device = env.row("Devices", T1, &mid(1)).await.expect("device");
    assert_eq!(
        device.etag, before.etag,
        "a dry run leaves the device alone"
    );
    // And a real request for it is still possible.
    let (status, _) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(1)})).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn bad_stale_and_replayed_signatures_are_401_and_write_nothing() {
    let env = seeded(signed_options()).await;
    env.sim.set_secret("webhook-hmac", HMAC_KEY);
    let body =
        json!({"tenantId": T1, "machineId": mid(1), "idempotencyKey": "sig-test"}).to_string();
    let now = unix_now();

    let (status, e) = post_signed(&env, &body, now, "wrong-key").await;
    assert_eq!(status, 401, "{e}");
    let (status, e) = post_signed(&env, &body, now - 301, HMAC_KEY).await;
    assert_eq!(status, 401, "stale: {e}");
    let (status, e) = post_offboard(&env, &serde_json::from_str(&body).expect("json")).await;
    assert_eq!(status, 401, "unsigned: {e}");
    assert!(
        env.rows("OffboardRequests", T1).await.is_empty(),
        "nothing written"
    );
    assert!(env.rows("IdempotencyKeys", T1).await.is_empty());

    let (status, ok) = post_signed(&env, &body, now, HMAC_KEY).await;
    assert_eq!(status, 202, "{ok}");
    let (status, e) = post_signed(&env, &body, now, HMAC_KEY).await;
    assert_eq!(status, 401, "replayed: {e}");
    env.settle().await;
    let id = ok["requestId"].as_str().expect("id");
    let signed = status_of(&env, id).await;
    assert_eq!(signed["source"], "webhook");
    assert_eq!(
        signed["actor"], "caller:default",
        "WEBHOOK_HMAC_SECRET signs as the built-in caller"
    );
    assert!(
        env.host
            .handler_log_text()
            .contains("the built-in caller 'default' signs with it and reaches EVERY tenant"),
        "start-up warns that the default caller reaches every tenant"
    );

    // Replays without an idempotency key: of a real request, of a dry run, of a refusal.
    // Each first call gets its answer, each replay 401 and no new row.
    for (body, first) in [
        (json!({"tenantId": T1, "machineId": mid(2)}), 202),
        (
            json!({"tenantId": T1, "machineId": mid(3), "dryRun": true}),
            200,
        ),
        (json!({"tenantId": T1, "machineId": mid(6)}), 422),
        (json!({"tenantId": T1, "machineId": mid(99)}), 404),
    ] {
        let body = body.to_string();
        let (status, answer) = post_signed(&env, &body, now, HMAC_KEY).await;
        assert_eq!(status, first, "{body}: {answer}");
        let requests = env.rows("OffboardRequests", T1).await.len();
        let (status, e) = post_signed(&env, &body, now, HMAC_KEY).await;
        assert_eq!(status, 401, "replay of {body}: {e}");
        assert_eq!(
            e["error"]["code"].as_str().map(str::is_empty),
            Some(false),
            "{e}"
        );
        assert_eq!(
            env.rows("OffboardRequests", T1).await.len(),
            requests,
            "{body}"
        );
        // The same call signed anew is not a replay.
        let (status, again) = post_signed(&env, &body, now + 1, HMAC_KEY).await;
        assert_ne!(status, 401, "{body} signed anew: {again}");
    }
    env.settle().await;
    assert_eq!(
        posts_for(&env, &mid(2)),
        1,
        "one POST for the replayed request"
    );
    assert!(
        !env.host.handler_log_text().contains(HMAC_KEY),
        "the key is never logged"
    );
}

#[tokio::test]
async fn flagged_devices_become_requests_within_the_cap_and_flags_are_reset() {
    let env = seeded(Options {
        settings: vec![("OFFBOARD_MAX_PER_RUN".into(), "2".into())],
        ..Options::default()
    })
    .await;
    let audited_before = env.rows("Audit", T1).await.len();
    for n in [1u32, 2, 3, 6] {
        let (status, d) = env
            .call(
                Method::PATCH,
                &format!("devices/{T1}/{}", mid(n)),
                Some(&json!({"offboard": true})),
            )
            .await;
        assert_eq!(status, 200, "{d}");
    }
    let run = env.host.fire_timer("OffboardFlagged").await.expect("timer");
    assert!(run.succeeded(), "{:?}", run.result);
    env.settle().await;
    assert_eq!(
        env.rows("OffboardRequests", T1).await.len(),
        2,
        "the cap holds"
    );
    let run = env.host.fire_timer("OffboardFlagged").await.expect("timer");
    assert!(run.succeeded());
    env.settle().await;
    let requests = env.rows("OffboardRequests", T1).await;
    assert_eq!(requests.len(), 3, "the rest the next run; macOS is refused");
    assert!(requests.iter().all(|r| r.get_str("Source") == Some("flag")));
    // The request says who set the flag (the function-key holder), not only the timer.
    assert!(
        requests
            .iter()
            .all(|r| r.get_str("Actor") == Some("function-key")),
        "{requests:?}"
    );
    let id = requests[0].row_key.clone();
    let status = status_of(&env, &id).await;
    assert_eq!(status["actor"], "function-key", "{status}");
    // Each PATCH wrote one Audit row with its actor.
    let flags: Vec<_> = env
        .rows("Audit", T1)
        .await
        .into_iter()
        .filter(|r| r.get_str("Kind") == Some("DeviceFlag"))
        .collect();
    assert_eq!(flags.len(), 4, "{flags:?}");
    assert!(
        flags
            .iter()
            .all(|r| r.get_str("Actor") == Some("function-key")),
        "{flags:?}"
    );
    assert!(env.rows("Audit", T1).await.len() > audited_before);
    for n in [1u32, 2, 3, 6] {
        let d = env.row("Devices", T1, &mid(n)).await.expect("device");
        assert_eq!(d.get_bool("Offboard"), Some(false), "flag reset on {n}");
    }
    let mac = env.row("Devices", T1, &mid(6)).await.expect("device");
    assert!(
        mac.get_str("Result").is_some_and(|r| r.contains("macOS")),
        "{:?}",
        mac.get_str("Result")
    );
    assert_eq!(env.sim.offboard_posts().len(), 3);
}

#[tokio::test]
async fn an_offline_device_stays_pending_for_days_until_defender_times_the_action_out() {
    let env = seeded(unsigned_options()).await;
    let (_, a) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(10)})).await;
    let id = a["requestId"].as_str().expect("id").to_owned();
    env.settle().await;
    track(&env, Duration::from_secs(3 * 24 * 3600)).await;
    assert_eq!(
        status_of(&env, &id).await["status"],
        "Submitted",
        "no give-up while Defender waits"
    );
    track(&env, Duration::from_secs(5 * 24 * 3600)).await;
    let r = status_of(&env, &id).await;
    assert_eq!(r["status"], "TimeOut", "{r}");
    let device = env.row("Devices", T1, &mid(10)).await.expect("device");
    assert_eq!(device.get_str("Result"), Some("TimeOut"));
}

#[tokio::test]
async fn throttling_is_waited_out_and_every_request_still_succeeds() {
    let env = seeded(unsigned_options()).await;
    env.sim.inject_fault(
        RouteFamily::Offboard,
        Fault::Throttle {
            retry_after: 1,
            count: 2,
        },
    );
    env.sim.inject_fault(
        RouteFamily::MachineActions,
        Fault::Throttle {
            retry_after: 1,
            count: 2,
        },
    );
    let mut ids = Vec::new();
    for n in 1..=5u32 {
        let (status, a) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(n)})).await;
        assert_eq!(status, 202, "{a}");
        ids.push(a["requestId"].as_str().expect("id").to_owned());
    }
    env.settle().await;
    track(&env, Duration::from_secs(600)).await;
    for id in &ids {
        assert_eq!(status_of(&env, id).await["status"], "Succeeded");
    }
    for n in 1..=5u32 {
        assert_eq!(posts_for(&env, &mid(n)), 1, "device {n}");
    }
    assert!(env.sim.max_calls_in_any_window(T1, Duration::from_secs(60)) <= 100);
}

#[tokio::test]
async fn a_disabled_tenant_refuses_new_requests_with_409_and_writes_nothing() {
    let env = seeded(unsigned_options()).await;
    let (status, _) = env
        .admin(Method::DELETE, &format!("tenants/{T1}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, answer) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(1)})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "TenantDisabled", "{answer}");
    assert!(
        env.rows("OffboardRequests", T1).await.is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn another_tenants_request_is_not_found() {
    let env = seeded(unsigned_options()).await;
    let (_, a) = post_offboard(
        &env,
        &json!({"tenantId": T2, "machineId": mid(100), "dryRun": true}),
    )
    .await;
    let id = a["requestId"].as_str().expect("id");
    let (status, _) = env
        .call(Method::GET, &format!("offboard/{T1}/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = env
        .call(Method::GET, &format!("offboard/{T2}/{id}"), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_tracker_follows_many_requests_with_one_list_call() {
    let env = seeded(unsigned_options()).await;
    let mut ids = Vec::new();
    for n in 1..=5u32 {
        let (status, a) = post_offboard(&env, &json!({"tenantId": T1, "machineId": mid(n)})).await;
        assert_eq!(status, 202, "{a}");
        ids.push(a["requestId"].as_str().expect("id").to_owned());
    }
    env.settle().await;
    env.sim.clear_requests();
    track(&env, Duration::from_secs(600)).await;
    for id in &ids {
        assert_eq!(status_of(&env, id).await["status"], "Succeeded");
    }
    let calls: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::MachineActions))
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("creationDateTimeUtc"), "{calls:?}");
}
