//! The error policy, in one place.
//!
//! - Inside use cases, errors are `anyhow` with `.context()`, or a client's `thiserror` enum
//!   where the caller must branch (throttled, not found, conflict...).
//! - HTTP functions turn every failure into an [`ApiError`], answered to the caller inside
//!   `Outputs.res` as `{"error": {"code", "message"}}` with the right status, while the host
//!   itself gets a 200: a non-2xx to the host would be a failed invocation and a bare 500.
//! - A 5xx never carries an internal detail: the caller gets an opaque message with the
//!   invocation id, and the cause chain is logged once, here.
//! - Non-HTTP functions (timer, queue) fail the invocation with an [`InvocationFailure`]: the
//!   handler answers the host with a 500, which is how a queue message is retried and finally
//!   moved to the poison queue.

use serde_json::{Value, json};

use crate::host::HttpResponse;

/// A failure an HTTP caller sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed this (an approver deciding their own request).
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    MethodNotAllowed { message: String },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("function {0} is not implemented yet")]
    NotImplemented(&'static str),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(
        code: &'static str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            details,
        }
    }

    /// The status code for the caller.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound { .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict { .. } => 409,
            Self::PayloadTooLarge(_) => 413,
            Self::Unprocessable { .. } => 422,
            Self::NotImplemented(_) => 501,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The error code in the body (`TenantNotFound`...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. } => code,
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::MethodNotAllowed { .. } => "MethodNotAllowed",
            Self::PayloadTooLarge(_) => "PayloadTooLarge",
            Self::NotImplemented(_) => "NotImplemented",
            Self::Unavailable(_) => "ServiceUnavailable",
            Self::Internal(_) => "InternalError",
        }
    }

    /// The answer for the caller. Internal errors are logged here (once) with their cause
    /// chain and answered with an opaque message.
    pub fn into_response(self, invocation_id: &str) -> HttpResponse {
        let status = self.status();
        let code = self.code();
        let message = match &self {
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "request failed with an internal error");
                format!("internal error; quote invocation id {invocation_id} to the operator")
            }
            other => other.to_string(),
        };
        let mut error = json!({ "code": code, "message": message });
        if let Self::Conflict {
            details: Some(Value::Object(extra)),
            ..
        } = &self
            && let Some(obj) = error.as_object_mut()
        {
            obj.extend(extra.clone());
        }
        HttpResponse::json(status, &json!({ "error": error }))
    }
}

/// A non-HTTP invocation that must fail so the host retries it (or records the failure).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct InvocationFailure(#[from] pub anyhow::Error);

impl InvocationFailure {
    pub fn msg(message: impl Into<String>) -> Self {
        Self(anyhow::anyhow!(message.into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body(r: &HttpResponse) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn client_errors_carry_their_code_and_message() {
        let r = ApiError::bad_request("InvalidTenantId", "tenantId must be a GUID")
            .into_response("inv");
        assert_eq!(r.status, 400);
        assert_eq!(body(&r)["error"]["code"], "InvalidTenantId");
        assert_eq!(body(&r)["error"]["message"], "tenantId must be a GUID");
    }

    #[test]
    fn internal_errors_never_leak_their_cause() {
        let e = anyhow::anyhow!("AccountKey=supersecret").context("table write failed");
        let r = ApiError::Internal(e).into_response("inv-42");
        assert_eq!(r.status, 500);
        assert!(!r.body.contains("supersecret"));
        assert!(!r.body.contains("table write"));
        assert!(r.body.contains("inv-42"));
    }

    #[test]
    fn conflicts_can_list_candidates() {
        let r = ApiError::conflict(
            "AmbiguousDevice",
            "2 devices",
            Some(json!({"candidates": ["a", "b"]})),
        )
        .into_response("i");
        assert_eq!(r.status, 409);
        assert_eq!(body(&r)["error"]["candidates"][1], "b");
    }
}
