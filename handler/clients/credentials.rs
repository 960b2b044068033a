//! Per-tenant credentials for the customer tenants' app registrations.
//!
//! `secret` tenants: the client secret comes from Key Vault (the tenant's `SecretName`) and
//! feeds an `azure_identity::ClientSecretCredential`; `federated` tenants: a
//! `ClientAssertionCredential` whose assertion is the app's managed-identity token for
//! `api://AzureADTokenExchange`. One credential is kept per (tenant, client id, secret
//! version), so each caches its own tokens per scope until 5 minutes before expiry.
//! Errors name the tenant, never the secret.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, ClientMethodOptions, ClientOptions, Context, Request};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use secrecy::ExposeSecret;
use url::Url;

use super::http::{SdkFailure, error_chain, sdk_failure};
use super::identity::{AppIdentity, IdentityError, TOKEN_EXCHANGE_SCOPE};
use super::keyvault::{KeyVault, KeyVaultError};
use crate::config::SecretName;
use crate::domain::TenantId;

/// How a tenant's app registration authenticates (`Tenants.AuthMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// Client secret stored in Key Vault.
    Secret,
    /// Federated credential: the app's managed identity token as client assertion.
    Federated,
}

impl AuthMode {
    /// Parses `secret` or `federated` (case-insensitive).
    ///
    /// # Errors
    /// [`TenantAuthError::UnknownMode`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, TenantAuthError> {
        if raw.eq_ignore_ascii_case("secret") {
            Ok(Self::Secret)
        } else if raw.eq_ignore_ascii_case("federated") {
            Ok(Self::Federated)
        } else {
            Err(TenantAuthError::UnknownMode(raw.to_owned()))
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Federated => "federated",
        }
    }
}

/// The API a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Defender for Endpoint (`https://api.securitycenter.microsoft.com/.default`), also for
    /// the `api.security.microsoft.com` and regional hosts.
    Defender,
    /// Microsoft Graph (`https://graph.microsoft.com/.default`): incidents and sendMail.
    Graph,
}

impl Scope {
    /// The `.default` scope string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Defender => "https://api.securitycenter.microsoft.com/.default",
            Self::Graph => "https://graph.microsoft.com/.default",
        }
    }
}

/// A [`TenantAuth`] that can't be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantAuthError {
    /// `clientId` is not a GUID.
    #[error("clientId must be a GUID (the app registration's application id)")]
    InvalidClientId,
    /// `authMode` is neither `secret` nor `federated`.
    #[error("authMode must be 'secret' or 'federated', not '{0}'")]
    UnknownMode(String),
    /// `secret` mode without a secret name.
    #[error("authMode 'secret' needs secretName (the Key Vault secret holding the client secret)")]
    MissingSecretName,
}

/// How to authenticate as one customer tenant's app registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantAuth {
    tenant_id: TenantId,
    client_id: String,
    mode: AuthMode,
    secret_name: Option<SecretName>,
}

impl TenantAuth {
    /// Validates and builds. `secret_name` is required for [`AuthMode::Secret`] and ignored
    /// for [`AuthMode::Federated`].
    ///
    /// # Errors
    /// [`TenantAuthError`] naming the field at fault.
    pub fn new(
        tenant_id: TenantId,
        client_id: &str,
        mode: AuthMode,
        secret_name: Option<SecretName>,
    ) -> Result<Self, TenantAuthError> {
        let client_id = client_id.trim();
        let client_id = (client_id.len() == 36)
            .then(|| uuid::Uuid::try_parse(client_id).ok())
            .flatten()
            .ok_or(TenantAuthError::InvalidClientId)?
            .hyphenated()
            .to_string();
        let secret_name = match mode {
            AuthMode::Secret => Some(secret_name.ok_or(TenantAuthError::MissingSecretName)?),
            AuthMode::Federated => None,
        };
        Ok(Self {
            tenant_id,
            client_id,
            mode,
            secret_name,
        })
    }

    /// The customer tenant.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }

    /// The app registration's client id (lower-case GUID).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Secret or federated.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The Key Vault secret name (secret mode only).
    pub fn secret_name(&self) -> Option<&SecretName> {
        self.secret_name.as_ref()
    }
}

/// Why no token could be had for a tenant. Never carries a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Entra ID refused the app registration (wrong or expired secret, app not in tenant,
    /// missing consent, federated credential not configured...).
    #[error("authentication failed for tenant {tenant_id}{}", aadsts_suffix(aadsts.as_deref()))]
    Rejected {
        /// The tenant.
        tenant_id: TenantId,
        /// `AADSTSnnnn` when Entra said so.
        aadsts: Option<String>,
        /// Entra's `error` (e.g. `invalid_client`) when known.
        error: Option<String>,
        /// What the SDK reported, scrubbed of the secret.
        detail: String,
    },
    /// The token endpoint could not be reached or failed (retry later).
    #[error("the token service is unavailable for tenant {tenant_id}: {detail}")]
    Unavailable {
        /// The tenant.
        tenant_id: TenantId,
        /// What the SDK reported.
        detail: String,
    },
    /// The tenant's client secret could not be read from Key Vault.
    #[error("the client secret of tenant {tenant_id} could not be read: {source}")]
    Secret {
        /// The tenant.
        tenant_id: TenantId,
        /// The vault's error (names the secret, not its value).
        #[source]
        source: KeyVaultError,
    },
    /// The app's managed identity could not provide the client assertion.
    #[error("the app's managed identity could not sign in for tenant {tenant_id}: {source}")]
    Identity {
        /// The tenant.
        tenant_id: TenantId,
        /// The identity's error.
        #[source]
        source: IdentityError,
    },
    /// The provider lacks what this tenant's mode needs, or the SDK refused the settings.
    #[error("tenant {tenant_id} can't authenticate: {reason}")]
    Misconfigured {
        /// The tenant.
        tenant_id: TenantId,
        /// What is missing.
        reason: String,
    },
}

impl AuthError {
    /// True when retrying later may succeed (network, outages, throttling).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Secret { source, .. } => source.is_transient(),
            Self::Identity {
                source: IdentityError::Token { source, .. },
                ..
            } => sdk_failure(source).is_transient(),
            _ => false,
        }
    }

    /// The tenant concerned.
    pub fn tenant_id(&self) -> &TenantId {
        match self {
            Self::Rejected { tenant_id, .. }
            | Self::Unavailable { tenant_id, .. }
            | Self::Secret { tenant_id, .. }
            | Self::Identity { tenant_id, .. }
            | Self::Misconfigured { tenant_id, .. } => tenant_id,
        }
    }
}

fn aadsts_suffix(code: Option<&str>) -> String {
    code.map(|c| format!(" ({c})")).unwrap_or_default()
}

/// Where the credentials get their tokens.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`); must be https.
    pub authority_host: Url,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            authority_host: Url::parse("https://login.microsoftonline.com")
                .unwrap_or_else(|_| unreachable!("a valid literal URL")),
        }
    }
}

struct Entry {
    /// `secret:<version>` or `federated`: a new secret version replaces the credential.
    variant: String,
    credential: Arc<dyn TokenCredential>,
    rejection: Arc<EntraRejectionCapture>,
}

/// Hands out cached per-tenant tokens. Cheap to share (`Arc`), safe to call concurrently.
pub struct CredentialProvider {
    client_options: ClientOptions,
    vault: Option<Arc<KeyVault>>,
    identity: Option<AppIdentity>,
    credentials: Mutex<HashMap<(TenantId, String), Entry>>,
}

impl std::fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialProvider")
            .field("vault", &self.vault.is_some())
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl CredentialProvider {
    /// A provider. `vault` is needed for `secret` tenants and `identity` for `federated` ones;
    /// `client_options` should come from [`super::http::sdk_client_options`] (its `cloud` is
    /// replaced by the authority host from `settings`).
    pub fn new(
        settings: &CredentialSettings,
        client_options: ClientOptions,
        vault: Option<Arc<KeyVault>>,
        identity: Option<AppIdentity>,
    ) -> Self {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = settings
            .authority_host
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let client_options = ClientOptions {
            cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
            ..client_options
        };
        Self {
            client_options,
            vault,
            identity,
            credentials: Mutex::new(HashMap::new()),
        }
    }

    /// A bearer token for `tenant` and `scope`, cached until shortly before it expires.
    ///
    /// # Errors
    /// [`AuthError`] naming the tenant: `Rejected` (with `AADSTSnnnn` when known) when Entra
    /// refuses the app, `Unavailable` for network trouble, `Secret` when Key Vault fails,
    /// `Identity` when the managed identity fails (federated), `Misconfigured`.
    pub async fn token(&self, tenant: &TenantAuth, scope: Scope) -> Result<AccessToken, AuthError> {
        let (credential, rejection) = self.credential(tenant).await?;
        match credential.get_token(&[scope.as_str()], None).await {
            Ok(token) => Ok(token),
            Err(error) => {
                let error = self.map_error(tenant, &rejection, &error).await;
                if matches!(error, AuthError::Rejected { .. }) {
                    // A rotated secret may still be cached: start afresh next time.
                    self.forget(tenant);
                    if let (Some(vault), Some(name)) = (&self.vault, tenant.secret_name()) {
                        vault.invalidate(name);
                    }
                }
                tracing::warn!(
                    tenant.id = %tenant.tenant_id(),
                    error = %error,
                    "could not get a token"
                );
                Err(error)
            }
        }
    }

    /// Drops the tenant's credential and its cached tokens (e.g. after the API answered 401).
    pub fn forget(&self, tenant: &TenantAuth) {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(tenant.tenant_id().clone(), tenant.client_id().to_owned()));
    }

    async fn credential(
        &self,
        tenant: &TenantAuth,
    ) -> Result<(Arc<dyn TokenCredential>, Arc<EntraRejectionCapture>), AuthError> {
        let key = (tenant.tenant_id().clone(), tenant.client_id().to_owned());
        let (variant, secret) = match tenant.mode() {
            AuthMode::Secret => {
                let (Some(vault), Some(name)) = (&self.vault, tenant.secret_name()) else {
                    return Err(AuthError::Misconfigured {
                        tenant_id: tenant.tenant_id().clone(),
                        reason: "secret mode needs KEY_VAULT_URI and the tenant's secretName"
                            .into(),
                    });
                };
                let secret = vault.get(name).await.map_err(|source| AuthError::Secret {
                    tenant_id: tenant.tenant_id().clone(),
                    source,
                })?;
                let variant = format!(
                    "secret:{}",
                    secret.version.as_deref().unwrap_or("unversioned")
                );
                (variant, Some(secret))
            }
            AuthMode::Federated => ("federated".to_owned(), None),
        };

        if let Some(entry) = self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|entry| entry.variant == variant)
        {
            return Ok((Arc::clone(&entry.credential), Arc::clone(&entry.rejection)));
        }

        let rejection = Arc::new(EntraRejectionCapture::default());
        let mut options = self.client_options.clone();
        options
            .per_try_policies
            .push(Arc::clone(&rejection) as Arc<dyn Policy>);
        let misconfigured = |error: azure_core::Error| AuthError::Misconfigured {
            tenant_id: tenant.tenant_id().clone(),
            reason: error_chain(&error),
        };
        let credential: Arc<dyn TokenCredential> = match (tenant.mode(), secret) {
            (AuthMode::Secret, Some(secret)) => ClientSecretCredential::new(
                tenant.tenant_id().as_str(),
                tenant.client_id().to_owned(),
                Secret::new(secret.value.expose_secret().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: options,
                }),
            )
            .map_err(misconfigured)?,
            _ => {
                let Some(identity) = self.identity.clone() else {
                    return Err(AuthError::Misconfigured {
                        tenant_id: tenant.tenant_id().clone(),
                        reason: "federated mode needs the app's managed identity".into(),
                    });
                };
                ClientAssertionCredential::new(
                    tenant.tenant_id().as_str().to_owned(),
                    tenant.client_id().to_owned(),
                    ManagedIdentityAssertion { identity },
                    Some(ClientAssertionCredentialOptions {
                        client_options: options,
                    }),
                )
                .map_err(misconfigured)?
            }
        };
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                Entry {
                    variant,
                    credential: Arc::clone(&credential),
                    rejection: Arc::clone(&rejection),
                },
            );
        Ok((credential, rejection))
    }

    async fn map_error(
        &self,
        tenant: &TenantAuth,
        rejection: &EntraRejectionCapture,
        error: &azure_core::Error,
    ) -> AuthError {
        let tenant_id = tenant.tenant_id().clone();
        let mut detail = error_chain(error);
        // The SDK never puts the secret in an error; scrub anyway, cheaply (cached read).
        if let (Some(vault), Some(name)) = (&self.vault, tenant.secret_name())
            && let Ok(secret) = vault.get(name).await
        {
            let value = secret.value.expose_secret();
            if !value.is_empty() && detail.contains(value) {
                detail = detail.replace(value, "***");
            }
        }
        if let Some(source) = find_identity_error(error) {
            return AuthError::Identity {
                tenant_id,
                source: clone_identity_error(source),
            };
        }
        let captured = rejection.take();
        let failure = sdk_failure(error);
        if captured.is_none() && failure.is_transient() {
            return AuthError::Unavailable { tenant_id, detail };
        }
        let (aadsts, entra_error) = match captured {
            Some(found) => (found.aadsts, found.error),
            None => (find_aadsts(&detail), None),
        };
        AuthError::Rejected {
            tenant_id,
            aadsts,
            error: entra_error,
            detail,
        }
    }
}

/// The `AADSTSnnnn` code in a text, if any.
fn find_aadsts(text: &str) -> Option<String> {
    let start = text.find("AADSTS")?;
    let digits: String = text[start + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

fn find_identity_error(error: &azure_core::Error) -> Option<&IdentityError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<IdentityError>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

fn clone_identity_error(error: &IdentityError) -> IdentityError {
    // azure_core::Error is not Clone: keep the message chain and the kind.
    let (scope, detail) = match error {
        IdentityError::Setup { detail, .. } => (TOKEN_EXCHANGE_SCOPE.to_owned(), detail.clone()),
        IdentityError::Token { scope, detail, .. } => (scope.clone(), detail.clone()),
    };
    let kind = match error {
        IdentityError::Token { source, .. } => match sdk_failure(source) {
            SdkFailure::Unreachable => azure_core::error::ErrorKind::Connection,
            _ => azure_core::error::ErrorKind::Credential,
        },
        IdentityError::Setup { .. } => azure_core::error::ErrorKind::Credential,
    };
    IdentityError::Token {
        scope,
        source: Box::new(azure_core::Error::with_message(kind, detail.clone())),
        detail,
    }
}

/// The client assertion of federated tenants: the app's managed-identity token for
/// `api://AzureADTokenExchange`.
#[derive(Debug)]
struct ManagedIdentityAssertion {
    identity: AppIdentity,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// `ClientAssertion` is an `async_trait` trait; written out by hand (no `async-trait` crate).
impl ClientAssertion for ManagedIdentityAssertion {
    fn secret<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _options: Option<ClientMethodOptions<'life1>>,
    ) -> BoxFuture<'async_trait, azure_core::Result<String>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            match self.identity.token(TOKEN_EXCHANGE_SCOPE).await {
                Ok(token) => Ok(token.token.secret().to_owned()),
                Err(error) => {
                    let message = error.to_string();
                    Err(azure_core::Error::with_error(
                        azure_core::error::ErrorKind::Credential,
                        error,
                        message,
                    ))
                }
            }
        })
    }
}

/// What Entra said when it refused a token request.
#[derive(Debug, Clone, Default)]
struct EntraRejection {
    aadsts: Option<String>,
    error: Option<String>,
}

/// A per-try pipeline policy on each credential's token requests: when Entra answers 4xx it
/// records `error` and `error_codes`, and rewrites CR/LF in `error_description` so the SDK
/// (which fails on escaped strings in error bodies) can parse the body.
#[derive(Debug, Default)]
struct EntraRejectionCapture {
    last: Mutex<Option<EntraRejection>>,
}

impl EntraRejectionCapture {
    fn take(&self) -> Option<EntraRejection> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    async fn inspect(&self, response: AsyncRawResponse) -> PolicyResult {
        let status = u16::from(response.status());
        if !(400..500).contains(&status) {
            return Ok(response);
        }
        let (status, headers, body) = response.deconstruct();
        let bytes = body.collect().await?;
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(AsyncRawResponse::from_bytes(status, headers, bytes));
        };
        let aadsts = json
            .get("error_codes")
            .and_then(|codes| codes.as_array())
            .and_then(|codes| codes.first())
            .and_then(serde_json::Value::as_i64)
            .map(|code| format!("AADSTS{code}"))
            .or_else(|| {
                json.get("error_description")
                    .and_then(serde_json::Value::as_str)
                    .and_then(find_aadsts)
            });
        let error = json
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(EntraRejection { aadsts, error });
        if let Some(description) = json
            .get_mut("error_description")
            .and_then(|d| d.as_str().map(|s| s.replace(['\r', '\n', '"', '\\'], " ")))
        {
            json["error_description"] = serde_json::Value::String(description);
        }
        let rewritten = serde_json::to_vec(&json).unwrap_or_else(|_| bytes.to_vec());
        Ok(AsyncRawResponse::from_bytes(status, headers, rewritten))
    }
}

// `Policy` is an `async_trait` trait; written out by hand (no `async-trait` crate).
impl Policy for EntraRejectionCapture {
    fn send<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        ctx: &'life1 Context<'_>,
        request: &'life2 mut Request,
        next: &'life3 [Arc<dyn Policy>],
    ) -> BoxFuture<'async_trait, PolicyResult>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let Some((first, rest)) = next.split_first() else {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Other,
                    "no transport after the Entra error policy",
                ));
            };
            let response = first.send(ctx, request, rest).await?;
            self.inspect(response).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("6f1c2a9e-3b7d-4e58-9a0c-1d2e3f405162").expect("tenant")
    }

    #[test]
    fn secret_mode_requires_a_secret_name() {
        let missing = TenantAuth::new(
            tenant(),
            "11111111-2222-4333-8444-555555555555",
            AuthMode::Secret,
            None,
        );
        assert_eq!(missing, Err(TenantAuthError::MissingSecretName));
    }

    #[test]
    fn client_ids_must_be_guids_and_are_lower_cased() {
        let auth = TenantAuth::new(
            tenant(),
            "11111111-2222-4333-8444-55555555AAAA",
            AuthMode::Federated,
            SecretName::parse("ignored").ok(),
        )
        .expect("valid");
        assert_eq!(auth.client_id(), "11111111-2222-4333-8444-55555555aaaa");
        assert_eq!(auth.secret_name(), None);
        assert_eq!(
            TenantAuth::new(tenant(), "not-a-guid", AuthMode::Federated, None),
            Err(TenantAuthError::InvalidClientId)
        );
    }

    #[test]
    fn auth_modes_parse_case_insensitively() {
        assert_eq!(AuthMode::parse("Secret"), Ok(AuthMode::Secret));
        assert_eq!(AuthMode::parse("federated"), Ok(AuthMode::Federated));
        assert!(AuthMode::parse("certificate").is_err());
    }

    #[test]
    fn aadsts_codes_are_found_in_entra_descriptions() {
        assert_eq!(
            find_aadsts("AADSTS7000215: Invalid client secret provided.").as_deref(),
            Some("AADSTS7000215")
        );
        assert_eq!(find_aadsts("no code here"), None);
    }

    #[test]
    fn rejections_name_the_tenant_and_the_code() {
        let error = AuthError::Rejected {
            tenant_id: tenant(),
            aadsts: Some("AADSTS7000215".into()),
            error: Some("invalid_client".into()),
            detail: String::new(),
        };
        assert_eq!(
            error.to_string(),
            "authentication failed for tenant 6f1c2a9e-3b7d-4e58-9a0c-1d2e3f405162 (AADSTS7000215)"
        );
    }
}
