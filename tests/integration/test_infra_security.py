"""The deployment's security promises, read from infra/ with pycep-parser (as test_infra_links.py does):

- Key Vault's audit events and each storage service's reads, writes and deletes go to the Log Analytics workspace;
- container soft delete is on in both storage accounts; the account that receives segment files (Customer Insights
  writes there, Event Grid watches it) has blob soft delete off, because Customer Insights' exports to Blob Storage
  fail while it is on, and the app's account (work containers, queues, tables) has it on, a parameter of 7 days;
- with `vnetEnabled`, both storage firewalls deny every network and Key Vault refuses public network access; the app
  reaches them over private endpoints (blob, queue, table of its account, blob of the segments account, vault) from a
  VNet it is integrated into (subnet delegated to Microsoft.App/environments), Event Grid still delivers segment
  events into the app account's queue as a trusted Azure service with its system-assigned identity, and Customer
  Insights' enterprise policy may get a resource instance rule on the segments account;
- every role assignment of the deployment is listed in docs/deploy.md; none grants ownership; the app only reads the
  segments container of the segments account, reads and deletes the drop files of its erasures container, and writes
  only its own containers in its own account; Customer Insights' roles are on those two containers only;
- every checkov skip says why, and the network lock-down checks are skipped for the default deployment only (
  scripts/check_infra.sh runs them on a copy specialised to vnetEnabled = true);
- every HTTP route but the OAuth callback needs a function key (read from function_app.py's source, so that this
  holds whatever else the app does at import).

Expressions are evaluated only as far as these promises need: parameters (given, else their default) and variables,
conditions, comparisons, `${x}` interpolations of a single name, `empty()`, `tenant()`. Anything else (a parameter
without a default that is not given included) makes the evaluation fail loudly rather than guess.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bicep import infra_doc

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

STORAGE_LOG_CATEGORIES = {"StorageRead", "StorageWrite", "StorageDelete"}
TENANT = "<tenant().tenantId>"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
SEGMENTS = "segments"  # storage.bicep's segmentsContainerName; test_infra.py checks the app reads the same
WORKSPACE = "Microsoft.OperationalInsights/workspaces"


# ------------------------------------------------------------------------------------------------------- reading


def _unwrap(config: Any) -> tuple[dict[str, Any], Any, Any]:
    """(body, condition, loop) of a module or resource: pycep wraps `if (...)` and `[for ...]` bodies."""
    condition = loop = None
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        condition = config.get("condition") if config.get("condition") is not None else condition
        loop = config.get("loop_type") or loop
        config = config["config"]
    return config, condition, loop


def _resources(rel: str) -> dict[str, dict[str, Any]]:
    return infra_doc(rel).get("resources") or {}


def _body(rel: str, symbol: str) -> dict[str, Any]:
    return _unwrap(_resources(rel)[symbol]["config"])[0]


def _module(symbol: str) -> tuple[str, dict[str, Any], Any]:
    """(path, params, condition) of a module main.bicep calls."""
    module = infra_doc("main.bicep")["modules"][symbol]
    body, condition, _ = _unwrap(module["config"])
    return module["detail"]["path"], body.get("params") or {}, condition


def _accessor(node: Any) -> list[Any] | None:
    """`a.b.c` as ['a', 'b', 'c'] (pycep nests property accessors to the right), else None."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict) and isinstance(node.get("operator"), dict):
        op = node["operator"]
        if op.get("type") == "property_accessor":
            head, rest = op["operands"]["operand_1"], _accessor(op["operands"]["operand_2"])
            if isinstance(head, str) and rest is not None:
                return [head, *rest]
    return None


def _output_ref(node: Any) -> tuple[str, str] | None:
    """(module, output) of `<module>.outputs.<output>`."""
    chain = _accessor(node)
    if chain and len(chain) == 3 and chain[1] == "outputs":
        return chain[0], chain[2]
    return None


class Unsupported(Exception):
    pass


def evaluate(node: Any, rel: str, params: dict[str, Any]) -> Any:
    """The value of a pycep expression of file `rel`, given its parameters. Bare strings are names when the file
    declares them (parameters, variables), literals otherwise."""
    variables = infra_doc(rel).get("variables") or {}
    declared = infra_doc(rel).get("parameters") or {}
    if node is None or isinstance(node, (bool, int, float)):
        return node
    if isinstance(node, str):
        single = re.fullmatch(r"\$\{\s*(\w+)\s*\}", node)
        name = single.group(1) if single else node
        if name in params:
            return params[name]
        if name in variables:
            return evaluate(variables[name]["value"], rel, params)
        if name in declared:
            if declared[name].get("default") is None:
                raise Unsupported(f"{rel}: parameter {name} has no default and was not given")
            return evaluate(declared[name]["default"], rel, params)
        if single or "${" in node:
            raise Unsupported(f"{rel}: cannot evaluate {node!r}")
        return node
    if isinstance(node, list):
        return [evaluate(item, rel, params) for item in node]
    if isinstance(node, dict) and isinstance(node.get("operator"), dict):
        op = node["operator"]
        operands = op["operands"]
        if op["type"] == "conditional":
            branch = "true_value" if evaluate(operands["condition"], rel, params) else "false_value"
            return evaluate(operands[branch], rel, params)
        comparisons = {"greater_than": lambda a, b: a > b, "greater_than_or_equals": lambda a, b: a >= b,
                       "equals": lambda a, b: a == b, "not_equals": lambda a, b: a != b}
        if op["type"] in comparisons:
            return comparisons[op["type"]](evaluate(operands["operand_1"], rel, params),
                                           evaluate(operands["operand_2"], rel, params))
        if op["type"] == "not":
            return not evaluate(operands["bool_value"], rel, params)
        raise Unsupported(f"{rel}: cannot evaluate operator {op['type']}")
    if isinstance(node, dict) and isinstance(node.get("function"), dict):
        function = node["function"]
        if function.get("type") == "empty":
            return not evaluate(function["parameters"]["item_to_test"], rel, params)
        if function.get("type") == "tenant" and "tenantId" in str(function.get("property_name")):
            return TENANT
        raise Unsupported(f"{rel}: cannot evaluate function {function.get('type')}")
    if isinstance(node, dict):
        return {key: evaluate(value, rel, params) for key, value in node.items()}
    raise Unsupported(f"{rel}: cannot evaluate {node!r}")


def _param(rel: str, name: str) -> dict[str, Any]:
    return infra_doc(rel)["parameters"][name]


def _decorator(param: dict[str, Any], kind: str) -> Any:
    return next((d.get("argument") for d in param.get("decorators") or [] if d.get("type") == kind), None)


def _azd_parameters() -> dict[str, Any]:
    return json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]


# ------------------------------------------------------------------------------------------- diagnostic settings


def _diagnostic_settings() -> list[dict[str, Any]]:
    """Every diagnostic setting under infra/: file, symbol, the type of the resource it is on, its logs and metrics
    (variables resolved) and the type of the resource its workspaceId points at."""
    found = []
    for path in sorted(INFRA.rglob("*.bicep")):
        rel = path.relative_to(INFRA).as_posix()
        resources = _resources(rel)
        for symbol, resource in resources.items():
            if str(resource.get("type")).lower() != "microsoft.insights/diagnosticsettings":
                continue
            body, condition, _ = _unwrap(resource["config"])
            scope = body.get("scope")
            properties = body.get("properties") or {}
            workspace = _accessor(properties.get("workspaceId"))
            found.append({
                "file": rel,
                "symbol": symbol,
                "conditional": condition is not None,
                "on": resources[scope]["type"] if isinstance(scope, str) and scope in resources else None,
                "on_symbol": scope,
                "logs": evaluate(properties.get("logs") or [], rel, {}),
                "metrics": evaluate(properties.get("metrics") or [], rel, {}),
                "workspace": resources[workspace[0]]["type"]
                if workspace and len(workspace) == 2 and workspace[1] == "id" and workspace[0] in resources else None,
            })
    return found


def _settings_on(resource_type: str) -> list[dict[str, Any]]:
    return [s for s in _diagnostic_settings() if str(s["on"]).lower() == resource_type.lower()]


def test_key_vault_audit_events_go_to_the_log_analytics_workspace() -> None:
    settings = _settings_on("Microsoft.KeyVault/vaults")
    assert settings, "no diagnostic setting on the Key Vault"
    for setting in settings:
        assert setting["workspace"] == WORKSPACE, setting
        assert not setting["conditional"], "the vault's audit trail must not depend on a parameter"
        audited = {log.get("categoryGroup") or log.get("category") for log in setting["logs"] if log.get("enabled")}
        assert audited & {"audit", "allLogs", "AuditEvent"}, f"{setting['file']}: vault logs {audited} miss audit events"


@pytest.mark.parametrize("service", ["blobServices", "queueServices", "tableServices"])
def test_storage_reads_writes_and_deletes_of_each_service_go_to_the_workspace(service: str) -> None:
    settings = _settings_on(f"Microsoft.Storage/storageAccounts/{service}")
    assert settings, f"no diagnostic setting on the storage account's {service}"
    for setting in settings:
        assert setting["workspace"] == WORKSPACE, setting
        assert not setting["conditional"]
        logged = {log["category"] for log in setting["logs"] if log.get("enabled")}
        assert STORAGE_LOG_CATEGORIES <= logged, f"{service}: logs {logged}"
        assert {m["category"] for m in setting["metrics"] if m.get("enabled")} >= {"Transaction"}
    account = _settings_on("Microsoft.Storage/storageAccounts")
    assert account and all(s["workspace"] == WORKSPACE for s in account), "the account's transaction metrics"


def test_diagnostics_are_wired_to_the_resources_main_creates() -> None:
    """The diagnostic settings sit on `existing` resources named by module parameters: main.bicep must pass the names
    of the vault, the account and the workspace that the other modules create, and always call the module."""
    files = {s["file"] for s in _diagnostic_settings()}
    assert files == {"app/diagnostics.bicep"}, files
    path, params, condition = _module("diagnostics")
    assert path == "app/diagnostics.bicep" and condition is None
    assert _output_ref(params["keyVaultName"]) == ("keyVault", "name")
    assert _output_ref(params["storageAccountName"]) == ("storage", "name")
    assert _output_ref(params["segmentsStorageAccountName"]) == ("segmentsStorage", "name")
    assert _output_ref(params["logAnalyticsName"]) == ("monitoring", "logAnalyticsName")
    assert _output_ref(params["eventGridTopicName"]) == ("events", "name")
    monitoring = infra_doc("app/monitoring.bicep")
    workspace = _accessor(monitoring["outputs"]["logAnalyticsName"]["value"])
    assert workspace and monitoring["resources"][workspace[0]]["type"] == WORKSPACE
    assert not monitoring["resources"][workspace[0]]["existing"]
    for symbol, name_param in (("vault", "keyVaultName"), ("storageAccount", "storageAccountName"),
                               ("segmentsAccount", "segmentsStorageAccountName"), ("workspace", "logAnalyticsName")):
        resource = _resources("app/diagnostics.bicep")[symbol]
        assert resource["existing"] and _unwrap(resource["config"])[0]["name"] == name_param
    # every blob service and every account of the deployment has its setting (the segments account's blob service too)
    on = {(s["on"], s["on_symbol"]) for s in _diagnostic_settings()}
    for account in ("storageAccount", "segmentsAccount"):
        assert ("Microsoft.Storage/storageAccounts", account) in on, account
    assert ("Microsoft.Storage/storageAccounts/blobServices", "segmentsBlobService") in on
    segments_blob = _resources("app/diagnostics.bicep")["segmentsBlobService"]
    assert _unwrap(segments_blob["config"])[0]["parent"] == "segmentsAccount"


# ----------------------------------------------------------------------------------------------------- soft delete


APP_STORAGE, SEGMENTS_STORAGE = "app/storage.bicep", "app/segments-storage.bicep"


def _blob_service(params: dict[str, Any], rel: str = APP_STORAGE) -> dict[str, Any]:
    return evaluate(_body(rel, "blobService")["properties"], rel, params)


def test_deleted_containers_stay_recoverable() -> None:
    for days in (1, 7, 365):
        for rel in (APP_STORAGE, SEGMENTS_STORAGE):
            policy = _blob_service({"blobSoftDeleteDays": 7, "containerSoftDeleteDays": days}, rel)
            assert policy["containerDeleteRetentionPolicy"] == {"enabled": True, "days": days}, rel
    main = _param("main.bicep", "containerSoftDeleteDays")
    assert main["default"] == 7
    assert (_decorator(main, "min_value"), _decorator(main, "max_value")) == (1, 365)
    for module in ("storage", "segmentsStorage"):
        assert _module(module)[1]["containerSoftDeleteDays"] == "containerSoftDeleteDays", module
    assert _azd_parameters()["containerSoftDeleteDays"]["value"] == "${CONTAINER_SOFT_DELETE_DAYS=7}"


def test_blob_soft_delete_is_a_parameter_off_by_default_for_customer_insights() -> None:
    """(The name is older than the segments account; docs/threat-model.md cites it.) Blob soft delete is a setting of an account's blob service (learn.microsoft.com/azure/storage/blobs/
    soft-delete-blob-overview) and Customer Insights' exports to Blob Storage fail while it is on
    (learn.microsoft.com/dynamics365/customer-insights/data/export-azure-blob-storage). So the segments account has
    it off whatever the parameters say, and the app's account, which holds the work containers, has it on: 7 days by
    default, 1-365, never 0."""
    for days in (1, 7, 365):
        assert _blob_service({"blobSoftDeleteDays": days, "containerSoftDeleteDays": 7})["deleteRetentionPolicy"] == {
            "enabled": True, "days": days}
        segments = _blob_service({"blobSoftDeleteDays": days, "containerSoftDeleteDays": 7}, SEGMENTS_STORAGE)
        assert segments["deleteRetentionPolicy"] == {"enabled": False}
    assert "blobSoftDeleteDays" not in (infra_doc(SEGMENTS_STORAGE).get("parameters") or {}), "not a choice there"
    main = _param("main.bicep", "blobSoftDeleteDays")
    assert main["default"] == 7
    assert (_decorator(main, "min_value"), _decorator(main, "max_value")) == (1, 365)
    assert "Customer Insights" in _decorator(main, "description"), "say why the segments account has none"
    assert _module("storage")[1]["blobSoftDeleteDays"] == "blobSoftDeleteDays"
    assert "blobSoftDeleteDays" not in _module("segmentsStorage")[1]
    assert _azd_parameters()["blobSoftDeleteDays"]["value"] == "${BLOB_SOFT_DELETE_DAYS=7}"


def _module_defaults(rel: str) -> dict[str, Any]:
    """The parameters main.bicep passes to module file `rel` when every main parameter keeps its default (what `azd up`
    deploys with no settings); those fed by expressions that need a deployment (names, module outputs) are left out."""
    main = {name: evaluate(param["default"], "main.bicep", {})
            for name, param in infra_doc("main.bicep")["parameters"].items() if param.get("default") is not None}
    for symbol in infra_doc("main.bicep")["modules"]:
        path, params, _ = _module(symbol)
        if path == rel:
            given = {}
            for name, value in params.items():
                try:
                    given[name] = evaluate(value, "main.bicep", main)
                except Unsupported:
                    pass
            return given
    return {}


def _names(values: list[Any], rel: str) -> list[str]:
    """Names in a Bicep list, with a parameter (unknown until deployed) shown as '<parameter>'."""
    names = []
    for value in values:
        try:
            names.append(evaluate(value, rel, {}))
        except Unsupported:
            names.append(f"<{value}>")
    return names


def _storage_accounts() -> list[dict[str, Any]]:
    """Every storage account infra/ creates: file, symbol, the containers of its blob service and the blob service's
    properties as deployed by default."""
    found = []
    for path in sorted(INFRA.rglob("*.bicep")):
        rel = path.relative_to(INFRA).as_posix()
        resources = _resources(rel)
        for symbol, account in resources.items():
            if account["type"] != "Microsoft.Storage/storageAccounts" or account["existing"]:
                continue
            services = [s for s, r in resources.items() if r["type"] == "Microsoft.Storage/storageAccounts/blobServices"
                        and _unwrap(r["config"])[0].get("parent") == symbol]
            containers = []
            for r in resources.values():
                body, _, loop = _unwrap(r["config"])
                if r["type"] == CONTAINER and not r["existing"] and body.get("parent") in services:
                    listed = infra_doc(rel)["variables"][loop["detail"]["array_name"]]["value"] if loop else [body["name"]]
                    containers += _names(listed, rel)
            defaults = _module_defaults(rel)
            found.append({"file": rel, "symbol": symbol, "containers": containers,
                          "blob_service": [evaluate(_unwrap(resources[s]["config"])[0].get("properties") or {}, rel,
                                                    defaults) for s in services]})
    return found


def _module_of(rel: str) -> str:
    """The symbol of the module main.bicep calls file `rel` with (exactly one)."""
    symbols = [symbol for symbol in infra_doc("main.bicep")["modules"] if _module(symbol)[0] == rel]
    assert len(symbols) == 1, (rel, symbols)
    return symbols[0]


def test_the_account_receiving_segment_files_keeps_blob_soft_delete_off() -> None:
    """Customer Insights' exports fail when the account they write to has blob soft delete on ("If you turned on the
    soft delete setting for the Azure Blob Storage account, exports will fail": learn.microsoft.com/dynamics365/
    customer-insights/data/export-azure-blob-storage). The account holding the segments container, the one Event Grid
    watches and the app reads segments from (SEGMENTS_BLOB_URI), has it off as deployed; the account holding the
    app's work containers (AzureWebJobsStorage) is another one, with blob and container soft delete on."""
    from shared.config import CONTAINER_SLOTS, CONTAINER_WORK

    accounts = _storage_accounts()
    receiving = [a for a in accounts if SEGMENTS in a["containers"]]
    assert len(receiving) == 1, accounts
    account = receiving[0]
    assert account["blob_service"] and all(s["deleteRetentionPolicy"] == {"enabled": False}
                                           for s in account["blob_service"]), account
    module = _module_of(account["file"])
    assert _accessor(infra_doc(account["file"])["outputs"]["name"]["value"]) == [account["symbol"], "name"]
    events = _module("events")[1]
    assert _output_ref(events["segmentsStorageAccountName"]) == (module, "name"), "Event Grid watches this account"
    assert _output_ref(_module("functionApp")[1]["segmentsStorageAccountName"]) == (module, "name")

    work = [a for a in accounts if {CONTAINER_WORK, CONTAINER_SLOTS} <= set(a["containers"])]
    assert len(work) == 1 and work[0] is not account, "the work containers live in an account of their own"
    assert SEGMENTS not in work[0]["containers"]
    assert work[0]["blob_service"]
    for service in work[0]["blob_service"]:
        assert service["deleteRetentionPolicy"].get("enabled") is True, work[0]
        assert service["deleteRetentionPolicy"].get("days", 0) >= 1, work[0]
        assert service["containerDeleteRetentionPolicy"].get("enabled") is True, work[0]
    work_module = _module_of(work[0]["file"])
    assert _output_ref(_module("functionApp")[1]["storageAccountName"]) == (work_module, "name"), (
        "AzureWebJobsStorage is the work account")
    assert _output_ref(events["storageAccountName"]) == (work_module, "name"), "the segment-events queue is there"


def test_run_files_naming_people_are_deleted_after_the_personal_retention_period() -> None:
    """Per-row reports, previews and kept chunk files (under export-work/runs/) name people: a lifecycle rule deletes
    them RETENTION_PERSONAL_DAYS (30 by default) after their last change, and the app setting of that name, which the
    daily retention sweep and the run records' staff names go by, carries the same parameter. Run records are in a
    table, where no lifecycle rule reaches: RETENTION_RUN_DAYS is the app's alone."""
    from shared.config import CONTAINER_WORK, load_settings

    storage = "app/storage.bicep"
    for days in (1, 30, 3650):
        rules = {rule["definition"]["filters"]["prefixMatch"][0]: rule for rule in evaluate(
            _body(storage, "retention")["properties"]["policy"]["rules"], storage, {"retentionPersonalDays": days})}
        for prefix in ("runs/", "mirrors/"):  # run files, and the audience mirrors (shared/audience_mirror.py)
            rule = rules[f"{CONTAINER_WORK}/{prefix}"]
            assert rule["enabled"] and rule["definition"]["actions"]["baseBlob"]["delete"] == {
                "daysAfterModificationGreaterThan": days}
    app_settings = infra_doc("app/function.bicep")["variables"]["appSettings"]["value"]
    defaults = load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    for name, param, default in (("RETENTION_PERSONAL_DAYS", "retentionPersonalDays", defaults.retention_personal_days),
                                 ("RETENTION_RUN_DAYS", "retentionRunDays", defaults.retention_run_days)):
        assert app_settings[name] == {"function": {"type": "string", "parameters": {"value_to_convert": param}}}
        main = _param("main.bicep", param)
        assert main["default"] == default, f"{param}: the same default as the app's {name}"
        assert (_decorator(main, "min_value"), _decorator(main, "max_value")) == (1, 3650)
        assert _module("functionApp")[1][param] == param
        assert _azd_parameters()[param]["value"] == f"${{{name}={default}}}"
    assert _module("storage")[1]["retentionPersonalDays"] == "retentionPersonalDays", "the rule and the app agree"


# ------------------------------------------------------------------------------------------------------ vnetEnabled


def test_vnet_enabled_is_an_azd_setting_off_by_default() -> None:
    param = _param("main.bicep", "vnetEnabled")
    assert param["type"] == "bool" and param["default"] is False
    assert _azd_parameters()["vnetEnabled"]["value"] == "${VNET_ENABLED=false}"
    for module in ("storage", "keyVault"):
        assert _module(module)[1]["vnetEnabled"] == "vnetEnabled", module


def _network(rel: str, symbol: str, **params: Any) -> dict[str, Any]:
    properties = _body(rel, symbol)["properties"]
    return evaluate({key: properties[key] for key in ("publicNetworkAccess", "networkAcls")}, rel, params)


def test_with_vnet_enabled_storage_and_vault_refuse_public_network_access() -> None:
    """With vnetEnabled both storage firewalls let no network in (no IP or VNet rule; only trusted Azure services pass,
    see the Event Grid test below) and Key Vault has public network access off."""
    for rel in (APP_STORAGE, SEGMENTS_STORAGE):
        storage = _network(rel, "account", vnetEnabled=True)["networkAcls"]
        assert storage["defaultAction"] == "Deny", rel
        assert storage["ipRules"] == [] and storage["virtualNetworkRules"] == [] and storage["resourceAccessRules"] == []
        assert storage["bypass"] == "AzureServices"
        # today's default: see docs/threat-model.md
        assert _network(rel, "account", vnetEnabled=False)["networkAcls"]["defaultAction"] == "Allow"
    for module in ("storage", "segmentsStorage", "keyVault"):
        assert _module(module)[1]["vnetEnabled"] == "vnetEnabled", module
    vault = _network("app/keyvault.bicep", "vault", vnetEnabled=True)
    assert vault["publicNetworkAccess"] == "Disabled" and vault["networkAcls"]["defaultAction"] == "Deny"
    assert _network("app/keyvault.bicep", "vault", vnetEnabled=False)["publicNetworkAccess"] == "Enabled"


def test_event_grid_delivers_segment_events_through_the_storage_firewall() -> None:
    """Event Grid cannot deliver over private endpoints (learn.microsoft.com/azure/event-grid/consume-private-endpoints).
    Behind a storage firewall it delivers into a queue only with the system topic's system-assigned identity, and only
    while trusted Azure services may pass (learn.microsoft.com/azure/event-grid/handler-storage-queues). Public network
    access Disabled admits private endpoints only (learn.microsoft.com/azure/storage/common/
    storage-network-security-set-default-access), so the account keeps it Enabled, behind a default-deny firewall."""
    for vnet in (True, False):
        network = _network(APP_STORAGE, "account", vnetEnabled=vnet)
        assert network["publicNetworkAccess"] == "Enabled", "Disabled would shut Event Grid out of segment-events"
        assert "AzureServices" in network["networkAcls"]["bypass"], "Event Grid passes as a trusted Azure service"
    rel = "app/events.bicep"
    resources = _resources(rel)
    for symbol, name_param, module in (("storageAccount", "storageAccountName", "storage"),
                                       ("segmentsAccount", "segmentsStorageAccountName", "segmentsStorage")):
        assert resources[symbol]["existing"]
        assert _unwrap(resources[symbol]["config"])[0]["name"] == name_param
        assert _output_ref(_module("events")[1][name_param]) == (module, "name")
    topic = _body(rel, "topic")
    assert topic["identity"] == {"type": "SystemAssigned"}
    assert _accessor(topic["properties"]["source"]) == ["segmentsAccount", "id"], "segment files land there"
    subscription = _body(rel, "segmentCreated")["properties"]
    assert "destination" not in subscription, "delivery without the topic's identity cannot pass the firewall"
    delivery = subscription["deliveryWithResourceIdentity"]
    assert delivery["identity"] == {"type": "SystemAssigned"}, "a user-assigned identity cannot pass a storage firewall"
    destination = delivery["destination"]
    assert destination["endpointType"] == "StorageQueue"
    assert _accessor(destination["properties"]["resourceId"]) == ["storageAccount", "id"]
    assert destination["properties"]["queueName"] == "queueName"
    sender = _body(rel, "queueSender")
    assert sender["scope"] == "queue" and resources["queue"]["type"] == QUEUE
    assert _accessor(sender["properties"]["principalId"]) == ["topic", "identity", "principalId"]
    assert _role_name(sender["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]) == (
        "Storage Queue Data Message Sender")


def test_customer_insights_enterprise_policy_may_pass_the_storage_firewall() -> None:
    """Customer Insights reaches storage behind a firewall with the managed identity of a Power Platform enterprise
    policy, let in by a resource instance rule (learn.microsoft.com/dynamics365/customer-insights/data/
    managed-identities). A rule added by hand would be dropped by the next `azd provision`, so the template adds it."""
    policy = "/subscriptions/s/resourceGroups/g/providers/Microsoft.PowerPlatform/enterprisePolicies/ci"
    acls = _network(SEGMENTS_STORAGE, "account", vnetEnabled=True, customerInsightsEnterprisePolicyId=policy)
    assert acls["networkAcls"]["resourceAccessRules"] == [{"tenantId": TENANT, "resourceId": policy}]
    assert acls["networkAcls"]["defaultAction"] == "Deny"
    # the app's account: no segments, so no way in for Customer Insights
    assert _network(APP_STORAGE, "account", vnetEnabled=True)["networkAcls"]["resourceAccessRules"] == []
    assert "customerInsightsEnterprisePolicyId" not in _module("storage")[1]
    main = _param("main.bicep", "customerInsightsEnterprisePolicyId")
    assert main["type"] == "string" and main["default"] == ""
    assert _module("segmentsStorage")[1]["customerInsightsEnterprisePolicyId"] == "customerInsightsEnterprisePolicyId"
    assert _azd_parameters()["customerInsightsEnterprisePolicyId"]["value"] == "${CUSTOMER_INSIGHTS_ENTERPRISE_POLICY_ID}"


def test_with_vnet_enabled_private_endpoints_exist_for_blob_queue_table_and_vault() -> None:
    """The app's account: blob, queue, table; the segments account: blob (the app reads segment files there); the
    vault. Each zone once (both accounts' blob endpoints register in the one privatelink.blob zone)."""
    rel = "app/private-endpoints.bicep"
    path, params, condition = _module("privateEndpoints")
    assert path == rel and condition == "vnetEnabled"
    assert _output_ref(params["storageAccountName"]) == ("storage", "name")
    assert _output_ref(params["segmentsStorageAccountName"]) == ("segmentsStorage", "name")
    assert _output_ref(params["keyVaultName"]) == ("keyVault", "name")
    assert params["subnetId"]["operator"]["operands"]["condition"] == "vnetEnabled"
    subnet = params["subnetId"]["operator"]["operands"]["true_value"]
    assert _output_ref(subnet) == ("vnet", "privateEndpointsSubnetId")

    resources = _resources(rel)
    for symbol, name_param in (("storageAccount", "storageAccountName"), ("segmentsAccount", "segmentsStorageAccountName")):
        assert resources[symbol]["existing"] and _unwrap(resources[symbol]["config"])[0]["name"] == name_param
    zones = infra_doc(rel)["variables"]["zoneNames"]["value"]
    assert len(zones) == len(set(map(str, zones))), "a private DNS zone is declared twice"
    found = set()
    for endpoint in infra_doc(rel)["variables"]["endpoints"]["value"]:
        group, target = endpoint["groupId"], _accessor(endpoint["target"])
        assert target and target[1] == "id", endpoint
        found.add((target[0], group))
        zone = zones[endpoint["zone"]]
        assert zone.startswith("privatelink.vaultcore" if group == "vault" else f"privatelink.{group}."), zone
        assert _accessor(endpoint["targetName"]) == [target[0], "name"]
    assert found == {("storageAccount", "blob"), ("storageAccount", "queue"), ("storageAccount", "table"),
                     ("segmentsAccount", "blob"), ("vault", "vault")}
    assert resources["vault"]["type"] == "Microsoft.KeyVault/vaults"

    # one endpoint and one zone group per entry, one DNS zone and one VNet link per zone, on the subnet and VNet passed in
    for symbol, kind, array in (("privateEndpoints", "Microsoft.Network/privateEndpoints", "endpoints"),
                                ("zones", "Microsoft.Network/privateDnsZones", "zoneNames"),
                                ("zoneLinks", "Microsoft.Network/privateDnsZones/virtualNetworkLinks", "zoneNames"),
                                ("zoneGroups", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups", "endpoints")):
        assert resources[symbol]["type"] == kind
        _, condition, loop = _unwrap(resources[symbol]["config"])
        assert condition is None and loop["detail"]["array_name"] == array, symbol
    endpoint = _body(rel, "privateEndpoints")["properties"]
    assert endpoint["subnet"] == {"id": "subnetId"}
    connection = endpoint["privateLinkServiceConnections"][0]["properties"]
    assert _accessor(connection["privateLinkServiceId"]) == ["endpoint", "target"]
    assert [_accessor(g) for g in connection["groupIds"]] == [["endpoint", "groupId"]]
    assert _accessor(_body(rel, "zoneLinks")["properties"]["virtualNetwork"]["id"]) == ["vnet", "id"]


def test_with_vnet_enabled_the_app_is_integrated_into_a_subnet_delegated_to_container_apps() -> None:
    """Flex Consumption's VNet integration: `virtualNetworkSubnetId` on the site, the subnet delegated to
    Microsoft.App/environments (Azure-Samples' functions-quickstart-python-http-azd, infra/app/vnet.bicep)."""
    path, _, condition = _module("vnet")
    assert path == "app/vnet.bicep" and condition == "vnetEnabled"
    subnet_param = _module("functionApp")[1]["virtualNetworkSubnetId"]
    assert evaluate(subnet_param, "main.bicep", {"vnetEnabled": False}) == ""
    assert _output_ref(subnet_param["operator"]["operands"]["true_value"]) == ("vnet", "appSubnetId")

    site = _body("app/function.bicep", "functionApp")["properties"]
    subnet_id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/app"
    assert evaluate(site["virtualNetworkSubnetId"], "app/function.bicep", {"virtualNetworkSubnetId": subnet_id}) == subnet_id
    assert evaluate(site["virtualNetworkSubnetId"], "app/function.bicep", {"virtualNetworkSubnetId": ""}) is None

    vnet = infra_doc("app/vnet.bicep")
    subnets = {s["name"]: s["properties"] for s in _body("app/vnet.bicep", "vnet")["properties"]["subnets"]}
    names = {name: evaluate(name, "app/vnet.bicep", {}) for name in subnets}
    by_name = {names[key]: value for key, value in subnets.items()}
    app_output = vnet["outputs"]["appSubnetId"]["value"]["function"]["parameters"]
    app_subnet = by_name[evaluate(app_output["resource_name_2"], "app/vnet.bicep", {})]
    assert [d["properties"]["serviceName"] for d in app_subnet["delegations"]] == ["Microsoft.App/environments"]
    pe_output = vnet["outputs"]["privateEndpointsSubnetId"]["value"]["function"]["parameters"]
    pe_subnet = by_name[evaluate(pe_output["resource_name_2"], "app/vnet.bicep", {})]
    assert not pe_subnet.get("delegations"), "private endpoints cannot live in a delegated subnet"


# ---------------------------------------------------------------------------------------------- role assignments


def _role_name(var: str) -> str:
    """Built-in role name of a role `var`, by the convention test_infra.py checks against each GUID
    (storageBlobDataOwner -> Storage Blob Data Owner)."""
    return re.sub(r"(?<!^)([A-Z])", r" \1", var[0].upper() + var[1:])


def _role_assignments() -> list[dict[str, Any]]:
    """Every role assignment under infra/, one entry per role it grants (a loop over role vars grants several): file,
    symbol, role, the symbol, index (`containers[0]`) and type of its scope, and the array it is repeated over when
    that is not roles."""
    found = []
    for path in sorted(INFRA.rglob("*.bicep")):
        rel = path.relative_to(INFRA).as_posix()
        resources = _resources(rel)
        for symbol, resource in resources.items():
            if str(resource.get("type")) != "Microsoft.Authorization/roleAssignments":
                continue
            body, _, loop = _unwrap(resource["config"])
            role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
            over_roles = bool(loop) and role == loop["detail"]["item_name"]
            roles = infra_doc(rel)["variables"][loop["detail"]["array_name"]]["value"] if over_roles else [role]
            scope, index = body["scope"], None
            if isinstance(scope, dict):  # containers[0], appContainers[i]
                scope, index = scope["operator"]["operands"]["operand_1"], scope["operator"]["operands"]["operand_2"]
            for var in roles:
                found.append({"file": rel, "symbol": symbol, "role": _role_name(var), "scope": scope, "index": index,
                              "scope_type": resources[scope]["type"],
                              "over": loop["detail"]["array_name"] if loop and not over_roles else None})
    return found


def _resolve(rel: str, value: Any) -> Any:
    """A module parameter's value as main.bicep passes it when that is another module's output: the output's own
    expression, with the names in it (parameters shown as '<parameter>'); else `value` itself."""
    for symbol in infra_doc("main.bicep")["modules"]:
        path, params, _ = _module(symbol)
        if path == rel and isinstance(value, str) and value in params:
            ref = _output_ref(params[value])
            if ref:
                source = _module(ref[0])[0]
                output = infra_doc(source)["outputs"][ref[1]]["value"]
                if isinstance(output, str) and output in (infra_doc(source).get("variables") or {}):
                    output = infra_doc(source)["variables"][output]["value"]
                return _names(output if isinstance(output, list) else [output], source)
    return value


def _containers_of(assignment: dict[str, Any]) -> list[str]:
    """The containers a container-scoped role assignment covers."""
    rel = assignment["file"]
    resource = _resources(rel)[assignment["scope"]]
    body, _, loop = _unwrap(resource["config"])
    if not resource["existing"] and loop:  # containers[<n>] of the containers the file creates in a loop
        return _names([infra_doc(rel)["variables"][loop["detail"]["array_name"]]["value"][assignment["index"]]], rel)
    if not resource["existing"]:  # the one container the file creates under this symbol
        return _names([body["name"]], rel)
    if loop:  # existing containers, one per name of an array parameter
        return _resolve(rel, loop["detail"]["array_name"])
    return _resolve(rel, body["name"])


def _documented_roles() -> list[dict[str, str]]:
    """The rows of the role table in docs/deploy.md (header: Role | Scope | Held by | Granted by | Why)."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    header = re.search(r"^\| Role \| Scope \| Held by \| Granted by \| Why \|$", text, re.M)
    assert header, "docs/deploy.md has no role table"
    rows = []
    for line in text[header.end():].strip().splitlines()[1:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(dict(zip(("role", "scope", "holder", "granted", "why"), cells)))
    return rows


def _account_module(rel: str, symbol: str) -> str:
    """The module of main.bicep that creates the storage account resource `symbol` of file `rel` is, or is under (a
    container, a queue): followed up its parents to the account, then, for an `existing` account, through the module
    parameter naming it to the module output main.bicep passes there."""
    resources = _resources(rel)
    while resources[symbol]["type"] != "Microsoft.Storage/storageAccounts":
        symbol = _unwrap(resources[symbol]["config"])[0]["parent"]
    module = _module_of(rel)
    if not resources[symbol]["existing"]:
        return module
    ref = _output_ref(_module(module)[1][_unwrap(resources[symbol]["config"])[0]["name"]])
    assert ref and ref[1] == "name", (rel, symbol, ref)
    return ref[0]


# How docs/deploy.md names the two storage accounts: by the module of main.bicep that creates each.
ACCOUNT_WORDS = {"storage": "the app's storage account", "segmentsStorage": "the segments account"}
SCOPE_WORDS = {
    "Microsoft.Storage/storageAccounts": [],
    "Microsoft.KeyVault/vaults": ["Key Vault"],
    "Microsoft.Insights/components": ["Application Insights"],
}


def _scope_words(assignment: dict[str, Any]) -> list[str]:
    """What docs/deploy.md's Scope cell must say for this assignment: each container by name (the deployment package
    container, named by a parameter, as "deployment"), and for storage which of the two accounts."""
    if assignment["scope_type"] == CONTAINER:
        words = [f"`{name}`" if not name.startswith("<") else "deployment" for name in _containers_of(assignment)]
    elif assignment["scope_type"] == QUEUE:  # an existing queue, named by a module parameter
        name = _unwrap(_resources(assignment["file"])[assignment["scope"]]["config"])[0]["name"]
        words = [f"`{queue}` queue" for queue in _resolve(assignment["file"], name)]
    else:
        words = list(SCOPE_WORDS[assignment["scope_type"]])
    if assignment["scope_type"].startswith("Microsoft.Storage/"):
        words.append(ACCOUNT_WORDS[_account_module(assignment["file"], assignment["scope"])])
    return words


def test_every_role_assignment_is_listed_in_deploy_md() -> None:
    assigned = _role_assignments()
    # the app: blob reader (segments), blob contributor (its containers; erasures), queue and table contributor,
    # secrets officer, metrics publisher; Event Grid's sender (segment-events; erasure-events); Customer Insights' writer
    # (segments; erasures)
    assert len(assigned) == 11, assigned
    rows = _documented_roles()
    from_infra = [row for row in rows if ".bicep" in row["granted"]]
    for assignment in assigned:
        words = _scope_words(assignment)
        matches = [row for row in from_infra if row["role"] == assignment["role"]
                   and all(word in row["scope"] for word in words) and assignment["file"] in row["granted"]]
        assert len(matches) == 1, (f"{assignment['file']}: {assignment['role']} on {words} is not (once) in "
                                   "docs/deploy.md's role table")
        assert matches[0]["why"], f"{assignment['role']}: say why"
    assert len(from_infra) == len(assigned), "docs/deploy.md lists a role assignment infra/ does not make"


def test_no_role_assignment_grants_ownership() -> None:
    """Storage Blob Data Owner (or any owner or access-administration role) adds rights nobody here uses: POSIX ACLs
    and ownership, blob index tags, permanent deletes (infra/app/identity.bicep says why Contributor suffices)."""
    assigned = _role_assignments()
    assert assigned
    owners = [(a["file"], a["role"]) for a in assigned
              if re.search(r"\bOwner\b|Access Administrator|Access Control Administrator", a["role"])]
    assert not owners, f"ownership granted: {owners}"


def test_the_app_reads_segments_and_writes_only_its_own_containers() -> None:
    """The app's blob roles are per container: it only reads what Customer Insights writes (the segments container of
    the segments account), reads and deletes the files dropped into the erasures container next to it (nothing else
    there), and writes its work, lease and deployment containers and the Functions host's two in its own account,
    nothing else; its account-wide roles are queues and tables of its own account (every queue is the app's; the host
    names a new diagnostics table each month)."""
    from shared.config import CONTAINER_ERASURES

    app = [a for a in _role_assignments() if a["file"] == "app/identity.bicep"]
    blob = [a for a in app if a["role"].startswith("Storage Blob Data")]
    assert {a["role"] for a in blob} == {"Storage Blob Data Reader", "Storage Blob Data Contributor"}, blob
    for assignment in blob:
        assert assignment["scope_type"] == CONTAINER, f"{assignment['role']} must be on containers, not the account"
    [reader] = [a for a in blob if a["role"] == "Storage Blob Data Reader"]
    assert _containers_of(reader) == [SEGMENTS]
    assert _account_module(reader["file"], reader["scope"]) == "segmentsStorage"
    writers = {_account_module(a["file"], a["scope"]): a for a in blob if a["role"] == "Storage Blob Data Contributor"}
    assert len(writers) == 2 == len(blob) - 1, blob
    drops = writers["segmentsStorage"]
    assert _containers_of(drops) == [CONTAINER_ERASURES], "in the segments account, the drop folder only"
    assert sorted(a["symbol"] for a in app if a["scope_type"].startswith("Microsoft.Storage/")
                  and _account_module(a["file"], a["scope"]) == "segmentsStorage") == sorted(
        [reader["symbol"], drops["symbol"]]), "two roles in the segments account"
    writer = writers["storage"]
    writes = _containers_of(writer)
    every = _names(infra_doc("app/storage.bicep")["variables"]["containerNames"]["value"], "app/storage.bicep")
    assert sorted(writes) == sorted(every) and SEGMENTS not in writes and CONTAINER_ERASURES not in writes
    assert {"export-work", "mailchimp-slots", "azure-webjobs-hosts", "azure-webjobs-secrets",
            "<deploymentContainerName>"} == set(writes)
    on_account = [a for a in app if a["scope_type"] == "Microsoft.Storage/storageAccounts"]
    assert {a["role"] for a in on_account} == {"Storage Queue Data Contributor", "Storage Table Data Contributor"}
    assert {_account_module(a["file"], a["scope"]) for a in on_account} == {"storage"}


def test_customer_insights_may_write_into_the_segments_container_only() -> None:
    """(The name is older than the erasures drop folder.) Customer Insights writes its segment exports into `segments`
    and its deletion exports into `erasures`, each role on that one container, and only when its principal ID is given."""
    from shared.config import CONTAINER_ERASURES

    rel = "app/segments-storage.bicep"
    for writer, symbol, name in (("customerInsightsWriter", "segmentsContainer", SEGMENTS),
                                 ("customerInsightsErasuresWriter", "erasuresContainer", CONTAINER_ERASURES)):
        body, condition, _ = _unwrap(_resources(rel)[writer]["config"])
        assert condition is not None, "only when its principal ID is given"
        assert body["scope"] == symbol
        container, _, loop = _unwrap(_resources(rel)[symbol]["config"])
        assert loop is None and evaluate(container["name"], rel, {}) == name
        role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        assert _role_name(role) == "Storage Blob Data Contributor"
        assert _accessor(body["properties"]["principalId"]) == ["customerInsightsPrincipalId"]
    writers = [a for a in _role_assignments() if "customerInsights" in a["symbol"]]
    assert sorted((a["file"], a["scope"]) for a in writers) == [(rel, "erasuresContainer"), (rel, "segmentsContainer")], (
        "and nowhere else")


# ------------------------------------------------------------------------------------------------ checkov skips


SKIP = re.compile(r"//checkov:skip=(CKV2?_\w+):(.*)$", re.M)
DEFAULT_ONLY = "Default deployment only (VNET_ENABLED=false):"
NETWORK_LOCKDOWN = {"CKV_AZURE_35", "CKV_AZURE_109", "CKV_AZURE_189"}  # storage firewall, vault firewall, vault access


def test_every_checkov_skip_says_why_and_network_lockdown_is_checked_with_vnet_enabled() -> None:
    """checkov does not evaluate `vnetEnabled ? ... : ...`, so the network lock-down checks are skipped for the default
    deployment only (that reason first) and scripts/check_infra.sh scans a copy specialised to vnetEnabled = true with
    those skips removed, requiring them to pass there. Public network access on storage stays Enabled (Event Grid's
    delivery), so CKV_AZURE_59 is skipped in both scans and must say so."""
    skips = [(path.relative_to(INFRA).as_posix(), check, reason.strip())
             for path in sorted(INFRA.rglob("*.bicep")) for check, reason in SKIP.findall(path.read_text("utf-8"))]
    assert len(skips) >= 10, skips
    for rel, check, reason in skips:
        assert len(reason) > 30, f"{rel}: {check} needs a reason"
        if check in NETWORK_LOCKDOWN:
            assert reason.startswith(DEFAULT_ONLY), f"{rel}: {check} must be skipped for the default deployment only"
        if check == "CKV_AZURE_59":
            assert "Event Grid" in reason, f"{rel}: say why public network access stays on"
    assert NETWORK_LOCKDOWN <= {check for _, check, _ in skips}
    script = (ROOT / "scripts" / "check_infra.sh").read_text(encoding="utf-8")
    assert DEFAULT_ONLY in script
    listed = re.search(r'^VNET_CHECKS="([^"]*)"', script, re.M)
    assert listed and set(listed.group(1).split()) == NETWORK_LOCKDOWN


# ----------------------------------------------------------------------------------------------------- HTTP routes


def _auth_level(node: ast.expr | None) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else None


# Routes open to anyone, each for a reason: Mailchimp's OAuth redirect (it may come back without the admin's session,
# and its signed single-use state guards it), and the admin page's static files (they hold no data: everything the
# page shows comes from the API, which checks the caller).
OPEN_ROUTES = {"mailchimp/oauth/callback": "blueprints/destinations_api.py", "console/{*path}": "blueprints/page.py"}


def _text(node: ast.expr | None, constants: dict[str, str]) -> str | None:
    """A string the source spells out: a literal, a module-level constant, or a concatenation of those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, constants), _text(node.right, constants)
        return left + right if left is not None and right is not None else None
    return None


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    return target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else None


def test_every_http_route_is_anonymous_to_functions_and_every_handler_but_the_oauth_callback_requires_a_role() -> None:
    """docs/threat-model.md: App Service Authentication stands in front and the app authorizes each request from the
    identity it verified, so no route is left to a function key (ANONYMOUS at the Functions level) and every handler
    is wrapped in blueprints/http.requires(ADMIN | OPERATOR | SIGNED_IN), route outermost, except the open routes."""
    sources = [ROOT / "function_app.py", *sorted((ROOT / "blueprints").glob("*.py"))]
    handlers: dict[str, tuple[str, ast.FunctionDef]] = {}
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        rel = source.relative_to(ROOT).as_posix()
        constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for target in node.targets if isinstance(target, ast.Name)}
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
            if call.func.attr in ("FunctionApp", "Blueprint"):
                level = next((k.value for k in call.keywords if k.arg == "http_auth_level"), None)
                assert level is None or _auth_level(level) == "ANONYMOUS", f"{rel}: http_auth_level must be ANONYMOUS"
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            names = [_decorator_name(d) for d in function.decorator_list]
            if "route" not in names:
                continue
            route_call = function.decorator_list[names.index("route")]
            keywords = {k.arg: k.value for k in route_call.keywords}
            route = _text(keywords.get("route"), constants)
            assert route, f"{rel}: {function.name} needs a route spelt out in the source"
            if "auth_level" in keywords:
                assert _auth_level(keywords["auth_level"]) == "ANONYMOUS", f"{rel}: {function.name}"
            handlers[f"{route} {function.name}"] = (rel, function)
            if route in OPEN_ROUTES:
                assert rel == OPEN_ROUTES[route] and "requires" not in names, f"{rel}: {function.name}"
                continue
            assert "requires" in names, f"{rel}: {function.name} ({route}) is not wrapped in requires(...)"
            assert names.index("route") < names.index("requires"), f"{rel}: {function.name}: route must be outermost"
            role = function.decorator_list[names.index("requires")].args
            assert len(role) == 1 and isinstance(role[0], ast.Name) and role[0].id in ("ADMIN", "OPERATOR", "SIGNED_IN"), \
                f"{rel}: {function.name}"
            assert [a.arg for a in function.args.args] == ["req", "who"], f"{rel}: {function.name} gets the caller"
    routes = {key.split()[0] for key in handlers}
    assert len(handlers) >= 11 and "me" in routes and "mailchimp/oauth/callback" in routes, sorted(handlers)
    page = [function for rel, function in handlers.values() if rel == "blueprints/page.py"]
    assert all("bootstrap" not in ast.dump(function) for function in page), "the open page route reads no data"


# ------------------------------------------------------------------------------------------------- threat model


def test_the_threat_model_cites_only_tests_that_exist() -> None:
    """docs/threat-model.md backs each claim with `path::test_name`; a renamed or removed test makes it stale."""
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", text))
    assert len(cited) >= 30, "the threat model names the tests behind its claims"
    missing = sorted(f"{path}::{name}" for path, name in cited
                     if not (ROOT / path).is_file()
                     or not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M))
    assert not missing, f"docs/threat-model.md cites tests that do not exist: {missing}"
