// Private endpoints of the `vnetEnabled` option (main.bicep): one per storage service the app uses (blob, queue,
// table) and one for Key Vault, each with its private DNS zone linked to the VNet, so that the usual host names
// (<account>.blob.core.windows.net, <vault>.vault.azure.net) resolve to private addresses inside it. Modelled on
// Azure-Samples' functions-quickstart-dotnet-azd (infra/app/storage-PrivateEndpoint.bicep), with Key Vault's `vault`
// sub-resource added; zone names from learn.microsoft.com/azure/private-link/private-endpoint-dns.
param location string
param tags object
param virtualNetworkName string
param subnetId string
param storageAccountName string
param keyVaultName string

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' existing = {
  name: virtualNetworkName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// groupId: the private-link sub-resource; zone: its private DNS zone in this cloud. Key Vault's zone follows the
// vault suffix of the cloud: '.vault.azure.net' -> 'privatelink.vaultcore.azure.net'.
var endpoints = [
  {
    groupId: 'blob'
    target: storageAccount.id
    targetName: storageAccount.name
    zone: 'privatelink.blob.${environment().suffixes.storage}'
  }
  {
    groupId: 'queue'
    target: storageAccount.id
    targetName: storageAccount.name
    zone: 'privatelink.queue.${environment().suffixes.storage}'
  }
  {
    groupId: 'table'
    target: storageAccount.id
    targetName: storageAccount.name
    zone: 'privatelink.table.${environment().suffixes.storage}'
  }
  {
    groupId: 'vault'
    target: vault.id
    targetName: vault.name
    zone: 'privatelink.vaultcore${replace(environment().suffixes.keyvaultDns, '.vault', '')}'
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for endpoint in endpoints: {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (endpoint, i) in endpoints: {
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
        properties: { privateDnsZoneId: zones[i].id }
      }
    ]
  }
}]
