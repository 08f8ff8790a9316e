"""Code and infrastructure agree: everything the app reads is provisioned by infra/, with built-in roles and no
development storage.

The Bicep CLI cannot be installed here, so the templates are read as text, by conventions they keep on purpose:
storage names are `var` lists in storage.bicep, app settings are the upper-case keys of function.bicep, and each
role definition GUID sits in a `var` named after its role.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import function_app
from shared import config
from shared.events import BLOB_CREATED

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Built-in role definitions: REFERENCE.md §2, plus Storage Blob Data Contributor (the app's work containers, Customer
# Insights' writer), Storage Blob Data Reader (the app on segments) and Storage Queue Data Message Sender (Event Grid's
# delivery) from Azure's list of built-in roles.
BUILT_IN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

# Least privilege: the app's identity holds exactly these (identity.bicep); their scopes are checked in
# test_infra_security.py (blob roles per container, no Owner role anywhere).
APP_IDENTITY_ROLES = {
    "Storage Blob Data Contributor",
    "Storage Blob Data Reader",
    "Storage Queue Data Contributor",
    "Storage Table Data Contributor",
    "Key Vault Secrets Officer",
    "Monitoring Metrics Publisher",
}

# Settings the loader reads that Azure must not get, and why.
LOCAL_ONLY = {
    "AzureWebJobsStorage": "a connection string, for Azurite; Azure uses the identity-based AzureWebJobsStorage__*",
    "AzureWebJobsStorage__accountName": "an alternative to the three service URIs that infra sets",
    "SEGMENTS_CONNECTION_STRING": "another account by connection string (Azurite, a key); Azure uses SEGMENTS_BLOB_URI",
    "LOCAL_SECRETS_DIR": "the file secret store, used only when KEY_VAULT_URL is not set",
    "MAILCHIMP_API_BASE_URL": "the local Mailchimp; in Azure the API host follows each account's data centre",
    "MAILCHIMP_OAUTH_AUTHORIZE_URL": "the local Mailchimp's OAuth pages; the default is Mailchimp's",
    "MAILCHIMP_OAUTH_TOKEN_URL": "the local Mailchimp's OAuth pages; the default is Mailchimp's",
    "MAILCHIMP_OAUTH_METADATA_URL": "the local Mailchimp's OAuth pages; the default is Mailchimp's",
    "OTEL_EXPORTER": "console output of the telemetry; in Azure the default (Azure Monitor, from the connection string)",
}

# Settings the loader reads that App Service sets itself, and what makes it set them (checked below).
PLATFORM_SET = {
    "WEBSITE_AUTH_ENABLED": "True while App Service Authentication is on: authsettingsV2 platform.enabled in function.bicep",
}

# What the app sees in Azure once Key Vault references are resolved (values are examples, names are not).
AZURE_ENV = {
    "AzureWebJobsStorage__blobServiceUri": "https://stexample.blob.core.windows.net/",
    "AzureWebJobsStorage__queueServiceUri": "https://stexample.queue.core.windows.net/",
    "AzureWebJobsStorage__tableServiceUri": "https://stexample.table.core.windows.net/",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
    "SEGMENTS_BLOB_URI": "https://stsegexample.blob.core.windows.net/",
    "KEY_VAULT_URL": "https://kv-example.vault.azure.net/",
    "MAILCHIMP_OAUTH_CLIENT_ID": "123456789012",
    "MAILCHIMP_OAUTH_CLIENT_SECRET": "resolved-from-key-vault",
    "MAILCHIMP_OAUTH_REDIRECT_URI": "https://func-example.azurewebsites.net/api/mailchimp/oauth/callback",
}

DEVELOPMENT_STORAGE = (
    "UseDevelopmentStorage",
    "devstoreaccount1",
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
)

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name asked for, set or not: the loader's full list of settings."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _bicep(name: str) -> str:
    return (INFRA / name).read_text(encoding="utf-8")


def _string_vars(text: str) -> dict[str, str]:
    return dict(re.findall(r"^var (\w+) = '([^']*)'$", text, re.M))


def _list_var(text: str, name: str) -> set[str]:
    """The literal names in `var NAME = [...]`, with string vars substituted; parameters (unknown here) are left out."""
    found = re.search(rf"^var {name} = \[(.*?)\]", text, re.M | re.S)
    assert found, f"var {name} = [...] is missing"
    strings = _string_vars(text)
    names = set()
    for item in re.split(r"[\s,]+", found.group(1).strip()):
        if item in strings:
            names.add(strings[item])
        elif item.startswith("'"):
            names.add(re.sub(r"\$\{(\w+)\}", lambda ref: strings[ref.group(1)], item.strip("'")))
    return names


def _app_settings() -> dict[str, str]:
    """App setting name -> its Bicep value expression."""
    return dict(re.findall(r"^\s+([A-Z]\w*): (.+)$", _bicep("app/function.bicep"), re.M))


@pytest.fixture(scope="module")
def functions() -> dict[str, list[dict[str, Any]]]:
    """Function name -> bindings, as the host indexes them. azure-functions refuses to index an app twice in one
    process, so this runs once per module."""
    return {fn.get_function_name(): json.loads(fn.get_function_json())["bindings"]
            for fn in function_app.app.get_functions()}


@pytest.fixture(scope="module")
def bindings(functions: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [binding for function_bindings in functions.values() for binding in function_bindings]


def _loader_reads() -> set[str]:
    env = RecordingEnv(dict(AZURE_ENV))
    settings = config.load_settings(env)
    assert settings.oauth is not None, "AZURE_ENV should switch OAuth on, so that its settings are read too"
    return env.asked


def _constants(prefix: str) -> set[str]:
    return {value for name, value in vars(config).items() if name.startswith(prefix) and isinstance(value, str)}


def test_every_queue_the_app_uses_is_provisioned_with_its_poison_queue(bindings: list[dict[str, Any]]) -> None:
    used = {b["queueName"] for b in bindings if "queueName" in b} | _constants("QUEUE_")
    expected = used | {f"{queue}-poison" for queue in used if not queue.endswith("-poison")}
    assert expected - _list_var(_bicep("app/storage.bicep"), "queueNames") == set()


def test_every_container_and_table_the_app_uses_is_provisioned() -> None:
    """The app's containers and tables in its own account (storage.bicep); the segments container and the erasures
    drop folder in the segments account (segments-storage.bicep), which the app reaches through SEGMENTS_BLOB_URI."""
    storage = _bicep("app/storage.bicep")
    settings = config.load_settings(AZURE_ENV)
    segments_account = _string_vars(_bicep("app/segments-storage.bicep"))
    in_segments_account = {config.CONTAINER_ERASURES}  # shared/bootstrap.py reads drop files from the segments account
    assert _constants("CONTAINER_") - in_segments_account <= _list_var(storage, "containerNames")
    assert settings.segments_container not in _list_var(storage, "containerNames"), "segments have their own account"
    assert config.CONTAINER_ERASURES not in _list_var(storage, "containerNames"), "dropped next to the segments"
    assert _constants("TABLE_") <= _list_var(storage, "tableNames")
    assert segments_account["segmentsContainerName"] == settings.segments_container
    assert segments_account["erasuresContainerName"] == config.CONTAINER_ERASURES
    assert settings.segments_storage is not None and settings.segments_storage.blob_uri == AZURE_ENV["SEGMENTS_BLOB_URI"]


def test_the_app_reads_segments_from_the_segments_account() -> None:
    """SEGMENTS_BLOB_URI is the blob endpoint of the account the segments module creates, not AzureWebJobsStorage's."""
    settings = _app_settings()
    assert settings["SEGMENTS_BLOB_URI"] == "segmentsAccount.properties.primaryEndpoints.blob"
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "storageAccount.properties.primaryEndpoints.blob"
    function = _bicep("app/function.bicep")
    assert re.search(r"resource segmentsAccount '[^']+' existing = \{\s+name: segmentsStorageAccountName\s", function)
    main = _bicep("main.bicep")
    assert "module segmentsStorage 'app/segments-storage.bicep'" in main
    assert main.count("segmentsStorageAccountName: segmentsStorage.outputs.name") >= 5  # every module that uses it


def test_every_connection_is_identity_based(bindings: list[dict[str, Any]]) -> None:
    settings = _app_settings()
    connections = {b["connection"] for b in bindings if "connection" in b} | {config.STORAGE_CONNECTION}
    for connection in connections:
        for suffix in ("blobServiceUri", "queueServiceUri", "tableServiceUri", "clientId"):
            assert f"{connection}__{suffix}" in settings
        assert settings.get(f"{connection}__credential") == "'managedidentity'"
        assert connection not in settings, f"{connection} must not be a connection string in Azure"


def test_every_setting_a_binding_names_is_provisioned(bindings: list[dict[str, Any]]) -> None:
    named = {name for b in bindings for value in b.values() if isinstance(value, str)
             for name in re.findall(r"%(\w+)%", value)}
    assert named, "the timer's %EXPORT_SCHEDULE% should be found"
    assert named - _app_settings().keys() == set()


def test_every_setting_the_loader_reads_is_provisioned_unless_local_only() -> None:
    read = _loader_reads()
    provisioned = _app_settings().keys()
    assert read - LOCAL_ONLY.keys() - PLATFORM_SET.keys() - provisioned == set()
    assert LOCAL_ONLY.keys() & provisioned == set(), "local-only settings must not reach Azure"
    assert PLATFORM_SET.keys() & provisioned == set(), "App Service sets these; an app setting would pretend to"
    assert LOCAL_ONLY.keys() - read == set(), "LOCAL_ONLY names a setting the loader no longer reads"
    assert PLATFORM_SET.keys() - read == set(), "PLATFORM_SET names a setting the loader no longer reads"
    # WEBSITE_AUTH_ENABLED is App Service's only while its authentication is on (tests/integration/test_infra_signin.py)
    function = _bicep("app/function.bicep")
    assert re.search(r"name: 'authsettingsV2'\n(?:  .*\n)*?  properties: \{\n    platform: \{\n      enabled: true\n", function)


def test_segment_events_reach_the_queue_segment_arrived_consumes(functions: dict[str, list[dict[str, Any]]]) -> None:
    events = _bicep("app/events.bicep")
    trigger_queue = functions["segment_arrived"][0]["queueName"]
    assert _string_vars(_bicep("app/storage.bicep"))["segmentEventsQueueName"] == trigger_queue
    assert "queueName: storage.outputs.segmentEventsQueueName" in _bicep("main.bicep")
    assert "segmentsContainerName: segmentsStorage.outputs.segmentsContainerName" in _bicep("main.bicep")
    assert f"includedEventTypes: ['{BLOB_CREATED}']" in events
    assert "subjectBeginsWith: '/blobServices/default/containers/${segmentsContainerName}/blobs/'" in events
    assert "eventDeliverySchema: 'EventGridSchema'" in events  # shared/events.py reads eventType and subject
    assert "endpointType: 'StorageQueue'" in events


def test_erasure_file_events_reach_the_queue_erasure_file_arrived_consumes(
        functions: dict[str, list[dict[str, Any]]]) -> None:
    events, main = _bicep("app/events.bicep"), _bicep("main.bicep")
    trigger_queue = functions["erasure_file_arrived"][0]["queueName"]
    assert _string_vars(_bicep("app/storage.bicep"))["erasureEventsQueueName"] == trigger_queue == config.QUEUE_ERASURE_EVENTS
    assert "erasureQueueName: storage.outputs.erasureEventsQueueName" in main
    assert main.count("erasuresContainerName: segmentsStorage.outputs.erasuresContainerName") == 2  # events, identity
    assert "subjectBeginsWith: '/blobServices/default/containers/${erasuresContainerName}/blobs/'" in events
    assert "queueName: erasureQueueName" in events


def test_role_guids_are_built_in_roles_under_their_own_names() -> None:
    declared: dict[str, str] = {}
    for path in INFRA.rglob("*.bicep"):
        text = path.read_text(encoding="utf-8")
        for name, guid in re.findall(rf"^var (\w+) = '({GUID.pattern})'$", text, re.M | re.I):
            assert guid in BUILT_IN_ROLES, f"{path.name}: {name} = {guid} is not a known built-in role"
            words = BUILT_IN_ROLES[guid].split()
            assert name == words[0].lower() + "".join(words[1:]), f"{path.name}: {guid} is {BUILT_IN_ROLES[guid]}"
            declared[name] = guid
        stray = len(GUID.findall(text)) - len(re.findall(rf"^var \w+ = '{GUID.pattern}'$", text, re.M | re.I))
        assert stray == 0, f"{path.name}: a GUID outside a role `var`"
    assert declared, "no role definitions found"


def test_app_identity_holds_exactly_the_roles_it_needs() -> None:
    text = _bicep("app/identity.bicep")
    roles = {BUILT_IN_ROLES[guid] for guid in re.findall(rf"^var \w+ = '({GUID.pattern})'$", text, re.M | re.I)}
    assert roles == APP_IDENTITY_ROLES
    for name in re.findall(r"^var (\w+) = '[0-9a-f-]{36}'$", text, re.M):
        assert len(re.findall(rf"\b{name}\b", text)) > 1, f"{name} is declared but never assigned"


def test_no_development_storage_in_infra() -> None:
    for path in [*INFRA.rglob("*"), ROOT / "azure.yaml"]:
        if path.is_file():
            text = path.read_text(encoding="utf-8").lower()
            for marker in DEVELOPMENT_STORAGE:
                assert marker.lower() not in text, f"{path.relative_to(ROOT)} contains {marker[:20]}"


def test_security_settings_the_deployment_promises() -> None:
    storage, vault = _bicep("app/storage.bicep"), _bicep("app/keyvault.bicep")
    # Blob soft delete (off by default: Customer Insights' exports fail with it) is checked in test_infra_security.py.
    for promise in ("allowSharedKeyAccess: false", "allowBlobPublicAccess: false"):
        assert promise in storage
    for promise in ("enableRbacAuthorization: true", "enableSoftDelete: true", "enablePurgeProtection: true"):
        assert promise in vault
    function = _bicep("app/function.bicep")
    assert re.search(r"authentication: \{\s+type: 'UserAssignedIdentity'", function), "deployment storage needs identity auth"
    assert f"version: '{sys.version_info.major}.{sys.version_info.minor}'" in function, "deploy the Python the tests run"


def test_every_main_parameter_is_fed_by_azd() -> None:
    declared = set(re.findall(r"^param (\w+) ", _bicep("main.bicep"), re.M))
    fed = json.loads(_bicep("main.parameters.json"))["parameters"].keys()
    assert declared == set(fed)


def test_oauth_redirect_uri_is_the_callback_route(bindings: list[dict[str, Any]]) -> None:
    routes = [b["route"] for b in bindings if b.get("type") == "httpTrigger"
              and "oauth" in b.get("route", "") and b["route"].endswith("callback")]
    if not routes:
        pytest.skip("function_app.py has no OAuth callback route yet; infra assumes mailchimp/oauth/callback")
    assert _string_vars(_bicep("app/function.bicep"))["oauthCallbackRoute"] in routes
    assert "MAILCHIMP_OAUTH_REDIRECT_URI" in _app_settings()
