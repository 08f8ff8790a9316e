"""The sample app's record of invocations: one JSON line per call, in the file SAMPLE_OUTBOX names."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def record(function: str, **fields: Any) -> None:
    """Append what a function saw, so a test in another process can check it."""
    line = json.dumps({"function": function, **fields}, default=str)
    with _lock, open(os.environ["SAMPLE_OUTBOX"], "a", encoding="utf-8") as outbox:
        outbox.write(line + "\n")


def read(path: Path, function: str) -> list[dict[str, Any]]:
    """The records one function left, oldest first."""
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return [entry for entry in records if entry["function"] == function]
