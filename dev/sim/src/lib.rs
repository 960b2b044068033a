//! Simulators of Entra ID, Defender for Endpoint, Microsoft Graph, Key Vault, the App Service
//! managed-identity endpoint, Teams Workflows and a webhook sink, on one HTTPS listener on
//! 127.0.0.1, following `contracts/defender-api/CONTRACT.md` §6.
//!
//! Layout:
//! - [`tls`]: the test CA shared through `SSL_CERT_FILE` and the loopback leaf certificate.
//! - [`model`]: wire shapes (machine, machine action, incident, alert) as in the fixtures.
//! - `state`: the seeded and recorded state behind one mutex, the clock, faults, rate limits.
//! - `server`: the router, the front middleware (faults, rate limits, request log) and the
//!   TLS accept loop.
//! - [`signin`]: Entra's sign-in for people: authorize page (test users), code grant, JWKS.
//! - `token`: the Entra token endpoint, the managed-identity endpoint and the fake JWTs.
//! - `mde`, `graph`, `keyvault`, `notify`: the service routes.
//! - `admin`: the `/_sim/...` HTTP API over the same operations, for out-of-process users.
//! - [`generate`]: realistic device fleets.
//! - [`odata`]: the `$filter` subset.
//!
//! Start one with [`Sim::start`]; every seeding and inspection method is synchronous.

#![expect(
    clippy::result_large_err,
    reason = "handlers return ready HTTP answers as their error values"
)]

mod admin;
pub mod generate;
mod graph;
mod keyvault;
mod mde;
pub mod model;
mod notify;
pub mod odata;
mod server;
pub mod signin;
mod state;
pub mod tls;
mod token;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

pub use generate::{Fleet, FleetSummary};
pub use model::{ActionStatus, Alert, Incident, IpAddress, Machine, MachineAction, VmMetadata};
pub use signin::{TEST_USERS, TestUser, test_user};
pub use state::{
    MailFormat, OffboardPost, RecordedRequest, SentMail, SinkEvent, TeamsPost, TokenRequestKey,
};

/// Roles the MDE resource (WindowsDefenderATP) grants.
pub mod roles {
    /// List and read machines and machine actions.
    pub const MACHINE_READ_ALL: &str = "Machine.Read.All";
    /// Read and write machines.
    pub const MACHINE_READ_WRITE_ALL: &str = "Machine.ReadWrite.All";
    /// Offboard machines, cancel actions.
    pub const MACHINE_OFFBOARD: &str = "Machine.Offboard";
    /// Graph incidents.
    pub const SECURITY_INCIDENT_READ_ALL: &str = "SecurityIncident.Read.All";
    /// Graph sendMail.
    pub const MAIL_SEND: &str = "Mail.Send";
}

/// Token audiences (resource ids) the simulated Entra ID knows.
pub mod audiences {
    /// Defender for Endpoint (WindowsDefenderATP).
    pub const MDE: &str = "https://api.securitycenter.microsoft.com";
    /// Defender XDR (legacy incidents); MDE refuses it with 403.
    pub const XDR: &str = "https://api.security.microsoft.com";
    /// Microsoft Graph.
    pub const GRAPH: &str = "https://graph.microsoft.com";
    /// Key Vault.
    pub const VAULT: &str = "https://vault.azure.net";
    /// Storage.
    pub const STORAGE: &str = "https://storage.azure.com";
    /// Audience of managed-identity tokens used as federated client assertions.
    pub const TOKEN_EXCHANGE: &str = "api://AzureADTokenExchange";
}

/// Route families, the unit of fault injection and of the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteFamily {
    /// `POST /{tenant}/oauth2/v2.0/token`
    Token,
    /// `GET /msi/token`
    Msi,
    /// `GET /secrets/{name}`
    KeyVault,
    /// `GET /api/machines[/{id}]`
    Machines,
    /// `POST /api/machines/{id}/offboard`
    Offboard,
    /// `GET /api/machineactions[/{id}]`, `POST /api/machineactions/{id}/cancel`
    MachineActions,
    /// `GET /v1.0/security/incidents`
    Incidents,
    /// `POST /v1.0/users/{upn}/sendMail`
    SendMail,
    /// Teams Workflows trigger URLs.
    Teams,
    /// `POST /sink/{id}`
    Sink,
}

impl RouteFamily {
    /// True for the Defender for Endpoint routes (rate-limited).
    #[must_use]
    pub fn is_mde(self) -> bool {
        matches!(self, Self::Machines | Self::Offboard | Self::MachineActions)
    }

    /// True for the Graph routes.
    #[must_use]
    pub fn is_graph(self) -> bool {
        matches!(self, Self::Incidents | Self::SendMail)
    }
}

/// An injected fault; `count` is how many requests of the family it affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fault {
    /// Answer with this status and the family's error body (500 `InternalServerError`, 503...).
    Status { status: u16, count: u32 },
    /// Answer 429 with `Retry-After: retry_after` and the family's throttling body.
    Throttle { retry_after: u64, count: u32 },
    /// Drop the connection without an answer.
    Reset { count: u32 },
    /// Wait `ms` milliseconds, then answer normally.
    Delay { ms: u64, count: u32 },
    /// Answer 429 with this exact `Retry-After` text (`1e20`, 23 digits, `-5`, a date in
    /// the year 9999...): a hostile or broken server.
    ThrottleRaw { retry_after: String, count: u32 },
    /// Answer 200 with a JSON body of `bytes` bytes (an empty OData page padded out): an
    /// answer too large to read.
    Oversize { bytes: u64, count: u32 },
}

impl Fault {
    pub(crate) fn count(&self) -> u32 {
        match self {
            Self::Status { count, .. }
            | Self::Throttle { count, .. }
            | Self::Reset { count }
            | Self::Delay { count, .. }
            | Self::ThrottleRaw { count, .. }
            | Self::Oversize { count, .. } => *count,
        }
    }

    pub(crate) fn decrement(&mut self) {
        match self {
            Self::Status { count, .. }
            | Self::Throttle { count, .. }
            | Self::Reset { count }
            | Self::Delay { count, .. }
            | Self::ThrottleRaw { count, .. }
            | Self::Oversize { count, .. } => *count = count.saturating_sub(1),
        }
    }
}

/// What `POST /offboard` does for a machine whose earlier Offboard action succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlreadyOffboarded {
    /// A new Pending action that never progresses and ends in TimeOut (the device is gone).
    #[default]
    NewActionTimesOut,
    /// 200/201 with the earlier succeeded action.
    ReturnExisting,
    /// 400 `InvalidRequest` "Machine ... is already offboarded".
    Reject,
}

/// Offboard behaviour knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OffboardConfig {
    /// Answer 201 instead of 200 on success.
    pub respond_201: bool,
    /// With an active Offboard action: answer it with success instead of 400
    /// `ActiveRequestAlreadyExists` (seen sometimes in real traffic).
    pub return_existing_active: bool,
    /// Behaviour for already-offboarded machines.
    pub already_offboarded: AlreadyOffboarded,
}

impl Default for OffboardConfig {
    fn default() -> Self {
        Self {
            respond_201: false,
            return_existing_active: false,
            already_offboarded: AlreadyOffboarded::NewActionTimesOut,
        }
    }
}

/// How machine actions move on the sim clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActionTimings {
    /// Pending → InProgress after this long (online devices).
    pub in_progress_after: Duration,
    /// → Succeeded after this long (online devices).
    pub succeeded_after: Duration,
    /// Offline devices stay Pending until this long, then TimeOut.
    pub timeout_after: Duration,
}

impl Default for ActionTimings {
    fn default() -> Self {
        Self {
            in_progress_after: Duration::from_secs(60),
            succeeded_after: Duration::from_secs(5 * 60),
            timeout_after: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// MDE rate limits per (tenant, app), counted in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimits {
    /// Calls per rolling 60 s.
    pub per_minute: u32,
    /// Calls per rolling hour.
    pub per_hour: u32,
    /// Count each MDE route family separately (the docs' reading) instead of one budget
    /// shared by all MDE routes (the default, stricter).
    pub per_family: bool,
    /// Off switch.
    pub enabled: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_minute: 100,
            per_hour: 1500,
            per_family: false,
            enabled: true,
        }
    }
}

/// Start-up configuration of a [`Sim`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where the CA certificate lives (`ca.key.pem` beside it); default env `SSL_CERT_FILE`,
    /// else a temp dir.
    pub ca_pem: Option<PathBuf>,
    /// The tenant of the Key Vault and of the managed identities (added automatically).
    pub home_tenant: String,
    /// The value `X-IDENTITY-HEADER` must carry on `/msi/token`.
    pub identity_header: String,
    /// Client id of the system-assigned managed identity.
    pub system_identity_client_id: String,
    /// `expires_in` of issued tokens, in seconds.
    pub token_lifetime_secs: u64,
    /// MDE rate limits.
    pub rate_limits: RateLimits,
    /// Machine action progress.
    pub action_timings: ActionTimings,
    /// Offboard knobs.
    pub offboard: OffboardConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            ca_pem: None,
            home_tenant: "00000000-0000-4000-8000-00000000a0e1".into(),
            identity_header: "dev-sim-identity-header".into(),
            system_identity_client_id: "00000000-0000-4000-8000-0000000051a1".into(),
            token_lifetime_secs: 3599,
            rate_limits: RateLimits::default(),
            action_timings: ActionTimings::default(),
            offboard: OffboardConfig::default(),
        }
    }
}

/// An app registration in one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppRegistration {
    /// Tenant the app (its service principal) lives in.
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// Display name, used as the `requestor` of machine actions.
    pub display_name: String,
    /// Client secret, if the app accepts secrets.
    pub secret: Option<String>,
    /// Client id of the managed identity whose token (audience
    /// `api://AzureADTokenExchange`) the app accepts as a client assertion.
    pub federated_identity: Option<String>,
    /// Roles granted on the MDE resource.
    pub mde_roles: Vec<String>,
    /// Roles granted on Microsoft Graph.
    pub graph_roles: Vec<String>,
}

impl AppRegistration {
    /// An app with a secret and every role the product needs.
    #[must_use]
    pub fn with_secret(tenant: &str, client_id: &str, secret: &str) -> Self {
        Self {
            tenant: tenant.into(),
            client_id: client_id.into(),
            display_name: format!("defender-ops ({tenant})"),
            secret: Some(secret.into()),
            federated_identity: None,
            mde_roles: vec![
                roles::MACHINE_READ_ALL.into(),
                roles::MACHINE_OFFBOARD.into(),
                // The exclusion tag (add or remove a machine tag).
                roles::MACHINE_READ_WRITE_ALL.into(),
            ],
            graph_roles: vec![
                roles::SECURITY_INCIDENT_READ_ALL.into(),
                roles::MAIL_SEND.into(),
            ],
        }
    }

    /// An app that trusts the managed identity `mi_client_id` (no secret), every role.
    #[must_use]
    pub fn federated(tenant: &str, client_id: &str, mi_client_id: &str) -> Self {
        Self {
            secret: None,
            federated_identity: Some(mi_client_id.into()),
            ..Self::with_secret(tenant, client_id, "")
        }
    }
}

/// A user-assigned managed identity of the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedIdentity {
    /// Client id.
    pub client_id: String,
    /// Object (principal) id.
    pub object_id: String,
    /// Roles on MDE, if granted.
    pub mde_roles: Vec<String>,
    /// Roles on Graph, if granted.
    pub graph_roles: Vec<String>,
}

pub(crate) struct Shared {
    pub state: Mutex<state::State>,
    /// The key signing ID tokens, generated when first needed.
    pub signing: std::sync::OnceLock<signin::SigningKey>,
    pub base: Url,
    pub home_tenant: String,
    pub identity_header: String,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The base URL without its trailing slash.
    pub(crate) fn base_str(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }
}

/// A running simulator. Dropping it stops the listener.
pub struct Sim {
    shared: Arc<Shared>,
    ca_pem: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("base_url", &self.shared.base.as_str())
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Sim {
    /// Loads or creates the CA, binds 127.0.0.1 and serves in a background task.
    ///
    /// # Errors
    /// CA files, certificate generation, or the bind.
    pub async fn start(config: SimConfig) -> anyhow::Result<Self> {
        let ca_path = tls::resolve_ca_path(config.ca_pem.clone());
        let ca =
            tokio::task::spawn_blocking(move || tls::TestCa::load_or_create(&ca_path)).await??;
        let tls_config = ca.server_config()?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let port = listener.local_addr()?.port();
        let base = Url::parse(&format!("https://127.0.0.1:{port}/"))?;
        let state = state::State::new(&config);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            signing: std::sync::OnceLock::new(),
            base,
            home_tenant: config.home_tenant.clone(),
            identity_header: config.identity_header.clone(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let router = server::router(shared.clone());
        tokio::spawn(server::serve(listener, Arc::new(tls_config), router, rx));
        tracing::info!(base_url = %shared.base, ca = %ca.cert_path().display(), "simulator listening");
        Ok(Self {
            shared,
            ca_pem: ca.cert_path().to_path_buf(),
            shutdown: Some(tx),
        })
    }

    /// `https://127.0.0.1:{port}/`: the authority host, MDE, Graph and Key Vault base at once.
    #[must_use]
    pub fn base_url(&self) -> Url {
        self.shared.base.clone()
    }

    /// The CA certificate the listener's leaf is signed by.
    #[must_use]
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    /// `IDENTITY_ENDPOINT` for the product: `{base}msi/token`.
    #[must_use]
    pub fn identity_endpoint(&self) -> Url {
        self.url("msi/token")
    }

    /// The `IDENTITY_HEADER` value the managed-identity endpoint expects.
    #[must_use]
    pub fn identity_header(&self) -> &str {
        &self.shared.identity_header
    }

    /// The tenant of the vault and the managed identities.
    #[must_use]
    pub fn home_tenant(&self) -> &str {
        &self.shared.home_tenant
    }

    /// `base` joined with a relative path.
    #[must_use]
    pub fn url(&self, path: &str) -> Url {
        self.shared
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.shared.base.clone())
    }

    fn lock(&self) -> MutexGuard<'_, state::State> {
        self.shared.lock()
    }

    // ---- seeding -------------------------------------------------------------------------

    /// Adds a tenant (idempotent).
    pub fn add_tenant(&self, tenant: &str) {
        self.lock().tenant_mut(tenant);
    }

    /// Adds or replaces an app registration (adds its tenant too).
    pub fn add_app(&self, app: AppRegistration) {
        self.lock().add_app(app);
    }

    /// Registers a redirect URI of an app (the console's `.../api/console/auth/callback`):
    /// sign-in redirects only to registered ones, as Entra does.
    pub fn add_redirect_uri(&self, tenant: &str, client_id: &str, uri: &str) {
        let mut st = self.lock();
        let uris = st
            .signin
            .redirect_uris
            .entry((tenant.to_owned(), client_id.to_ascii_lowercase()))
            .or_default();
        if !uris.iter().any(|u| u == uri) {
            uris.push(uri.to_owned());
        }
    }

    /// Adds or replaces a user-assigned managed identity.
    pub fn add_managed_identity(&self, identity: ManagedIdentity) {
        self.lock().add_managed_identity(identity);
    }

    /// Sets a Key Vault secret (new version).
    pub fn set_secret(&self, name: &str, value: &str) {
        self.lock().set_secret(name, value);
    }

    /// Removes a Key Vault secret; true if it existed.
    pub fn remove_secret(&self, name: &str) -> bool {
        self.lock().secrets.remove(name).is_some()
    }

    /// Adds machines, replacing those with the same id.
    pub fn add_machines(&self, tenant: &str, machines: impl IntoIterator<Item = Machine>) {
        self.lock().upsert_machines(tenant, machines);
    }

    /// Replaces every machine of the tenant.
    pub fn replace_machines(&self, tenant: &str, machines: Vec<Machine>) {
        let mut st = self.lock();
        let t = st.tenant_mut(tenant);
        t.machines = machines;
        t.reindex();
    }

    /// Removes a machine; true if it existed.
    pub fn remove_machine(&self, tenant: &str, id: &str) -> bool {
        self.lock().remove_machine(tenant, id)
    }

    /// Changes a machine in place; false if it doesn't exist.
    pub fn update_machine(&self, tenant: &str, id: &str, f: impl FnOnce(&mut Machine)) -> bool {
        let mut st = self.lock();
        let t = st.tenant_mut(tenant);
        match t.index.get(id).copied() {
            Some(i) => {
                f(&mut t.machines[i]);
                t.reindex();
                true
            }
            None => false,
        }
    }

    /// The tenant's machines, in listing order.
    #[must_use]
    pub fn machines(&self, tenant: &str) -> Vec<Machine> {
        self.lock()
            .tenants
            .get(tenant)
            .map(|t| t.machines.clone())
            .unwrap_or_default()
    }

    /// Flags a device offline: its actions stay Pending and end in TimeOut.
    pub fn set_machine_offline(&self, tenant: &str, id: &str, offline: bool) {
        let mut st = self.lock();
        let t = st.tenant_mut(tenant);
        if offline {
            t.offline.insert(id.to_owned());
        } else {
            t.offline.remove(id);
        }
    }

    /// Generates `n` realistic devices with `seed` and adds them (see [`generate`]).
    pub fn generate_machines(&self, tenant: &str, n: usize, seed: u64) -> FleetSummary {
        let now = self.now();
        let fleet = generate::fleet(tenant, n, seed, now);
        let summary = fleet.summary.clone();
        let mut st = self.lock();
        st.upsert_machines(tenant, fleet.machines);
        st.tenant_mut(tenant).offline.extend(fleet.offline);
        summary
    }

    /// Adds or replaces (by id) a Graph incident.
    pub fn upsert_incident(&self, tenant: &str, incident: Incident) {
        self.lock().upsert_incident(tenant, incident);
    }

    /// Changes an incident in place; false if unknown.
    pub fn update_incident(&self, tenant: &str, id: &str, f: impl FnOnce(&mut Incident)) -> bool {
        let mut st = self.lock();
        let t = st.tenant_mut(tenant);
        match t.incidents.iter_mut().find(|i| i.id == id) {
            Some(i) => {
                f(i);
                true
            }
            None => false,
        }
    }

    /// The tenant's incidents.
    #[must_use]
    pub fn incidents(&self, tenant: &str) -> Vec<Incident> {
        self.lock()
            .tenants
            .get(tenant)
            .map(|t| t.incidents.clone())
            .unwrap_or_default()
    }

    /// Makes `address` a mailbox of the tenant (a valid sendMail sender).
    pub fn add_mailbox(&self, tenant: &str, address: &str) {
        self.lock()
            .tenant_mut(tenant)
            .mailboxes
            .insert(address.to_ascii_lowercase());
    }

    /// Registers a Teams Workflows trigger and returns its full URL (with `sig`).
    pub fn add_teams_workflow(&self, id: &str, sig: &str) -> Url {
        self.lock().workflows.insert(id.to_owned(), sig.to_owned());
        notify::workflow_url(&self.shared.base, id, sig)
    }

    /// The URL of webhook sink `id` (any id is accepted).
    #[must_use]
    pub fn sink_url(&self, id: &str) -> Url {
        self.url(&format!("sink/{id}"))
    }

    // ---- behaviour -----------------------------------------------------------------------

    /// Queues a fault for a route family (faults of a family apply in order).
    pub fn inject_fault(&self, family: RouteFamily, fault: Fault) {
        self.lock().faults.push((family, fault));
    }

    /// Removes every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Sets the offboard knobs.
    pub fn set_offboard_config(&self, config: OffboardConfig) {
        self.lock().offboard = config;
    }

    /// Sets how actions progress.
    pub fn set_action_timings(&self, timings: ActionTimings) {
        self.lock().timings = timings;
    }

    /// Sets the MDE rate limits.
    pub fn set_rate_limits(&self, limits: RateLimits) {
        self.lock().rate_limits = limits;
    }

    /// Sets `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.lock().token_lifetime_secs = secs;
    }

    /// The sim clock: real time plus every [`Sim::advance`].
    #[must_use]
    pub fn now(&self) -> OffsetDateTime {
        self.lock().now()
    }

    /// Moves the sim clock forward (drives machine actions, not tokens or rate limits).
    pub fn advance(&self, by: Duration) {
        self.lock().advance(by);
    }

    /// Forces an action to Failed; false if unknown.
    pub fn fail_action(&self, action_id: &str) -> bool {
        self.lock()
            .force_action(action_id, ActionStatus::Failed, None)
    }

    /// Cancels an action as a portal user would; false if unknown.
    pub fn cancel_action(&self, action_id: &str) -> bool {
        self.lock().force_action(
            action_id,
            ActionStatus::Cancelled,
            Some((
                "secops@contoso.com".into(),
                "Cancelled in the portal".into(),
            )),
        )
    }

    /// Adds a machine action directly (e.g. an earlier scan), for the tenant.
    pub fn add_action(&self, tenant: &str, action: MachineAction) {
        self.lock().add_action(tenant, action, false);
    }

    // ---- read-back -----------------------------------------------------------------------

    /// Every request received (admin routes excluded), oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the request log and the recorded calls used by the window checks.
    pub fn clear_requests(&self) {
        let mut st = self.lock();
        st.requests.clear();
        st.mde_calls.clear();
    }

    /// Every `POST /offboard` received, whatever its answer.
    #[must_use]
    pub fn offboard_posts(&self) -> Vec<OffboardPost> {
        self.lock().offboard_posts.clone()
    }

    /// The tenant's machine actions (as of the sim clock), newest first.
    #[must_use]
    pub fn actions(&self, tenant: &str) -> Vec<MachineAction> {
        let mut st = self.lock();
        st.refresh_actions();
        st.actions_of(tenant)
    }

    /// One action (as of the sim clock).
    #[must_use]
    pub fn action(&self, action_id: &str) -> Option<MachineAction> {
        let mut st = self.lock();
        st.refresh_actions();
        st.actions
            .iter()
            .find(|a| a.action.id == action_id)
            .map(|a| a.action.clone())
    }

    /// Cards posted to Teams workflows.
    #[must_use]
    pub fn teams_posts(&self) -> Vec<TeamsPost> {
        self.lock().teams.clone()
    }

    /// Mails accepted by sendMail.
    #[must_use]
    pub fn mails(&self) -> Vec<SentMail> {
        self.lock().mails.clone()
    }

    /// Events received by the webhook sink.
    #[must_use]
    pub fn sink_events(&self) -> Vec<SinkEvent> {
        self.lock().sink.clone()
    }

    /// Token requests per (tenant, client id, scope), successful or not (requests answered
    /// by an injected fault never reach the endpoint and are not counted).
    #[must_use]
    pub fn token_request_counts(&self) -> BTreeMap<TokenRequestKey, u64> {
        self.lock().token_counts.clone()
    }

    /// Token requests for one (tenant, client id, scope).
    #[must_use]
    pub fn token_requests(&self, tenant: &str, client_id: &str, scope: &str) -> u64 {
        self.lock()
            .token_counts
            .get(&TokenRequestKey {
                tenant: tenant.into(),
                client_id: client_id.into(),
                scope: scope.into(),
            })
            .copied()
            .unwrap_or(0)
    }

    /// The most MDE requests for `tenant` (all apps, all MDE routes, throttled ones included)
    /// that arrived within any `window` of real time.
    #[must_use]
    pub fn max_calls_in_any_window(&self, tenant: &str, window: Duration) -> usize {
        self.lock().max_calls_in_any_window(tenant, None, window)
    }

    /// Same as [`Sim::max_calls_in_any_window`] for one MDE route family.
    #[must_use]
    pub fn max_calls_in_any_window_for(
        &self,
        tenant: &str,
        family: RouteFamily,
        window: Duration,
    ) -> usize {
        self.lock()
            .max_calls_in_any_window(tenant, Some(family), window)
    }
}
