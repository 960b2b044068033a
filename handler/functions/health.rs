//! `Health`: liveness and readiness of storage and Key Vault, as JSON.
//!
//! Anonymous, so the answer says which dependency is down but never why in detail (hosts,
//! account names and SDK messages go to the log, tagged with the invocation id).

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::app::AppState;
use crate::host::{HttpResponse, InvocationResponse};

/// Each dependency gets this long; a health check must answer before a load balancer gives up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// GET /api/health: 200 when every configured dependency answers, else 503.
pub async fn handle(state: &AppState) -> InvocationResponse {
    let storage = check("storage", state.tables().ping());
    let vault = async {
        match state.vault() {
            Some(v) => Some(check("keyVault", v.probe()).await),
            None => None,
        }
    };
    let (storage, vault) = tokio::join!(storage, vault);

    let healthy = storage.0 && vault.as_ref().is_none_or(|v| v.0);
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": {
            "storage": storage.1,
            "keyVault": vault.map_or_else(|| json!({"status": "not configured"}), |v| v.1),
        },
    });
    InvocationResponse::http(&HttpResponse::json(if healthy { 200 } else { 503 }, &body))
}

async fn check<E: std::fmt::Display>(
    name: &'static str,
    probe: impl Future<Output = Result<(), E>>,
) -> (bool, Value) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(Ok(())) => (true, json!({"status": "ok", "durationMs": duration_ms})),
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, duration_ms, "health check failed");
            (false, json!({"status": "error", "durationMs": duration_ms}))
        }
        Err(_) => {
            tracing::warn!(dependency = name, duration_ms, "health check timed out");
            (
                false,
                json!({"status": "timeout", "durationMs": duration_ms}),
            )
        }
    }
}
