//! Typed settings read from the environment (DESIGN §5); every problem is reported at once.

use secrecy::SecretString;
use url::Url;

/// How the product reaches Azure Table Storage.
#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// `AzureWebJobsStorage` connection string (account key or `UseDevelopmentStorage=true`).
    ConnectionString(SecretString),
    /// `AzureWebJobsStorage__tableServiceUri` with a managed identity
    /// (`__clientId` selects a user-assigned one).
    Identity {
        table_service_uri: Url,
        client_id: Option<String>,
    },
}
