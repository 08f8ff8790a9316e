"""Mailchimp's connection cap across every instance of the app, kept with blob leases.

Mailchimp allows 10 simultaneous connections per user. Each app instance already caps itself in process; this gate
makes the cap global: `cap` lease blobs per account, and a request goes out only while it holds a lease on one of
them. Blob leases last 15 to 60 seconds (or forever, which a crashed instance would never give back), and a request
can take longer than that (read timeout 60 s plus connect 5 s), so one daemon thread per LeaseSlots renews every held
lease each `lease_seconds / 3` until its request releases it. A crashed instance's leases expire by themselves after
`lease_seconds`. A renewal that fails (the lease was broken, or storage did not answer in time) is logged and the slot
stays taken here until its request ends: the request cannot be recalled, so this instance does not start another on
that slot.

Each lease is two storage calls (acquire, release) around every request, and a slot free between them sits idle for
their round trips. So a request that ends keeps its slot warm for `warm_seconds` (the lease still held and renewed):
the next request of this instance takes it without a storage call, if the lease has at least a renewal period left
(else it is let go). A warm slot nobody here takes in that time is released. One held for `hold_seconds` since its
lease was taken is released when its request ends and then rests here for `rest_seconds`: another instance waiting for
a slot tries each one in turn (a storage call each) and then waits up to 0.1 s, about 0.3 s for 10 slots, so under
steady demand here it still gets slots instead of waiting for this instance to run dry. Releases are best effort (a
lease not released expires by itself; this instance asks with the same lease id each time, so it can take its own slot
again at once) and run beside the renewal thread, never in its way; warm leases are released on a normal interpreter
exit (a killed worker's run out). A renewal that fails without storage saying the lease is gone (409) is tried again
every RENEW_RETRY_SECONDS while the lease still holds, each attempt short and without the storage retry policy, so one
unanswered call never holds up the renewal of the others.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import random
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Iterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)

RENEW_RETRY_SECONDS = 2.0
_open: "weakref.WeakSet[LeaseSlots]" = weakref.WeakSet()  # released at exit; bootstrap keeps one per account


@atexit.register
def _release_warm_slots() -> None:
    for slots in list(_open):
        slots.close()


@dataclass
class _Held:
    index: int  # logged instead of the blob name, which carries the account id
    lease: BlobLeaseClient
    due: float  # monotonic time of the next renewal
    taken: float  # monotonic time the lease was acquired
    valid_until: float  # monotonic time the lease runs out unless renewed (from the start of its last acquire or renew)
    warm_until: float | None = None  # kept warm (no request on it) until then; None while a request holds it


class LeaseSlots:
    def __init__(self, container: ContainerClient, account: str, cap: int, lease_seconds: int = 60,
                 wait_seconds: float = 300.0, warm_seconds: float = 0.25, hold_seconds: float = 30.0,
                 rest_seconds: float = 0.5) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self._container = container
        self._names = [f"{account}/slot-{i:02d}" for i in range(cap)]
        self._lease_seconds = lease_seconds
        self._renew_every = lease_seconds / 3
        self._wait_seconds = wait_seconds
        self._warm_seconds = warm_seconds
        self._hold_seconds = hold_seconds
        self._rest_seconds = rest_seconds
        self._created = False
        self._setup = threading.Lock()  # creating the blobs, once; the only lock held across network calls
        self._lock = threading.Lock()  # guards the sets below; never held across a network call
        self._held: set[str] = set()  # slots this instance holds: never worth a request to try them
        self._freed = threading.Condition(self._lock)
        self._renewing: dict[str, _Held] = {}  # held slots whose leases the renewal thread keeps alive
        self._warm: list[str] = []  # slots kept warm (in _renewing, no request on them), the latest freed last
        self._resting: dict[str, float] = {}  # slot -> until when this instance leaves it to others (held too long)
        self._renewals = threading.Condition(self._lock)  # wakes the renewal thread when a lease is added
        self._renewer: threading.Thread | None = None  # started with the first lease, so an unused gate costs nothing
        # One lease client per slot, with this instance's lease id: after a release that failed, acquiring with the
        # lease id that holds the lease succeeds, so the slot is taken again at once. Made here: no network.
        self._leases = {name: BlobLeaseClient(container.get_blob_client(name), lease_id=str(uuid.uuid4()))
                        for name in self._names}
        _open.add(self)

    def _ensure_blobs(self) -> None:
        if self._created:
            return
        with self._setup:
            if self._created:
                return
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            for name in self._names:
                try:
                    self._container.upload_blob(name, b"", overwrite=False)
                except ResourceExistsError:
                    pass
            self._created = True

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        name, lease = self._acquire()
        try:
            yield
        finally:
            with self._freed:
                held = self._renewing.get(name)
                now = time.monotonic()
                warm = held is not None and now - held.taken < self._hold_seconds and self._lasts(held, now)
                if warm:
                    held.warm_until = now + self._warm_seconds  # a waiter here takes it at once
                    self._warm.append(name)
                    self._freed.notify()
                    self._renewals.notify()  # the renewal thread releases it if nobody here takes it
                else:
                    self._renewing.pop(name, None)  # from now on a failing renewal of it is expected, not news
            if not warm:
                self._release(name, lease, rest=held is not None)

    def _lasts(self, held: _Held, now: float) -> bool:
        """Whether a lease has at least a renewal period left: enough to start a request on it."""
        return held.valid_until - now > self._renew_every

    def _release(self, name: str, lease: BlobLeaseClient, rest: bool = False) -> None:
        """Give the slot back (`rest`: and leave it to other instances for a moment). Best effort: a lease that could
        not be released (expired, broken, taken over, or storage not answering) runs out by itself."""
        try:
            lease.release(timeout=5, connection_timeout=5, read_timeout=5, retry_total=0)
        except Exception:  # noqa: BLE001 - see above; the slot is free here either way
            pass
        finally:
            with self._freed:  # only now is the slot free: a waiter of this instance takes it without delay
                if rest:
                    self._resting[name] = time.monotonic() + self._rest_seconds
                self._held.discard(name)
                self._freed.notify()

    def _take_warm(self, stale: list[tuple[str, BlobLeaseClient]]) -> tuple[str, BlobLeaseClient] | None:
        """A warm slot whose lease lasts, under the lock; warm slots whose leases do not go to `stale`, for the caller
        to release outside the lock."""
        now = time.monotonic()
        while self._warm:
            name = self._warm.pop()  # the latest freed: its lease has the most time left of its hold
            held = self._renewing[name]
            if self._lasts(held, now):
                held.warm_until = None
                return name, held.lease
            del self._renewing[name]
            stale.append((name, held.lease))
        return None

    def _acquire(self) -> tuple[str, BlobLeaseClient]:
        self._ensure_blobs()
        deadline = time.monotonic() + self._wait_seconds
        pause = 0.005
        while True:
            stale: list[tuple[str, BlobLeaseClient]] = []
            with self._lock:
                taken = self._take_warm(stale)
                now = time.monotonic()
                candidates = [name for name in self._names
                              if name not in self._held and self._resting.get(name, 0.0) <= now]
            for name, lease in stale:
                self._release(name, lease)
            if taken is not None:
                return taken
            for name in random.sample(candidates, len(candidates)):
                lease = self._leases[name]
                with self._lock:
                    if self._warm:  # one of ours was freed meanwhile: no storage call needed
                        break
                    if name in self._held:
                        continue
                    self._held.add(name)
                started = time.monotonic()
                try:
                    lease.acquire(lease_duration=self._lease_seconds)
                except HttpResponseError as error:
                    with self._lock:
                        self._held.discard(name)
                    if getattr(error, "status_code", None) != 409:
                        raise
                    continue
                except BaseException:
                    with self._freed:
                        self._held.discard(name)
                        self._freed.notify()
                    raise
                self._keep_renewed(name, lease, started)
                return name, lease
            else:
                if time.monotonic() > deadline:
                    raise TimeoutError("no Mailchimp connection slot became free; another instance may be stuck")
                with self._freed:  # woken by a release here; slots freed by other instances are found by polling
                    if not self._warm:
                        self._freed.wait(random.uniform(0, pause))
                pause = min(pause * 2, 0.1)

    def _keep_renewed(self, name: str, lease: BlobLeaseClient, started: float) -> None:
        with self._renewals:
            now = time.monotonic()
            self._renewing[name] = _Held(self._names.index(name), lease, now + self._renew_every, now,
                                         started + self._lease_seconds)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever, name="mailchimp-slot-renewal", daemon=True)
                self._renewer.start()
            self._renewals.notify()

    def _renew_forever(self) -> None:
        while True:
            try:
                self._renew_and_cool()
            except Exception as error:  # noqa: BLE001 - the thread keeps every other lease alive: it must go on
                log.warning("Mailchimp connection slots: renewal round failed (%s); trying again", _describe(error))
                time.sleep(1)

    def _renew_and_cool(self) -> None:
        """One round: release warm slots nobody here took in time, and renew the leases due (those first: a request
        may be running on them)."""
        with self._renewals:
            now = time.monotonic()
            cold = [name for name in self._warm if self._renewing[name].warm_until <= now]
            for name in cold:
                self._warm.remove(name)
            cold_leases = [(name, self._renewing.pop(name).lease) for name in cold]
            due = [(name, held) for name, held in self._renewing.items() if held.due <= now]
            if not due and not cold:
                wait = min([held.due for held in self._renewing.values()] +
                           [self._renewing[name].warm_until for name in self._warm], default=None)
                self._renewals.wait(None if wait is None else wait - now)
                return
        for name, lease in cold_leases:  # beside this thread: a slow release never holds up a renewal
            try:
                threading.Thread(target=self._release, args=(name, lease), name="mailchimp-slot-release",
                                 daemon=True).start()
            except RuntimeError:  # no new thread now (the interpreter is exiting): here, then
                self._release(name, lease)
        for name, held in due:  # outside the lock: a slow renewal never blocks acquiring or releasing
            self._renew(name, held)

    def _renew(self, name: str, held: _Held) -> None:
        started = time.monotonic()
        try:
            # short, and tried again by this thread rather than by the storage retry policy (see the docstring)
            held.lease.renew(timeout=5, connection_timeout=5, read_timeout=5, retry_total=0)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the thread goes on
            gone = isinstance(error, HttpResponseError) and error.status_code == 409  # broken, or another's now
            with self._freed:
                if self._renewing.get(name) is not held:
                    return  # released meanwhile: nothing was lost
                if not gone and time.monotonic() + RENEW_RETRY_SECONDS < held.valid_until:
                    held.due = time.monotonic() + RENEW_RETRY_SECONDS  # the lease still holds: try again soon
                    return
                del self._renewing[name]  # lost; still taken here until its request ends and releases it
                warm = name in self._warm
                if warm:
                    self._warm.remove(name)
            if warm:  # no request on it: nothing is at risk; given back (best effort) and free here again
                log.info("Mailchimp connection slot %d: lease renewal failed (%s) while no request used it; released",
                         held.index, _describe(error))
                self._release(name, held.lease)
                return
            log.warning("Mailchimp connection slot %d: lease renewal failed (%s); another instance may take the slot "
                        "while this request still runs", held.index, _describe(error))
            return
        with self._lock:
            if self._renewing.get(name) is held:
                held.due = time.monotonic() + self._renew_every
                held.valid_until = started + self._lease_seconds

    def close(self) -> None:
        """Release the warm slots (at a normal exit): other instances need not wait for their leases to run out."""
        with self._lock:
            warm = [(name, self._renewing.pop(name).lease) for name in self._warm]
            self._warm.clear()
        for name, lease in warm:
            self._release(name, lease)


def _describe(error: Exception) -> str:
    """The kind of failure, without the blob URL (storage account, account id) a storage error message carries."""
    if isinstance(error, HttpResponseError):
        code = getattr(error, "error_code", None)
        return f"HTTP {error.status_code}" + (f" {code}" if code else "")
    return type(error).__name__
