"""Managing destinations through the local Functions host: OAuth and API keys, consent, mapping checks, revocation
and deletion, against empty storage in Azurite and the local Mailchimp."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from shared.sample_segments import write_sample_export
from tests.e2e.conftest import (DEMO_AUDIENCE, DEMO_KEY, assert_accounted, create_destination, destination_body,
                                host_log, start_export, wait_for_clean_up, wait_for_run)
from tests.services import LOCAL_USERS

TAKEN = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
REDIRECT = "http://127.0.0.1:7071/api/mailchimp/oauth/callback"  # the test carries the redirect to the host itself


@pytest.fixture
def host(start_host, mailchimp):
    return start_host(MAILCHIMP_OAUTH_CLIENT_ID="demo-client", MAILCHIMP_OAUTH_CLIENT_SECRET="demo-client-secret",
                      MAILCHIMP_OAUTH_REDIRECT_URI=REDIRECT,
                      MAILCHIMP_OAUTH_AUTHORIZE_URL=f"{mailchimp.url}/oauth2/authorize",
                      MAILCHIMP_OAUTH_TOKEN_URL=f"{mailchimp.url}/oauth2/token",
                      MAILCHIMP_OAUTH_METADATA_URL=f"{mailchimp.url}/oauth2/metadata")


@pytest.fixture
def secrets_dir(host_settings) -> Path:
    return Path(host_settings["LOCAL_SECRETS_DIR"])


def secret_file(secrets_dir: Path, destination_id: str) -> Path | None:
    """The destination's stored credential: one secret per credential (mailchimp-<id>-<credential id>)."""
    found = [p for p in secrets_dir.glob(f"mailchimp-{destination_id}*") if p.is_file() and "." not in p.name]
    assert len(found) <= 1, found
    return found[0] if found else None


def upload(container, rows: int, **more: int) -> None:
    write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True),
                        segments={"HighValueCustomers": rows, **more}, taken_at=TAKEN, rows_per_partition=1000)


def without_key(**overrides) -> dict:
    return {k: v for k, v in destination_body(**overrides).items() if k != "mailchimp"}


def mailchimp_redirect(host, destination_id: str) -> str:
    """Follow connect to Mailchimp's authorize page, which (auto-approving) redirects back with code and state."""
    connect = host.call("POST", f"destinations/{destination_id}/mailchimp/connect", allow_redirects=False)
    assert connect.status_code == 200, connect.text
    assert "Location" not in connect.headers
    back = requests.get(connect.json()["authorizeUrl"], allow_redirects=False, timeout=10)
    assert back.status_code == 302
    location = back.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return urlsplit(location).query


def callback(host, query: str) -> requests.Response:
    return requests.get(f"{host.url}/mailchimp/oauth/callback?{query}", timeout=30)  # nobody signed in


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (DEMO_KEY, *secrets):
        assert secret not in text


def test_oauth_flow_connects_stores_the_token_in_the_secret_store_and_refuses_a_replay(host, segments, secrets_dir, tmp_path):
    upload(segments, 40)
    created = host.call("POST", "destinations", json=without_key())
    assert created.status_code == 201, created.text
    destination = created.json()
    assert destination["mailchimp"] == {"connected": False, "method": "none"}
    refused = host.call("POST", f"destinations/{destination['id']}/exports")
    assert refused.status_code == 409 and "not connected" in refused.json()["error"]

    query = mailchimp_redirect(host, destination["id"])
    answer = callback(host, query)
    assert answer.status_code == 200, answer.text
    assert answer.json()["connected"] is True
    secret = json.loads(secret_file(secrets_dir, destination['id']).read_text())
    assert secret["kind"] == "oauth" and secret["dc"] == "us6" and "apiEndpoint" not in secret  # host built from dc
    assert oct(secret_file(secrets_dir, destination['id']).stat().st_mode & 0o777) == "0o600"
    token = secret["accessToken"]

    shown = host.call("GET", f"destinations/{destination['id']}")
    assert shown.json()["mailchimp"] == {"connected": True, "method": "oauth"}
    # the callback carries no session of its own: the change is the admin's who asked to connect (by object ID, as
    # the state travels through Mailchimp), in the record and in the audit log
    admin_id = LOCAL_USERS["admin"]["id"]
    assert shown.json()["updatedBy"] == admin_id
    assert f"action=destination.connected destination={destination['id']} method=oauth principal={admin_id}" in \
        host_log(tmp_path).read_text()
    for text in (shown.text, host.call("GET", "destinations").text, answer.text):
        assert_no_secret(text, token)

    replayed = callback(host, query)
    assert replayed.status_code == 400 and "already used" in replayed.json()["error"]
    assert json.loads(secret_file(secrets_dir, destination['id']).read_text())["accessToken"] == token

    run = wait_for_run(host, start_export(host, destination["id"]))  # the stored token really works
    assert run["status"] in ("succeeded", "completed_with_errors") and run["counts"]["created"] > 0


def test_denied_access_and_a_forged_state_store_nothing(host, mailchimp, secrets_dir):
    destination = host.call("POST", "destinations", json=without_key()).json()
    mailchimp.admin("POST", "oauth", json={"deny": True})
    query = mailchimp_redirect(host, destination["id"])
    assert parse_qs(query)["error"] == ["access_denied"]
    denied = callback(host, query)
    assert denied.status_code == 403 and "not granted" in denied.json()["error"]

    mailchimp.admin("POST", "oauth", json={"deny": False})
    good = parse_qs(mailchimp_redirect(host, destination["id"]))
    forged = callback(host, f"code={good['code'][0]}&state=x{good['state'][0]}")
    assert forged.status_code == 400 and "altered" in forged.json()["error"]
    assert callback(host, f"code={good['code'][0]}").status_code == 400  # no state at all
    assert secret_file(secrets_dir, destination['id']) is None
    assert host.call("GET", f"destinations/{destination['id']}").json()["mailchimp"]["connected"] is False


def test_connect_needs_an_admin_and_an_existing_destination(host):
    destination = create_destination(host, **{"exportUsers": [{"email": "oscar.operator@contoso.example"}]})
    path = f"destinations/{destination['id']}/mailchimp/connect"
    assert host.call("POST", path, user=None, allow_redirects=False).status_code == 401
    assert host.call("POST", path, user="operator", allow_redirects=False).status_code == 403  # an export user, no admin
    assert host.call("POST", "destinations/nope/mailchimp/connect", allow_redirects=False).status_code == 404
    assert host.call("GET", path, allow_redirects=False).status_code in (404, 405)  # no OAuth state from a GET link


def test_an_invalid_api_key_is_refused_with_a_clear_message_and_nothing_stored(host, mailchimp, secrets_dir):
    malformed = host.call("POST", "destinations", json=destination_body(mailchimp={"apiKey": "not-a-key"}))
    assert malformed.status_code == 400
    assert "malformed" in malformed.json()["details"][0]["message"] and "not-a-key" not in malformed.text

    unknown_key = "ffffffffffffffffffffffffffffffff-us6"
    refused = host.call("POST", "destinations", json=destination_body(mailchimp={"apiKey": unknown_key}))
    assert refused.status_code == 400
    assert refused.json()["details"] == [{"field": "mailchimp.apiKey", "message": refused.json()["details"][0]["message"]}]
    assert "refused this credential" in refused.text and unknown_key not in refused.text
    assert host.call("GET", "destinations").json() == {"destinations": []}
    assert not secrets_dir.exists() or not list(secrets_dir.glob("mailchimp-*"))

    destination = create_destination(host)  # a good key; then a PATCH with a dead one changes nothing
    patched = host.call("PATCH", f"destinations/{destination['id']}", json={"mailchimp": {"apiKey": unknown_key}})
    assert patched.status_code == 400 and "refused this credential" in patched.text
    assert json.loads(secret_file(secrets_dir, destination['id']).read_text())["apiKey"] == DEMO_KEY


def test_consent_missing_is_refused_and_withdrawn_consent_stops_exports(host, segments):
    upload(segments, 40)
    missing = host.call("POST", "destinations", json=destination_body(consent={"accepted": False}))
    assert missing.status_code == 400 and missing.json()["details"][0]["field"] == "consent.accepted"

    destination = create_destination(host)
    admin = "ada.admin@contoso.example"  # the verified caller; a name header the caller sends is no identity
    assert destination["consent"]["acceptedBy"] == admin
    withdrawn = host.call("PATCH", f"destinations/{destination['id']}", json={"consent": {"accepted": False}},
                          headers={"X-MS-CLIENT-PRINCIPAL-NAME": "dpo@contoso.example"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["consent"]["withdrawnBy"] == admin
    refused = host.call("POST", f"destinations/{destination['id']}/exports")
    assert refused.status_code == 409 and "consent" in refused.json()["error"]

    again = host.call("PATCH", f"destinations/{destination['id']}", json={"consent": {"accepted": True}},
                      headers={"X-MS-CLIENT-PRINCIPAL-NAME": "someone.else@contoso.example"})
    assert again.json()["consent"]["acceptedBy"] == admin
    assert wait_for_run(host, start_export(host, destination["id"]))["status"] in ("succeeded", "completed_with_errors")


def test_a_missing_merge_field_is_refused_then_created_with_the_cdm_type_on_request(host, segments, mailchimp):
    upload(segments, 40)  # its model.json says LifetimeValue is a decimal
    mapping = {"email": "Email", "mergeFields": {"FNAME": "FirstName", "LTV": "LifetimeValue"}}
    refused = host.call("POST", "destinations", json=destination_body(mapping=mapping))
    assert refused.status_code == 400
    assert refused.json()["details"][0]["field"] == "mapping.mergeFields.LTV"
    assert "createMissingMergeFields" in refused.json()["details"][0]["message"]
    assert host.call("GET", "destinations").json() == {"destinations": []}

    destination = create_destination(host, mapping=mapping, createMissingMergeFields=True)
    fields = requests.get(f"{mailchimp.api_root}/lists/{DEMO_AUDIENCE}/merge-fields", auth=("x", DEMO_KEY), timeout=10).json()
    assert {f["tag"]: f["type"] for f in fields["merge_fields"]}["LTV"] == "number"

    renamed = host.call("PATCH", f"destinations/{destination['id']}", json={"mapping": {"mergeFields": {"CITY": "City"}}})
    assert renamed.status_code == 400 and renamed.json()["details"][0]["field"] == "mapping.mergeFields.CITY"
    assert host.call("GET", f"destinations/{destination['id']}").json()["mapping"] == mapping


def test_credentials_revoked_mid_export_end_the_run_fast_with_the_reconnect_message(start_host, segments, mailchimp):
    upload(segments, 4000)
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    host = start_host(EXPORT_CHUNK_SIZE="100")  # many chunks, so most are still queued when the key dies
    destination = create_destination(host)
    run_id = start_export(host, destination["id"])
    wait_for_chunks(host, run_id, 1)
    mailchimp.admin("POST", "revoke", json={"api_key": DEMO_KEY})
    run = wait_for_run(host, run_id, timeout=60)
    assert_accounted(run)
    # nothing retried forever: after the first 401 the other chunks fail without asking Mailchimp (2 tries per chunk
    # otherwise: the call, and one more after re-reading the credential)
    assert mailchimp.stats()["by_status"].get("401", 0) < 2 * (run["counts"]["failed"] // 100)
    assert run["counts"]["failed"] > 0 and run["status"] in ("failed", "completed_with_errors")
    errors = [json.loads(line) for line in host.call("GET", f"exports/{run_id}/errors").text.splitlines()]
    failed = [e for e in errors if e["source"] == "failure"]
    assert len(failed) == run["counts"]["failed"]
    assert all("reconnect" in e["reason"] for e in failed)


def test_delete_during_an_export_cancels_it_removes_secrets_and_personal_data_and_keeps_the_counts(start_host, segments, mailchimp, secrets_dir, storage):
    upload(segments, 8000, Small=40)
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    # One Mailchimp call at a time, so most of the 16 chunks are still unsent when the delete lands; and threads to
    # spare (more than the queue's batchSize + newBatchThreshold), so the DELETE is not queued behind the chunk
    # handlers (6 threads by default on 2 cores: it used to run after most chunks had been sent, and a run whose
    # chunks were all received first had nothing left to fail)
    host = start_host(MAILCHIMP_MAX_CONNECTIONS="1", PYTHON_THREADPOOL_THREAD_COUNT="32")
    destination = create_destination(host, segments=["HighValueCustomers", "Small"])
    first = wait_for_run(host, start_export(host, destination["id"], segments=["Small"]))
    assert host.call("GET", f"exports/{first['id']}/errors").status_code == 200
    run_id = start_export(host, destination["id"], segments=["HighValueCustomers"])
    wait_for_chunks(host, run_id, 1)

    assert host.call("DELETE", f"destinations/{destination['id']}").status_code == 204
    assert host.call("GET", f"destinations/{destination['id']}").status_code == 404
    assert secret_file(secrets_dir, destination['id']) is None
    run = wait_for_settled(host, run_id)
    assert run["status"] == "cancelled" and run["message"] == "the destination was deleted"
    assert_accounted(run)
    assert run["counts"]["failed"] > 0 and run["chunks"]["done"] == run["chunks"]["total"]
    assert host.call("DELETE", f"destinations/{destination['id']}").status_code == 204  # twice is fine
    kept = host.call("GET", f"exports/{first['id']}")
    assert kept.status_code == 200 and kept.json()["counts"] == first["counts"]
    gone = host.call("GET", f"exports/{first['id']}/errors")
    assert gone.status_code == 410 and "@" not in gone.text
    wait_for_clean_up(storage, run_id)
    work = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client("export-work")
    deadline = time.monotonic() + 10  # the files go right after the run's last chunk is counted
    while (leftover := [b.name for b in work.list_blobs(name_starts_with="runs/")]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftover == []  # chunks, saved answers and error reports of both runs named people: all removed


def wait_for_chunks(host, run_id: str, done: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while host.call("GET", f"exports/{run_id}").json()["chunks"]["done"] < done:
        assert time.monotonic() < deadline, f"run {run_id} did not reach {done} chunk(s)"
        time.sleep(0.1)


def wait_for_settled(host, run_id: str, timeout: float = 60) -> dict:
    """A cancelled run is over at once, but its queued chunks still have to be counted before finishedAt is set."""
    deadline = time.monotonic() + timeout
    while (run := host.call("GET", f"exports/{run_id}").json())["finishedAt"] is None:
        assert time.monotonic() < deadline, f"run {run_id} did not settle: {run}"
        time.sleep(0.2)
    return run
