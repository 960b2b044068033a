//! Tokens and secrets over real HTTPS against the simulator: Key Vault reads and their cache,
//! per-tenant credentials (secret and federated), token caching, and errors that name the
//! tenant but never the secret. The managed-identity path runs in a child process of this
//! test binary, because the SDK reads `IDENTITY_ENDPOINT` from the process environment.

mod clients_support;

use std::sync::Arc;
use std::time::Duration;

use clients_support::{CLIENT_ID, MDE_SCOPE, SECRET, SECRET_NAME, TENANT, tenant_auth, world};
use defender_ops::clients::credentials::{AuthError, AuthMode, Scope, TenantAuth};
use defender_ops::clients::http::{HttpSettings, build_client, error_chain, sdk_client_options};
use defender_ops::clients::identity::AppIdentity;
use defender_ops::clients::keyvault::{KeyVault, KeyVaultError, KeyVaultSettings};
use defender_ops::config::SecretName;
use dev_sim::{AppRegistration, ManagedIdentity, RouteFamily};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

fn vault_requests(world: &clients_support::World) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::KeyVault))
        .count()
}

#[tokio::test]
async fn tokens_are_requested_once_per_tenant_and_scope() {
    let world = world().await;
    let tenant = tenant_auth();

    for _ in 0..3 {
        world
            .credentials
            .token(&tenant, Scope::Defender)
            .await
            .expect("mde token");
        world
            .credentials
            .token(&tenant, Scope::Graph)
            .await
            .expect("graph token");
    }

    assert_eq!(world.sim.token_requests(TENANT, CLIENT_ID, MDE_SCOPE), 1);
    assert_eq!(world.sim.token_requests(TENANT, CLIENT_ID, GRAPH_SCOPE), 1);
}

#[tokio::test]
async fn a_wrong_secret_fails_with_an_error_naming_the_tenant_but_not_the_secret() {
    let world = world().await;
    let wrong = "wr0ng-S3cret-that-must-not-leak";
    world.sim.set_secret(SECRET_NAME, wrong);

    let error = world
        .credentials
        .token(&tenant_auth(), Scope::Defender)
        .await
        .expect_err("refused");

    let AuthError::Rejected {
        tenant_id, aadsts, ..
    } = &error
    else {
        panic!("expected Rejected, got {error:?}");
    };
    assert_eq!(tenant_id.as_str(), TENANT);
    assert_eq!(aadsts.as_deref(), Some("AADSTS7000215"));
    let shown = format!("{error} | {error:?} | {}", error_chain(&error));
    assert!(shown.contains(TENANT), "{shown}");
    assert!(!shown.contains(wrong), "the secret leaked: {shown}");
    assert!(!shown.contains(SECRET), "the secret leaked: {shown}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_rotated_secret_is_picked_up_after_a_rejection() {
    let world = world().await;
    world.sim.set_secret(SECRET_NAME, "expired-secret");
    let tenant = tenant_auth();
    world
        .credentials
        .token(&tenant, Scope::Defender)
        .await
        .expect_err("old secret refused");

    world.sim.set_secret(SECRET_NAME, SECRET);

    world
        .credentials
        .token(&tenant, Scope::Defender)
        .await
        .expect("the new version is read and used");
}

#[tokio::test]
async fn a_missing_key_vault_secret_is_a_clear_error_naming_it() {
    let world = world().await;
    world.sim.remove_secret(SECRET_NAME);

    let error = world
        .credentials
        .token(&tenant_auth(), Scope::Defender)
        .await
        .expect_err("no secret");

    assert!(
        matches!(&error, AuthError::Secret { source: KeyVaultError::SecretNotFound { name }, .. } if name == SECRET_NAME),
        "{error:?}"
    );
    let text = error_chain(&error);
    assert!(
        text.contains(TENANT) && text.contains(SECRET_NAME),
        "{text}"
    );
}

#[tokio::test]
async fn key_vault_reads_are_served_from_the_cache_within_the_ttl() {
    let world = world().await;
    let name = SecretName::parse(SECRET_NAME).expect("name");

    let first = world.vault.get(&name).await.expect("secret");
    let after_first = vault_requests(&world);
    for _ in 0..5 {
        world.vault.get(&name).await.expect("cached secret");
    }

    assert_eq!(
        vault_requests(&world),
        after_first,
        "cached reads hit the vault"
    );
    assert!(first.version.is_some());
    assert_eq!(secrecy::ExposeSecret::expose_secret(&first.value), SECRET);

    world.vault.fetch(&name).await.expect("fresh read");
    assert!(vault_requests(&world) > after_first);
}

#[tokio::test]
async fn an_expired_cache_entry_is_read_again() {
    let world = world().await;
    let mut settings = KeyVaultSettings::new(world.sim.base_url(), false);
    settings.cache_ttl = Duration::from_millis(200);
    let vault = KeyVault::new(
        &settings,
        world.identity.credential(),
        sdk_client_options(&world.http),
    )
    .expect("vault");
    let name = SecretName::parse(SECRET_NAME).expect("name");

    vault.get(&name).await.expect("secret");
    world.sim.set_secret(SECRET_NAME, "rotated");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = vault.get(&name).await.expect("secret");

    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&again.value),
        "rotated"
    );
}

#[tokio::test]
async fn the_probe_accepts_a_secret_that_does_not_exist() {
    let world = world().await;
    world.vault.probe().await.expect("reachable and authorised");

    let missing = SecretName::parse("no-such-secret").expect("name");
    let error = world.vault.get(&missing).await.expect_err("missing");
    assert!(
        matches!(error, KeyVaultError::SecretNotFound { ref name } if name == "no-such-secret")
    );
    assert_eq!(
        error.to_string(),
        "Key Vault secret 'no-such-secret' does not exist"
    );
}

#[tokio::test]
async fn the_probe_fails_when_the_vault_is_unreachable() {
    let world = world().await;
    let http = build_client(&HttpSettings {
        connect_timeout: Duration::from_millis(500),
        ..HttpSettings::default()
    })
    .expect("http");
    let unreachable = url::Url::parse("https://127.0.0.1:9/").expect("url");
    let vault = KeyVault::new(
        &KeyVaultSettings::new(unreachable, false),
        world.identity.credential(),
        sdk_client_options(&http),
    )
    .expect("vault");

    let error = vault.probe().await.expect_err("unreachable");

    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn a_secret_tenant_without_a_vault_is_misconfigured() {
    let world = world().await;
    let provider = defender_ops::clients::credentials::CredentialProvider::new(
        &defender_ops::clients::credentials::CredentialSettings {
            authority_host: world.sim.base_url(),
        },
        sdk_client_options(&world.http),
        None,
        None,
    );
    let error = provider
        .token(&tenant_auth(), Scope::Defender)
        .await
        .expect_err("no vault");
    assert!(
        matches!(error, AuthError::Misconfigured { .. }),
        "{error:?}"
    );
}

// ---- managed identity (child process) -----------------------------------------------------

const MI_CLIENT_ID: &str = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d";
const FEDERATED_CLIENT_ID: &str = "8f9e0d1c-2b3a-4c5d-8e6f-7a8b9c0d1e2f";
const CHILD_ENV: &str = "CLIENTS_AUTH_CHILD_SIM";

/// Runs [`managed_identity_child`] in a child process whose environment carries the App
/// Service managed-identity variables pointing at this test's simulator.
#[tokio::test]
async fn the_managed_identity_reads_key_vault_and_signs_in_federated_tenants() {
    let world = world().await;
    world.sim.add_managed_identity(ManagedIdentity {
        client_id: MI_CLIENT_ID.into(),
        object_id: "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e".into(),
        ..ManagedIdentity::default()
    });
    world.sim.add_app(AppRegistration::federated(
        TENANT,
        FEDERATED_CLIENT_ID,
        MI_CLIENT_ID,
    ));

    let exe = std::env::current_exe().expect("test binary");
    let output = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "managed_identity_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, world.sim.base_url().as_str())
        .env("IDENTITY_ENDPOINT", world.sim.identity_endpoint().as_str())
        .env("IDENTITY_HEADER", world.sim.identity_header())
        .env("AZURE_CLIENT_ID", MI_CLIENT_ID)
        .output()
        .await
        .expect("child runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    let msi = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::Msi))
        .count();
    assert_eq!(
        msi, 2,
        "one MI token for the vault, one for the token exchange"
    );
    assert_eq!(
        world
            .sim
            .token_requests(TENANT, FEDERATED_CLIENT_ID, MDE_SCOPE),
        1
    );
}

#[tokio::test]
#[ignore = "run by the_managed_identity_reads_key_vault_and_signs_in_federated_tenants"]
async fn managed_identity_child() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let base = url::Url::parse(&base).expect("sim url");
    let http = build_client(&HttpSettings::default()).expect("http");
    let client_id = std::env::var("AZURE_CLIENT_ID").ok();
    let identity =
        AppIdentity::managed(client_id.as_deref(), sdk_client_options(&http)).expect("identity");

    let vault = Arc::new(
        KeyVault::new(
            &KeyVaultSettings::new(base.clone(), false),
            identity.credential(),
            sdk_client_options(&http),
        )
        .expect("vault"),
    );
    vault
        .probe()
        .await
        .expect("vault reachable with the managed identity");

    let provider = defender_ops::clients::credentials::CredentialProvider::new(
        &defender_ops::clients::credentials::CredentialSettings {
            authority_host: base,
        },
        sdk_client_options(&http),
        Some(vault),
        Some(identity),
    );
    let federated = TenantAuth::new(
        clients_support::tenant_id(),
        FEDERATED_CLIENT_ID,
        AuthMode::Federated,
        None,
    )
    .expect("tenant");
    for _ in 0..3 {
        provider
            .token(&federated, Scope::Defender)
            .await
            .expect("federated token");
    }
}

#[tokio::test]
async fn a_federated_tenant_fails_clearly_when_the_apps_identity_has_no_assertion() {
    let world = world().await;
    // The stand-in app identity is a client-secret app: Entra gives it no token-exchange token.
    world.sim.add_app(AppRegistration::federated(
        TENANT,
        FEDERATED_CLIENT_ID,
        MI_CLIENT_ID,
    ));
    let federated = TenantAuth::new(
        clients_support::tenant_id(),
        FEDERATED_CLIENT_ID,
        AuthMode::Federated,
        None,
    )
    .expect("tenant");

    let error = world
        .credentials
        .token(&federated, Scope::Defender)
        .await
        .expect_err("no assertion");

    assert!(matches!(error, AuthError::Identity { .. }), "{error:?}");
    assert!(error.to_string().contains(TENANT), "{error}");
}
