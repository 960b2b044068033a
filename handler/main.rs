//! The custom-handler binary: telemetry, config, build, serve until SIGTERM.

use std::process::ExitCode;

use defender_ops::app::{AppState, Application};
use defender_ops::config::Config;
use defender_ops::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
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
