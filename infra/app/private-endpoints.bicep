// Private endpoints of the `vnetEnabled` option (main.bicep): one per storage service the app uses in its own account
// (blob, queue, table), one for the segments account's blob service (the app reads segment files there) and one for
// Key Vault, each registered in the private DNS zone of its sub-resource, linked to the VNet, so that the usual host
// names (<account>.blob.core.windows.net, <vault>.vault.azure.net) resolve to private addresses inside it. Both
// accounts' blob endpoints share the one privatelink.blob zone (a zone holds the A records of every account). Modelled
// on Azure-Samples' functions-quickstart-dotnet-azd (infra/app/storage-PrivateEndpoint.bicep), with Key Vault's
// `vault` sub-resource added; zone names from learn.microsoft.com/azure/private-link/private-endpoint-dns.
param location string
param tags object
param virtualNetworkName string
param subnetId string
param storageAccountName string
@description('The account segment files land in (segments-storage.bicep): a blob endpoint only.')
param segmentsStorageAccountName string
param keyVaultName string

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' existing = {
  name: virtualNetworkName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource segmentsAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: segmentsStorageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// The private DNS zone of each sub-resource in this cloud, once each. Key Vault's zone follows the vault suffix of
// the cloud: '.vault.azure.net' -> 'privatelink.vaultcore.azure.net'.
var zoneNames = [
  'privatelink.blob.${environment().suffixes.storage}'
  'privatelink.queue.${environment().suffixes.storage}'
  'privatelink.table.${environment().suffixes.storage}'
  'privatelink.vaultcore${replace(environment().suffixes.keyvaultDns, '.vault', '')}'
]

// groupId: the private-link sub-resource; zone: the index of its zone in zoneNames.
var endpoints = [
  {
    groupId: 'blob'
    target: storageAccount.id
    targetName: storageAccount.name
    zone: 0
  }
  {
    groupId: 'queue'
    target: storageAccount.id
    targetName: storageAccount.name
    zone: 1
  }
  {
    groupId: 'table'
    target: storageAccount.id
    targetName: storageAccount.name
    zone: 2
  }
  {
    groupId: 'blob'
    target: segmentsAccount.id
    targetName: segmentsAccount.name
    zone: 0
  }
  {
    groupId: 'vault'
    target: vault.id
    targetName: vault.name
    zone: 3
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zoneName in zoneNames: {
  name: zoneName
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zoneName, i) in zoneNames: {
  parent: zones[i]
  name: '${virtualNetworkName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for endpoint in endpoints: {
  name: 'pe-${endpoint.targetName}-${endpoint.groupId}'
  location: location
  tags: tags
  properties: {
    subnet: { id: subnetId }
    privateLinkServiceConnections: [
      {
        name: '${endpoint.groupId}-connection'
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [endpoint.groupId]
        }
      }
    ]
  }
}]

// Registers each endpoint's address in its zone (the A record) and keeps it up to date.
resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.groupId
        properties: { privateDnsZoneId: zones[endpoint.zone].id }
      }
    ]
  }
}]
