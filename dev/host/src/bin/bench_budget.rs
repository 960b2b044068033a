//! Benchmark: Defender API budget use. 1,000 offboards across 10 tenants go through the API,
//! the offboard worker submits them within each tenant's budget (100 calls a minute), and
//! this prints how long that took against the time the limit allows, the Defender calls
//! made, the most calls any tenant made in one minute, and the 429s we caused ourselves.
//!
//! `cargo build --release --bin handler && cargo run --release -p dev-host --bin bench_budget`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_ops::clients::tables::{TableOptions, TableService, filter};
use defender_ops::config::StorageSettings;
use dev_host::{Azurite, Host, HostConfig};
use dev_sim::{AppRegistration, Machine, Sim, SimConfig};
use futures::StreamExt;
use serde_json::json;

const TENANTS: usize = 10;
const PER_TENANT: usize = 100;
const LIMIT_PER_MINUTE: f64 = 100.0;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn handler_path() -> PathBuf {
    std::env::args()
        .skip_while(|a| a != "--handler")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var("CARGO_TARGET_DIR")
                .map_or_else(|_| workspace().join("target"), PathBuf::from);
            target.join("release").join("handler")
        })
}

fn tenant_id(i: usize) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        0xb0d6_e700u32 + i as u32,
        i
    )
}

fn machine_id(t: usize, n: usize) -> String {
    format!("{:08x}{:032x}", t, n)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let handler = handler_path();
    if !handler.exists() {
        bail!(
            "{} is missing: run `cargo build --release --bin handler` first",
            handler.display()
        );
    }
    let azurite = Azurite::start().await.context("Azurite")?;
    let storage = azurite.connection_string();
    let sim = Sim::start(SimConfig::default())
        .await
        .context("simulator")?;
    let now = sim.now();
    for t in 0..TENANTS {
        let tenant = tenant_id(t);
        let client = format!("{:08x}-1111-4111-8111-{:012x}", t, t);
        sim.add_tenant(&tenant);
        sim.add_app(AppRegistration::with_secret(
            &tenant,
            &client,
            "bench-secret-value",
        ));
        sim.set_secret(&format!("bench-{t}"), "bench-secret-value");
        sim.add_machines(
            &tenant,
            (0..PER_TENANT).map(|n| Machine::new(machine_id(t, n), format!("pc-{t}-{n:03}"), now)),
        );
    }
    let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut cfg = HostConfig::new(workspace(), &handler, &storage);
    cfg.echo_handler_output = std::env::var("ECHO_HANDLER").is_ok();
    cfg.env = dev_host::sim_settings::handler_settings(&sim, &prefix);
    dev_host::sim_settings::set(&mut cfg.env, "RUST_LOG", "warn");
    // Its offboard calls are unsigned function-key calls (design §9.1).
    dev_host::sim_settings::set(&mut cfg.env, "WEBHOOK_ALLOW_UNSIGNED", "true");
    let host = Host::start(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("dev-host: {e:#}"))?;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/{path}", host.base_url().trim_end_matches('/'));

    for t in 0..TENANTS {
        let tenant = tenant_id(t);
        let res = http
            .put(api(&format!("tenants/{tenant}")))
            .header("x-functions-key", host.admin_key())
            .json(&json!({"displayName": format!("Tenant {t}"), "clientId": format!("{:08x}-1111-4111-8111-{:012x}", t, t), "authMode": "secret", "secretName": format!("bench-{t}")}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("registering tenant {t}: {}", res.status());
        }
    }
    host.wait_for_idle(Duration::from_secs(300))
        .await
        .context("first syncs")?;
    sim.clear_requests();

    let started = Instant::now();
    let posts = (0..TENANTS).flat_map(|t| (0..PER_TENANT).map(move |n| (t, n)));
    let answers: Vec<u16> = futures::stream::iter(posts)
        .map(|(t, n)| {
            let http = http.clone();
            let url = api("offboard");
            let key = host.function_key().to_owned();
            async move {
                http.post(url)
                    .header("x-functions-key", key)
                    .json(&json!({"tenantId": tenant_id(t), "machineId": machine_id(t, n), "comment": "bench"}))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let accepted = answers.iter().filter(|s| **s == 202).count();
    let accepted_after = started.elapsed();

    let tables = TableService::from_settings(
        &StorageSettings::ConnectionString(storage.clone().into()),
        TableOptions::with_prefix(prefix.clone()),
    )?;
    let requests = tables.table("OffboardRequests")?;
    let waiting = filter::eq("Status", "Accepted");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let left = requests
            .query_all(Some(&waiting), Some(&["Status"]))
            .await?
            .len();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} requests still Accepted after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();

    let recorded = sim.requests();
    let mut worst_calls = 0usize;
    let mut total_calls = 0usize;
    let mut self_429 = 0usize;
    let mut worst_minute = 0usize;
    for t in 0..TENANTS {
        let tenant = tenant_id(t);
        let mine: Vec<_> = recorded
            .iter()
            .filter(|r| {
                r.tenant.as_deref() == Some(tenant.as_str()) && r.family.is_some_and(|f| f.is_mde())
            })
            .collect();
        worst_calls = worst_calls.max(mine.len());
        total_calls += mine.len();
        self_429 += mine
            .iter()
            .filter(|r| r.status == 429 && r.fault.is_none())
            .count();
        worst_minute =
            worst_minute.max(sim.max_calls_in_any_window(&tenant, Duration::from_secs(60)));
    }
    // The limit allows `calls / 100` minutes per tenant; tenants run side by side.
    let allowed = Duration::from_secs_f64(worst_calls as f64 * 60.0 / LIMIT_PER_MINUTE);
    let ratio = elapsed.as_secs_f64() / allowed.as_secs_f64();
    println!("## API budget use ({TENANTS} tenants × {PER_TENANT} offboards)\n");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| offboards accepted (202) | {accepted} of {} in {:.1} s | all |",
        answers.len(),
        accepted_after.as_secs_f64()
    );
    println!(
        "| Defender calls | {total_calls} (at most {worst_calls} for one tenant) | one POST per offboard |"
    );
    println!("| all submitted after | {:.1} s | |", elapsed.as_secs_f64());
    println!(
        "| time the 100/min limit allows | {:.1} s | |",
        allowed.as_secs_f64()
    );
    println!("| ratio | {ratio:.2}× | ≤ 1.1× |");
    println!("| most calls of one tenant in any 60 s | {worst_minute} | ≤ 100 |");
    println!("| self-inflicted 429s | {self_429} | 0 |");
    host.stop().await;
    drop(azurite);
    Ok(())
}
