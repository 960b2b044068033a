//! The custom-handler binary: telemetry, config, build, serve until SIGTERM.

use std::process::ExitCode;

use defender_ops::app::{AppState, Application};
use defender_ops::config::Config;
use defender_ops::telemetry;

/// jemalloc in the static musl binary that ships: see Cargo.toml and .cargo/config.toml.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("defender-ops cannot start its runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve())
}

/// One worker thread unless `TOKIO_WORKER_THREADS` (tokio's own variable) asks for more.
/// The handler spends nearly all its time waiting for Table Storage and Microsoft's APIs;
/// a second worker bought no throughput and cost CPU, as wake-ups hop between threads.
/// bench-webhook on 2 cores, shipped binary: 160-180 µs of CPU per request with one worker,
/// 180-195 µs with two (and with musl's allocator 200 vs 290 µs); the 100k-device sync kept
/// its time and memory. The one CPU-heavy step, decoding 10 MiB pages of machines, runs on
/// the blocking pool.
fn worker_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

async fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // Telemetry isn't up yet and this must reach the host log: plain stdout.
            println!("defender-ops cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.in_azure);
    tracing::info!(settings = ?config.summary(), "starting");
    for warning in config.trust_warnings() {
        tracing::warn!("{warning}");
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "stopped on an error");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let state = AppState::new(config)?;
    state.check_signing_key().await?;
    let app = Application::build(state).await?;
    tracing::info!(port = app.port(), "listening on 127.0.0.1");
    app.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
