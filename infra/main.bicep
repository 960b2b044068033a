// defender-ops: one resource group with the Flex Consumption function app (Rust custom
// handler), its user-assigned managed identity, Storage (host + Table Storage state + queues),
// Key Vault (tenant secrets, webhook key, notification URLs), Log Analytics and Application
// Insights. Deploy: scripts/deploy, or see docs/deploy.md.
//
// Kept to plain `resource`/`module` declarations with literal security values so that
// checkov (scripts/check-infra) can parse and check every file.
targetScope = 'resourceGroup'

@description('Azure region of every resource (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Short lowercase prefix of resource names (letters, digits, hyphens).')
@minLength(2)
@maxLength(12)
param namePrefix string = 'defops'

@description('Tags applied to every resource.')
param tags object = {
  app: 'defender-ops'
}

@description('Maximum Flex Consumption instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days to keep logs in Log Analytics.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 90

@description('Optional principal (object) id of the operator or pipeline that writes tenant secrets (granted Key Vault Secrets Officer; the app never is). Empty: no assignment.')
param secretsOfficerPrincipalId string = ''

@description('Principal type of secretsOfficerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param secretsOfficerPrincipalType string = 'User'

// ---- DESIGN §5 settings -------------------------------------------------------------------

@description('KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: check the vault\'s auth challenge domain (false only for a loopback simulator).')
param keyVaultVerifyChallengeResource bool = true

@description('AZURE_AUTHORITY_HOST: Entra token endpoint host.')
param azureAuthorityHost string = 'https://login.microsoftonline.com'

@description('DEFENDER_API_BASE: Microsoft Defender for Endpoint API.')
param defenderApiBase string = 'https://api.securitycenter.microsoft.com'

@description('GRAPH_API_BASE: Microsoft Graph (incidents, sendMail).')
param graphApiBase string = 'https://graph.microsoft.com'

@description('TABLE_PREFIX: prefix of every table name (letters and digits; empty by default).')
@maxLength(40)
param tablePrefix string = ''

@description('DEVICE_SYNC_SCHEDULE (NCRONTAB, six fields).')
param deviceSyncSchedule string = '0 0 * * * *'

@description('OFFBOARD_FLAGGED_SCHEDULE (NCRONTAB).')
param offboardFlaggedSchedule string = '0 */5 * * * *'

@description('ACTION_TRACKER_SCHEDULE (NCRONTAB).')
param actionTrackerSchedule string = '0 */5 * * * *'

@description('INCIDENT_WATCH_SCHEDULE (NCRONTAB).')
param incidentWatchSchedule string = '0 */5 * * * *'

@description('STALE_AFTER_DAYS: a device that has not reported for this long is stale.')
@minValue(1)
param staleAfterDays int = 7

@description('OFFBOARD_EXCLUDE_TAG: devices with this machine tag are never offboarded.')
param offboardExcludeTag string = 'DoNotOffboard'

@description('OFFBOARD_MAX_PER_RUN: cap of flag-driven offboarding per tenant and run.')
@minValue(1)
param offboardMaxPerRun int = 50

@description('APPROVAL_TTL_HOURS: a request waiting for an approver this long expires.')
@minValue(1)
@maxValue(8760)
param approvalTtlHours int = 72

@description('INCIDENT_MIN_SEVERITY: lowest incident severity that is notified.')
@allowed([
  'low'
  'medium'
  'high'
])
param incidentMinSeverity string = 'medium'

@description('WEBHOOK_HMAC_SECRET: Key Vault secret NAME of the built-in caller default\'s signing key (reaches every tenant); empty: only registered callers (PUT /api/callers) sign.')
param webhookHmacSecretName string = ''

@description('WEBHOOK_ALLOW_UNSIGNED: accept unsigned POST /api/offboard calls from function-key holders (every tenant). Keep false.')
param webhookAllowUnsigned bool = false

@description('NOTIFY_WEBHOOK_SIGNING_SECRET: Key Vault secret NAME of the key outbound webhook events are signed with (never an offboarding key); empty: events are unsigned.')
param notifyWebhookSigningSecretName string = ''

@description('NOTIFY_TEAMS_SECRET: Key Vault secret NAME of the Teams Workflows URL; empty: no Teams notifications.')
param notifyTeamsSecretName string = ''

@description('NOTIFY_EMAIL_FROM: sender mailbox for Graph sendMail; empty: no email.')
param notifyEmailFrom string = ''

@description('NOTIFY_EMAIL_TO: recipients for Graph sendMail.')
param notifyEmailTo string = ''

@description('NOTIFY_WEBHOOK_SECRET: Key Vault secret NAME of an outbound webhook URL; empty: none.')
param notifyWebhookSecretName string = ''

@description('HOME_TENANT_ID: tenant of the app registration used for Graph sendMail.')
param homeTenantId string = ''

@description('HOME_CLIENT_ID: client id of that app registration.')
param homeClientId string = ''

@description('HOME_SECRET_NAME: Key Vault secret NAME of that app registration\'s client secret.')
param homeSecretName string = ''

@description('CONSOLE_SESSION_SECRET: Key Vault secret NAME of the console\'s session key (at least 32 random bytes); empty: the console answers 503 "not configured".')
param consoleSessionSecretName string = ''

@description('CONSOLE_BASE_URL: the console\'s public origin for the sign-in redirect URI; empty: the origin of each request (the app\'s default host name).')
param consoleBaseUrl string = ''

// ---- names --------------------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id)
var compactPrefix = toLower(replace(namePrefix, '-', ''))
var identityName = '${namePrefix}-id-${suffix}'
var storageName = take('${compactPrefix}st${suffix}', 24)
var keyVaultName = take('${take(namePrefix, 8)}-kv-${suffix}', 24)
var workspaceName = '${namePrefix}-log-${suffix}'
var appInsightsName = '${namePrefix}-appi-${suffix}'
var planName = '${namePrefix}-plan-${suffix}'
var functionAppName = '${namePrefix}-func-${suffix}'

// ---- resources ----------------------------------------------------------------------------

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: identityName
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: workspaceName
    appInsightsName: appInsightsName
    location: location
    principalId: identity.outputs.principalId
    retentionInDays: logRetentionInDays
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageName
    location: location
    principalId: identity.outputs.principalId
    tablePrefix: tablePrefix
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyVault'
  params: {
    name: keyVaultName
    location: location
    principalId: identity.outputs.principalId
    secretsOfficerPrincipalId: secretsOfficerPrincipalId
    secretsOfficerPrincipalType: secretsOfficerPrincipalType
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionApp'
  params: {
    name: functionAppName
    planName: planName
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    appInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    maximumInstanceCount: maximumInstanceCount
    keyVaultVerifyChallengeResource: keyVaultVerifyChallengeResource
    azureAuthorityHost: azureAuthorityHost
    defenderApiBase: defenderApiBase
    graphApiBase: graphApiBase
    tablePrefix: tablePrefix
    deviceSyncSchedule: deviceSyncSchedule
    offboardFlaggedSchedule: offboardFlaggedSchedule
    actionTrackerSchedule: actionTrackerSchedule
    incidentWatchSchedule: incidentWatchSchedule
    staleAfterDays: staleAfterDays
    offboardExcludeTag: offboardExcludeTag
    offboardMaxPerRun: offboardMaxPerRun
    approvalTtlHours: approvalTtlHours
    incidentMinSeverity: incidentMinSeverity
    webhookHmacSecretName: webhookHmacSecretName
    webhookAllowUnsigned: webhookAllowUnsigned
    notifyWebhookSigningSecretName: notifyWebhookSigningSecretName
    notifyTeamsSecretName: notifyTeamsSecretName
    notifyEmailFrom: notifyEmailFrom
    notifyEmailTo: notifyEmailTo
    notifyWebhookSecretName: notifyWebhookSecretName
    homeTenantId: homeTenantId
    homeClientId: homeClientId
    homeSecretName: homeSecretName
    consoleSessionSecretName: consoleSessionSecretName
    consoleBaseUrl: consoleBaseUrl
  }
}

// ---- outputs ------------------------------------------------------------------------------

output functionAppName string = functionApp.outputs.name
output defaultHostName string = functionApp.outputs.defaultHostName
output keyVaultUri string = keyVault.outputs.uri
output keyVaultName string = keyVault.outputs.name
output storageAccountName string = storage.outputs.name
output identityClientId string = identity.outputs.clientId
output identityPrincipalId string = identity.outputs.principalId
output appInsightsName string = monitoring.outputs.appInsightsName
@description('Give this URL to calling systems, with a function key (fetched separately: see docs/deploy.md) and, when WEBHOOK_HMAC_SECRET is set, the HMAC key.')
@description('The operator console; its sign-in redirect URI is this URL + /auth/callback (docs/deploy.md).')
output consoleUrl string = 'https://${functionApp.outputs.defaultHostName}/api/console'
output webhookUrl string = 'https://${functionApp.outputs.defaultHostName}/api/offboard'
