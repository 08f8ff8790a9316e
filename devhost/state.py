"""What the host must remember across restarts (timer schedule status, blobs already announced), in one JSON file.

Azure keeps the same facts in the storage account (azure-webjobs-hosts); a file under `.local/` keeps them
per checkout and is easy to delete to start fresh.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from devhost.errors import ConfigError

STATE_FILE = Path(".local") / "devhost-state.json"


class StateFile:
    """Sections of keyed values, each write saved atomically so a killed host leaves a readable file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._data = {}
        except json.JSONDecodeError:
            raise ConfigError(f"{path} is not valid JSON: delete it (the host then forgets timer runs and seen blobs)") from None

    def get(self, section: str, key: str) -> Any:
        with self._lock:
            return self._data.get(section, {}).get(key)

    def put(self, section: str, key: str, value: Any) -> None:
        with self._lock:
            self._data.setdefault(section, {})[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self._data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.path)
