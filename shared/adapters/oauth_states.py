"""Spent OAuth states as create-only marker blobs: the first writer wins atomically, whichever instance it runs on."""
from __future__ import annotations

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

PREFIX = "oauth-states/"


class BlobUsedStates:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def first_use(self, nonce: str) -> bool:
        try:
            self._container.upload_blob(PREFIX + nonce, b"", overwrite=False)
        except ResourceExistsError:
            return False
        return True
