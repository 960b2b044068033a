// Parameters for infra/main.bicep. Copy and adapt per environment:
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
// Every DESIGN §5 setting has a default in main.bicep; the values below are the ones an
// operator usually changes. Secret settings hold Key Vault secret NAMES, never secrets.
using './main.bicep'

param namePrefix = 'defops'

param maximumInstanceCount = 40

// Object id of the operator (or group / pipeline) that writes tenant secrets into Key Vault.
param secretsOfficerPrincipalId = ''
param secretsOfficerPrincipalType = 'User'

param deviceSyncSchedule = '0 0 * * * *'
param offboardFlaggedSchedule = '0 */5 * * * *'
param actionTrackerSchedule = '0 */5 * * * *'
param incidentWatchSchedule = '0 */5 * * * *'
param staleAfterDays = 7
param offboardExcludeTag = 'DoNotOffboard'
param offboardMaxPerRun = 50
param approvalTtlHours = 72
param incidentMinSeverity = 'medium'
param tablePrefix = ''

// Optional features: set the Key Vault secret names once the secrets exist (docs/deploy.md).
param webhookHmacSecretName = ''
param webhookAllowUnsigned = false
param notifyWebhookSigningSecretName = ''
param notifyTeamsSecretName = ''
param notifyEmailFrom = ''
param notifyEmailTo = ''
param notifyWebhookSecretName = ''
param homeTenantId = ''
param homeClientId = ''
param homeSecretName = ''
param consoleSessionSecretName = ''
param consoleBaseUrl = ''
