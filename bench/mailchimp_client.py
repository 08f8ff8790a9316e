"""Benchmark of MailchimpClient.upsert_members against a local Mailchimp it starts itself (prints figures).

(a) latency profile `none`: new members per second through upsert_members from several threads (the
    client's own cost plus the local server's; target >= 20,000/s).
(b) latency profile `realistic`: wall time against the floor Mailchimp's 10-connection cap allows,
    floor = service_seconds / connection_cap from /__admin/stats (target ratio <= 1.15).

    .venv/bin/python bench/mailchimp_client.py [--none-members 200000] [--realistic-members 100000]
                                               [--threads 10] [--realistic-threads 16] [--cap 10]
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.mailchimp import Credentials, MailchimpClient  # noqa: E402
from shared.members import Member, Outcome, RowRef  # noqa: E402
from tests.services import LocalMailchimp, start_local_mailchimp  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef-us6"  # the local Mailchimp's demo key; opens nothing else
LIST = "a1b2c3d4e5"
CALL_SIZE = 500  # members per upsert_members call: the export queues chunks of at most 500 (EXPORT_CHUNK_SIZE)


def members(count: int, prefix: str) -> list[Member]:
    return [Member(f"{prefix}{i}@bench.example.com", {"FNAME": f"First{i}", "LNAME": f"Last{i}"}, ["Bench"],
                   RowRef("Bench", "part-0", i)) for i in range(count)]


def upsert_all(server: LocalMailchimp, batch: list[Member], threads: int, cap: int) -> tuple[float, int]:
    """Wall seconds to upsert `batch` from `threads` threads sharing one client; returns (seconds, created)."""
    calls = [batch[i:i + CALL_SIZE] for i in range(0, len(batch), CALL_SIZE)]
    credentials = Credentials.from_api_key(KEY, base_url=server.api_root)
    with MailchimpClient(credentials, max_connections=cap) as client, ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda call: client.upsert_members(
            LIST, call, status_for_new="subscribed", existing_as_of=None), calls))
        seconds = time.perf_counter() - started
    created = sum(r.outcome is Outcome.CREATED for call in results for r in call)
    return seconds, created


def run(server: LocalMailchimp, profile: str, count: int, threads: int, cap: int) -> dict:
    server.reset()
    server.admin("POST", "latency", json={"profile": profile})
    server.admin("POST", "connection-cap", json={"cap": cap})
    seconds, created = upsert_all(server, members(count, profile), threads, cap)
    stats = server.stats()
    if created != count or stats["rejected_over_cap"]:
        print(f"  warning: created {created} of {count}; server refused {stats['rejected_over_cap']} over the cap")
    return {"seconds": seconds, "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--none-members", type=int, default=200_000)
    parser.add_argument("--realistic-members", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=10, help="threads for profile none")
    parser.add_argument("--realistic-threads", type=int, default=16,
                        help="threads for profile realistic (more than the cap, so the cap is never idle)")
    parser.add_argument("--cap", type=int, default=10, help="connection cap (client and server)")
    args = parser.parse_args()
    server = start_local_mailchimp()
    try:
        if args.none_members:
            fast = run(server, "none", args.none_members, args.threads, args.cap)
            print(f"(a) profile none: {args.none_members} new members, {args.threads} threads: "
                  f"{fast['seconds']:.2f}s = {args.none_members / fast['seconds']:,.0f} members/s (target >= 20,000)")
        if args.realistic_members:
            slow = run(server, "realistic", args.realistic_members, args.realistic_threads, args.cap)
            stats = slow["stats"]
            floor = stats["service_seconds"] / args.cap
            print(f"(b) profile realistic: {args.realistic_members} new members, {args.realistic_threads} threads, "
                  f"cap {args.cap}: wall {slow['seconds']:.2f}s, floor {floor:.2f}s "
                  f"(service {stats['service_seconds']:.1f}s / {args.cap}), ratio {slow['seconds'] / floor:.3f} "
                  f"(target <= 1.15); max_concurrent {stats['max_concurrent']}, 429s {stats['rejected_over_cap']}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
