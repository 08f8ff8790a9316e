// The virtual network of the `vnetEnabled` option (main.bicep). Two subnets, as in Azure-Samples'
// functions-quickstart-python-http-azd (infra/app/vnet.bicep):
// - `app`: the function app's VNet integration; Flex Consumption requires the subnet delegated to
//   Microsoft.App/environments. The app reaches storage and Key Vault through it, over their private endpoints;
//   Mailchimp stays on the internet (a subnet without default outbound access needs a NAT gateway: docs/deploy.md).
// - `private-endpoints`: the private endpoints of storage (blob, queue, table) and Key Vault (private-endpoints.bicep).
param location string
param tags object
param name string

var appSubnetName = 'app'
var privateEndpointsSubnetName = 'private-endpoints'

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: ['10.0.0.0/16']
    }
    subnets: [
      {
        name: privateEndpointsSubnetName
        properties: {
          addressPrefix: '10.0.1.0/24'
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
      {
        name: appSubnetName
        properties: {
          addressPrefix: '10.0.2.0/24'
          delegations: [
            {
              name: 'flex-consumption'
              properties: { serviceName: 'Microsoft.App/environments' }
            }
          ]
        }
      }
    ]
  }
}

output name string = vnet.name
output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, appSubnetName)
output privateEndpointsSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, privateEndpointsSubnetName)
