//! `OffboardStatus`: `GET /api/offboard/{tenantId}/{requestId}`, one request and its history.

use super::tenants::storage;
use crate::app::AppState;
use crate::domain::RequestId;
use crate::error::ApiError;
use crate::host::{HttpRequestData, HttpResponse, InvocationResponse};
use crate::offboard::{self, Tables};
use crate::store::requests;

/// GET: the request, or 404 (also for another tenant's request id).
///
/// # Errors
/// [`ApiError`] for the caller.
pub async fn handle(
    state: &AppState,
    req: &HttpRequestData,
) -> Result<InvocationResponse, ApiError> {
    let tenant = super::route_tenant(req)?;
    let id = RequestId::parse(req.param("requestId").unwrap_or_default())
        .map_err(|e| ApiError::bad_request("InvalidRequestId", e.to_string()))?;
    tracing::Span::current().record("request.id", id.as_str());
    let t = Tables::open(state.tables()).await.map_err(storage)?;
    let Some(v) = requests::get(&t.requests, &tenant, &id)
        .await
        .map_err(storage)?
    else {
        return Err(ApiError::not_found(
            "RequestNotFound",
            format!("request {id} does not exist in tenant {tenant}"),
        ));
    };
    let mut body = offboard::to_json(&v.request);
    body["history"] =
        serde_json::Value::Array(offboard::history(&t, &v.request).await.map_err(storage)?);
    Ok(InvocationResponse::http(&HttpResponse::json(200, &body)))
}
