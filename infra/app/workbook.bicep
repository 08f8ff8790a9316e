// A shared workbook over the Log Analytics workspace Application Insights writes to (workspace-based: AppTraces,
// AppMetrics, AppDependencies, AppRequests): runs over time by status, throughput (profiles per second, members by
// outcome, chunk duration) and errors per destination (failed runs and members, refused and invalid rows, refused
// credentials, Mailchimp call errors and 429s), exports refused at the trigger, poison messages by queue. Its items
// are in workbook.json (the portal's Advanced editor format); the workspace's ID replaces __WORKSPACE_ID__.
// Azure portal: the resource group > the workbook, or Monitor > Workbooks (docs/deploy.md, "Alerts and workbook").
param location string
param tags object
param logAnalyticsName string
@description('Shown in the portal\'s workbook gallery.')
param displayName string = 'Mailchimp export: runs, throughput, errors'
@description('Seeds the workbook\'s name (a GUID, as Resource Manager requires): the same seed keeps the same workbook.')
param nameSeed string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, nameSeed, 'mailchimp-export-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: workspace.id
    serializedData: replace(loadTextContent('workbook.json'), '__WORKSPACE_ID__', workspace.id)
  }
}

output id string = workbook.id
output name string = workbook.name
