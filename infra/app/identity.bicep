// The app's one identity and everything it may do: read the segments and read and delete the erasure drop files (in the
// segments account), read and write its own containers, queues and tables in its own storage account, manage secrets in the one vault (OAuth writes tokens
// there), publish telemetry. Nothing else, nowhere else.
param location string
param tags object
param name string
@description('The app\'s storage account (AzureWebJobsStorage).')
param storageAccountName string
@description('The account Customer Insights writes the segments into (segments-storage.bicep).')
param segmentsStorageAccountName string
@description('The container of that account Customer Insights writes the segments into; the app only reads it.')
param segmentsContainerName string
@description('The drop folder of deletion exports in that account: the app reads each file and deletes it once used.')
param erasuresContainerName string
@description('The containers the app and the Functions host write (storage.bicep): work, slots, deployment package, host.')
param appContainerNames array
param keyVaultName string
param applicationInsightsName string

// Built-in role definitions (tests/integration/test_infra.py checks each GUID against the role its name says), each
// the least one that does the job, on the narrowest scope that works; docs/deploy.md lists every role assignment of the
// deployment and why.
// Blob roles are per container. No Storage Blob Data Owner: what it adds to Contributor (blobs/* instead of read,
// write, delete, move, add) is managing POSIX ACLs and ownership (hierarchical namespace, off here), blob index tags,
// permanent deletes of versions and soft-deleted blobs, none of which the app or the Functions host use. Contributor reads, writes, deletes and leases blobs and creates containers, which is what
// host storage needs (learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity:
// "read and write access to blobs and the ability to create containers"); it is also the role Flex Consumption itself
// assigns for the deployment container (learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#configure-deployment-settings).
// Storage Blob Data Contributor on each of appContainerNames: chunks, error reports and lease blobs (export-work,
// mailchimp-slots), the deployment package Flex Consumption fetches (and OneDeploy uploads) with this identity, and the
// host's function keys and timer locks (azure-webjobs-secrets, azure-webjobs-hosts). And on the erasures container of
// the segments account: the app reads each file of addresses the platform drops there and deletes it once recorded (it
// names people); Reader cannot delete.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
// Storage Blob Data Reader on the segments container of the segments account: the app lists and reads segment files
// and model.json, never writes there. Its only other role in that account is on the erasures container (above).
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
// Queue triggers read and delete messages (moving the fifth failure to -poison); the app adds plans and chunks. On the
// app's account: every queue in it is the app's (storage.bicep), so a per-queue scope would grant the same.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// The destinations, exportruns, erasures and erasedaddresses tables, and the table the Functions host writes its diagnostic events into (a new
// one each month, named by the host), hence the account scope.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Secrets Officer, not Secrets User (read only): the app writes secrets. It stores each destination's Mailchimp API key
// or OAuth token (PATCH /api/destinations/{id}, the OAuth callback) and deletes it when the destination is disconnected
// or deleted, and it creates the OAuth state-signing key (oauth-state-key) on first use. Key Vault RBAC cannot scope a
// role to secrets that do not exist yet, so the scope is the vault. It holds only these and two client secrets (the
// Mailchimp OAuth one and the sign-in one), which the app reads anyway (through Key Vault references) and could thus
// overwrite, breaking connects or sign-in but letting nobody in: Resource Manager rewrites both on every provision.
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
// Telemetry signed with Entra ID: Application Insights has local (key) auth off.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

var accountRoles = [storageQueueDataContributor, storageTableDataContributor]

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource segmentsAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: segmentsStorageAccountName
}

resource segmentsBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: segmentsAccount
  name: 'default'
}

resource segmentsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: segmentsBlobService
  name: segmentsContainerName
}

resource erasuresContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: segmentsBlobService
  name: erasuresContainerName
}

resource appContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for containerName in appContainerNames: {
  parent: blobService
  name: containerName
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource segmentsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(segmentsContainer.id, appIdentity.id, storageBlobDataReader)
  scope: segmentsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource erasuresAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(erasuresContainer.id, appIdentity.id, storageBlobDataContributor)
  scope: erasuresContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource containerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in appContainerNames: {
  name: guid(appContainers[i].id, appIdentity.id, storageBlobDataContributor)
  scope: appContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in accountRoles: {
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
