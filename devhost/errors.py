"""The one error type for a configuration the developer must fix before the host can start."""
from __future__ import annotations


class ConfigError(Exception):
    """Raised with a message that names the file, function or setting at fault and what to do."""
