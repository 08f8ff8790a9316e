"""Start `python -m devhost` as a real subprocess and wait until it is ready, for tests and scripts."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_READY = re.compile(r"Functions host ready on (http://\S+)")


class HostFailed(RuntimeError):
    """The host exited or never became ready; the message carries the end of its log."""


@dataclass
class RunningHost:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the host logged so far (stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: the host gets no chance to finish anything, like a crashed instance."""
        return self._end(signal.SIGKILL, 30.0)

    def _end(self, signum: int, timeout: float) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)


def start_host(args: list[str], *, cwd: Path, log_dir: Path, env: dict[str, str] | None = None,
               timeout: float = 30.0) -> RunningHost:
    """Run `python -m devhost ARGS` in CWD with ENV added to this environment; logs go to LOG_DIR."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    out_path, log_path = log_dir / f"devhost-{stamp}.out", log_dir / f"devhost-{stamp}.log"
    with open(out_path, "wb") as out, open(log_path, "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "devhost", *args], cwd=cwd, stdout=out, stderr=err,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = _READY.search(out_path.read_text(encoding="utf-8", errors="replace"))
        if ready:
            return RunningHost(process, ready.group(1), log_path)
        if process.poll() is not None:
            raise HostFailed(f"devhost exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise HostFailed(f"devhost was not ready within {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")
