"""Where Mailchimp credentials live: Azure Key Vault in Azure, an owner-only file store locally.

Both keep versions: `set` writes a new version and `get` reads the newest, and `versions` lists the newest few
(value and creation time). Key Vault keeps every version; the local store keeps the current and the previous one,
which is all a rotation needs (see shared/oauth.py). `delete` removes every version.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")  # Key Vault's secret-name rule; the local store keeps it too


DELETED_NAMES = "deleted"  # LocalFileSecrets: names deleted, kept as Key Vault keeps them (soft delete)


class SecretNameDeleted(Exception):
    """A deleted secret's name cannot be written again (Key Vault: 409 Conflict while the secret is soft-deleted,
    up to 90 days with purge protection). The local store behaves the same, so tests meet what Azure does."""

    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name} was deleted and its name cannot be used again (Key Vault soft delete)")


class SecretStore(Protocol):
    def get(self, name: str) -> str | None: ...
    def set(self, name: str, value: str) -> None: ...
    def delete(self, name: str) -> None: ...


@dataclass(frozen=True)
class SecretVersion:
    value: str = field(repr=False)
    created: float | None  # Unix seconds; None when the store cannot tell


class VersionedSecretStore(SecretStore, Protocol):
    def versions(self, name: str, limit: int = 2) -> list[SecretVersion]:
        """The newest `limit` enabled versions, newest first; [] when the secret does not exist."""
        ...


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

    def versions(self, name: str, limit: int = 2) -> list[SecretVersion]:
        """One listing of the secret's versions and one read per version returned."""
        from azure.core.exceptions import ResourceNotFoundError

        client = self._secrets()
        try:
            listed = [p for p in client.list_properties_of_secret_versions(_check(name)) if p.enabled is not False]
            listed.sort(key=lambda p: p.created_on.timestamp() if p.created_on else 0.0, reverse=True)
            return [SecretVersion(client.get_secret(name, p.version).value or "",
                                  p.created_on.timestamp() if p.created_on else None) for p in listed[:limit]]
        except ResourceNotFoundError:
            return []

    def set(self, name: str, value: str) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self._secrets().set_secret(_check(name), value, content_type="application/json")
        except HttpResponseError as error:
            if error.status_code == 409:  # ObjectIsDeletedButRecoverable: the name is soft-deleted
                raise SecretNameDeleted(name) from None
            raise

    def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._secrets().begin_delete_secret(_check(name)).wait()
        except ResourceNotFoundError:
            pass


class LocalFileSecrets:
    """One file per secret, readable only by its owner, under the git-ignored .local/ folder.

    `<name>` holds the current version, `<name>.previous` the one before it (its modification time is when it was
    written). Secret names cannot contain a dot, so the two never collide.
    """

    def __init__(self, directory: str) -> None:
        self._dir = Path(directory)
        self._lock = threading.Lock()  # one process's writers keep current and previous in step

    def get(self, name: str) -> str | None:
        try:
            return (self._dir / _check(name)).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def versions(self, name: str, limit: int = 2) -> list[SecretVersion]:
        found = []
        for path in (self._dir / _check(name), self._dir / f"{name}.previous")[:limit]:
            try:
                found.append(SecretVersion(path.read_text(encoding="utf-8"), path.stat().st_mtime))
            except FileNotFoundError:
                break
        return found

    def set(self, name: str, value: str) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        path = self._dir / _check(name)
        if (self._dir / DELETED_NAMES / name).exists():
            raise SecretNameDeleted(name)
        tmp = self._dir / f"{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)
        with self._lock:
            try:
                os.replace(path, self._dir / f"{name}.previous")
            except FileNotFoundError:
                pass
            os.replace(tmp, path)

    def delete(self, name: str) -> None:
        """Like Key Vault with purge protection, the name stays taken: a later `set` of it raises SecretNameDeleted."""
        with self._lock:
            existed = False
            for path in (self._dir / _check(name), self._dir / f"{name}.previous"):
                try:
                    path.unlink()
                    existed = True
                except FileNotFoundError:
                    pass
            if existed:
                (self._dir / DELETED_NAMES).mkdir(mode=0o700, exist_ok=True)
                (self._dir / DELETED_NAMES / name).touch(mode=0o600)
