"""The admin page and the routes it adds, end to end: the real function_app in the local host (behind its App Service
Authentication), Azurite and the local Mailchimp. One host for the module: each test makes its own destinations.

Page files with the strict policy and no inline script or style; traversal refused; the segment lookup on the stack's
sample segments; the audience lookup with the local Mailchimp's demo key and audience; the errors report as CSV equal
to its JSON Lines; cancelling a run; drafts; Mailchimp's OAuth redirect answered for a browser."""
from __future__ import annotations

import csv
import io
import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from blueprints.page import CSP
from shared.report_csv import BOM, COLUMNS, cell
from shared.sample_segments import COLUMNS as SAMPLE_COLUMNS
from shared.sample_segments import write_sample_export
from tests.e2e.conftest import DEMO_AUDIENCE, DEMO_KEY, FINISHED, assert_accounted, destination_body, wait_for_run
from tests.services import LOCAL_USERS, FunctionsHost, free_port, start_azurite, start_functions_host

ROWS = {"HighValueCustomers": 400, "LapsedBuyers": 150}


@pytest.fixture(scope="module")
def stack(mailchimp_server, tmp_path_factory):
    """Azurite with the stack's sample segments (shared/sample_segments.py, as `make run` writes them, smaller) and one
    host with OAuth pointed at the local Mailchimp."""
    folder = tmp_path_factory.mktemp("page")
    storage = start_azurite()
    container = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client("segments")
    container.create_container()
    stats = write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True), ROWS,
                                rows_per_partition=200)
    port = free_port()
    mc = mailchimp_server.url
    host = start_functions_host({
        "FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": storage.connection_string,
        "SEGMENTS_CONTAINER": "segments", "MAILCHIMP_API_BASE_URL": mailchimp_server.api_root,
        "MAILCHIMP_MAX_CONNECTIONS": "10", "EXPORT_SCHEDULE": "0 0 0 1 1 *", "LOCAL_SECRETS_DIR": str(folder / "secrets"),
        "MAILCHIMP_RETRY_SECONDS": "3", "EXPORT_CHUNK_SIZE": "50",
        "MAILCHIMP_OAUTH_CLIENT_ID": "demo-client", "MAILCHIMP_OAUTH_CLIENT_SECRET": "demo-client-secret",
        "MAILCHIMP_OAUTH_REDIRECT_URI": f"http://127.0.0.1:{port}/api/mailchimp/oauth/callback",
        "MAILCHIMP_OAUTH_AUTHORIZE_URL": f"{mc}/oauth2/authorize", "MAILCHIMP_OAUTH_TOKEN_URL": f"{mc}/oauth2/token",
        "MAILCHIMP_OAUTH_METADATA_URL": f"{mc}/oauth2/metadata",
    }, port=port, log=folder / "host.log", settings_path=folder / "host.settings.json")
    yield host, stats
    host.stop()
    storage.stop()


@pytest.fixture
def host(stack, mailchimp) -> FunctionsHost:
    """The module's host, the local Mailchimp reset to its demo account and audience."""
    return stack[0]


def create(host: FunctionsHost, **overrides) -> dict:
    answer = host.call("POST", "destinations", json=destination_body(**overrides), headers={"X-Requested-With": "test"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def start(host: FunctionsHost, destination_id: str) -> str:
    answer = host.call("POST", f"destinations/{destination_id}/exports")
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


# --- the page ---------------------------------------------------------------------------------------------------------

class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags, self.inline, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else self._in

    def handle_endtag(self, tag):
        self._in = None if tag == self._in else self._in

    def handle_data(self, data):
        if self._in and data.strip():
            self.inline.append(data)


def test_the_page_is_served_to_anyone_with_the_strict_policy_and_no_inline_code(host):
    for path in ("console/", "console", "console/index.html"):
        page = requests.get(f"{host.url}/{path}", timeout=10)  # nobody signed in: the files hold no data
        assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Content-Security-Policy"] == CSP
        assert (page.headers["X-Content-Type-Options"], page.headers["Referrer-Policy"]) == ("nosniff", "same-origin")
        assert page.headers["Cache-Control"] == "no-cache" and page.headers["ETag"]
        html = Tags()
        html.feed(page.text)
        assert html.inline == [] and not [a for _, a in html.tags if "style" in a or any(k.startswith("on") for k in a)]
    again = requests.get(f"{host.url}/console/", headers={"If-None-Match": page.headers["ETag"]}, timeout=10)
    assert again.status_code == 304
    for path, kind in (("js/app.js", "text/javascript; charset=utf-8"), ("js/views/destination.js", "text/javascript; charset=utf-8"),
                       ("css/app.css", "text/css; charset=utf-8"), ("i18n/fr.json", "application/json; charset=utf-8"),
                       ("favicon.svg", "image/svg+xml")):
        answer = requests.get(f"{host.url}/console/{path}", timeout=10)
        assert (answer.status_code, answer.headers["Content-Type"]) == (200, kind), path
        assert answer.headers["Content-Security-Policy"] == CSP
    assert requests.get(f"{host.url}/console/i18n/fr.json", timeout=10).json()["connect.agree"] == "J'accepte"


@pytest.mark.parametrize("path", ["console/%2e%2e/host.json", "console/%2e%2e%2fhost.json", "console/js/%2e%2e/%2e%2e/function_app.py",
                                  "console/js%5capp.js", "console/%2fetc/passwd", "console/js/app.js%00.png"])
def test_a_path_shaped_like_a_traversal_is_refused(host, path):
    answer = requests.get(f"{host.url}/{path}", timeout=10)
    assert answer.status_code in (400, 404), path
    assert b"FunctionApp" not in answer.content and b"extensionBundle" not in answer.content and b"root:" not in answer.content
    assert answer.headers.get("X-Content-Type-Options") == "nosniff" or answer.status_code == 404


def test_files_outside_web_are_not_found(host):
    for path in ("console/../blueprints/page.py", "console/blueprints/page.py", "console/.funcignore", "console/js/"):
        assert requests.get(f"{host.url}/{path}", timeout=10).status_code in (400, 404), path


# --- GET /api/segments ------------------------------------------------------------------------------------------------

def test_segments_list_the_sample_with_typed_columns_profile_counts_and_the_limit(host, stack):
    stats = stack[1]
    answer = host.call("GET", "segments", user="operator")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    doc = answer.json()
    assert doc["maxProfilesPerExport"] == 1_000_000 and doc["container"] == "segments"
    found = {s["name"]: s for s in doc["segments"]}
    assert set(found) == set(ROWS)
    for name, rows in ROWS.items():
        segment = found[name]
        assert segment["usable"] and segment["problem"] is None and segment["layout"] == "cdm"
        assert segment["profiles"] == rows == stats[name].rows
        assert segment["snapshotTime"].endswith("+00:00") and segment["snapshot"].endswith("Z")
        assert [c["name"] for c in segment["columns"]] == list(SAMPLE_COLUMNS)
        types = {c["name"]: (c["type"], c["mailchimpType"]) for c in segment["columns"]}
        assert types["Email"] == ("string", "text") and types["LifetimeValue"] == ("decimal", "number")
    assert host.call("GET", "segments", user="admin").json() == doc  # the second answer uses the kept counts
    assert host.call("GET", "segments", user=None).status_code == 401
    assert host.call("GET", "segments", user="norole").status_code == 403


# --- POST /api/mailchimp/audience -----------------------------------------------------------------------------------

def look_up(host: FunctionsHost, body: dict, user: str = "admin") -> requests.Response:
    return host.call("POST", "mailchimp/audience", json=body, user=user, headers={"X-Requested-With": "test"})


def test_the_demo_audience_is_found_with_the_demo_key(host):
    answer = look_up(host, {"audienceId": DEMO_AUDIENCE, "apiKey": DEMO_KEY})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["audience"]["id"] == DEMO_AUDIENCE and doc["audience"]["name"] and doc["audience"]["doubleOptIn"] is False
    assert isinstance(doc["audience"]["memberCount"], int)
    assert {"FNAME", "LNAME"} <= {f["tag"] for f in doc["mergeFields"]}
    assert all(set(f) == {"tag", "name", "type", "required"} for f in doc["mergeFields"])
    assert DEMO_KEY not in answer.text


def test_what_is_wrong_is_named_by_field_and_the_key_is_never_echoed(host):
    wrong_key = "f" * 32 + "-us6"
    for body, field in (({"audienceId": DEMO_AUDIENCE, "apiKey": wrong_key}, "apiKey"),
                        ({"audienceId": DEMO_AUDIENCE, "apiKey": "not-a-key"}, "apiKey"),
                        ({"audienceId": "zz99zz99zz", "apiKey": DEMO_KEY}, "audienceId"),
                        ({"apiKey": DEMO_KEY}, "audienceId")):
        answer = look_up(host, body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["details"][0]["field"] == field
        assert body.get("apiKey", "-") not in answer.text
    assert look_up(host, {"audienceId": DEMO_AUDIENCE, "apiKey": DEMO_KEY}, user="operator").status_code == 403
    forged = host.call("POST", "mailchimp/audience", json={"audienceId": DEMO_AUDIENCE, "apiKey": DEMO_KEY},
                       headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403


def test_a_destinations_stored_credential_looks_the_audience_up(host):
    destination = create(host)
    answer = look_up(host, {"audienceId": DEMO_AUDIENCE, "destinationId": destination["id"]})
    assert answer.status_code == 200 and answer.json()["audience"]["id"] == DEMO_AUDIENCE
    draft = host.call("POST", "destinations", json={"displayName": "Draft", "consent": {"accepted": True},
                                                    "audienceId": DEMO_AUDIENCE}).json()
    answer = look_up(host, {"audienceId": DEMO_AUDIENCE, "destinationId": draft["id"]})
    assert answer.status_code == 422 and answer.json()["details"][0]["field"] == "destinationId"


# --- drafts -------------------------------------------------------------------------------------------------------------

def test_a_draft_is_saved_connected_and_refused_for_export_until_configured(host):
    draft = host.call("POST", "destinations", json={"displayName": "Later", "consent": {"accepted": True},
                                                    "audienceId": DEMO_AUDIENCE, "mailchimp": {"apiKey": DEMO_KEY}})
    assert draft.status_code == 201, draft.text
    doc = draft.json()
    assert doc["draft"] is True and doc["mapping"] is None and doc["segments"] == [] and doc["mailchimp"]["connected"]
    refused = host.call("POST", f"destinations/{doc['id']}/exports")
    assert refused.status_code == 409 and "configure the mapping and segments first" in refused.json()["error"]
    done = host.call("PATCH", f"destinations/{doc['id']}", json={"mapping": {"email": "Email"}, "segments": ["LapsedBuyers"]})
    assert done.status_code == 200 and done.json()["draft"] is False
    assert wait_for_run(host, start(host, doc["id"]))["status"] in ("succeeded", "completed_with_errors")


# --- the errors report as CSV -----------------------------------------------------------------------------------------

def pages(host: FunctionsHost, run_id: str, **params: str) -> list[requests.Response]:
    answers, query = [], dict(params)
    while True:
        answer = host.call("GET", f"exports/{run_id}/errors", params=query)
        assert answer.status_code == 200, answer.text
        answers.append(answer)
        if "x-continuation" not in answer.headers:
            return answers
        query = {**params, "continuation": answer.headers["x-continuation"]}


def test_the_csv_report_holds_exactly_the_jsonl_report(host):
    destination = create(host, segments=["HighValueCustomers", "LapsedBuyers"])
    run = wait_for_run(host, start(host, destination["id"]))
    assert run["status"] == "completed_with_errors" and run["counts"]["invalid"] > 0
    lines = [json.loads(line) for answer in pages(host, run["id"], limit="2") for line in answer.text.splitlines()]
    assert len(lines) == run["counts"]["invalid"] + run["counts"]["refused"] + run["counts"]["failed"]
    csv_pages = pages(host, run["id"], format="csv", limit="2")
    assert len(csv_pages) > 1
    for number, answer in enumerate(csv_pages):
        assert answer.headers["Content-Type"].startswith("text/csv") and answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Content-Disposition"] == f'attachment; filename="export-{run["id"]}-errors.csv"'
        assert answer.content.startswith(BOM.encode()) == (number == 0)
    text = b"".join(a.content for a in csv_pages).decode("utf-8").removeprefix(BOM)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(COLUMNS)
    assert rows[1:] == [[cell(line.get(name)) for name in COLUMNS] for line in lines]
    whole = host.call("GET", f"exports/{run['id']}/errors", params={"format": "csv", "limit": "50000"})
    assert whole.content.decode("utf-8").removeprefix(BOM) == text
    assert host.call("GET", f"exports/{run['id']}/errors", params={"format": "csv"}, user="operator").status_code == 404


# --- cancel -------------------------------------------------------------------------------------------------------------

def cancel(host: FunctionsHost, run_id: str, user: str = "admin") -> requests.Response:
    return host.call("POST", f"exports/{run_id}/cancel", user=user, headers={"X-Requested-With": "test"})


def test_the_runs_list_answers_the_newest_top_runs_and_refuses_a_bad_top(host):
    destination = create(host)
    older = wait_for_run(host, start(host, destination["id"]))["id"]
    newer = wait_for_run(host, start(host, destination["id"]))["id"]
    path = f"destinations/{destination['id']}/exports"
    assert [r["id"] for r in host.call("GET", path).json()["exports"]] == [newer, older]
    newest = host.call("GET", path, params={"top": "1"})
    assert newest.status_code == 200, newest.text
    assert [r["id"] for r in newest.json()["exports"]] == [newer]
    for bad in ("0", "101", "x", "-1", "1.5"):
        assert host.call("GET", path, params={"top": bad}).status_code == 400, bad


def test_cancel_stops_a_running_export_is_harmless_twice_and_refused_once_finished(host, mailchimp):
    operator = LOCAL_USERS["operator"]
    destination = create(host, segments=["LapsedBuyers"], exportUsers=[{"email": operator["email"]}])
    mailchimp.admin("POST", "latency", json={"profile": "none", "base_ms": 700})  # planning reads the audience slowly
    run_id = start(host, destination["id"])
    deadline = time.monotonic() + 30
    while (run := host.call("GET", f"exports/{run_id}").json())["status"] != "running":
        assert run["status"] == "queued" and time.monotonic() < deadline, run
        time.sleep(0.05)
    first = cancel(host, run_id, user="operator")  # running: planning, no chunk started
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "cancelling" and first.headers["Location"] == f"/api/exports/{run_id}"
    assert first.json()["message"].startswith(f"cancelled by {operator['email']} at ")
    second = cancel(host, run_id)
    assert second.status_code == 202 and second.json()["status"] in ("cancelling", "cancelled")
    assert second.json()["message"] == first.json()["message"]  # the first cancel stands
    mailchimp.admin("POST", "latency", json={"profile": "none"})
    ended = wait_for_run(host, run_id)
    counts = ended["counts"]
    assert ended["status"] == "cancelled" and ended["message"] == first.json()["message"]
    assert counts["read"] == ROWS["LapsedBuyers"] and counts["failed"] > 0
    assert counts["created"] + counts["updated"] + counts["unchanged"] == 0  # no chunk started sending
    assert_accounted(ended)
    report = [json.loads(line) for line in host.call("GET", f"exports/{run_id}/errors").text.splitlines()]
    assert {line["reason"] for line in report if line["source"] == "failure"} == {f"not sent: {first.json()['message']}"}
    assert cancel(host, run_id).status_code == 202  # cancelled already: nothing to do, and no error

    finished = wait_for_run(host, start(host, destination["id"]))
    refused = cancel(host, finished["id"])
    assert refused.status_code == 409 and refused.json()["status"] == finished["status"]
    assert "already finished" in refused.json()["error"]
    assert cancel(host, "20990101T000000-nothere").status_code == 404


def test_cancel_needs_an_operator_of_the_destination(host):
    destination = create(host, segments=["LapsedBuyers"])  # names no export user
    run_id = start(host, destination["id"])
    assert cancel(host, run_id, user=None).status_code == 401
    assert cancel(host, run_id, user="norole").status_code == 403
    assert cancel(host, run_id, user="operator").status_code == 404  # to them it does not exist
    forged = host.call("POST", f"exports/{run_id}/cancel", headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403
    wait_for_run(host, run_id)


# --- Mailchimp's OAuth redirect, in a browser -------------------------------------------------------------------------

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_a_browser_comes_back_to_the_wizard_after_oauth_and_sees_a_page_when_it_fails(host):
    draft = host.call("POST", "destinations", json={"displayName": "OAuth", "consent": {"accepted": True},
                                                    "audienceId": DEMO_AUDIENCE}).json()
    to_mailchimp = host.call("POST", f"destinations/{draft['id']}/mailchimp/connect", allow_redirects=False)
    assert to_mailchimp.status_code == 200, to_mailchimp.text
    back = requests.get(to_mailchimp.json()["authorizeUrl"], allow_redirects=False, timeout=10)  # auto-approved locally
    callback = back.headers["Location"]
    assert "/api/mailchimp/oauth/callback?" in callback
    landed = requests.get(callback, headers=BROWSER, allow_redirects=False, timeout=30)
    assert landed.status_code == 303, landed.text
    assert landed.headers["Location"] == f"/api/console/#/destinations/{draft['id']}/connect?connected=1"
    assert host.call("GET", f"destinations/{draft['id']}").json()["mailchimp"] == {"connected": True, "method": "oauth"}

    replayed = requests.get(callback, headers=BROWSER, allow_redirects=False, timeout=30)  # the state is spent
    assert replayed.status_code == 400 and replayed.headers["Content-Type"] == "text/html; charset=utf-8"
    assert replayed.headers["Content-Security-Policy"] == CSP
    html = Tags()
    html.feed(replayed.text)
    assert html.inline == [] and not [t for t, _ in html.tags if t == "script"]
    assert "Nothing was stored" in replayed.text and 'href="/api/console/#/destinations"' in replayed.text
    as_json = requests.get(callback, allow_redirects=False, timeout=30)  # a script still gets JSON
    assert as_json.status_code == 400 and "error" in as_json.json()
