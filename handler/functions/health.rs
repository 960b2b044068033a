//! `Health`: liveness and readiness of storage and Key Vault, as JSON.
//!
//! Anonymous, so the answer says which dependency is down but never why in detail (hosts,
//! account names and SDK messages go to the log, tagged with the invocation id). And cheap:
//! liveness is answered from memory, and the readiness probe (one storage ping, one Key Vault
//! read) runs at most once per [`READINESS_TTL`], its result shared by every caller meanwhile,
//! concurrent ones included (single flight), so anonymous calls can't spend the vault's
//! throttle budget that tenant secrets need.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::app::AppState;
use crate::host::{HttpResponse, InvocationResponse};

/// Each dependency gets this long; a health check must answer before a load balancer gives up.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one readiness probe's result is answered before the next probe.
pub const READINESS_TTL: Duration = Duration::from_secs(15);

/// One readiness probe's result.
#[derive(Debug, Clone)]
struct Readiness {
    healthy: bool,
    checks: Value,
    at: Instant,
}

/// The last readiness result. The lock is held across a probe, so callers that arrive during
/// one wait for it and share its result instead of probing again.
#[derive(Debug, Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<Readiness>>);

impl ReadinessCache {
    async fn get<F, Fut>(&self, ttl: Duration, probe: F) -> Readiness
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (bool, Value)>,
    {
        let mut last = self.0.lock().await;
        if let Some(fresh) = last.as_ref().filter(|r| r.at.elapsed() < ttl) {
            return fresh.clone();
        }
        let (healthy, checks) = probe().await;
        let result = Readiness {
            healthy,
            checks,
            at: Instant::now(),
        };
        *last = Some(result.clone());
        result
    }
}

/// GET /api/health: 200 when every configured dependency answered the last probe, else 503.
pub async fn handle(state: &AppState) -> InvocationResponse {
    let readiness = state
        .services()
        .readiness
        .get(READINESS_TTL, || probe(state))
        .await;
    let age_ms = u64::try_from(readiness.at.elapsed().as_millis()).unwrap_or(u64::MAX);
    let body = json!({
        "status": if readiness.healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": readiness.checks,
        "checkedMsAgo": age_ms,
    });
    InvocationResponse::http(&HttpResponse::json(
        if readiness.healthy { 200 } else { 503 },
        &body,
    ))
}

/// Storage and Key Vault, side by side.
async fn probe(state: &AppState) -> (bool, Value) {
    let storage = check("storage", state.tables().ping());
    let vault = async {
        match state.vault() {
            Some(v) => Some(check("keyVault", v.probe()).await),
            None => None,
        }
    };
    let (storage, vault) = tokio::join!(storage, vault);
    let healthy = storage.0 && vault.as_ref().is_none_or(|v| v.0);
    let checks = json!({
        "storage": storage.1,
        "keyVault": vault.map_or_else(|| json!({"status": "not configured"}), |v| v.1),
    });
    (healthy, checks)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_probe_and_later_ones_reuse_it() {
        let cache = Arc::new(ReadinessCache::default());
        let probes = Arc::new(AtomicU32::new(0));
        let calls = (0..40).map(|_| {
            let (cache, probes) = (Arc::clone(&cache), Arc::clone(&probes));
            tokio::spawn(async move {
                cache
                    .get(Duration::from_secs(15), || async move {
                        probes.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        (true, json!({}))
                    })
                    .await
                    .healthy
            })
        });
        for call in futures::future::join_all(calls).await {
            assert!(call.expect("call"));
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_expired_result_is_probed_again() {
        let cache = ReadinessCache::default();
        let probes = AtomicU32::new(0);
        for _ in 0..3 {
            cache
                .get(Duration::ZERO, || async {
                    probes.fetch_add(1, Ordering::SeqCst);
                    (false, json!({}))
                })
                .await;
        }
        assert_eq!(probes.load(Ordering::SeqCst), 3);
    }
}
