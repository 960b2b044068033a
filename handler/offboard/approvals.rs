//! Approvals and cancelling (design §9.4): an approver other than the requester approves a
//! waiting request (→ `Accepted` and its job) or denies it (→ `Denied`); an operator cancels
//! a request nothing was sent for yet (→ `Cancelled`); `ActionTracker` expires what waited
//! longer than `APPROVAL_TTL_HOURS` (→ `Expired`) and announces each waiting request once.
//!
//! Every move is an ETag-checked update of the request row: of two approvers deciding one
//! request at once, one wins and the other is told what the request became. Each move
//! writes its Audit row with the person who made it and their comment.

use time::{Duration, OffsetDateTime};
use url::Url;

use super::{Change, OffboardJob, Tables};
use crate::clients::tables::TableError;
use crate::domain::approval::{self, DecisionRefused};
use crate::domain::notification::Note;
use crate::domain::request::RequestStatus;
use crate::domain::{Actor, RequestId, TenantId};
use crate::error::ApiError;
use crate::store::requests::{self, OffboardRequest, Versioned};

/// How many times a decision is re-read and retried after a write that did not change the
/// request's state (the tracker marking it announced, say).
const ATTEMPTS: u32 = 5;

/// The longest comment kept with a decision.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// Who acts, and what the notes link to.
#[derive(Debug, Clone, Copy)]
pub struct Acting<'a> {
    pub actor: &'a Actor,
    /// `CONSOLE_BASE_URL`, for the notes' link to the request's page.
    pub console_base: Option<&'a Url>,
    pub now: OffsetDateTime,
}

/// What an approver decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    fn target(self) -> RequestStatus {
        match self {
            Self::Approve => RequestStatus::Accepted,
            Self::Deny => RequestStatus::Denied,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Deny => "denied",
        }
    }
}

/// What a decision or a cancel produced: the request as it now is, the job to queue (an
/// approval) and the note to send (a denial, a cancel).
#[derive(Debug, Clone)]
pub struct Moved {
    pub request: OffboardRequest,
    pub job: Option<OffboardJob>,
    pub note: Option<Note>,
}

fn storage(e: TableError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e).context("Table Storage"))
}

fn clean_comment(comment: &str) -> Result<String, ApiError> {
    let c: String = comment
        .trim()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect();
    if c.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_request(
            "InvalidComment",
            format!("the comment must be at most {MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok(c)
}

async fn read(t: &Tables, tenant: &TenantId, id: &RequestId) -> Result<Versioned, ApiError> {
    requests::get(&t.requests, tenant, id)
        .await
        .map_err(storage)?
        .ok_or_else(|| {
            ApiError::not_found(
                "RequestNotFound",
                format!("request {id} does not exist in tenant {tenant}"),
            )
        })
}

fn not_waiting(r: &OffboardRequest) -> ApiError {
    ApiError::conflict(
        "RequestNotAwaitingApproval",
        format!(
            "request {} is {}, not AwaitingApproval: it was already decided, expired or cancelled",
            r.request_id, r.status
        ),
        Some(serde_json::json!({ "status": r.status.as_str() })),
    )
}

/// `acting.actor` approves or denies a waiting request, with a comment.
///
/// # Errors
/// 404 unknown request; 403 for the requester themself (`OwnRequest`) or a decider that is
/// not a signed-in person; 409 `RequestNotAwaitingApproval` when it is no longer waiting
/// (another approver won the race); 400 for a comment that is too long; 5xx storage.
pub async fn decide(
    t: &Tables,
    tenant: &TenantId,
    id: &RequestId,
    decision: Decision,
    comment: &str,
    acting: Acting<'_>,
) -> Result<Moved, ApiError> {
    let Acting {
        actor: decider,
        console_base,
        now,
    } = acting;
    let comment = clean_comment(comment)?;
    for _ in 0..ATTEMPTS {
        let current = read(t, tenant, id).await?;
        let r = &current.request;
        if r.status != RequestStatus::AwaitingApproval {
            return Err(not_waiting(r));
        }
        approval::may_decide(&r.actor, decider).map_err(|e| match e {
            DecisionRefused::OwnRequest | DecisionRefused::NotAPerson => {
                ApiError::Forbidden(e.to_string())
            }
        })?;
        let detail = if comment.is_empty() {
            format!("{} by {decider}", decision.verb())
        } else {
            format!("{} by {decider}: {comment}", decision.verb())
        };
        let change = Change {
            detail,
            by: Some(decider.clone()),
            console_url: super::console_url(console_base, r),
            ..Change::default()
        };
        match super::transition(t, &current, decision.target(), change, now).await {
            Ok(Some((request, note))) => {
                tracing::info!(request.id = %id, actor = %decider, decision = decision.verb(), "approval decided");
                let job = (request.status == RequestStatus::Accepted).then(|| OffboardJob {
                    tenant_id: request.tenant_id.clone(),
                    request_id: request.request_id.clone(),
                });
                return Ok(Moved { request, job, note });
            }
            Ok(None) => return Err(not_waiting(r)),
            // Someone else wrote first: read again; a decided request answers 409 above.
            Err(TableError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(storage(e)),
        }
    }
    Err(ApiError::Unavailable(
        "the request kept changing while it was decided; retry".into(),
    ))
}

/// `acting.actor` cancels a request nothing was sent to Defender for yet: `AwaitingApproval`, or
/// `Accepted` before a worker marked it for submission. A job delivered later finds the
/// request `Cancelled` and does nothing (the worker only submits `Accepted` requests, and
/// its mark is ETag-checked against this write).
///
/// # Errors
/// 404 unknown request; 409 `RequestNotCancellable` once submitted or final; 5xx storage.
pub async fn cancel(
    t: &Tables,
    tenant: &TenantId,
    id: &RequestId,
    comment: &str,
    acting: Acting<'_>,
) -> Result<Moved, ApiError> {
    let Acting {
        actor: by,
        console_base,
        now,
    } = acting;
    let comment = clean_comment(comment)?;
    for _ in 0..ATTEMPTS {
        let current = read(t, tenant, id).await?;
        let r = &current.request;
        if !r.status.is_cancellable() || r.submitting_at.is_some() {
            return Err(ApiError::conflict(
                "RequestNotCancellable",
                format!(
                    "request {} is {}{}; only a request not yet sent to Defender can be cancelled",
                    r.request_id,
                    r.status,
                    if r.submitting_at.is_some() && r.status.is_cancellable() {
                        " and being submitted right now"
                    } else {
                        ""
                    }
                ),
                Some(serde_json::json!({ "status": r.status.as_str() })),
            ));
        }
        let detail = if comment.is_empty() {
            format!("cancelled by {by} before submission")
        } else {
            format!("cancelled by {by} before submission: {comment}")
        };
        let change = Change {
            detail,
            by: Some(by.clone()),
            console_url: super::console_url(console_base, r),
            ..Change::default()
        };
        match super::transition(t, &current, RequestStatus::Cancelled, change, now).await {
            Ok(Some((request, note))) => {
                tracing::info!(request.id = %id, actor = %by, "offboard request cancelled");
                return Ok(Moved {
                    request,
                    job: None,
                    note,
                });
            }
            Ok(None) | Err(TableError::PreconditionFailed { .. }) => {}
            Err(e) => return Err(storage(e)),
        }
    }
    Err(ApiError::Unavailable(
        "the request kept changing while it was cancelled; retry".into(),
    ))
}

/// `ActionTracker`'s pass over a tenant's waiting requests: a request that waited `ttl`
/// becomes `Expired` (its note goes out), one not yet announced gets its `AwaitingApproval`
/// note (marked on the row first, ETag-checked, so two runs announce it once).
///
/// # Errors
/// Storage failures.
pub async fn sweep_waiting(
    t: &Tables,
    tenant: &TenantId,
    ttl: Duration,
    console_base: Option<&Url>,
    now: OffsetDateTime,
) -> Result<Vec<Note>, TableError> {
    let waiting = requests::with_status(
        &t.requests,
        tenant,
        &[RequestStatus::AwaitingApproval],
        usize::MAX,
    )
    .await?;
    let mut notes = Vec::new();
    for v in waiting {
        let r = &v.request;
        let link = super::console_url(console_base, r);
        if approval::is_expired(r.created_at, ttl, now) {
            let change = Change {
                detail: format!(
                    "expired: no approver decided within {} h",
                    ttl.whole_hours()
                ),
                by: Some(Actor::timer("ActionTracker")),
                console_url: link,
                ..Change::default()
            };
            match super::transition(t, &v, RequestStatus::Expired, change, now).await {
                Ok(Some((_, note))) => notes.extend(note),
                // An approver decided it meanwhile.
                Ok(None) | Err(TableError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
        } else if r.announced_at.is_none() {
            let mut marked = r.clone();
            marked.announced_at = Some(now);
            match requests::update(&t.requests, &marked, v.etag.clone()).await {
                Ok(_) => notes.push(super::result_note(&marked, link, now)),
                Err(TableError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_trimmed_stripped_of_control_characters_and_bounded() {
        assert_eq!(
            clean_comment("  ok\u{7}\n fine ").ok().as_deref(),
            Some("ok\n fine")
        );
        assert!(clean_comment(&"x".repeat(MAX_COMMENT_CHARS + 1)).is_err());
    }
}
