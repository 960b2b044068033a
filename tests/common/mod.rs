//! The end-to-end harness: Azurite (real storage), `dev/sim` (Microsoft's services over
//! HTTPS), `dev/host` (the Functions host) and the real `handler` binary.
#![allow(dead_code, clippy::unwrap_used)]

pub mod outage;

use std::path::PathBuf;
use std::time::Duration;

use defender_ops::clients::tables::{Entity, TableOptions, TableService};
use defender_ops::config::StorageSettings;
use dev_host::{Azurite, Host, HostConfig, RunningHost};
use dev_sim::{AppRegistration, RouteFamily, Sim, SimConfig};
use serde_json::Value;

/// Customer tenants and their apps, the same in every suite.
pub const T1: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
pub const T2: &str = "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8";
pub const APP1: &str = "11111111-1111-4111-8111-111111111111";
pub const APP2: &str = "22222222-2222-4222-8222-222222222222";

/// The machine id (40 hex characters) of test device `n`.
pub fn mid(n: u32) -> String {
    format!("{n:040x}")
}

/// How many requests of one route family the simulator has served.
pub fn requests_of(sim: &Sim, family: RouteFamily) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.family == Some(family))
        .count()
}

/// The path and query of every request of one route family, in order.
pub fn request_paths(sim: &Sim, family: RouteFamily) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.family == Some(family))
        .map(|r| r.path_and_query)
        .collect()
}

/// How many offboard POSTs Defender received for one machine.
pub fn posts_for(sim: &Sim, machine: &str) -> usize {
    sim.offboard_posts()
        .iter()
        .filter(|p| p.machine_id == machine)
        .count()
}

pub struct Env {
    /// Relays in front of Azurite's table and queue ports when `Options::outages` is set:
    /// cutting them is a storage outage as the handler and the host see it.
    pub storage_relays: Option<(outage::Relay, outage::Relay)>,
    pub sim: Sim,
    pub host: RunningHost,
    pub tables: TableService,
    pub storage: String,
    pub prefix: String,
    pub http: reqwest::Client,
}

/// Extra settings for the handler in one test.
#[derive(Default)]
pub struct Options {
    pub settings: Vec<(String, String)>,
    pub sim: Option<SimConfig>,
    /// Route the handler's and the host's storage traffic through cuttable relays.
    pub outages: bool,
}

fn endpoint_port(conn: &str, key: &str) -> u16 {
    conn.split(';')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|url| url::Url::parse(url).ok())
        .and_then(|u| u.port())
        .unwrap_or_else(|| panic!("{key} with a port in the test storage connection string"))
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let storage = Azurite::shared().await.expect("Azurite");
        let sim = Sim::start(options.sim.unwrap_or_default())
            .await
            .expect("simulator");
        check_ca_trust(&sim).await;
        let prefix = unique("t");
        let mut env = dev_host::sim_settings::handler_settings(&sim, &prefix);
        env.push(("RUST_LOG".into(), "info".into()));
        for (k, v) in options.settings {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
        let (app_storage, storage_relays) = if options.outages {
            let table = outage::Relay::start(endpoint_port(&storage, "TableEndpoint")).await;
            let queue = outage::Relay::start(endpoint_port(&storage, "QueueEndpoint")).await;
            let conn = dev_host::storage::azurite_connection_string(table.port(), queue.port());
            (conn, Some((table, queue)))
        } else {
            (storage.clone(), None)
        };
        let mut cfg = HostConfig::new(workspace(), env!("CARGO_BIN_EXE_handler"), &app_storage);
        cfg.env = env;
        cfg.queue_prefix = unique("q");
        if options.outages {
            cfg.listener_visibility = Duration::from_secs(5);
        }
        cfg.echo_handler_output = std::env::var("ECHO_HANDLER").is_ok();
        cfg.host_json_patch =
            Some(serde_json::json!({"extensions": {"queues": {"visibilityTimeout": "00:00:01"}}}));
        let host = Host::start(cfg).await.expect("dev-host starts the handler");
        let tables = TableService::from_settings(
            &StorageSettings::ConnectionString(storage.clone().into()),
            TableOptions::with_prefix(prefix.clone()),
        )
        .expect("tables");
        Self {
            storage_relays,
            sim,
            host,
            tables,
            storage,
            prefix,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/api/{}",
            self.host.base_url().trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// Calls the API with the function key; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.call_with_key(method, path, body, self.host.function_key())
            .await
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.call_with_key(method, path, body, self.host.admin_key())
            .await
    }

    pub async fn call_with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        key: &str,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("x-functions-key", key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers a customer tenant in the simulator (app + secret in Key Vault) and through
    /// the `Tenants` API; returns the API's status.
    pub async fn register_tenant(&self, tenant: &str, client_id: &str) -> u16 {
        self.register_tenant_with(tenant, client_id, |_| {}).await
    }

    /// [`Env::register_tenant`] with the app registration changed first (roles taken away...).
    pub async fn register_tenant_with(
        &self,
        tenant: &str,
        client_id: &str,
        edit: impl FnOnce(&mut AppRegistration),
    ) -> u16 {
        let secret_name = format!("tenant-{}", &tenant[..8]);
        let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
        self.sim.add_tenant(tenant);
        let mut app = AppRegistration::with_secret(tenant, client_id, &secret);
        edit(&mut app);
        self.sim.add_app(app);
        self.sim.set_secret(&secret_name, &secret);
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("tenants/{tenant}"),
                Some(&serde_json::json!({
                    "displayName": format!("Customer {}", &tenant[..8]),
                    "clientId": client_id,
                    "authMode": "secret",
                    "secretName": secret_name,
                })),
            )
            .await;
        assert!(
            status == 200 || status == 201,
            "tenant registration: {status} {body}"
        );
        status
    }

    /// Runs the queued work until every queue is empty.
    pub async fn settle(&self) {
        self.host
            .wait_for_idle(Duration::from_secs(120))
            .await
            .expect("queues drain");
    }

    pub async fn rows(&self, table: &str, partition: &str) -> Vec<Entity> {
        let t = self.tables.table(table).unwrap();
        let f = defender_ops::clients::tables::filter::eq("PartitionKey", partition);
        match t.query_all(Some(&f), None).await {
            Ok(rows) => rows,
            Err(defender_ops::clients::tables::TableError::NotFound { .. }) => Vec::new(),
            Err(e) => panic!("query {table}: {e}"),
        }
    }

    pub async fn row(&self, table: &str, pk: &str, rk: &str) -> Option<Entity> {
        self.tables
            .table(table)
            .unwrap()
            .get(pk, rk)
            .await
            .unwrap_or_else(|e| panic!("read {table}/{pk}/{rk}: {e}"))
    }

    /// The messages waiting in `<queue>-poison` (none when the queue doesn't exist).
    pub async fn poison(&self, queue: &str) -> Vec<String> {
        self.host
            .poison_messages(queue)
            .await
            .expect("poison queue")
    }
}

/// Fails fast when the test CA isn't trusted (otherwise every call fails only after ~80 s
/// of SDK retries).
async fn check_ca_trust(sim: &Sim) {
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // A few tries: on a loaded machine (2 cores, many scenarios starting at once) one probe
    // can time out although the CA is trusted.
    let mut outcome = probe.get(sim.url("_sim/health")).send().await;
    for _ in 0..5 {
        match &outcome {
            Err(e) if e.is_timeout() || e.is_connect() => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                outcome = probe.get(sim.url("_sim/health")).send().await;
            }
            _ => break,
        }
    }
    if let Err(e) = outcome {
        panic!(
            "the simulator's CA ({}) is not trusted by this process: {e}. Run tests through cargo \
             (it sets SSL_CERT_FILE from .cargo/config.toml) or scripts/test.",
            sim.ca_pem_path().display()
        );
    }
}
