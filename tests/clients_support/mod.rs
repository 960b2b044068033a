//! Shared setup of the `clients_*` tests: a simulator seeded with one customer tenant (an app
//! with a Key Vault secret), a home-tenant app standing in for the app's identity (the
//! managed-identity path itself is covered by `clients_identity.rs`), and the clients built
//! exactly as production builds them, with the simulator's base URL.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::Secret;
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use defender_ops::clients::credentials::{
    AuthMode, CredentialProvider, CredentialSettings, TenantAuth,
};
use defender_ops::clients::defender::{DefenderClient, DefenderSettings};
use defender_ops::clients::graph::{GraphClient, GraphSettings};
use defender_ops::clients::http::{HttpSettings, RetryPolicy, build_client, sdk_client_options};
use defender_ops::clients::identity::AppIdentity;
use defender_ops::clients::keyvault::{KeyVault, KeyVaultSettings};
use defender_ops::config::SecretName;
use defender_ops::domain::TenantId;
use dev_sim::{AppRegistration, Sim, SimConfig};

pub const TENANT: &str = "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f405162";
pub const CLIENT_ID: &str = "3c1d5e7f-9a0b-4c2d-8e4f-6a8b0c2d4e6f";
pub const SECRET: &str = "Zq8~tenant-secret-value-NEVER-in-errors";
pub const SECRET_NAME: &str = "tenant-contoso-client-secret";
pub const HOME_CLIENT_ID: &str = "7e9f1a3b-5c7d-4e9f-8a1b-3c5d7e9f1a3b";
pub const HOME_SECRET: &str = "home-app-secret-value";
pub const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

pub struct World {
    pub sim: Sim,
    pub http: reqwest::Client,
    pub vault: Arc<KeyVault>,
    pub identity: AppIdentity,
    pub credentials: Arc<CredentialProvider>,
}

pub fn tenant_id() -> TenantId {
    TenantId::parse(TENANT).expect("tenant id")
}

pub fn tenant_auth() -> TenantAuth {
    TenantAuth::new(
        tenant_id(),
        CLIENT_ID,
        AuthMode::Secret,
        Some(SecretName::parse(SECRET_NAME).expect("secret name")),
    )
    .expect("tenant auth")
}

/// Quick retries so fault tests stay fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(300),
        max_retry_after: Duration::from_secs(10),
    }
}

pub async fn world() -> World {
    world_with(SimConfig::default(), HttpSettings::default()).await
}

pub async fn world_with(config: SimConfig, http_settings: HttpSettings) -> World {
    let sim = Sim::start(config).await.expect("simulator starts");
    let home = sim.home_tenant().to_owned();
    sim.add_app(AppRegistration::with_secret(TENANT, CLIENT_ID, SECRET));
    sim.add_app(AppRegistration::with_secret(
        &home,
        HOME_CLIENT_ID,
        HOME_SECRET,
    ));
    sim.set_secret(SECRET_NAME, SECRET);

    let http = build_client(&http_settings).expect("http client");
    let authority = sim.base_url();
    let credential_settings = CredentialSettings {
        authority_host: authority.clone(),
    };
    // The home app stands in for the managed identity (process env can't be set here).
    let mut home_options = sdk_client_options(&http);
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = authority.as_str().trim_end_matches('/').to_owned();
    home_options.cloud = Some(Arc::new(azure_core::cloud::CloudConfiguration::Custom(
        cloud,
    )));
    let home_credential = ClientSecretCredential::new(
        &home,
        HOME_CLIENT_ID.to_owned(),
        Secret::new(HOME_SECRET),
        Some(ClientSecretCredentialOptions {
            client_options: home_options,
        }),
    )
    .expect("home credential");
    let identity = AppIdentity::from_credential(home_credential);
    let vault = Arc::new(
        KeyVault::new(
            &KeyVaultSettings::new(sim.base_url(), false),
            identity.credential(),
            sdk_client_options(&http),
        )
        .expect("vault client"),
    );
    let credentials = Arc::new(CredentialProvider::new(
        &credential_settings,
        sdk_client_options(&http),
        Some(Arc::clone(&vault)),
        Some(identity.clone()),
    ));
    World {
        sim,
        http,
        vault,
        identity,
        credentials,
    }
}

impl World {
    pub fn defender(&self) -> DefenderClient {
        self.defender_with(|_| {})
    }

    pub fn defender_with(&self, tweak: impl FnOnce(&mut DefenderSettings)) -> DefenderClient {
        let mut settings = DefenderSettings::new(self.sim.base_url());
        settings.retry = fast_retry();
        tweak(&mut settings);
        DefenderClient::new(
            self.http.clone(),
            settings,
            Arc::clone(&self.credentials),
            tenant_auth(),
            None,
        )
    }

    pub fn graph(&self, tenant: TenantAuth) -> GraphClient {
        let mut settings = GraphSettings::new(self.sim.base_url());
        settings.retry = fast_retry();
        GraphClient::new(
            self.http.clone(),
            settings,
            Arc::clone(&self.credentials),
            tenant,
        )
    }
}

/// A 40-hex machine id derived from `n`.
pub fn machine_id(n: u64) -> String {
    format!("{n:040x}")
}
