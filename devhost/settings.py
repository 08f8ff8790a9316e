"""App settings: local.settings.json values, `%SETTING%` expressions and storage connection names."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from devhost.errors import ConfigError
from devhost.json_files import read_json

_EXPRESSION = re.compile(r"%([^%]+)%")
DEFAULT_CONNECTION = "AzureWebJobsStorage"


def load_local_settings(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json file, checked the way Core Tools expects them."""
    document = read_json(path, f"settings file {path} does not exist: create it or drop --settings")
    if not isinstance(document, dict):
        raise ConfigError(f'settings file {path} must hold an object like {{"IsEncrypted": false, "Values": {{}}}}')
    if document.get("IsEncrypted"):
        raise ConfigError(f"settings file {path} is encrypted: store plain values and set IsEncrypted to false")
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise ConfigError(f"settings file {path}: Values must be an object of name -> string")
    for name, value in values.items():
        if not isinstance(value, str):
            raise ConfigError(f"settings file {path}: Values.{name} must be a string (app settings are text): quote it")
    return values


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str] = os.environ) -> None:
    """Copy settings into the environment without overriding what is already set, so a shell variable wins."""
    for name, value in values.items():
        environ.setdefault(name, value)


def resolve_expression(text: str, where: str) -> str:
    """Replace each `%NAME%` by the app setting NAME, as Azure does for binding properties."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: app setting {name} (used as %{name}%) is not set: add it to Values")
        return os.environ[name]

    return _EXPRESSION.sub(setting, text)


def storage_connection(name: str | None, where: str) -> str:
    """The connection string behind a binding's `connection` setting name (AzureWebJobsStorage by default).

    Like Azure, a name X also finds the setting AzureWebJobsX. Only connection strings are supported locally:
    identity-based settings (X__accountName, ...) need Azure AD, which Azurite does not have.
    """
    name = name or DEFAULT_CONNECTION
    for candidate in (name, f"AzureWebJobs{name}"):
        value = os.environ.get(candidate)
        if value:
            return value
    raise ConfigError(
        f"{where}: storage connection {name!r} is not set: add {name} (a connection string, for Azurite "
        "UseDevelopmentStorage=true or the full DefaultEndpointsProtocol=... string) to Values"
    )
