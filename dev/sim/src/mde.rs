//! Defender for Endpoint routes: machines (OData subset, paging), offboard, machine actions
//! and cancel, with the documented error bodies (`{"error":{"code","message","target"}}`).

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use crate::model::{ActionStatus, Machine, MachineAction};
use crate::odata::{self, Filterable, Val, opt_str};
use crate::server::{Auth, json_response};
use crate::state::OffboardPost;
use crate::token::Claims;
use crate::{AlreadyOffboarded, Shared, audiences, roles};

const READ_ROLES: &[&str] = &[roles::MACHINE_READ_ALL, roles::MACHINE_READ_WRITE_ALL];
const OFFBOARD_ROLES: &[&str] = &[roles::MACHINE_OFFBOARD];
/// "Add or Remove Tag for a machine" needs `Machine.ReadWrite.All` (application).
const TAG_ROLES: &[&str] = &[roles::MACHINE_READ_WRITE_ALL];
const CANCEL_ROLES: &[&str] = &[
    roles::MACHINE_OFFBOARD,
    "Machine.Isolate",
    "Machine.Scan",
    "Machine.RestrictExecution",
    "Machine.StopAndQuarantine",
    "Machine.CollectForensics",
    "Machine.LiveResponse",
];
const MAX_TOP: usize = 10_000;
const ODATA_CONTENT_TYPE: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";

/// An MDE error answer.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"error": {
            "code": code,
            "message": message,
            "target": uuid::Uuid::new_v4().to_string(),
        }}),
    )
}

fn odata_ok(status: StatusCode, body: &impl Serialize) -> Response {
    let mut resp = json_response(status, body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ODATA_CONTENT_TYPE),
    );
    h.insert("odata-version", HeaderValue::from_static("4.0"));
    resp
}

fn authorize(auth: &Auth, needed: &[&str]) -> Result<Claims, Response> {
    let Some(c) = &auth.claims else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        ));
    };
    if c.aud != audiences::MDE {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The token audience '{}' is not valid for this resource.",
                c.aud
            ),
        ));
    }
    if !c.has_any_role(needed) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The application does not have any of the required application permissions ({}) to access the resource.",
                needed.join(", ")
            ),
        ));
    }
    Ok(c.clone())
}

pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `$top`/`$skip`: `Err(Some(value))` when `$top` is above `max`, `Err(None)` when unparsable.
pub(crate) fn paging(
    q: &[(String, String)],
    max: usize,
    default: usize,
) -> Result<(usize, usize), Option<String>> {
    let top = match param(q, "$top") {
        None => default,
        Some(v) => {
            let n: usize = v.trim().parse().map_err(|_| None)?;
            if n > max {
                return Err(Some(v.trim().to_owned()));
            }
            n
        }
    };
    let skip = match param(q, "$skip") {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| None)?,
    };
    Ok((top, skip))
}

/// The next page's absolute URL: the same query with `$skip` moved on.
pub(crate) fn next_link(sh: &Shared, path: &str, q: &[(String, String)], skip: usize) -> String {
    let mut url = sh.base.join(path).unwrap_or_else(|_| sh.base.clone());
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in q.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("$skip")) {
            pairs.append_pair(k, v);
        }
        pairs.append_pair("$skip", &skip.to_string());
    }
    url.to_string()
}

#[derive(Serialize)]
struct Page<'a, T> {
    #[serde(rename = "@odata.context")]
    context: String,
    value: &'a [T],
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

#[derive(Serialize)]
struct Entity<'a, T> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(flatten)]
    inner: &'a T,
}

fn odata_error(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "ODataError", message)
}

fn top_error(value: Option<String>) -> Response {
    match value {
        Some(v) => odata_error(&format!(
            "The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{v}'."
        )),
        None => odata_error("Invalid $top or $skip value"),
    }
}

impl Filterable for Machine {
    fn field(&self, name: &str) -> Option<Val> {
        Some(match name {
            "id" => Val::Str(self.id.clone()),
            "computerDnsName" => opt_str(&self.computer_dns_name),
            "version" => opt_str(&self.version),
            "deviceValue" => opt_str(&self.device_value),
            "aadDeviceId" => opt_str(&self.aad_device_id),
            "machineTags" => Val::List(self.machine_tags.clone()),
            "lastSeen" => Val::Date(self.last_seen),
            "exposureLevel" => opt_str(&self.exposure_level),
            "onboardingStatus" => opt_str(&self.onboarding_status),
            "lastIpAddress" => opt_str(&self.last_ip_address),
            "healthStatus" => Val::Str(self.health_status.clone()),
            "osPlatform" => opt_str(&self.os_platform),
            "riskScore" => opt_str(&self.risk_score),
            "rbacGroupId" => self.rbac_group_id.map_or(Val::Null, |n| Val::Num(n as f64)),
            _ => return None,
        })
    }
}

impl Filterable for MachineAction {
    fn field(&self, name: &str) -> Option<Val> {
        Some(match name {
            "id" => Val::Str(self.id.clone()),
            "status" => Val::Str(self.status.as_str().to_owned()),
            "machineId" => opt_str(&self.machine_id),
            "type" => Val::Str(self.kind.clone()),
            "requestor" => Val::Str(self.requestor.clone()),
            "creationDateTimeUtc" => Val::Date(self.creation_date_time_utc),
            _ => return None,
        })
    }
}

fn parse_filter<T: Filterable>(
    q: &[(String, String)],
    probe: Option<&T>,
) -> Result<Option<odata::Expr>, Response> {
    let Some(f) = param(q, "$filter") else {
        return Ok(None);
    };
    let expr = odata::parse(f).map_err(|e| odata_error(&format!("Invalid filter clause: {e}")))?;
    if let Some(p) = probe {
        expr.check_fields(p)
            .map_err(|e| odata_error(&format!("Invalid filter clause: {e}")))?;
    }
    Ok(Some(expr))
}

/// `GET /api/machines`
pub(crate) async fn list_machines(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = match authorize(&auth, READ_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = query_pairs(raw.as_deref());
    let (top, skip) = match paging(&q, MAX_TOP, MAX_TOP) {
        Ok(p) => p,
        Err(v) => return top_error(v),
    };
    let st = sh.lock();
    let Some(t) = st.tenants.get(&c.tid).filter(|t| !t.machines.is_empty()) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "No machines were found",
        );
    };
    let filter = match parse_filter(&q, t.machines.first()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let matching: Vec<&Machine> = t
        .machines
        .iter()
        .filter(|m| filter.as_ref().is_none_or(|f| f.matches(*m)))
        .collect();
    let total = matching.len();
    let page: Vec<Machine> = matching.into_iter().skip(skip).take(top).cloned().collect();
    drop(st);
    page_answer(&sh, "api/machines", "Machines", &q, &page, skip, top, total)
}

fn machine_not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("Machine {id} was not found"),
    )
}

/// `GET /api/machines/{id}`
pub(crate) async fn get_machine(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    let c = match authorize(&auth, READ_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let machine = sh
        .lock()
        .tenants
        .get(&c.tid)
        .and_then(|t| t.machine(&id).cloned());
    match machine {
        Some(m) => odata_ok(
            StatusCode::OK,
            &Entity {
                context: format!("{}/api/$metadata#Machines/$entity", sh.base_str()),
                inner: &m,
            },
        ),
        None => machine_not_found(&id),
    }
}

/// `POST /api/machines/{id}/tags` `{"Value": "<tag>", "Action": "Add"|"Remove"}`: 200 with
/// the updated machine. Adding a tag it has, or removing one it lacks, changes nothing.
pub(crate) async fn tag_machine(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let c = match authorize(&auth, TAG_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let invalid = |m: &str| error(StatusCode::BAD_REQUEST, "InvalidRequestBody", m);
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return invalid("Request body is not a valid JSON object");
    };
    let value = match obj.get("Value") {
        Some(serde_json::Value::String(v)) if !v.trim().is_empty() && v.len() <= 200 => v.clone(),
        _ => return invalid("Value is required: the tag, a string of 1-200 characters"),
    };
    let add = match obj.get("Action").and_then(serde_json::Value::as_str) {
        Some("Add") => true,
        Some("Remove") => false,
        _ => return invalid("Action must be 'Add' or 'Remove'"),
    };
    let mut st = sh.lock();
    let Some(tenant) = st.tenants.get_mut(&c.tid) else {
        return machine_not_found(&id);
    };
    let Some(&i) = tenant.index.get(&id.to_ascii_lowercase()) else {
        return machine_not_found(&id);
    };
    let m = &mut tenant.machines[i];
    let has = m
        .machine_tags
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&value));
    if add && !has {
        m.machine_tags.push(value);
    } else if !add {
        m.machine_tags.retain(|t| !t.eq_ignore_ascii_case(&value));
    }
    let m = m.clone();
    drop(st);
    odata_ok(
        StatusCode::OK,
        &Entity {
            context: format!("{}/api/$metadata#Machines/$entity", sh.base_str()),
            inner: &m,
        },
    )
}

/// The `Comment` of an action request body (case-sensitive), or the documented 400.
fn comment_of(body: &[u8]) -> Result<String, Response> {
    let invalid = || {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "Request body is incorrect",
        )
    };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    let obj = v.as_object().ok_or_else(invalid)?;
    match obj.get("Comment") {
        None | Some(serde_json::Value::Null) => Err(error(
            StatusCode::BAD_REQUEST,
            "MissingRequiredParameter",
            "Parameter Comment is missing",
        )),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid()),
    }
}

fn action_entity(sh: &Shared, status: StatusCode, action: &MachineAction) -> Response {
    odata_ok(
        status,
        &Entity {
            context: format!("{}/api/$metadata#MachineActions/$entity", sh.base_str()),
            inner: action,
        },
    )
}

/// `POST /api/machines/{id}/offboard`
pub(crate) async fn offboard(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let c = match authorize(&auth, OFFBOARD_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let comment = comment_of(&body);
    let mut st = sh.lock();
    st.refresh_actions();
    let now = st.now();
    let success = if st.offboard.respond_201 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let machine = st.tenants.get(&c.tid).and_then(|t| t.machine(&id).cloned());
    let offboards: Vec<MachineAction> = st
        .actions
        .iter()
        .filter(|a| {
            a.tenant == c.tid
                && a.action.kind == "Offboard"
                && a.action
                    .machine_id
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&id))
        })
        .map(|a| a.action.clone())
        .collect();
    let (comment_text, comment_err) = match comment {
        Ok(t) => (Some(t), None),
        Err(r) => (None, Some(r)),
    };
    let (resp, action_id): (Response, Option<String>) = if let Some(r) = comment_err {
        (r, None)
    } else if let Some(m) = &machine {
        let text = comment_text.clone().unwrap_or_default();
        offboard_decision(&sh, &mut st, &c, m, &text, &offboards, success, now)
    } else {
        (machine_not_found(&id), None)
    };
    st.offboard_posts.push(OffboardPost {
        tenant: c.tid.clone(),
        machine_id: id,
        comment: comment_text,
        status: resp.status().as_u16(),
        action_id,
        sim_at: now,
    });
    resp
}

#[expect(
    clippy::too_many_arguments,
    reason = "one decision over the request's facts"
)]
fn offboard_decision(
    sh: &Shared,
    st: &mut crate::state::State,
    c: &Claims,
    m: &Machine,
    text: &str,
    offboards: &[MachineAction],
    success: StatusCode,
    now: time::OffsetDateTime,
) -> (Response, Option<String>) {
    let cfg = st.offboard;
    if m.offboard_unsupported() {
        return (
            error(
                StatusCode::BAD_REQUEST,
                "OsPlatformNotSupported",
                &format!(
                    "OS Platform {} isn't supported for this action",
                    m.os_platform.as_deref().unwrap_or("Unknown")
                ),
            ),
            None,
        );
    }
    let active = offboards.iter().find(|a| a.status.is_active());
    let done = offboards
        .iter()
        .find(|a| a.status == ActionStatus::Succeeded);
    if let Some(a) = active {
        if cfg.return_existing_active {
            return (action_entity(sh, success, a), Some(a.id.clone()));
        }
        return (
            error(
                StatusCode::BAD_REQUEST,
                "ActiveRequestAlreadyExists",
                "Action is already in progress",
            ),
            None,
        );
    }
    match (done, cfg.already_offboarded) {
        (Some(a), AlreadyOffboarded::ReturnExisting) => {
            return (action_entity(sh, success, a), Some(a.id.clone()));
        }
        (Some(_), AlreadyOffboarded::Reject) => {
            return (
                error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    &format!("Machine {} is already offboarded", m.id),
                ),
                None,
            );
        }
        _ => {}
    }
    let requestor = if c.app_displayname.is_empty() {
        c.appid.clone()
    } else {
        c.app_displayname.clone()
    };
    let action = new_action("Offboard", &requestor, text, m, now);
    let resp = action_entity(sh, success, &action);
    let id = action.id.clone();
    st.add_action(&c.tid, action, done.is_some());
    (resp, Some(id))
}

/// A new Pending machine action of `kind` on `m`.
pub(crate) fn new_action(
    kind: &str,
    requestor: &str,
    comment: &str,
    m: &Machine,
    now: time::OffsetDateTime,
) -> MachineAction {
    MachineAction {
        id: uuid::Uuid::new_v4().to_string(),
        kind: kind.to_owned(),
        title: None,
        requestor: requestor.to_owned(),
        requestor_comment: comment.to_owned(),
        status: ActionStatus::Pending,
        machine_id: Some(m.id.clone()),
        computer_dns_name: m.computer_dns_name.clone(),
        creation_date_time_utc: now,
        last_update_date_time_utc: now,
        cancellation_requestor: None,
        cancellation_comment: None,
        cancellation_date_time_utc: None,
        error_h_result: 0,
        scope: None,
        external_id: None,
        request_source: "PublicApi".into(),
        related_file_info: None,
        commands: Vec::new(),
        troubleshoot_info: None,
    }
}

/// `GET /api/machineactions`
pub(crate) async fn list_actions(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = match authorize(&auth, READ_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = query_pairs(raw.as_deref());
    let (top, skip) = match paging(&q, MAX_TOP, MAX_TOP) {
        Ok(p) => p,
        Err(v) => return top_error(v),
    };
    let mut st = sh.lock();
    st.refresh_actions();
    let probe = crate::mde::new_action(
        "Offboard",
        "",
        "",
        &Machine::new("0", "probe", st.now()),
        st.now(),
    );
    let filter = match parse_filter(&q, Some(&probe)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let matching: Vec<MachineAction> = st
        .actions_of(&c.tid)
        .into_iter()
        .filter(|a| filter.as_ref().is_none_or(|f| f.matches(a)))
        .collect();
    drop(st);
    let total = matching.len();
    let page: Vec<MachineAction> = matching.into_iter().skip(skip).take(top).collect();
    page_answer(
        &sh,
        "api/machineactions",
        "MachineActions",
        &q,
        &page,
        skip,
        top,
        total,
    )
}

/// One page of a collection, with `@odata.nextLink` while more remain.
#[expect(
    clippy::too_many_arguments,
    reason = "the paging state of one OData answer"
)]
fn page_answer<T: Serialize>(
    sh: &Shared,
    path: &str,
    entity_set: &str,
    q: &[(String, String)],
    page: &[T],
    skip: usize,
    top: usize,
    total: usize,
) -> Response {
    let next =
        (skip + page.len() < total && top > 0).then(|| next_link(sh, path, q, skip + page.len()));
    odata_ok(
        StatusCode::OK,
        &Page {
            context: format!("{}/api/$metadata#{entity_set}", sh.base_str()),
            value: page,
            next_link: next,
        },
    )
}

fn action_not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("Machine action {id} was not found"),
    )
}

/// `GET /api/machineactions/{id}`
pub(crate) async fn get_action(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    let c = match authorize(&auth, READ_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut st = sh.lock();
    st.refresh_actions();
    let found = st
        .actions
        .iter()
        .find(|a| a.tenant == c.tid && a.action.id.eq_ignore_ascii_case(&id))
        .map(|a| a.action.clone());
    drop(st);
    match found {
        Some(a) => action_entity(&sh, StatusCode::OK, &a),
        None => action_not_found(&id),
    }
}

/// `POST /api/machineactions/{id}/cancel`
pub(crate) async fn cancel_action(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let c = match authorize(&auth, CANCEL_ROLES) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let comment = match comment_of(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut st = sh.lock();
    st.refresh_actions();
    let now = st.now();
    let Some(rec) = st
        .actions
        .iter_mut()
        .find(|a| a.tenant == c.tid && a.action.id.eq_ignore_ascii_case(&id))
    else {
        return action_not_found(&id);
    };
    if !rec.action.status.is_active() {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            &format!(
                "Action {id} can't be cancelled in status {}",
                rec.action.status.as_str()
            ),
        );
    }
    rec.forced = true;
    rec.action.status = ActionStatus::Cancelled;
    rec.action.last_update_date_time_utc = now;
    rec.action.cancellation_requestor = Some(if c.app_displayname.is_empty() {
        c.appid.clone()
    } else {
        c.app_displayname.clone()
    });
    rec.action.cancellation_comment = Some(comment);
    rec.action.cancellation_date_time_utc = Some(now);
    let action = rec.action.clone();
    drop(st);
    action_entity(&sh, StatusCode::OK, &action)
}
