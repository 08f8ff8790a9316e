"""Where Mailchimp credentials live: Azure Key Vault in Azure, an owner-only file store locally."""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")  # Key Vault's secret-name rule; the local store keeps it too


class SecretStore(Protocol):
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


def _check(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"secret name {name!r} must be 1-127 letters, digits or hyphens")
    return name


class KeyVaultSecrets:
    """Key Vault through the app's managed identity; the client is made on first use, not at import."""

    def __init__(self, vault_url: str, client_id: str | None = None) -> None:
        self._vault_url = vault_url
        self._client_id = client_id
        self._client: Any = None
        self._lock = threading.Lock()

    def _secrets(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
                from azure.keyvault.secrets import SecretClient

                credential = (
                    ManagedIdentityCredential(client_id=self._client_id) if self._client_id else DefaultAzureCredential()
                )
                self._client = SecretClient(self._vault_url, credential)
            return self._client

    def get(self, name: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._secrets().get_secret(_check(name)).value
        except ResourceNotFoundError:
            return None

    def set(self, name: str, value: str) -> None:
        self._secrets().set_secret(_check(name), value, content_type="application/json")

    def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._secrets().begin_delete_secret(_check(name)).wait()
        except ResourceNotFoundError:
            pass


class LocalFileSecrets:
    """One file per secret, readable only by its owner, under the git-ignored .local/ folder."""

    def __init__(self, directory: str) -> None:
        self._dir = Path(directory)

    def get(self, name: str) -> str | None:
        try:
            return (self._dir / _check(name)).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def set(self, name: str, value: str) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        path = self._dir / _check(name)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)
        os.replace(tmp, path)

    def delete(self, name: str) -> None:
        try:
            (self._dir / _check(name)).unlink()
        except FileNotFoundError:
            pass
