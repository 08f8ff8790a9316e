// Alerts on what the app logs to Application Insights (workspace-based: log search alerts over the Log Analytics
// workspace's AppTraces), mailed to `alertEmail` through one action group:
// - run-failed: a run ended failed, or completed with failed members ("export ... finished" / "export ... failed" log
//   lines: Properties.runStatus, membersFailed; shared/telemetry.py ended_fields), one alert per destination;
// - poison-message: a queue message was moved to a poison queue (the Functions host's "Moving message to queue
//   '<queue>-poison'" warning, every queue) or a poison queue's handler got one (its warning with
//   Properties.poisonQueue, shared/telemetry.py poisoned; not sampled, unlike the host's lines), one alert per queue;
// - credentials-refused: Mailchimp refused the destination's credentials (revoked key or token): a run that ended
//   with credentialsRefused, or a scheduled/arrival start refused saying the connection must be renewed;
// - no-successful-run: a destination the schedule has followed for over 25 hours (each timer tick logs every
//   destination with scheduled export on, Properties.followed, whether a run starts or not) and still followed by the
//   last tick has had no run that succeeded or completed with errors (trigger schedule or storage) in 25 hours;
// - schedule-silent: the timer logged no finished tick (Properties.scheduleTick) in 25 hours (and, when it logged none
//   in 48 hours either, 25 hours or more after this deployment): the app is stopped, the timer is off, or each tick
//   fails (off with scheduleSilentEnabled=false). It needs no memory of the destinations,
//   so it keeps firing however long the schedule stays silent (a log alert's query looks back 48 hours at most).
// No query starts with or uses union or search, which log search alert rules do not support (except across
// resources): https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-log-query
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
@description('When these rules were deployed (default: now, as yyyy-MM-dd HH:mm:ssZ): when the timer logged no tick in the 48 hours before, the schedule-silent rule waits 25 hours after it, so a fresh deployment, whose timer has not ticked yet, does not fire it.')
param deployedAt string = utcNow('u')
@description('Whether the schedule-silent rule is on: off for an app whose timer is off on purpose (azd: SCHEDULE_SILENT_ALERT=false).')
param scheduleSilentEnabled bool = true

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
AppTraces
| where (Message has "Moving message to queue" and Message has "-poison") or isnotempty(Properties.poisonQueue)
| extend queue = iff(isnotempty(Properties.poisonQueue), tostring(Properties.poisonQueue),
    extract(@"queue '([^']+)'", 1, Message))
| where isnotempty(queue)
| project TimeGenerated, queue, Message
'''

var credentialsQuery = '''
AppTraces
| where isnotempty(Properties.destinationId)
| where tostring(Properties.credentialsRefused) =~ "true"
    or (isnotempty(Properties.startRefused) and Message has "the Mailchimp connection must be renewed")
| project TimeGenerated, destinationId = tostring(Properties.destinationId), runId = tostring(Properties.runId),
    trigger = tostring(Properties.trigger), Message
'''

// 10m: a tick's lines all come within one invocation, at most host.json's functionTimeout (00:10:00) long.
var noSuccessQuery = '''
let lastTick = toscalar(AppTraces
    | where TimeGenerated > ago(48h)
    | where isnotempty(Properties.scheduleTick)
    | summarize max(TimeGenerated));
let succeeded = AppTraces
    | where TimeGenerated > ago(25h)
    | where tostring(Properties.runStatus) in ("succeeded", "completed_with_errors")
        and tostring(Properties.trigger) in ("schedule", "storage")
    | summarize by destinationId = tostring(Properties.destinationId);
AppTraces
| where TimeGenerated > ago(48h)
| where tostring(Properties.trigger) == "schedule" and isnotempty(Properties.followed)
| summarize firstFollowed = min(TimeGenerated), lastFollowed = max(TimeGenerated)
    by destinationId = tostring(Properties.destinationId)
| where isnotempty(destinationId) and firstFollowed < ago(25h)
    and (isnull(lastTick) or lastFollowed >= lastTick - 10m)
| join kind=leftanti succeeded on destinationId
'''

// {0}: deployedAt. A summarize with no `by` gives one row even over no trace, so the silence itself is a result row.
// Right after a deployment no tick may have come yet: the rule waits 25 hours then, unless the timer ticked in the 48
// hours before (a redeployment does not mute a schedule that went silent since).
var scheduleSilentTemplate = '''
AppTraces
| where TimeGenerated > ago(48h)
| where isnotempty(Properties.scheduleTick)
| summarize ticks = countif(TimeGenerated > ago(25h)), earlier = count()
| where ticks == 0 and (earlier > 0 or now() > todatetime("{0}") + 25h)
'''
var scheduleSilentQuery = format(scheduleSilentTemplate, deployedAt)

resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${rulePrefix}-run-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailchimp export: run failed or has failed members'
    description: 'An export run ended failed, or completed with members Mailchimp did not take (failed). Open the run (GET /api/exports/{runId}) and its error report.'
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
    description: 'A queue message failed five times and was moved to a poison queue (the queue is the alert\'s dimension). Each poison queue\'s handler logs the message it got: the export and erasure handlers count the run, chunk or request as given up on; the two event handlers handle the event once more.'
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
    description: 'A destination exported on schedule has had no run that succeeded or completed with errors in 25 hours: its runs fail, its start is refused, or Customer Insights wrote no new snapshot.'
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

resource scheduleSilent 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${rulePrefix}-schedule-silent'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Mailchimp export: the export schedule has not run in 25 hours'
    description: 'The timer that starts scheduled exports logged no finished tick in 25 hours: the app is stopped, the timer is disabled (AzureWebJobs.scheduled_exports.Disabled), or every tick fails (its segments container cannot be listed). No destination is exported on schedule meanwhile.'
    severity: 2
    enabled: scheduleSilentEnabled
    scopes: [workspace.id]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'P2D'
    autoMitigate: true
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: scheduleSilentQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: actions
  }
  dependsOn: [actionGroup]
}

output actionGroupId string = empty(alertEmail) ? '' : actionGroup.id
output ruleNames array = [runFailed.name, poisonMessage.name, credentialsRefused.name, noSuccessfulRun.name, scheduleSilent.name]
