"""Mailchimp's connection cap across every instance of the app, kept with blob leases.

Mailchimp allows 10 simultaneous connections per user. Each app instance already caps itself in process; this gate
makes the cap global: `cap` lease blobs per account, and a request goes out only while it holds a lease on one of
them. A crashed instance's leases expire by themselves after `lease_seconds`.
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Iterator

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobLeaseClient, ContainerClient


class LeaseSlots:
    def __init__(self, container: ContainerClient, account: str, cap: int, lease_seconds: int = 60,
                 wait_seconds: float = 300.0) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self._container = container
        self._names = [f"{account}/slot-{i:02d}" for i in range(cap)]
        self._lease_seconds = lease_seconds
        self._wait_seconds = wait_seconds
        self._created = False
        self._lock = threading.Lock()
        self._held: set[str] = set()  # slots this instance holds: never worth a request to try them
        self._freed = threading.Condition(self._lock)

    def _ensure_blobs(self) -> None:
        with self._lock:
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
            try:
                lease.release()
            except HttpResponseError:
                pass  # expired or taken over: it is free again either way
            with self._freed:  # only now is the slot free: a waiter of this instance takes it without delay
                self._held.discard(name)
                self._freed.notify()

    def _acquire(self) -> tuple[str, BlobLeaseClient]:
        self._ensure_blobs()
        deadline = time.monotonic() + self._wait_seconds
        pause = 0.005
        while True:
            with self._lock:
                candidates = [name for name in self._names if name not in self._held]
            for name in random.sample(candidates, len(candidates)):
                with self._lock:
                    if name in self._held:
                        continue
                    self._held.add(name)
                lease = BlobLeaseClient(self._container.get_blob_client(name))
                try:
                    lease.acquire(lease_duration=self._lease_seconds)
                    return name, lease
                except HttpResponseError as error:
                    with self._lock:
                        self._held.discard(name)
                    if getattr(error, "status_code", None) != 409:
                        raise
            if time.monotonic() > deadline:
                raise TimeoutError("no Mailchimp connection slot became free; another instance may be stuck")
            with self._freed:  # woken by a release here; slots freed by other instances are found by polling
                self._freed.wait(random.uniform(0, pause))
            pause = min(pause * 2, 0.1)
