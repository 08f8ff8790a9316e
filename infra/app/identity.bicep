// The app's one identity and everything it may do: read and write the data of the one storage account, manage
// secrets in the one vault (OAuth writes tokens there), publish telemetry. Nothing else, nowhere else.
param location string
param tags object
param name string
param storageAccountName string
param keyVaultName string
param applicationInsightsName string

// Built-in role definitions (tests/integration/test_infra.py checks each GUID against the role its name says), each
// the least one that does the job; docs/deploy.md lists every role assignment of the deployment and why.
// Storage Blob Data Owner: what the Functions host's identity-based AzureWebJobsStorage connection asks for (its own
// containers, blob leases); the app reads segments, writes work and lease blobs, and Flex Consumption fetches the package.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Queue triggers read and delete messages (moving the fifth failure to -poison); the app adds plans and chunks.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// The destinations and exportruns tables.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Secrets Officer, not Secrets User (read only): the app writes secrets. It stores each destination's Mailchimp API key
// or OAuth token (PATCH /api/destinations/{id}, the OAuth callback) and deletes it when the destination is disconnected
// or deleted, and it creates the OAuth state-signing key (oauth-state-key) on first use. Key Vault RBAC cannot scope a
// role to secrets that do not exist yet, so the scope is the vault. It holds only these and the OAuth client secret,
// which the app reads anyway (through a Key Vault reference) and could thus overwrite: Resource Manager rewrites it
// on every provision.
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
// Telemetry signed with Entra ID: Application Insights has local (key) auth off.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

var storageRoles = [storageBlobDataOwner, storageQueueDataContributor, storageTableDataContributor]

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storageAccount.id, appIdentity.id, role)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource secretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appIdentity.id, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appIdentity.id, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output id string = appIdentity.id
output clientId string = appIdentity.properties.clientId
