"""Benchmark: how fast the local Mailchimp takes batch upserts and serves member pages, and its memory per member.

    python -m mailchimp_local.bench [--members 200000] [--connections 10] [--batch 500]
                                    [--latency-profile none|realistic] [--state-file PATH] [--url URL]

Without --url it starts its own server (with the latency profile given, default `none`, and with --state-file, saving
its state there as `make up` does) and also reports the server's resident memory. The client
side is plain Python (requests, one session per connection, JSON encoded and decoded), as the connector's is.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import requests

from .demo import DEMO_API_KEY, DEMO_AUDIENCE_ID
from .latency import PROFILES

AUTH = ("bench", DEMO_API_KEY)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mailchimp_local.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--latency-profile", choices=sorted(PROFILES), default="none")
    parser.add_argument("--state-file", type=Path, help="the server started keeps its state in this file")
    parser.add_argument("--url", help="a running local Mailchimp (it is reset first; its profile is kept)")
    args = parser.parse_args(argv)
    process, url = (None, args.url) if args.url else _start(args.latency_profile, args.state_file)
    try:
        requests.post(f"{url}/__admin/reset", timeout=30).raise_for_status()
        rss_before = _rss_mb(process)
        emails = [f"member{i:07d}@bench-shop.io" for i in range(args.members)]
        for phase, last_name in (("create", "First"), ("update", "Second")):
            seconds = _upserts(url, emails, last_name, args.connections, args.batch)
            print(f"{phase}: {args.members} members in {seconds:.2f} s = {args.members / seconds:,.0f} upserts/s "
                  f"({args.connections} connections, batches of {args.batch})")
        seconds, read = _read_all(url)
        print(f"read: {read} members in {seconds:.2f} s = {read / seconds:,.0f} members/s (pages of 1000)")
        stats = requests.get(f"{url}/__admin/stats", timeout=30).json()
        print(f"server: max_concurrent={stats['max_concurrent']} service_seconds={stats['service_seconds']:.1f} "
              f"by_status={stats['by_status']}")
        rss_after = _rss_mb(process)
        if rss_before is not None and rss_after is not None:
            per_member = (rss_after - rss_before) * 1024 * 1024 / args.members
            print(f"memory: {rss_after:.0f} MB resident, {per_member:.0f} bytes per member")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


def _upserts(url: str, emails: list[str], last_name: str, connections: int, batch: int) -> float:
    batches = [emails[i:i + batch] for i in range(0, len(emails), batch)]
    per_thread = threading.local()

    def send(chunk: list[str]) -> None:
        if not hasattr(per_thread, "session"):
            per_thread.session = _session()
        session = per_thread.session
        body = {"update_existing": True, "members": [
            {"email_address": e, "status": "subscribed", "merge_fields": {"FNAME": "Bench", "LNAME": last_name}}
            for e in chunk]}
        response = session.post(f"{url}/3.0/lists/{DEMO_AUDIENCE_ID}", json=body, timeout=120)
        response.raise_for_status()
        answer = response.json()
        if answer["error_count"] or answer["total_created"] + answer["total_updated"] != len(chunk):
            raise RuntimeError(f"batch answer does not account for every member: {answer['errors'][:3]}")

    return _timed(lambda: list(ThreadPoolExecutor(connections).map(send, batches)))


def _read_all(url: str) -> tuple[float, int]:
    session = _session()
    read = 0

    def pages() -> None:
        nonlocal read
        while True:
            page = session.get(f"{url}/3.0/lists/{DEMO_AUDIENCE_ID}/members", timeout=120, params={
                "count": 1000, "offset": read,
                "fields": "members.email_address,members.status,members.merge_fields,total_items"}).json()
            read += len(page["members"])
            if len(page["members"]) < 1000:
                return

    return _timed(pages), read


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _session() -> requests.Session:
    session = requests.Session()
    session.auth = AUTH
    return session


def _start(latency_profile: str, state_file: Path | None = None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mailchimp_local", "--port", str(port),
                                "--latency-profile", latency_profile,
                                *(["--state-file", str(state_file)] if state_file else [])], cwd=Path(__file__).resolve().parent.parent,
                               stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/__admin/stats", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the local Mailchimp did not start within 30 s")


def _rss_mb(process: subprocess.Popen | None) -> float | None:
    if process is None:
        return None
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


if __name__ == "__main__":
    main()
