//! `Console` (anonymous at the host; the console signs people in itself): every
//! `GET`/`POST /api/console/{*path}` goes to [`crate::console`].

use crate::app::AppState;
use crate::host::{HttpRequestData, InvocationResponse};

/// Answers one console request.
pub async fn handle(
    state: &AppState,
    req: &HttpRequestData,
    invocation_id: &str,
) -> InvocationResponse {
    InvocationResponse::http(&crate::console::handle(state, req, invocation_id).await)
}
