//! One module per `functions/<Name>` folder, and the catalog that ties them to their bindings.
//!
//! The catalog repeats what `functions/*/function.json` declares; a contract test checks the
//! two agree, so a renamed binding can't silently drop an output.

pub mod action_tracker;
pub mod body;
pub mod callers;
pub mod console;
pub mod devices;
pub mod health;
pub mod incident_watch;
pub mod jobs;
pub mod notify;
pub mod offboard_flagged;
pub mod offboard_status;
pub mod offboard_webhook;
pub mod offboard_worker;
pub mod sync_scheduler;
pub mod sync_tenant;
pub mod tenants;

use crate::app::AppState;
use crate::error::{ApiError, InvocationFailure};
use crate::host::{
    EnvelopeError, HttpRequestData, Invocation, InvocationResponse, QueueMessage, TimerInfo,
};

/// Who may call an HTTP function (enforced by the host before the handler sees the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    Anonymous,
    Function,
    Admin,
}

/// How a function is triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Http {
        methods: &'static [&'static str],
        route: &'static str,
        auth: AuthLevel,
    },
    Timer {
        schedule: &'static str,
    },
    Queue {
        queue: &'static str,
    },
}

/// A function's name, trigger and output bindings (name → queue, or `res`).
#[derive(Debug, Clone, Copy)]
pub struct FunctionSpec {
    pub name: &'static str,
    pub trigger_binding: &'static str,
    pub trigger: Trigger,
    /// `(binding name, queue name)`; the HTTP output `res` has no queue.
    pub outputs: &'static [(&'static str, Option<&'static str>)],
}

const RES: (&str, Option<&str>) = ("res", None);
const HTTP: &str = "req";
const TIMER: &str = "timer";
const QUEUE: &str = "message";

/// Queue names (fixed; tables get `TABLE_PREFIX`, queues don't).
pub mod queues {
    pub const DEVICE_SYNC: &str = "device-sync";
    pub const OFFBOARD: &str = "offboard";
    pub const NOTIFICATIONS: &str = "notifications";
    // Where the host moves a message after `maxDequeueCount` failed deliveries, and where a
    // queue function writes one it can't read (the `poison` output binding).
    pub const DEVICE_SYNC_POISON: &str = "device-sync-poison";
    pub const OFFBOARD_POISON: &str = "offboard-poison";
    pub const NOTIFICATIONS_POISON: &str = "notifications-poison";
}

/// Every function of DESIGN §2.
pub const CATALOG: &[FunctionSpec] = &[
    FunctionSpec {
        name: "Health",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["get"],
            route: "health",
            auth: AuthLevel::Anonymous,
        },
        outputs: &[RES],
    },
    FunctionSpec {
        name: "SyncScheduler",
        trigger_binding: TIMER,
        trigger: Trigger::Timer {
            schedule: "%DEVICE_SYNC_SCHEDULE%",
        },
        outputs: &[("jobs", Some(queues::DEVICE_SYNC))],
    },
    FunctionSpec {
        name: "SyncTenant",
        trigger_binding: QUEUE,
        trigger: Trigger::Queue {
            queue: queues::DEVICE_SYNC,
        },
        outputs: &[
            ("notes", Some(queues::NOTIFICATIONS)),
            (jobs::POISON, Some(queues::DEVICE_SYNC_POISON)),
        ],
    },
    FunctionSpec {
        name: "OffboardWebhook",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["post"],
            route: "offboard",
            auth: AuthLevel::Function,
        },
        outputs: &[RES, ("jobs", Some(queues::OFFBOARD))],
    },
    FunctionSpec {
        name: "OffboardStatus",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["get"],
            route: "offboard/{tenantId}/{requestId}",
            auth: AuthLevel::Function,
        },
        outputs: &[RES],
    },
    FunctionSpec {
        name: "Devices",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["get", "patch"],
            route: "devices/{tenantId}/{machineId?}",
            auth: AuthLevel::Function,
        },
        outputs: &[RES, ("jobs", Some(queues::OFFBOARD))],
    },
    FunctionSpec {
        name: "Tenants",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["get", "put", "delete"],
            route: "tenants/{tenantId?}",
            auth: AuthLevel::Admin,
        },
        outputs: &[RES, ("jobs", Some(queues::DEVICE_SYNC))],
    },
    FunctionSpec {
        name: "Callers",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["get", "put", "delete"],
            route: "callers/{callerId?}",
            auth: AuthLevel::Admin,
        },
        outputs: &[RES],
    },
    FunctionSpec {
        name: "OffboardFlagged",
        trigger_binding: TIMER,
        trigger: Trigger::Timer {
            schedule: "%OFFBOARD_FLAGGED_SCHEDULE%",
        },
        outputs: &[("jobs", Some(queues::OFFBOARD))],
    },
    FunctionSpec {
        name: "OffboardWorker",
        trigger_binding: QUEUE,
        trigger: Trigger::Queue {
            queue: queues::OFFBOARD,
        },
        outputs: &[
            ("notes", Some(queues::NOTIFICATIONS)),
            (jobs::POISON, Some(queues::OFFBOARD_POISON)),
        ],
    },
    FunctionSpec {
        name: "ActionTracker",
        trigger_binding: TIMER,
        trigger: Trigger::Timer {
            schedule: "%ACTION_TRACKER_SCHEDULE%",
        },
        outputs: &[("notes", Some(queues::NOTIFICATIONS))],
    },
    FunctionSpec {
        name: "IncidentWatch",
        trigger_binding: TIMER,
        trigger: Trigger::Timer {
            schedule: "%INCIDENT_WATCH_SCHEDULE%",
        },
        outputs: &[("notes", Some(queues::NOTIFICATIONS))],
    },
    FunctionSpec {
        name: "Console",
        trigger_binding: HTTP,
        trigger: Trigger::Http {
            methods: &["get", "post"],
            route: "console/{*path}",
            auth: AuthLevel::Anonymous,
        },
        outputs: &[RES, ("jobs", Some(queues::DEVICE_SYNC))],
    },
    FunctionSpec {
        name: "Notify",
        trigger_binding: QUEUE,
        trigger: Trigger::Queue {
            queue: queues::NOTIFICATIONS,
        },
        outputs: &[(jobs::POISON, Some(queues::NOTIFICATIONS_POISON))],
    },
];

/// Looks a function up by the name in the invocation path (the folder name, case preserved).
pub fn spec(name: &str) -> Option<&'static FunctionSpec> {
    CATALOG.iter().find(|s| s.name == name)
}

/// The trigger's data, decoded according to the function's trigger kind.
#[derive(Debug, Clone)]
pub enum TriggerData {
    Http(HttpRequestData),
    Timer(TimerInfo),
    Queue(QueueMessage),
}

/// Decodes the trigger binding of `inv` for `spec`, before any work is done.
///
/// # Errors
/// [`EnvelopeError`] when the host's payload lacks the binding or has the wrong shape.
pub fn trigger_data(spec: &FunctionSpec, inv: &Invocation) -> Result<TriggerData, EnvelopeError> {
    Ok(match spec.trigger {
        Trigger::Http { .. } => TriggerData::Http(inv.http(spec.trigger_binding)?),
        Trigger::Timer { .. } => TriggerData::Timer(inv.timer(spec.trigger_binding)?),
        Trigger::Queue { .. } => TriggerData::Queue(inv.queue(spec.trigger_binding)?),
    })
}

/// Runs one invocation of a known function.
///
/// # Errors
/// [`InvocationFailure`] when the invocation must fail (the host retries queue messages).
pub async fn invoke(
    state: &AppState,
    spec: &'static FunctionSpec,
    inv: &Invocation,
    data: TriggerData,
) -> Result<InvocationResponse, InvocationFailure> {
    match (spec.name, data) {
        ("Health", TriggerData::Http(_)) => Ok(health::handle(state).await),
        ("Console", TriggerData::Http(req)) => {
            Ok(console::handle(state, &req, inv.invocation_id()).await)
        }
        ("Tenants", TriggerData::Http(req)) => {
            Ok(http_answer(inv, tenants::handle(state, &req).await))
        }
        ("Callers", TriggerData::Http(req)) => {
            Ok(http_answer(inv, callers::handle(state, &req).await))
        }
        ("Devices", TriggerData::Http(req)) => {
            Ok(http_answer(inv, devices::handle(state, &req).await))
        }
        ("OffboardWebhook", TriggerData::Http(req)) => Ok(http_answer(
            inv,
            offboard_webhook::handle(state, &req).await,
        )),
        ("OffboardStatus", TriggerData::Http(req)) => {
            Ok(http_answer(inv, offboard_status::handle(state, &req).await))
        }
        ("OffboardWorker", TriggerData::Queue(msg)) => offboard_worker::handle(state, &msg).await,
        ("OffboardFlagged", TriggerData::Timer(_)) => offboard_flagged::handle(state).await,
        ("ActionTracker", TriggerData::Timer(_)) => action_tracker::handle(state).await,
        ("SyncScheduler", TriggerData::Timer(_)) => sync_scheduler::handle(state).await,
        ("SyncTenant", TriggerData::Queue(msg)) => sync_tenant::handle(state, &msg).await,
        ("Notify", TriggerData::Queue(msg)) => notify::handle(state, &msg).await,
        ("IncidentWatch", TriggerData::Timer(_)) => incident_watch::handle(state).await,
        _ => not_implemented(spec, inv),
    }
}

/// A function whose feature is not built yet: HTTP callers get a 501 JSON error; timer and
/// queue invocations fail, so nothing pretends to have worked.
fn not_implemented(
    spec: &'static FunctionSpec,
    inv: &Invocation,
) -> Result<InvocationResponse, InvocationFailure> {
    match spec.trigger {
        Trigger::Http { .. } => Ok(InvocationResponse::http(
            &ApiError::NotImplemented(spec.name).into_response(inv.invocation_id()),
        )),
        Trigger::Timer { .. } | Trigger::Queue { .. } => Err(InvocationFailure::msg(format!(
            "function {} is not implemented yet",
            spec.name
        ))),
    }
}

/// The `{tenantId}` route parameter, validated and recorded on the invocation's span.
///
/// # Errors
/// 400 `InvalidTenantId`.
pub(crate) fn route_tenant(req: &HttpRequestData) -> Result<crate::domain::TenantId, ApiError> {
    let tenant = crate::domain::TenantId::parse(req.param("tenantId").unwrap_or_default())
        .map_err(|e| ApiError::bad_request("InvalidTenantId", e.to_string()))?;
    tracing::Span::current().record("tenant.id", tenant.as_str());
    Ok(tenant)
}

/// Who the host let in: the admin (master) key or a function key (design §9.2).
/// Recorded on the invocation's span.
pub(crate) fn key_actor(req: &HttpRequestData) -> crate::domain::Actor {
    let actor = crate::domain::Actor::from_key_level(req.auth_level.as_deref());
    tracing::Span::current().record("actor", actor.label());
    actor
}

/// Turns an HTTP use case's result into the invocation answer, errors included.
pub(crate) fn http_answer(
    inv: &Invocation,
    result: Result<InvocationResponse, ApiError>,
) -> InvocationResponse {
    match result {
        Ok(answer) => answer,
        Err(e) => {
            if e.status() < 500 {
                tracing::info!(status = e.status(), error = %e, "request refused");
            }
            InvocationResponse::http(&e.into_response(inv.invocation_id()))
        }
    }
}
