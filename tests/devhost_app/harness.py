"""Running the sample app under a real devhost process against Azurite, for the devhost tests."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.storage.queue import QueueClient

from devhost.launcher import RunningHost, start_host
from devhost.queue_listener import ensure_queue
from tests.devhost_app import outbox
from tests.services import Azurite

REPO = Path(__file__).resolve().parent.parent.parent
SETTINGS = Path(__file__).resolve().parent / "sample.settings.json"
APP = "tests.devhost_app.function_app"
KEY = "sample-function-key"
FAST_QUEUES = {"maxPollingInterval": "00:00:00.200"}
T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll PROBE until it returns something truthy; fail naming WHAT otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def unique(prefix: str) -> str:
    """A storage-safe name no other test uses, since all tests share one Azurite."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class SampleApp:
    """One app root (host.json, state, outbox, logs) that hosts can be started on, stopped and restarted."""

    root: Path
    azurite: Azurite
    env: dict[str, str]
    hosts: list[RunningHost] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, azurite: Azurite, queues: dict[str, Any] | None = None,
               http: dict[str, Any] | None = None, **env: str) -> SampleApp:
        """Write host.json (fast queue polling plus QUEUES and HTTP options); ENV adds or overrides settings."""
        extensions = {"queues": {**FAST_QUEUES, **(queues or {})}, "http": http or {}}
        root.mkdir(parents=True, exist_ok=True)
        (root / "host.json").write_text(json.dumps({"version": "2.0", "extensions": extensions}))
        env = {"AzureWebJobsStorage": azurite.connection_string, "SAMPLE_OUTBOX": str(root / "outbox.jsonl"),
               "WORK_QUEUE": unique("work"), **env}
        return cls(root, azurite, env)

    def start(self, *args: str) -> RunningHost:
        host = start_host(["--app", APP, "--root", str(self.root), "--settings", str(SETTINGS), "--port", "0",
                           "--function-key", KEY, *args], cwd=REPO, log_dir=self.root / "logs", env=self.env)
        self.hosts.append(host)
        return host

    def records(self, function: str) -> list[dict[str, Any]]:
        return outbox.read(self.root / "outbox.jsonl", function)

    def queue(self, name: str | None = None) -> QueueClient:
        client = QueueClient.from_connection_string(self.azurite.connection_string, name or self.env["WORK_QUEUE"])
        ensure_queue(client)
        return client


@pytest.fixture
def make_app(tmp_path: Path, azurite: Azurite) -> Iterator[Callable[..., SampleApp]]:
    """Factory fixture: SampleApp.create(...) in a fresh folder; every host it started is killed afterwards."""
    apps: list[SampleApp] = []

    def make(queues: dict[str, Any] | None = None, http: dict[str, Any] | None = None, **env: str) -> SampleApp:
        app = SampleApp.create(tmp_path / f"app{len(apps)}", azurite, queues, http, **env)
        apps.append(app)
        return app

    yield make
    for app in apps:
        for host in app.hosts:
            host.kill()
