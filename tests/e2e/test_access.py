"""Who may call what, end to end: the real function_app in the local host behind its App Service Authentication
(devhost/easyauth.py). Nobody signed in, forged principal headers, an app without authentication, the two roles,
export users, a browser's session and requests forged by other sites, and whom the audit records name."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import requests

from shared.auth import ADMIN, OPERATOR, Principal, encode_principal
from tests.e2e.conftest import create_destination, host_log, log_lines, start_export, wait_for_run
from tests.services import LOCAL_USERS, ROOT, FunctionsHost

# Open to anyone by design: Mailchimp's OAuth redirect (its signed single-use state guards it) and the admin page's
# static files (they hold no data; everything they show comes from the API).
OPEN_ROUTES = {"mailchimp/oauth/callback", "console/{*path}"}
MALLORY = Principal(id="66666666-6666-4666-8666-666666666666", name="mallory", email="mallory@evil.example",
                    roles=frozenset({ADMIN}))
OPERATOR_EMAIL = LOCAL_USERS["operator"]["email"]


@cache
def api_routes() -> tuple[tuple[str, str], ...]:
    """(method, path under /api) of every HTTP function of function_app but the open ones, parameters filled in. The
    app is indexed in a child process, as the host does: indexing it twice in one process fails, and other tests
    index it in this one."""
    script = ("import json; from pathlib import Path; from devhost.app_index import load_functions; "
              "print(json.dumps([f.trigger for f in load_functions('function_app', Path('.'))]))")
    triggers = json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                                         check=True).stdout.splitlines()[-1])
    routes = []
    for trigger in triggers:
        route = trigger.get("route") if trigger["type"] == "httpTrigger" else None
        if route is None or route in OPEN_ROUTES:
            continue
        path = re.sub(r"\{\*?(\w+)[^}]*\}", lambda m: f"x-{m[1]}", route)
        routes += [(method.upper(), path) for method in trigger.get("methods") or ["GET"]]
    return tuple(sorted(routes))


def every_route(host: FunctionsHost, **kwargs) -> dict[tuple[str, str], int]:
    return {(method, path): host.call(method, path, json={} if method in ("POST", "PATCH") else None,
                                      allow_redirects=False, **kwargs).status_code
            for method, path in api_routes()}


def forged_headers(case) -> dict[str, str]:
    return {case("X-MS-CLIENT-PRINCIPAL"): encode_principal(MALLORY), case("X-MS-CLIENT-PRINCIPAL-NAME"): "mallory",
            case("X-MS-CLIENT-PRINCIPAL-ID"): MALLORY.id, case("X-MS-CLIENT-PRINCIPAL-IDP"): "aad",
            "X-Requested-With": "fetch"}


@pytest.fixture
def host(start_host) -> FunctionsHost:
    return start_host()


def test_the_route_list_holds_every_route_of_the_api() -> None:
    routes = api_routes()
    assert {("GET", "me"), ("POST", "destinations"), ("GET", "destinations"), ("GET", "destinations/x-id"),
            ("PATCH", "destinations/x-id"), ("DELETE", "destinations/x-id"), ("POST", "destinations/x-id/mailchimp/connect"),
            ("POST", "destinations/x-id/exports"), ("GET", "destinations/x-id/exports"), ("GET", "exports/x-runId"),
            ("GET", "exports/x-runId/errors"), ("POST", "exports/x-runId/cancel"), ("POST", "exports/x-runId/retry"),
            ("POST", "erasures"), ("GET", "erasures"), ("GET", "erasures/x-id")} <= set(routes), routes


def test_nobody_signed_in_gets_401_on_every_route_but_the_oauth_callback(host: FunctionsHost):
    answers = every_route(host, user=None)
    assert set(answers.values()) == {401}, answers
    refused = host.call("GET", "destinations", user=None)
    assert refused.json()["signIn"] == "/.auth/login/aad" and refused.headers["Cache-Control"] == "no-store"
    callback = host.call("GET", "mailchimp/oauth/callback?code=x&state=y", user=None)
    assert callback.status_code not in (401, 403)  # open, and refused by its own checks (no OAuth set up here)


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title], ids=["lower", "upper", "title"])
def test_forged_principal_headers_in_any_case_are_stripped_and_answered_401(host: FunctionsHost, case):
    answers = every_route(host, user=None, headers=forged_headers(case))
    assert set(answers.values()) == {401}, answers
    assert host.call("GET", "destinations").json() == {"destinations": []}  # nothing was made by the forged admin


def test_without_app_service_authentication_every_route_is_401_whatever_the_caller_sends(start_host, host: FunctionsHost):
    """An app deployed without App Service Authentication fails closed: WEBSITE_AUTH_ENABLED is unset, so no header
    is believed, not the principal header a caller forged, not a valid-looking session or bearer token."""
    browser = requests.Session()
    browser.post(f"{host.origin}/.auth/login/aad", data={"email": "ada.admin@contoso.example", "role": ADMIN}, timeout=10)
    cookie = browser.cookies["AppServiceAuthSession"]  # a real session, from a host with authentication
    bare = start_host(name="unauthenticated", auth=False)
    with_everything = {**forged_headers(str.upper), "Authorization": f"Bearer {host.tokens['admin']}",
                       "Cookie": f"AppServiceAuthSession={cookie}"}
    answers = every_route(bare, user=None, headers=with_everything)
    assert set(answers.values()) == {401}, answers
    assert requests.get(f"{bare.origin}/.auth/me", cookies={"AppServiceAuthSession": cookie}, timeout=10).status_code == 404
    assert host.call("GET", "destinations").json() == {"destinations": []}  # the same storage: nothing was made


def test_a_signed_in_user_without_a_role_gets_403_everywhere_and_me_says_no_access(host: FunctionsHost):
    answers = every_route(host, user="norole", headers={"X-Requested-With": "fetch"})
    me = answers.pop(("GET", "me"))
    assert me == 200 and set(answers.values()) == {403}, answers
    assert host.call("GET", "me", user="norole").json() == {
        "id": LOCAL_USERS["norole"]["id"], "name": "Nina Norole", "email": "nina.norole@contoso.example", "kind": "user",
        "roles": []}
    assert host.call("GET", "me", user="admin").json()["roles"] == [ADMIN]
    machine = host.call("GET", "me", user="machine").json()
    assert machine["kind"] == "app" and machine["roles"] == [OPERATOR] and machine["email"] is None


def test_an_operator_sees_and_exports_only_destinations_naming_them_and_may_not_manage_any(host: FunctionsHost, segments):
    segments.upload_blob("HighValueCustomers/2026/11/28/1700/part-0.csv",
                         b"Email,FirstName,LastName\r\nann@contoso.com,Ann,Lee\r\nbob@contoso.com,Bob,Ray\r\n")
    segments.upload_blob("HighValueCustomers/2026/11/28/1700/_SUCCESS", b"")
    theirs = create_destination(host, displayName="Theirs", exportOnArrival=False,
                                exportUsers=[{"email": OPERATOR_EMAIL.upper(), "name": "Oscar"}])
    other = create_destination(host, displayName="Not theirs", exportOnArrival=False,
                               exportUsers=[{"email": "someone.else@contoso.example"}])
    assert theirs["exportUsers"] == [{"id": None, "email": OPERATOR_EMAIL, "name": "Oscar"}]
    other_run = start_export(host, other["id"])
    wait_for_run(host, other_run)

    # another destination and its runs do not exist for them: 404, as for an id nobody has
    hidden = [("GET", f"destinations/{other['id']}"), ("GET", f"destinations/{other['id']}/exports"),
              ("POST", f"destinations/{other['id']}/exports"), ("GET", f"exports/{other_run}"),
              ("GET", f"exports/{other_run}/errors")]
    for method, path in hidden:
        answer = host.call(method, path, user="operator")
        assert answer.status_code == 404, (method, path, answer.text)
        assert other["displayName"] not in answer.text
    assert [d["id"] for d in host.call("GET", "destinations", user="operator").json()["destinations"]] == [theirs["id"]]
    assert len(host.call("GET", "destinations").json()["destinations"]) == 2  # an admin sees both

    # their own: read it, export, watch the run and its report
    assert host.call("GET", f"destinations/{theirs['id']}", user="operator").status_code == 200
    run_id = start_export_as(host, "operator", theirs["id"])
    run = wait_for_run(host, run_id)
    assert run["status"] == "succeeded" and run["startedBy"] == OPERATOR_EMAIL
    assert host.call("GET", f"exports/{run_id}", user="operator").status_code == 200
    assert host.call("GET", f"exports/{run_id}/errors", user="operator").status_code == 200
    assert [r["id"] for r in host.call("GET", f"destinations/{theirs['id']}/exports", user="operator").json()["exports"]] == [run_id]

    # but never manage one, their own included
    for method, path, body in (("PATCH", f"destinations/{theirs['id']}", {"displayName": "Mine now"}),
                               ("DELETE", f"destinations/{theirs['id']}", None),
                               ("POST", "destinations", {"displayName": "New"}),
                               ("POST", f"destinations/{theirs['id']}/mailchimp/connect", None)):
        answer = host.call(method, path, user="operator", json=body, allow_redirects=False)
        assert answer.status_code == 403, (method, path, answer.text)
    assert host.call("GET", f"destinations/{theirs['id']}").json()["displayName"] == "Theirs"
    assert len(host.call("GET", "destinations").json()["destinations"]) == 2

    # by object ID too (a machine has no address); taken off the list, the destination is gone for them
    machine = LOCAL_USERS["machine"]["id"]
    host.call("PATCH", f"destinations/{other['id']}", json={"exportUsers": [{"id": machine.upper()}]})
    assert host.call("GET", f"exports/{other_run}", user="machine").status_code == 200
    host.call("PATCH", f"destinations/{theirs['id']}", json={"exportUsers": []})
    assert host.call("GET", f"destinations/{theirs['id']}", user="operator").status_code == 404
    assert host.call("GET", f"exports/{run_id}", user="operator").status_code == 404


def start_export_as(host: FunctionsHost, user: str, destination_id: str) -> str:
    answer = host.call("POST", f"destinations/{destination_id}/exports", user=user)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_export_users_are_checked_when_an_admin_saves_them(host: FunctionsHost):
    answer = host.call("POST", "destinations", json={
        "displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5",
        "exportUsers": [{"email": "not an address"}, {"name": "no id, no address"}, "someone@contoso.example",
                        {"email": "ok@contoso.example", "role": "admin"}]})
    assert answer.status_code == 400
    fields = {d["field"] for d in answer.json()["details"]}
    assert fields == {"exportUsers[0].email", "exportUsers[1]", "exportUsers[2]", "exportUsers[3]"}, answer.json()
    too_many = host.call("POST", "destinations", json={
        "displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5",
        "exportUsers": [{"email": f"p{i}@contoso.example"} for i in range(101)]})
    assert too_many.status_code == 400 and "at most 100" in too_many.text
    assert host.call("GET", "destinations").json() == {"destinations": []}


def signed_in_browser(host: FunctionsHost, email: str, roles: list[str]) -> requests.Session:
    browser = requests.Session()
    answer = browser.post(f"{host.origin}/.auth/login/aad", allow_redirects=False, timeout=10,
                          data={"name": "Ada", "email": email, "role": roles, "post_login_redirect_uri": "/api/console/"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/api/console/"
    return browser


def test_a_browser_session_works_and_requests_forged_by_other_sites_change_nothing(host: FunctionsHost):
    browser = signed_in_browser(host, "ada.admin@contoso.example", [ADMIN])
    page_headers = {"X-Requested-With": "fetch", "Sec-Fetch-Site": "same-origin"}
    body = {"displayName": "From the page", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5"}
    made = browser.post(f"{host.url}/destinations", json=body, headers=page_headers, timeout=30)
    assert made.status_code == 201, made.text
    destination = made.json()
    assert destination["createdBy"] == "ada.admin@contoso.example"
    assert browser.get(f"{host.url}/me", timeout=10).json()["email"] == "ada.admin@contoso.example"

    forged = [  # what another site's form or script can make a signed-in browser send (the cookie goes along)
        ("POST", "destinations", {"Sec-Fetch-Site": "cross-site", "X-Requested-With": "fetch"}),
        ("POST", "destinations", {}),  # a plain form post: no custom header without a CORS preflight
        ("PATCH", f"destinations/{destination['id']}", {"Sec-Fetch-Site": "same-site", "X-Requested-With": "x"}),
        ("DELETE", f"destinations/{destination['id']}", {}),
        ("DELETE", f"destinations/{destination['id']}", {"Sec-Fetch-Site": "cross-site", "X-Requested-With": "x"}),
    ]
    for method, path, headers in forged:
        answer = browser.request(method, f"{host.url}/{path}", headers=headers, timeout=30,
                                 json={"displayName": "Forged", "consent": {"accepted": False}})
        assert answer.status_code == 403, (method, headers, answer.text)
        assert "nothing was changed" in answer.json()["error"]
    now = host.call("GET", "destinations").json()["destinations"]
    assert [(d["id"], d["displayName"], d["consent"]["accepted"]) for d in now] == [
        (destination["id"], "From the page", True)]

    browser.get(f"{host.origin}/.auth/logout", timeout=10)
    assert browser.get(f"{host.url}/destinations", timeout=10).status_code == 401


def test_audit_records_name_the_verified_caller_never_a_header_the_caller_sets(host: FunctionsHost, tmp_path: Path,
                                                                               segments):
    segments.upload_blob("HighValueCustomers/2026/11/28/1700/part-0.csv", b"Email\r\nann@contoso.com\r\n")
    segments.upload_blob("HighValueCustomers/2026/11/28/1700/_SUCCESS", b"")
    posing = forged_headers(str.upper)  # X-MS-CLIENT-PRINCIPAL-NAME: mallory, and a whole forged principal
    made = host.call("POST", "destinations", headers=posing, json={
        "displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5", "exportOnArrival": False,
        "mailchimp": {"apiKey": "0123456789abcdef0123456789abcdef-us6"}, "segments": ["HighValueCustomers"],
        "mapping": {"email": "Email"}, "exportUsers": [{"email": OPERATOR_EMAIL}]})
    assert made.status_code == 201, made.text
    destination = made.json()
    admin = "ada.admin@contoso.example"
    assert destination["consent"]["acceptedBy"] == admin and destination["createdBy"] == admin
    run = host.call("POST", f"destinations/{destination['id']}/exports", user="operator", headers=posing)
    assert run.status_code == 202, run.text
    assert wait_for_run(host, run.json()["id"])["startedBy"] == OPERATOR_EMAIL
    withdrawn = host.call("PATCH", f"destinations/{destination['id']}", headers=posing,
                          json={"consent": {"accepted": False}}).json()
    assert withdrawn["consent"]["withdrawnBy"] == admin and withdrawn["updatedBy"] == admin
    assert host.call("DELETE", f"destinations/{destination['id']}", headers=posing).status_code == 204
    everything = json.dumps([destination, withdrawn])
    assert "mallory" not in everything and MALLORY.id not in everything

    lines = [line for line in log_lines(host_log(tmp_path)) if " audit action=" in line]
    said = [re.search(r"action=(\S+) .*principal=(\S+) kind=(\S+)", line).groups() for line in lines]
    ada, oscar = LOCAL_USERS["admin"]["id"], LOCAL_USERS["operator"]["id"]
    assert said == [("destination.created", ada, "user"), ("export.started", oscar, "user"),
                    ("destination.changed", ada, "user"), ("destination.deleted", ada, "user")], lines
    assert not any("mallory" in line or MALLORY.id in line or "@" in line for line in lines)


def test_a_forged_principal_header_cannot_raise_a_signed_in_callers_roles(host: FunctionsHost):
    """An operator adding an admin's principal header to their own request: the platform's header replaces it."""
    header = base64.b64encode(json.dumps({"claims": [{"typ": "oid", "val": LOCAL_USERS["operator"]["id"]},
                                                     {"typ": "roles", "val": ADMIN}]}).encode()).decode()
    answer = host.call("POST", "destinations", user="operator", json={"displayName": "x"},
                       headers={"x-ms-client-principal": header})
    assert answer.status_code == 403
    assert host.call("GET", "me", user="operator", headers={"X-MS-CLIENT-PRINCIPAL": header}).json()["roles"] == [OPERATOR]
