"""The host says ready only once its trigger sources are: a caller may upload the moment it reads the ready line."""
from __future__ import annotations

import threading
import time

from devhost.background import Background
from devhost.host import Host
from devhost.http_server import FunctionsHttpServer
from devhost.invoker import Invoker


class SlowSource(Background):
    """A source that needs DELAY seconds to prepare, like a poller creating its container on a busy Azurite."""

    def __init__(self, delay: float, stopping: threading.Event) -> None:
        self.delay, self.stopping, self.ready = delay, stopping, threading.Event()
        super().__init__("slow-source")

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def _run(self) -> None:
        time.sleep(self.delay)
        self.ready.set()
        self.stopping.wait()


def test_start_returns_only_after_every_source_is_ready() -> None:
    stopping = threading.Event()
    invoker = Invoker(".", 1)
    host = Host(FunctionsHttpServer(0, [], None, invoker), invoker, stopping)
    sources = [SlowSource(0.3, stopping), SlowSource(0.6, stopping)]
    host.workers += sources
    try:
        host.start()
        assert all(source.ready.is_set() for source in sources)
    finally:
        host.stop(1.0)
