"""The local stack: Azurite, the local Mailchimp and the Functions host, and a demo export through all three.

    python -m scripts.stack up      # start in the background what is not running yet, write .local/stack.env
    python -m scripts.stack down    # stop what `up` started (Azurite and the local Mailchimp keep their data)
    python -m scripts.stack clean   # down, then delete .local/ (Azurite's data, the local Mailchimp's, secrets, logs)
    python -m scripts.stack demo    # up, export a generated segment, show the result, keep it up until Ctrl-C (--no-wait: stop)
    python -m scripts.stack sample --rows 5000 --segment HighValueCustomers   # drop a new snapshot into the stack
    python -m scripts.stack rotate-state-key   # a new version of the local OAuth state signing key

Everything under .local/ is owner-only (folders 0700, files 0600): it holds the local bearer tokens
(.local/auth-tokens.json: an admin's and an operator's, for the host's App Service Authentication, devhost/easyauth.py),
the demo credentials, the local secret store, Azurite's and the local Mailchimp's data (addresses) and logs. The host
gets the tokens file's path, never a token, on its command line, which `ps` shows to everyone.

`up` on a running stack leaves running services alone and starts only what is missing (a Functions host whose
settings changed is restarted: it keeps no data). Azurite persists under .local/azurite and the local Mailchimp under
.local/mailchimp-state.json, so runs recorded in Azurite keep pointing at audiences and members that still exist.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

if any(importlib.util.find_spec(name) is None for name in ("requests", "azure")):  # before they are imported: the
    # host this starts runs on this very interpreter
    sys.exit("this Python lacks the app's packages: run it with the repo's virtual environment, "
             f".venv/bin/python -m scripts.stack {' '.join(sys.argv[1:])} (`make install` creates it)".rstrip())

import requests  # noqa: E402

from shared.config import CONTAINER_ERASURES, QUEUE_ERASURE_EVENTS, QUEUE_SEGMENT_EVENTS  # noqa: E402
from tests.services import (AZURITE_ACCOUNT, AZURITE_KEY, ROOT, read_auth_tokens, start_azurite, start_functions_host,  # noqa: E402
                            start_local_mailchimp, wait_until, write_auth_tokens)

SERVICES = ("azurite", "mailchimp", "functions")  # started in this order, stopped in the reverse one


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps its files and which ports it uses (tests use a temporary folder and free ports)."""

    local: Path = ROOT / ".local"
    settings: Path = ROOT / "local.settings.json"
    azurite_ports: tuple[int, int, int] = (10000, 10001, 10002)
    mailchimp_port: int = 8765
    functions_port: int = 7071
    stop_seconds: dict[str, float] = field(default_factory=lambda: {"mailchimp": 60.0})  # it saves its state first

    @property
    def pids(self) -> Path:
        return self.local / "stack.pids"

    @property
    def env(self) -> Path:
        return self.local / "stack.env"

    @property
    def tokens(self) -> Path:
        return self.local / "auth-tokens.json"

    @property
    def logs(self) -> Path:
        return self.local / "logs"

    @property
    def mailchimp_state(self) -> Path:
        return self.local / "mailchimp-state.json"

    @property
    def functions_settings(self) -> Path:
        return self.local / "functions.settings.json"

    @property
    def azurite_connection_string(self) -> str:
        blob, queue, table = self.azurite_ports
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{blob}/{AZURITE_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{queue}/{AZURITE_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{table}/{AZURITE_ACCOUNT};")

    @property
    def mailchimp_url(self) -> str:
        return f"http://127.0.0.1:{self.mailchimp_port}"

    @property
    def functions_url(self) -> str:
        return f"http://127.0.0.1:{self.functions_port}/api"


DEFAULT = Layout()


# --- owner-only files ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _owner_only() -> Iterator[None]:
    """Files and folders made meanwhile, by this process or the services it starts (they keep the umask), are
    owner-only."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _private_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    """Written to a temporary owner-only file and renamed: never readable by others, not even for a moment."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def _tighten(layout: Layout) -> None:
    """Files of a stack made before these rules (or copied in) become owner-only too."""
    for folder, folders, files in os.walk(layout.local):  # symbolic links are not followed
        with contextlib.suppress(FileNotFoundError):  # a running Azurite may replace files meanwhile
            os.chmod(folder, 0o700)
        for name in files:
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                if not os.path.islink(path):
                    os.chmod(path, (os.stat(path).st_mode & 0o700) or 0o600)


# --- what is running -------------------------------------------------------------------------------------------------

def _read_pids(layout: Layout) -> dict[str, int]:
    try:
        text = layout.pids.read_text()
    except FileNotFoundError:
        return {}
    try:
        return {name: int(pid) for name, pid in json.loads(text).items()}
    except ValueError:  # the older format: one pid a line, in SERVICES order
        return dict(zip(SERVICES, (int(pid) for pid in text.split())))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now holds that pid
    return True


def _answers(layout: Layout, name: str) -> bool:
    try:
        if name == "azurite":
            for port in layout.azurite_ports:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
            return True
        if name == "mailchimp":
            return requests.get(f"{layout.mailchimp_url}/__admin/stats", timeout=2).ok
        return requests.get(f"{layout.functions_url}/destinations", timeout=2).status_code in (200, 401)
    except (OSError, requests.RequestException):
        return False


def running(layout: Layout = DEFAULT) -> dict[str, int]:
    """The stack's services that are up: started by `up` (a pid we recorded, still alive) and answering."""
    return {name: pid for name, pid in _read_pids(layout).items()
            if name in SERVICES and _alive(pid) and _answers(layout, name)}


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running. Zombies do not count: a service that another, still running
    process started (`make run` waiting in the page while `make down` runs) stays a zombie until that process reaps it,
    and kill(0) still finds it, though it has stopped. What cannot be told counts as running, and so does a group
    found by kill(0) but listed nowhere (it has just ended: one more look tells)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    states = _group_states(pgid)
    return not states or any(not state.startswith("Z") for state in states)


def _group_states(pgid: int) -> list[str] | None:
    """The states (R, S, Z, ...) of the group's processes: from /proc where there is Linux's, else from ps; None when
    neither can tell."""
    if Path("/proc/self/stat").exists():
        states, group = [], b"%d" % pgid
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:  # bytes: a command name is cut at 15 bytes, maybe inside a character
                fields = stat.read_bytes().rpartition(b")")[2].split()  # after the command: state, parent, group, ...
            except OSError:  # ended meanwhile
                continue
            if len(fields) > 2 and fields[2] == group:
                states.append(fields[0].decode("ascii", "replace"))
        return states
    try:
        listing = subprocess.run(["ps", "-A", "-o", "pgid=", "-o", "stat="], capture_output=True, text=True,
                                 check=True, timeout=5).stdout
        return [state for group, state in (line.split(None, 1) for line in listing.splitlines() if line.strip())
                if int(group) == pgid]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _reap(pid: int) -> None:
    """Collect a child of this process that has ended (demo, tests): until then it is a zombie, which kill(0) finds."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _stop(pid: int, seconds: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --- up and down -------------------------------------------------------------------------------------------------------

def _settings(layout: Layout) -> dict[str, str]:
    if not layout.settings.exists():
        shutil.copy(ROOT / "local.settings.example.json", layout.settings)
        print(f"created {layout.settings.name} from local.settings.example.json")
    return json.loads(layout.settings.read_text())["Values"]


def _tokens(layout: Layout) -> dict[str, str]:
    """The local callers' bearer tokens (tests.services.LOCAL_USERS), made at the first `up` and kept (stack.env stays
    valid across down/up); owner-only."""
    if not layout.tokens.exists():
        return write_auth_tokens(layout.tokens)
    layout.tokens.chmod(0o600)
    return read_auth_tokens(layout.tokens)


def _host_settings(layout: Layout) -> dict[str, str]:
    values = _settings(layout)
    overrides = {name: os.environ[name] for name in values if name in os.environ}
    return {**values, **overrides}


def _runs_with(layout: Layout, values: dict[str, str]) -> bool:
    """Whether the running host was started with these settings."""
    try:
        return json.loads(layout.functions_settings.read_text())["Values"] == values
    except (OSError, ValueError, KeyError):
        return False


def up(layout: Layout = DEFAULT) -> dict[str, str]:
    """Start what is not running yet; services already up are left alone (their data stays where it is)."""
    with _owner_only():
        _private_folder(layout.local)
        _private_folder(layout.logs)
        _tighten(layout)
        values = _host_settings(layout)
        pids = running(layout)
        for name in SERVICES:
            if name in pids:
                print(f"{name} is running already (pid {pids[name]})")
        if "functions" in pids and not _runs_with(layout, values):
            print("the Functions host's settings changed: restarting it")
            _stop(pids.pop("functions"))
        elif "functions" in pids and not layout.tokens.exists():  # started before the stack had sign-in tokens
            print("the Functions host predates the local sign-in tokens: restarting it")
            _stop(pids.pop("functions"))
        started = []
        if "azurite" not in pids:
            azurite = start_azurite(layout.azurite_ports, location=layout.local / "azurite", log=layout.logs / "azurite.log")
            pids["azurite"] = azurite.process.pid
            started.append("Azurite")
            _write_private(layout.pids, json.dumps(pids))  # at once: `down` stops it if what follows fails
        if "mailchimp" not in pids:
            mailchimp = start_local_mailchimp("--state-file", str(layout.mailchimp_state), port=layout.mailchimp_port,
                                              log=layout.logs / "mailchimp.log")
            pids["mailchimp"] = mailchimp.process.pid
            started.append("the local Mailchimp")
        _write_private(layout.pids, json.dumps(pids))
        if "functions" not in pids:
            container = values.get("SEGMENTS_CONTAINER") or "segments"
            _tokens(layout)
            host = start_functions_host(values, port=layout.functions_port, log=layout.logs / "functions.log",
                                        settings_path=layout.functions_settings, tokens_path=layout.tokens,
                                        extra_args=("--blob-events", f"{container}={QUEUE_SEGMENT_EVENTS}",
                                                    "--blob-events", f"{CONTAINER_ERASURES}={QUEUE_ERASURE_EVENTS}"))
            pids["functions"] = host.process.pid
            started.append("the Functions host")
            _write_private(layout.pids, json.dumps(pids))
    from mailchimp_local.demo import DEMO_API_KEY, DEMO_AUDIENCE_ID

    tokens = _tokens(layout)
    env = {
        "FUNCTIONS_URL": layout.functions_url,
        "AUTH_HEADER": f"Authorization: Bearer {tokens['admin']}",  # the local admin (Exports.Admin)
        "OPERATOR_AUTH_HEADER": f"Authorization: Bearer {tokens['operator']}",  # an Exports.Operator
        "SIGN_IN_URL": layout.functions_url.removesuffix("/api") + "/.auth/login/aad",
        "MAILCHIMP_URL": layout.mailchimp_url,
        "MAILCHIMP_API_KEY": DEMO_API_KEY,
        "MAILCHIMP_AUDIENCE_ID": DEMO_AUDIENCE_ID,
        "AZURE_STORAGE_CONNECTION_STRING": layout.azurite_connection_string,
    }
    _write_private(layout.env, "".join(f'{k}="{v}"\n' for k, v in env.items()))  # quoted: `source` keeps the spaces
    shown = lambda path: path.relative_to(ROOT) if path.is_relative_to(ROOT) else path  # noqa: E731
    print(f"started {', '.join(started)}" if started else "nothing to start: the stack is up")
    print(f"stack is up; settings for curl are in {shown(layout.env)} (logs in {shown(layout.logs)}/)")
    return env


def down(layout: Layout = DEFAULT, quiet: bool = False, only: set[str] | None = None, kept_because: str = "") -> None:
    """Stop the stack's services (or `only` those, saying why the others stay: `kept_because`); Azurite and the local
    Mailchimp keep their data for the next `up`."""
    pids = _read_pids(layout)
    if not pids:
        if not quiet:
            print("nothing to stop")
        return
    stopped = [name for name in reversed(SERVICES) if name in pids and (only is None or name in only)]
    for name in stopped:
        _stop(pids.pop(name), layout.stop_seconds.get(name, 10.0))
    if pids:
        _write_private(layout.pids, json.dumps(pids))
    else:
        layout.pids.unlink(missing_ok=True)
    if quiet:
        return
    up_still = running(layout) if pids else {}  # of those not stopped, the ones still up (one may have died meanwhile)
    if not up_still:
        print("stack stopped")
        return
    why = f" ({kept_because})" if kept_because else ""
    said = [f"stopped {', '.join(stopped)}"] if stopped else []
    print("; ".join([*said, f"left running{why}: {', '.join(name for name in SERVICES if name in up_still)}"]))


def clean(layout: Layout = DEFAULT) -> None:
    """Stop everything and delete its data: Azurite's, the local Mailchimp's, the secrets, the tokens and the logs."""
    down(layout, quiet=True)
    shutil.rmtree(layout.local, ignore_errors=True)
    print(f"removed {layout.local}")


# --- demo ----------------------------------------------------------------------------------------------------------------

def _bar(done: int, total: int | None, width: int = 40) -> str:
    if not total:
        return "[" + " " * width + "] planning"
    filled = int(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total} chunks"


def _stack_env(layout: Layout = DEFAULT) -> dict[str, str]:
    if not layout.env.exists():
        sys.exit("the stack is not up: run `make up` first")
    return read_env(layout.env)


def read_env(path: Path) -> dict[str, str]:
    """stack.env as `source` reads it: NAME="value" (or NAME=value, written by an older `up`)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value for name, value in pairs}


def headers_of(line: str) -> dict[str, str]:
    """AUTH_HEADER's "Name: value" as a requests header."""
    name, _, value = line.partition(":")
    return {name.strip(): value.strip()}


def sample(env: dict[str, str], rows: int, segment: str, layout: Layout = DEFAULT) -> None:
    """Write a generated snapshot of `segment` into the stack's segments container, stamped now."""
    from azure.storage.blob import BlobServiceClient

    from shared.sample_segments import write_sample_export

    container_name = _settings(layout).get("SEGMENTS_CONTAINER") or "segments"
    container = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).get_container_client(container_name)
    if not container.exists():
        container.create_container()
    taken_at = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    print(f"writing a sample snapshot of {segment!r} ({rows:,} profiles, Customer Insights layout) to {container_name!r} ...")
    write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True),
                        segments={segment: rows}, taken_at=taken_at)


def demo(rows: int, layout: Layout = DEFAULT, keep: bool = True) -> None:
    """Export a generated segment and show the result; with `keep`, then leave the stack up for the admin page until
    Ctrl-C (what `make run` does), so a newcomer lands in the page with a finished run to look at."""
    already = set(running(layout))
    stopped = False  # by `make down`, while the demo waited in the page
    try:
        env = up(layout)  # inside: a service that fails to start stops those started before it
        auth_headers = headers_of(env["AUTH_HEADER"])
        sample(env, rows, "HighValueCustomers", layout)
        destination = requests.post(f"{env['FUNCTIONS_URL']}/destinations", headers=auth_headers, timeout=60, json={
            "displayName": "Demo audience",
            "consent": {"accepted": True},
            "audienceId": env["MAILCHIMP_AUDIENCE_ID"],
            "mailchimp": {"apiKey": env["MAILCHIMP_API_KEY"]},
            "mapping": {"email": "Email", "mergeFields": {"FNAME": "FirstName", "LNAME": "LastName"}},
            "segments": ["HighValueCustomers"],
            "exportOnArrival": False,  # this demo starts its export by hand
            "schedule": {"enabled": False},
        })
        destination.raise_for_status()
        destination_id = destination.json()["id"]
        print(f"destination {destination_id} created")
        started = requests.post(f"{env['FUNCTIONS_URL']}/destinations/{destination_id}/exports", headers=auth_headers, timeout=60)
        if started.status_code != 202:
            sys.exit(f"the export did not start: {started.status_code} {started.text}")
        run_url = env["FUNCTIONS_URL"].removesuffix("/api") + started.headers["Location"]
        run: dict = {}
        shown = ""

        def finished() -> bool:
            nonlocal run, shown
            run = requests.get(run_url, headers=auth_headers, timeout=30).json()
            bar = _bar(run["chunks"]["done"], run["chunks"]["total"])
            if bar != shown:
                print("\r" + bar, end="", flush=True)
                shown = bar
            return run["status"] in ("succeeded", "completed_with_errors", "failed", "cancelled")

        wait_until(finished, "the export", timeout=1800)
        print()
        _summary(run, env, auth_headers)
        if keep:
            stopped = _wait_in_the_page(env, destination_id, layout)
    finally:
        with _ctrl_c_held_off():
            down(layout, quiet=stopped, only=set(SERVICES) - already,  # a stack up before the demo stays up
                 kept_because="up before the demo")


@contextlib.contextmanager
def _ctrl_c_held_off() -> Iterator[None]:
    """A second Ctrl-C while the stack stops (or one a terminal sends the whole process group) would cut the stopping
    short and leave services running: it is ignored until they are stopped. Only the main thread may set a handler."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_in_the_page(env: dict[str, str], destination_id: str, layout: Layout) -> bool:
    """Until Ctrl-C, or until the stack's services have all stopped (`make down`, where Ctrl-C cannot reach a `make run`
    in the background): then this returns too (True), instead of waiting for ever on services that are gone."""
    page = env["FUNCTIONS_URL"].removesuffix("/api") + f"/api/console/#/destinations/{destination_id}"
    sign_in = env["FUNCTIONS_URL"].removesuffix("/api") + "/.auth/login/aad?post_login_redirect_uri=" + \
        quote(f"/api/console/#/destinations/{destination_id}", safe="")
    print(f"\nThe admin page: {page}\n  sign in (local form: any name and address, tick Exports.Admin): {sign_in}\n"
          "  for curl: source .local/stack.env, then -H \"$AUTH_HEADER\" (README, 'Run the stack yourself')\n"
          "The stack keeps running; press Ctrl-C (or run `make down`) to stop it.", flush=True)
    pids = _read_pids(layout).values()
    try:
        while any(_still_running(pid) for pid in pids):
            time.sleep(0.5)
        print("\nthe stack was stopped")
        return True
    except KeyboardInterrupt:
        print("\nstopping")
        return False


def _still_running(pid: int) -> bool:
    _reap(pid)  # one this process started and `make down` stopped
    return _alive(pid)


def _summary(run: dict, env: dict[str, str], auth_headers: dict[str, str]) -> None:
    print(f"\nexport {run['id']}: {run['status']} in {run['elapsedSeconds']} s ({run['profilesPerSecond']} profiles/s)")
    for name, value in run["counts"].items():
        print(f"  {name:>10}: {value:,}")
    errors = requests.get(f"{env['FUNCTIONS_URL']}/exports/{run['id']}/errors", headers=auth_headers, timeout=60).text.splitlines()
    reasons = collections.Counter(json.loads(line)["reason"] for line in errors)
    if reasons:
        print(f"\n{len(errors)} rows not sent, by reason (full list: GET /api/exports/{run['id']}/errors; duplicate rows "
              "are not in it: each is folded into its email's first row, which is sent):")
        for reason, count in reasons.most_common(8):
            print(f"  {count:>6}  {reason}")
    auth = ("demo", env["MAILCHIMP_API_KEY"])
    audience = requests.get(f"{env['MAILCHIMP_URL']}/3.0/lists/{env['MAILCHIMP_AUDIENCE_ID']}", auth=auth, timeout=30).json()
    tags = requests.get(f"{env['MAILCHIMP_URL']}/3.0/lists/{env['MAILCHIMP_AUDIENCE_ID']}/segments", params={"type": "static"},
                        auth=auth, timeout=30).json()
    print(f"\nthe audience {audience['name']!r} now holds {audience['stats']['member_count']:,} subscribed members")
    for tag in tags.get("segments", []):
        print(f"  tag {tag['name']!r}: {tag['member_count']:,} members")


def rotate_state_key(layout: Layout = DEFAULT) -> None:
    """A new version of the OAuth state signing key in the local secret store (see docs/destinations.md)."""
    from shared.adapters.secrets import LocalFileSecrets
    from shared.oauth import rotate_state_key as rotate

    folder = Path(_host_settings(layout).get("LOCAL_SECRETS_DIR") or ".local/secrets")
    with _owner_only():
        rotate(LocalFileSecrets(str(folder if folder.is_absolute() else ROOT / folder)))
    print("the OAuth state key has a new version; states signed with the previous one stay valid until they expire")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "clean", "demo", "sample", "rotate-state-key"])
    parser.add_argument("--rows", type=int, default=20_000, help="profiles in the generated segment")
    parser.add_argument("--segment", default="HighValueCustomers", help="segment name for `sample`")
    parser.add_argument("--no-wait", action="store_true", help="`demo`: stop the stack after the export instead of "
                                                              "leaving it up for the admin page until Ctrl-C")
    args = parser.parse_args()
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "clean":
        clean()
    elif args.command == "sample":
        sample(_stack_env(), args.rows, args.segment)
    elif args.command == "rotate-state-key":
        rotate_state_key()
    else:
        demo(args.rows, keep=not args.no_wait)


if __name__ == "__main__":
    main()
