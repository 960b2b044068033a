//! Fault injection, end to end: throttling storms, 5xx bursts, connection resets, a POST
//! slower than the client's timeout, storage outages mid-sync and mid-offboard, the handler
//! killed right after Defender accepted a POST, redelivered messages and the poison path.
//!
//! For every scenario: each accepted request reaches a final state, Defender saw at most one
//! offboard POST per request, each notification went to Teams once, and after the next sync
//! the stored devices equal Defender's. A table of the counts is printed at the end.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Env, Options};
use dev_sim::{Fault, Machine, RouteFamily};
use reqwest::Method;
use serde_json::{Value, json};

const T1: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
const APP1: &str = "11111111-1111-4111-8111-111111111111";
const FINAL: &[&str] = &["Succeeded", "Failed", "TimeOut", "Cancelled", "Rejected"];

fn mid(n: u32) -> String {
    format!("{n:040x}")
}

#[derive(Debug, Default)]
struct Outcome {
    scenario: &'static str,
    requests: usize,
    lost: usize,
    duplicate_posts: usize,
    duplicate_notes: usize,
    missing_notes: usize,
    devices_differ: usize,
    seconds: f64,
}

async fn env_with(devices: u32, outages: bool) -> Env {
    let env = Env::start_with(Options {
        settings: vec![
            ("NOTIFY_TEAMS_SECRET".into(), "teams-url".into()),
            // The requests below are unsigned function-key calls (design §9.1).
            ("WEBHOOK_ALLOW_UNSIGNED".into(), "true".into()),
        ],
        outages,
        ..Options::default()
    })
    .await;
    let url = env.sim.add_teams_workflow("wf-faults", "sig-faults");
    env.sim.set_secret("teams-url", url.as_str());
    let now = env.sim.now();
    env.sim.add_tenant(T1);
    env.sim.add_machines(
        T1,
        (1..=devices).map(|n| Machine::new(mid(n), format!("pc-{n:04}.contoso.com"), now)),
    );
    env.register_tenant(T1, APP1).await;
    env.settle().await;
    env
}

/// Posts an offboard for each machine with an idempotency key, retrying (as a caller
/// would) until the service answers 200/202. Returns the request ids.
async fn request_all(env: &Env, machines: &[u32]) -> Vec<String> {
    let mut ids = Vec::new();
    for &n in machines {
        let body =
            json!({"tenantId": T1, "machineId": mid(n), "idempotencyKey": format!("faults-{n}")});
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, answer) = env.call(Method::POST, "offboard", Some(&body)).await;
            if status == 202 || status == 200 {
                ids.push(answer["requestId"].as_str().expect("request id").to_owned());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "offboard of {n} never accepted: {status} {answer}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    ids
}

async fn status(env: &Env, id: &str) -> Option<String> {
    let (code, body) = env
        .call(Method::GET, &format!("offboard/{T1}/{id}"), None)
        .await;
    (code == 200).then(|| body["status"].as_str().unwrap_or_default().to_owned())
}

/// Runs the worker queue dry, then moves Defender's clock and the tracker until every
/// request is final (or the rounds run out).
async fn drive(env: &Env, ids: &[String], rounds: usize) {
    for _ in 0..rounds {
        env.settle().await;
        let mut open = 0;
        for id in ids {
            if !status(env, id)
                .await
                .is_some_and(|s| FINAL.contains(&s.as_str()))
            {
                open += 1;
            }
        }
        if open == 0 {
            return;
        }
        env.sim.advance(Duration::from_secs(600));
        let _ = env.host.fire_timer("ActionTracker").await;
    }
    env.settle().await;
}

async fn check(
    env: &Env,
    scenario: &'static str,
    machines: &[u32],
    ids: &[String],
    started: Instant,
) -> Outcome {
    let mut o = Outcome {
        scenario,
        requests: ids.len(),
        ..Outcome::default()
    };
    for id in ids {
        if !status(env, id)
            .await
            .is_some_and(|s| FINAL.contains(&s.as_str()))
        {
            o.lost += 1;
        }
    }
    let posts = env.sim.offboard_posts();
    for &n in machines {
        let count = posts.iter().filter(|p| p.machine_id == mid(n)).count();
        o.duplicate_posts += count.saturating_sub(1);
    }
    let cards: Vec<String> = env
        .sim
        .teams_posts()
        .iter()
        .map(|p| p.body.to_string())
        .collect();
    for id in ids {
        match cards.iter().filter(|c| c.contains(id.as_str())).count() {
            0 => o.missing_notes += 1,
            1 => {}
            n => o.duplicate_notes += n - 1,
        }
    }
    // The next sync makes the stored devices equal to Defender's.
    env.sim.clear_faults();
    if let Some((t, q)) = &env.storage_relays {
        t.restore();
        q.restore();
    }
    let run = env.host.fire_timer("SyncScheduler").await.expect("timer");
    assert!(run.succeeded(), "{scenario}: {:?}", run.result);
    env.settle().await;
    let truth: BTreeMap<String, String> = env
        .sim
        .machines(T1)
        .into_iter()
        .map(|m| (m.id.clone(), m.health_status.clone()))
        .collect();
    let stored: BTreeMap<String, String> = env
        .rows("Devices", T1)
        .await
        .into_iter()
        .filter(|r| r.get_bool("Gone") != Some(true))
        .map(|r| {
            (
                r.row_key.clone(),
                r.get_str("HealthStatus").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    o.devices_differ = truth.len().abs_diff(stored.len())
        + truth
            .iter()
            .filter(|(k, v)| stored.get(*k) != Some(v))
            .count();
    o.seconds = started.elapsed().as_secs_f64();
    o
}

async fn scenario_faults(name: &'static str, faults: &[(RouteFamily, Fault)]) -> Outcome {
    let env = env_with(6, false).await;
    let started = Instant::now();
    for (family, fault) in faults {
        env.sim.inject_fault(*family, fault.clone());
    }
    let machines: Vec<u32> = (1..=5).collect();
    let ids = request_all(&env, &machines).await;
    drive(&env, &ids, 8).await;
    check(&env, name, &machines, &ids, started).await
}

async fn scenario_slow_post() -> Outcome {
    let env = env_with(3, false).await;
    let started = Instant::now();
    // Longer than the client's 30 s timeout: the POST's fate is unknown to the worker.
    env.sim.inject_fault(
        RouteFamily::Offboard,
        Fault::Delay {
            ms: 31_000,
            count: 1,
        },
    );
    let machines = [1u32];
    let ids = request_all(&env, &machines).await;
    drive(&env, &ids, 8).await;
    check(
        &env,
        "offboard POST slower than the timeout",
        &machines,
        &ids,
        started,
    )
    .await
}

async fn scenario_storage_outage_mid_offboard() -> Outcome {
    let env = env_with(6, true).await;
    let started = Instant::now();
    let machines: Vec<u32> = (1..=5).collect();
    let relays = env.storage_relays.as_ref().expect("relays");
    let ids = {
        let cutter = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            relays.0.cut();
            relays.1.cut();
            tokio::time::sleep(Duration::from_secs(3)).await;
            relays.0.restore();
            relays.1.restore();
        };
        let (ids, ()) = tokio::join!(request_all(&env, &machines), cutter);
        ids
    };
    drive(&env, &ids, 10).await;
    check(
        &env,
        "storage outage mid-offboard",
        &machines,
        &ids,
        started,
    )
    .await
}

async fn scenario_storage_outage_mid_sync() -> Outcome {
    let env = env_with(10, true).await;
    env.sim.generate_machines(T1, 3_000, 11);
    let started = Instant::now();
    let relays = env.storage_relays.as_ref().expect("relays");
    let machine_reads = || {
        env.sim
            .requests()
            .iter()
            .filter(|r| r.family == Some(RouteFamily::Machines))
            .count()
    };
    // Counted before the timer fires, so a page read right away still counts.
    let seen = machine_reads();
    let run = env.host.fire_timer("SyncScheduler").await.expect("timer");
    assert!(run.succeeded());
    // Cut storage once the sync is reading Defender's pages.
    let deadline = Instant::now() + Duration::from_secs(30);
    while machine_reads() == seen {
        assert!(
            Instant::now() < deadline,
            "the sync never read a page of machines"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relays.0.cut();
    relays.1.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    relays.0.restore();
    relays.1.restore();
    env.settle().await;
    check(&env, "storage outage mid-sync", &[], &[], started).await
}

async fn scenario_handler_killed_after_post() -> Outcome {
    let env = env_with(6, false).await;
    let started = Instant::now();
    let machines: Vec<u32> = (1..=3).collect();
    // Slow Defender down a little so the kill lands between its answer and our row update.
    env.sim
        .inject_fault(RouteFamily::Offboard, Fault::Delay { ms: 200, count: 3 });
    let ids = request_all(&env, &machines).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.sim.offboard_posts().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let starts = env.host.handler_starts();
    env.host.kill_handler();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.host.handler_starts() == starts && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.host
        .wait_handler_ready(Duration::from_secs(30))
        .await
        .expect("restarted");
    drive(&env, &ids, 10).await;
    check(
        &env,
        "handler SIGKILL after the POST",
        &machines,
        &ids,
        started,
    )
    .await
}

async fn scenario_redelivery() -> Outcome {
    let env = env_with(6, false).await;
    let started = Instant::now();
    let machines: Vec<u32> = (1..=4).collect();
    let ids = request_all(&env, &machines).await;
    for id in &ids {
        let job = json!({"tenantId": T1, "requestId": id}).to_string();
        env.host.enqueue("offboard", &job).await.expect("enqueue");
    }
    drive(&env, &ids, 8).await;
    // And every result note delivered again.
    let outbox = env.tables.table("Outbox").expect("outbox");
    for row in outbox.query_all(None, None).await.unwrap_or_default() {
        if let Some(payload) = row.get_str("Payload") {
            env.host
                .enqueue("notifications", payload)
                .await
                .expect("enqueue");
        }
    }
    env.settle().await;
    check(&env, "queue redelivery", &machines, &ids, started).await
}

async fn scenario_poison() -> Outcome {
    let env = env_with(3, false).await;
    let started = Instant::now();
    env.sim.inject_fault(
        RouteFamily::Offboard,
        Fault::Status {
            status: 500,
            count: 1000,
        },
    );
    env.sim.inject_fault(
        RouteFamily::MachineActions,
        Fault::Status {
            status: 503,
            count: 1000,
        },
    );
    let machines = [1u32];
    let ids = request_all(&env, &machines).await;
    env.settle().await;
    let o = check(
        &env,
        "persistent 5xx (last delivery)",
        &machines,
        &ids,
        started,
    )
    .await;
    assert_eq!(
        status(&env, &ids[0]).await.as_deref(),
        Some("Failed"),
        "the last delivery records Failed"
    );
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_loses_nothing_and_does_nothing_twice() {
    // The scenarios are independent (own simulator, table prefix, queues and handler), so
    // they run side by side.
    let outcomes = futures::join!(
        scenario_faults(
            "429 storm with Retry-After",
            &[
                (
                    RouteFamily::Offboard,
                    Fault::Throttle {
                        retry_after: 1,
                        count: 6
                    }
                ),
                (
                    RouteFamily::MachineActions,
                    Fault::Throttle {
                        retry_after: 1,
                        count: 6
                    }
                ),
                (
                    RouteFamily::Machines,
                    Fault::Throttle {
                        retry_after: 1,
                        count: 2
                    }
                ),
            ],
        ),
        scenario_faults(
            "500/503 bursts",
            &[
                (
                    RouteFamily::Offboard,
                    Fault::Status {
                        status: 503,
                        count: 3
                    }
                ),
                (
                    RouteFamily::MachineActions,
                    Fault::Status {
                        status: 500,
                        count: 4
                    }
                ),
                (
                    RouteFamily::Teams,
                    Fault::Status {
                        status: 500,
                        count: 2
                    }
                ),
            ],
        ),
        scenario_faults(
            "connection resets",
            &[
                (RouteFamily::Offboard, Fault::Reset { count: 3 }),
                (RouteFamily::MachineActions, Fault::Reset { count: 3 }),
                (RouteFamily::Token, Fault::Reset { count: 1 }),
            ],
        ),
        scenario_slow_post(),
        scenario_storage_outage_mid_offboard(),
        scenario_storage_outage_mid_sync(),
        scenario_handler_killed_after_post(),
        scenario_redelivery(),
        scenario_poison(),
    );
    let outcomes = [
        outcomes.0, outcomes.1, outcomes.2, outcomes.3, outcomes.4, outcomes.5, outcomes.6,
        outcomes.7, outcomes.8,
    ];
    println!(
        "\n| scenario | requests | lost | duplicate POSTs | duplicate notifications | missing notifications | devices ≠ Defender | s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            o.scenario,
            o.requests,
            o.lost,
            o.duplicate_posts,
            o.duplicate_notes,
            o.missing_notes,
            o.devices_differ,
            o.seconds
        );
    }
    let total: Value = json!({
        "scenarios": outcomes.len(),
        "requests": outcomes.iter().map(|o| o.requests).sum::<usize>(),
        "lost": outcomes.iter().map(|o| o.lost).sum::<usize>(),
        "duplicatePosts": outcomes.iter().map(|o| o.duplicate_posts).sum::<usize>(),
        "duplicateNotifications": outcomes.iter().map(|o| o.duplicate_notes).sum::<usize>(),
    });
    println!("totals: {total}");
    for o in &outcomes {
        assert_eq!(o.lost, 0, "{}: requests lost", o.scenario);
        assert_eq!(o.duplicate_posts, 0, "{}: duplicate POSTs", o.scenario);
        assert_eq!(
            o.duplicate_notes, 0,
            "{}: duplicate notifications",
            o.scenario
        );
        assert_eq!(o.missing_notes, 0, "{}: notifications missing", o.scenario);
        assert_eq!(
            o.devices_differ, 0,
            "{}: stored devices differ from Defender",
            o.scenario
        );
    }
}
