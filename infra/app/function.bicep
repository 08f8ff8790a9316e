// The function app on Flex Consumption (Python 3.11) and its settings. It runs as the user-assigned identity for
// storage, Key Vault, Key Vault references and telemetry alike; no connection string or key appears here.
param location string
param tags object
param name string
param planName string
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
@description('The account segment files land in (segments-storage.bicep); the app reads them there, SEGMENTS_BLOB_URI.')
param segmentsStorageAccountName string
param segmentsContainerName string
param applicationInsightsName string
param keyVaultName string
param oauthClientSecretReference string
param mailchimpOAuthClientId string
param exportSchedule string
param mailchimpMaxConnections int
param maxProfilesPerExport int
param mailchimpRetrySeconds int
param maximumInstanceCount int
param instanceMemoryMB int
@description('Subnet of the VNet integration (vnet.bicep, delegated to Microsoft.App/environments); empty: none.')
param virtualNetworkSubnetId string = ''

// The route of the OAuth callback function, under the Functions host's default `api/` prefix.
var oauthCallbackRoute = 'mailchimp/oauth/callback'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource segmentsAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: segmentsStorageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Flex Consumption offers zone redundancy in some regions only; turn on properties.zoneRedundant where your region has it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:The HTTP API and Mailchimp's OAuth redirect (a user's browser) must reach the app; every API call needs a function key.
  //checkov:skip=CKV_AZURE_17:Browsers following Mailchimp's OAuth redirect carry no client certificate.
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales instances per trigger; numberOfWorkers does not apply.
  //checkov:skip=CKV_AZURE_213:Flex Consumption does not support App Service health checks.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    // VNet integration (vnetEnabled): the app reaches storage and Key Vault through it, over their private endpoints.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          // Shared keys are off on the account, so the package is fetched with the app's identity.
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// azd deploys through the deployment container with Entra ID; nothing needs publishing passwords.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: { allow: false }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: { allow: false }
}

var oauthRedirectUri = 'https://${functionApp.properties.defaultHostName}/api/${oauthCallbackRoute}'

// App settings are the upper-case keys of this file; tests/integration/test_infra.py reads them from here.
var appSettings = {
  AzureWebJobsStorage__blobServiceUri: storageAccount.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Segment files are read from their own account (blob soft delete off there for Customer Insights), with the same
  // identity (AzureWebJobsStorage__clientId); everything else stays on AzureWebJobsStorage's account.
  SEGMENTS_BLOB_URI: segmentsAccount.properties.primaryEndpoints.blob
  SEGMENTS_CONTAINER: segmentsContainerName
  KEY_VAULT_URL: vault.properties.vaultUri
  EXPORT_SCHEDULE: exportSchedule
  EXPORT_CHUNK_SIZE: '500'
  MAILCHIMP_MAX_CONNECTIONS: string(mailchimpMaxConnections)
  MAX_PROFILES_PER_EXPORT: string(maxProfilesPerExport)
  // What one segment file may hold: a longer row or more fields make that row invalid; a larger or deeper model.json
  // makes its export's snapshots unusable (named in the refusal and the log), and the other segments go on.
  SEGMENT_MAX_LINE_BYTES: '1048576'
  SEGMENT_MAX_FIELDS: '1000'
  MODEL_JSON_MAX_BYTES: '16777216'
  SEGMENT_MAX_JSON_DEPTH: '64'
  MAILCHIMP_RETRY_SECONDS: string(mailchimpRetrySeconds)
  // A run that would take a segment's tag off more than this share of the members carrying it holds those untags back.
  UNTAG_GUARD_PERCENT: '20'
  // JSON request bodies larger (bytes) or nested deeper than these are refused with 400 before they are parsed.
  HTTP_MAX_BODY_BYTES: '1048576'
  HTTP_MAX_JSON_DEPTH: '32'
  // Worker threads: at least the connection cap, so chunk workers can keep every Mailchimp connection busy.
  PYTHON_THREADPOOL_THREAD_COUNT: '16'
}

// OAuth is optional. A client ID without a secret is provisioned as is, so the app refuses to start and says why.
var oauthSettings = union(
  empty(mailchimpOAuthClientId) ? {} : {
    MAILCHIMP_OAUTH_CLIENT_ID: mailchimpOAuthClientId
    MAILCHIMP_OAUTH_REDIRECT_URI: oauthRedirectUri
  },
  empty(oauthClientSecretReference) ? {} : {
    MAILCHIMP_OAUTH_CLIENT_SECRET: oauthClientSecretReference
  }
)

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads every sites/config resource as web server configuration; this one holds app settings only.
  //checkov:skip=CKV_AZURE_13:App settings, not site configuration (see above). API calls are guarded by function keys.
  //checkov:skip=CKV_AZURE_63:App settings, not site configuration; IIS HTTP logs do not exist on Linux Flex Consumption, requests are in Application Insights.
  //checkov:skip=CKV_AZURE_65:App settings, not site configuration; IIS detailed error pages do not exist on Linux Flex Consumption.
  //checkov:skip=CKV_AZURE_66:App settings, not site configuration; IIS failed request tracing does not exist on Linux Flex Consumption.
  //checkov:skip=CKV_AZURE_80:App settings, not site configuration; the app runs Python 3.11, not .NET.
  //checkov:skip=CKV_AZURE_88:App settings, not site configuration; Flex Consumption keeps no content on Azure Files.
  //checkov:skip=CKV_AZURE_222:App settings, not site configuration; see the same skip on the site.
  parent: functionApp
  name: 'appsettings'
  properties: union(appSettings, oauthSettings)
}

output name string = functionApp.name
output baseUrl string = 'https://${functionApp.properties.defaultHostName}'
output oauthRedirectUri string = oauthRedirectUri
