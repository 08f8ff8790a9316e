"""Logs never carry an email address or a credential: awkward datasets run through the real host, then every line of
every log the stack writes is scanned: the Functions hosts' (devhost and the app), the local Mailchimp's and
Azurite's, each started here as `make up` starts it (scripts/stack.py) with its output in a log file of the same name.

Datasets: a headerless plain CSV whose first row (taken as the header) holds addresses, exported on arrival and by
hand; rows that are invalid and hold addresses (bad syntax, wrong field count, broken quoting); addresses the local
Mailchimp refuses as fake; duplicates; and an API key revoked in the middle of an export. And an OAuth connect whose
link carries the function key as `?code=` and whose callback carries Mailchimp's code and the signed state.
"""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.config import QUEUE_SEGMENT_EVENTS
from tests.e2e.conftest import (DEMO_KEY, assert_accounted, create_destination, destination_body, handled_messages,
                                host_log, log_lines, start_export, wait_for, wait_for_run)
from tests.privacy import LOOKS_LIKE_EMAIL
from tests.services import ROOT, Azurite, LocalMailchimp, start_azurite, start_local_mailchimp

EVENTS = ("--blob-events", f"segments={QUEUE_SEGMENT_EVENTS}")
# The log files `make up` writes under .local/logs/ (azurite.log, mailchimp.log, functions.log)
STACK_LOGS = set(re.findall(r'logs / "([\w.-]+\.log)"', (ROOT / "scripts" / "stack.py").read_text(encoding="utf-8")))


# This module's Azurite and local Mailchimp write their logs next to the hosts' (conftest's write none), as the stack's do.

@pytest.fixture
def storage(tmp_path: Path) -> Azurite:
    server = start_azurite(log=tmp_path / "azurite.log")
    yield server
    server.stop()


@pytest.fixture
def mailchimp(tmp_path: Path) -> LocalMailchimp:
    server = start_local_mailchimp(log=tmp_path / "mailchimp.log")
    yield server
    server.stop()


def stack_log_lines(tmp_path: Path) -> list[str]:
    """Every line of every log file the test's services wrote, which are at least those the stack writes."""
    logs = sorted(tmp_path.glob("*.log"))
    assert STACK_LOGS >= {"azurite.log", "mailchimp.log", "functions.log"}, STACK_LOGS  # the pattern still finds them
    assert STACK_LOGS <= {log.name for log in logs}, f"the stack writes {STACK_LOGS}, this test scanned {logs}"
    return [f"{log.name}: {line}" for log in logs for line in log_lines(log)]


def plain(container, segment: str, stamp: str, text: str) -> None:
    folder = f"{segment}/{stamp}/"
    container.upload_blob(folder + "part-0.csv", text.encode(), overwrite=True)
    container.upload_blob(folder + "_SUCCESS", b"", overwrite=True)


def wait_for_chunks(host, run_id: str, done: int) -> None:
    wait_for(lambda: host.call("GET", f"exports/{run_id}").json()["chunks"]["done"] >= done, f"{done} chunks of {run_id}")


def test_no_log_line_of_the_stack_holds_an_address_or_the_api_key(start_host, segments, mailchimp, tmp_path):
    # 0. a snapshot whose header is lost between the check before the run and planning (the part file rewritten
    #    without its header): planning refuses it, naming the columns neither in the logs nor in the run record (the
    #    columns are a customer's address and name; run records outlive the destination and operators read them)
    first = start_host(extra_args=EVENTS, name="first", **{"AzureWebJobs.plan_export.Disabled": "true"})
    changing = create_destination(first, segments=["Changing"], mapping={"email": "Email", "mergeFields": {}},
                                  exportOnArrival=False)
    plain(segments, "Changing", "2026/11/28/1700", "Email,FirstName\r\namy.fourth@contoso.com,Amy\r\n")
    changing_run = start_export(first, changing["id"])
    segments.upload_blob("Changing/2026/11/28/1700/part-0.csv", b"amy.fourth@contoso.com,Amy\r\n", overwrite=True)
    first.stop()

    host = start_host(extra_args=EVENTS, name="functions", EXPORT_CHUNK_SIZE="20")
    log = host_log(tmp_path, "functions")
    failed = wait_for_run(host, changing_run)
    assert failed["status"] == "failed", failed
    assert "amy.fourth@contoso.com" not in json.dumps(host.call("GET", f"destinations/{changing['id']}/exports").json())
    assert "['Email'] missing" in failed["message"] and "2 column(s)" in failed["message"], failed  # what to do:
    assert "header row" in failed["message"] and "fix the" in failed["message"], failed

    # 1. a plain CSV without its header: the first row's addresses become the "columns"
    headerless = create_destination(host, segments=["Headerless"], mapping={"email": "Email", "mergeFields": {}})
    plain(segments, "Headerless", "2026/11/28/1700", "ann.first@contoso.com,Ann,Lee\r\nbob.second@contoso.com,Bob,Ray\r\n")
    wait_for(lambda: handled_messages(log, "segment_arrived"), "the arrival of the headerless snapshot")
    refused = host.call("POST", f"destinations/{headerless['id']}/exports")
    assert refused.status_code == 422  # the admin's answer may name the columns; the logs may not
    assert "ann.first@contoso.com" in refused.json()["error"]

    # 2. invalid rows holding addresses, addresses Mailchimp refuses, duplicates, good rows
    rows = ["Email,FirstName,LastName",
            "carl@contoso.com,Carl,Good",
            "dave@@contoso.com,Dave,Bad",
            "erin@contoso,Erin,Bad",
            "gina@contoso.com,Gina",  # a field short
            "test@contoso.com,Test,Fake",  # refused by the local Mailchimp: looks fake
            "ivy@mailinator.com,Ivy,Fake",
            "CARL@contoso.com,Carl,Duplicate",
            *(f"person{i}@fabrikam.com,P{i},Good" for i in range(30)),
            '"hank@contoso.com,Hank,Broken']  # a quote never closed (last: it may swallow what follows)
    awkward = create_destination(host, segments=["Awkward"], mapping={"email": "Email", "mergeFields": {"FNAME": "FirstName"}},
                                 exportOnArrival=False)
    plain(segments, "Awkward", "2026/11/28/1700", "\r\n".join(rows) + "\r\n")
    run = wait_for_run(host, start_export(host, awkward["id"]))
    assert_accounted(run)
    assert run["counts"]["invalid"] >= 3 and run["counts"]["refused"] >= 2, run["counts"]

    # 3. the API key revoked while an export is sending
    many = create_destination(host, segments=["Many"], mapping={"email": "Email", "mergeFields": {}}, exportOnArrival=False)
    plain(segments, "Many", "2026/11/28/1700", "Email\r\n" + "".join(f"many{i}@northwind.com\r\n" for i in range(600)))
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    run_id = start_export(host, many["id"])
    wait_for_chunks(host, run_id, 1)
    mailchimp.admin("POST", "revoke", json={"api_key": DEMO_KEY})
    revoked = wait_for_run(host, run_id, timeout=120)
    assert revoked["counts"]["failed"] > 0

    # a follow-up snapshot of the headerless segment, for the scheduled/arrival path once more
    handled = len(handled_messages(log, "segment_arrived"))
    plain(segments, "Headerless", "2026/11/28/1800", "zoe.third@contoso.com,Zoe,Ng\r\n")
    wait_for(lambda: len(handled_messages(log, "segment_arrived")) >= handled + 2, "the second headerless snapshot's events")
    time.sleep(0.5)  # the last lines of the handler are flushed after its invocation line

    host.stop()
    mailchimp.stop()  # the last lines are out
    lines = stack_log_lines(tmp_path)
    assert any("function=export_chunk" in line for line in lines)  # the log is the host's and the app's
    assert any(line.startswith("mailchimp.log: Local Mailchimp on") for line in lines)  # and the local Mailchimp's
    leaks = [line for line in lines if LOOKS_LIKE_EMAIL.search(line)]
    assert not leaks, "log lines naming an address:\n" + "\n".join(leaks[:20])
    secret = [line for line in lines if DEMO_KEY in line or DEMO_KEY[:32] in line]
    assert not secret, "log lines holding the API key:\n" + "\n".join(secret[:5])


def test_no_log_line_of_the_stack_holds_a_token_a_session_or_the_oauth_code_state_or_token(start_host, mailchimp,
                                                                                         host_settings, tmp_path):
    """docs/threat-model.md, a caller of the API: an admin signs in (a session cookie) and opens the connect link,
    machines send bearer tokens, Mailchimp's redirect carries its authorization code and the signed state, and neither
    the request logging of the host nor the app's log lines (on success and on refusal) may repeat them."""
    redirect = "http://127.0.0.1:7071/api/mailchimp/oauth/callback"  # the test carries the redirect to the host itself
    host = start_host(name="functions", MAILCHIMP_OAUTH_CLIENT_ID="demo-client",
                      MAILCHIMP_OAUTH_CLIENT_SECRET="demo-client-secret", MAILCHIMP_OAUTH_REDIRECT_URI=redirect,
                      MAILCHIMP_OAUTH_AUTHORIZE_URL=f"{mailchimp.url}/oauth2/authorize",
                      MAILCHIMP_OAUTH_TOKEN_URL=f"{mailchimp.url}/oauth2/token",
                      MAILCHIMP_OAUTH_METADATA_URL=f"{mailchimp.url}/oauth2/metadata")
    body = {k: v for k, v in destination_body().items() if k != "mailchimp"}
    destination = host.call("POST", "destinations", json=body).json()["id"]
    browser = requests.Session()
    signed_in = browser.post(f"{host.origin}/.auth/login/aad", allow_redirects=False, timeout=10,
                             data={"email": "ada.admin@contoso.example", "role": "Exports.Admin"})
    assert signed_in.status_code == 303
    session = browser.cookies["AppServiceAuthSession"]

    def connect() -> tuple[str, str, str]:
        """The admin's browser: the connect POST (signed in by the session cookie), Mailchimp's page, the way back."""
        link = browser.post(f"{host.url}/destinations/{destination}/mailchimp/connect", allow_redirects=False, timeout=30,
                            headers={"X-Requested-With": "XMLHttpRequest"})
        assert link.status_code == 200, link.text
        back = requests.get(link.json()["authorizeUrl"], allow_redirects=False, timeout=10)
        assert back.status_code == 302 and back.headers["Location"].startswith(redirect + "?"), back.headers
        query = urlsplit(back.headers["Location"]).query
        values = parse_qs(query)
        return query, values["code"][0], values["state"][0]

    def callback(query: str) -> requests.Response:
        return requests.get(f"{host.url}/mailchimp/oauth/callback?{query}", timeout=30)

    query, code, state = connect()
    forged = callback(f"code={code}&state=x{state}")
    assert forged.status_code == 400, forged.text
    connected = callback(query)
    assert connected.status_code == 200, connected.text
    replayed = callback(query)
    assert replayed.status_code == 400, replayed.text
    _, unused_code, unused_state = connect()
    assert callback(f"code={unused_code}&state={unused_state}&error=access_denied").status_code == 403
    assert callback(f"code={unused_code}").status_code == 400  # no state at all

    assert host.call("GET", "destinations", user="operator").status_code == 200  # an operator's token too
    assert host.call("GET", "destinations", headers={"Authorization": "Bearer not-a-token-of-anyone"}).status_code == 401
    secret = json.loads(next(p for p in Path(host_settings["LOCAL_SECRETS_DIR"]).glob(f"mailchimp-{destination}*")
                             if p.is_file() and "." not in p.name).read_text())
    nonces = [json.loads(base64.urlsafe_b64decode(s.split(".")[0] + "==="))["n"] for s in (state, unused_state)]
    host.stop()
    mailchimp.stop()  # the last lines are out
    lines = stack_log_lines(tmp_path)
    assert any("function=mailchimp_oauth_callback" in line for line in lines), lines  # the callbacks were logged
    values = {"admin's token": host.tokens["admin"], "operator's token": host.tokens["operator"],
              "session cookie": session, "session signature": session.split(".")[1],
              "refused token": "not-a-token-of-anyone", "access token": secret["accessToken"],
              "OAuth code": code, "unused OAuth code": unused_code, "OAuth state": state, "unused state": unused_state,
              "state signature": state.split(".")[1], "state nonce": nonces[0], "unused state nonce": nonces[1]}
    leaks = {name: [line for line in lines if value in line or value[:16] in line] for name, value in values.items()}
    assert not any(leaks.values()), "log lines holding " + "; ".join(f"the {name}: {found[:3]}"
                                                                    for name, found in leaks.items() if found)
