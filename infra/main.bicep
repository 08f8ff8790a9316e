// Everything the connector needs in one resource group: `azd up` provisions it, then deploys the app into it.
// Resources are declared directly in ./app/*.bicep (no registry modules) so that checkov can read them offline.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Client ID of the app registered at Mailchimp (Account > Extras > Registered apps). Leave empty to connect with API keys only.')
param mailchimpOAuthClientId string = ''

@secure()
@description('Client secret of that Mailchimp app. It is stored in Key Vault; the app setting only references it.')
param mailchimpOAuthClientSecret string = ''

@minLength(36)
@maxLength(36)
@description('Application (client) ID of the Entra ID app registration App Service Authentication signs people and machines in with (app roles Exports.Admin and Exports.Operator). scripts/azd-app-registration.sh creates or updates it and sets AZURE_AUTH_CLIENT_ID; azd runs it before provisioning (azure.yaml). docs/deploy.md, "Sign-in".')
param authClientId string

@description('Tenant of that app registration: tokens are accepted from https://login.microsoftonline.com/<tenant>/v2.0. Empty: this deployment\'s tenant.')
param authTenantId string = tenant().tenantId

@secure()
@minLength(1)
@description('A client secret of that app registration (the hook creates one and sets AZURE_AUTH_CLIENT_SECRET). It is stored in Key Vault; the app setting MICROSOFT_PROVIDER_AUTHENTICATION_SECRET only references it.')
param authClientSecret string

@description('Object ID of the "Dynamics 365 AI for Customer Insights" service principal in your tenant; when given, it may write into the segments and erasures containers (in the segments account).')
param customerInsightsPrincipalId string = ''

@description('Resource ID of the Power Platform enterprise policy whose managed identity Customer Insights writes with when the storage firewall is closed (vnetEnabled); it gets a resource instance rule through the segments account\'s firewall. Empty: none.')
param customerInsightsEnterprisePolicyId string = ''

@description('When scheduled exports run: six-field NCRONTAB in UTC, seconds first.')
param exportSchedule string = '0 0 * * * *'

@minValue(1)
@maxValue(10)
@description('Simultaneous Mailchimp connections per account, shared by all instances. Mailchimp allows 10 per user.')
param mailchimpMaxConnections int = 10

@minValue(1)
@description('Profiles one export may send, summed over its segments.')
param maxProfilesPerExport int = 1000000

@minValue(1)
@maxValue(600)
@description('How long a Mailchimp call is retried (429, 5xx, timeouts) before the chunk is given back to its queue.')
param mailchimpRetrySeconds int = 120

@minValue(40)
@maxValue(1000)
@description('Upper bound of Flex Consumption instances.')
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Keep storage and Key Vault off the internet: a VNet, private endpoints for blob, queue, table (both storage accounts\' blob) and the vault, VNet integration for the app; the storage firewalls deny every network (Event Grid passes the app account\'s as a trusted Azure service, Customer Insights the segments account\'s through its enterprise policy), Key Vault public network access is disabled (docs/deploy.md).')
param vnetEnabled bool = false

@minValue(1)
@maxValue(365)
@description('Days a deleted or overwritten blob of the app\'s account (work blobs, the deployment package, the host\'s) stays recoverable (blob soft delete). The segments account never has it: Customer Insights\' exports to Blob Storage fail while it is on.')
param blobSoftDeleteDays int = 7

@minValue(1)
@maxValue(365)
@description('Days a deleted container stays recoverable (container soft delete), in both storage accounts.')
param containerSoftDeleteDays int = 7

@minValue(1)
@maxValue(3650)
@description('Days after a run that what names people is kept: its files under export-work/runs/ (a lifecycle rule deletes them this long after their last change) and the staff names on its record (the app clears them). The app setting RETENTION_PERSONAL_DAYS gets the same value.')
param retentionPersonalDays int = 30

@minValue(1)
@maxValue(3650)
@description('Days after a run that its record (counts) is kept in the exportruns table; at least retentionPersonalDays (the app refuses to start otherwise). Tables have no lifecycle rules: the app\'s daily retention_sweep deletes them (app setting RETENTION_RUN_DAYS).')
param retentionRunDays int = 365

@description('Address the alerts are mailed to (infra/app/alerts.bicep: a failed run or failed members, a poison message, Mailchimp refusing the credentials, no successful scheduled run in 25 hours, no schedule tick in 25 hours). Empty: the alert rules are deployed without an action group and fire in the portal only (docs/deploy.md, "Alerts and workbook").')
param alertEmail string = ''

@description('Whether the alert "the export schedule has not run in 25 hours" is on (infra/app/alerts.bicep, schedule-silent): turn it off for an app whose timer is off on purpose (AzureWebJobs.scheduled_exports.Disabled=true).')
param scheduleSilentAlert bool = true

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
// azd passes an unset AZURE_AUTH_TENANT_ID as '', which would replace the default.
var authTenant = empty(authTenantId) ? tenant().tenantId : authTenantId

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
  }
}

// The app's account (AzureWebJobsStorage: queues, tables, work blobs, the deployment package; blob soft delete on).
module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    deploymentContainerName: 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
    vnetEnabled: vnetEnabled
    blobSoftDeleteDays: blobSoftDeleteDays
    containerSoftDeleteDays: containerSoftDeleteDays
    retentionPersonalDays: retentionPersonalDays
  }
}

// The account Customer Insights writes the segment files into (blob soft delete off: its exports fail with it on), and
// the erasures drop folder next to them.
module segmentsStorage 'app/segments-storage.bicep' = {
  name: 'segments-storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.storageStorageAccounts}seg${resourceToken}'
    customerInsightsPrincipalId: customerInsightsPrincipalId
    customerInsightsEnterprisePolicyId: customerInsightsEnterprisePolicyId
    vnetEnabled: vnetEnabled
    containerSoftDeleteDays: containerSoftDeleteDays
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    mailchimpOAuthClientSecret: mailchimpOAuthClientSecret
    authClientSecret: authClientSecret
    vnetEnabled: vnetEnabled
  }
}

// vnetEnabled: the network (modelled on Azure-Samples' Flex Consumption azd templates, e.g.
// functions-quickstart-python-http-azd and functions-quickstart-dotnet-azd) and the private endpoints.
module vnet 'app/vnet.bicep' = if (vnetEnabled) {
  name: 'vnet'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
  }
}

module privateEndpoints 'app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    virtualNetworkName: vnetEnabled ? vnet.outputs.name : ''
    subnetId: vnetEnabled ? vnet.outputs.privateEndpointsSubnetId : ''
    storageAccountName: storage.outputs.name
    segmentsStorageAccountName: segmentsStorage.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.managedIdentityUserAssignedIdentities}${resourceToken}'
    storageAccountName: storage.outputs.name
    segmentsStorageAccountName: segmentsStorage.outputs.name
    segmentsContainerName: segmentsStorage.outputs.segmentsContainerName
    erasuresContainerName: segmentsStorage.outputs.erasuresContainerName
    appContainerNames: storage.outputs.appContainerNames
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    location: location
    tags: tags
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    segmentsStorageAccountName: segmentsStorage.outputs.name
    segmentsContainerName: segmentsStorage.outputs.segmentsContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    oauthClientSecretReference: keyVault.outputs.oauthClientSecretReference
    mailchimpOAuthClientId: mailchimpOAuthClientId
    exportSchedule: exportSchedule
    mailchimpMaxConnections: mailchimpMaxConnections
    maxProfilesPerExport: maxProfilesPerExport
    mailchimpRetrySeconds: mailchimpRetrySeconds
    retentionPersonalDays: retentionPersonalDays
    retentionRunDays: retentionRunDays
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    virtualNetworkSubnetId: vnetEnabled ? vnet.outputs.appSubnetId : ''
    authClientId: authClientId
    authTenantId: authTenant
    authClientSecretReference: keyVault.outputs.authClientSecretReference
  }
}

// Segment files land in the segments account; their BlobCreated events go into the app account's segment-events queue,
// those of erasure drop files (the erasures container, same account) into its erasure-events queue.
// A topic name of its own: deployments made before the segments account have `${abbrs.eventGridSystemTopics}${resourceToken}`
// on the app's account, and re-pointing a system topic's source in place is nothing Microsoft documents; that old
// topic is deleted by hand (docs/deploy.md, "Blob soft delete").
module events 'app/events.bicep' = {
  name: 'events'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.eventGridSystemTopics}segments-${resourceToken}'
    segmentsStorageAccountName: segmentsStorage.outputs.name
    segmentsContainerName: segmentsStorage.outputs.segmentsContainerName
    storageAccountName: storage.outputs.name
    queueName: storage.outputs.segmentEventsQueueName
    erasuresContainerName: segmentsStorage.outputs.erasuresContainerName
    erasureQueueName: storage.outputs.erasureEventsQueueName
  }
}

// Audit trail of the data services (Key Vault, storage, Event Grid deliveries) in the Log Analytics workspace.
module diagnostics 'app/diagnostics.bicep' = {
  name: 'diagnostics'
  scope: rg
  params: {
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    storageAccountName: storage.outputs.name
    segmentsStorageAccountName: segmentsStorage.outputs.name
    keyVaultName: keyVault.outputs.name
    eventGridTopicName: events.outputs.name
  }
}

// Alerts (mailed to alertEmail) and a workbook, over the workspace the app's telemetry lands in.
module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    alertEmail: alertEmail
    scheduleSilentEnabled: scheduleSilentAlert
    actionGroupName: 'ag-${resourceToken}'
    rulePrefix: 'alert-${resourceToken}'
  }
}

module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    nameSeed: resourceToken
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_BASE_URL string = functionApp.outputs.baseUrl
output MAILCHIMP_OAUTH_REDIRECT_URI string = functionApp.outputs.oauthRedirectUri
// The sign-in redirect URI of the app registration; scripts/azd-app-registration.sh adds it after provisioning.
output AUTH_REDIRECT_URI string = functionApp.outputs.authRedirectUri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SEGMENTS_STORAGE_ACCOUNT_NAME string = segmentsStorage.outputs.name
output SEGMENTS_CONTAINER_NAME string = segmentsStorage.outputs.segmentsContainerName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output MONITORING_WORKBOOK_ID string = workbook.outputs.id
