// The app's storage account (AzureWebJobsStorage): the app keeps its queues, tables and work blobs here, the Functions
// host its keys and locks, and Flex Consumption reads the deployed package from here. Segment files do not land here:
// Customer Insights writes them into an account of their own (segments-storage.bicep), because its exports fail where
// blob soft delete is on and blob soft delete is a setting of the whole blob service, not of a container
// (learn.microsoft.com/azure/storage/blobs/soft-delete-blob-overview). Here it is on, so a deleted or overwritten work
// blob (a run's chunks, its error report, the deployment package) stays recoverable. Shared keys are off: every client
// signs in with Entra ID.
param location string
param tags object
param name string
param deploymentContainerName string
@description('True: the firewall denies every network; the app comes in over private endpoints (private-endpoints.bicep), Event Grid as a trusted Azure service.')
param vnetEnabled bool
@description('Days a deleted or overwritten blob stays recoverable (blob soft delete, on).')
param blobSoftDeleteDays int
@description('Days a deleted container stays recoverable.')
param containerSoftDeleteDays int
@description('Days after their last change that blobs under export-work/runs/ (per-row reports, previews, chunk files kept for a retry: they name people) and export-work/mirrors/ (audience mirrors) are deleted; the app setting RETENTION_PERSONAL_DAYS has the same value.')
param retentionPersonalDays int

// Names the code uses (shared/config.py); tests/integration/test_infra.py checks the two agree.
// Every container, each written by the app (identity.bicep gives its blob role per container). The last two are the
// Functions host's own (AzureWebJobsStorage: function keys, timer and singleton locks); they are created here, not by
// the host, so that the app's blob role can be given per container.
var containerNames = [
  'export-work'
  'mailchimp-slots'
  deploymentContainerName
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]
// Queues: each with the -poison queue the host moves a message to after its fifth failure. segment-events and
// erasure-events receive Event Grid's BlobCreated events of the segments account's `segments` and `erasures`
// containers (events.bicep); erasures holds one message per erasure request.
var segmentEventsQueueName = 'segment-events'
var erasureEventsQueueName = 'erasure-events'
var queueNames = [
  'export-plans'
  'export-plans-poison'
  'export-chunks'
  'export-chunks-poison'
  segmentEventsQueueName
  '${segmentEventsQueueName}-poison'
  'erasures'
  'erasures-poison'
  erasureEventsQueueName
  '${erasureEventsQueueName}-poison'
]
// erasures: erasure requests and their outcomes; erasedaddresses: the ledger of erased subscriber hashes (no address).
var tableNames = ['destinations', 'exportruns', 'erasures', 'erasedaddresses']

// vnetEnabled: the firewall lets no network in ("Enabled from selected virtual networks and IP addresses" with
// none selected); the app comes in over its private endpoints. The public endpoint stays on for the one caller that
// has no private route: Event Grid writes segment and erasure-file events into the segment-events and erasure-events
// queues. It cannot deliver over private endpoints (learn.microsoft.com/azure/event-grid/consume-private-endpoints);
// behind a storage firewall it delivers with the system topic's system-assigned identity when trusted Azure services
// may pass (learn.microsoft.com/azure/event-grid/handler-storage-queues; events.bicep), hence AzureServices. With
// publicNetworkAccess Disabled only private endpoints reach the account
// (learn.microsoft.com/azure/storage/common/storage-network-security-set-default-access), trusted services included,
// and no segment or erasure-file event would arrive.
resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Default deployment only (VNET_ENABLED=false): checkov does not evaluate the condition; scripts/check_infra.sh scans a copy with vnetEnabled true, where the firewall denies by default. Without the VNet, Flex Consumption has no fixed outbound IPs to allow, so the firewall stays open; shared keys are off and every caller needs an Entra role.
  //checkov:skip=CKV_AZURE_59:Public network access stays Enabled even with vnetEnabled, where the firewall denies every network: Event Grid cannot deliver over private endpoints (learn.microsoft.com/azure/event-grid/consume-private-endpoints) but reaches the segment-events and erasure-events queues through the public endpoint as a trusted Azure service (learn.microsoft.com/azure/event-grid/handler-storage-queues); Disabled would block it.
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
      resourceAccessRules: []
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // A deleted or overwritten blob of any container here stays recoverable for blobSoftDeleteDays (no segments here:
    // see the top of this file).
    deleteRetentionPolicy: { enabled: true, days: blobSoftDeleteDays }
    // A deleted container (export-work, mailchimp-slots, the deployment package, the host's) can be restored.
    containerDeleteRetentionPolicy: { enabled: true, days: containerSoftDeleteDays }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: { publicAccess: 'None' }
}]

// Retention of what runs leave behind: everything under runs/<runId>/ names people (per-row reports, previews, chunk
// files kept for a retry), so it goes retentionPersonalDays after its last change; the app's daily retention_sweep
// deletes the same files by the run's end (shared/retention.py). Tables have no lifecycle rules: run records (their
// staff names after retentionPersonalDays, the whole record after RETENTION_RUN_DAYS) are the sweep's alone. Spent
// OAuth states are only needed for their 10-minute life.
resource retention 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'run-files-naming-people'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['export-work/runs/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: retentionPersonalDays } } }
          }
        }
        {
          // Audience mirrors (shared/audience_mirror.py) hold every contact of an audience; each run that finds a
          // change writes its destination's anew (one that finds none rewrites only the manifest), so a mirror goes
          // when no run wrote it for retentionPersonalDays (the sweep, which also counts a run that found it
          // unchanged, deletes it too); a copy kept unchanged that long is read in full by its next run.
          name: 'audience-mirrors'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['export-work/mirrors/'] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: retentionPersonalDays } } }
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

output name string = account.name
output segmentEventsQueueName string = segmentEventsQueueName
output erasureEventsQueueName string = erasureEventsQueueName
output deploymentContainerName string = deploymentContainerName
output appContainerNames array = containerNames
