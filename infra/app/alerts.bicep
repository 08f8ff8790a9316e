// Alerts on what the app logs to Application Insights (workspace-based: log search alerts over the Log Analytics
// workspace's AppTraces / AppRequests), mailed to `alertEmail` through one action group:
// - run-failed: a run ended failed, or completed with failed members ("export ... finished" / "export ... failed" log
//   lines: Properties.runStatus, membersFailed; shared/telemetry.py ended_fields), one alert per destination;
// - poison-message: a queue message was moved to a poison queue (the Functions host's "Moving message to queue
//   '<queue>-poison'" warning, every queue) or a poison handler ran (AppRequests *_poisoned), one alert per queue;
// - credentials-refused: Mailchimp refused the destination's credentials (revoked key or token): a run that ended
//   with credentialsRefused, or a scheduled/arrival start refused saying the connection must be renewed;
// - no-successful-run: a destination the schedule followed in the last 48 hours (each timer tick logs every destination
//   with scheduled export on, Properties.followed, whether a run starts or not) has had no run that succeeded or
//   completed with errors (trigger schedule or storage) in 25 hours; or the timer logged no tick at all in 25 hours
//   (Properties.scheduleTick), one alert for "(the export schedule did not run)" that stays while the timer is silent.
//   48 hours is as far back as a log alert's query looks (overrideQueryTimeRange P2D); the tick needs no memory.
// alertEmail empty: the rules are deployed all the same (fired alerts show in the portal, Monitor > Alerts) with no
// action group and so no mail. The rules have no managed identity: each queries only the workspace it is scoped to,
// in this resource group. Query validation is skipped at creation: a new workspace has no App* rows yet.
param location string
param tags object
param logAnalyticsName string
@description('Address the alerts are mailed to; empty: no action group (the alerts fire in the portal only).')
param alertEmail string = ''
param actionGroupName string
param rulePrefix string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'mcexport'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = {
  actionGroups: empty(alertEmail) ? [] : [resourceId('Microsoft.Insights/actionGroups', actionGroupName)]
  customProperties: {}
}

// Run-ended log lines (the app's structured copy: the host's forwarded copy has no Properties.runStatus).
var runFailedQuery = '''
AppTraces
| where isnotempty(Properties.runStatus)
| extend status = tostring(Properties.runStatus), failedMembers = toint(Properties.membersFailed)
| where status == "failed" or (status == "completed_with_errors" and failedMembers > 0)
| project TimeGenerated, destinationId = tostring(Properties.destinationId), runId = tostring(Properties.runId),
    trigger = tostring(Properties.trigger), status, failedMembers, Message
'''

var poisonQuery = '''
union isfuzzy=true
    (AppTraces
    | where Message has "Moving message to queue" and Message has "-poison"
    | extend queue = extract(@"queue '([^']+)'", 1, Message)),
    (AppRequests
    | where Name endswith "_poisoned"
    | extend queue = case(Name == "plan_export_poisoned", "export-plans-poison",
        Name == "export_chunk_poisoned", "export-chunks-poison",
        Name == "process_erasure_poisoned", "erasures-poison", Name))
| where isnotempty(queue)
| project TimeGenerated, queue, Message, Name
'''

var credentialsQuery = '''
AppTraces
| where isnotempty(Properties.destinationId)
| where tostring(Properties.credentialsRefused) =~ "true"
    or (isnotempty(Properties.startRefused) and Message has "the Mailchimp connection must be renewed")
| project TimeGenerated, destinationId = tostring(Properties.destinationId), runId = tostring(Properties.runId),
    trigger = tostring(Properties.trigger), Message
'''

var noSuccessQuery = '''
let scheduled = AppTraces
    | where TimeGenerated > ago(48h)
    | where tostring(Properties.trigger) == "schedule" and isnotempty(Properties.followed)
    | distinct destinationId = tostring(Properties.destinationId);
let succeeded = AppTraces
    | where TimeGenerated > ago(25h)
    | where tostring(Properties.runStatus) in ("succeeded", "completed_with_errors")
        and tostring(Properties.trigger) in ("schedule", "storage")
    | distinct destinationId = tostring(Properties.destinationId);
let ticks = toscalar(AppTraces
    | where TimeGenerated > ago(25h)
    | where isnotempty(Properties.scheduleTick)
    | count);
union
    (scheduled
    | where isnotempty(destinationId)
    | join kind=leftanti succeeded on destinationId),
    (print destinationId = "(the export schedule did not run)"
    | where ticks == 0)
'''

resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${rulePrefix}-run-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailchimp export: run failed or has failed members'
    description: 'An export run ended failed, or completed with members Mailchimp did not take (failed). Open the run (GET /api/runs/{runId}) and its error report.'
    severity: 2
    enabled: true
    scopes: [workspace.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: runFailedQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [{ name: 'destinationId', operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: actions
  }
  dependsOn: [actionGroup]
}

resource poisonMessage 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${rulePrefix}-poison-message'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailchimp export: message in a poison queue'
    description: 'A queue message failed five times and was moved to a poison queue (the queue is the alert\'s dimension). The export queues\' poison handlers count the run or chunk; other poison queues are looked at by hand.'
    severity: 2
    enabled: true
    scopes: [workspace.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [{ name: 'queue', operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: actions
  }
  dependsOn: [actionGroup]
}

resource credentialsRefused 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${rulePrefix}-credentials-refused'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailchimp export: Mailchimp refused the credentials'
    description: 'Mailchimp answered 401 for a destination\'s key or token (revoked or deleted): its exports stop until someone reconnects the destination (OAuth) or enters a new API key.'
    severity: 1
    enabled: true
    scopes: [workspace.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: credentialsQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [{ name: 'destinationId', operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: actions
  }
  dependsOn: [actionGroup]
}

resource noSuccessfulRun 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${rulePrefix}-no-successful-run'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailchimp export: no successful scheduled run in 25 hours'
    description: 'A destination exported on schedule has had no run that succeeded or completed with errors in 25 hours (its runs fail, its start is refused, or Customer Insights wrote no new snapshot), or the export schedule itself has not run in 25 hours (the app stopped, or its timer is disabled).'
    severity: 2
    enabled: true
    scopes: [workspace.id]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: noSuccessQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [{ name: 'destinationId', operator: 'Include', values: ['*'] }]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: actions
  }
  dependsOn: [actionGroup]
}

output actionGroupId string = empty(alertEmail) ? '' : actionGroup.id
output ruleNames array = [runFailed.name, poisonMessage.name, credentialsRefused.name, noSuccessfulRun.name]
