//! The simulator's state behind one mutex: seeded entities, the clock, faults, rate-limit
//! windows and everything recorded for tests to read back.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{ActionStatus, Incident, Machine, MachineAction, ts};
use crate::{
    ActionTimings, AppRegistration, Fault, ManagedIdentity, OffboardConfig, RateLimits,
    RouteFamily, SimConfig,
};

/// One request as received (secrets never stored: only whether a bearer token came along).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, with `sig` values redacted.
    pub path_and_query: String,
    /// Path tenant for token requests, token `tid` otherwise.
    pub tenant: Option<String>,
    /// Client id (token `appid`, or the form's `client_id`).
    pub client_id: Option<String>,
    pub family: Option<RouteFamily>,
    /// Real time of arrival.
    #[serde(with = "ts")]
    pub at: OffsetDateTime,
    /// Sim clock at arrival.
    #[serde(with = "ts")]
    pub sim_at: OffsetDateTime,
    /// Status answered; 0 when the connection was reset.
    pub status: u16,
    pub had_bearer: bool,
    /// The injected fault that answered, if any.
    pub fault: Option<String>,
}

/// One `POST /api/machines/{id}/offboard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffboardPost {
    pub tenant: String,
    pub machine_id: String,
    pub comment: Option<String>,
    pub status: u16,
    /// The action returned, if any.
    pub action_id: Option<String>,
    #[serde(with = "ts")]
    pub sim_at: OffsetDateTime,
}

/// One post to a Teams workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamsPost {
    pub workflow_id: String,
    pub body: serde_json::Value,
    /// Why the flow would fail asynchronously (the HTTP answer is 202 anyway).
    pub flow_failure: Option<String>,
    #[serde(with = "ts")]
    pub at: OffsetDateTime,
}

/// How a sendMail request carried its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailFormat {
    /// `Content-Type: application/json`: `{"message": ..., "saveToSentItems"}`.
    Json,
    /// `Content-Type: text/plain`: a base64 RFC 5322 message.
    Mime,
}

/// One accepted sendMail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMail {
    pub tenant: String,
    /// The mailbox of the URL (`/users/{from}/sendMail`).
    pub from: String,
    pub subject: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub format: MailFormat,
    /// The plain-text body: a `text/plain` MIME part, or a JSON `Text` body.
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML body: a `text/html` MIME part, or a JSON `HTML` body.
    #[serde(default)]
    pub html: Option<String>,
    /// MIME only: the top-level `Content-Type` (`multipart/alternative`...).
    #[serde(default)]
    pub content_type: Option<String>,
    /// MIME only: the leaf parts' content types in order (`["text/plain", "text/html"]`).
    #[serde(default)]
    pub parts: Vec<String>,
    /// MIME only: the `Message-ID`, without the angle brackets.
    #[serde(default)]
    pub message_id: Option<String>,
    /// JSON: the whole request body. MIME: `{"mime": "<the decoded message>"}`.
    pub body: serde_json::Value,
    #[serde(with = "ts")]
    pub at: OffsetDateTime,
}

/// One event received by the webhook sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkEvent {
    pub sink_id: String,
    /// Headers in arrival order (lower-case names; `authorization` redacted).
    pub headers: Vec<(String, String)>,
    pub body: String,
    #[serde(with = "ts")]
    pub at: OffsetDateTime,
}

impl SinkEvent {
    /// The first header named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Key of the token request counters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestKey {
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
}

#[derive(Debug, Default)]
pub(crate) struct TenantState {
    pub machines: Vec<Machine>,
    pub index: HashMap<String, usize>,
    pub offline: HashSet<String>,
    pub incidents: Vec<Incident>,
    pub mailboxes: HashSet<String>,
}

impl TenantState {
    pub fn reindex(&mut self) {
        self.index = self
            .machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.to_ascii_lowercase(), i))
            .collect();
    }

    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.index
            .get(&id.to_ascii_lowercase())
            .map(|&i| &self.machines[i])
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ActionRecord {
    pub tenant: String,
    pub action: MachineAction,
    /// Set by hand (fail/cancel): no automatic progress.
    pub forced: bool,
    /// The device is gone (already offboarded): the action ends in TimeOut.
    pub device_gone: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct SecretEntry {
    pub value: String,
    pub version: String,
    pub created: OffsetDateTime,
}

pub(crate) struct State {
    pub clock_offset: Duration,
    pub tenants: HashMap<String, TenantState>,
    /// (tenant, client id) → app.
    pub apps: HashMap<(String, String), AppRegistration>,
    pub identities: HashMap<String, ManagedIdentity>,
    /// Lower-case client id of the system-assigned identity.
    pub system_identity: String,
    pub secrets: HashMap<String, SecretEntry>,
    pub workflows: HashMap<String, String>,
    pub faults: Vec<(RouteFamily, Fault)>,
    pub offboard: OffboardConfig,
    pub timings: ActionTimings,
    pub rate_limits: RateLimits,
    pub token_lifetime_secs: u64,
    pub actions: Vec<ActionRecord>,
    // recorded
    pub requests: Vec<RecordedRequest>,
    /// tenant → (arrival, family) of every MDE request.
    pub mde_calls: HashMap<String, Vec<(Instant, RouteFamily)>>,
    /// (tenant, app, family or none) → accepted calls within the last hour.
    pub rate: HashMap<(String, String, Option<RouteFamily>), VecDeque<Instant>>,
    pub offboard_posts: Vec<OffboardPost>,
    pub teams: Vec<TeamsPost>,
    pub mails: Vec<SentMail>,
    pub sink: Vec<SinkEvent>,
    pub token_counts: BTreeMap<TokenRequestKey, u64>,
    /// Redirect URIs and issued authorization codes (people's sign-in).
    pub signin: crate::signin::SignInState,
}

impl State {
    pub fn new(config: &SimConfig) -> Self {
        let mut st = Self {
            clock_offset: Duration::ZERO,
            tenants: HashMap::new(),
            apps: HashMap::new(),
            identities: HashMap::new(),
            system_identity: config.system_identity_client_id.to_ascii_lowercase(),
            secrets: HashMap::new(),
            workflows: HashMap::new(),
            faults: Vec::new(),
            offboard: config.offboard,
            timings: config.action_timings,
            rate_limits: config.rate_limits,
            token_lifetime_secs: config.token_lifetime_secs,
            actions: Vec::new(),
            requests: Vec::new(),
            mde_calls: HashMap::new(),
            rate: HashMap::new(),
            offboard_posts: Vec::new(),
            teams: Vec::new(),
            mails: Vec::new(),
            sink: Vec::new(),
            token_counts: BTreeMap::new(),
            signin: crate::signin::SignInState::default(),
        };
        st.tenant_mut(&config.home_tenant);
        st.add_managed_identity(ManagedIdentity {
            client_id: config.system_identity_client_id.clone(),
            object_id: uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                config.system_identity_client_id.as_bytes(),
            )
            .to_string(),
            mde_roles: Vec::new(),
            graph_roles: Vec::new(),
        });
        st
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.clock_offset
    }

    pub fn advance(&mut self, by: Duration) {
        self.clock_offset += by;
        self.refresh_actions();
    }

    pub fn tenant_mut(&mut self, tenant: &str) -> &mut TenantState {
        self.tenants.entry(tenant.to_owned()).or_default()
    }

    pub fn add_app(&mut self, app: AppRegistration) {
        self.tenant_mut(&app.tenant);
        self.apps.insert(
            (app.tenant.clone(), app.client_id.to_ascii_lowercase()),
            app,
        );
    }

    pub fn app(&self, tenant: &str, client_id: &str) -> Option<&AppRegistration> {
        self.apps
            .get(&(tenant.to_owned(), client_id.to_ascii_lowercase()))
    }

    pub fn add_managed_identity(&mut self, mut identity: ManagedIdentity) {
        if identity.object_id.is_empty() {
            identity.object_id =
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.client_id.as_bytes())
                    .to_string();
        }
        self.identities
            .insert(identity.client_id.to_ascii_lowercase(), identity);
    }

    pub fn set_secret(&mut self, name: &str, value: &str) {
        self.secrets.insert(
            name.to_owned(),
            SecretEntry {
                value: value.to_owned(),
                version: uuid::Uuid::new_v4().simple().to_string(),
                created: OffsetDateTime::now_utc(),
            },
        );
    }

    pub fn upsert_machines(&mut self, tenant: &str, machines: impl IntoIterator<Item = Machine>) {
        let t = self.tenant_mut(tenant);
        for m in machines {
            match t.index.get(&m.id.to_ascii_lowercase()).copied() {
                Some(i) => t.machines[i] = m,
                None => {
                    t.index.insert(m.id.to_ascii_lowercase(), t.machines.len());
                    t.machines.push(m);
                }
            }
        }
    }

    pub fn remove_machine(&mut self, tenant: &str, id: &str) -> bool {
        let t = self.tenant_mut(tenant);
        let before = t.machines.len();
        t.machines.retain(|m| !m.id.eq_ignore_ascii_case(id));
        t.reindex();
        t.machines.len() != before
    }

    pub fn upsert_incident(&mut self, tenant: &str, incident: Incident) {
        let t = self.tenant_mut(tenant);
        match t.incidents.iter_mut().find(|i| i.id == incident.id) {
            Some(i) => *i = incident,
            None => t.incidents.push(incident),
        }
    }

    pub fn add_action(&mut self, tenant: &str, action: MachineAction, device_gone: bool) {
        self.actions.push(ActionRecord {
            tenant: tenant.to_owned(),
            action,
            forced: false,
            device_gone,
        });
    }

    pub fn force_action(
        &mut self,
        id: &str,
        status: ActionStatus,
        cancellation: Option<(String, String)>,
    ) -> bool {
        self.refresh_actions();
        let now = self.now();
        let Some(rec) = self.actions.iter_mut().find(|a| a.action.id == id) else {
            return false;
        };
        rec.forced = true;
        rec.action.status = status;
        rec.action.last_update_date_time_utc = now;
        if let Some((who, comment)) = cancellation {
            rec.action.cancellation_requestor = Some(who);
            rec.action.cancellation_comment = Some(comment);
            rec.action.cancellation_date_time_utc = Some(now);
        }
        if status == ActionStatus::Failed {
            rec.action.error_h_result = -2_147_467_259; // E_FAIL
        }
        true
    }

    /// Moves every action to its status as of the sim clock.
    pub fn refresh_actions(&mut self) {
        let now = self.now();
        let timings = self.timings;
        for rec in &mut self.actions {
            if rec.forced || !rec.action.status.is_active() {
                continue;
            }
            let created = rec.action.creation_date_time_utc;
            let offline = rec.device_gone
                || rec.action.machine_id.as_ref().is_some_and(|id| {
                    self.tenants
                        .get(&rec.tenant)
                        .is_some_and(|t| t.offline.contains(id))
                });
            let at = |d: Duration| created + d;
            if offline {
                if now >= at(timings.timeout_after) {
                    rec.action.status = ActionStatus::TimeOut;
                    rec.action.last_update_date_time_utc = at(timings.timeout_after);
                }
            } else if now >= at(timings.succeeded_after) {
                rec.action.status = ActionStatus::Succeeded;
                rec.action.last_update_date_time_utc = at(timings.succeeded_after);
            } else if now >= at(timings.in_progress_after)
                && rec.action.status == ActionStatus::Pending
            {
                rec.action.status = ActionStatus::InProgress;
                rec.action.last_update_date_time_utc = at(timings.in_progress_after);
            }
        }
    }

    /// The tenant's actions, newest first.
    pub fn actions_of(&self, tenant: &str) -> Vec<MachineAction> {
        let mut v: Vec<MachineAction> = self
            .actions
            .iter()
            .filter(|a| a.tenant == tenant)
            .map(|a| a.action.clone())
            .collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.creation_date_time_utc));
        v
    }

    /// Takes the next fault for `family`, decrementing its count.
    pub fn take_fault(&mut self, family: RouteFamily) -> Option<Fault> {
        let idx = self
            .faults
            .iter()
            .position(|(f, fault)| *f == family && fault.count() > 0)?;
        let fault = self.faults[idx].1.clone();
        self.faults[idx].1.decrement();
        if self.faults[idx].1.count() == 0 {
            self.faults.remove(idx);
        }
        Some(fault)
    }

    /// Records an MDE call and applies the rate limits: `Err(retry_after_secs)` when over.
    pub fn rate_check(&mut self, tenant: &str, app: &str, family: RouteFamily) -> Result<(), u64> {
        let now = Instant::now();
        self.mde_calls
            .entry(tenant.to_owned())
            .or_default()
            .push((now, family));
        let limits = self.rate_limits;
        if !limits.enabled {
            return Ok(());
        }
        let key = (
            tenant.to_owned(),
            app.to_ascii_lowercase(),
            limits.per_family.then_some(family),
        );
        let log = self.rate.entry(key).or_default();
        let hour = Duration::from_secs(3600);
        let minute = Duration::from_secs(60);
        while log.front().is_some_and(|t| now.duration_since(*t) >= hour) {
            log.pop_front();
        }
        let in_minute: Vec<&Instant> = log
            .iter()
            .filter(|t| now.duration_since(**t) < minute)
            .collect();
        let wait_until = |oldest: &Instant, span: Duration| {
            let free_at = *oldest + span;
            free_at
                .saturating_duration_since(now)
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        };
        if in_minute.len() >= limits.per_minute as usize {
            let idx = in_minute.len() - limits.per_minute as usize;
            return Err(wait_until(in_minute[idx], minute));
        }
        if log.len() >= limits.per_hour as usize {
            let idx = log.len() - limits.per_hour as usize;
            return Err(wait_until(&log[idx], hour));
        }
        log.push_back(now);
        Ok(())
    }

    pub fn max_calls_in_any_window(
        &self,
        tenant: &str,
        family: Option<RouteFamily>,
        window: Duration,
    ) -> usize {
        let Some(calls) = self.mde_calls.get(tenant) else {
            return 0;
        };
        let times: Vec<Instant> = calls
            .iter()
            .filter(|(_, f)| family.is_none_or(|want| *f == want))
            .map(|(t, _)| *t)
            .collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}
