// The segments account: Customer Insights writes its exports into the `segments` container here, Event Grid announces
// each new blob (events.bicep), and the app only reads it (identity.bicep: Storage Blob Data Reader on the container,
// the app setting SEGMENTS_BLOB_URI). Next to it, the `erasures` drop folder: the platform writes its deletion exports
// (files of addresses to erase) there, Event Grid announces them too, and the app reads each file, records the request
// and deletes the file (identity.bicep: Storage Blob Data Contributor on that container only). Nothing else lives here.
//
// Why an account of its own: Customer Insights' exports to Blob Storage fail when the account has blob soft delete on
// (learn.microsoft.com/dynamics365/customer-insights/data/export-azure-blob-storage: "If you turned on the soft delete
// setting for the Azure Blob Storage account, exports will fail"), and blob soft delete is a setting of the account's
// blob service, not of a container (learn.microsoft.com/azure/storage/blobs/soft-delete-blob-overview). So it is off
// here, for good, and on in the app's account (storage.bicep), which holds the work containers, queues and tables.
// Shared keys are off: every client signs in with Entra ID.
param location string
param tags object
param name string
@description('Object ID of the Customer Insights service principal; empty: grant it yourself (docs/deploy.md).')
param customerInsightsPrincipalId string
@description('Resource ID of the Power Platform enterprise policy through which Customer Insights reaches a storage account behind a firewall (managed identities); empty: none.')
param customerInsightsEnterprisePolicyId string = ''
@description('True: the firewall denies every network; the app comes in over a private endpoint (private-endpoints.bicep), Customer Insights through its enterprise policy.')
param vnetEnabled bool
@description('Days a deleted container stays recoverable (container soft delete; Customer Insights minds blob soft delete only).')
param containerSoftDeleteDays int

// The names the code uses (shared/config.py SEGMENTS_CONTAINER, CONTAINER_ERASURES); tests/integration/test_infra.py
// checks they agree.
var segmentsContainerName = 'segments'
var erasuresContainerName = 'erasures'

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

// vnetEnabled: the firewall lets no network in ("Enabled from selected virtual networks and IP addresses" with none
// selected); the app reads over its private endpoint. The public endpoint stays on for Customer Insights, which
// writes with the managed identity of its Power Platform enterprise policy, let in by a resource instance rule
// (learn.microsoft.com/dynamics365/customer-insights/data/managed-identities): resource instance rules are firewall
// rules of the public endpoint, and with publicNetworkAccess Disabled only private endpoints reach the account
// (learn.microsoft.com/azure/storage/common/storage-network-security-set-default-access). Event Grid needs no network
// path here: the system topic receives the account's events from the platform and delivers them into the app's
// account (storage.bicep says how it passes that firewall).
resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Default deployment only (VNET_ENABLED=false): checkov does not evaluate the condition; scripts/check_infra.sh scans a copy with vnetEnabled true, where the firewall denies by default. Without the VNet, Customer Insights writes from Microsoft's cloud and Flex Consumption has no fixed outbound IPs, so the firewall stays open; shared keys are off and every caller needs an Entra role.
  //checkov:skip=CKV_AZURE_59:Public network access stays Enabled even with vnetEnabled, where the firewall denies every network: Customer Insights writes with its enterprise policy's managed identity through a resource instance rule, a rule of the public endpoint (learn.microsoft.com/dynamics365/customer-insights/data/managed-identities); Disabled would block it. (Event Grid needs no network path into this account: its events leave through the platform.)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_GZRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Not Disabled, even with vnetEnabled: see above the resource.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      ipRules: []
      virtualNetworkRules: []
      resourceAccessRules: empty(customerInsightsEnterprisePolicyId) ? [] : [
        {
          tenantId: tenant().tenantId
          resourceId: customerInsightsEnterprisePolicyId
        }
      ]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Off, and not a parameter: Customer Insights' exports fail while it is on (see the top of this file). The erasures
    // drop folder shares the setting: a drop file the app deletes (it holds addresses) is gone for good, as it should be.
    deleteRetentionPolicy: { enabled: false }
    // A deleted segments container can be restored (a container setting; Customer Insights' page names blob soft
    // delete only).
    containerDeleteRetentionPolicy: { enabled: true, days: containerSoftDeleteDays }
  }
}

resource segmentsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: segmentsContainerName
  properties: { publicAccess: 'None' }
}

// The drop folder of deletion exports: the platform writes files of addresses to erase, the app reads and deletes them.
resource erasuresContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: erasuresContainerName
  properties: { publicAccess: 'None' }
}

// Customer Insights writes its exports with its own service principal, into the segments container only.
resource customerInsightsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(customerInsightsPrincipalId)) {
  name: guid(segmentsContainer.id, customerInsightsPrincipalId, storageBlobDataContributor)
  scope: segmentsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: customerInsightsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Customer Insights writes its deletion exports (files of addresses to erase) with the same service principal, into
// the erasures container only: a file there makes the app delete those people permanently from every audience.
resource customerInsightsErasuresWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(customerInsightsPrincipalId)) {
  name: guid(erasuresContainer.id, customerInsightsPrincipalId, storageBlobDataContributor)
  scope: erasuresContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: customerInsightsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = account.name
output segmentsContainerName string = segmentsContainerName
output erasuresContainerName string = erasuresContainerName
