//! Approvals end to end (design §9.4): requests through the webhook and the console's use
//! case wait in `AwaitingApproval` under the tenant's mode, approvers decide them, the timer
//! expires and announces them; dev/host + handler + Azurite + dev/sim, counting Defender's
//! offboard POSTs at the simulator.
//!
//! The console's pages are not written yet: the console's use cases run here in the test
//! process against the same tables and simulators (an `AppState` built from the handler's
//! settings), and the jobs they return are queued through the host, as the console's output
//! binding will.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Env, Options};
use defender_ops::app::AppState;
use defender_ops::clients::tables::{EdmValue, IfMatch};
use defender_ops::config::Config;
use defender_ops::domain::{Actor, MachineId, RequestId, TenantId};
use defender_ops::offboard::Tables;
use defender_ops::offboard::approvals::{self, Acting, Decision};
use defender_ops::offboard::console::{self, DeviceAnswer, Selection};
use dev_sim::Machine;
use reqwest::Method;
use serde_json::{Value, json};

const T1: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
const APP1: &str = "11111111-1111-4111-8111-111111111111";
const CONSOLE: &str = "https://ops.example.com";
const SINK_ID: &str = "approvals-sink";

fn mid(n: u32) -> String {
    format!("{n:040x}")
}

fn user(name: &str) -> Actor {
    Actor::User {
        upn: format!("{name}@contoso.com"),
        object_id: format!("oid-{name}"),
    }
}

struct Rig {
    env: Env,
    app: AppState,
    tables: Tables,
}

/// Tenant T1 with devices 1-8 (Windows), in approval mode `approval`; notes go to the
/// webhook sink.
async fn rig(approval: Value) -> Rig {
    let settings: Vec<(String, String)> = [
        ("WEBHOOK_ALLOW_UNSIGNED", "true"),
        ("CONSOLE_BASE_URL", CONSOLE),
        ("NOTIFY_WEBHOOK_SECRET", "notify-webhook"),
        ("NOTIFY_WEBHOOK_SIGNING_SECRET", "events-signing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let env = Env::start_with(Options {
        settings: settings.clone(),
        ..Options::default()
    })
    .await;
    env.sim
        .set_secret("notify-webhook", env.sim.sink_url(SINK_ID).as_str());
    env.sim
        .set_secret("events-signing", "events-signing-key-0123456789abcdef");
    let now = env.sim.now();
    env.sim.add_tenant(T1);
    env.sim.add_machines(
        T1,
        (1..=8)
            .map(|n| Machine::new(mid(n), format!("pc-{n:02}.contoso.com"), now))
            .collect::<Vec<_>>(),
    );
    env.register_tenant(T1, APP1).await;
    let (status, body) = env
        .admin(
            Method::PUT,
            &format!("tenants/{T1}"),
            Some(&json!({
                "displayName": "Contoso",
                "clientId": APP1,
                "authMode": "secret",
                "secretName": format!("tenant-{}", &T1[..8]),
                "approval": approval,
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval"], approval, "{body}");
    env.settle().await;
    assert_eq!(env.rows("Devices", T1).await.len(), 8);

    let mut all = dev_host::sim_settings::handler_settings(&env.sim, &env.prefix);
    all.push(("AzureWebJobsStorage".into(), env.storage.clone()));
    all.extend(settings);
    let config = Config::from_lookup(&|k: &str| {
        all.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    let app = AppState::new(config).unwrap();
    let tables = Tables::open(&env.tables).await.unwrap();
    Rig { env, app, tables }
}

async fn webhook(env: &Env, n: u32) -> (u16, Value) {
    env.call(
        Method::POST,
        "offboard",
        Some(&json!({"tenantId": T1, "machineId": mid(n), "comment": "leaver"})),
    )
    .await
}

fn posts(env: &Env) -> usize {
    env.sim.offboard_posts().len()
}

fn tenant() -> TenantId {
    TenantId::parse(T1).unwrap()
}

fn rid(v: &Value) -> RequestId {
    RequestId::parse(v["requestId"].as_str().unwrap()).unwrap()
}

async fn status_of(env: &Env, id: &RequestId) -> String {
    let (s, body) = env
        .call(Method::GET, &format!("offboard/{T1}/{id}"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    body["status"].as_str().unwrap().to_owned()
}

fn acting<'a>(actor: &'a Actor) -> Acting<'a> {
    Acting {
        actor,
        console_base: None,
        now: time::OffsetDateTime::now_utc(),
    }
}

async fn run_timer(env: &Env, name: &str) {
    let run = env.host.fire_timer(name).await.expect("timer");
    assert!(run.succeeded(), "{name}: {:?}", run.result);
    env.settle().await;
}

/// The outbound webhook events for `request`, by status.
fn events_for(env: &Env, request: &RequestId) -> Vec<Value> {
    env.sim
        .sink_events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.body).ok())
        .filter(|v| v.to_string().contains(request.as_str()))
        .collect()
}

#[tokio::test]
async fn in_always_mode_requests_wait_and_only_approved_ones_reach_defender() {
    let r = rig(json!({"mode": "always"})).await;
    let env = &r.env;

    // An operator selects three devices in the console: three waiting requests, no job.
    let ada = user("ada");
    let selection = Selection {
        tenant_id: tenant(),
        machines: (1..=3)
            .map(|n| MachineId::parse(&mid(n)).unwrap())
            .collect(),
        reason: "stale devices".into(),
        nonce: "form-0001".into(),
    };
    let (answers, jobs) = console::offboard_devices(&r.app, &ada, &selection)
        .await
        .unwrap();
    assert!(jobs.is_empty(), "no job for a waiting request");
    let ids: Vec<RequestId> = answers
        .iter()
        .map(|a| match &a.answer {
            DeviceAnswer::New(req) => {
                assert_eq!(req.status.as_str(), "AwaitingApproval");
                req.request_id.clone()
            }
            other => panic!("expected a new request, got {other:?}"),
        })
        .collect();
    // The same form again (a double click, a reload): the same three requests.
    let (again, jobs) = console::offboard_devices(&r.app, &ada, &selection)
        .await
        .unwrap();
    assert!(jobs.is_empty());
    for (a, id) in again.iter().zip(&ids) {
        match &a.answer {
            DeviceAnswer::Repeat(Some(req)) => assert_eq!(&req.request_id, id),
            other => panic!("expected the first request again, got {other:?}"),
        }
    }
    // The webhook obeys the same policy.
    let (s, body) = webhook(env, 4).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["status"], "AwaitingApproval");
    env.settle().await;
    assert_eq!(
        posts(env),
        0,
        "nothing reaches Defender while requests wait"
    );
    for id in &ids {
        assert_eq!(status_of(env, id).await, "AwaitingApproval");
    }

    // The requester can't approve their own request.
    let own = approvals::decide(
        &r.tables,
        &tenant(),
        &ids[0],
        Decision::Approve,
        "",
        acting(&ada),
    )
    .await
    .unwrap_err();
    assert_eq!(own.status(), 403, "{own}");
    assert_eq!(status_of(env, &ids[0]).await, "AwaitingApproval");

    // Another approver approves two and denies one: exactly two POSTs.
    let bob = user("bob");
    for id in &ids[..2] {
        let moved = approvals::decide(
            &r.tables,
            &tenant(),
            id,
            Decision::Approve,
            "ok",
            acting(&bob),
        )
        .await
        .unwrap();
        let job = moved.job.expect("an approval queues the job");
        env.host
            .enqueue("offboard", &job.to_message())
            .await
            .unwrap();
    }
    let denied = approvals::decide(
        &r.tables,
        &tenant(),
        &ids[2],
        Decision::Deny,
        "keep this one",
        acting(&bob),
    )
    .await
    .unwrap();
    assert!(denied.job.is_none());
    assert_eq!(denied.request.status.as_str(), "Denied");
    env.settle().await;
    assert_eq!(posts(env), 2, "{:?}", env.sim.offboard_posts());
    assert_eq!(status_of(env, &ids[2]).await, "Denied");
    // A decided request can't be decided again.
    let late = approvals::decide(
        &r.tables,
        &tenant(),
        &ids[2],
        Decision::Approve,
        "",
        acting(&bob),
    )
    .await
    .unwrap_err();
    assert_eq!(late.status(), 409);

    // The decisions are audited with their actor and comment.
    let audit = env.rows("Audit", T1).await;
    let by_bob: Vec<_> = audit
        .iter()
        .filter(|e| e.get_str("Actor") == Some("user:bob@contoso.com"))
        .collect();
    assert_eq!(by_bob.len(), 3, "two approvals and a denial");
    assert!(
        by_bob.iter().any(|e| e
            .get_str("Detail")
            .unwrap_or_default()
            .contains("keep this one")),
        "the denial's comment is kept"
    );

    // The tracker follows the two approved ones to their result.
    env.sim.advance(Duration::from_secs(600));
    run_timer(env, "ActionTracker").await;
    for id in &ids[..2] {
        assert_eq!(status_of(env, id).await, "Succeeded");
    }
    assert_eq!(posts(env), 2, "the denied one posted nothing");
}

#[tokio::test]
async fn above_two_the_third_request_of_the_day_waits() {
    let r = rig(json!({"mode": "above", "threshold": 2})).await;
    let env = &r.env;
    for n in 1..=2 {
        let (s, body) = webhook(env, n).await;
        assert_eq!(s, 202, "{body}");
        assert_eq!(body["status"], "Accepted", "request {n}");
    }
    let (s, third) = webhook(env, 3).await;
    assert_eq!(s, 202, "{third}");
    assert_eq!(third["status"], "AwaitingApproval");
    env.settle().await;
    assert_eq!(posts(env), 2, "only the first two reached Defender");
}

#[tokio::test]
async fn above_a_threshold_concurrent_requests_let_exactly_that_many_through() {
    let r = rig(json!({"mode": "above", "threshold": 3})).await;
    let env = &r.env;
    // Eight at once, each its own HTTP call to the host.
    let mut calls = tokio::task::JoinSet::new();
    for n in 1..=8u32 {
        let (http, url, key) = (
            env.http.clone(),
            env.url("offboard"),
            env.host.function_key().to_owned(),
        );
        calls.spawn(async move {
            let res = http
                .post(url)
                .header("x-functions-key", key)
                .header("content-type", "application/json")
                .body(json!({"tenantId": T1, "machineId": mid(n), "comment": "leaver"}).to_string())
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        });
    }
    let answers = calls.join_all().await;
    let accepted = answers
        .iter()
        .filter(|(s, b)| *s == 202 && b["status"] == "Accepted")
        .count();
    let waiting = answers
        .iter()
        .filter(|(s, b)| *s == 202 && b["status"] == "AwaitingApproval")
        .count();
    assert_eq!((accepted, waiting), (3, 5), "{answers:?}");
}

#[tokio::test]
async fn two_approvers_at_once_give_one_outcome() {
    let r = rig(json!({"mode": "always"})).await;
    let env = &r.env;
    let (_, body) = webhook(env, 1).await;
    let id = rid(&body);
    let (bob, eve) = (user("bob"), user("eve"));
    let t = tenant();
    let (a, d) = tokio::join!(
        approvals::decide(&r.tables, &t, &id, Decision::Approve, "yes", acting(&bob)),
        approvals::decide(&r.tables, &t, &id, Decision::Deny, "no", acting(&eve)),
    );
    let winners = [a.is_ok(), d.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(winners, 1, "{a:?} {d:?}");
    let loser = a.as_ref().err().or(d.as_ref().err()).unwrap();
    assert_eq!(loser.status(), 409, "{loser}");
    let stored = status_of(env, &id).await;
    if a.is_ok() {
        assert_eq!(stored, "Accepted");
    } else {
        assert_eq!(stored, "Denied");
    }
    // One decision row in the audit trail, not two.
    let decided = env
        .rows("Audit", T1)
        .await
        .into_iter()
        .filter(|e| {
            e.get_str("Subject") == Some(id.as_str())
                && matches!(e.get_str("Status"), Some("Accepted" | "Denied"))
        })
        .count();
    assert_eq!(decided, 1);
}

#[tokio::test]
async fn waiting_requests_are_announced_once_and_expire_after_their_ttl_with_notes() {
    let r = rig(json!({"mode": "always"})).await;
    let env = &r.env;
    let (_, first) = webhook(env, 1).await;
    let (_, second) = webhook(env, 2).await;
    let (waiting, old) = (rid(&first), rid(&second));
    // The second one began waiting 73 hours ago (APPROVAL_TTL_HOURS is 72).
    let table = env.tables.table("OffboardRequests").unwrap();
    let mut row = table.get(T1, old.as_str()).await.unwrap().unwrap();
    let then = time::OffsetDateTime::now_utc() - time::Duration::hours(73);
    row.set("CreatedAt", EdmValue::DateTime(then));
    table.update_replace(&row, IfMatch::Any).await.unwrap();

    run_timer(env, "ActionTracker").await;
    assert_eq!(status_of(env, &old).await, "Expired");
    assert_eq!(status_of(env, &waiting).await, "AwaitingApproval");
    run_timer(env, "ActionTracker").await;
    assert_eq!(posts(env), 0, "an expired request posts nothing");

    let announced = events_for(env, &waiting);
    assert_eq!(
        announced.len(),
        1,
        "announced once over two runs: {announced:?}"
    );
    let text = announced[0].to_string();
    assert!(text.contains("AwaitingApproval"), "{text}");
    assert!(
        text.contains(&format!("{CONSOLE}/api/console/requests/{T1}/{waiting}")),
        "the note links the console: {text}"
    );
    let expired = events_for(env, &old);
    assert!(
        expired.iter().any(|e| e.to_string().contains("Expired")),
        "{expired:?}"
    );
    // Nobody approves an expired request.
    let bob = user("bob");
    let late = approvals::decide(
        &r.tables,
        &tenant(),
        &old,
        Decision::Approve,
        "",
        acting(&bob),
    )
    .await
    .unwrap_err();
    assert_eq!(late.status(), 409);

    // A denial's note links the console too.
    let denied = approvals::decide(
        &r.tables,
        &tenant(),
        &waiting,
        Decision::Deny,
        "no",
        Acting {
            actor: &bob,
            console_base: Some(&url::Url::parse(CONSOLE).unwrap()),
            now: time::OffsetDateTime::now_utc(),
        },
    )
    .await
    .unwrap();
    let note = denied.note.expect("a denial is notified");
    assert!(note.to_message().contains("Denied"));
    assert!(
        note.to_message()
            .contains(&format!("/api/console/requests/{T1}/{waiting}"))
    );
}

#[tokio::test]
async fn a_cancelled_request_posts_nothing_even_when_its_job_arrives_later() {
    let r = rig(json!({"mode": "never"})).await;
    let env = &r.env;
    // Accepted, and its job not run yet: cancel it first, then deliver the job.
    let ada = user("ada");
    let selection = Selection {
        tenant_id: tenant(),
        machines: vec![MachineId::parse(&mid(5)).unwrap()],
        reason: "mistake".into(),
        nonce: "form-cancel-1".into(),
    };
    let (answers, jobs) = console::offboard_devices(&r.app, &ada, &selection)
        .await
        .unwrap();
    let DeviceAnswer::New(req) = &answers[0].answer else {
        panic!("{answers:?}")
    };
    assert_eq!(req.status.as_str(), "Accepted");
    assert_eq!(jobs.len(), 1);
    let cancelled = approvals::cancel(&r.tables, &tenant(), &req.request_id, "oops", acting(&ada))
        .await
        .unwrap();
    assert_eq!(cancelled.request.status.as_str(), "Cancelled");
    env.host
        .enqueue("offboard", &jobs[0].to_message())
        .await
        .unwrap();
    env.settle().await;
    assert_eq!(posts(env), 0);
    assert_eq!(status_of(env, &req.request_id).await, "Cancelled");
    // Final: not cancelled twice, not approved.
    let again = approvals::cancel(&r.tables, &tenant(), &req.request_id, "", acting(&ada))
        .await
        .unwrap_err();
    assert_eq!(again.status(), 409);
    // A new request for the device is possible after a cancel.
    let (s, body) = webhook(env, 5).await;
    assert_eq!(s, 202, "{body}");
}
