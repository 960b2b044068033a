//! The app's own identity: Azure's managed identity (user-assigned when `AZURE_CLIENT_ID` is
//! set). On Functions the SDK reads `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service
//! protocol); the simulator serves the same protocol at `<base>/msi/token`.

use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};

use super::http::error_chain;

/// Scope of the token the app's identity presents as a client assertion (federated tenants).
pub const TOKEN_EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";

/// The app's identity could not be set up or could not get a token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The credential could not be created (e.g. a malformed `IDENTITY_ENDPOINT`).
    #[error("the app's managed identity is not usable: {detail}")]
    Setup {
        /// The SDK's message and its causes.
        detail: String,
        /// The SDK error.
        #[source]
        source: Box<azure_core::Error>,
    },
    /// The identity endpoint refused or failed to issue a token.
    #[error("the app's managed identity could not get a token for {scope}: {detail}")]
    Token {
        /// The scope asked for.
        scope: String,
        /// The SDK's message and its causes (never a token).
        detail: String,
        /// The SDK error.
        #[source]
        source: Box<azure_core::Error>,
    },
}

/// The app's own credential, shared by Key Vault, storage and the federated tenant mode.
#[derive(Debug, Clone)]
pub struct AppIdentity {
    credential: Arc<dyn TokenCredential>,
}

impl AppIdentity {
    /// The managed identity: user-assigned by client id when `client_id` is `Some`
    /// (`AZURE_CLIENT_ID`), else system-assigned.
    ///
    /// `client_options` should come from [`super::http::sdk_client_options`] so the identity
    /// shares the app's connection pool and retry limits.
    ///
    /// # Errors
    /// [`IdentityError::Setup`] when the SDK refuses the environment.
    pub fn managed(
        client_id: Option<&str>,
        client_options: azure_core::http::ClientOptions,
    ) -> Result<Self, IdentityError> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_owned())),
            client_options,
        };
        let credential = ManagedIdentityCredential::new(Some(options)).map_err(|source| {
            IdentityError::Setup {
                detail: error_chain(&source),
                source: Box::new(source),
            }
        })?;
        Ok(Self { credential })
    }

    /// Any other credential standing in for the app (for example a developer's credential
    /// when running locally against real Azure).
    pub fn from_credential(credential: Arc<dyn TokenCredential>) -> Self {
        Self { credential }
    }

    /// The credential, for SDK clients (Key Vault) that take one.
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        Arc::clone(&self.credential)
    }

    /// A token for one scope (cached by the SDK until 5 minutes before expiry).
    ///
    /// # Errors
    /// [`IdentityError::Token`] when the identity endpoint is unreachable or refuses.
    pub async fn token(&self, scope: &str) -> Result<AccessToken, IdentityError> {
        self.credential
            .get_token(&[scope], None)
            .await
            .map_err(|source| IdentityError::Token {
                scope: scope.to_owned(),
                detail: error_chain(&source),
                source: Box::new(source),
            })
    }
}
