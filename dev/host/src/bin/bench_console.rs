//! `bench-console`: the operator console against a 10,000-device tenant on Azurite, side by
//! side with the HTTP API in one run:
//! (a) a filtered devices page (`/api/console/devices?tenant=…&stale=…&size=N`) against
//!     `GET /api/devices/{tenant}?stale=…&top=N` (same filter, same page), median wall time of
//!     alternating requests; target: the page within 1.5× the API;
//! (b) the page's HTML size (target ≤ 100 KiB), for 100 and 200 rows;
//! (c) the handler's peak RSS growth (VmHWM after − VmRSS before, peak reset first) while it
//!     builds the CSV export of all 10,000 devices (target < 16 MiB).
//!
//! Prints one markdown section on stdout; progress goes to stderr.
//!
//! ```text
//! bench-console [--devices N] [--reps N] [--handler PATH]
//! ```
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_ops::console::session::{COOKIE_NAME, Sealed, SessionKey};
use defender_ops::domain::roles::RoleSet;
use dev_host::{Azurite, Host, HostConfig};
use dev_sim::{AppRegistration, Sim, SimConfig};

#[path = "bench/common.rs"]
mod common;
use common::{handler_pid, mib, reset_peak, status_kib};

const TENANT: &str = "5b0c8e2a-71d4-4c9e-a3f6-2d8e9b1c4a70";
const APP: &str = "6c1d9f3b-82e5-4daf-b407-3e9fac2d5b81";
const HOME_APP: &str = "3f6b1d2e-4c5a-4b7e-9f80-a1b2c3d4e5f6";
const SESSION_SECRET: &str = "bench-console-session-secret-0123456789abcdef";

struct Args {
    devices: usize,
    reps: usize,
    handler: PathBuf,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        devices: 10_000,
        reps: 31,
        handler: workspace().join("target/release/handler"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--devices" => a.devices = it.next().context("--devices N")?.parse()?,
            "--reps" => a.reps = it.next().context("--reps N")?.parse()?,
            "--handler" => a.handler = it.next().context("--handler PATH")?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn timed_get(
    http: &reqwest::Client,
    url: &str,
    header: (&str, &str),
) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let res = http.get(url).header(header.0, header.1).send().await?;
    let status = res.status();
    let body = res.text().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        bail!("{url}: {status}: {}", &body[..body.len().min(300)]);
    }
    Ok((ms, body))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if !args.handler.exists() {
        bail!(
            "{} is missing: cargo build --release -p defender-ops --bin handler",
            args.handler.display()
        );
    }
    let sim = Sim::start(SimConfig::default()).await?;
    sim.add_tenant(TENANT);
    let summary = sim.generate_machines(TENANT, args.devices, 42);
    sim.add_app(AppRegistration::with_secret(TENANT, APP, "bench-secret"));
    sim.set_secret("tenant-bench", "bench-secret");
    sim.set_secret("console-session", SESSION_SECRET);
    let azurite = Azurite::start().await?;
    let mut env = dev_host::sim_settings::handler_settings(&sim, "bc");
    env.push(("RUST_LOG".into(), "warn".into()));
    env.push(("CONSOLE_SESSION_SECRET".into(), "console-session".into()));
    env.push(("HOME_TENANT_ID".into(), sim.home_tenant().to_owned()));
    env.push(("HOME_CLIENT_ID".into(), HOME_APP.into()));
    let mut cfg = HostConfig::new(workspace(), &args.handler, &azurite.connection_string());
    cfg.env = env;
    cfg.queue_prefix = "qc".into();
    cfg.host_json_patch =
        Some(serde_json::json!({"extensions": {"queues": {"visibilityTimeout": "00:00:01"}}}));
    let host = Host::start(cfg).await?;
    let http = reqwest::Client::new();
    let base = host.base_url().trim_end_matches('/').to_owned();
    eprintln!(
        "bench-console: registering the tenant and syncing {} devices",
        args.devices
    );
    let res = http
        .put(format!("{base}/api/tenants/{TENANT}"))
        .header("x-functions-key", host.admin_key())
        .json(&serde_json::json!({"displayName": "Bench", "clientId": APP, "authMode": "secret", "secretName": "tenant-bench"}))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("tenant PUT: {}", res.status());
    }
    host.wait_for_idle(Duration::from_secs(600)).await?;

    let key = SessionKey::derive(SESSION_SECRET.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sealed = key.seal(&Sealed::user(
        "bench@ops.test".into(),
        "00000000-0000-4000-8000-00000000b001".into(),
        "Bench".into(),
        RoleSet::from_claims(["Console.Viewer"]),
        time::OffsetDateTime::now_utc(),
    ));
    let cookie = format!("{COOKIE_NAME}={sealed}");
    let fkey = host.function_key().to_owned();

    let mut lines = Vec::new();
    for (label, filter_page, filter_api) in [
        ("stale=true", "stale=true", "stale=true"),
        ("gone=false", "gone=false", "gone=false"),
    ] {
        for size in [100u32, 200] {
            let page_url =
                format!("{base}/api/console/devices?tenant={TENANT}&{filter_page}&size={size}");
            let api_url = format!("{base}/api/devices/{TENANT}?{filter_api}&top={size}");
            // Warm both paths (tables opened, session key fetched).
            let (_, html) = timed_get(&http, &page_url, ("cookie", &cookie)).await?;
            let (_, json) = timed_get(&http, &api_url, ("x-functions-key", &fkey)).await?;
            let rows = html.matches("class=\"device\"").count();
            let items = serde_json::from_str::<serde_json::Value>(&json)?["items"]
                .as_array()
                .map_or(0, Vec::len);
            let (mut p, mut a) = (Vec::new(), Vec::new());
            for _ in 0..args.reps {
                p.push(timed_get(&http, &page_url, ("cookie", &cookie)).await?.0);
                a.push(
                    timed_get(&http, &api_url, ("x-functions-key", &fkey))
                        .await?
                        .0,
                );
            }
            let (pm, am) = (median(p), median(a));
            eprintln!("  {label} {size}: page {pm:.1} ms, API {am:.1} ms");
            lines.push(format!(
                "| {label}, {size} per page | {rows} rows, {:.1} KiB | {pm:.1} ms | {items} items, {:.1} KiB | {am:.1} ms | {:.2}× | {} |",
                html.len() as f64 / 1024.0,
                json.len() as f64 / 1024.0,
                pm / am,
                if pm / am <= 1.5 && html.len() <= 100 * 1024 { "yes" } else { "**no**" }
            ));
        }
    }

    // (c) CSV export of every device.
    let pid = handler_pid(&args.handler).context("the handler's pid")?;
    let csv_url = format!("{base}/api/console/devices.csv?tenant={TENANT}");
    let mut growth = Vec::new();
    let mut csv_ms = Vec::new();
    let mut csv_len = 0;
    let mut records = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !reset_peak(pid) {
            bail!("could not reset the handler's peak RSS (/proc/{pid}/clear_refs)");
        }
        let before = status_kib(pid, "VmRSS:").context("VmRSS")?;
        let (ms, body) = timed_get(&http, &csv_url, ("cookie", &cookie)).await?;
        let peak = status_kib(pid, "VmHWM:").context("VmHWM")?;
        growth.push(peak.saturating_sub(before) as f64);
        csv_ms.push(ms);
        csv_len = body.len();
        records = body.matches("\r\n").count() - 1;
    }
    let grow = mib(median(growth.clone()) as u64);
    let grow_max = mib(growth.iter().copied().fold(0.0, f64::max) as u64);
    let idle = status_kib(pid, "VmRSS:").map_or(0.0, mib);

    println!("## Console (bench-console)\n");
    println!(
        "One tenant of {} simulated devices (`generate_machines(…, {}, 42)`: {} stale), synced through dev/host into a fresh in-memory Azurite; \
         the release `handler`; {} alternating requests per line, medians of wall time seen by the client (dev/host in front of both). \
         The console page is signed in with a sealed session cookie (a viewer); the API call uses the function key.\n",
        summary.total, args.devices, summary.stale, args.reps
    );
    println!(
        "| Filter, page | Console page | render | `GET /api/devices` | time | page / API | within targets (≤ 1.5×, ≤ 100 KiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for l in &lines {
        println!("{l}");
    }
    println!();
    println!(
        "CSV export of all {records} devices (`/api/console/devices.csv?tenant=…`): {:.1} KiB, {:.0} ms median; \
         handler peak RSS growth (VmHWM after − VmRSS before, peak reset first) {grow:.1} MiB median, {grow_max:.1} MiB max of 3 \
         (target < 16 MiB; {}). Handler RSS afterwards {idle:.1} MiB.\n",
        csv_len as f64 / 1024.0,
        median(csv_ms),
        if grow_max < 16.0 {
            "met"
        } else {
            "**not met**"
        }
    );
    drop(host);
    drop(azurite);
    Ok(())
}
