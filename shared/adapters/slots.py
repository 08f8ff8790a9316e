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
the next request of this instance takes it without a storage call. A warm slot nobody here takes in that time is
released. One held for `hold_seconds` since its lease was taken is released when its request ends and rests here
for `rest_seconds`, longer than other instances wait between polls (0.1 s at most): under steady demand here they
still get slots, instead of waiting for this instance to run dry.
"""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient

log = logging.getLogger(__name__)


@dataclass
class _Held:
    index: int  # logged instead of the blob name, which carries the account id
    lease: BlobLeaseClient
    due: float  # monotonic time of the next renewal
    taken: float  # monotonic time the lease was acquired
    warm_until: float | None = None  # kept warm (no request on it) until then; None while a request holds it


class LeaseSlots:
    def __init__(self, container: ContainerClient, account: str, cap: int, lease_seconds: int = 60,
                 wait_seconds: float = 300.0, warm_seconds: float = 0.25, hold_seconds: float = 15.0,
                 rest_seconds: float = 0.25) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self._warm_seconds = warm_seconds
        self._hold_seconds = hold_seconds
        self._rest_seconds = rest_seconds
        self._container = container
        self._names = [f"{account}/slot-{i:02d}" for i in range(cap)]
        self._lease_seconds = lease_seconds
        self._renew_every = lease_seconds / 3
        self._wait_seconds = wait_seconds
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
                if held is not None and time.monotonic() - held.taken < self._hold_seconds:
                    held.warm_until = time.monotonic() + self._warm_seconds  # a waiter here takes it at once
                    self._warm.append(name)
                    self._freed.notify()
                    self._renewals.notify()  # the renewal thread releases it if nobody here takes it
                    lease = None
                else:
                    self._renewing.pop(name, None)  # from now on a failing renewal of it is expected, not news
                    if held is not None:
                        self._resting[name] = time.monotonic() + self._rest_seconds
            if lease is not None:
                self._release(name, lease)

    def _release(self, name: str, lease: BlobLeaseClient) -> None:
        try:
            lease.release()
        except HttpResponseError:
            pass  # expired, broken or taken over: it is free again either way
        with self._freed:  # only now is the slot free: a waiter of this instance takes it without delay
            self._held.discard(name)
            self._freed.notify()

    def _acquire(self) -> tuple[str, BlobLeaseClient]:
        self._ensure_blobs()
        deadline = time.monotonic() + self._wait_seconds
        pause = 0.005
        while True:
            with self._lock:
                if self._warm:  # the latest freed: its lease has the most time left of its hold
                    held = self._renewing[self._warm.pop()]
                    held.warm_until = None
                    return self._names[held.index], held.lease
                now = time.monotonic()
                candidates = [name for name in self._names
                              if name not in self._held and self._resting.get(name, 0.0) <= now]
            for name in random.sample(candidates, len(candidates)):
                with self._lock:
                    if name in self._held:
                        continue
                    self._held.add(name)
                lease = BlobLeaseClient(self._container.get_blob_client(name))
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
                self._keep_renewed(name, lease)
                return name, lease
            if time.monotonic() > deadline:
                raise TimeoutError("no Mailchimp connection slot became free; another instance may be stuck")
            with self._freed:  # woken by a release here; slots freed by other instances are found by polling
                self._freed.wait(random.uniform(0, pause))
            pause = min(pause * 2, 0.1)

    def _keep_renewed(self, name: str, lease: BlobLeaseClient) -> None:
        with self._renewals:
            now = time.monotonic()
            self._renewing[name] = _Held(self._names.index(name), lease, now + self._renew_every, now)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_forever, name="mailchimp-slot-renewal", daemon=True)
                self._renewer.start()
            self._renewals.notify()

    def _renew_forever(self) -> None:
        while True:
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
                    continue
            for name, lease in cold_leases:  # outside the lock, as below
                self._release(name, lease)
            for name, held in due:  # outside the lock: a slow renewal never blocks acquiring or releasing
                self._renew(name, held)

    def _renew(self, name: str, held: _Held) -> None:
        try:
            # a renewal must not hang past the lease it is saving; the storage retry policy still applies
            held.lease.renew(timeout=max(1, int(self._renew_every)), connection_timeout=5, read_timeout=self._renew_every)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the slot is lost and the thread goes on
            with self._freed:
                if self._renewing.get(name) is not held:
                    return  # released meanwhile: nothing was lost
                del self._renewing[name]  # lost; still taken here until its request ends and releases it
                if name in self._warm:  # no request on it: nothing is at risk, and it is simply free here again
                    self._warm.remove(name)
                    self._held.discard(name)
                    self._freed.notify()
                    return
            log.warning("Mailchimp connection slot %d: lease renewal failed (%s); another instance may take the slot "
                        "while this request still runs", held.index, _describe(error))
            return
        with self._lock:
            if self._renewing.get(name) is held:
                held.due = time.monotonic() + self._renew_every


def _describe(error: Exception) -> str:
    """The kind of failure, without the blob URL (storage account, account id) a storage error message carries."""
    if isinstance(error, HttpResponseError):
        code = getattr(error, "error_code", None)
        return f"HTTP {error.status_code}" + (f" {code}" if code else "")
    return type(error).__name__
