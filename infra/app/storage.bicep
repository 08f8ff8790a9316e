// The one storage account: segments arrive here, the app keeps its queues, tables and work blobs here, and Flex
// Consumption reads the deployed package from here. Shared keys are off: every client signs in with Entra ID.
param location string
param tags object
param name string
param deploymentContainerName string
@description('Object ID of the Customer Insights service principal; empty: grant it yourself (docs/deploy.md).')
param customerInsightsPrincipalId string
@description('True: no public network access; the app reaches the account over private endpoints (private-endpoints.bicep).')
param vnetEnabled bool
@description('Days a deleted or overwritten blob stays recoverable; 0: blob soft delete off (see main.bicep).')
param blobSoftDeleteDays int
@description('Days a deleted container stays recoverable.')
param containerSoftDeleteDays int

// Names the code uses (shared/config.py); tests/integration/test_infra.py checks the two agree.
var segmentsContainerName = 'segments'
var containerNames = [segmentsContainerName, 'export-work', 'mailchimp-slots', deploymentContainerName]
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

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Deny by default with vnetEnabled (checkov does not evaluate the condition). Without it, Customer Insights writes from Microsoft's cloud and Flex Consumption has no fixed outbound IPs, so the firewall stays open; shared keys are off and every caller needs an Entra role.
  //checkov:skip=CKV_AZURE_59:Public network access is Disabled with vnetEnabled (checkov does not evaluate the condition; tests/integration/test_infra_security.py does). Without it the public endpoint is needed, see CKV_AZURE_35.
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
    // vnetEnabled: private endpoints only (as Azure-Samples' functions-quickstart-python-azd-eventgrid-blob does);
    // Customer Insights writes through a Private Link you approve (docs/deploy.md). Event Grid cannot deliver over
    // private endpoints (learn.microsoft.com/azure/event-grid/consume-private-endpoints): it writes segment events into
    // the queue with its identity as a trusted Azure service, hence the AzureServices bypass.
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Blob soft delete is account-wide, not per container, and Customer Insights' exports to Blob Storage fail when it
    // is on (learn.microsoft.com/dynamics365/customer-insights/data/export-azure-blob-storage): off unless asked for.
    deleteRetentionPolicy: (blobSoftDeleteDays > 0) ? { enabled: true, days: blobSoftDeleteDays } : { enabled: false }
    // A deleted container (segments, export-work, mailchimp-slots, the deployment package) can be restored.
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
