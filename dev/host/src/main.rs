//! `dev-host`: runs the app in a folder against a handler binary, like `func start`.
//! Prints the base URL and keys, runs until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use dev_host::{Host, HostConfig};

const USAGE: &str = "usage: dev-host --app-root <dir> --handler <exe> --storage <connection string> \
[--port N] [--function-key K] [--admin-key K] [--no-timers] [--env NAME=VALUE]...";

fn parse_args(args: Vec<String>) -> Result<HostConfig, String> {
    let mut app_root = None;
    let mut handler = None;
    let mut storage = None;
    let mut port = 7071u16;
    let mut function_key = None;
    let mut admin_key = None;
    let mut run_timers = true;
    let mut env = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--app-root" => app_root = Some(PathBuf::from(value("--app-root")?)),
            "--handler" => handler = Some(PathBuf::from(value("--handler")?)),
            "--storage" => storage = Some(value("--storage")?),
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|_| "--port needs a number".to_string())?;
            }
            "--function-key" => function_key = Some(value("--function-key")?),
            "--admin-key" => admin_key = Some(value("--admin-key")?),
            "--env" => {
                let pair = value("--env")?;
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| "--env needs NAME=VALUE".to_string())?;
                env.push((k.to_string(), v.to_string()));
            }
            "--no-timers" => run_timers = false,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(app_root), Some(handler), Some(storage)) = (app_root, handler, storage) else {
        return Err(USAGE.to_string());
    };
    let mut cfg = HostConfig::new(app_root, handler, &storage);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.run_timers = run_timers;
    cfg.env = env;
    if let Some(k) = function_key {
        cfg.function_key = k;
    }
    if let Some(k) = admin_key {
        cfg.admin_key = k;
    }
    Ok(cfg)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match parse_args(std::env::args().skip(1).collect()) {
        Ok(cfg) => cfg,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let host = match Host::start(cfg).await {
        Ok(host) => host,
        Err(e) => {
            eprintln!("dev-host: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("dev-host listening on {}", host.base_url());
    println!("function key: {}", host.function_key());
    println!("admin key:    {}", host.admin_key());
    for f in host.functions() {
        println!("  {}", f.name);
    }
    let _ = tokio::signal::ctrl_c().await;
    host.stop().await;
    ExitCode::SUCCESS
}
