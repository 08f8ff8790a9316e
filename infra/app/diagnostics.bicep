// Who touched the data, kept where the app's own telemetry is: diagnostic settings that send
// - Key Vault's audit events (every secret read, write, delete and every refused attempt, with the caller's identity
//   and address) and its metrics,
// - each storage service's reads, writes and deletes (StorageRead/StorageWrite/StorageDelete: caller, operation,
//   object name, status) and transaction metrics, and the account's transaction metrics, for both accounts: the app's
//   (blob, queue, table) and the segments account (blob: who wrote, read or deleted which segment file),
// - Event Grid's failed deliveries into the segment-events queue,
// to the Log Analytics workspace that Application Insights uses (retention: monitoring.bicep). Queue reads are
// logged too, and the Functions host polls its queues all the time: that is most of the volume (and cost) here.
param logAnalyticsName string
param storageAccountName string
param segmentsStorageAccountName string
param keyVaultName string
param eventGridTopicName string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
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

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: eventGridTopicName
}

var settingName = 'to-log-analytics'

// The storage services' log categories: learn.microsoft.com/azure/storage/blobs/monitor-blob-storage-reference.
var storageLogs = [
  { category: 'StorageRead', enabled: true }
  { category: 'StorageWrite', enabled: true }
  { category: 'StorageDelete', enabled: true }
]
var transactionMetrics = [
  { category: 'Transaction', enabled: true }
]

resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: vault
  properties: {
    workspaceId: workspace.id
    logs: [
      { categoryGroup: 'audit', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

// The account itself has metrics only; its logs are per service, below.
resource storageMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: storageAccount
  properties: {
    workspaceId: workspace.id
    metrics: transactionMetrics
  }
}

resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: blobService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
    metrics: transactionMetrics
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: queueService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
    metrics: transactionMetrics
  }
}

resource tableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: tableService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
    metrics: transactionMetrics
  }
}

// The segments account has a blob service only: Customer Insights' writes and the app's reads of segment files.
resource segmentsMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: segmentsAccount
  properties: {
    workspaceId: workspace.id
    metrics: transactionMetrics
  }
}

resource segmentsBlobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: segmentsBlobService
  properties: {
    workspaceId: workspace.id
    logs: storageLogs
    metrics: transactionMetrics
  }
}

// A segment file whose event never reached the queue is a segment that is never exported: keep the reason.
resource deliveryFailures 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: settingName
  scope: topic
  properties: {
    workspaceId: workspace.id
    logs: [
      { category: 'DeliveryFailures', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}
