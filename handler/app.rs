//! Application state, the router the host talks to, and the server loop.
//!
//! Routes: `GET /` (the host's readiness ping: answer fast, anything goes) and
//! `POST /{FunctionName}` (one invocation in payload mode).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::Instrument;

use anyhow::Context;

use time::OffsetDateTime;

use crate::clients::budget::{Budget, BudgetLimits};
use crate::clients::credentials::{CredentialProvider, CredentialSettings};
use crate::clients::defender::{DefenderClient, DefenderSettings};
use crate::clients::http::{HttpSettings, build_client, sdk_client_options};
use crate::clients::identity::AppIdentity;
use crate::clients::keyvault::{KeyVault, KeyVaultSettings};
use crate::clients::tables::{TableOptions, TableService};
use crate::config::Config;
use crate::functions;
use crate::host::Invocation;
use crate::store::tenants::Tenant;

/// Everything a function needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Services>,
}

/// The long-lived clients, built once at start-up.
pub struct Services {
    pub config: Config,
    /// One connection pool for every outside call.
    pub http: reqwest::Client,
    pub identity: AppIdentity,
    pub tables: TableService,
    /// `None` when `KEY_VAULT_URI` is not set.
    pub vault: Option<Arc<KeyVault>>,
    /// Per-tenant tokens for Defender and Graph.
    pub credentials: Arc<CredentialProvider>,
    /// The shared Defender rate budget, created on first use (it needs its table).
    budget: tokio::sync::OnceCell<Arc<Budget>>,
    /// This instance's name in the budget's lease (`WEBSITE_INSTANCE_ID` in Azure).
    instance: String,
    pub clock: Arc<dyn Clock>,
    /// Tenants recently read as enabled (the webhook's hot path).
    pub recent_tenants: crate::store::tenants::RecentlyEnabled,
    /// The console's caches (the identity provider's signing keys).
    pub console: crate::console::ConsoleCache,
}

/// The time source; tests of time-dependent rules use a fixed one.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl AppState {
    /// Builds the clients from the configuration. Nothing is called over the network here:
    /// start-up must answer the host's `GET /` within seconds, even with storage down.
    ///
    /// # Errors
    /// When a client can't be constructed from the settings.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let http = build_client(&HttpSettings::default()).context("building the HTTP client")?;
        let identity =
            AppIdentity::managed(config.azure_client_id.as_deref(), sdk_client_options(&http))
                .context("setting up the app's managed identity")?;
        let tables = TableService::from_settings(
            &config.storage,
            TableOptions {
                http_client: Some(http.clone()),
                ..TableOptions::with_prefix(config.table_prefix.clone())
            },
        )
        .context("setting up Table Storage (AzureWebJobsStorage)")?;
        let vault = match &config.key_vault_uri {
            Some(uri) => Some(Arc::new(
                KeyVault::new(
                    &KeyVaultSettings::new(uri.clone(), config.key_vault_verify_challenge_resource),
                    identity.credential(),
                    sdk_client_options(&http),
                )
                .context("setting up the Key Vault client (KEY_VAULT_URI)")?,
            )),
            None => None,
        };
        let credentials = Arc::new(CredentialProvider::new(
            &CredentialSettings {
                authority_host: config.authority_host.clone(),
            },
            sdk_client_options(&http),
            vault.clone(),
            Some(identity.clone()),
        ));
        let instance = std::env::var("WEBSITE_INSTANCE_ID")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("local-{}", uuid::Uuid::new_v4().simple()));
        Ok(Self {
            inner: Arc::new(Services {
                config,
                http,
                identity,
                tables,
                vault,
                credentials,
                budget: tokio::sync::OnceCell::new(),
                instance,
                clock: Arc::new(SystemClock),
                recent_tenants: crate::store::tenants::RecentlyEnabled::new(
                    std::time::Duration::from_secs(30),
                ),
                console: crate::console::ConsoleCache::default(),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn tables(&self) -> &TableService {
        &self.inner.tables
    }

    pub fn vault(&self) -> Option<&KeyVault> {
        self.inner.vault.as_deref()
    }

    pub fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// The shared Defender rate budget (100/min, 1,500/h per tenant app).
    ///
    /// # Errors
    /// When its table can't be created.
    pub async fn budget(&self) -> anyhow::Result<Arc<Budget>> {
        let budget = self
            .inner
            .budget
            .get_or_try_init(|| async {
                Budget::new(
                    &self.inner.tables,
                    BudgetLimits::default(),
                    self.inner.instance.clone(),
                    Arc::new(crate::clients::budget::SystemClock),
                )
                .await
                .map(Arc::new)
            })
            .await
            .context("opening the Defender rate budget")?;
        Ok(budget.clone())
    }

    /// A Defender client for one tenant, within the shared budget.
    ///
    /// # Errors
    /// When the budget can't be opened.
    pub async fn defender(&self, tenant: &Tenant) -> anyhow::Result<DefenderClient> {
        let base = tenant
            .defender_api_base
            .clone()
            .unwrap_or_else(|| self.inner.config.defender_api_base.clone());
        Ok(DefenderClient::new(
            self.inner.http.clone(),
            DefenderSettings::new(base),
            self.inner.credentials.clone(),
            tenant.auth.clone(),
            Some(self.budget().await?),
        ))
    }

    pub fn services(&self) -> &Services {
        &self.inner
    }
}

/// The server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

/// The invocation envelope can be large (the host base64-encodes binary bodies); the
/// webhook's own 64 KiB limit is checked on the decoded body.
const ENVELOPE_LIMIT_BYTES: usize = 8 * 1024 * 1024;

impl Application {
    /// Binds `127.0.0.1:{port}` (the host always connects to 127.0.0.1).
    ///
    /// # Errors
    /// When the port can't be bound.
    pub async fn build(state: AppState) -> anyhow::Result<Self> {
        let port = state.config().port;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        Ok(Self {
            listener,
            router: router(state),
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serves until `shutdown` resolves.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

/// The router: `GET /` and `POST /{function}`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(ready))
        .route("/{function}", post(invoke))
        .layer(DefaultBodyLimit::max(ENVELOPE_LIMIT_BYTES))
        .with_state(state)
}

async fn ready() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ready" }))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn invoke(
    State(state): State<AppState>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invocation_id = headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let span = tracing::info_span!(
        "invocation",
        function.name = %function,
        invocation.id = invocation_id.as_deref().unwrap_or("-"),
        tenant.id = tracing::field::Empty,
        request.id = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let Some(spec) = functions::spec(&function) else {
            tracing::warn!("invocation of an unknown function");
            return failure(StatusCode::NOT_FOUND, &format!("unknown function '{function}'"));
        };
        let inv = match Invocation::parse(spec.name, invocation_id.as_deref(), &body) {
            Ok(inv) => inv,
            Err(e) => {
                tracing::warn!(error = %e, "malformed invocation envelope");
                return failure(StatusCode::BAD_REQUEST, &e.to_string());
            }
        };
        let data = match functions::trigger_data(spec, &inv) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "malformed trigger data");
                return failure(StatusCode::BAD_REQUEST, &e.to_string());
            }
        };
        match functions::invoke(&state, spec, &inv, data).await {
            Ok(answer) => {
                // Debug only: the host logs every execution with its duration already, and a
                // line per invocation is a write to the host's pipe on the hot path.
                tracing::debug!(duration_ms = started.elapsed().as_millis() as u64, "invocation succeeded");
                json_response(StatusCode::OK, &answer.to_json())
            }
            Err(e) => {
                tracing::warn!(duration_ms = started.elapsed().as_millis() as u64, error = %e, "invocation failed");
                failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
            }
        }
    }
    .instrument(span)
    .await
}

/// A failed invocation: a non-2xx makes the host record a failure (and retry queue
/// messages). The host discards this body; it is for people reading traffic locally.
fn failure(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}
