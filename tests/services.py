"""Start the real services the tests talk to: Azurite and the local Mailchimp, each on free ports."""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from shared.auth import ADMIN, OPERATOR

ROOT = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft); it only opens the local emulator.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# Ports free_port() handed out lately, by any process of this user on this machine: parallel test workers (pytest-xdist)
# start their services at the same time, and a port picked but not yet bound by its server looks free to the others.
_PORTS_HANDED_OUT = Path(tempfile.gettempdir()) / f"mailchimp-connector-test-ports-{os.getuid()}"
_PORT_HELD_SECONDS = 120.0  # a server binds its port within seconds of free_port()


def free_port() -> int:
    """A port nothing listens on, and that no other free_port() call handed out in the last two minutes."""
    fd = os.open(_PORTS_HANDED_OUT, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+", encoding="ascii") as handed_out:
        fcntl.flock(handed_out, fcntl.LOCK_EX)  # released when the file is closed
        now = time.time()
        recent: dict[int, float] = {}
        for entry in handed_out.read().split():  # "port@unix time" each
            try:
                port, at = (int(entry.partition("@")[0]), float(entry.partition("@")[2]))
            except ValueError:
                continue
            if now - at < _PORT_HELD_SECONDS:
                recent[port] = at
        for _ in range(200):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in recent:
                break
        recent[port] = now
        handed_out.seek(0)
        handed_out.truncate()
        handed_out.write(" ".join(f"{p}@{at:.1f}" for p, at in recent.items()))
    return port


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
    account: str = AZURITE_ACCOUNT  # the storage account connection_string names
    accounts: tuple[str, ...] = (AZURITE_ACCOUNT,)  # every account this Azurite serves
    owner: bool = True  # False for the view for_account() gives: stop() leaves the process to its owner

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{self.account};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{self.account};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{self.account};"
        )

    def for_account(self, name: str) -> Azurite:
        """The same Azurite, as another of its storage accounts (each has its own containers, queues and tables)."""
        if name not in self.accounts:
            raise ValueError(f"this Azurite serves no account {name!r}")
        return replace(self, account=name, owner=False)

    def stop(self) -> None:
        if self.owner:
            stop_process(self.process)


def table_service(connection_string: str):  # -> azure.data.tables.TableServiceClient (imported when called)
    """A tables client on the app's own transport (shared/adapters/storage.py), whose pools reuse no connection Azurite
    may be closing as idle: the SDK's default transport does, and the tables SDK retries no insert or merge that fails
    so. Tests that write to tables themselves use this."""
    from azure.data.tables import TableServiceClient

    from shared.adapters.storage import requests_transport
    return TableServiceClient.from_connection_string(connection_string, transport=requests_transport())


def start_azurite(ports: tuple[int, int, int] | None = None, location: Path | None = None, log: Path | None = None,
                  extra_accounts: int = 0) -> Azurite:
    """Azurite on free ports in memory (tests), or on given ports persisting under `location` (the local stack).
    extra_accounts: that many storage accounts besides devstoreaccount1 (`test0001`, ...; AZURITE_ACCOUNTS, with the
    same well-known key), for tests that each want empty storage of their own without starting an Azurite each."""
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise RuntimeError("Azurite is not installed: run `make install` (npm install) first")
    blob, queue, table = ports or (free_port(), free_port(), free_port())
    persistence = ["--location", str(location)] if location else ["--inMemoryPersistence"]
    accounts = (AZURITE_ACCOUNT, *(f"test{n:04d}" for n in range(1, extra_accounts + 1)))
    env = {**os.environ, "AZURITE_ACCOUNTS": ";".join(f"{name}:{AZURITE_KEY}" for name in accounts)} if extra_accounts else None
    process = subprocess.Popen(
        [str(binary), "--silent", *persistence, "--disableTelemetry", "--skipApiVersionCheck",
         "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost", "127.0.0.1", "--queuePort", str(queue),
         "--tableHost", "127.0.0.1", "--tablePort", str(table)],
        stdout=_output(log), stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    azurite = Azurite(process, blob, queue, table, accounts=accounts)

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


def start_local_mailchimp(*extra_args: str, env: dict[str, str] | None = None, port: int | None = None,
                          log: Path | None = None) -> LocalMailchimp:
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailchimp_local", "--host", "127.0.0.1", "--port", str(port), *extra_args],
        cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=_output(log), stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = LocalMailchimp(process, port)
    wait_until(lambda: requests.get(f"{server.url}/__admin/stats", timeout=1).ok, "local Mailchimp")
    return server


def _output(log: Path | None):
    return open(log, "ab") if log else subprocess.DEVNULL


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The callers of the local host's App Service Authentication (devhost/easyauth.py), one bearer token each: written to
# an owner-only tokens file by start_functions_host and by `make up` (scripts/stack.py).
LOCAL_USERS: dict[str, dict] = {
    "admin": {"id": "0a0a0a0a-0000-4000-8000-00000000ad01", "name": "Ada Admin", "email": "ada.admin@contoso.example",
              "roles": [ADMIN], "kind": "user"},
    "operator": {"id": "0b0b0b0b-0000-4000-8000-0000000000e1", "name": "Oscar Operator",
                 "email": "oscar.operator@contoso.example", "roles": [OPERATOR], "kind": "user"},
    "norole": {"id": "0c0c0c0c-0000-4000-8000-000000000000", "name": "Nina Norole", "email": "nina.norole@contoso.example",
               "roles": [], "kind": "user"},
    "machine": {"id": "0d0d0d0d-0000-4000-8000-0000000000a9", "name": "nightly-sync", "roles": [OPERATOR], "kind": "app"},
}


def write_auth_tokens(path: Path) -> dict[str, str]:
    """A fresh token per LOCAL_USERS entry, written owner-only (devhost refuses others); returns user -> token."""
    tokens = {user: secrets.token_urlsafe(24) for user in LOCAL_USERS}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({token: LOCAL_USERS[user] for user, token in tokens.items()}, f, indent=1)
    os.chmod(path, 0o600)
    return tokens


def read_auth_tokens(path: Path) -> dict[str, str]:
    """user -> token of a tokens file write_auth_tokens wrote."""
    by_id = {entry["id"]: user for user, entry in LOCAL_USERS.items()}
    return {by_id[entry["id"]]: token for token, entry in json.loads(path.read_text()).items() if entry.get("id") in by_id}


@dataclass
class FunctionsHost:
    process: subprocess.Popen
    port: int
    tokens: dict[str, str]  # LOCAL_USERS name -> bearer token; empty for a host without authentication

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth(self, user: str | None = "admin") -> dict[str, str]:
        """The Authorization header of `user` (LOCAL_USERS), {} for None (nobody signed in)."""
        return {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}

    def call(self, method: str, path: str, *, user: str | None = "admin", **kwargs) -> requests.Response:
        """A request as `user` (default the local admin; None: without any identity)."""
        headers = {**self.auth(user), **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/{path.lstrip('/')}", headers=headers, timeout=60, **kwargs)

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        """Like a crashed instance: no chance to finish or hand back anything."""
        os.killpg(self.process.pid, 9)
        self.process.wait()


def start_functions_host(values: dict[str, str], *, port: int | None = None, lease_seconds: int = 600,
                         log: Path | None = None, settings_path: Path | None = None, tokens_path: Path | None = None,
                         auth: bool = True, extra_args: tuple[str, ...] = ()) -> FunctionsHost:
    """The local Functions host running the real function_app, with `values` as its app settings, behind the local
    App Service Authentication: bearer tokens of LOCAL_USERS from `tokens_path` (written there if missing; default:
    beside the settings). auth=False: without it (--no-auth), as an app deployed without authentication."""
    port = port or free_port()
    if settings_path is None:
        settings_path = Path(tempfile.mkdtemp(prefix="functions-settings-")) / "local.settings.json"
    settings_path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    env = {k: v for k, v in os.environ.items() if k not in values}
    tokens: dict[str, str] = {}
    if auth:
        tokens_path = tokens_path or settings_path.with_name(settings_path.stem + ".auth-tokens.json")
        tokens = read_auth_tokens(tokens_path) if tokens_path.exists() else write_auth_tokens(tokens_path)
    authentication = ["--auth-tokens", str(tokens_path)] if auth else ["--no-auth"]  # a path: no token in `ps`
    process = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app", "function_app", "--settings", str(settings_path), "--port", str(port),
         "--message-lease-seconds", str(lease_seconds), "--root", str(ROOT),
         "--state-file", str(settings_path.with_suffix(".state.json")), *authentication, *extra_args],
        cwd=ROOT, env=env, stdout=_output(log), stderr=subprocess.STDOUT, start_new_session=True,
    )
    host = FunctionsHost(process, port, tokens)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the functions host exited with code {process.returncode}" + (f"; see {log}" if log else ""))
        return requests.get(f"{host.url}/destinations", timeout=1).status_code in (200, 401)

    wait_until(ready, "functions host", timeout=60)
    return host
