"""End to end: the real function_app in the local Functions host, on empty storage in Azurite, against the local Mailchimp."""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Callable

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.tables import RunTable

from shared.config import TABLE_RUNS
from tests.services import Azurite, FunctionsHost, LocalMailchimp, start_functions_host, table_service

DEMO_KEY = "0123456789abcdef0123456789abcdef-us6"
DEMO_AUDIENCE = "a1b2c3d4e5"
FINISHED = ("succeeded", "completed_with_errors", "failed", "cancelled")


@pytest.fixture
def storage(storage_accounts) -> Azurite:
    """Empty storage per test, a storage account of its own on the session's Azurite (tests/conftest.py,
    StorageAccounts): no queue message or record of one test can reach another. The hosts a test started are stopped
    before it is emptied (start_host depends on this fixture)."""
    account = storage_accounts.fresh()
    yield account
    storage_accounts.empty(account)


@pytest.fixture
def segments(storage: Azurite):
    container = BlobServiceClient.from_connection_string(storage.connection_string).get_container_client("segments")
    container.create_container()
    return container


@pytest.fixture
def host_settings(storage: Azurite, mailchimp: LocalMailchimp, tmp_path: Path) -> dict[str, str]:
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": storage.connection_string,
        "SEGMENTS_CONTAINER": "segments",
        "MAILCHIMP_API_BASE_URL": mailchimp.api_root,
        "MAILCHIMP_MAX_CONNECTIONS": "10",
        "EXPORT_SCHEDULE": "0 0 0 1 1 *",  # effectively never, unless a test sets its own
        "LOCAL_SECRETS_DIR": str(tmp_path / "secrets"),
        "MAILCHIMP_RETRY_SECONDS": "3",
        # the daily retention sweep (02:30 UTC) off: a suite running at that hour would have it sweep mid-test;
        # tests/e2e/test_retention.py turns it back on and keeps clear of its hour
        "AzureWebJobs.retention_sweep.Disabled": "true",
        # the 15-minute sweep of stranded erasure requests off too: in the storage every test here shares, a request
        # a test left stranded on purpose would be queued under another test (tests/unit/test_erasures.py tests it)
        "AzureWebJobs.erasure_stranded_sweep.Disabled": "true",
    }


@pytest.fixture
def start_host(host_settings: dict[str, str], tmp_path: Path) -> Callable[..., FunctionsHost]:
    hosts: list[FunctionsHost] = []

    def start(lease_seconds: int = 600, extra_args: tuple[str, ...] = (), name: str = "host", auth: bool = True,
              **overrides: str) -> FunctionsHost:
        """auth=False: the host without App Service Authentication (--no-auth), as an app deployed without it."""
        host = start_functions_host({**host_settings, **overrides}, lease_seconds=lease_seconds, log=tmp_path / f"{name}.log",
                                    settings_path=tmp_path / f"{name}.settings.json", extra_args=extra_args, auth=auth)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()


def destination_body(**overrides) -> dict:
    return {
        "displayName": "Newsletter",
        "consent": {"accepted": True},
        "audienceId": DEMO_AUDIENCE,
        "mailchimp": {"apiKey": DEMO_KEY},
        "mapping": {"email": "Email", "mergeFields": {"FNAME": "FirstName", "LNAME": "LastName"}},
        "segments": ["HighValueCustomers"],
        **overrides,
    }


def create_destination(host: FunctionsHost, **overrides) -> dict:
    response = host.call("POST", "destinations", json=destination_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def start_export(host: FunctionsHost, destination_id: str, **body) -> str:
    response = host.call("POST", f"destinations/{destination_id}/exports", json=body or None)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/api/exports/{response.json()['id']}"
    return response.json()["id"]


def wait_for_run(host: FunctionsHost, run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = host.call("GET", f"exports/{run_id}").json()
        if run["status"] in FINISHED:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s: {run}")


def wait_for_clean_up(storage: Azurite, run_id: str, timeout: float = 60) -> None:
    """Until the clean-up after the run's end is done (shared/exports/chunks.py, `_clean_up`): it deletes the chunk
    files after the run reads as finished, so a test that reads the work container must wait for it first. For a run
    that sent (a preview has no clean-up, and never gets the mark)."""
    runs = RunTable(table_service(storage.connection_string), TABLE_RUNS)

    def cleaned_up() -> bool:
        run = runs.get(run_id, counts=False)
        assert run is not None, f"run {run_id} has no record"
        return bool(run.details.get("cleanedUp"))

    wait_for(cleaned_up, f"the clean-up after run {run_id}", timeout=timeout, every=0.3)


# README: `read = invalid + duplicates + created + updated + unchanged + refused + failed` once a run has finished
# (written out here rather than taken from shared.runs, so the app's own sum is what gets checked).
EQUATION = ("invalid", "duplicates", "created", "updated", "unchanged", "refused", "failed")


def assert_accounted(run: dict) -> None:
    for counts in [run["counts"], *(part["counts"] for part in run["segments"])]:
        assert sum(counts[key] for key in EQUATION) == counts["read"], (run["status"], run["message"], run)


# --- what the host did, read from its log and its state file (positive signals instead of sleeping) ------------------

_INVOCATION = re.compile(r"function=(?P<function>\S+) trigger=\S+ outcome=(?P<outcome>\S+)(?:.* message_id=(?P<message>\S+))?")


def blob_created(blob_name: str, container: str = "segments") -> str:
    """A queue message holding the BlobCreated event Event Grid delivers for `blob_name` (base64, as the host reads it)."""
    event = {"id": blob_name, "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-11-28T17:00:00Z",
             "subject": f"/blobServices/default/containers/{container}/blobs/{blob_name}", "data": {}, "dataVersion": "",
             "metadataVersion": "1", "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z"}
    return base64.b64encode(json.dumps(event).encode()).decode()


def host_log(tmp_path: Path, name: str = "host") -> Path:
    """The log start_host(name=...) writes: devhost's one line per invocation and the app's own log lines."""
    return tmp_path / f"{name}.log"


def host_state(tmp_path: Path, name: str = "host") -> Path:
    """The devhost state file of start_host(name=...): timer schedule status, blobs announced."""
    return tmp_path / f"{name}.settings.state.json"


def log_lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []


def handled_messages(log: Path, function: str) -> list[str]:
    """Message ids (one per invocation, repeats kept) of queue messages `function` handled successfully."""
    found = []
    for line in log_lines(log):
        match = _INVOCATION.search(line)
        if match and match["function"] == function and match["outcome"] == "succeeded":
            found.append(match["message"] or "")
    return found


def wait_for(check: Callable[[], object], what: str, timeout: float = 60, every: float = 0.2) -> object:
    """Poll every `every` seconds until check() returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def chunks_counted(runs: RunTable, run_id: str, at_least: int) -> Callable[[], bool]:
    """A check for wait_for: the run's plan frozen, and at least that many of its chunks counted."""
    def check() -> bool:
        run = runs.get(run_id)
        return run.total_chunks is not None and run.chunks_done >= at_least
    return check


def assert_cut_mid_run(runs: RunTable, run_id: str) -> None:
    """A host killed now left the run unfinished, with chunks still to count: the kill proves something."""
    cut = runs.get(run_id)
    assert cut.finished_at is None and cut.chunks_done < cut.total_chunks, (cut.chunks_done, cut.total_chunks)
