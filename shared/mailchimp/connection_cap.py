"""Mailchimp allows 10 simultaneous connections per user: one counter per account shared by every client here."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ConnectionCap:
    """Requests in flight for one account in this process.

    A counter under a condition rather than a fixed-size semaphore, so that clients created with different
    `max_connections` for the same account each get their own limit without resizing a shared semaphore.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0

    @contextmanager
    def slot(self, limit: int) -> Iterator[None]:
        with self._changed:
            while self._in_flight >= limit:
                self._changed.wait()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()  # waiters may hold different limits: wake all, each re-checks its own


_caps: dict[str, ConnectionCap] = {}
_caps_lock = threading.Lock()


def cap_for(account: str) -> ConnectionCap:
    with _caps_lock:
        return _caps.setdefault(account, ConnectionCap())
