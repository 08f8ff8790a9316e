"""The shape every trigger source shares: one daemon thread the host starts, then joins when stopping."""
from __future__ import annotations

import threading


class Background:
    """Daemon thread running `_run`: a host that must exit is never held up by a stuck function."""

    def __init__(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def name(self) -> str:
        return self._thread.name

    def wait_ready(self, timeout: float) -> bool:
        """Whether the source is ready to notice work (the host says ready only after its sources are)."""
        return True

    def join(self, timeout: float) -> None:
        """Wait up to TIMEOUT seconds for `_run` to return (it returns once the host's stop event is set)."""
        self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError
