"""The host says ready only once its trigger sources are: a caller may upload the moment it reads the ready line."""
from __future__ import annotations

import contextlib
import threading
import time
import urllib.request

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


def test_start_returns_and_http_answers_only_after_every_source_is_ready() -> None:
    stopping = threading.Event()
    invoker = Invoker(".", 1)
    host = Host(FunctionsHttpServer(0, [], None, invoker), invoker, stopping)
    sources = [SlowSource(0.3, stopping), SlowSource(0.6, stopping)]
    host.workers += sources
    answered: list[bool] = []

    def ask() -> None:  # a caller that waits for an HTTP answer, not for the ready line
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{host.url}/", timeout=5)
        answered.append(all(source.ready.is_set() for source in sources))

    caller = threading.Thread(target=ask)
    try:
        caller.start()
        host.start()
        assert all(source.ready.is_set() for source in sources)
        caller.join(5)
        assert answered == [True]
    finally:
        host.stop(1.0)
