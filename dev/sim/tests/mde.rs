//! Defender for Endpoint self-tests: fixture shapes, paging, OData 400s, offboard errors,
//! actions on the sim clock, rate limits and faults.

mod common;

use std::time::Duration;

use common::*;
use dev_sim::{Fault, Machine, OffboardConfig, RateLimits, RouteFamily};
use serde_json::Value;

fn machines_from_fixture() -> Vec<Machine> {
    serde_json::from_value(fixture("machines.page1.json")["value"].clone())
        .expect("fixture machines")
}

async fn get(url: url::Url, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn offboard(sim: &dev_sim::Sim, token: &str, id: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(sim.url(&format!("api/machines/{id}/offboard")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn machines_round_trip_the_fixture_shape() {
    let sim = sim().await;
    let fixture_machines = machines_from_fixture();
    sim.add_machines(TENANT, fixture_machines.clone());
    let token = mde_token(&sim).await;
    let (s, h, body) = get(sim.url("api/machines?$top=5"), &token).await;
    assert_eq!(s, 200);
    assert!(
        h["content-type"]
            .to_str()
            .expect("ascii")
            .contains("odata.metadata=minimal")
    );
    assert_eq!(h["odata-version"], "4.0");
    let fx = fixture("machines.page1.json");
    assert_eq!(
        body["value"], fx["value"],
        "machines serialise exactly like the fixture"
    );
    assert!(body.get("@odata.nextLink").is_none());
    let (_, _, page) = get(sim.url("api/machines?$top=2"), &token).await;
    assert_same_shape(&page, &fx, "page");
}

#[tokio::test]
async fn twenty_five_thousand_machines_come_in_three_pages_of_ten_thousand() {
    let sim = sim().await;
    sim.generate_machines(TENANT, 25_000, 1);
    let token = mde_token(&sim).await;
    let mut url = sim.url("api/machines?$top=10000");
    let mut sizes = Vec::new();
    let mut ids = std::collections::HashSet::new();
    loop {
        let (s, _, body) = get(url.clone(), &token).await;
        assert_eq!(s, 200);
        let value = body["value"].as_array().expect("value");
        sizes.push(value.len());
        ids.extend(
            value
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_owned()),
        );
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                url = next.parse().expect("absolute nextLink");
                assert_eq!(url.host_str(), sim.base_url().host_str());
            }
            None => break,
        }
    }
    assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
    assert_eq!(ids.len(), 25_000);
}

#[tokio::test]
async fn filters_top_and_empty_tenants_answer_like_mde() {
    let sim = sim().await;
    let token = mde_token(&sim).await;
    let (s, _, body) = get(sim.url("api/machines"), &token).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );

    sim.add_machines(TENANT, machines_from_fixture());
    let (s, _, body) = get(sim.url("api/machines?$top=10001"), &token).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("ODataError"))
    );
    for (filter, n) in [
        ("healthStatus ne 'Active'", 2),
        ("osPlatform eq 'Linux' and healthStatus eq 'Active'", 1),
        ("startswith(computerDnsName,'app-')", 1),
        ("lastSeen lt 2026-10-01Z", 1),
        ("lastSeen gt 2026-11-06T00:00:00Z", 2),
        ("rbacGroupId eq 412", 1),
        ("computerDnsName eq 'nothing'", 0),
    ] {
        let mut url = sim.url("api/machines");
        url.query_pairs_mut().append_pair("$filter", filter);
        let (s, _, body) = get(url, &token).await;
        assert_eq!(s, 200, "{filter}");
        assert_eq!(body["value"].as_array().map(Vec::len), Some(n), "{filter}");
    }
    let mut url = sim.url("api/machines");
    url.query_pairs_mut()
        .append_pair("$filter", "bogusField eq 'x'");
    assert_eq!(get(url, &token).await.0, 400);

    let (s, _, body) = get(sim.url("api/machines"), "not-a-token").await;
    assert_eq!(s, 401);
    assert_same_shape(&body, &fixture("error.401.unauthorized.json"), "401");
    let graph = graph_token(&sim).await;
    assert_eq!(get(sim.url("api/machines"), &graph).await.0, 403);
}

#[tokio::test]
async fn offboard_errors_are_the_documented_ones() {
    let sim = sim().await;
    sim.add_machines(TENANT, machines_from_fixture());
    let token = mde_token(&sim).await;
    let win = "e51b7d3c9a0f2468ace13579bdf02468ace13579";
    let linux = "0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c";
    let unknown = "ffffffffffffffffffffffffffffffffffffffff";
    for (id, body, status, fixture_name) in [
        (
            unknown,
            r#"{"Comment":"x"}"#,
            404,
            "error.404.machine-not-found.json",
        ),
        (
            win,
            r#"{"comment":"x"}"#,
            400,
            "error.offboard.400.missing-comment.json",
        ),
        (
            win,
            r#"{"Comment":"x""#,
            400,
            "error.offboard.400.invalid-body.json",
        ),
        (
            linux,
            r#"{"Comment":"x"}"#,
            400,
            "error.offboard.400.os-not-supported.json",
        ),
    ] {
        let (s, b) = offboard(&sim, &token, id, body).await;
        assert_eq!(s, status, "{body}");
        let fx = fixture(fixture_name);
        assert_same_shape(&b, &fx, fixture_name);
        assert_eq!(b["error"]["code"], fx["error"]["code"], "{fixture_name}");
    }
    let (s, b) = offboard(&sim, &token, win, r#"{"Comment":"stale"}"#).await;
    assert_eq!(s, 200);
    let fx = fixture("machine-action.offboard.201.json");
    assert_same_shape(&b, &fx, "action");
    assert_eq!(b["status"], "Pending");
    let (s, b) = offboard(&sim, &token, win, r#"{"Comment":"again"}"#).await;
    assert_eq!(s, 400);
    assert_same_shape(
        &b,
        &fixture("error.offboard.400.action-in-progress.json"),
        "dup",
    );
    assert_eq!(b["error"]["code"], "ActiveRequestAlreadyExists");
    assert_eq!(sim.offboard_posts().len(), 6);

    // Missing role.
    sim.add_app(dev_sim::AppRegistration {
        mde_roles: vec!["Machine.Read.All".into()],
        ..dev_sim::AppRegistration::with_secret(TENANT, "reader", "pw")
    });
    let reader = token_for(&sim, TENANT, "reader", "pw", dev_sim::audiences::MDE).await;
    let (s, b) = offboard(&sim, &reader, win, r#"{"Comment":"x"}"#).await;
    assert_eq!(s, 403);
    assert_eq!(b, {
        let mut fx = fixture("error.403.missing-permission.json");
        fx["error"]["target"] = b["error"]["target"].clone();
        fx
    });
}

#[tokio::test]
async fn actions_advance_with_the_clock_and_offline_devices_time_out() {
    let sim = sim().await;
    sim.set_offboard_config(OffboardConfig {
        respond_201: true,
        ..OffboardConfig::default()
    });
    let mut machines = machines_from_fixture();
    machines.truncate(3);
    sim.add_machines(TENANT, machines);
    let online = "a3f9c2e17b5d48e09c1f6a2b3d4e5f60718293ab";
    let offline = "7c04e9b2d1a3f5687e9d0c1b2a3f4e5d6c7b8a90";
    sim.set_machine_offline(TENANT, offline, true);
    let token = mde_token(&sim).await;
    let (s, a) = offboard(&sim, &token, online, r#"{"Comment":"c"}"#).await;
    assert_eq!(s, 201);
    let (_, b) = offboard(&sim, &token, offline, r#"{"Comment":"c"}"#).await;
    let (aid, bid) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    let status = |id: &str| {
        let url = sim.url(&format!("api/machineactions/{id}"));
        let token = token.clone();
        async move {
            get(url, &token).await.2["status"]
                .as_str()
                .map(str::to_owned)
        }
    };
    sim.advance(Duration::from_secs(61));
    assert_eq!(status(aid).await.as_deref(), Some("InProgress"));
    assert_eq!(status(bid).await.as_deref(), Some("Pending"));
    sim.advance(Duration::from_secs(5 * 60));
    let (_, _, done) = get(sim.url(&format!("api/machineactions/{aid}")), &token).await;
    assert_eq!(done["status"], "Succeeded");
    assert_same_shape(
        &done,
        &fixture("machine-action.offboard.succeeded.json"),
        "succeeded",
    );
    sim.advance(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(status(bid).await.as_deref(), Some("TimeOut"));
    assert_eq!(get(sim.url("api/machineactions/nope"), &token).await.0, 404);

    let mut url = sim.url("api/machineactions");
    url.query_pairs_mut()
        .append_pair(
            "$filter",
            &format!("machineId eq '{online}' and type eq 'Offboard'"),
        )
        .append_pair("$top", "2");
    let (s, _, list) = get(url, &token).await;
    assert_eq!(s, 200);
    assert_same_shape(
        &list,
        &fixture("machineactions.filter-by-machine.json"),
        "list",
    );
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));

    // A third machine: cancel via the API, fail by hand.
    let third = "e51b7d3c9a0f2468ace13579bdf02468ace13579";
    let (_, c) = offboard(&sim, &token, third, r#"{"Comment":"c"}"#).await;
    let cid = c["id"].as_str().expect("id");
    let r = client()
        .post(sim.url(&format!("api/machineactions/{cid}/cancel")))
        .bearer_auth(&token)
        .json(&serde_json::json!({"Comment": "oops"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(status(cid).await.as_deref(), Some("Cancelled"));
    let (s, d) = offboard(&sim, &token, third, r#"{"Comment":"c"}"#).await;
    assert_eq!(s, 201);
    assert!(sim.fail_action(d["id"].as_str().expect("id")));
    assert_eq!(
        status(d["id"].as_str().expect("id")).await.as_deref(),
        Some("Failed")
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let sim = sim().await;
    sim.set_rate_limits(RateLimits {
        per_minute: 5,
        ..RateLimits::default()
    });
    sim.add_machines(TENANT, machines_from_fixture());
    let token = mde_token(&sim).await;
    for _ in 0..5 {
        assert_eq!(get(sim.url("api/machines"), &token).await.0, 200);
    }
    let r = client()
        .get(sim.url("api/machines"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry));
    let body: Value = r.json().await.expect("json");
    assert_same_shape(&body, &fixture("error.429.json"), "429");
    assert_eq!(
        sim.max_calls_in_any_window(TENANT, Duration::from_secs(60)),
        6
    );
}

#[tokio::test]
async fn injected_faults_apply_in_order_then_stop() {
    let sim = sim().await;
    sim.add_machines(TENANT, machines_from_fixture());
    let token = mde_token(&sim).await;
    sim.inject_fault(
        RouteFamily::Machines,
        Fault::Status {
            status: 503,
            count: 1,
        },
    );
    sim.inject_fault(
        RouteFamily::Machines,
        Fault::Throttle {
            retry_after: 7,
            count: 1,
        },
    );
    sim.inject_fault(RouteFamily::Machines, Fault::Reset { count: 1 });
    sim.inject_fault(RouteFamily::Machines, Fault::Delay { ms: 300, count: 1 });
    assert_eq!(get(sim.url("api/machines"), &token).await.0, 503);
    let (s, h, _) = get(sim.url("api/machines"), &token).await;
    assert_eq!((s, h["retry-after"].to_str().ok()), (429, Some("7")));
    let reset = client()
        .get(sim.url("api/machines"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(reset.is_err(), "connection dropped");
    let started = std::time::Instant::now();
    assert_eq!(get(sim.url("api/machines"), &token).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(get(sim.url("api/machines"), &token).await.0, 200);
    let log = sim.requests();
    let statuses: Vec<u16> = log
        .iter()
        .filter(|r| r.family == Some(RouteFamily::Machines))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![503, 429, 0, 200, 200]);
    // The bearer token is never recorded, in a path or anywhere else.
    let recorded = serde_json::to_string(&log).expect("log serializes");
    assert!(
        !recorded.contains(&token),
        "the token leaked into the request log"
    );
    assert!(
        log.iter()
            .filter(|r| r.family == Some(RouteFamily::Machines))
            .all(|r| r.had_bearer)
    );
}
