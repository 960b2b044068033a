//! `OffboardWorker` (queue `offboard`): submit one request to Defender and record the outcome.
//!
//! A message may be delivered more than once, and the handler may die between Defender's
//! answer and our row update. So before posting, the worker looks for an Offboard action
//! this request already caused (or one already open on the machine) and links it instead:
//! a request never offboards twice.

use time::OffsetDateTime;

use crate::app::AppState;
use crate::clients::defender::{ActionType, DefenderClient, DefenderError, MachineAction};
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
    let job: OffboardJob = serde_json::from_str(&msg.text)
        .map_err(|e| InvocationFailure::msg(format!("the message is not an offboard job: {e}")))?;
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

    // The first attempt marks the request before posting; a delivery that finds the mark
    // may follow an attempt that reached Defender (a crash, a timeout, a duplicate job), so
    // it looks for that attempt's action before posting. The first attempt saves the lookup:
    // Defender's budget of 100 calls a minute is the scarce resource.
    let current = if current.request.submitting_at.is_some() {
        match earlier_action(&client, &current).await {
            Ok(Some(action)) => {
                return link(
                    &t,
                    &current,
                    &action,
                    "linked the Offboard action already in Defender (a retry found it)",
                    now,
                    msg,
                )
                .await;
            }
            Ok(None) => current,
            Err(e) => return retry_or_give_up(&t, &current, e, now, msg).await,
        }
    } else {
        let mut marked = current.clone();
        marked.request.submitting_at = Some(now);
        marked.request.attempts = msg.dequeue_count;
        match requests::update(&t.requests, &marked.request, current.etag.clone()).await {
            Ok(etag) => Versioned {
                request: marked.request,
                etag,
            },
            // Another delivery of the same job got there first: let the host retry this one;
            // by then the request has moved on and the retry does nothing.
            Err(crate::clients::tables::TableError::PreconditionFailed { .. }) => {
                return Err(InvocationFailure::msg(
                    "another delivery is submitting this request",
                ));
            }
            Err(e) => return Err(fail(e)),
        }
    };

    let r = &current.request;
    match client.offboard(&r.machine_id, &r.comment).await {
        Ok(action) => {
            let change = Change {
                action_id: Some(action.id.clone()),
                http_status: Some(200),
                message: None,
                detail: format!(
                    "Defender accepted the offboard; machine action {}",
                    action.id
                ),
            };
            let next = mapped(&action).unwrap_or(RequestStatus::Submitted);
            finish(&t, &current, next, change, now, msg).await
        }
        Err(DefenderError::ActiveRequestAlreadyExists { message }) => {
            match client.find_open_offboard(&r.machine_id).await {
                Ok(Some(action)) => {
                    link(
                        &t,
                        &current,
                        &action,
                        &format!("Defender said: {message}; linked the open action"),
                        now,
                        msg,
                    )
                    .await
                }
                // Another kind of action is running on the machine: try again later.
                Ok(None) => Err(InvocationFailure::msg(format!(
                    "another action is in progress on the machine: {message}"
                ))),
                Err(e) => retry_or_give_up(&t, &current, e, now, msg).await,
            }
        }
        Err(DefenderError::BadRequest { code, message }) => {
            let change = Change {
                http_status: Some(400),
                detail: format!("Defender refused the offboard ({code})"),
                message: Some(message),
                ..Change::default()
            };
            finish(&t, &current, RequestStatus::Rejected, change, now, msg).await
        }
        Err(DefenderError::NotFound { message }) => {
            let change = Change {
                http_status: Some(404),
                detail: "Defender does not know the machine".into(),
                message: Some(message),
                ..Change::default()
            };
            finish(&t, &current, RequestStatus::Rejected, change, now, msg).await
        }
        Err(e @ (DefenderError::Forbidden { .. } | DefenderError::Unauthorized { .. })) => {
            let (status, text) = match &e {
                DefenderError::Forbidden { missing, message } => (
                    403,
                    format!(
                        "the app registration lacks the {} permission (grant it and give admin consent): {message}",
                        missing.as_deref().unwrap_or("Machine.Offboard")
                    ),
                ),
                other => (401, other.to_string()),
            };
            let change = Change {
                http_status: Some(status),
                detail: "Defender refused the app's permissions".into(),
                message: Some(text),
                ..Change::default()
            };
            finish(&t, &current, RequestStatus::Failed, change, now, msg).await
        }
        Err(e) => retry_or_give_up(&t, &current, e, now, msg).await,
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
