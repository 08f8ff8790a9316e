"""Reading the JSON files a developer writes by hand, with errors that name the file, the line and the fix."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devhost.errors import ConfigError


def read_json(path: Path, when_missing: str) -> Any:
    """Parse PATH; a missing file raises ConfigError with WHEN_MISSING, a malformed one with the line at fault."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(when_missing) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON (line {error.lineno}: {error.msg}): fix it") from None
