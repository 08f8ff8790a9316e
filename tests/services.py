"""Start the real services the tests talk to: Azurite and the local Mailchimp, each on free ports."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft); it only opens the local emulator.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s")


@dataclass
class Azurite:
    process: subprocess.Popen
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{AZURITE_ACCOUNT};"
        )

    def stop(self) -> None:
        stop_process(self.process)


def start_azurite() -> Azurite:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise RuntimeError("Azurite is not installed: run `make install` (npm install) first")
    blob, queue, table = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [str(binary), "--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
         "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost", "127.0.0.1", "--queuePort", str(queue),
         "--tableHost", "127.0.0.1", "--tablePort", str(table)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    azurite = Azurite(process, blob, queue, table)

    def ready() -> bool:
        for port in (blob, queue, table):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        return True

    wait_until(ready, "Azurite")
    return azurite


@dataclass
class LocalMailchimp:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_root(self) -> str:
        return f"{self.url}/3.0"

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, f"{self.url}/__admin/{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def reset(self) -> None:
        self.admin("POST", "reset")

    def stats(self) -> dict:
        return self.admin("GET", "stats").json()

    def stop(self) -> None:
        stop_process(self.process)


def start_local_mailchimp(*extra_args: str, env: dict[str, str] | None = None) -> LocalMailchimp:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailchimp_local", "--host", "127.0.0.1", "--port", str(port), *extra_args],
        cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    server = LocalMailchimp(process, port)
    wait_until(lambda: requests.get(f"{server.url}/__admin/stats", timeout=1).ok, "local Mailchimp")
    return server


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
