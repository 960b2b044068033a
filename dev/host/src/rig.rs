//! The rig `run-local` and the bench programs share: where things are (workspace, target
//! dir, the handler binary, the simulator's CA), the simulator itself, the handler's settings
//! for it, `dev/host` started on them, and a tenant registered the way an operator does it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dev_sim::{AppRegistration, Sim, SimConfig};

use crate::{Host, HostConfig, RunningHost};

/// The product's own default log filter (handler/telemetry.rs), as in Azure.
pub const PRODUCT_LOG_FILTER: &str =
    "info,hyper=warn,reqwest=warn,azure_core=warn,azure_identity=warn";

/// The workspace root (holds host.json and functions/).
#[must_use]
pub fn workspace() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// `CARGO_TARGET_DIR` (relative to the current directory) or `<workspace>/target`.
#[must_use]
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir().unwrap_or_default().join(dir)
            }
        }
        None => workspace().join("target"),
    }
}

/// The handler binary: `explicit` when given, else `<target dir>/<profile>/handler`.
///
/// # Errors
/// No file there; the message says how to build it.
pub fn handler_binary(explicit: Option<PathBuf>, profile: &str) -> anyhow::Result<PathBuf> {
    let path = explicit.unwrap_or_else(|| target_dir().join(profile).join("handler"));
    if !path.is_file() {
        let release = if profile == "release" {
            " --release"
        } else {
            ""
        };
        bail!(
            "no handler binary at {}: run `cargo build{release} --bin handler`",
            path.display()
        );
    }
    Ok(path)
}

/// The value after `--handler` on the command line, if any.
#[must_use]
pub fn handler_arg() -> Option<PathBuf> {
    std::env::args()
        .skip_while(|a| a != "--handler")
        .nth(1)
        .map(PathBuf::from)
}

/// The simulators' test CA (`sim ca --dir <target>/dev-sim-ca`, as scripts/test makes it).
#[must_use]
pub fn sim_ca_pem() -> PathBuf {
    target_dir().join("dev-sim-ca").join("ca.pem")
}

/// The simulators with the workspace's test CA.
///
/// # Errors
/// The simulator does not start (no CA, no port).
pub async fn start_sim() -> anyhow::Result<Sim> {
    Sim::start(SimConfig {
        ca_pem: Some(sim_ca_pem()),
        ..SimConfig::default()
    })
    .await
    .context("starting the simulator")
}

/// The handler's settings for `sim`, tables prefixed `table_prefix`, logging at `log_filter`.
#[must_use]
pub fn handler_env(sim: &Sim, table_prefix: &str, log_filter: &str) -> Vec<(String, String)> {
    let mut env = crate::sim_settings::handler_settings(sim, table_prefix);
    crate::sim_settings::set(&mut env, "RUST_LOG", log_filter);
    env
}

/// `dev/host` on the workspace's host.json and functions/, running `handler` with `env`
/// against `storage`; `edit` sets the rest (queue prefix, host.json patch, echo).
///
/// # Errors
/// The host or the handler does not start.
pub async fn start_host(
    handler: &Path,
    storage: &str,
    env: Vec<(String, String)>,
    edit: impl FnOnce(&mut HostConfig),
) -> anyhow::Result<RunningHost> {
    let mut cfg = HostConfig::new(workspace(), handler, storage);
    cfg.env = env;
    edit(&mut cfg);
    Host::start(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("dev-host: {e:#}"))
}

/// A customer tenant's app as registered in the simulator and through the API.
pub struct TenantApp<'a> {
    pub tenant: &'a str,
    pub client_id: &'a str,
    pub display_name: &'a str,
    /// The Key Vault secret's name, and its value (the app's client secret).
    pub secret_name: &'a str,
    pub secret: &'a str,
}

/// Adds the tenant, its app and its secret to the simulator, then `PUT /api/tenants/{id}`
/// with the admin key (which queues the first sync); returns the API's status.
///
/// # Errors
/// The call fails or answers other than 200/201.
pub async fn register_tenant(
    http: &reqwest::Client,
    host: &RunningHost,
    sim: &Sim,
    app: &TenantApp<'_>,
) -> anyhow::Result<u16> {
    sim.add_tenant(app.tenant);
    sim.add_app(AppRegistration::with_secret(
        app.tenant,
        app.client_id,
        app.secret,
    ));
    sim.set_secret(app.secret_name, app.secret);
    let url = format!(
        "{}/api/tenants/{}",
        host.base_url().trim_end_matches('/'),
        app.tenant
    );
    let res = http
        .put(url)
        .header("x-functions-key", host.admin_key())
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "displayName": app.display_name,
                "clientId": app.client_id,
                "authMode": "secret",
                "secretName": app.secret_name,
            })
            .to_string(),
        )
        .send()
        .await
        .with_context(|| format!("registering tenant {}", app.tenant))?;
    let status = res.status();
    if !status.is_success() {
        bail!(
            "registering tenant {}: {status} {}",
            app.tenant,
            res.text().await.unwrap_or_default()
        );
    }
    Ok(status.as_u16())
}
