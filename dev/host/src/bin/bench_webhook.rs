//! `bench-webhook`: signed `POST /api/offboard` through dev/host at increasing concurrency,
//! next to Azurite's own single-operation rate measured in the same run.
//!
//! Prints one markdown section on stdout; progress goes to stderr.
//!
//! ```text
//! bench-webhook [--step-secs S] [--devices N] [--handler PATH] [--dry-levels 1,4,..] [--real-levels 8,..]
//! ```
//!
//! Loopback only, bounded: each step runs `S` seconds (default 7) with a fixed number of
//! request loops, each waiting for its answer before sending the next (closed loop).
//!
//! - `dryRun: true` steps: every request names a different eligible machine (Windows, no
//!   exclusion tag, not gone) and carries a unique comment, so no signature repeats (the
//!   replay guard would answer 401) and no policy refuses it. A dry run records the request
//!   and its audit row but queues no job, so the numbers are the webhook's own cost.
//! - real steps: each request a machine never asked for before (a second request for a
//!   device with an open request is refused with 422 `RequestAlreadyOpen`); the accepted
//!   request queues an `offboard` job, and the OffboardWorker consuming it (rate-budgeted,
//!   100 Defender calls a minute per tenant) competes for Azurite and the CPU.
//!
//! Every table request of the product passes a counting proxy in front of Azurite, so
//! operations per accepted request are counted, not derived.
#![allow(clippy::unwrap_used)]
// The counting proxy and the /proc helpers are shared in copy with bench-sync.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_ops::clients::tables::{Entity, TableOptions, TableService, filter};
use defender_ops::config::StorageSettings;
use defender_ops::store::devices::{DeviceRow, col};
use dev_host::rig;
use dev_sim::{RateLimits, Sim, SimConfig};
use futures::StreamExt;

const TENANT: &str = "7d2e0a4c-93f6-4b1a-8c52-4fab3e6d7c92";
const APP: &str = "8e3f1b5d-a4a7-4c2b-9d63-50bc4f7e8da3";
const HMAC_SECRET_NAME: &str = "webhook-signing-key";
const HMAC_KEY: &str = "bench-webhook-signing-key-0123456789abcdef";
const DRY_LEVELS: &[usize] = &[1, 4, 16, 32, 64];
const REAL_LEVELS: &[usize] = &[8, 32];

struct Args {
    step: Duration,
    devices: usize,
    handler: PathBuf,
    dry_levels: Vec<usize>,
    real_levels: Vec<usize>,
}

/// `4,16,16` → [4, 16, 16]; an empty list skips those steps.
fn levels(arg: Option<String>) -> anyhow::Result<Vec<usize>> {
    let arg = arg.context("a comma-separated list of caller counts")?;
    arg.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Ok(s.trim().parse::<usize>()?))
        .collect()
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        step: Duration::from_secs(7),
        devices: 20_000,
        handler: rig::target_dir().join("release").join("handler"),
        dry_levels: DRY_LEVELS.to_vec(),
        real_levels: REAL_LEVELS.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--step-secs" => {
                a.step = Duration::from_secs_f64(it.next().context("--step-secs S")?.parse()?);
            }
            "--devices" => a.devices = it.next().context("--devices N")?.parse()?,
            "--handler" => a.handler = it.next().context("--handler PATH")?.into(),
            // For A/B runs of one change: e.g. `--dry-levels 16,16,16 --real-levels ''`.
            "--dry-levels" => a.dry_levels = levels(it.next())?,
            "--real-levels" => a.real_levels = levels(it.next())?,
            other => bail!("unknown argument {other}"),
        }
    }
    a.handler = rig::handler_binary(Some(a.handler), "release")?;
    Ok(a)
}

#[path = "bench/common.rs"]
mod common;
use common::*;

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // After the comm: state is field 3, utime 14 and stime 15 (1-based, man proc).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------------------
// The rig.

async fn start_bench_rig(sim: &Sim, handler: &std::path::Path) -> anyhow::Result<Rig> {
    let extra = vec![("WEBHOOK_HMAC_SECRET".into(), HMAC_SECRET_NAME.into())];
    start_rig(sim, handler, "w1", extra, |cfg| {
        cfg.queue_prefix = "qw".into();
        cfg.echo_handler_output = false;
    })
    .await
}

async fn register_and_sync(rig: &Rig, sim: &Sim) -> anyhow::Result<()> {
    sim.set_secret(HMAC_SECRET_NAME, HMAC_KEY);
    let app = dev_host::rig::TenantApp {
        tenant: TENANT,
        client_id: APP,
        display_name: "Bench",
        secret_name: "bench-tenant-secret",
        secret: "bench-s3cr3t",
    };
    dev_host::rig::register_tenant(&rig.http, &rig.host, sim, &app).await?;
    let audit = rig.direct.table("Audit")?;
    let f = filter::and(
        &filter::eq("PartitionKey", TENANT),
        &filter::eq("Kind", "DeviceSync"),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(rows) = audit.query_all(Some(&f), None).await
            && !rows.is_empty()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the first sync did not finish");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.host.wait_for_idle(Duration::from_secs(60)).await?;
    Ok(())
}

/// Devices no policy refuses: a supported OS, no exclusion tag, not gone.
async fn eligible(rig: &Rig) -> anyhow::Result<Vec<String>> {
    let t = rig.direct.table("Devices")?;
    let rows: Vec<Entity> = t
        .query_all(Some(&filter::eq("PartitionKey", TENANT)), None)
        .await?;
    let mut out = Vec::new();
    for entity in rows {
        let d = DeviceRow { entity };
        if d.flag(col::GONE) || !defender_ops::domain::device::offboard_supported(d.str(col::OS)) {
            continue;
        }
        if d.tags()
            .iter()
            .any(|t| t.eq_ignore_ascii_case("DoNotOffboard"))
        {
            continue;
        }
        out.push(d.machine_id().to_owned());
    }
    Ok(out)
}

struct Step {
    label: String,
    concurrency: usize,
    secs: f64,
    accepted: u64,
    errors: u64,
    error_kinds: BTreeMap<u16, u64>,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
    rss_start_mib: f64,
    rss_end_mib: f64,
    /// HTTP requests to the table endpoint (a `$batch` is one).
    table_requests: u64,
    /// Entity operations: single-entity requests plus each operation inside a `$batch`.
    table_ops: u64,
    traffic: String,
}

struct Load {
    url: String,
    key: String,
    http: reqwest::Client,
    machines: Vec<String>,
    next: AtomicUsize,
    serial: AtomicU64,
}

async fn run_step(
    rig: &Rig,
    load: &Arc<Load>,
    label: &str,
    concurrency: usize,
    dry_run: bool,
    dur: Duration,
    tck: u64,
) -> anyhow::Result<Step> {
    let pid = handler_pid(&rig.handler).context("the handler's pid")?;
    let cpu0 = cpu_ticks(pid).unwrap_or(0);
    let rss0 = status_kib(pid, "VmRSS:").unwrap_or(0);
    let before = rig.counts.snapshot();
    let t0 = Instant::now();
    let deadline = t0 + dur;
    let results: Arc<Mutex<Vec<(u16, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let load = load.clone();
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            while Instant::now() < deadline {
                let i = load.next.fetch_add(1, Ordering::SeqCst);
                if !dry_run && i >= load.machines.len() {
                    break;
                }
                let machine = &load.machines[i % load.machines.len()];
                let serial = load.serial.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({
                    "tenantId": TENANT,
                    "machineId": machine,
                    "comment": format!("bench-webhook #{serial}"),
                    "requestedBy": "bench@contoso.com",
                    "dryRun": dry_run,
                })
                .to_string();
                let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                let sig =
                    defender_ops::domain::signature::sign(HMAC_KEY.as_bytes(), ts, body.as_bytes());
                let started = Instant::now();
                let status = match load
                    .http
                    .post(&load.url)
                    .header("x-functions-key", &load.key)
                    .header("content-type", "application/json")
                    .header("x-signature", sig)
                    .header("x-signature-timestamp", ts.to_string())
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                local.push((status, started.elapsed()));
            }
            results.lock().unwrap().extend(local);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = rig.counts.snapshot();
    let cpu1 = cpu_ticks(pid).unwrap_or(0);
    let rss1 = status_kib(pid, "VmRSS:").unwrap_or(0);
    let results = results.lock().unwrap().clone();
    let ok = if dry_run { 200 } else { 202 };
    let mut lat: Vec<f64> = results
        .iter()
        .filter(|(s, _)| *s == ok)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let accepted = lat.len() as u64;
    let mut error_kinds = BTreeMap::new();
    for (s, _) in &results {
        if *s != ok {
            *error_kinds.entry(*s).or_insert(0) += 1;
        }
    }
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[(((p / 100.0) * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    let traffic = Traffic::between(&before, &after);
    let cpu_us = (cpu1 - cpu0) as f64 * 1e6 / tck as f64;
    Ok(Step {
        label: label.into(),
        concurrency,
        secs,
        accepted,
        errors: results.len() as u64 - accepted,
        error_kinds,
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        cpu_us_per_req: if accepted > 0 {
            cpu_us / accepted as f64
        } else {
            f64::NAN
        },
        rss_start_mib: rss0 as f64 / 1024.0,
        rss_end_mib: rss1 as f64 / 1024.0,
        table_requests: traffic.total(),
        table_ops: traffic.ops(),
        traffic: traffic.describe(),
    })
}

/// Azurite's single-operation rate: `dur` of single upserts (distinct rows), 32 in flight,
/// through the same proxy as the product.
async fn azurite_rate(conn: &str, dur: Duration) -> anyhow::Result<f64> {
    let svc = TableService::from_settings(
        &StorageSettings::ConnectionString(conn.to_owned().into()),
        TableOptions::with_prefix("probe"),
    )?;
    let table = svc.table("Ops")?;
    table.create_if_not_exists().await?;
    let n = AtomicU64::new(0);
    let t0 = Instant::now();
    let deadline = t0 + dur;
    let table = &table;
    let n = &n;
    futures::stream::iter(0..32)
        .for_each_concurrent(32, |w| async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let e = Entity::new("probe", format!("w{w:02}-{i:08}"))
                    .with("Status", "Accepted")
                    .with("At", time::OffsetDateTime::now_utc())
                    .with("Comment", "bench-webhook probe row");
                if table.upsert_merge(&e).await.is_ok() {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
        })
        .await;
    Ok(n.load(Ordering::SeqCst) as f64 / t0.elapsed().as_secs_f64())
}

fn pf(ok: bool) -> &'static str {
    if ok { "**pass**" } else { "**FAIL**" }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let tck = clk_tck();
    // The product budgets Defender calls itself (100/min); the sim's limits stay on, as
    // Defender's would.
    let sim = Sim::start(SimConfig {
        rate_limits: RateLimits::default(),
        ca_pem: Some(rig::sim_ca_pem()),
        ..SimConfig::default()
    })
    .await?;
    sim.generate_machines(TENANT, args.devices, 7);
    let rig = start_bench_rig(&sim, &args.handler).await?;
    eprintln!("bench-webhook: first sync of {} devices", args.devices);
    register_and_sync(&rig, &sim).await?;
    let mut machines = eligible(&rig).await?;
    eprintln!("bench-webhook: {} eligible devices", machines.len());
    if machines.is_empty() {
        bail!("no eligible device");
    }
    // The real steps take devices from the end of the list; dry runs from the start.
    let real_pool = machines.split_off(machines.len() / 2);
    let dry = Arc::new(Load {
        url: format!("{}/api/offboard", rig.host.base_url()),
        key: rig.host.function_key().to_owned(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        machines,
        next: AtomicUsize::new(0),
        serial: AtomicU64::new(0),
    });
    let real = Arc::new(Load {
        url: dry.url.clone(),
        key: dry.key.clone(),
        http: dry.http.clone(),
        machines: real_pool,
        next: AtomicUsize::new(0),
        serial: AtomicU64::new(1_000_000),
    });

    // Warm-up (not reported): key from the vault, tables known, connections pooled.
    run_step(&rig, &dry, "warm-up", 4, true, Duration::from_secs(1), tck).await?;

    eprintln!("bench-webhook: Azurite single upserts, 32 in flight, 5 s");
    let ops_rate = azurite_rate(&rig.proxied, Duration::from_secs(5)).await?;
    eprintln!("  {ops_rate:.0} ops/s");

    let mut steps = Vec::new();
    for &c in &args.dry_levels {
        let s = run_step(&rig, &dry, "dryRun", c, true, args.step, tck).await?;
        eprintln!(
            "  dryRun c={c}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {:.0} µs CPU/req, {} errors {:?}; table {}",
            s.accepted as f64 / s.secs,
            s.p50_ms,
            s.p99_ms,
            s.cpu_us_per_req,
            s.errors,
            s.error_kinds,
            s.traffic
        );
        steps.push(s);
    }
    let queue_before = rig.host.stats("OffboardWorker");
    for &c in &args.real_levels {
        let s = run_step(&rig, &real, "real", c, false, args.step, tck).await?;
        eprintln!(
            "  real c={c}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {:.0} µs CPU/req, {} errors {:?}; table {}",
            s.accepted as f64 / s.secs,
            s.p50_ms,
            s.p99_ms,
            s.cpu_us_per_req,
            s.errors,
            s.error_kinds,
            s.traffic
        );
        steps.push(s);
    }
    let worker = rig.host.stats("OffboardWorker");
    eprintln!("bench-webhook: Azurite single upserts again, 5 s");
    let ops_rate_after = azurite_rate(&rig.proxied, Duration::from_secs(5)).await?;
    eprintln!("  {ops_rate_after:.0} ops/s");
    let ops_rate_before = ops_rate;
    let ops_rate = (ops_rate_before + ops_rate_after) / 2.0;
    rig.host.stop().await;

    // ---- Report --------------------------------------------------------------------------
    println!("## Offboard webhook (`bench-webhook`)\n");
    println!(
        "Signed `POST /api/offboard` (`WEBHOOK_HMAC_SECRET` set; HMAC-SHA256 over `<timestamp>.<body>`) through dev/host \
         to the release `handler`, closed loops of N concurrent callers, {:.0} s per step, against a tenant of {} synced \
         simulated devices. `dryRun` steps give each request a different eligible machine (Windows, no `DoNotOffboard` \
         tag, not gone) and a unique comment: a policy refusal or a replayed signature would measure the error path; \
         a dry run writes the request and its audit row and queues nothing, so it is the webhook's own cost. \
         `real` steps name machines never asked for before; each accepted request queues an `offboard` job whose \
         worker (rate-budgeted to 100 Defender calls a minute) competes for Azurite and the CPU: {} worker invocations \
         ran during them. Handler CPU is utime+stime of its process from `/proc/<pid>/stat` (clock tick {} ms) divided \
         by accepted requests; table traffic is counted at a proxy in front of Azurite's table port. \
         *Table ops* are entity operations (reads, single writes, and each write inside a `$batch`); \
         *round trips* are HTTP requests (a `$batch` is one): concurrent requests of a tenant share one \
         batch for their request rows and one for their audit rows (group commit), so round trips per request fall \
         with load while table ops stay 3 per dry run. The Azurite bound divides its single-operation rate by table \
         ops, the work Azurite would do one operation at a time.\n",
        args.step.as_secs_f64(),
        args.devices,
        worker.invocations - queue_before.invocations,
        1000 / tck
    );
    println!(
        "Azurite's single-operation rate in this run (single upserts of distinct rows, 32 in flight, same proxy): \
         {ops_rate_before:.0} ops/s in 5 s before the steps, {ops_rate_after:.0} ops/s in 5 s after them; \
         their mean, **{ops_rate:.0} ops/s**, is the bound used below.\n"
    );
    println!(
        "| Mode | Callers | Accepted req/s | p50 | p99 | Handler CPU/req | RSS start → end | Errors | Table ops/req | Round trips/req | Accepted ÷ Azurite bound |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|");
    let mut best: Option<(f64, f64, f64, String)> = None;
    for s in &steps {
        let rps = s.accepted as f64 / s.secs;
        if s.accepted == 0 {
            // No machine left to ask for (a small --devices): nothing to divide by.
            println!(
                "| {} | {} | 0 | — | — | — | — | {} | — | — | — |",
                s.label, s.concurrency, s.errors
            );
            continue;
        }
        let per = s.table_ops as f64 / s.accepted as f64;
        let trips = s.table_requests as f64 / s.accepted as f64;
        let bound = ops_rate / per;
        let ratio = rps / bound;
        let errors = if s.errors == 0 {
            "0".to_owned()
        } else {
            format!(
                "{} ({})",
                s.errors,
                s.error_kinds
                    .iter()
                    .map(|(k, v)| format!(
                        "{}×{v}",
                        if *k == 0 { "io".into() } else { k.to_string() }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        println!(
            "| {} | {} | {rps:.0} | {:.1} ms | {:.1} ms | {:.0} µs | {:.1} → {:.1} MiB | {errors} | {per:.2} | {trips:.2} | {:.0}% |",
            s.label,
            s.concurrency,
            s.p50_ms,
            s.p99_ms,
            s.cpu_us_per_req,
            s.rss_start_mib,
            s.rss_end_mib,
            ratio * 100.0
        );
        if s.label == "dryRun" && best.as_ref().is_none_or(|b| rps > b.0) {
            best = Some((rps, ratio, s.cpu_us_per_req, s.traffic.clone()));
        }
    }
    println!();
    if let Some((rps, ratio, cpu, traffic)) = &best {
        println!("Table requests of the best dryRun step, by kind: {traffic}.\n");
        println!("| Target | Measured | Result |");
        println!("|---|---|---|");
        println!(
            "| accepted/s ÷ (Azurite ops/s ÷ table ops per request) ≥ 80% | {:.0}% at the best dryRun step ({rps:.0} req/s) | {} |",
            ratio * 100.0,
            pf(*ratio >= 0.8)
        );
        let cpu_all = steps
            .iter()
            .filter(|s| s.label == "dryRun")
            .map(|s| s.cpu_us_per_req)
            .fold(0.0f64, f64::max);
        println!(
            "| handler CPU ≤ 200 µs per request | {cpu:.0} µs at the best step; worst dryRun step {cpu_all:.0} µs | {} |",
            pf(*cpu <= 200.0)
        );
        println!();
    }
    Ok(())
}
