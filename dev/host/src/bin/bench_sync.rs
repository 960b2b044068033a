//! `bench-sync`: the first and the second device sync of a 100,000-device tenant, next to a
//! naive baseline (the seed workflow: delete every row, insert each device alone) and the raw
//! floor (pre-built entities in batch transactions), all against the same Azurite.
//!
//! Prints one markdown section on stdout; progress goes to stderr.
//!
//! ```text
//! bench-sync [--devices N] [--reps N] [--no-baseline] [--handler PATH]
//! ```
//!
//! Everything the product and the reference writers send to Azurite's table service goes
//! through a small counting proxy (HTTP/1.1 request framing only), so requests and batch
//! operations are counted rather than derived. The bench's own polling bypasses it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_ops::clients::tables::{
    BatchOp, Entity, IfMatch, TableClient, TableOptions, TableService, filter,
};
use defender_ops::config::StorageSettings;
use defender_ops::domain::TenantId;
use defender_ops::store::devices::{self, col};
use defender_ops::sync::BATCHES_IN_FLIGHT as PRODUCT_BATCHES_IN_FLIGHT;
use dev_host::rig;
use dev_sim::Sim;
use futures::StreamExt;

const TENANT: &str = "5b0c8e2a-71d4-4c9e-a3f6-2d8e9b1c4a70";
const APP: &str = "6c1d9f3b-82e5-4daf-b407-3e9fac2d5b81";
const BASELINE_IN_FLIGHT: usize = 32;

struct Args {
    devices: usize,
    reps: usize,
    baseline: bool,
    handler: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        devices: 100_000,
        reps: 3,
        baseline: true,
        handler: rig::target_dir().join("release").join("handler"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--devices" => a.devices = it.next().context("--devices N")?.parse()?,
            "--reps" => a.reps = it.next().context("--reps N")?.parse()?,
            "--no-baseline" => a.baseline = false,
            "--handler" => a.handler = it.next().context("--handler PATH")?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    a.handler = rig::handler_binary(Some(a.handler), "release")?;
    Ok(a)
}

#[path = "bench/common.rs"]
mod common;
use common::*;

// ---------------------------------------------------------------------------------------
// The product, through dev/host.

async fn start_bench_rig(sim: &Sim, handler: &Path, rep: usize) -> anyhow::Result<Rig> {
    start_rig(sim, handler, &format!("b{rep}"), Vec::new(), |cfg| {
        cfg.queue_prefix = format!("q{rep}");
        // BENCH_ECHO_HANDLER=1 shows the handler's log (with BENCH_HANDLER_RUST_LOG=debug,
        // the sync's phases).
        cfg.echo_handler_output = std::env::var_os("BENCH_ECHO_HANDLER").is_some();
        cfg.host_json_patch =
            Some(serde_json::json!({"extensions": {"queues": {"visibilityTimeout": "00:00:01"}}}));
    })
    .await
}

impl Rig {
    async fn register_tenant(&self, sim: &Sim) -> anyhow::Result<()> {
        let app = rig::TenantApp {
            tenant: TENANT,
            client_id: APP,
            display_name: "Bench tenant",
            secret_name: "bench-tenant-secret",
            secret: "bench-s3cr3t-value",
        };
        rig::register_tenant(&self.http, &self.host, sim, &app).await?;
        Ok(())
    }

    /// `DeviceSync` audit rows of the tenant, newest first.
    async fn sync_rows(&self) -> anyhow::Result<Vec<Entity>> {
        let t = self.direct.table("Audit")?;
        let f = filter::and(
            &filter::eq("PartitionKey", TENANT),
            &filter::eq("Kind", "DeviceSync"),
        );
        match t.query_all(Some(&f), None).await {
            Ok(rows) => Ok(rows),
            Err(defender_ops::clients::tables::TableError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn wait_sync_rows(&self, n: usize, timeout: Duration) -> anyhow::Result<Entity> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.sync_rows().await?;
            if rows.len() >= n {
                return Ok(rows.into_iter().next().unwrap());
            }
            if Instant::now() > deadline {
                let failed = self.host.stats("SyncTenant");
                bail!(
                    "no DeviceSync audit row #{n} within {timeout:?} (SyncTenant stats {failed:?}); handler log tail:\n{}",
                    tail(&self.host.handler_log_text(), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct SyncRun {
    wall: Duration,
    handler_ms: i64,
    table_writes: i64,
    seen: i64,
    peak_rss_kib: Option<u64>,
    traffic: Traffic,
}

async fn product_sync(
    rig: &Rig,
    trigger: impl std::future::Future<Output = anyhow::Result<()>>,
    nth: usize,
) -> anyhow::Result<SyncRun> {
    let pid = handler_pid(&rig.handler);
    if let Some(pid) = pid {
        reset_peak(pid);
    }
    let before = rig.counts.snapshot();
    let t0 = Instant::now();
    trigger.await?;
    let row = rig
        .wait_sync_rows(nth, Duration::from_secs(900))
        .await
        .context("the product's sync")?;
    let wall = t0.elapsed();
    // The handler answers the host after the audit row; let the invocation finish.
    rig.host.wait_for_idle(Duration::from_secs(60)).await?;
    let after = rig.counts.snapshot();
    Ok(SyncRun {
        wall,
        handler_ms: row.get_i64("DurationMs").unwrap_or(-1),
        table_writes: row.get_i64("TableWrites").unwrap_or(-1),
        seen: row.get_i64("Seen").unwrap_or(-1),
        peak_rss_kib: pid.and_then(|p| status_kib(p, "VmHWM:")),
        traffic: Traffic::between(&before, &after),
    })
}

// ---------------------------------------------------------------------------------------
// Reference writers.

/// The product's entities for the sim's machines, built the way SyncTenant builds them.
fn build_entities(sim: &Sim) -> anyhow::Result<Vec<Entity>> {
    let tenant = TenantId::parse(TENANT)?;
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for m in sim.machines(TENANT) {
        let v = serde_json::to_value(&m)?;
        let machine: defender_ops::clients::defender::Machine = serde_json::from_value(v)?;
        let Some(content) = defender_ops::sync::to_content(machine) else {
            continue;
        };
        let stale = defender_ops::domain::device::is_stale(
            content.last_seen,
            content.health_status.as_deref(),
            now,
            7,
        );
        out.push(
            devices::content_entity(&tenant, &content, stale, now)
                .with(col::DUPLICATE_OF, "")
                .with(col::OFFBOARD, false),
        );
    }
    Ok(out)
}

fn service(conn: &str, prefix: &str) -> anyhow::Result<TableService> {
    Ok(TableService::from_settings(
        &StorageSettings::ConnectionString(conn.to_owned().into()),
        TableOptions::with_prefix(prefix.to_owned()),
    )?)
}

async fn floor_batches(table: &TableClient, entities: &[Entity]) -> anyhow::Result<Duration> {
    table.create_if_not_exists().await?;
    let batches: Vec<Vec<BatchOp>> = entities
        .chunks(100)
        .map(|c| c.iter().cloned().map(BatchOp::UpsertMerge).collect())
        .collect();
    let t0 = Instant::now();
    let mut s = futures::stream::iter(batches.iter())
        .map(|ops| table.batch(ops))
        .buffer_unordered(PRODUCT_BATCHES_IN_FLIGHT);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(t0.elapsed())
}

/// The seed workflow: delete every row (one request each), then insert each device alone.
async fn naive(table: &TableClient, entities: &[Entity]) -> anyhow::Result<(Duration, Duration)> {
    table.create_if_not_exists().await?;
    let t0 = Instant::now();
    let f = filter::eq("PartitionKey", TENANT);
    let keys: Vec<(String, String)> = table
        .query_all(Some(&f), Some(&["RowKey"]))
        .await?
        .into_iter()
        .map(|e| (e.partition_key, e.row_key))
        .collect();
    let mut s = futures::stream::iter(keys.iter())
        .map(|(pk, rk)| table.delete(pk, rk, IfMatch::Any))
        .buffer_unordered(BASELINE_IN_FLIGHT);
    while let Some(r) = s.next().await {
        match r {
            Ok(_) | Err(defender_ops::clients::tables::TableError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deleted = t0.elapsed();
    let t1 = Instant::now();
    let mut s = futures::stream::iter(entities.iter())
        .map(|e| table.insert(e))
        .buffer_unordered(BASELINE_IN_FLIGHT);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok((deleted, t1.elapsed()))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn pf(ok: bool) -> &'static str {
    if ok { "**pass**" } else { "**FAIL**" }
}

fn list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let sim = rig::start_sim().await?;
    eprintln!("bench-sync: generating {} devices", args.devices);
    let summary = sim.generate_machines(TENANT, args.devices, 42);
    let total = sim.machines(TENANT).len();
    eprintln!("bench-sync: {total} devices in the sim ({summary:?})");
    let entities = build_entities(&sim)?;
    let page_bytes = {
        let ms = sim.machines(TENANT);
        serde_json::to_vec(&ms[..ms.len().min(10_000)])?.len()
    };

    let mut first_wall = Vec::new();
    let mut first_handler = Vec::new();
    let mut floor = Vec::new();
    let mut second_wall = Vec::new();
    let mut second_handler = Vec::new();
    let mut index_read = Vec::new();
    let mut second_writes = Vec::new();
    let mut peaks_first = Vec::new();
    let mut peaks_second = Vec::new();
    let mut first_traffic = None;
    let mut second_traffic = None;
    let mut changed_counts = Vec::new();
    let mut baseline: Option<(Duration, Duration, usize)> = None;
    let mut seen = 0;

    for rep in 0..args.reps {
        eprintln!(
            "bench-sync: rep {}/{}: fresh Azurite + host",
            rep + 1,
            args.reps
        );
        let rig = start_bench_rig(&sim, &args.handler, rep).await?;
        let floor_svc = service(&rig.proxied, &format!("f{rep}"))?;
        let floor_table = floor_svc.table("Devices")?;
        // Alternate which writer meets the fresher Azurite.
        let floor_first = rep % 2 == 1;
        if floor_first {
            let d = floor_batches(&floor_table, &entities).await?;
            eprintln!("  (c) floor: {:.2} s", secs(d));
            floor.push(secs(d));
        }
        let run = product_sync(&rig, rig.register_tenant(&sim), 1).await?;
        eprintln!(
            "  (a) first sync: {:.2} s wall, handler {} ms, {} writes, peak RSS {:?} KiB; traffic {}",
            secs(run.wall),
            run.handler_ms,
            run.table_writes,
            run.peak_rss_kib,
            run.traffic.describe()
        );
        seen = run.seen;
        first_wall.push(secs(run.wall));
        first_handler.push(run.handler_ms as f64 / 1000.0);
        if let Some(p) = run.peak_rss_kib {
            peaks_first.push(mib(p));
        }
        first_traffic.get_or_insert(run.traffic.clone());
        if !floor_first {
            let d = floor_batches(&floor_table, &entities).await?;
            eprintln!("  (c) floor: {:.2} s", secs(d));
            floor.push(secs(d));
        }

        // (d) 1% of the devices change (a new IP address), then the scheduler fires.
        let mut machines = sim.machines(TENANT);
        let mut changed = 0usize;
        for (i, m) in machines.iter_mut().enumerate() {
            if i % 100 == rep % 100 {
                m.last_ip_address =
                    Some(format!("10.{}.{}.{}", 200 + rep, (i / 256) % 256, i % 256));
                changed += 1;
            }
        }
        sim.replace_machines(TENANT, machines);
        changed_counts.push(changed);
        let run2 = product_sync(
            &rig,
            async {
                let inv = rig.host.fire_timer("SyncScheduler").await?;
                if !inv.succeeded() {
                    bail!("SyncScheduler failed: {:?}", inv.result);
                }
                Ok(())
            },
            2,
        )
        .await?;
        eprintln!(
            "  (d) second sync ({changed} changed): {:.2} s wall, handler {} ms, {} writes, peak RSS {:?} KiB; traffic {}",
            secs(run2.wall),
            run2.handler_ms,
            run2.table_writes,
            run2.peak_rss_kib,
            run2.traffic.describe()
        );
        // What the second sync reads before it writes: the stored index, the product's own
        // function, through the same proxy.
        let idx_svc = service(&rig.proxied, &format!("b{rep}"))?;
        let idx_table = idx_svc.table("Devices")?;
        let t_idx = Instant::now();
        let idx = devices::load_index(&idx_table, &TenantId::parse(TENANT)?).await?;
        let idx_s = secs(t_idx.elapsed());
        eprintln!("  (d) load_index alone: {} rows in {idx_s:.2} s", idx.len());
        drop(idx);
        index_read.push(idx_s);
        second_wall.push(secs(run2.wall));
        second_writes.push(run2.table_writes);
        second_handler.push(run2.handler_ms as f64 / 1000.0);
        if let Some(p) = run2.peak_rss_kib {
            peaks_second.push(mib(p));
        }
        second_traffic = Some(run2.traffic.clone());

        if rep + 1 == args.reps && args.baseline {
            eprintln!("  (b) naive baseline on the floor's table (delete all, insert one by one)");
            let (del, ins) = naive(&floor_table, &entities).await?;
            let keys = entities.len();
            eprintln!(
                "  (b) naive: delete {:.1} s + insert {:.1} s",
                secs(del),
                secs(ins)
            );
            baseline = Some((del, ins, keys));
        }
        if rig.counts.unparsed.load(Ordering::SeqCst) > 0 {
            eprintln!("  warning: some requests were chunked; counts are incomplete");
        }
        rig.host.stop().await;
    }

    // ---- Report --------------------------------------------------------------------------
    let n = seen.max(0) as f64;
    let t2 = second_traffic.unwrap_or_default();
    let t1 = first_traffic.unwrap_or_default();

    let a = median(&first_wall);
    let c = median(&floor);
    let d = median(&second_wall);
    let peak = median(&peaks_first).max(median(&peaks_second));
    let peak_max = peaks_first
        .iter()
        .chain(peaks_second.iter())
        .copied()
        .fold(0.0f64, f64::max);
    let changed = changed_counts.first().copied().unwrap_or(0) as u64;
    let allowed_tx = changed.div_ceil(100);
    let dw = second_writes.iter().map(|&w| w as f64).collect::<Vec<_>>();
    let dwrites = median(&dw) as u64;

    println!("## Device sync (`bench-sync`)\n");
    println!(
        "One tenant of {total} simulated devices (`generate_machines(…, {}, 42)`; {} stale, {} duplicates by name, {} by Entra id). \
         Each of {} repetitions starts a fresh Azurite (in-memory), a fresh dev/host and the release `handler`; \
         the first sync is triggered by `PUT /api/tenants/{{id}}` and timed to the `DeviceSync` audit row; \
         the raw floor writes into another table of the same Azurite (alternating which goes first). \
         Every table request of the product and of the reference writers passes a counting proxy.\n",
        args.devices,
        summary.stale,
        summary.duplicates_by_name,
        summary.duplicates_by_aad_device_id,
        args.reps
    );
    println!("| Measurement | Median | Runs | Devices/s |");
    println!("|---|---:|---|---:|");
    println!(
        "| (a) product, first sync: trigger → audit row | {a:.2} s | {} s | {:.0} |",
        list(&first_wall, 2),
        n / a
    );
    println!(
        "| (a) … of which inside SyncTenant (`DurationMs`) | {:.2} s | {} s | {:.0} |",
        median(&first_handler),
        list(&first_handler, 2),
        n / median(&first_handler)
    );
    if let Some((del, ins, k)) = baseline {
        println!(
            "| (b) naive seed workflow: delete {k} rows + {k} single inserts, {BASELINE_IN_FLIGHT} in flight | {:.1} s | 1 run | {:.0} |",
            secs(del + ins),
            k as f64 / secs(del + ins)
        );
        println!(
            "| (b) … inserts only | {:.1} s | 1 run | {:.0} |",
            secs(ins),
            k as f64 / secs(ins)
        );
        println!(
            "| (b) … deletes only | {:.1} s | 1 run | {:.0} |",
            secs(del),
            k as f64 / secs(del)
        );
    }
    println!(
        "| (c) raw floor: pre-built entities, batches of 100, {PRODUCT_BATCHES_IN_FLIGHT} in flight | {c:.2} s | {} s | {:.0} |",
        list(&floor, 2),
        entities.len() as f64 / c
    );
    println!(
        "| (d) second sync, {changed} devices changed (1%): trigger → audit row | {d:.2} s | {} s | — |",
        list(&second_wall, 2)
    );
    println!(
        "| (d) … of which inside SyncTenant (`DurationMs`) | {:.2} s | {} s | — |",
        median(&second_handler),
        list(&second_handler, 2)
    );
    println!(
        "| (d) … `devices::load_index` alone (the stored index: {} query pages of ≤ 1,000 rows, sequential), run from the bench | {:.2} s | {} s | {:.0} rows/s |",
        t2.get("GET query"),
        median(&index_read),
        list(&index_read, 2),
        n / median(&index_read)
    );
    println!(
        "| (e) handler peak RSS (VmHWM) during a sync | {peak:.1} MiB | first: {} / second: {} MiB | — |",
        list(&peaks_first, 1),
        list(&peaks_second, 1)
    );
    println!();
    println!(
        "One Defender page (`$top=10000`, the product's page size) of these simulated machines is {:.1} MiB of JSON.\n",
        page_bytes as f64 / 1_048_576.0
    );
    println!(
        "Table traffic counted at the proxy (first repetition's first sync; last repetition's second sync):\n"
    );
    println!("| Sync | Requests | Write requests | Entity writes (batch ops + single) | By kind |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| first | {} | {} | {} | {} |",
        t1.total(),
        t1.write_requests(),
        t1.write_ops(),
        t1.describe()
    );
    println!(
        "| second | {} | {} | {} | {} |",
        t2.total(),
        t2.write_requests(),
        t2.write_ops(),
        t2.describe()
    );
    println!();
    println!("| Target | Measured | Result |");
    println!("|---|---|---|");
    if let Some((del, ins, _)) = baseline {
        let b = secs(del + ins);
        println!(
            "| (a) ≥ 10× faster than (b) | {:.1}× (inserts alone: {:.1}×) | {} |",
            b / a,
            secs(ins) / a,
            pf(b / a >= 10.0)
        );
    } else {
        println!("| (a) ≥ 10× faster than (b) | not run (`--no-baseline`) | — |");
    }
    println!(
        "| (a) within 1.3× of (c) | {:.2}× ({a:.2} s vs {c:.2} s) | {} |",
        a / c,
        pf(a / c <= 1.3)
    );
    // Requests that wrote device rows in the second sync: batches and single entity writes
    // minus the audit row (one upsert) and the rate-budget bookkeeping (entity writes on
    // RateBudget, counted among single writes).
    println!(
        "| (d) writes ≤ changed rows ({changed}) | `TableWrites` {dwrites} (runs: {}); entity writes at the proxy {} incl. audit row and rate-budget rows | {} |",
        list(&dw, 0),
        t2.write_ops(),
        pf(dwrites <= changed)
    );
    println!(
        "| (d) ≤ one transaction per 100 changed rows ({allowed_tx}) | {} `$batch` requests, {} write requests in all | {} |",
        t2.get("POST batch"),
        t2.write_requests(),
        pf(t2.get("POST batch") <= allowed_tx)
    );
    println!(
        "| (e) ≤ 64 MiB peak RSS | {peak:.1} MiB median, {peak_max:.1} MiB max | {} |",
        pf(peak_max <= 64.0)
    );
    println!();
    Ok(())
}
