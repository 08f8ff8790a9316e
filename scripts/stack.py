"""The local stack: Azurite, the local Mailchimp and the Functions host, and a demo export through all three.

    python -m scripts.stack up      # start in the background, write .local/stack.env
    python -m scripts.stack down    # stop what `up` started
    python -m scripts.stack demo    # up, export a generated segment, show the result, down
    python -m scripts.stack sample --rows 5000 --segment HighValueCustomers   # drop a new snapshot into the stack
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

from shared.config import QUEUE_SEGMENT_EVENTS
from tests.services import ROOT, start_azurite, start_functions_host, start_local_mailchimp, stop_process, wait_until

LOCAL = ROOT / ".local"
PIDS = LOCAL / "stack.pids"
STACK_ENV = LOCAL / "stack.env"
SETTINGS = ROOT / "local.settings.json"
AZURITE_PORTS = (10000, 10001, 10002)
MAILCHIMP_PORT = 8765
FUNCTIONS_PORT = 7071


def _settings() -> dict[str, str]:
    if not SETTINGS.exists():
        shutil.copy(ROOT / "local.settings.example.json", SETTINGS)
        print(f"created {SETTINGS.name} from local.settings.example.json")
    return json.loads(SETTINGS.read_text())["Values"]


def _key() -> str:
    path = LOCAL / "function-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def up() -> dict[str, str]:
    LOCAL.mkdir(exist_ok=True)
    if PIDS.exists():
        down(quiet=True)
    values = _settings()
    logs = LOCAL / "logs"
    logs.mkdir(exist_ok=True)
    print("starting Azurite, the local Mailchimp and the Functions host ...")
    azurite = start_azurite(AZURITE_PORTS, location=LOCAL / "azurite", log=logs / "azurite.log")
    mailchimp = start_local_mailchimp(port=MAILCHIMP_PORT, log=logs / "mailchimp.log")
    from mailchimp_local.demo import DEMO_API_KEY, DEMO_AUDIENCE_ID

    PIDS.write_text(f"{azurite.process.pid}\n{mailchimp.process.pid}\n")
    overrides = {name: os.environ[name] for name in values if name in os.environ}
    container = {**values, **overrides}.get("SEGMENTS_CONTAINER") or "segments"
    host = start_functions_host({**values, **overrides}, port=FUNCTIONS_PORT, key=_key(), log=logs / "functions.log",
                                settings_path=LOCAL / "functions.settings.json",
                                extra_args=("--blob-events", f"{container}={QUEUE_SEGMENT_EVENTS}"))
    with PIDS.open("a") as f:
        f.write(f"{host.process.pid}\n")
    env = {
        "FUNCTIONS_URL": host.url,
        "FUNCTION_KEY": host.key,
        "MAILCHIMP_URL": mailchimp.url,
        "MAILCHIMP_API_KEY": DEMO_API_KEY,
        "MAILCHIMP_AUDIENCE_ID": DEMO_AUDIENCE_ID,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
    }
    STACK_ENV.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    print(f"stack is up; settings for curl are in {STACK_ENV.relative_to(ROOT)} (logs in .local/logs/)")
    return env


def down(quiet: bool = False) -> None:
    if not PIDS.exists():
        if not quiet:
            print("nothing to stop")
        return
    for pid in reversed(PIDS.read_text().split()):
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(int(pid), 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(int(pid), signal.SIGKILL)
    PIDS.unlink()
    if not quiet:
        print("stack stopped")


def _bar(done: int, total: int | None, width: int = 40) -> str:
    if not total:
        return "[" + " " * width + "] planning"
    filled = int(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total} chunks"


def _stack_env() -> dict[str, str]:
    if not STACK_ENV.exists():
        sys.exit("the stack is not up: run `make up` first")
    return dict(line.split("=", 1) for line in STACK_ENV.read_text().splitlines() if "=" in line)


def sample(env: dict[str, str], rows: int, segment: str) -> None:
    """Write a generated snapshot of `segment` into the stack's segments container, stamped now."""
    from azure.storage.blob import BlobServiceClient

    from shared.sample_segments import write_sample_export

    container_name = _settings().get("SEGMENTS_CONTAINER") or "segments"
    container = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).get_container_client(container_name)
    if not container.exists():
        container.create_container()
    taken_at = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    print(f"writing a sample snapshot of {segment!r} ({rows:,} profiles, Customer Insights layout) to {container_name!r} ...")
    write_sample_export(lambda name, data: container.upload_blob(name, data, overwrite=True),
                        segments={segment: rows}, taken_at=taken_at)


def demo(rows: int) -> None:
    env = up()
    try:
        key_headers = {"x-functions-key": env["FUNCTION_KEY"]}
        sample(env, rows, "HighValueCustomers")
        destination = requests.post(f"{env['FUNCTIONS_URL']}/destinations", headers=key_headers, timeout=60, json={
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
        started = requests.post(f"{env['FUNCTIONS_URL']}/destinations/{destination_id}/exports", headers=key_headers, timeout=60)
        if started.status_code != 202:
            sys.exit(f"the export did not start: {started.status_code} {started.text}")
        run_url = env["FUNCTIONS_URL"].removesuffix("/api") + started.headers["Location"]
        run: dict = {}
        shown = ""

        def finished() -> bool:
            nonlocal run, shown
            run = requests.get(run_url, headers=key_headers, timeout=30).json()
            bar = _bar(run["chunks"]["done"], run["chunks"]["total"])
            if bar != shown:
                print("\r" + bar, end="", flush=True)
                shown = bar
            return run["status"] in ("succeeded", "completed_with_errors", "failed", "cancelled")

        wait_until(finished, "the export", timeout=1800)
        print()
        _summary(run, env, key_headers)
    finally:
        down()


def _summary(run: dict, env: dict[str, str], key_headers: dict[str, str]) -> None:
    print(f"\nexport {run['id']}: {run['status']} in {run['elapsedSeconds']} s ({run['profilesPerSecond']} profiles/s)")
    for name, value in run["counts"].items():
        print(f"  {name:>10}: {value:,}")
    errors = requests.get(f"{env['FUNCTIONS_URL']}/exports/{run['id']}/errors", headers=key_headers, timeout=60).text.splitlines()
    reasons = collections.Counter(json.loads(line)["reason"] for line in errors)
    if reasons:
        print(f"\n{len(errors)} rows not sent, by reason (full list: GET /api/exports/{run['id']}/errors):")
        for reason, count in reasons.most_common(8):
            print(f"  {count:>6}  {reason}")
    auth = ("demo", env["MAILCHIMP_API_KEY"])
    audience = requests.get(f"{env['MAILCHIMP_URL']}/3.0/lists/{env['MAILCHIMP_AUDIENCE_ID']}", auth=auth, timeout=30).json()
    tags = requests.get(f"{env['MAILCHIMP_URL']}/3.0/lists/{env['MAILCHIMP_AUDIENCE_ID']}/segments", params={"type": "static"},
                        auth=auth, timeout=30).json()
    print(f"\nthe audience {audience['name']!r} now holds {audience['stats']['member_count']:,} subscribed members")
    for tag in tags.get("segments", []):
        print(f"  tag {tag['name']!r}: {tag['member_count']:,} members")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "demo", "sample"])
    parser.add_argument("--rows", type=int, default=20_000, help="profiles in the generated segment")
    parser.add_argument("--segment", default="HighValueCustomers", help="segment name for `sample`")
    args = parser.parse_args()
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "sample":
        sample(_stack_env(), args.rows, args.segment)
    else:
        demo(args.rows)


if __name__ == "__main__":
    main()
