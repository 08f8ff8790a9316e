"""The alerts and the workbook, read from infra/ with pycep-parser (as test_infra_links.py and test_infra_security.py
do): main.bicep passes azd's ALERT_EMAIL through to infra/app/alerts.bicep, whose action group mails it; the five log
search alerts (a failed run or failed members, a poison message, Mailchimp refusing the credentials, no successful
scheduled run in 25 hours, no schedule tick in 25 hours) query the workspace Application Insights writes to, on the fields the app logs
(shared/telemetry.py ended_fields), and notify that action group; the workbook is deployed over the same workspace.

What Azure alone shows (the rules evaluating, the mail arriving, the workbook's charts) is in docs/deploy.md,
"Alerts and workbook".
"""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bicep import RULE, infra_doc, rule_queries, workbook_queries

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
# rule symbol in alerts.bicep -> (what its KQL must read, severity at most)
RULES = {
    "runFailed": (["Properties.runStatus", "Properties.membersFailed", '"failed"', '"completed_with_errors"'], 2),
    "poisonMessage": (["Moving message to queue", "-poison", "Properties.poisonQueue"], 2),
    "credentialsRefused": (["Properties.credentialsRefused", "Properties.startRefused",
                            "the Mailchimp connection must be renewed"], 1),
    "noSuccessfulRun": (["ago(25h)", '"schedule"', '"succeeded"', '"completed_with_errors"',
                         "| join kind=leftanti succeeded on destinationId", "Properties.followed",
                         "summarize max(TimeGenerated));",  # lastTick: the newest tick
                         "firstFollowed = min(TimeGenerated), lastFollowed = max(TimeGenerated)",
                         "| where isnotempty(destinationId) and firstFollowed < ago(25h)",
                         "and (isnull(lastTick) or lastFollowed >= lastTick - 10m)"], 2),
    "scheduleSilent": (["| where isnotempty(Properties.scheduleTick)",
                        "| summarize ticks = countif(TimeGenerated > ago(25h)), earlier = count()",
                        '| where ticks == 0 and (earlier > 0 or now() > todatetime("{0}") + 25h)'], 2),
}


def _body(resource: dict[str, Any]) -> dict[str, Any]:
    config = resource["config"]
    while isinstance(config, dict) and "config" in config and "condition" in config:
        config = config["config"]
    return config


def _accessor(value: Any) -> tuple[str, str] | None:
    """`a.b` as (a, b)."""
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(operator, dict) and operator.get("type") == "property_accessor":
        operands = operator["operands"]
        return operands["operand_1"], operands["operand_2"]
    return None


def test_main_passes_the_azd_email_parameter_to_the_alerts() -> None:
    main = infra_doc("main.bicep")
    assert main["parameters"]["alertEmail"]["type"] == "string"
    assert main["parameters"]["alertEmail"]["default"] == "", "ALERT_EMAIL is optional"
    params = main["modules"]["alerts"]["config"]["params"]
    assert main["modules"]["alerts"]["detail"]["path"] == "app/alerts.bicep"
    assert params["alertEmail"] == "alertEmail"
    assert _accessor(params["logAnalyticsName"]) == ("monitoring", {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "outputs", "operand_2": "logAnalyticsName"}}})
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert supplied["alertEmail"] == {"value": "${ALERT_EMAIL}"}
    # the schedule-silent rule can be turned off (an app whose timer is off on purpose), on by default
    assert main["parameters"]["scheduleSilentAlert"]["default"] is True
    assert params["scheduleSilentEnabled"] == "scheduleSilentAlert"
    assert supplied["scheduleSilentAlert"] == {"value": "${SCHEDULE_SILENT_ALERT=true}"}
    assert infra_doc("app/alerts.bicep")["parameters"]["scheduleSilentEnabled"]["default"] is True


def test_the_action_group_mails_the_address_and_exists_only_with_one() -> None:
    alerts = infra_doc("app/alerts.bicep")
    group = alerts["resources"]["actionGroup"]
    assert group["type"] == "Microsoft.Insights/actionGroups"
    condition = group["config"]["condition"]
    assert condition["operator"]["type"] == "not"
    assert condition["operator"]["operands"]["bool_value"]["function"] == {
        "type": "empty", "parameters": {"item_to_test": "alertEmail"}}
    body = _body(group)
    assert body["location"] == "global"
    assert body["properties"]["enabled"] is True
    receivers = body["properties"]["emailReceivers"]
    assert [r["emailAddress"] for r in receivers] == ["alertEmail"]
    assert len(body["properties"]["groupShortName"]) <= 12  # Azure's limit


def test_five_log_alerts_on_the_workspace_notify_the_action_group() -> None:
    alerts = infra_doc("app/alerts.bicep")
    rules = {name: r for name, r in alerts["resources"].items() if r["type"] == RULE}
    assert set(rules) == set(RULES)
    queries = rule_queries("app/alerts.bicep")
    # actions: the action group when there is an address, none without one
    actions = alerts["variables"]["actions"]["value"]["actionGroups"]["operator"]
    assert actions["type"] == "conditional"
    assert actions["operands"]["true_value"] == []
    [group_id] = actions["operands"]["false_value"]
    assert group_id["function"]["parameters"]["resource_type"] == "Microsoft.Insights/actionGroups"
    assert group_id["function"]["parameters"]["resource_name_1"] == \
        _body(alerts["resources"]["actionGroup"])["name"]
    assert alerts["resources"]["workspace"]["existing"] is True
    for name, rule in rules.items():
        config = rule["config"]
        body = config["properties"]
        assert config["kind"] == "LogAlert"
        assert config.get("dependsOn") == ["actionGroup"], f"{name}: created after the action group it names"
        assert body["actions"] == "actions", name
        assert body["enabled"] is True or (name, body["enabled"]) == ("scheduleSilent", "scheduleSilentEnabled"), name
        assert [_accessor(scope) for scope in body["scopes"]] == [("workspace", "id")], name
        needles, worst = RULES[name]
        assert body["severity"] <= worst and body["severity"] >= 1, name
        [criterion] = body["criteria"]["allOf"]
        assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0, name
        query = queries[name].text
        assert queries[name].format_args in ((), ("deployedAt",)), name  # format(template, deployedAt)
        assert not re.search(r"\b(union|search)\b", query), f"{name}: log search alert rules do not support union or search"
        for needle in needles:
            assert needle in query, f"{name}: its query does not read {needle!r}"
        assert re.search(r"\bAppTraces\b", query), name
        frequency = body["evaluationFrequency"]
        assert frequency in ("PT5M", "PT15M", "PT1H"), name
    assert rules["noSuccessfulRun"]["config"]["properties"]["overrideQueryTimeRange"] == "P2D"
    assert rules["scheduleSilent"]["config"]["properties"]["overrideQueryTimeRange"] == "P2D"
    # the silent-schedule rule waits 25 h after a deployment, from a time todatetime() reads ('u': 2026-12-02 10:00:00Z)
    assert alerts["parameters"]["deployedAt"]["default"] == {"function": {"type": "utc_now", "parameters": {"format": "u"}}}


def test_the_alerts_read_fields_the_app_logs() -> None:
    """The Properties the queries read are the `extra=` keys the app puts on its log lines."""
    from shared import telemetry
    from shared.exports import planner, starting
    from shared.runs import Run

    run = Run(id="r", destination_id="d", trigger="schedule", status="failed", created_at="", segments=[],
              details={"abort": "Mailchimp refused the credentials"})
    fields = telemetry.ended_fields(run)
    assert {"runStatus", "destinationId", "trigger", "membersFailed", "membersRefused", "membersInvalid",
            "credentialsRefused"} <= set(fields)
    assert fields["credentialsRefused"] is True and fields["runStatus"] == "failed"
    assert "startRefused" in inspect.getsource(starting)
    # each tick's own line and the line of each destination it follows (tests/unit/test_hostile_segments.py)
    assert '"scheduleTick"' in inspect.getsource(starting) and '"followed"' in inspect.getsource(starting)
    assert '"poisonQueue"' in inspect.getsource(telemetry.poisoned)  # tests/unit/test_telemetry.py checks the line
    assert "ended_fields" in inspect.getsource(planner)
    from shared.mailchimp.errors import RENEW
    assert "the Mailchimp connection must be renewed" in RENEW


def test_the_workbook_is_deployed_over_the_workspace() -> None:
    main = infra_doc("main.bicep")
    assert main["modules"]["workbook"]["detail"]["path"] == "app/workbook.bicep"
    workbook_doc = infra_doc("app/workbook.bicep")
    [workbook] = [r for r in workbook_doc["resources"].values() if r["type"] == "Microsoft.Insights/workbooks"]
    body = workbook["config"]
    assert body["kind"] == "shared"
    assert _accessor(body["properties"]["sourceId"]) == ("workspace", "id")
    serialized = body["properties"]["serializedData"]["function"]
    assert serialized["type"] == "replace"
    assert serialized["parameters"]["original_string"]["function"]["parameters"]["file_path"] == "workbook.json"
    data = json.loads((INFRA / "app" / "workbook.json").read_text(encoding="utf-8"))
    assert data["version"] == "Notebook/1.0"
    queries = workbook_queries("app/workbook.json")
    assert any("Properties.runStatus" in q and "bin(TimeGenerated" in q for q in queries.values()), "runs over time"
    assert any("export.profiles_per_second" in q and "Destination = tostring(Properties.destinationId)" in q
               for q in queries.values()), "throughput per destination"
    assert any("export.members" in q and "outcome" in q for q in queries.values()), "members by outcome"
    errors = [q for q in queries.values() if "membersFailed" in q]
    assert errors and all(k in errors[0] for k in ("membersRefused", "membersInvalid", "destinationId")), "errors"
    assert "ResultCode == '404'" in errors[0], "a member lookup's 404 (not in the audience) is no Mailchimp error"
    # a workbook reads {name} in a query as a parameter: only the one it defines may appear
    assert all(set(re.findall(r"\{([^}]*)\}", q)) <= {"TimeRange:grain"} for q in queries.values())
    assert any("-poison" in q for q in queries.values()), "poison messages"


@pytest.mark.parametrize("rel", ["app/alerts.bicep", "app/workbook.bicep"])
def test_checkov_sees_the_new_files(rel: str) -> None:
    """scripts/check_infra.sh scans every .bicep file under infra/; these parse (pycep is checkov's parser)."""
    assert infra_doc(rel)["resources"]
