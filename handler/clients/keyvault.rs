//! Key Vault secrets through `azure_security_keyvault_secrets` with the app's identity, behind
//! a small TTL cache so repeated reads don't hit the vault. Secret values are `SecretString`
//! and never appear in logs or errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::StatusCode;
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use secrecy::SecretString;
use tokio::time::Instant;
use url::Url;

use super::http::{SdkFailure, error_chain, sdk_failure};
use crate::config::SecretName;

/// Name read by [`KeyVault::probe`]; it need not exist (404 also proves access).
pub const PROBE_SECRET_NAME: &str = "defender-ops-health-probe";

/// How to reach the vault.
#[derive(Debug, Clone)]
pub struct KeyVaultSettings {
    /// `KEY_VAULT_URI`, e.g. `https://kv-defender-ops.vault.azure.net/`.
    pub uri: Url,
    /// `KEY_VAULT_VERIFY_CHALLENGE_RESOURCE`: check that the vault's auth challenge names a
    /// resource in the vault's own domain. False only for a loopback simulator.
    pub verify_challenge_resource: bool,
    /// How long a fetched secret is served from memory.
    pub cache_ttl: Duration,
}

impl KeyVaultSettings {
    /// Settings with the default 5-minute cache.
    pub fn new(uri: Url, verify_challenge_resource: bool) -> Self {
        Self {
            uri,
            verify_challenge_resource,
            cache_ttl: Duration::from_secs(300),
        }
    }
}

/// Why a secret could not be read. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    /// The vault answered 404 for this name.
    #[error("Key Vault secret '{name}' does not exist")]
    SecretNotFound {
        /// The secret's name.
        name: String,
    },
    /// The vault refused the app (403): the identity lacks "Key Vault Secrets User".
    #[error(
        "the app may not read Key Vault secret '{name}' (403: grant its identity Key Vault Secrets User)"
    )]
    Forbidden {
        /// The secret's name.
        name: String,
        /// The vault's message.
        message: String,
    },
    /// The app's identity could not authenticate to the vault.
    #[error("could not authenticate to Key Vault: {detail}")]
    Authentication {
        /// The SDK's message and causes.
        detail: String,
        /// The SDK error.
        #[source]
        source: Box<azure_core::Error>,
    },
    /// Network failure, timeout, throttling or a vault-side error after the SDK's retries.
    #[error("Key Vault is unavailable: {detail}")]
    Unavailable {
        /// The SDK's message and causes.
        detail: String,
        /// The SDK error.
        #[source]
        source: Box<azure_core::Error>,
    },
    /// The vault URI or options were refused when building the client.
    #[error("Key Vault client setup failed: {detail}")]
    Setup {
        /// The SDK's message and causes.
        detail: String,
    },
    /// The secret exists but has no value.
    #[error("Key Vault secret '{name}' has no value")]
    Empty {
        /// The secret's name.
        name: String,
    },
}

impl KeyVaultError {
    /// True for failures worth retrying later (network, vault outage, throttling).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A secret's value and version.
#[derive(Debug, Clone)]
pub struct VaultSecret {
    /// The value; expose it only where it is used.
    pub value: SecretString,
    /// The version id (the last segment of the secret id), when the vault returned one.
    pub version: Option<String>,
}

struct Cached {
    secret: VaultSecret,
    fetched_at: Instant,
}

/// Reads secrets from one vault, caching each for the configured TTL.
pub struct KeyVault {
    client: SecretClient,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("endpoint", &self.client.endpoint().as_str())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// Builds the client. `credential` is the app's identity; `client_options` should come
    /// from [`super::http::sdk_client_options`].
    ///
    /// # Errors
    /// [`KeyVaultError::Setup`] when the SDK refuses the URI.
    pub fn new(
        settings: &KeyVaultSettings,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        client_options: azure_core::http::ClientOptions,
    ) -> Result<Self, KeyVaultError> {
        let options = SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(settings.verify_challenge_resource),
            ..Default::default()
        };
        let client = SecretClient::new(settings.uri.as_str(), credential, Some(options)).map_err(
            |error| KeyVaultError::Setup {
                detail: error_chain(&error),
            },
        )?;
        Ok(Self {
            client,
            ttl: settings.cache_ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The secret `name`, from the cache when fetched less than the TTL ago.
    ///
    /// # Errors
    /// [`KeyVaultError::SecretNotFound`], [`KeyVaultError::Forbidden`],
    /// [`KeyVaultError::Authentication`], [`KeyVaultError::Unavailable`],
    /// [`KeyVaultError::Empty`].
    pub async fn get(&self, name: &SecretName) -> Result<VaultSecret, KeyVaultError> {
        if let Some(secret) = self.cached(name.as_str()) {
            return Ok(secret);
        }
        self.fetch(name).await
    }

    /// The secret `name` straight from the vault (e.g. after the cached value was refused,
    /// in case it was rotated); refreshes the cache.
    ///
    /// # Errors
    /// As [`KeyVault::get`].
    pub async fn fetch(&self, name: &SecretName) -> Result<VaultSecret, KeyVaultError> {
        let secret = self.read(name.as_str()).await?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(
            name.as_str().to_owned(),
            Cached {
                secret: secret.clone(),
                fetched_at: Instant::now(),
            },
        );
        Ok(secret)
    }

    /// Forgets a cached secret.
    pub fn invalidate(&self, name: &SecretName) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name.as_str());
    }

    /// Health check: reads [`PROBE_SECRET_NAME`] uncached. 200 or 404 both mean the vault is
    /// reachable and the app is authorised.
    ///
    /// # Errors
    /// Any other outcome of the read.
    pub async fn probe(&self) -> Result<(), KeyVaultError> {
        match self.read(PROBE_SECRET_NAME).await {
            Ok(_) | Err(KeyVaultError::SecretNotFound { .. } | KeyVaultError::Empty { .. }) => {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn cached(&self, name: &str) -> Option<VaultSecret> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = cache.get(name)?;
        (entry.fetched_at.elapsed() < self.ttl).then(|| entry.secret.clone())
    }

    async fn read(&self, name: &str) -> Result<VaultSecret, KeyVaultError> {
        let response = self
            .client
            .get_secret(name, None)
            .await
            .map_err(|error| classify(name, error))?;
        let secret = response
            .into_model()
            .map_err(|error| KeyVaultError::Unavailable {
                detail: format!("unreadable answer: {}", error_chain(&error)),
                source: Box::new(error),
            })?;
        let version = secret.resource_id().ok().and_then(|id| id.version);
        let Some(value) = secret.value.filter(|v| !v.is_empty()) else {
            return Err(KeyVaultError::Empty {
                name: name.to_owned(),
            });
        };
        tracing::debug!(secret.name = name, "read a Key Vault secret");
        Ok(VaultSecret {
            value: SecretString::from(value),
            version,
        })
    }
}

fn classify(name: &str, error: azure_core::Error) -> KeyVaultError {
    let detail = error_chain(&error);
    let credential = matches!(error.kind(), ErrorKind::Credential);
    match sdk_failure(&error) {
        SdkFailure::Status(404) if !credential => KeyVaultError::SecretNotFound {
            name: name.to_owned(),
        },
        SdkFailure::Status(403) if !credential => KeyVaultError::Forbidden {
            name: name.to_owned(),
            message: detail,
        },
        failure if failure.is_transient() => KeyVaultError::Unavailable {
            detail,
            source: Box::new(error),
        },
        _ if credential || matches!(error.http_status(), Some(StatusCode::Unauthorized)) => {
            KeyVaultError::Authentication {
                detail,
                source: Box::new(error),
            }
        }
        _ => KeyVaultError::Unavailable {
            detail,
            source: Box::new(error),
        },
    }
}
