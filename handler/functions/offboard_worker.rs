//! `OffboardWorker` (queue `offboard`): submit one request to Defender and record the outcome.
//!
//! A message may be delivered more than once, and the handler may die between Defender's
//! answer and our row update. So before posting, the worker looks for an Offboard action
//! this request already caused (or one already open on the machine) and links it instead:
//! a request never offboards twice.

use time::OffsetDateTime;

use crate::app::AppState;
use crate::clients::defender::{
    ActionType, DefenderClient, DefenderError, MachineAction, SubmittedOffboard,
};
use crate::domain::request::RequestStatus;
use crate::error::InvocationFailure;
use crate::host::{InvocationResponse, QueueMessage};
use crate::offboard::{self, Change, OffboardJob, Tables};
use crate::store::requests::{self, Versioned};
use crate::store::{self, names, tenants};

/// `host.json` `maxDequeueCount`: the last delivery records a final state instead of failing.
pub const MAX_DEQUEUE_COUNT: u32 = 5;
/// Clocks differ between us and Defender; an action created this long before our request
/// was accepted can still be ours.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(2);
/// How long a first delivery leaves a request another delivery has marked.
const SUBMITTING_GRACE: time::Duration = time::Duration::minutes(1);

fn fail(e: impl Into<anyhow::Error>) -> InvocationFailure {
    InvocationFailure(e.into())
}

/// Runs one `offboard` job.
///
/// # Errors
/// Throttling, Defender 5xx, an uncertain POST and storage failures fail the invocation so
/// the host retries (the next attempt looks up the machine's actions first).
pub async fn handle(
    state: &AppState,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    // `tenantId` and `requestId` are the key fields; everything else is in the request row.
    let job: OffboardJob = match serde_json::from_str(&msg.text) {
        Ok(job) => job,
        Err(e) => return Ok(super::jobs::unreadable(super::queues::OFFBOARD, msg, &e)),
    };
    let span = tracing::Span::current();
    span.record("tenant.id", job.tenant_id.as_str());
    span.record("request.id", job.request_id.as_str());

    let t = Tables::open(state.tables()).await.map_err(fail)?;
    let Some(current) = requests::get(&t.requests, &job.tenant_id, &job.request_id)
        .await
        .map_err(fail)?
    else {
        tracing::warn!("offboard job for a request that does not exist; dropping it");
        return Ok(
            InvocationResponse::new().log(format!("request {} does not exist", job.request_id))
        );
    };
    if current.request.status != RequestStatus::Accepted {
        tracing::info!(status = %current.request.status, "request already submitted; nothing to do");
        return Ok(InvocationResponse::new());
    }
    let now = state.now();

    let tenants_table = store::open(state.tables(), names::TENANTS)
        .await
        .map_err(fail)?;
    let tenant = match tenants::get(&tenants_table, &job.tenant_id)
        .await
        .map_err(fail)?
    {
        Some(v) if v.tenant.enabled => v.tenant,
        _ => {
            let change = Change {
                message: Some("the tenant is no longer registered or enabled".into()),
                detail: "tenant disabled before submission".into(),
                ..Change::default()
            };
            return finish(&t, &current, RequestStatus::Failed, change, now, msg).await;
        }
    };
    let client = state.defender(&tenant).await.map_err(fail)?;

    let current = match prepare(&t, &client, current, now, msg).await? {
        Prepared::Post(current) => *current,
        Prepared::Done(answer) => return Ok(answer),
    };
    let r = &current.request;
    match verdict(client.offboard(&r.machine_id, &r.comment).await) {
        Verdict::Move(next, change) => finish(&t, &current, next, change, now, msg).await,
        Verdict::LinkOpen { said } => match client.find_open_offboard(&r.machine_id).await {
            Ok(Some(action)) => {
                let detail = format!("Defender said: {said}; linked the open action");
                link(&t, &current, &action, &detail, now, msg).await
            }
            // Another kind of action is running on the machine: try again later.
            Ok(None) => Err(InvocationFailure::msg(format!(
                "another action is in progress on the machine: {said}"
            ))),
            Err(e) => retry_or_give_up(&t, &current, e, now, msg).await,
        },
        Verdict::Retry(e) => retry_or_give_up(&t, &current, e, now, msg).await,
    }
}

enum Prepared {
    /// Post the offboard for this (marked) request.
    Post(Box<Versioned>),
    /// An earlier attempt's action was found and linked, or the job must wait.
    Done(InvocationResponse),
}

/// The first attempt marks the request before posting; a delivery that finds the mark may
/// follow an attempt that reached Defender (a crash, a timeout, a duplicate job), so it
/// looks for that attempt's action before posting. The first attempt saves the lookup:
/// Defender's budget of 100 calls a minute is the scarce resource.
async fn prepare(
    t: &Tables,
    client: &DefenderClient,
    current: Versioned,
    now: OffsetDateTime,
    msg: &QueueMessage,
) -> Result<Prepared, InvocationFailure> {
    if let Some(marked_at) = current.request.submitting_at {
        // A fresh mark on a first delivery: another job for this request (a caller's repeat)
        // is submitting it right now. Come back later rather than race its POST; a redelivery
        // after a failure (crash, timeout) looks for the earlier attempt's action instead.
        if msg.dequeue_count <= 1 && now - marked_at < SUBMITTING_GRACE {
            return Err(InvocationFailure::msg(
                "another delivery is submitting this request",
            ));
        }
        return match earlier_action(client, &current).await {
            Ok(Some(action)) => {
                let detail = "linked the Offboard action already in Defender (a retry found it)";
                link(t, &current, &action, detail, now, msg)
                    .await
                    .map(Prepared::Done)
            }
            Ok(None) => Ok(Prepared::Post(Box::new(current))),
            Err(e) => retry_or_give_up(t, &current, e, now, msg)
                .await
                .map(Prepared::Done),
        };
    }
    let mut marked = current.clone();
    marked.request.submitting_at = Some(now);
    marked.request.attempts = msg.dequeue_count;
    match requests::update(&t.requests, &marked.request, current.etag.clone()).await {
        Ok(etag) => Ok(Prepared::Post(Box::new(Versioned {
            request: marked.request,
            etag,
        }))),
        // Another delivery of the same job got there first: let the host retry this one; by
        // then the request has moved on and the retry does nothing.
        Err(crate::clients::tables::TableError::PreconditionFailed { .. }) => Err(
            InvocationFailure::msg("another delivery is submitting this request"),
        ),
        Err(e) => Err(fail(e)),
    }
}

/// What Defender's answer to the offboard POST means for the request.
#[derive(Debug)]
enum Verdict {
    Move(RequestStatus, Change),
    /// `ActiveRequestAlreadyExists`: find the open action and follow it.
    LinkOpen {
        said: String,
    },
    /// Throttled, 5xx, or a POST whose fate is unknown.
    Retry(DefenderError),
}

fn verdict(answer: Result<SubmittedOffboard, DefenderError>) -> Verdict {
    let refused = |status: u16, detail: String, message: String, next: RequestStatus| {
        Verdict::Move(
            next,
            Change {
                http_status: Some(status),
                detail,
                message: Some(message),
                ..Change::default()
            },
        )
    };
    match answer {
        Ok(SubmittedOffboard {
            http_status,
            action,
        }) => Verdict::Move(
            mapped(&action).unwrap_or(RequestStatus::Submitted),
            Change {
                action_id: Some(action.id.clone()),
                http_status: Some(http_status),
                message: None,
                detail: format!(
                    "Defender accepted the offboard; machine action {}",
                    action.id
                ),
                ..Change::default()
            },
        ),
        Err(DefenderError::ActiveRequestAlreadyExists { message }) => {
            Verdict::LinkOpen { said: message }
        }
        // The seed flow pasted this message into the Result column: keep it verbatim.
        Err(DefenderError::BadRequest { code, message }) => refused(
            400,
            format!("Defender refused the offboard ({code})"),
            message,
            RequestStatus::Rejected,
        ),
        Err(DefenderError::NotFound { message }) => refused(
            404,
            "Defender does not know the machine".into(),
            message,
            RequestStatus::Rejected,
        ),
        Err(DefenderError::Forbidden { missing, message }) => refused(
            403,
            "Defender refused the app's permissions".into(),
            format!(
                "the app registration lacks the {} permission (grant it and give admin consent): {message}",
                missing.as_deref().unwrap_or("Machine.Offboard")
            ),
            RequestStatus::Failed,
        ),
        Err(e @ DefenderError::Unauthorized { .. }) => refused(
            401,
            "Defender refused the app's token".into(),
            e.to_string(),
            RequestStatus::Failed,
        ),
        Err(e) => Verdict::Retry(e),
    }
}

/// An Offboard action created for this request by an earlier attempt, or one already open
/// on the machine.
async fn earlier_action(
    client: &DefenderClient,
    current: &Versioned,
) -> Result<Option<MachineAction>, DefenderError> {
    let since = current.request.created_at - CLOCK_SKEW;
    let actions = client
        .machine_actions(&current.request.machine_id, Some(&ActionType::Offboard))
        .await?;
    Ok(actions
        .into_iter()
        .filter(|a| a.kind.as_ref().is_none_or(|k| *k == ActionType::Offboard))
        .filter(|a| {
            let recent = a.creation_date_time_utc.is_some_and(|c| c >= since);
            let open = a.status.as_ref().is_some_and(|s| s.is_open());
            recent || open
        })
        .max_by_key(|a| a.creation_date_time_utc))
}

fn mapped(action: &MachineAction) -> Option<RequestStatus> {
    action
        .status
        .as_ref()
        .and_then(|s| RequestStatus::from_action_status(s.as_str()))
}

async fn link(
    t: &Tables,
    current: &Versioned,
    action: &MachineAction,
    detail: &str,
    now: OffsetDateTime,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    let next = mapped(action).unwrap_or(RequestStatus::Submitted);
    let change = Change {
        action_id: Some(action.id.clone()),
        detail: format!("{detail}: {}", action.id),
        ..Change::default()
    };
    finish(t, current, next, change, now, msg).await
}

/// Throttling, 5xx, a POST whose fate is unknown: fail so the host retries, until the last
/// delivery, which records `Failed` (the request must end somewhere).
async fn retry_or_give_up(
    t: &Tables,
    current: &Versioned,
    e: DefenderError,
    now: OffsetDateTime,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    if !e.is_transient() && !matches!(e, DefenderError::Uncertain { .. }) {
        let change = Change {
            message: Some(e.to_string()),
            detail: "the offboard could not be submitted".into(),
            ..Change::default()
        };
        return finish(t, current, RequestStatus::Failed, change, now, msg).await;
    }
    if msg.dequeue_count >= MAX_DEQUEUE_COUNT {
        let change = Change {
            message: Some(format!("gave up after {} attempts: {e}", msg.dequeue_count)),
            detail: "retries exhausted".into(),
            ..Change::default()
        };
        return finish(t, current, RequestStatus::Failed, change, now, msg).await;
    }
    tracing::warn!(attempt = msg.dequeue_count, error = %e, "offboard submission will be retried");
    Err(InvocationFailure(
        anyhow::Error::new(e).context("submitting the offboard"),
    ))
}

async fn finish(
    t: &Tables,
    current: &Versioned,
    next: RequestStatus,
    change: Change,
    now: OffsetDateTime,
    msg: &QueueMessage,
) -> Result<InvocationResponse, InvocationFailure> {
    let mut current = current.clone();
    current.request.attempts = msg.dequeue_count;
    match offboard::transition(t, &current, next, change, now)
        .await
        .map_err(fail)?
    {
        Some((r, note)) => {
            let line = format!("request {} is {}", r.request_id, r.status);
            Ok(InvocationResponse::new()
                .with_queue("notes", note.iter().map(|n| n.to_message()).collect())
                .log(line))
        }
        None => Ok(InvocationResponse::new()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clients::defender::ActionStatus;

    fn moved(v: Verdict) -> (RequestStatus, Change) {
        match v {
            Verdict::Move(s, c) => (s, c),
            other => panic!("expected a move, got {other:?}"),
        }
    }

    #[test]
    fn defenders_400_rejects_the_request_with_its_message_verbatim() {
        let text = "OS Platform Linux isn't supported for this action.";
        let (s, c) = moved(verdict(Err(DefenderError::BadRequest {
            code: "OsPlatformNotSupported".into(),
            message: text.into(),
        })));
        assert_eq!(s, RequestStatus::Rejected);
        assert_eq!(c.message.as_deref(), Some(text));
        assert_eq!(c.http_status, Some(400));
    }

    #[test]
    fn an_accepted_post_is_submitted_with_its_action_and_follows_its_status() {
        let action = MachineAction {
            id: "a1".into(),
            status: Some(ActionStatus::parse("Pending")),
            ..MachineAction::default()
        };
        let answered = |http_status: u16, action: MachineAction| {
            moved(verdict(Ok(SubmittedOffboard {
                http_status,
                action,
            })))
        };
        let (s, c) = answered(201, action.clone());
        assert_eq!(s, RequestStatus::Submitted);
        assert_eq!(c.action_id.as_deref(), Some("a1"));
        assert_eq!(c.http_status, Some(201), "the status Defender answered");
        let running = MachineAction {
            status: Some(ActionStatus::parse("InProgress")),
            ..action
        };
        let (s, c) = answered(200, running);
        assert_eq!(s, RequestStatus::InProgress);
        assert_eq!(c.http_status, Some(200));
    }

    #[test]
    fn permission_problems_fail_the_request_naming_the_permission() {
        let (s, c) = moved(verdict(Err(DefenderError::Forbidden {
            missing: Some("Machine.Offboard".into()),
            message: "The application does not have any of the required application permissions"
                .into(),
        })));
        assert_eq!(s, RequestStatus::Failed);
        assert!(c.message.unwrap().contains("Machine.Offboard"));
        let (s, _) = moved(verdict(Err(DefenderError::NotFound {
            message: "Machine x was not found".into(),
        })));
        assert_eq!(s, RequestStatus::Rejected);
    }

    #[test]
    fn throttling_and_uncertain_posts_are_retried_and_an_active_request_is_linked() {
        assert!(matches!(
            verdict(Err(DefenderError::Throttled { retry_after: None })),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            verdict(Err(DefenderError::Transient {
                status: Some(503),
                message: String::new()
            })),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            verdict(Err(DefenderError::ActiveRequestAlreadyExists {
                message: "Action is already in progress".into()
            })),
            Verdict::LinkOpen { .. }
        ));
    }
}
