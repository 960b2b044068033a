//! `sim`: runs the simulators out of process.
//!
//! - `sim [--port N] [--seed-demo] [--ca PATH] [--offboard-201]`: prints `SIM_BASE_URL=...`,
//!   `SIM_CA=...`, `SIM_IDENTITY_ENDPOINT=...`, `SIM_IDENTITY_HEADER=...` and serves until
//!   killed; the admin API is under `{SIM_BASE_URL}_sim/`. `--offboard-201` makes Defender
//!   answer an accepted offboard with 201 Created instead of 200 (also settable at run time:
//!   `PUT _sim/config/offboard {"respond201": true}`).
//! - `sim ca [--dir DIR]`: creates (or keeps) the test CA in DIR (default: the directory of
//!   `SSL_CERT_FILE`) and prints its path.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use dev_sim::{AppRegistration, Incident, Sim, SimConfig};

const USAGE: &str =
    "usage: sim [--port N] [--seed-demo] [--ca PATH] [--offboard-201] | sim ca [--dir DIR]";

/// The demo tenants `--seed-demo` creates.
const DEMO_TENANTS: [(&str, &str, &str); 2] = [
    (
        "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f405162",
        "0b8e4d2c-7a1f-4c3e-9d5b-2f6a8c1e4b70",
        "contoso.com",
    ),
    (
        "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "1c9f5e3d-8b2a-4d4f-ae6c-3a7b9d2f5c81",
        "fabrikam.com",
    ),
];

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .compact()
        .init();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn value(args: &[String], i: usize, flag: &str) -> anyhow::Result<String> {
    args.get(i + 1)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("ca") {
        let mut dir: Option<PathBuf> = None;
        let mut i = 1;
        while i < args.len() {
            match args[i].as_str() {
                "--dir" => {
                    dir = Some(value(&args, i, "--dir")?.into());
                    i += 2;
                }
                other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
            }
        }
        let path = dev_sim::tls::resolve_ca_path(dir.map(|d| d.join("ca.pem")));
        let ca = dev_sim::tls::TestCa::load_or_create(&path)?;
        let abs = std::fs::canonicalize(ca.cert_path()).unwrap_or_else(|_| ca.cert_path().into());
        println!("SIM_CA={}", abs.display());
        return Ok(());
    }
    let mut config = SimConfig::default();
    let mut seed_demo = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--port" => {
                config.port = value(&args, i, "--port")?.parse()?;
                i += 2;
            }
            "--ca" => {
                config.ca_pem = Some(value(&args, i, "--ca")?.into());
                i += 2;
            }
            "--seed-demo" => {
                seed_demo = true;
                i += 1;
            }
            "--offboard-201" => {
                config.offboard.respond_201 = true;
                i += 1;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let sim = Sim::start(config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "SIM_BASE_URL={}", sim.base_url())?;
        writeln!(out, "SIM_CA={}", sim.ca_pem_path().display())?;
        writeln!(out, "SIM_IDENTITY_ENDPOINT={}", sim.identity_endpoint())?;
        writeln!(out, "SIM_IDENTITY_HEADER={}", sim.identity_header())?;
        writeln!(out, "SIM_HOME_TENANT={}", sim.home_tenant())?;
        if seed_demo {
            seed(&sim, &mut out)?;
        }
        out.flush()?;
        drop(out);
        tokio::signal::ctrl_c().await?;
        drop(sim);
        Ok(())
    })
}

/// Two tenants of ~1,000 realistic devices, apps, secrets, mailboxes, a Teams workflow and
/// a few incidents.
fn seed(sim: &Sim, out: &mut impl Write) -> anyhow::Result<()> {
    for (n, (tenant, client, domain)) in DEMO_TENANTS.iter().enumerate() {
        let secret = format!("demo-secret-{}", n + 1);
        sim.add_app(AppRegistration {
            display_name: format!("defender-ops ({domain})"),
            ..AppRegistration::with_secret(tenant, client, &secret)
        });
        let secret_name = format!("tenant-{}", domain.replace('.', "-"));
        sim.set_secret(&secret_name, &secret);
        let mailbox = format!("noreply-defender@{domain}");
        sim.add_mailbox(tenant, &mailbox);
        let summary = sim.generate_machines(tenant, 1000 + n * 37, 42 + n as u64);
        let machines = sim.machines(tenant);
        let now = sim.now();
        for (k, (title, severity)) in [
            ("Suspicious PowerShell execution", "high"),
            ("'Mimikatz' hacktool was detected", "medium"),
            ("Unwanted software was detected", "low"),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(m) = machines
                .iter()
                .filter(|m| m.health_status == "Active")
                .nth(k * 7)
            {
                let id = format!("{}", 48_200 + n * 100 + k);
                let at = now - time::Duration::hours(2 * k as i64 + 1);
                sim.upsert_incident(
                    tenant,
                    Incident::for_machine(tenant, &id, title, severity, m, at),
                );
            }
        }
        writeln!(
            out,
            "SIM_TENANT_{i}={tenant} client_id={client} secret={secret} key_vault_secret={secret_name} mailbox={mailbox}",
            i = n + 1
        )?;
        writeln!(
            out,
            "SIM_TENANT_{i}_DEVICES={}",
            serde_json::to_string(&summary)?,
            i = n + 1
        )?;
    }
    let url = sim.add_teams_workflow("demo", "demo-sig");
    writeln!(out, "SIM_TEAMS_WEBHOOK={url}")?;
    writeln!(out, "SIM_WEBHOOK_SINK={}", sim.sink_url("demo"))?;
    Ok(())
}
