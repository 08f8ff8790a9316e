// Segment arrival: Event Grid announces each blob created in the segments container (on the segments account,
// segments-storage.bicep) by writing the event into the `segment-events` storage queue on the app's account
// (storage.bicep), which the `segment_arrived` function consumes (Flex Consumption has no polling blob trigger). Files
// the platform drops into the `erasures` container of the same account go the same way into the `erasure-events`
// queue (an account has one system topic, so both subscriptions are on this one). The system topic delivers with its
// own identity, allowed to add messages to those two queues only.
// It must be the system-assigned identity: behind a storage firewall (vnetEnabled) Event Grid delivers to a queue only
// with the system-assigned identity, and only when trusted Azure services may pass the firewall
// (learn.microsoft.com/azure/event-grid/handler-storage-queues); storage.bicep keeps that path open.
param location string
param tags object
param name string
@description('The account segment files land in: the topic\'s source.')
param segmentsStorageAccountName string
param segmentsContainerName string
@description('The app\'s account, holding the queue the events are delivered into.')
param storageAccountName string
param queueName string
@description('The drop folder of deletion exports, in the segments account.')
param erasuresContainerName string
@description('The queue on the app\'s account that erasure-file events are delivered into.')
param erasureQueueName string

var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

resource segmentsAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: segmentsStorageAccountName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storageAccount
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: queueName
}

resource erasureQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: erasureQueueName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: segmentsAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource queueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, topic.id, storageQueueDataMessageSender)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource erasureQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(erasureQueue.id, topic.id, storageQueueDataMessageSender)
  scope: erasureQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource segmentCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'segment-created'
  dependsOn: [queueSender]
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${segmentsContainerName}/blobs/'
    }
    deliveryWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storageAccount.id
          queueName: queueName
          queueMessageTimeToLiveInSeconds: 604800
        }
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

// A file dropped into the erasures container: the `erasure_file_arrived` function reads it, records the request and
// deletes the file. Filtered, delivered and retried like segment files.
resource erasureCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'erasure-created'
  dependsOn: [erasureQueueSender]
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${erasuresContainerName}/blobs/'
    }
    deliveryWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storageAccount.id
          queueName: erasureQueueName
          queueMessageTimeToLiveInSeconds: 604800
        }
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output name string = topic.name
