//! The admin HTTP API under `/_sim/...` (no auth, JSON): the seeding, fault, clock and
//! read-back operations of [`crate::Sim`] for out-of-process users (the `sim` bin, scripts).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use crate::model::{ActionStatus, Incident, Machine, MachineAction, ts};
use crate::server::json_response;
use crate::{
    AppRegistration, Fault, ManagedIdentity, OffboardConfig, RateLimits, RouteFamily, Shared,
    generate, notify,
};

type St = State<Arc<Shared>>;

fn ok(body: &impl serde::Serialize) -> Response {
    json_response(StatusCode::OK, body)
}

fn done() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_found(what: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": format!("{what} not found")}),
    )
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/health", get(health))
        .route("/tenants", post(add_tenant))
        .route("/apps", post(add_app))
        .route("/managed-identities", post(add_identity))
        .route("/secrets/{name}", put(set_secret).delete(remove_secret))
        .route(
            "/tenants/{tenant}/machines",
            get(list_machines)
                .post(upsert_machines)
                .put(replace_machines),
        )
        .route(
            "/tenants/{tenant}/machines/{id}",
            get(get_machine).patch(patch_machine).delete(remove_machine),
        )
        .route("/tenants/{tenant}/machines/{id}/offline", put(set_offline))
        .route("/tenants/{tenant}/generate", post(generate_machines))
        .route(
            "/tenants/{tenant}/incidents",
            get(list_incidents).post(upsert_incident),
        )
        .route("/tenants/{tenant}/mailboxes", post(add_mailbox))
        .route(
            "/tenants/{tenant}/actions",
            get(list_actions).post(add_action),
        )
        .route("/actions/{id}/fail", post(fail_action))
        .route("/actions/{id}/cancel", post(cancel_action))
        .route("/teams/workflows", post(add_workflow))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/config/offboard", put(set_offboard))
        .route("/config/action-timings", put(set_timings))
        .route("/config/rate-limits", put(set_rate_limits))
        .route("/config/token-lifetime", put(set_token_lifetime))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/offboards", get(offboards))
        .route("/teams", get(teams))
        .route("/mails", get(mails))
        .route("/sink", get(sink))
        .route("/token-counts", get(token_counts))
        .route("/rate/max-in-window", get(max_in_window))
        .route("/reset-recordings", delete(clear_recordings))
}

async fn health(State(sh): St) -> Response {
    ok(&serde_json::json!({
        "baseUrl": sh.base.as_str(),
        "homeTenant": sh.home_tenant,
        "identityHeader": sh.identity_header,
        "identityEndpoint": format!("{}/msi/token", sh.base_str()),
    }))
}

#[derive(Deserialize)]
struct TenantBody {
    tenant: String,
    #[serde(default)]
    mailboxes: Vec<String>,
}

async fn add_tenant(State(sh): St, Json(b): Json<TenantBody>) -> Response {
    let mut st = sh.lock();
    let t = st.tenant_mut(&b.tenant);
    t.mailboxes
        .extend(b.mailboxes.iter().map(|m| m.to_ascii_lowercase()));
    done()
}

async fn add_app(State(sh): St, Json(app): Json<AppRegistration>) -> Response {
    sh.lock().add_app(app);
    done()
}

async fn add_identity(State(sh): St, Json(mi): Json<ManagedIdentity>) -> Response {
    sh.lock().add_managed_identity(mi);
    done()
}

#[derive(Deserialize)]
struct SecretBody {
    value: String,
}

async fn set_secret(
    State(sh): St,
    Path(name): Path<String>,
    Json(b): Json<SecretBody>,
) -> Response {
    sh.lock().set_secret(&name, &b.value);
    done()
}

async fn remove_secret(State(sh): St, Path(name): Path<String>) -> Response {
    if sh.lock().secrets.remove(&name).is_some() {
        done()
    } else {
        not_found("secret")
    }
}

async fn list_machines(State(sh): St, Path(tenant): Path<String>) -> Response {
    let machines: Vec<Machine> = sh
        .lock()
        .tenants
        .get(&tenant)
        .map(|t| t.machines.clone())
        .unwrap_or_default();
    ok(&machines)
}

async fn upsert_machines(
    State(sh): St,
    Path(tenant): Path<String>,
    Json(machines): Json<Vec<Machine>>,
) -> Response {
    sh.lock().upsert_machines(&tenant, machines);
    done()
}

async fn replace_machines(
    State(sh): St,
    Path(tenant): Path<String>,
    Json(machines): Json<Vec<Machine>>,
) -> Response {
    let mut st = sh.lock();
    let t = st.tenant_mut(&tenant);
    t.machines = machines;
    t.reindex();
    done()
}

async fn get_machine(State(sh): St, Path((tenant, id)): Path<(String, String)>) -> Response {
    let m = sh
        .lock()
        .tenants
        .get(&tenant)
        .and_then(|t| t.machine(&id).cloned());
    m.map_or_else(|| not_found("machine"), |m| ok(&m))
}

/// Merges the given top-level fields into the machine.
async fn patch_machine(
    State(sh): St,
    Path((tenant, id)): Path<(String, String)>,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Response {
    let mut st = sh.lock();
    let t = st.tenant_mut(&tenant);
    let Some(i) = t.index.get(&id.to_ascii_lowercase()).copied() else {
        return not_found("machine");
    };
    let mut v = serde_json::to_value(&t.machines[i]).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.extend(patch);
    }
    match serde_json::from_value::<Machine>(v) {
        Ok(m) => {
            t.machines[i] = m;
            t.reindex();
            done()
        }
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": e.to_string()}),
        ),
    }
}

async fn remove_machine(State(sh): St, Path((tenant, id)): Path<(String, String)>) -> Response {
    if sh.lock().remove_machine(&tenant, &id) {
        done()
    } else {
        not_found("machine")
    }
}

#[derive(Deserialize)]
struct OfflineBody {
    offline: bool,
}

async fn set_offline(
    State(sh): St,
    Path((tenant, id)): Path<(String, String)>,
    Json(b): Json<OfflineBody>,
) -> Response {
    let mut st = sh.lock();
    let t = st.tenant_mut(&tenant);
    if b.offline {
        t.offline.insert(id);
    } else {
        t.offline.remove(&id);
    }
    done()
}

#[derive(Deserialize)]
struct GenerateBody {
    count: usize,
    #[serde(default)]
    seed: u64,
}

async fn generate_machines(
    State(sh): St,
    Path(tenant): Path<String>,
    Json(b): Json<GenerateBody>,
) -> Response {
    let mut st = sh.lock();
    let fleet = generate::fleet(&tenant, b.count, b.seed, st.now());
    st.upsert_machines(&tenant, fleet.machines);
    st.tenant_mut(&tenant).offline.extend(fleet.offline);
    ok(&fleet.summary)
}

async fn list_incidents(State(sh): St, Path(tenant): Path<String>) -> Response {
    let v: Vec<Incident> = sh
        .lock()
        .tenants
        .get(&tenant)
        .map(|t| t.incidents.clone())
        .unwrap_or_default();
    ok(&v)
}

async fn upsert_incident(
    State(sh): St,
    Path(tenant): Path<String>,
    Json(incident): Json<Incident>,
) -> Response {
    sh.lock().upsert_incident(&tenant, incident);
    done()
}

#[derive(Deserialize)]
struct MailboxBody {
    address: String,
}

async fn add_mailbox(
    State(sh): St,
    Path(tenant): Path<String>,
    Json(b): Json<MailboxBody>,
) -> Response {
    sh.lock()
        .tenant_mut(&tenant)
        .mailboxes
        .insert(b.address.to_ascii_lowercase());
    done()
}

async fn list_actions(State(sh): St, Path(tenant): Path<String>) -> Response {
    let mut st = sh.lock();
    st.refresh_actions();
    ok(&st.actions_of(&tenant))
}

async fn add_action(
    State(sh): St,
    Path(tenant): Path<String>,
    Json(action): Json<MachineAction>,
) -> Response {
    sh.lock().add_action(&tenant, action, false);
    done()
}

async fn fail_action(State(sh): St, Path(id): Path<String>) -> Response {
    if sh.lock().force_action(&id, ActionStatus::Failed, None) {
        done()
    } else {
        not_found("action")
    }
}

async fn cancel_action(State(sh): St, Path(id): Path<String>) -> Response {
    let by = Some((
        "secops@contoso.com".to_owned(),
        "Cancelled in the portal".to_owned(),
    ));
    if sh.lock().force_action(&id, ActionStatus::Cancelled, by) {
        done()
    } else {
        not_found("action")
    }
}

#[derive(Deserialize)]
struct WorkflowBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    sig: Option<String>,
}

async fn add_workflow(State(sh): St, Json(b): Json<WorkflowBody>) -> Response {
    let id =
        b.id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let sig = b
        .sig
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    sh.lock().workflows.insert(id.clone(), sig.clone());
    let url = notify::workflow_url(&sh.base, &id, &sig);
    ok(&serde_json::json!({"id": id, "url": url.as_str()}))
}

async fn clock(State(sh): St) -> Response {
    let st = sh.lock();
    ok(&serde_json::json!({
        "now": ts::format(st.now()),
        "offsetSeconds": st.clock_offset.as_secs_f64(),
    }))
}

#[derive(Deserialize)]
struct AdvanceBody {
    seconds: f64,
}

async fn advance(State(sh): St, Json(b): Json<AdvanceBody>) -> Response {
    if !(b.seconds.is_finite() && b.seconds >= 0.0) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "seconds must be a non-negative number"}),
        );
    }
    let mut st = sh.lock();
    st.advance(Duration::from_secs_f64(b.seconds));
    ok(&serde_json::json!({"now": ts::format(st.now())}))
}

#[derive(Deserialize)]
struct FaultBody {
    family: RouteFamily,
    fault: Fault,
}

async fn add_fault(State(sh): St, Json(b): Json<FaultBody>) -> Response {
    sh.lock().faults.push((b.family, b.fault));
    done()
}

async fn clear_faults(State(sh): St) -> Response {
    sh.lock().faults.clear();
    done()
}

async fn set_offboard(State(sh): St, Json(c): Json<OffboardConfig>) -> Response {
    sh.lock().offboard = c;
    done()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimingsBody {
    in_progress_after_secs: u64,
    succeeded_after_secs: u64,
    timeout_after_secs: u64,
}

async fn set_timings(State(sh): St, Json(b): Json<TimingsBody>) -> Response {
    sh.lock().timings = crate::ActionTimings {
        in_progress_after: Duration::from_secs(b.in_progress_after_secs),
        succeeded_after: Duration::from_secs(b.succeeded_after_secs),
        timeout_after: Duration::from_secs(b.timeout_after_secs),
    };
    done()
}

async fn set_rate_limits(State(sh): St, Json(r): Json<RateLimits>) -> Response {
    sh.lock().rate_limits = r;
    done()
}

#[derive(Deserialize)]
struct LifetimeBody {
    secs: u64,
}

async fn set_token_lifetime(State(sh): St, Json(b): Json<LifetimeBody>) -> Response {
    sh.lock().token_lifetime_secs = b.secs;
    done()
}

async fn requests(State(sh): St) -> Response {
    ok(&sh.lock().requests)
}

async fn clear_requests(State(sh): St) -> Response {
    let mut st = sh.lock();
    st.requests.clear();
    st.mde_calls.clear();
    done()
}

async fn clear_recordings(State(sh): St) -> Response {
    let mut st = sh.lock();
    st.requests.clear();
    st.mde_calls.clear();
    st.offboard_posts.clear();
    st.teams.clear();
    st.mails.clear();
    st.sink.clear();
    st.token_counts.clear();
    done()
}

async fn offboards(State(sh): St) -> Response {
    ok(&sh.lock().offboard_posts)
}

async fn teams(State(sh): St) -> Response {
    ok(&sh.lock().teams)
}

async fn mails(State(sh): St) -> Response {
    ok(&sh.lock().mails)
}

async fn sink(State(sh): St) -> Response {
    ok(&sh.lock().sink)
}

async fn token_counts(State(sh): St) -> Response {
    let v: Vec<serde_json::Value> = sh
        .lock()
        .token_counts
        .iter()
        .map(|(k, n)| {
            serde_json::json!({"tenant": k.tenant, "clientId": k.client_id, "scope": k.scope, "count": n})
        })
        .collect();
    ok(&v)
}

#[derive(Deserialize)]
struct WindowQuery {
    tenant: String,
    seconds: u64,
    #[serde(default)]
    family: Option<RouteFamily>,
}

async fn max_in_window(State(sh): St, Query(q): Query<WindowQuery>) -> Response {
    let n = sh
        .lock()
        .max_calls_in_any_window(&q.tenant, q.family, Duration::from_secs(q.seconds));
    ok(&serde_json::json!({"max": n}))
}
