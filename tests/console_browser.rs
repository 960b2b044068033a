//! The operator console in a real browser: dev/host + handler + Azurite + dev/sim, driven
//! through headless Chromium (tests/browser). One fleet and one browser for the whole
//! walk-through, so it stays well under a minute once built.
#![allow(clippy::unwrap_used)]

mod browser;
mod common;

use std::collections::BTreeMap;

use browser::Browser;
use common::{Env, Options};
use defender_ops::clients::tables::Entity;
use defender_ops::console::session::COOKIE_NAME;
use dev_sim::{AppRegistration, FleetSummary, SimConfig};
use fantoccini::Locator;
use reqwest::Method;
use serde_json::Value;

const T1: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
const T2: &str = "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8";
const APP1: &str = "11111111-1111-4111-8111-111111111111";
const APP2: &str = "22222222-2222-4222-8222-222222222222";
const HOME_APP: &str = "3f6b1d2e-4c5a-4b7e-9f80-a1b2c3d4e5f6";
const SESSION_SECRET: &str = "console-session-key-for-the-browser-tests-0123456789";
const HTML_NAME: &str = "<img src=x id=injected>.contoso.local";
const HTML_MESSAGE: &str = "Defender said <b id=bold>no</b> & <script>alert(1)</script>";

const HOME_SECRET: &str = "homeConsoleBrowser5ecret";

fn console_options() -> Options {
    let home = SimConfig::default().home_tenant;
    Options {
        settings: vec![
            ("CONSOLE_SESSION_SECRET".into(), "console-session".into()),
            ("HOME_TENANT_ID".into(), home),
            ("HOME_CLIENT_ID".into(), HOME_APP.into()),
            ("HOME_SECRET_NAME".into(), "home-app".into()),
        ],
        ..Options::default()
    }
}

/// Signs `user` in through the real flow: the console redirects to dev/sim's Entra sign-in
/// page, the test user's button is pressed, the callback sets the session cookie.
async fn sign_in(b: &Browser, env: &Env, user: &str) {
    b.goto(&env.url("console/static/icon.svg")).await;
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&env.url("console")).await;
    let at = b.url().await;
    assert!(
        at.path().ends_with("/oauth2/v2.0/authorize"),
        "no session → Entra's sign-in page, got {at}"
    );
    b.click(&format!("button[name='user'][value='{user}']"))
        .await;
    let back = b.url().await;
    assert!(
        back.as_str().starts_with(&env.url("console")),
        "back in the console after sign-in, got {back}"
    );
}

/// Every device of a tenant through the API (all pages), by machine id.
async fn api_devices(env: &Env, tenant: &str, query: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("devices/{tenant}?top=1000{query}");
        if let Some(t) = &token {
            path.push_str("&continuationToken=");
            path.extend(url::form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let (status, body) = env.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        for d in body["items"].as_array().unwrap() {
            out.insert(d["machineId"].as_str().unwrap().to_owned(), d.clone());
        }
        match body["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
}

/// The machine ids of the grid's rows, following "Next page" to the end.
async fn grid_ids(b: &Browser) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..50 {
        for a in b
            .client
            .find_all(Locator::Css("table#devices a.device"))
            .await
            .unwrap()
        {
            let href = a.attr("href").await.unwrap().unwrap();
            ids.push(href.rsplit('/').next().unwrap().to_owned());
        }
        match b.client.find(Locator::Css("a#next")).await {
            Ok(next) => next.click().await.unwrap(),
            Err(_) => return ids,
        }
    }
    panic!("the grid's pages did not end");
}

async fn cell(b: &Browser, tenant: &str, col: &str) -> u64 {
    b.text(&format!("tr[data-tenant='{tenant}'] td[data-col='{col}']"))
        .await
        .replace(',', "")
        .parse()
        .unwrap()
}

/// Parses an RFC 4180 document (the export's own format) into records.
fn read_csv(csv: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cur, mut quoted) = (vec![], vec![], String::new(), false);
    let mut chars = csv.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cur)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut cur));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cur.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn the_console_shows_the_seeded_fleet_in_a_real_browser() {
    let env = Env::start_with(console_options()).await;
    env.sim.set_secret("console-session", SESSION_SECRET);
    let home = env.sim.home_tenant().to_owned();
    env.sim
        .add_app(AppRegistration::with_secret(&home, HOME_APP, HOME_SECRET));
    env.sim.set_secret("home-app", HOME_SECRET);
    env.sim
        .add_redirect_uri(&home, HOME_APP, &env.url("console/auth/callback"));
    let mut fleets: Vec<(&str, FleetSummary)> = Vec::new();
    for (tenant, app, n, seed) in [(T1, APP1, 420, 7), (T2, APP2, 137, 11)] {
        env.sim.add_tenant(tenant);
        fleets.push((tenant, env.sim.generate_machines(tenant, n, seed)));
        let _ = app;
    }
    // A device whose name is HTML.
    let victim = env.sim.machines(T1)[5].id.clone();
    env.sim.update_machine(T1, &victim, |m| {
        m.computer_dns_name = Some(HTML_NAME.into())
    });
    for (tenant, app) in [(T1, APP1), (T2, APP2)] {
        env.register_tenant(tenant, app).await;
    }
    env.settle().await;
    // A Defender answer with HTML in it, as the worker records it.
    let requests = env.tables.table("OffboardRequests").unwrap();
    requests.create_if_not_exists().await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    requests
        .upsert_replace(
            &Entity::new(T1, "01JCONSOLETESTREQUEST0000A")
                .with("MachineId", victim.as_str())
                .with("DeviceName", HTML_NAME)
                .with("Source", "api")
                .with("Status", "Rejected")
                .with(
                    "HttpStatus",
                    defender_ops::clients::tables::EdmValue::Int32(400),
                )
                .with("Message", HTML_MESSAGE)
                .with("CreatedAt", now)
                .with("UpdatedAt", now),
        )
        .await
        .unwrap();
    let devices = env.tables.table("Devices").unwrap();
    devices
        .update_merge(
            &Entity::new(T1, victim.as_str())
                .with("Result", HTML_MESSAGE)
                .with("ResultAt", now),
            defender_ops::clients::tables::IfMatch::Any,
        )
        .await
        .unwrap();

    let b = Browser::start().await;

    // A person without a role is refused.
    sign_in(&b, &env, "norole").await;
    assert!(b.source().await.contains("No access to the console"));
    b.screenshot("no-role").await;

    // Every role may read; the overview's numbers are the generator's.
    for user in ["viewer", "operator", "approver", "admin"] {
        sign_in(&b, &env, user).await;
        let who = b.text("header .who .upn").await;
        assert_eq!(who, dev_sim::signin::test_user(user).unwrap().upn);
        assert_eq!(b.text("h1").await, "Fleet overview");
    }
    for (tenant, fleet) in &fleets {
        assert_eq!(cell(&b, tenant, "devices").await, fleet.total as u64);
        assert_eq!(cell(&b, tenant, "live").await, fleet.total as u64);
        assert_eq!(cell(&b, tenant, "stale").await, fleet.stale as u64);
        assert_eq!(
            cell(&b, tenant, "duplicates").await,
            (fleet.duplicates_by_name + fleet.duplicates_by_aad_device_id) as u64
        );
        assert_eq!(cell(&b, tenant, "gone").await, 0);
        assert_eq!(
            cell(&b, tenant, "maclinux").await,
            fleet.unsupported_platform as u64
        );
        assert!(
            b.text(&format!("tr[data-tenant='{tenant}'] td[data-col='sync']"))
                .await
                .contains("Succeeded")
        );
    }
    b.screenshot("overview").await;

    // Filter stale in the form: the same devices as GET /api/devices?stale=true.
    sign_in(&b, &env, "viewer").await;
    b.goto(&env.url("console/devices")).await;
    let form = b.client.form(Locator::Css("form.filters")).await.unwrap();
    form.set_by_name("tenant", T1).await.unwrap();
    form.set_by_name("stale", "true").await.unwrap();
    form.set_by_name("size", "100").await.unwrap();
    form.submit().await.unwrap();
    assert!(
        b.url()
            .await
            .query()
            .unwrap_or_default()
            .contains("stale=true")
    );
    b.screenshot("devices-stale").await;
    let shown = grid_ids(&b).await;
    let api: Vec<String> = api_devices(&env, T1, "&stale=true")
        .await
        .into_keys()
        .collect();
    assert!(!api.is_empty());
    assert_eq!(
        shown, api,
        "the grid's stale devices are the API's, in the same order"
    );

    // The CSV of a filter, every page, row for row against the API.
    b.goto(&env.url(&format!("console/devices?tenant={T1}")))
        .await;
    let csv_href = b
        .client
        .find(Locator::Css("a#csv"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let cookie = b.client.get_named_cookie(COOKIE_NAME).await.unwrap();
    let res = env
        .http
        .get(format!(
            "{}{csv_href}",
            env.host.base_url().trim_end_matches('/')
        ))
        .header("cookie", format!("{COOKIE_NAME}={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = read_csv(&res.text().await.unwrap());
    let header = &csv[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let all = api_devices(&env, T1, "").await;
    assert_eq!(csv.len() - 1, all.len(), "one record per device");
    for (record, (id, d)) in csv[1..].iter().zip(&all) {
        assert_eq!(&record[col("machineId")], id);
        for field in [
            "computerDnsName",
            "osPlatform",
            "duplicateOf",
            "result",
            "lastSeen",
        ] {
            let want = d[field].as_str().unwrap_or_default();
            let got = record[col(field)].trim_start_matches('\'');
            assert_eq!(got, want, "{id} {field}");
        }
        for field in ["stale", "gone", "offboard"] {
            assert_eq!(record[col(field)], d[field].as_bool().unwrap().to_string());
        }
    }

    // HTML in a device name and in Defender's message is shown as text.
    b.goto(&env.url(&format!("console/devices?tenant={T1}&name=img")))
        .await;
    assert!(b.client.find(Locator::Css("#injected")).await.is_err());
    assert_eq!(b.text("table#devices a.device").await, HTML_NAME);
    b.click("table#devices a.device").await;
    assert_eq!(b.text("h1#device-name").await, HTML_NAME);
    assert!(b.client.find(Locator::Css("#bold")).await.is_err());
    assert_eq!(
        b.text("#result").await.split(" (").next().unwrap(),
        HTML_MESSAGE
    );
    assert!(
        b.text("section.request .message")
            .await
            .contains(HTML_MESSAGE)
    );
    b.screenshot("device").await;

    // A device with a duplicate partner links to it.
    let dup = api_devices(&env, T1, "&duplicate=true")
        .await
        .into_values()
        .next()
        .unwrap();
    b.goto(&env.url(&format!(
        "console/devices/{T1}/{}",
        dup["machineId"].as_str().unwrap()
    )))
    .await;
    let partner = b.text("#duplicate-of a").await;
    assert!(!partner.is_empty());
    b.screenshot("device-duplicate").await;

    b.close().await;
}
