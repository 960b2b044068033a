// Flex Consumption plan + the function app (custom handler). No FUNCTIONS_WORKER_RUNTIME:
// Flex rejects it; the runtime is functionAppConfig.runtime = custom. Host storage is
// identity-based (no connection string, shared keys are off on the account).
@description('Function app name (globally unique host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Resource id of the app\'s user-assigned managed identity.')
param identityId string

@description('Client id of the app\'s user-assigned managed identity.')
param identityClientId string

@description('URL of the blob container holding the deployment package.')
param deploymentContainerUrl string

@description('Primary blob endpoint of the storage account.')
param blobEndpoint string

@description('Primary queue endpoint of the storage account.')
param queueEndpoint string

@description('Primary table endpoint of the storage account.')
param tableEndpoint string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Key Vault URI.')
param keyVaultUri string

@description('Maximum number of instances. Defender rate limits are shared through the RateBudget table, so scale-out does not multiply API calls.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// DESIGN §5 settings, passed through from main.bicep.
param keyVaultVerifyChallengeResource bool = true
param azureAuthorityHost string
param defenderApiBase string
param graphApiBase string
param tablePrefix string
param deviceSyncSchedule string
param offboardFlaggedSchedule string
param actionTrackerSchedule string
param incidentWatchSchedule string
param staleAfterDays int
param offboardExcludeTag string
param offboardMaxPerRun int
param approvalTtlHours int
param incidentMinSeverity string
param webhookHmacSecretName string
param webhookAllowUnsigned bool
param notifyWebhookSigningSecretName string
param notifyTeamsSecretName string
param notifyEmailFrom string
param notifyEmailTo string
param notifyWebhookSecretName string
param homeTenantId string
param homeClientId string
param homeSecretName string
param consoleSessionSecretName string
param consoleBaseUrl string

param tags object = {}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is optional on Flex Consumption and needs always-ready instances; not enabled for this small app
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // Callers are other systems (ITSM, HR leaver flows): routes use function/admin keys and an
  // HMAC signature on the webhook, not App Service Authentication or client certificates.
  // checkov:skip=CKV_AZURE_17: client certificates are not used: callers authenticate with function keys and, on the webhook, an HMAC signature
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed worker count; the platform scales instances per function group up to maximumInstanceCount
  // checkov:skip=CKV_AZURE_213: Flex Consumption manages instance health itself; the anonymous Health function (GET /api/health) is there for external probes (docs/deploy.md)
  // checkov:skip=CKV_AZURE_222: the offboard webhook must be reachable by the calling systems, so public network access stays enabled
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 512
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        // Functions host: identity-based storage (explicit URIs work in every cloud).
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableEndpoint
        }
        // Application Insights with Entra authentication (local auth is disabled).
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // The handler (DESIGN §5).
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'KEY_VAULT_URI'
          value: keyVaultUri
        }
        {
          name: 'KEY_VAULT_VERIFY_CHALLENGE_RESOURCE'
          value: keyVaultVerifyChallengeResource ? 'true' : 'false'
        }
        {
          name: 'AZURE_AUTHORITY_HOST'
          value: azureAuthorityHost
        }
        {
          name: 'DEFENDER_API_BASE'
          value: defenderApiBase
        }
        {
          name: 'GRAPH_API_BASE'
          value: graphApiBase
        }
        {
          name: 'TABLE_PREFIX'
          value: tablePrefix
        }
        {
          name: 'DEVICE_SYNC_SCHEDULE'
          value: deviceSyncSchedule
        }
        {
          name: 'OFFBOARD_FLAGGED_SCHEDULE'
          value: offboardFlaggedSchedule
        }
        {
          name: 'ACTION_TRACKER_SCHEDULE'
          value: actionTrackerSchedule
        }
        {
          name: 'INCIDENT_WATCH_SCHEDULE'
          value: incidentWatchSchedule
        }
        {
          name: 'STALE_AFTER_DAYS'
          value: string(staleAfterDays)
        }
        {
          name: 'OFFBOARD_EXCLUDE_TAG'
          value: offboardExcludeTag
        }
        {
          name: 'OFFBOARD_MAX_PER_RUN'
          value: string(offboardMaxPerRun)
        }
        {
          name: 'APPROVAL_TTL_HOURS'
          value: string(approvalTtlHours)
        }
        {
          name: 'INCIDENT_MIN_SEVERITY'
          value: incidentMinSeverity
        }
        // Key Vault secret *names* (never the secrets) and addresses; empty = feature off.
        {
          name: 'WEBHOOK_HMAC_SECRET'
          value: webhookHmacSecretName
        }
        {
          name: 'WEBHOOK_ALLOW_UNSIGNED'
          value: string(webhookAllowUnsigned)
        }
        {
          name: 'NOTIFY_WEBHOOK_SIGNING_SECRET'
          value: notifyWebhookSigningSecretName
        }
        {
          name: 'NOTIFY_TEAMS_SECRET'
          value: notifyTeamsSecretName
        }
        {
          name: 'NOTIFY_EMAIL_FROM'
          value: notifyEmailFrom
        }
        {
          name: 'NOTIFY_EMAIL_TO'
          value: notifyEmailTo
        }
        {
          name: 'NOTIFY_WEBHOOK_SECRET'
          value: notifyWebhookSecretName
        }
        {
          name: 'HOME_TENANT_ID'
          value: homeTenantId
        }
        {
          name: 'HOME_CLIENT_ID'
          value: homeClientId
        }
        {
          name: 'HOME_SECRET_NAME'
          value: homeSecretName
        }
        {
          name: 'CONSOLE_SESSION_SECRET'
          value: consoleSessionSecretName
        }
        {
          name: 'CONSOLE_BASE_URL'
          value: consoleBaseUrl
        }
      ]
    }
  }
}

// Basic (user name + password) publishing is off for both FTP and the SCM/Kudu site: deploys
// go through Entra ID (scripts/deploy: `az functionapp deployment source config-zip`), so a
// leaked publish profile can't push code that holds every tenant's offboarding rights.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
