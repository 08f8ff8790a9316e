"""One authenticated /3.0 call: the request, its account's view of the World, and the work it did."""
from __future__ import annotations

import time
from typing import Any

from .accounts import Account
from .audience import Audience
from .problems import invalid, not_found
from .request_body import instant
from .web import Request
from .world import World

MAX_COUNT = 1000


class Call:
    def __init__(self, world: World, account: Account, request: Request) -> None:
        self.world = world
        self.account = account
        self.request = request
        self.now = time.time()
        self.written = 0  # members this call wrote or (un)tagged: the latency model's per-member cost
        self.read = 0  # members this call returned in a page
        self.route: str | None = None  # the route it matched, as "POST /lists/{list_id}" (None: none matched)

    @property
    def base_url(self) -> str:
        return f"http://{self.request.headers.get('Host', 'localhost')}"

    def audience(self, list_id: str) -> Audience:
        """Another account's audience is as unknown as a missing one."""
        audience = self.world.audiences.get(list_id)
        if audience is None or audience.account_id != self.account.id:
            raise not_found("audience")
        return audience

    def body(self) -> dict[str, Any]:
        return self.request.json_object()

    def page(self) -> tuple[int, int]:
        """(count, offset): count 1..1000, default 10, as Mailchimp pages."""
        return self.integer("count", 10, 1, MAX_COUNT), self.integer("offset", 0, 0, None)

    def integer(self, name: str, default: int, low: int, high: int | None) -> int:
        raw = self.request.param(name)
        if raw is None:
            return default
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        try:
            value = int(raw)
        except ValueError:
            raise invalid(name, f"{name} must be a whole number {bounds}") from None
        if value < low or (high is not None and value > high):
            raise invalid(name, f"{name} must be a whole number {bounds} (got {value})")
        return value

    def flag(self, name: str) -> bool:
        return (self.request.param(name) or "").lower() in ("true", "1")

    def instant(self, name: str) -> float | None:
        raw = self.request.param(name)
        return instant(raw, name) if raw else None
