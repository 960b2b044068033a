//! `run-local`: the whole product once on this machine, with no Azure. Starts Azurite, the
//! simulators (seeded with two realistic tenants) and `dev/host` with the real `handler`, then
//! drives every feature through the HTTP API and the timers, printing one line per step, a
//! summary, and every Teams card, mail and webhook event under `target/run-local/outbox/`.
//!
//! `--settings FILE` runs the API-driven part against real Azure instead; `--keep-running`
//! leaves everything up until Ctrl-C. See `scripts/run-local` and README "What run-local shows".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use defender_ops::clients::tables::{Entity, TableError, TableOptions, TableService};
use defender_ops::config::StorageSettings;
use defender_ops::domain::signature;
use dev_host::rig::{target_dir, workspace};
use dev_host::{Azurite, Host, HostConfig, LogSource, RunningHost};
use dev_sim::{AppRegistration, FleetSummary, Incident, SentMail, Sim};
use reqwest::Method;
use serde_json::{Value, json};

const USAGE: &str =
    "usage: run-local [--keep-running] [--ready-file FILE] [--settings FILE] [--handler PATH]

  (no option)       Azurite + simulators + dev/host + handler: the whole flow once, a summary
  --keep-running    leave host, simulator and Azurite up afterwards, until Ctrl-C (or SIGTERM)
  --ready-file FILE with --keep-running: once up, write the API's URL, the keys and the demo
                    tenants to FILE as shell assignments (for scripts: scripts/check-api)
  --settings FILE   run against real Azure with the Values of a local.settings.json-style
                    file: health, tenants, one sync, device counts (nothing is offboarded)
  --handler PATH    the handler binary (default: <target dir>/debug/handler)";

/// One demo customer tenant.
struct DemoTenant {
    id: &'static str,
    client_id: &'static str,
    name: &'static str,
    domain: &'static str,
    devices: usize,
    seed: u64,
    /// How many machines disappear from Defender before the second sync.
    remove: usize,
}

const TENANTS: [DemoTenant; 2] = [
    DemoTenant {
        id: "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f405162",
        client_id: "0b8e4d2c-7a1f-4c3e-9d5b-2f6a8c1e4b70",
        name: "Contoso",
        domain: "contoso.com",
        devices: 1000,
        seed: 42,
        remove: 3,
    },
    DemoTenant {
        id: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        client_id: "1c9f5e3d-8b2a-4d4f-ae6c-3a7b9d2f5c81",
        name: "Fabrikam",
        domain: "fabrikam.com",
        devices: 1037,
        seed: 43,
        remove: 2,
    },
];

/// The app the handler sends mail with, in the simulator's home tenant.
const HOME_APP: &str = "3f6b1d2e-4c5a-4b7e-9f80-a1b2c3d4e5f6";
const MAIL_FROM: &str = "defender-ops@contoso.com";
const MAIL_TO: &str = "secops@contoso.com";
/// Key Vault secret names (the settings name them; the values live in the sim's vault).
/// The ITSM system registered as a caller (design §9.1): its id and its key's secret name.
const CALLER_ID: &str = "itsm";
const KV_CALLER: &str = "caller-itsm-key";
/// The key outbound webhook events are signed with (never a key that can offboard).
const KV_EVENTS: &str = "outbound-events-signing-key";
const KV_TEAMS: &str = "teams-workflow-url";
const KV_WEBHOOK: &str = "outbound-webhook-url";
const KV_HOME: &str = "home-app-secret";
const KV_CONSOLE: &str = "console-session-key";
const EXCLUDE_TAG: &str = "DoNotOffboard";
const IDLE_TIMEOUT: Duration = Duration::from_secs(240);

#[derive(Debug, Default)]
struct Args {
    keep_running: bool,
    ready_file: Option<PathBuf>,
    settings: Option<PathBuf>,
    handler: Option<PathBuf>,
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--keep-running" => out.keep_running = true,
            "--ready-file" => {
                out.ready_file = Some(it.next().ok_or("--ready-file needs a file")?.into());
            }
            "--settings" => {
                out.settings = Some(it.next().ok_or("--settings needs a file")?.into());
            }
            "--handler" => out.handler = Some(it.next().ok_or("--handler needs a path")?.into()),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUN_LOCAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .compact()
        .init();
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("run-local: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match &args.settings {
            Some(file) => run_against_azure(file, &args).await,
            None => run_simulated(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nrun-local FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---- paths -------------------------------------------------------------------------------

fn handler_path(args: &Args) -> anyhow::Result<PathBuf> {
    dev_host::rig::handler_binary(args.handler.clone(), "debug")
}

// ---- progress ----------------------------------------------------------------------------

/// Checks that found something wrong without blocking the flow (wrong numbers): the run goes
/// on so everything can be seen, the step says `CHECK FAILED`, and the exit code is non-zero.
#[derive(Clone, Default)]
struct Checks(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Checks {
    fn fail(&self, message: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(message);
        }
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Prints one numbered line per step with its duration and the time since start.
struct Progress {
    started: Instant,
    n: usize,
    checks: Checks,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            n: 0,
            checks: Checks::default(),
        }
    }

    /// Runs one step: prints its title, then `ok` + duration + the detail it returns, or
    /// `FAILED` and the error with the step named.
    async fn step<T>(
        &mut self,
        title: &str,
        fut: impl Future<Output = anyhow::Result<(T, String)>>,
    ) -> anyhow::Result<T> {
        self.n += 1;
        let n = self.n;
        print!(
            "[{:>6.1}s] {n:>2}. {title} ... ",
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        let failed_before = self.checks.all().len();
        match fut.await {
            Ok((value, detail)) => {
                let took = t.elapsed().as_secs_f64();
                let failed = self.checks.all();
                let verdict = if failed.len() > failed_before {
                    "CHECK FAILED"
                } else {
                    "ok"
                };
                if detail.is_empty() {
                    println!("{verdict} ({took:.1}s)");
                } else {
                    println!("{verdict} ({took:.1}s): {detail}");
                }
                for f in &failed[failed_before..] {
                    println!("           ! {f}");
                }
                Ok(value)
            }
            Err(e) => {
                println!("FAILED ({:.1}s)", t.elapsed().as_secs_f64());
                Err(e.context(format!("step {n} ({title})")))
            }
        }
    }

    fn note(&self, line: &str) {
        println!("           {line}");
    }
}

// ---- the HTTP API ------------------------------------------------------------------------

/// One answer of the API.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    text: String,
}

impl Answer {
    /// The answer when its status is one of `ok`, else an error quoting the call and answer.
    fn expect(self, call: &str, ok: &[u16]) -> anyhow::Result<Self> {
        if ok.contains(&self.status) {
            Ok(self)
        } else {
            bail!(
                "{call} answered {} (expected {ok:?}): {}",
                self.status,
                clip(&self.text, 2000)
            )
        }
    }

    fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Clone, Copy)]
enum Key {
    Function,
    Admin,
}

struct Api {
    http: reqwest::Client,
    base: String,
    function_key: String,
    admin_key: String,
    /// Signing key of `POST /api/offboard`: the registered caller `CALLER_ID`'s key.
    hmac_key: Option<String>,
}

impl Api {
    fn new(host: &RunningHost, hmac_key: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(120))
                .build()
                .context("building the HTTP client")?,
            base: host.base_url().trim_end_matches('/').to_owned(),
            function_key: host.function_key().to_owned(),
            admin_key: host.admin_key().to_owned(),
            hmac_key,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/{}", self.base, path.trim_start_matches('/'))
    }

    /// A URL a person can paste in a browser (function key in `code`).
    fn browser_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{sep}code={}", self.url(path), self.function_key)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Key,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let key = match key {
            Key::Function => &self.function_key,
            Key::Admin => &self.admin_key,
        };
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .header("x-functions-key", key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} /api/{path}"))?;
        Self::answer(res).await
    }

    async fn answer(res: reqwest::Response) -> anyhow::Result<Answer> {
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body, text })
    }

    /// `POST /api/offboard`, signed as an ITSM system would when a key is configured.
    async fn offboard(&self, body: &Value) -> anyhow::Result<Answer> {
        let raw = body.to_string();
        let mut req = self
            .http
            .post(self.url("offboard"))
            .header("x-functions-key", &self.function_key)
            .header("content-type", "application/json");
        if let Some(key) = &self.hmac_key {
            let ts = time::OffsetDateTime::now_utc().unix_timestamp();
            req = req
                .header("x-caller-id", CALLER_ID)
                .header(
                    "x-signature",
                    signature::sign(key.as_bytes(), ts, raw.as_bytes()),
                )
                .header("x-signature-timestamp", ts.to_string());
        }
        let res = req.body(raw).send().await.context("POST /api/offboard")?;
        Self::answer(res).await
    }

    /// Every device of a tenant, through the API's paging.
    async fn devices(&self, tenant: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("devices/{tenant}?top=1000");
            if let Some(t) = &token {
                let _ = write!(path, "&continuationToken={}", urlencode(t));
            }
            let a = self
                .call(Method::GET, &path, Key::Function, None)
                .await?
                .expect(&format!("GET /api/{path}"), &[200])?;
            items.extend(a.body["items"].as_array().cloned().unwrap_or_default());
            match a.body["continuationToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    async fn request(&self, tenant: &str, id: &str) -> anyhow::Result<Value> {
        let path = format!("offboard/{tenant}/{id}");
        Ok(self
            .call(Method::GET, &path, Key::Function, None)
            .await?
            .expect(&format!("GET /api/{path}"), &[200])?
            .body)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// The handler's log lines mentioning any of `needles` (the last `n`), for failure reports.
fn log_excerpt(host: &RunningHost, needles: &[&str], n: usize) -> String {
    let lines: Vec<String> = host
        .handler_logs()
        .into_iter()
        .filter(|l| needles.iter().any(|k| l.line.contains(k)))
        .map(|l| match l.source {
            LogSource::Function(f) => format!("    [{f}] {}", l.line),
            _ => format!("    {}", l.line),
        })
        .collect();
    let skip = lines.len().saturating_sub(n);
    if lines.is_empty() {
        "    (no handler log line mentions it)".into()
    } else {
        lines[skip..].join("\n")
    }
}

/// Fires a timer and fails when the handler failed the invocation.
async fn fire(host: &RunningHost, name: &str) -> anyhow::Result<()> {
    let inv = host.fire_timer(name).await?;
    match &inv.result {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "{name} failed: {e}\nhandler log:\n{}",
            log_excerpt(host, &[name, "ERROR", "WARN"], 30)
        ),
    }
}

/// Waits for every queue to drain; names what is stuck otherwise.
async fn settle(host: &RunningHost) -> anyhow::Result<()> {
    host.wait_for_idle(IDLE_TIMEOUT).await.with_context(|| {
        format!(
            "the queues did not drain; recent handler warnings:\n{}",
            log_excerpt(host, &["WARN", "ERROR"], 20)
        )
    })
}

// ---- device counts -----------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Counts {
    devices: usize,
    live: usize,
    stale: usize,
    duplicates: usize,
    gone: usize,
    macos_linux: usize,
    excluded: usize,
}

fn has_tag(d: &Value, tag: &str) -> bool {
    d["machineTags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|v| v.as_str() == Some(tag)))
}

fn count(devices: &[Value]) -> Counts {
    let flag = |d: &Value, f: &str| d[f].as_bool().unwrap_or(false);
    let mut c = Counts {
        devices: devices.len(),
        ..Counts::default()
    };
    for d in devices {
        let gone = flag(d, "gone");
        if gone {
            c.gone += 1;
            continue;
        }
        c.live += 1;
        c.stale += usize::from(flag(d, "stale"));
        c.duplicates += usize::from(!d["duplicateOf"].as_str().unwrap_or("").is_empty());
        let os = d["osPlatform"].as_str().unwrap_or("");
        c.macos_linux += usize::from(os == "macOS" || os == "Linux");
        c.excluded += usize::from(has_tag(d, EXCLUDE_TAG));
    }
    c
}

/// Devices an offboard would be accepted for: live, reporting, Windows, unique, not excluded.
fn offboardable(d: &Value) -> bool {
    let s = |f: &str| d[f].as_str().unwrap_or("");
    s("osPlatform").starts_with("Windows")
        && !d["stale"].as_bool().unwrap_or(true)
        && !d["gone"].as_bool().unwrap_or(true)
        && s("duplicateOf").is_empty()
        && s("mergedIntoMachineId").is_empty()
        && s("healthStatus") == "Active"
        && s("onboardingStatus") == "Onboarded"
        && s("result").is_empty()
        && !has_tag(d, EXCLUDE_TAG)
}

// ---- the simulated run -------------------------------------------------------------------

/// Everything the simulated flow works with.
struct Ctx {
    sim: Sim,
    host: RunningHost,
    api: Api,
    tables: TableService,
    storage: String,
    fleets: Vec<FleetSummary>,
    teams_url: String,
}

/// What the flow produced, for the summary.
#[derive(Default)]
struct Report {
    counts: BTreeMap<&'static str, Counts>,
    requests: Vec<(String, String, String)>,
    refused: Vec<String>,
}

async fn run_simulated(args: &Args) -> anyhow::Result<()> {
    let handler = handler_path(args)?;
    let out_dir = target_dir().join("run-local");
    let outbox = out_dir.join("outbox");
    let _ = std::fs::remove_dir_all(&outbox);
    std::fs::create_dir_all(&outbox).with_context(|| format!("creating {}", outbox.display()))?;
    println!("run-local: the whole product against Azurite and the simulators (no Azure)");
    println!("  handler: {}", handler.display());
    let mut p = Progress::new();

    let mut azurite = p
        .step("start Azurite (table + queue, private, in memory)", async {
            let a = Azurite::start().await?;
            let detail = format!("tables :{} queues :{}", a.table_port(), a.queue_port());
            Ok((a, detail))
        })
        .await?;
    let result = simulated_with_storage(args, &mut p, &azurite, &handler, &out_dir).await;
    azurite.stop().await;
    result
}

async fn simulated_with_storage(
    args: &Args,
    p: &mut Progress,
    azurite: &Azurite,
    handler: &Path,
    out_dir: &Path,
) -> anyhow::Result<()> {
    let storage = azurite.connection_string();
    let hmac_key = format!("whk-{}", uuid::Uuid::new_v4().simple());
    let (sim, fleets, teams_url) = p
        .step(
            "start the simulators and seed them (2 tenants, apps, Key Vault, Teams, mail, incidents)",
            seed_sim(&hmac_key),
        )
        .await?;
    let host = p
        .step(
            "start dev/host with the handler",
            start_host(&sim, handler, &storage),
        )
        .await?;
    let api = Api::new(&host, Some(hmac_key))?;
    let tables = TableService::from_settings(
        &StorageSettings::ConnectionString(storage.clone().into()),
        TableOptions::default(),
    )
    .context("opening Table Storage")?;
    let ctx = Ctx {
        sim,
        host,
        api,
        tables,
        storage,
        fleets,
        teams_url,
    };
    let flow = async {
        let report = flow(p, &ctx).await?;
        let files = write_outbox(&ctx.sim, &out_dir.join("outbox"))?;
        let log = out_dir.join("handler.log");
        std::fs::write(&log, ctx.host.handler_log_text())
            .with_context(|| format!("writing {}", log.display()))?;
        summary(&ctx, &report, out_dir, files).await?;
        check_teams_flows(&ctx.sim)?;
        check_mails(&ctx.sim)?;
        let failed = p.checks.all();
        if !failed.is_empty() {
            println!();
            println!("CHECKS FAILED (the run exits non-zero):");
            for f in &failed {
                println!("  - {f}");
            }
        }
        print_console(&ctx);
        if args.keep_running {
            if let Some(file) = &args.ready_file {
                write_ready_file(&ctx, file)?;
            }
            keep_running(&ctx).await;
        }
        if !failed.is_empty() {
            bail!(
                "{} check(s) failed (the flow ran to the end; see the steps marked CHECK FAILED):\n  - {}",
                failed.len(),
                failed.join("\n  - ")
            );
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = flow => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C)")),
    };
    if result.is_err() {
        let log = out_dir.join("handler.log");
        if std::fs::write(&log, ctx.host.handler_log_text()).is_ok() {
            eprintln!("the handler's log: {}", log.display());
        }
    }
    ctx.host.stop().await;
    result
}

async fn seed_sim(hmac_key: &str) -> anyhow::Result<((Sim, Vec<FleetSummary>, String), String)> {
    let sim = dev_host::rig::start_sim().await?;
    let mut fleets = Vec::new();
    let mut incidents = 0;
    for (n, t) in TENANTS.iter().enumerate() {
        let secret = format!("app-secret-{}", uuid::Uuid::new_v4().simple());
        sim.add_app(AppRegistration {
            display_name: format!("defender-ops ({})", t.domain),
            ..AppRegistration::with_secret(t.id, t.client_id, &secret)
        });
        sim.set_secret(&secret_name(t), &secret);
        fleets.push(sim.generate_machines(t.id, t.devices, t.seed));
        let machines = sim.machines(t.id);
        let now = sim.now();
        let hosts = machines.iter().filter(|m| {
            m.health_status == "Active"
                && m.os_platform
                    .as_deref()
                    .is_some_and(|o| o.starts_with("Windows"))
        });
        for (k, (m, (title, severity))) in hosts
            .step_by(97)
            .zip([
                ("Suspicious PowerShell execution", "high"),
                ("'Mimikatz' hacktool was detected", "medium"),
                ("Unwanted software was detected", "low"),
            ])
            .enumerate()
        {
            let id = format!("{}", 48_200 + n * 100 + k);
            let at = now - time::Duration::hours(2 * k as i64 + 1);
            sim.upsert_incident(
                t.id,
                Incident::for_machine(t.id, &id, title, severity, m, at),
            );
            incidents += 1;
        }
    }
    let home = sim.home_tenant().to_owned();
    let home_secret = format!("home-secret-{}", uuid::Uuid::new_v4().simple());
    sim.add_app(AppRegistration::with_secret(&home, HOME_APP, &home_secret));
    sim.set_secret(KV_HOME, &home_secret);
    let console_key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sim.set_secret(KV_CONSOLE, &console_key);
    sim.add_mailbox(&home, MAIL_FROM);
    let sig = uuid::Uuid::new_v4().simple().to_string();
    let teams = sim.add_teams_workflow("secops-channel", &sig);
    sim.set_secret(KV_TEAMS, teams.as_str());
    sim.set_secret(KV_WEBHOOK, sim.sink_url("itsm").as_str());
    sim.set_secret(KV_CALLER, hmac_key);
    sim.set_secret(KV_EVENTS, &format!("evk-{}", uuid::Uuid::new_v4().simple()));
    let detail = format!(
        "{} at {}; {} devices; {incidents} incidents",
        "HTTPS simulators",
        sim.base_url(),
        fleets
            .iter()
            .map(|f| f.total.to_string())
            .collect::<Vec<_>>()
            .join(" + "),
    );
    let teams_url = teams.to_string();
    Ok(((sim, fleets, teams_url), detail))
}

fn secret_name(t: &DemoTenant) -> String {
    format!("tenant-{}", t.domain.replace('.', "-"))
}

/// The handler's settings for the simulators (as `tests/common` sets them).
fn sim_settings(sim: &Sim) -> Vec<(String, String)> {
    let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let mut settings = dev_host::sim_settings::handler_settings(sim, "");
    settings.extend([
        s("STALE_AFTER_DAYS", "7"),
        s("OFFBOARD_EXCLUDE_TAG", EXCLUDE_TAG),
        s("INCIDENT_MIN_SEVERITY", "medium"),
        s("NOTIFY_WEBHOOK_SIGNING_SECRET", KV_EVENTS),
        s("NOTIFY_TEAMS_SECRET", KV_TEAMS),
        s("NOTIFY_WEBHOOK_SECRET", KV_WEBHOOK),
        s("NOTIFY_EMAIL_FROM", MAIL_FROM),
        s("NOTIFY_EMAIL_TO", MAIL_TO),
        s("HOME_TENANT_ID", sim.home_tenant()),
        s("HOME_CLIENT_ID", HOME_APP),
        s("HOME_SECRET_NAME", KV_HOME),
        s("CONSOLE_SESSION_SECRET", KV_CONSOLE),
        // Plain text in target/run-local/handler.log.
        s("NO_COLOR", "1"),
    ]);
    settings
}

async fn start_host(
    sim: &Sim,
    handler: &Path,
    storage: &str,
) -> anyhow::Result<(RunningHost, String)> {
    let host = dev_host::rig::start_host(handler, storage, sim_settings(sim), |cfg| {
        cfg.echo_handler_output = false;
        // Failed queue messages come back after 2 s instead of 30 s, so a retry shows quickly.
        cfg.host_json_patch =
            Some(json!({"extensions": {"queues": {"visibilityTimeout": "00:00:02"}}}));
    })
    .await?;
    // The console signs in through the simulated Entra ID: register its callback there.
    sim.add_redirect_uri(
        sim.home_tenant(),
        HOME_APP,
        &format!(
            "{}/api/console/auth/callback",
            host.base_url().trim_end_matches('/')
        ),
    );
    let detail = format!(
        "{} ({} functions, handler on :{})",
        host.base_url(),
        host.functions().len(),
        host.handler_port()
    );
    Ok((host, detail))
}

/// How many times `SyncTenant` ran and failed, for a step's detail.
fn sync_runs(host: &RunningHost) -> String {
    let s = host.stats("SyncTenant");
    format!(
        "SyncTenant ran {} time(s), {} failed",
        s.invocations, s.failed
    )
}

async fn health(api: &Api) -> anyhow::Result<((), String)> {
    let a = api
        .call(Method::GET, "health", Key::Function, None)
        .await?
        .expect("GET /api/health", &[200, 503])?;
    let detail = format!("{} {}", a.status, clip(&a.text, 400));
    if a.status != 200 {
        bail!("GET /api/health: {detail}");
    }
    Ok(((), detail))
}

/// Machines that share a name or an Entra device id with another, or take part in a merge:
/// removing one of them would change the duplicate groups.
fn twins(sim: &Sim, tenant: &str) -> std::collections::HashSet<String> {
    let machines = sim.machines(tenant);
    let mut by_key: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut out = std::collections::HashSet::new();
    for m in &machines {
        if let Some(n) = &m.computer_dns_name {
            by_key
                .entry(format!("n:{}", n.to_ascii_lowercase()))
                .or_default()
                .push(&m.id);
        }
        if let Some(a) = &m.aad_device_id {
            by_key
                .entry(format!("a:{}", a.to_ascii_lowercase()))
                .or_default()
                .push(&m.id);
        }
        if let Some(target) = &m.merged_into_machine_id {
            out.insert(m.id.clone());
            out.insert(target.clone());
        }
    }
    for ids in by_key.values().filter(|ids| ids.len() > 1) {
        out.extend(ids.iter().map(|id| (*id).to_owned()));
    }
    out
}

fn expected_duplicates(fleet: &FleetSummary) -> usize {
    fleet.duplicates_by_name + fleet.duplicates_by_aad_device_id
}

async fn flow(p: &mut Progress, ctx: &Ctx) -> anyhow::Result<Report> {
    let (api, host, sim) = (&ctx.api, &ctx.host, &ctx.sim);
    let checks = p.checks.clone();
    let mut report = Report::default();
    p.step("GET /api/health", health(api)).await?;

    p.step(
        "register both tenants: PUT /api/tenants/{id} (admin key)",
        async {
            let mut answers = Vec::new();
            for t in &TENANTS {
                let path = format!("tenants/{}", t.id);
                let a = api
                    .call(
                        Method::PUT,
                        &path,
                        Key::Admin,
                        Some(&json!({
                            "displayName": t.name,
                            "clientId": t.client_id,
                            "authMode": "secret",
                            "secretName": secret_name(t),
                            "enabled": true,
                        })),
                    )
                    .await?
                    .expect(&format!("PUT /api/{path}"), &[200, 201])?;
                answers.push(format!("{} {}", t.name, a.status));
            }
            Ok(((), answers.join(", ")))
        },
    )
    .await?;

    p.step(
        "first sync (queued by the registrations): wait for the queues",
        async {
            settle(host).await?;
            Ok(((), sync_runs(host)))
        },
    )
    .await?;

    let mut devices: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    for (t, fleet) in TENANTS.iter().zip(&ctx.fleets) {
        let title = format!("{}: GET /api/devices/{{tenant}} (all pages)", t.name);
        let list = p
            .step(&title, async {
                let list = api.devices(t.id).await?;
                let c = count(&list);
                let want = expected_duplicates(fleet);
                if c.duplicates != want {
                    checks.fail(format!(
                        "{}: the API shows {} duplicates, Defender's fleet has {want} ({} by name + \
                         {} by Entra device id): the first sync lost {} DuplicateOf value(s)",
                        t.name,
                        c.duplicates,
                        fleet.duplicates_by_name,
                        fleet.duplicates_by_aad_device_id,
                        want.abs_diff(c.duplicates),
                    ));
                }
                if c.stale != fleet.stale {
                    checks.fail(format!(
                        "{}: the API shows {} stale devices, Defender's fleet has {}",
                        t.name, c.stale, fleet.stale
                    ));
                }
                if c.devices != fleet.total {
                    bail!(
                        "Defender lists {} devices, the API {}: the sync missed some.\nhandler log:\n{}",
                        fleet.total,
                        c.devices,
                        log_excerpt(host, &[t.id], 20)
                    );
                }
                let detail = format!(
                    "{} devices, {} stale, {} duplicates, {} macOS/Linux, {} tagged {EXCLUDE_TAG} \
                     (generated: {} stale, {} duplicates by name + {} by Entra device id, {} merged)",
                    c.devices,
                    c.stale,
                    c.duplicates,
                    c.macos_linux,
                    c.excluded,
                    fleet.stale,
                    fleet.duplicates_by_name,
                    fleet.duplicates_by_aad_device_id,
                    fleet.merged,
                );
                Ok((list, detail))
            })
            .await?;
        devices.insert(t.id, list);
    }

    // Machines that stop existing in Defender (retired, deleted in the portal).
    let removed = p
        .step(
            "remove machines in Defender, fire SyncScheduler: they become gone",
            async {
                let mut removed = BTreeMap::new();
                for t in &TENANTS {
                    let twins = twins(sim, t.id);
                    let ids: Vec<String> = devices[t.id]
                        .iter()
                        .filter(|d| offboardable(d))
                        .filter(|d| !twins.contains(d["machineId"].as_str().unwrap_or_default()))
                        .rev()
                        .take(t.remove)
                        .filter_map(|d| d["machineId"].as_str().map(str::to_owned))
                        .collect();
                    for id in &ids {
                        sim.remove_machine(t.id, id);
                    }
                    removed.insert(t.id, ids);
                }
                fire(host, "SyncScheduler").await?;
                settle(host).await?;
                let mut parts = Vec::new();
                for (t, fleet) in TENANTS.iter().zip(&ctx.fleets) {
                    let list = api.devices(t.id).await?;
                    let dups = count(&list).duplicates;
                    let want = expected_duplicates(fleet);
                    if dups != want {
                        checks.fail(format!(
                            "{}: after the second sync the API shows {dups} duplicates, Defender's fleet has {want}",
                            t.name
                        ));
                    }
                    let gone: Vec<&str> = list
                        .iter()
                        .filter(|d| d["gone"].as_bool() == Some(true))
                        .filter_map(|d| d["machineId"].as_str())
                        .collect();
                    let want = &removed[t.id];
                    if gone.len() != want.len()
                        || want.iter().any(|id| !gone.contains(&id.as_str()))
                    {
                        bail!(
                            "{}: removed {want:?} from Defender, the API marks {gone:?} gone",
                            t.name
                        );
                    }
                    let mut part = format!("{} {} gone, {dups} duplicates", t.name, gone.len());
                    // Duplicates this sync found that the first one had left without a
                    // DuplicateOf (no device changed in between): evidence for step 7/8.
                    let before: std::collections::HashSet<&str> = devices[t.id]
                        .iter()
                        .filter(|d| !d["duplicateOf"].as_str().unwrap_or("").is_empty())
                        .filter_map(|d| d["machineId"].as_str())
                        .collect();
                    let repaired: Vec<&str> = list
                        .iter()
                        .filter(|d| !d["duplicateOf"].as_str().unwrap_or("").is_empty())
                        .filter_map(|d| d["machineId"].as_str())
                        .filter(|id| !before.contains(id))
                        .collect();
                    if let Some(first) = repaired.first() {
                        let _ = write!(
                            part,
                            " ({} set now that the first sync left empty, e.g. {first})",
                            repaired.len()
                        );
                    }
                    parts.push(part);
                }
                Ok((removed, parts.join(", ")))
            },
        )
        .await?;

    let t1 = &TENANTS[0];
    let t2 = &TENANTS[1];
    let mut candidates = devices[t1.id]
        .iter()
        .filter(|d| offboardable(d))
        .filter(|d| !removed[t1.id].iter().any(|r| d["machineId"] == r.as_str()));
    let (Some(by_webhook), Some(by_flag)) = (candidates.next(), candidates.next()) else {
        bail!("the seeded fleet of {} has no offboardable device", t1.name);
    };
    let Some(to_reject) = devices[t2.id]
        .iter()
        .filter(|d| offboardable(d))
        .find(|d| !removed[t2.id].iter().any(|r| d["machineId"] == r.as_str()))
    else {
        bail!("the seeded fleet of {} has no offboardable device", t2.name);
    };
    let mid = |d: &Value| d["machineId"].as_str().unwrap_or_default().to_owned();
    let name = |d: &Value| d["computerDnsName"].as_str().unwrap_or_default().to_owned();
    // These devices are online, so their actions complete (the fleet has offline ones too).
    for (t, d) in [(t1, by_webhook), (t1, by_flag), (t2, to_reject)] {
        sim.set_machine_offline(t.id, &mid(d), false);
    }

    p.step(
        "register the ITSM system as a caller: PUT /api/callers/itsm (its own key, its tenants)",
        async {
            let a = api
                .call(
                    Method::PUT,
                    &format!("callers/{CALLER_ID}"),
                    Key::Admin,
                    Some(&json!({
                        "displayName": "ITSM (ServiceNow)",
                        "tenants": [t1.id, t2.id],
                        "secretName": KV_CALLER,
                    })),
                )
                .await?
                .expect("PUT /api/callers/itsm", &[200, 201])?;
            Ok(((), format!("{} caller {CALLER_ID}", a.status)))
        },
    )
    .await?;
    let webhook_request = p
        .step(
            "offboard through the signed webhook as caller itsm: POST /api/offboard (X-Caller-Id, X-Signature)",
            async {
                let a = api
                    .offboard(&json!({
                        "tenantId": t1.id,
                        "machineId": mid(by_webhook),
                        "comment": "Leaver HR-4471",
                        "requestedBy": "itsm@contoso.com",
                        "idempotencyKey": "CHG0012345",
                    }))
                    .await?
                    .expect("POST /api/offboard", &[202])?;
                let id = a.str("requestId");
                let detail = format!(
                    "202 {} for {}, request {id}",
                    a.str("status"),
                    name(by_webhook)
                );
                Ok((id, detail))
            },
        )
        .await?;

    p.step(
        "the same request again (same idempotency key): no second request",
        async {
            // A retry is signed anew: the same signature twice is refused as a replay, and
            // signatures carry whole seconds.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let a = api
                .offboard(&json!({
                    "tenantId": t1.id,
                    "machineId": mid(by_webhook),
                    "comment": "Leaver HR-4471",
                    "requestedBy": "itsm@contoso.com",
                    "idempotencyKey": "CHG0012345",
                }))
                .await?
                .expect("POST /api/offboard (repeat)", &[200])?;
            if a.str("requestId") != webhook_request {
                bail!(
                    "the repeat got request {}, not {webhook_request}",
                    a.str("requestId")
                );
            }
            Ok(((), format!("200, request {}", a.str("requestId"))))
        },
    )
    .await?;

    p.step("refused by policy at the door (excluded tag, macOS)", async {
        let mut lines = Vec::new();
        for (what, d) in [
            ("excluded", devices[t1.id].iter().find(|d| has_tag(d, EXCLUDE_TAG) && !d["gone"].as_bool().unwrap_or(false))),
            ("macOS", devices[t1.id].iter().find(|d| d["osPlatform"] == "macOS" && !d["stale"].as_bool().unwrap_or(true))),
        ] {
            let Some(d) = d else { continue };
            let a = api
                .offboard(&json!({"tenantId": t1.id, "machineId": mid(d), "requestedBy": "itsm@contoso.com"}))
                .await?
                .expect(&format!("POST /api/offboard ({what} device)"), &[422])?;
            let line = format!(
                "{what} {}: 422 {} \"{}\"",
                name(d),
                a.body["error"]["code"].as_str().unwrap_or("?"),
                a.body["error"]["message"].as_str().unwrap_or("")
            );
            lines.push(line);
        }
        report.refused = lines.clone();
        Ok(((), lines.join("; ")))
    })
    .await?;

    let flag_request = p
        .step(
            "offboard through the flag: PATCH /api/devices/{tenant}/{id} {\"offboard\": true}, fire OffboardFlagged",
            async {
                let path = format!("devices/{}/{}", t1.id, mid(by_flag));
                let a = api
                    .call(Method::PATCH, &path, Key::Function, Some(&json!({"offboard": true})))
                    .await?
                    .expect(&format!("PATCH /api/{path}"), &[200])?;
                if a.body["offboard"] != true {
                    bail!("PATCH /api/{path} answered without the flag: {}", a.text);
                }
                fire(host, "OffboardFlagged").await?;
                let d = api
                    .call(Method::GET, &path, Key::Function, None)
                    .await?
                    .expect(&format!("GET /api/{path}"), &[200])?;
                let id = d.str("lastRequestId");
                if id.is_empty() {
                    bail!(
                        "after OffboardFlagged the device has no lastRequestId: {}\nhandler log:\n{}",
                        d.text,
                        log_excerpt(host, &["OffboardFlagged", &mid(by_flag)], 20)
                    );
                }
                Ok((id.clone(), format!("{} → request {id}", name(by_flag))))
            },
        )
        .await?;

    let reject_request = p
        .step(
            "an offboard Defender refuses (device now Linux in Defender, still Windows in our table)",
            async {
                sim.update_machine(t2.id, &mid(to_reject), |m| {
                    m.os_platform = Some("Linux".into());
                });
                let a = api
                    .offboard(&json!({
                        "tenantId": t2.id,
                        "machineId": mid(to_reject),
                        "comment": "Decommissioned",
                        "requestedBy": "itsm@fabrikam.com",
                    }))
                    .await?
                    .expect("POST /api/offboard", &[202])?;
                let id = a.str("requestId");
                Ok((id.clone(), format!("202 for {}, request {id}", name(to_reject))))
            },
        )
        .await?;

    let tracked = [
        (t1, webhook_request.clone(), "Succeeded"),
        (t1, flag_request.clone(), "Succeeded"),
        (t2, reject_request.clone(), "Rejected"),
    ];

    p.step("OffboardWorker submits the requests to Defender", async {
        settle(host).await?;
        let mut parts = Vec::new();
        for (t, id, _) in &tracked {
            let r = api.request(t.id, id).await?;
            parts.push(r["status"].as_str().unwrap_or("?").to_string());
        }
        Ok((
            (),
            format!(
                "{} POST /offboard to Defender; statuses {}",
                sim.offboard_posts().len(),
                parts.join(", ")
            ),
        ))
    })
    .await?;

    p.step(
        "advance Defender's clock 10 min, fire ActionTracker until every request is final",
        async {
            sim.advance(Duration::from_secs(600));
            let mut rounds = 0;
            loop {
                rounds += 1;
                fire(host, "ActionTracker").await?;
                settle(host).await?;
                let mut pending = Vec::new();
                for (t, id, _) in &tracked {
                    let r = api.request(t.id, id).await?;
                    let s = r["status"].as_str().unwrap_or("?");
                    if matches!(s, "Accepted" | "Submitted" | "InProgress") {
                        pending.push(format!("{id} {s}"));
                    }
                }
                if pending.is_empty() {
                    break;
                }
                if rounds >= 5 {
                    bail!(
                        "still not final after {rounds} ActionTracker runs: {}\nhandler log:\n{}",
                        pending.join(", "),
                        log_excerpt(host, &["ActionTracker"], 20)
                    );
                }
                sim.advance(Duration::from_secs(300));
            }
            let mut parts = Vec::new();
            for (t, id, want) in &tracked {
                let r = api.request(t.id, id).await?;
                let status = r["status"].as_str().unwrap_or("?").to_owned();
                if status != *want {
                    bail!(
                        "request {id} ended {status}, expected {want}.\nGET /api/offboard/{}/{id} → {r}\nhandler log:\n{}",
                        t.id,
                        log_excerpt(host, &[id.as_str()], 20)
                    );
                }
                if *want == "Rejected" && (r["httpStatus"] != 400 || r["message"].as_str().unwrap_or("").is_empty()) {
                    bail!("request {id} is Rejected without Defender's 400 and message: {r}");
                }
                parts.push(status);
            }
            Ok(((), format!("{rounds} run(s): {}", parts.join(", "))))
        },
    )
    .await?;

    p.step("fire IncidentWatch (new incidents from Graph)", async {
        fire(host, "IncidentWatch").await?;
        let mut rows = 0;
        for t in &TENANTS {
            rows += table_rows(&ctx.tables, "Incidents", t.id).await?.len();
        }
        Ok((
            (),
            format!("{rows} incident(s) stored at or above severity medium"),
        ))
    })
    .await?;

    p.step("Notify drains the notifications queue", async {
        settle(host).await?;
        for q in ["device-sync", "offboard", "notifications"] {
            let poison = host.poison_messages(q).await.unwrap_or_default();
            if !poison.is_empty() {
                bail!(
                    "{} message(s) ended in {q}-poison: {}\nhandler log:\n{}",
                    poison.len(),
                    clip(&poison.join(" | "), 1500),
                    log_excerpt(host, &["WARN", "ERROR"], 20)
                );
            }
        }
        let (t, m, w) = (
            sim.teams_posts().len(),
            sim.mails().len(),
            sim.sink_events().len(),
        );
        if t == 0 || m == 0 || w == 0 {
            bail!(
                "a channel received nothing: Teams {t}, email {m}, webhook {w}\nhandler log:\n{}",
                log_excerpt(host, &["Notify"], 20)
            );
        }
        Ok((
            (),
            format!("Teams {t} card(s), {m} mail(s), {w} webhook event(s)"),
        ))
    })
    .await?;

    for t in &TENANTS {
        let list = api.devices(t.id).await?;
        report.counts.insert(t.id, count(&list));
    }
    for t in &TENANTS {
        let mut rows = table_rows(&ctx.tables, "OffboardRequests", t.id).await?;
        rows.sort_by(|a, b| {
            a.get_datetime("CreatedAt")
                .cmp(&b.get_datetime("CreatedAt"))
        });
        for r in rows {
            let status = r.get_str("Status").unwrap_or("?").to_owned();
            let mut line = format!(
                "{:<9} {:<10} {:<8} {}",
                t.name,
                status,
                r.get_str("Source").unwrap_or("?"),
                r.get_str("DeviceName")
                    .unwrap_or(r.get_str("MachineId").unwrap_or("?")),
            );
            if status == "Rejected" {
                let _ = write!(
                    line,
                    "\n{:<30}Defender {}: {}",
                    "",
                    r.get_i32("HttpStatus")
                        .map_or("?".into(), |s| s.to_string()),
                    r.get_str("Message").unwrap_or("")
                );
            }
            report
                .requests
                .push((t.id.to_owned(), r.row_key.clone(), line));
        }
    }
    Ok(report)
}

async fn table_rows(
    tables: &TableService,
    table: &str,
    partition: &str,
) -> anyhow::Result<Vec<Entity>> {
    let f = defender_ops::clients::tables::filter::eq("PartitionKey", partition);
    match tables.table(table)?.query_all(Some(&f), None).await {
        Ok(rows) => Ok(rows),
        Err(TableError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {table}"))),
    }
}

// ---- the outbox folder -------------------------------------------------------------------

fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// A card's kind, from its title (`Offboarding Succeeded: ...` → `offboard-succeeded`).
fn card_kind(card: &Value) -> String {
    let title = card["attachments"][0]["content"]["body"][0]["items"][0]["text"]
        .as_str()
        .unwrap_or("");
    if let Some(rest) = title.strip_prefix("Offboarding ") {
        let status = rest.split(':').next().unwrap_or("");
        return format!("offboard-{}", slug(status, 20));
    }
    if title.starts_with("New ") && title.contains("incident") {
        return "incident-new".into();
    }
    if title.starts_with("Incident ") {
        return "incident-changed".into();
    }
    if title.ends_with("onboarded") {
        return "devices-onboarded".into();
    }
    if title.ends_with("turned stale") {
        return "devices-stale".into();
    }
    if title.starts_with("Device sync failed") {
        return "sync-failed".into();
    }
    "card".into()
}

/// Writes every card, mail and webhook event the simulators received, numbered in arrival
/// order; returns how many files were written. A mail gives up to three files: its HTML part
/// (`.html`), its text part (`.txt`) and the whole MIME message (`.eml`, opens in a mail
/// program).
fn write_outbox(sim: &Sim, dir: &Path) -> anyhow::Result<usize> {
    enum Item {
        Teams(Value),
        Mail(Box<SentMail>),
        Hook(String),
    }
    let mut items: Vec<(time::OffsetDateTime, Item)> = Vec::new();
    items.extend(
        sim.teams_posts()
            .into_iter()
            .map(|p| (p.at, Item::Teams(p.body))),
    );
    items.extend(
        sim.mails()
            .into_iter()
            .map(|m| (m.at, Item::Mail(Box::new(m)))),
    );
    items.extend(
        sim.sink_events()
            .into_iter()
            .map(|e| (e.at, Item::Hook(e.body))),
    );
    items.sort_by_key(|(at, _)| *at);
    let mut written = 0;
    for (n, (_, item)) in items.into_iter().enumerate() {
        let n = n + 1;
        let files: Vec<(String, String)> = match item {
            Item::Teams(body) => vec![(
                format!("{n:02}-teams-{}.json", card_kind(&body)),
                serde_json::to_string_pretty(&body)?,
            )],
            Item::Mail(mail) => {
                let stem = format!(
                    "{n:02}-email-{}",
                    slug(mail.subject.as_deref().unwrap_or("mail"), 60)
                );
                let mut files = Vec::new();
                if let Some(html) = mail.html {
                    files.push((format!("{stem}.html"), html));
                }
                if let Some(text) = mail.text {
                    files.push((format!("{stem}.txt"), text));
                }
                match mail.body["mime"].as_str() {
                    Some(mime) => files.push((format!("{stem}.eml"), mime.to_owned())),
                    None if files.is_empty() => {
                        files.push((format!("{stem}.json"), mail.body.to_string()));
                    }
                    None => {}
                }
                files
            }
            Item::Hook(body) => {
                let pretty = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or(body);
                vec![(format!("{n:02}-webhook.json"), pretty)]
            }
        };
        for (file, text) in files {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

/// A Workflows post the simulator says would fail asynchronously (the HTTP answer is 202
/// anyway) is a product bug a person would only notice in Teams.
fn check_teams_flows(sim: &Sim) -> anyhow::Result<()> {
    let failed: Vec<String> = sim
        .teams_posts()
        .iter()
        .filter_map(|p| p.flow_failure.clone())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} Teams card(s) would fail in the Workflows flow: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// Every mail must carry both a plain-text and an HTML part (multipart/alternative): a mail
/// program showing only one of them would hide the gap.
fn check_mails(sim: &Sim) -> anyhow::Result<()> {
    let incomplete: Vec<String> = sim
        .mails()
        .iter()
        .filter(|m| m.text.is_none() || m.html.is_none())
        .map(|m| {
            format!(
                "'{}' ({:?}, parts {:?})",
                m.subject.as_deref().unwrap_or_default(),
                m.format,
                m.parts
            )
        })
        .collect();
    if !incomplete.is_empty() {
        bail!(
            "{} mail(s) lack a text or an HTML part: {}",
            incomplete.len(),
            incomplete.join("; ")
        );
    }
    Ok(())
}

// ---- summary -----------------------------------------------------------------------------

async fn outbox_counts(
    tables: &TableService,
) -> anyhow::Result<(BTreeMap<String, usize>, Vec<String>)> {
    let rows = match tables.table("Outbox")?.query_all(None, None).await {
        Ok(rows) => rows,
        Err(TableError::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(anyhow::Error::new(e).context("reading Outbox")),
    };
    let mut sent = BTreeMap::new();
    let mut errors = Vec::new();
    for r in &rows {
        for c in ["Teams", "Email", "Webhook"] {
            if r.get_datetime(&format!("{c}SentAt")).is_some() {
                *sent.entry(c.to_owned()).or_default() += 1;
            } else if let Some(e) = r
                .get_str(&format!("{c}LastError"))
                .filter(|e| !e.is_empty())
            {
                errors.push(format!("{} {c}: {e}", r.row_key));
            }
        }
    }
    sent.insert("notes".into(), rows.len());
    Ok((sent, errors))
}

async fn summary(ctx: &Ctx, report: &Report, out_dir: &Path, files: usize) -> anyhow::Result<()> {
    let api = &ctx.api;
    println!();
    println!("==================================== summary ====================================");
    println!(
        "{:<9} {:>7} {:>6} {:>6} {:>10} {:>5} {:>11} {:>8}",
        "tenant", "devices", "live", "stale", "duplicates", "gone", "macOS/Linux", "excluded"
    );
    for t in &TENANTS {
        let c = report.counts.get(t.id).cloned().unwrap_or_default();
        println!(
            "{:<9} {:>7} {:>6} {:>6} {:>10} {:>5} {:>11} {:>8}",
            t.name, c.devices, c.live, c.stale, c.duplicates, c.gone, c.macos_linux, c.excluded
        );
    }
    println!();
    println!("offboard requests ({}):", report.requests.len());
    println!("  {:<9} {:<10} {:<8} device", "tenant", "state", "source");
    for (_, _, line) in &report.requests {
        println!("  {line}");
    }
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, line) in &report.requests {
        let state = line.split_whitespace().nth(1).unwrap_or("?").to_owned();
        *by_state.entry(state).or_default() += 1;
    }
    println!(
        "  by state: {}",
        by_state
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in &report.refused {
        println!("  refused at the door (no request): {r}");
    }
    println!();
    let (outbox, errors) = outbox_counts(&ctx.tables).await?;
    let at = |k: &str| outbox.get(k).copied().unwrap_or(0);
    println!("notifications ({} notes in the Outbox table):", at("notes"));
    println!("  {:<8} {:>9} {:>14}", "channel", "received", "Outbox sent");
    println!(
        "  {:<8} {:>9} {:>14}",
        "Teams",
        ctx.sim.teams_posts().len(),
        at("Teams")
    );
    println!(
        "  {:<8} {:>9} {:>14}",
        "email",
        ctx.sim.mails().len(),
        at("Email")
    );
    println!(
        "  {:<8} {:>9} {:>14}",
        "webhook",
        ctx.sim.sink_events().len(),
        at("Webhook")
    );
    for e in &errors {
        println!("  undelivered: {e}");
    }
    println!();
    println!("look at:");
    for t in &TENANTS {
        println!(
            "  {} stale devices: {}",
            t.name,
            api.browser_url(&format!("devices/{}?stale=true", t.id))
        );
    }
    for (tenant, id, _) in &report.requests {
        println!(
            "  request {id}: {}",
            api.browser_url(&format!("offboard/{tenant}/{id}"))
        );
    }
    println!(
        "  the outbox ({files} files: Teams cards, mails, webhook events): {}",
        out_dir.join("outbox").display()
    );
    println!(
        "  the handler's log: {}",
        out_dir.join("handler.log").display()
    );
    println!(
        "  (the host, simulators and Azurite stop now; `scripts/run-local --keep-running` keeps them up)"
    );
    if !errors.is_empty() {
        bail!("{} notification(s) were not delivered", errors.len());
    }
    Ok(())
}

/// The console's URL and the test users of the simulated sign-in page.
fn print_console(ctx: &Ctx) {
    println!();
    println!(
        "Console: {}/api/console/ (sign in by picking a test user)",
        ctx.api.base
    );
    for u in dev_sim::TEST_USERS {
        let roles = if u.roles.is_empty() {
            "no role".to_owned()
        } else {
            u.roles.join(", ")
        };
        println!("  {:<9} {:<26} {roles}", u.key, u.upn);
    }
}

async fn keep_running(ctx: &Ctx) {
    let api = &ctx.api;
    let ca = ctx.sim.ca_pem_path().display().to_string();
    let sim = ctx.sim.base_url().to_string();
    println!();
    println!("still running (--keep-running); Ctrl-C stops everything.");
    println!("  host:            {}", api.base);
    println!("  function key:    {}", api.function_key);
    println!("  admin key:       {}", api.admin_key);
    println!("  storage:         {}", ctx.storage);
    println!("  simulators:      {sim} (CA {ca})");
    println!("  Teams workflow:  {}", ctx.teams_url);
    println!("try:");
    println!(
        "  curl -s '{}' | head -c 600",
        api.browser_url(&format!("devices/{}?stale=true&top=5", TENANTS[0].id))
    );
    println!(
        "  curl -s -X PATCH -H 'content-type: application/json' -d '{{\"offboard\": true}}' '{}'",
        api.browser_url(&format!("devices/{}/<machineId>", TENANTS[0].id))
    );
    println!(
        "  # timers do not fire on their own here; fire one as the real host's admin API does:"
    );
    println!(
        "  curl -s -X POST -H 'x-functions-key: {}' -H 'content-type: application/json' -d '{{}}' {}/admin/functions/OffboardFlagged",
        api.admin_key, api.base
    );
    println!("  # move Defender's clock so machine actions complete, then fire ActionTracker:");
    println!(
        "  curl -s --cacert {ca} -X POST -H 'content-type: application/json' -d '{{\"seconds\": 600}}' {sim}_sim/clock/advance"
    );
    println!(
        "  # what the simulators received: {sim}_sim/teams, {sim}_sim/mails, {sim}_sim/sink, {sim}_sim/offboards"
    );
    until_stopped().await;
    println!("stopping");
}

/// Ctrl-C, or SIGTERM from a script that started run-local in the background (where
/// SIGINT is ignored).
async fn until_stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// `--ready-file`: what a script needs to call the running API (its URL, the function and
/// admin keys, the registered caller and its signing key, the demo tenants), as shell assignments, written whole (a
/// reader never sees half a file).
fn write_ready_file(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let api = &ctx.api;
    let tenants: Vec<&str> = TENANTS.iter().map(|t| t.id).collect();
    let text = format!(
        "RUN_LOCAL_API_URL='{}/api'\nRUN_LOCAL_FUNCTION_KEY='{}'\nRUN_LOCAL_ADMIN_KEY='{}'\nRUN_LOCAL_WEBHOOK_KEY='{}'\nRUN_LOCAL_CALLER_ID='{CALLER_ID}'\nRUN_LOCAL_TENANTS='{}'\n",
        api.base,
        api.function_key,
        api.admin_key,
        api.hmac_key.as_deref().unwrap_or_default(),
        tenants.join(" ")
    );
    let partial = file.with_extension("partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, file).with_context(|| format!("writing {}", file.display()))?;
    println!("  ready file:      {}", file.display());
    Ok(())
}

// ---- against real Azure ------------------------------------------------------------------

/// The `Values` of a local.settings.json-style file.
fn read_settings(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let values = v["Values"]
        .as_object()
        .with_context(|| format!("{} has no \"Values\" object", file.display()))?;
    Ok(values
        .iter()
        .filter_map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            (!s.is_empty()).then(|| (k.clone(), s))
        })
        .collect())
}

async fn run_against_azure(file: &Path, args: &Args) -> anyhow::Result<()> {
    let handler = handler_path(args)?;
    let settings = read_settings(file)?;
    let get = |k: &str| {
        settings
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    println!(
        "run-local --settings {}: against the Azure services those settings name",
        file.display()
    );
    println!("  handler: {}", handler.display());
    println!("  skipped here (they need the simulators or would change real tenants): seeding,");
    println!("  offboarding (webhook, flag, a refused one), the action tracker, incidents,");
    println!("  notifications and the outbox folder, and every check that reads the simulators.");
    let mut p = Progress::new();
    let storage = get("AzureWebJobsStorage").context(
        "the settings have no AzureWebJobsStorage: dev/host needs a connection string with an \
         account key for its queues (identity-based storage works only in Azure)",
    )?;
    let mut azurite = None;
    let storage = if storage
        .to_ascii_lowercase()
        .contains("usedevelopmentstorage=true")
    {
        let a = p
            .step(
                "AzureWebJobsStorage is UseDevelopmentStorage=true: start a private Azurite",
                async {
                    let a = Azurite::start().await?;
                    let detail = format!("tables :{} queues :{}", a.table_port(), a.queue_port());
                    Ok((a, detail))
                },
            )
            .await?;
        let conn = a.connection_string();
        azurite = Some(a);
        conn
    } else {
        storage
    };
    let result = azure_flow(&mut p, &handler, &settings, &storage, args.keep_running).await;
    if let Some(mut a) = azurite {
        a.stop().await;
    }
    result
}

async fn azure_flow(
    p: &mut Progress,
    handler: &Path,
    settings: &[(String, String)],
    storage: &str,
    keep: bool,
) -> anyhow::Result<()> {
    let host = p
        .step(
            "start dev/host with the handler and these settings",
            async {
                let mut cfg = HostConfig::new(workspace(), handler, storage);
                cfg.env = settings
                    .iter()
                    .filter(|(k, _)| k != "AzureWebJobsStorage")
                    .cloned()
                    .chain([("NO_COLOR".to_owned(), "1".to_owned())])
                    .collect();
                cfg.echo_handler_output = false;
                let host = Host::start(cfg).await?;
                let detail = host.base_url().to_owned();
                Ok((host, detail))
            },
        )
        .await?;
    let api = Api::new(&host, None)?;
    let run = async {
        p.step("GET /api/health", health(&api)).await?;
        let tenants = p
            .step("GET /api/tenants (admin key)", async {
                let a = api
                    .call(Method::GET, "tenants", Key::Admin, None)
                    .await?
                    .expect("GET /api/tenants", &[200])?;
                let items = a.body["items"].as_array().cloned().unwrap_or_default();
                let detail = format!("{} tenant(s)", items.len());
                Ok((items, detail))
            })
            .await?;
        p.step("fire SyncScheduler and wait for the syncs", async {
            fire(&host, "SyncScheduler").await?;
            settle(&host).await?;
            Ok(((), sync_runs(&host)))
        })
        .await?;
        for t in &tenants {
            let id = t["tenantId"].as_str().unwrap_or_default().to_owned();
            let label = t["displayName"].as_str().unwrap_or(&id).to_owned();
            p.step(
                &format!("{label}: GET /api/devices/{{tenant}} (all pages)"),
                async {
                    let c = count(&api.devices(&id).await?);
                    Ok((
                        (),
                        format!(
                            "{} devices, {} stale, {} duplicates, {} gone",
                            c.devices, c.stale, c.duplicates, c.gone
                        ),
                    ))
                },
            )
            .await?;
            println!(
                "           {}",
                api.browser_url(&format!("devices/{id}?stale=true"))
            );
        }
        p.note("offboarding, notifications and incidents were skipped (see above)");
        if keep {
            println!(
                "still running (--keep-running): host {} function key {} admin key {}; Ctrl-C stops",
                api.base, api.function_key, api.admin_key
            );
            let _ = tokio::signal::ctrl_c().await;
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C)")),
    };
    if result.is_err() {
        eprintln!(
            "handler log (last lines):\n{}",
            log_excerpt(&host, &[""], 30)
        );
    }
    host.stop().await;
    result
}
