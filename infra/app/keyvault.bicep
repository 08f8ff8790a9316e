// Mailchimp credentials live here: API keys and OAuth tokens the app writes per destination, and the OAuth client
// secret; and the client secret of the Entra ID app registration App Service Authentication signs people in with.
// Access is by Azure RBAC only; deleted secrets stay recoverable and cannot be purged early.
param location string
param tags object
param name string
@secure()
param mailchimpOAuthClientSecret string
@secure()
@description('Client secret of the sign-in app registration (scripts/azd-app-registration.sh creates it).')
param authClientSecret string
@description('True: no public network access; the app reaches the vault over its private endpoint (private-endpoints.bicep).')
param vnetEnabled bool

var oauthClientSecretName = 'mailchimp-oauth-client-secret'
var authClientSecretName = 'microsoft-provider-authentication-secret'
// Used as '${publicNetworkAccess}' below: checkov 3.3.30's CKV_AZURE_189 crashes (AttributeError) on any value that
// is not a plain string, skipped or not. The Bicep linter calls the interpolation unnecessary (a warning only).
var publicNetworkAccess = vnetEnabled ? 'Disabled' : 'Enabled'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:Default deployment only (VNET_ENABLED=false): checkov does not evaluate the condition; scripts/check_infra.sh scans a copy with vnetEnabled true, where the firewall denies by default. Without the VNet, Flex Consumption has no fixed outbound IPs to allow; access is by Azure RBAC only.
  //checkov:skip=CKV_AZURE_189:Default deployment only (VNET_ENABLED=false): checkov does not evaluate the condition; scripts/check_infra.sh scans a copy with vnetEnabled true, where public network access is Disabled. Without the VNet, the app and Key Vault references use the public endpoint.
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
    // With vnetEnabled only the private endpoint reaches the data plane. Resource Manager still writes the OAuth client
    // secret below: firewall rules do not apply to deployments (control plane).
    publicNetworkAccess: '${publicNetworkAccess}'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
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

// Written by Resource Manager like the one above. App Service Authentication reads it through the Key Vault reference
// in the app setting MICROSOFT_PROVIDER_AUTHENTICATION_SECRET (function.bicep), resolved with the app's identity.
resource authClientSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  //checkov:skip=CKV_AZURE_41:The secret's lifetime is the Entra ID credential's (scripts/azd-app-registration.sh creates it for one year and docs/deploy.md says how to rotate it); a second expiry date here could only disagree with it.
  parent: vault
  name: authClientSecretName
  properties: {
    value: authClientSecret
    contentType: 'text/plain'
  }
}

output name string = vault.name
@description('Key Vault reference for the OAuth client secret app setting; empty when no secret was given.')
output oauthClientSecretReference string = empty(mailchimpOAuthClientSecret) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${oauthClientSecret.name})'
@description('Key Vault reference for the app setting MICROSOFT_PROVIDER_AUTHENTICATION_SECRET.')
output authClientSecretReference string = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${authClientSecretValue.name})'
