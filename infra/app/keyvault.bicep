// Mailchimp credentials live here: API keys and OAuth tokens the app writes per destination, and the OAuth client
// secret. Access is by Azure RBAC only; deleted secrets stay recoverable and cannot be purged early.
param location string
param tags object
param name string
@secure()
param mailchimpOAuthClientSecret string

var oauthClientSecretName = 'mailchimp-oauth-client-secret'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:Flex Consumption without a VNet has no fixed outbound IPs to allow; access is by Azure RBAC only.
  //checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109: the app and Key Vault references reach the vault over its public endpoint.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Written by Resource Manager, so the deploying user needs no data-plane role on the vault.
resource oauthClientSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(mailchimpOAuthClientSecret)) {
  //checkov:skip=CKV_AZURE_41:Mailchimp OAuth client secrets do not expire; an expiry date here would only stop OAuth connects on that day. Rotate with azd env set + azd provision.
  //checkov:skip=CKV_AZURE_114:contentType is set below; checkov 3.3.30 does not look inside conditional (if) resources.
  parent: vault
  name: oauthClientSecretName
  properties: {
    value: mailchimpOAuthClientSecret
    contentType: 'text/plain'
  }
}

output name string = vault.name
@description('Key Vault reference for the OAuth client secret app setting; empty when no secret was given.')
output oauthClientSecretReference string = empty(mailchimpOAuthClientSecret) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${oauthClientSecret.name})'
