"""End to end: the real function_app in the local Functions host, on a fresh Azurite, against the local Mailchimp."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
from azure.storage.blob import BlobServiceClient

from shared.runs import accounted
from tests.services import Azurite, FunctionsHost, LocalMailchimp, start_azurite, start_functions_host

DEMO_KEY = "0123456789abcdef0123456789abcdef-us6"
DEMO_AUDIENCE = "a1b2c3d4e5"
FINISHED = ("succeeded", "completed_with_errors", "failed", "cancelled")


@pytest.fixture
def storage() -> Azurite:
    """A fresh Azurite per test: no queue message or record of one test can reach another."""
    server = start_azurite()
    yield server
    server.stop()


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
    }


@pytest.fixture
def start_host(host_settings: dict[str, str], tmp_path: Path) -> Callable[..., FunctionsHost]:
    hosts: list[FunctionsHost] = []

    def start(lease_seconds: int = 600, extra_args: tuple[str, ...] = (), name: str = "host", **overrides: str) -> FunctionsHost:
        host = start_functions_host({**host_settings, **overrides}, lease_seconds=lease_seconds, log=tmp_path / f"{name}.log",
                                    settings_path=tmp_path / f"{name}.settings.json", extra_args=extra_args)
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


def assert_accounted(run: dict) -> None:
    assert accounted(run["counts"]) == run["counts"]["read"], run["counts"]
    for part in run["segments"]:
        assert accounted(part["counts"]) == part["counts"]["read"], part
