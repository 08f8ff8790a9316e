"""host.json: the HTTP route prefix and queue trigger options, with Azure's defaults and limits."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost.errors import ConfigError
from devhost.json_files import read_json

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")
MAX_BATCH_SIZE = 32  # Azure refuses more
MIN_POLLING_INTERVAL = 0.1  # seconds; Azure's floor for maxPollingInterval


@dataclass(frozen=True)
class QueueOptions:
    """extensions.queues: how many messages run at once, how often to poll, when to give up on one."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0  # seconds
    visibility_timeout: float = 0.0  # seconds before a failed message is visible again
    max_dequeue_count: int = 5
    message_encoding: str = "base64"  # or "none"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = QueueOptions()


def parse_timespan(value: Any, where: str) -> float:
    """Seconds in a .NET TimeSpan string ("hh:mm:ss", "hh:mm:ss.fff" or "d.hh:mm:ss"), as host.json writes them."""
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f'{where} must be a time span like "00:00:02" (hh:mm:ss), got {value!r}')
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def load_host_config(root: Path) -> HostConfig:
    """Read ROOT/host.json; a missing or wrong file stops the host like it stops Azure."""
    path = root / "host.json"
    document = read_json(path, f'no host.json in {root}: create one with {{"version": "2.0"}} or pass --root')
    if not isinstance(document, dict) or document.get("version") != "2.0":
        raise ConfigError(f'{path} must be an object with "version": "2.0"')
    extensions = _section(document, "extensions", path)
    http = _section(extensions, "http", path)
    route_prefix = http.get("routePrefix", "api")
    if not isinstance(route_prefix, str):
        raise ConfigError(f"{path}: extensions.http.routePrefix must be a string")
    return HostConfig(route_prefix=route_prefix.strip("/"), queues=_queue_options(_section(extensions, "queues", path), path))


def _section(parent: dict, name: str, path: Path) -> dict:
    section = parent.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {name} must be an object")
    return section


def _queue_options(queues: dict, path: Path) -> QueueOptions:
    where = f"{path}: extensions.queues"
    batch_size = _integer(queues, "batchSize", 16, 1, MAX_BATCH_SIZE, where)
    encoding = str(queues.get("messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise ConfigError(f'{where}.messageEncoding must be "base64" or "none", got {queues["messageEncoding"]!r}')
    polling = parse_timespan(queues.get("maxPollingInterval", "00:01:00"), f"{where}.maxPollingInterval")
    if polling < MIN_POLLING_INTERVAL:
        raise ConfigError(f'{where}.maxPollingInterval must be at least "00:00:00.100"')
    return QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=_integer(queues, "newBatchThreshold", batch_size // 2, 0, None, where),
        max_polling_interval=polling,
        visibility_timeout=parse_timespan(queues.get("visibilityTimeout", "00:00:00"), f"{where}.visibilityTimeout"),
        max_dequeue_count=_integer(queues, "maxDequeueCount", 5, 1, None, where),
        message_encoding=encoding,
    )


def _integer(section: dict, name: str, default: int, low: int, high: int | None, where: str) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{where}.{name} must be a whole number {bounds}, got {value!r}")
    return value
