// The one storage account: segments arrive here, the app keeps its queues, tables and work blobs here, and Flex
// Consumption reads the deployed package from here. Shared keys are off: every client signs in with Entra ID.
//
// Why one account, when blob soft delete would protect the work containers (runs, chunks, reports) and Customer
// Insights forbids it where segments land: blob soft delete is a setting of the account's blob service, not of a
// container (learn.microsoft.com/azure/storage/blobs/soft-delete-blob-overview), and the app reads segments and
// writes its work blobs through one blob endpoint, AzureWebJobsStorage__blobServiceUri (shared/config.py). A second
// account for the work containers therefore needs the app to read segments through a setting of their own first;
// until then blob soft delete stays off here (main.bicep, blobSoftDeleteDays) and container soft delete is on.
param location string
param tags object
param name string
param deploymentContainerName string
@description('Object ID of the Customer Insights service principal; empty: grant it yourself (docs/deploy.md).')
param customerInsightsPrincipalId string
@description('Resource ID of the Power Platform enterprise policy through which Customer Insights reaches a storage account behind a firewall (managed identities); empty: none.')
param customerInsightsEnterprisePolicyId string = ''
@description('True: the firewall denies every network; the app comes in over private endpoints (private-endpoints.bicep), Event Grid as a trusted Azure service, Customer Insights through its enterprise policy.')
param vnetEnabled bool
@description('Days a deleted or overwritten blob stays recoverable; 0: blob soft delete off (see main.bicep).')
param blobSoftDeleteDays int
@description('Days a deleted container stays recoverable.')
param containerSoftDeleteDays int

// Names the code uses (shared/config.py); tests/integration/test_infra.py checks the two agree.
var segmentsContainerName = 'segments'
// Every container, segments first (Customer Insights' role below is on containers[0]). The last two are the Functions
// host's own (AzureWebJobsStorage: function keys, timer and singleton locks); they are created here, not by the host,
// so that the app's blob role can be given per container (identity.bicep).
var containerNames = [
  segmentsContainerName
  'export-work'
  'mailchimp-slots'
  deploymentContainerName
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]
// The containers the app writes: all but segments, which it only reads.
var appContainerNames = [
  'export-work'
  'mailchimp-slots'
  deploymentContainerName
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]
var segmentEventsQueueName = 'segment-events'
var queueNames = [
  'export-plans'
  'export-plans-poison'
  'export-chunks'
  'export-chunks-poison'
  segmentEventsQueueName
  '${segmentEventsQueueName}-poison'
]
var tableNames = ['destinations', 'exportruns']

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

// vnetEnabled: the firewall lets no network in ("Enabled from selected virtual networks and IP addresses" with
// none selected); the app comes in over its private endpoints. The public endpoint stays on for two callers that
// have no private route:
// - Event Grid writes segment events into the segment-events queue. It cannot deliver over private endpoints
//   (learn.microsoft.com/azure/event-grid/consume-private-endpoints); behind a storage firewall it delivers with
//   the system topic's system-assigned identity when trusted Azure services may pass
//   (learn.microsoft.com/azure/event-grid/handler-storage-queues; events.bicep), hence AzureServices. With
//   publicNetworkAccess Disabled only private endpoints reach the account
//   (learn.microsoft.com/azure/storage/common/storage-network-security-set-default-access), trusted services
//   included, and no segment event would arrive.
// - Customer Insights writes the segments with the managed identity of its Power Platform enterprise policy,
//   let in by a resource instance rule (learn.microsoft.com/dynamics365/customer-insights/data/managed-identities).
resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Default deployment only (VNET_ENABLED=false): checkov does not evaluate the condition; scripts/check_infra.sh scans a copy with vnetEnabled true, where the firewall denies by default. Without the VNet, Customer Insights writes from Microsoft's cloud and Flex Consumption has no fixed outbound IPs, so the firewall stays open; shared keys are off and every caller needs an Entra role.
  //checkov:skip=CKV_AZURE_59:Public network access stays Enabled even with vnetEnabled, where the firewall denies every network: Event Grid cannot deliver over private endpoints (learn.microsoft.com/azure/event-grid/consume-private-endpoints) but reaches the segment-events queue through the public endpoint as a trusted Azure service (learn.microsoft.com/azure/event-grid/handler-storage-queues); Disabled would block it. Customer Insights' enterprise policy comes in the same way (a resource instance rule).
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
    // Blob soft delete is account-wide, not per container, and Customer Insights' exports to Blob Storage fail when it
    // is on (learn.microsoft.com/dynamics365/customer-insights/data/export-azure-blob-storage: "If you turned on the
    // soft delete setting for the Azure Blob Storage account, exports will fail"): off unless asked for. The work
    // containers share this account with segments (see the top of this file), so they go without it too.
    deleteRetentionPolicy: (blobSoftDeleteDays > 0) ? { enabled: true, days: blobSoftDeleteDays } : { enabled: false }
    // A deleted container (segments, export-work, mailchimp-slots, the deployment package, the host's) can be restored.
    containerDeleteRetentionPolicy: { enabled: true, days: containerSoftDeleteDays }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: { publicAccess: 'None' }
}]

// Retention of what runs leave behind: per-row error reports name people, so they go after 30 days (chunks are
// deleted by the app as soon as a run is counted); spent OAuth states are only needed for their 10-minute life.
resource retention 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'run-files-30-days'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['export-work/runs/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 30 } } }
          }
        }
        {
          name: 'oauth-states-1-day'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['export-work/oauth-states/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: 1 } } }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

// Customer Insights writes its exports with its own service principal, into the segments container only.
resource customerInsightsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(customerInsightsPrincipalId)) {
  name: guid(containers[0].id, customerInsightsPrincipalId, storageBlobDataContributor)
  scope: containers[0]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: customerInsightsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = account.name
output segmentsContainerName string = segmentsContainerName
output segmentEventsQueueName string = segmentEventsQueueName
output deploymentContainerName string = deploymentContainerName
output appContainerNames array = appContainerNames
