// The function app on Flex Consumption (Python 3.11), its settings and its sign-in (App Service Authentication with
// Microsoft Entra ID). It runs as the user-assigned identity for storage, Key Vault, Key Vault references and telemetry
// alike; no connection string or key appears here.
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
@description('RETENTION_PERSONAL_DAYS: the same number the lifecycle rule on export-work/runs/ uses (storage.bicep).')
param retentionPersonalDays int
@description('RETENTION_RUN_DAYS: how long the app keeps run records (tables have no lifecycle rules).')
param retentionRunDays int
param maximumInstanceCount int
param instanceMemoryMB int
@description('Subnet of the VNet integration (vnet.bicep, delegated to Microsoft.App/environments); empty: none.')
param virtualNetworkSubnetId string = ''
@description('Application (client) ID of the Entra ID app registration callers sign in with (scripts/azd-app-registration.sh).')
param authClientId string
@description('Tenant of that app registration.')
param authTenantId string
@description('Key Vault reference to a client secret of that app registration (keyvault.bicep).')
param authClientSecretReference string

// The route of the OAuth callback function, under the Functions host's default `api/` prefix.
var oauthCallbackRoute = 'mailchimp/oauth/callback'
// The app setting App Service Authentication reads the app registration's client secret from (a Key Vault reference).
var authClientSecretSettingName = 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET'

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
  //checkov:skip=CKV_AZURE_222:The HTTP API and Mailchimp's OAuth redirect (a user's browser) must reach the app; every API route but the OAuth callback needs a caller signed in with Entra ID and holding an app role (App Service Authentication, authsettingsV2 below).
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
  // What a finished run leaves behind is kept this long (shared/retention.py): files and staff names, then records.
  RETENTION_PERSONAL_DAYS: string(retentionPersonalDays)
  RETENTION_RUN_DAYS: string(retentionRunDays)
  // A run that would take a segment's tag off more than this share of the members carrying it holds those untags back.
  UNTAG_GUARD_PERCENT: '20'
  // Hours after an audience was read in full before a run reads it whole again; in between, runs read only what
  // changed through the destination's audience mirror (export-work/mirrors/).
  AUDIENCE_MIRROR_MAX_AGE_HOURS: '168'
  // JSON request bodies larger (bytes) or nested deeper than these are refused with 400 before they are parsed.
  HTTP_MAX_BODY_BYTES: '1048576'
  HTTP_MAX_JSON_DEPTH: '32'
  // Worker threads: at least the connection cap, so chunk workers can keep every Mailchimp connection busy.
  PYTHON_THREADPOOL_THREAD_COUNT: '16'
  // Read by App Service Authentication (authsettingsV2 below), not by the app: a Key Vault reference, resolved with
  // the app's identity (keyVaultReferenceIdentity).
  MICROSOFT_PROVIDER_AUTHENTICATION_SECRET: authClientSecretReference
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
  //checkov:skip=CKV_AZURE_13:App settings, not site configuration (see above); App Service Authentication is the authsettingsV2 resource below (CKV_AZURE_56 checks it there).
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

// App Service Authentication ("Easy Auth") with Microsoft Entra ID. It signs people in (a browser session after
// /.auth/login/aad) and validates the bearer tokens of machines (service principals and managed identities with
// `az account get-access-token --resource api://<authClientId>`); for every request it removes any X-MS-CLIENT-PRINCIPAL*
// headers the client sent and, for a verified caller, adds its own, which shared/auth.py reads (the `roles` claim:
// Exports.Admin, Exports.Operator). With it on, App Service sets WEBSITE_AUTH_ENABLED=True; without it the app trusts
// no header and answers 401 to every route but the OAuth callback (fails closed).
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13:checkov 3.3.30 reads this check from the V1 `authsettings` shape (properties.enabled), which authsettingsV2 does not have; V2 is on through platform.enabled (true below), which CKV_AZURE_56 checks and passes, and tests/integration/test_infra_signin.py requires.
  //checkov:skip=CKV_AZURE_63:Authentication settings, not site configuration; IIS HTTP logs do not exist on Linux Flex Consumption, requests are in Application Insights.
  //checkov:skip=CKV_AZURE_65:Authentication settings, not site configuration; IIS detailed error pages do not exist on Linux Flex Consumption.
  //checkov:skip=CKV_AZURE_66:Authentication settings, not site configuration; IIS failed request tracing does not exist on Linux Flex Consumption.
  //checkov:skip=CKV_AZURE_80:Authentication settings, not site configuration; the app runs Python 3.11, not .NET.
  //checkov:skip=CKV_AZURE_88:Authentication settings, not site configuration; Flex Consumption keeps no content on Azure Files.
  //checkov:skip=CKV_AZURE_222:Authentication settings, not site configuration; see the same skip on the site.
  parent: functionApp
  name: 'authsettingsV2'
  // One configuration change of the site at a time: the app settings (this reads its secret from them) first.
  dependsOn: [settings]
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      // AllowAnonymous, not RedirectToLoginPage or Return401: App Service lets unauthenticated requests through (with
      // no X-MS-CLIENT-PRINCIPAL) and the app answers them itself. Every API route but one answers 401 without a
      // verified caller and 403 without the role (blueprints/http.py requires()), so nothing is open that the app does
      // not open (the admin page's static files hold no data); and that one, /api/mailchimp/oauth/callback, must be
      // reached by Mailchimp's OAuth redirect, a browser
      // coming back from Mailchimp that may carry no App Service session (its signed `state` guards it). Requiring
      // authentication here would send that redirect to the Entra sign-in page (or answer it 401) and no OAuth connect
      // could finish; RedirectToLoginPage would also answer API clients with a redirect instead of the app's JSON 401.
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: 'https://login.microsoftonline.com/${authTenantId}/v2.0'
          clientId: authClientId
          clientSecretSettingName: authClientSecretSettingName
        }
        validation: {
          // Tokens for the app's API: v2 access tokens carry the client ID as `aud`, v1 ones the application ID URI.
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      // Off: nothing reads the X-MS-TOKEN-* headers or /.auth/refresh (the app authorizes with X-MS-CLIENT-PRINCIPAL
      // only), so a token store would only keep every signed-in person's access and refresh tokens for no use.
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

output name string = functionApp.name
output baseUrl string = 'https://${functionApp.properties.defaultHostName}'
output oauthRedirectUri string = oauthRedirectUri
output authRedirectUri string = 'https://${functionApp.properties.defaultHostName}/.auth/login/aad/callback'
