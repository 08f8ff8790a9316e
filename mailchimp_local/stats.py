"""Counters a benchmark or test reads from /__admin/stats to see what the server went through."""
from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Changed only under World.lock; everything counts /3.0 requests only."""

    def __init__(self) -> None:
        self.requests_total = 0
        self.by_status: Counter[str] = Counter()
        self.max_concurrent = 0  # highest number of simultaneous requests seen for any one account
        self.service_seconds = 0.0  # wall time spent serving, latency sleeps included
        self.members_written = 0  # members sent to write calls (batch subscribe, PUT/PATCH, tag add/remove)
        self.members_read = 0  # members returned by list pages
        self.rejected_over_cap = 0
        # when the earliest /3.0 request counted arrived (Unix seconds, this machine's clock), None before any: a
        # benchmark subtracts the moment it started a run to get the time to its first Mailchimp call
        self.first_request_at: float | None = None
        self.first_write_at: float | None = None  # the same for the earliest request that wrote members
        # requests per route matched, keyed "POST /lists/{list_id}" (batch subscribe), "POST
        # /lists/{list_id}/segments/{segment_id}" (static-segment members add/remove)...: a test or benchmark counts
        # the calls an export makes of each kind; a request that matched no route (401, 404, faults) is not here
        self.by_route: Counter[str] = Counter()

    def record(self, status: int | str, seconds: float, written: int, read: int,
               arrived_at: float | None = None, route: str | None = None) -> None:
        if route is not None:
            self.by_route[route] += 1
        if arrived_at is not None and (self.first_request_at is None or arrived_at < self.first_request_at):
            self.first_request_at = arrived_at
        if written and arrived_at is not None and (self.first_write_at is None or arrived_at < self.first_write_at):
            self.first_write_at = arrived_at
        self.requests_total += 1
        self.by_status[str(status)] += 1
        self.service_seconds += seconds
        self.members_written += written
        self.members_read += read

    def to_json(self) -> dict[str, Any]:
        return {"requests_total": self.requests_total, "by_status": dict(self.by_status),
                "max_concurrent": self.max_concurrent, "service_seconds": round(self.service_seconds, 6),
                "members_written": self.members_written, "members_read": self.members_read,
                "rejected_over_cap": self.rejected_over_cap, "by_route": dict(self.by_route),
                "first_request_at": None if self.first_request_at is None else round(self.first_request_at, 6),
                "first_write_at": None if self.first_write_at is None else round(self.first_write_at, 6)}
