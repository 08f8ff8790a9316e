"""Status listings asked for by several chunks at once, made once for all of them.

Each chunk of updates lists the audience's members unsubscribed, cleaned and archived since the audience was read, right
before its write (upsert.py, `_statuses_now`). The chunks of one run ask the same listings (same audience, status and
time), and on one host they ask them at nearly the same moment: a 1 % refresh of a million profiles sent 60 listings
for 20 chunks, each holding one of Mailchimp's 10 connections while the writes waited for one.

A caller joins a listing that has not begun yet, never one under way, and a listing begins only once the one before it
of the same key has ended: so each caller's listing begins after it asked and has ended when it returns, which is all
the status check needs of a listing of its own. The listing runs in the thread (and telemetry context) of the caller
that opened it; the others wait for its result or its error, each raised as an object of its own (an upsert adds
its members' outcomes to a refusal of the credentials it raises).

Only short listings are shared: the whole answer is held until every caller has taken what it needs of it.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Listing(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise _own(self.error) from self.error
        return self.result  # type: ignore[return-value]


def _own(error: BaseException) -> BaseException:
    """A copy of `error` for one caller: the one object raised in several threads would gather all their tracebacks
    and attributes."""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception that cannot be rebuilt from its arguments is raised as it is
        return error


class JoinedListings:
    """One per Mailchimp client (so per credential), shared by the chunk workers of a host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Listing] = {}  # not begun yet: a caller joins it
        self._running: dict[Hashable, _Listing] = {}

    def take(self, key: Hashable, fetch: Callable[[], T]) -> T:
        """`fetch()`'s result for `key`, from a call begun after this one was asked for."""
        with self._lock:
            listing = self._open.get(key)
            if listing is not None:
                joined = True
            else:
                joined = False
                listing = self._open[key] = _Listing()
                before = self._running.get(key)
        if joined:
            return listing.outcome()
        try:
            if before is not None:
                before.done.wait()  # one listing of a key at a time: callers asking meanwhile join this one
            with self._lock:
                del self._open[key]  # it begins now: a caller asking from here on opens the next one
                self._running[key] = listing
            listing.result = fetch()
            return listing.result
        except BaseException as error:  # its callers get it too, whether it began or not: none waits for ever
            listing.error = error
            raise
        finally:
            with self._lock:
                for entries in (self._open, self._running):
                    if entries.get(key) is listing:
                        del entries[key]
            listing.done.set()
