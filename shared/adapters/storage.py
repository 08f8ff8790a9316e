"""Blob, queue and table clients for one storage account, by connection string or managed identity."""
from __future__ import annotations

import base64
import io
import json
from typing import Any, BinaryIO, Iterator

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueServiceClient

from shared.config import StorageSettings


class StorageAccount:
    """Creates clients lazily: nothing touches the network at import or start-up."""

    def __init__(self, settings: StorageSettings) -> None:
        self._settings = settings
        self._credential: Any = None

    def _identity(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

            self._credential = (
                ManagedIdentityCredential(client_id=self._settings.client_id)
                if self._settings.client_id
                else DefaultAzureCredential()
            )
        return self._credential

    def blob_service(self) -> BlobServiceClient:
        if self._settings.connection_string:
            return BlobServiceClient.from_connection_string(self._settings.connection_string)
        return BlobServiceClient(self._settings.blob_uri, credential=self._identity())

    def queue_service(self) -> QueueServiceClient:
        if self._settings.connection_string:
            return QueueServiceClient.from_connection_string(self._settings.connection_string)
        return QueueServiceClient(self._settings.queue_uri, credential=self._identity())

    def table_service(self) -> TableServiceClient:
        if self._settings.connection_string:
            return TableServiceClient.from_connection_string(self._settings.connection_string)
        return TableServiceClient(self._settings.table_uri, credential=self._identity())


class BlobFolder:
    """One container seen as named byte blobs: the BlobSource the domain reads, plus writes for run artefacts."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    @property
    def name(self) -> str:
        return self._container.container_name

    def ensure(self) -> None:
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass

    def list_names(self, prefix: str = "") -> Iterator[str]:
        try:
            for blob in self._container.list_blobs(name_starts_with=prefix or None):
                yield blob.name
        except ResourceNotFoundError:
            return

    def read_bytes(self, name: str) -> bytes:
        return self._container.download_blob(name).readall()

    def open_binary(self, name: str) -> BinaryIO:
        return io.BufferedReader(_ChunkStream(self._container.download_blob(name).chunks()), buffer_size=1 << 20)

    def write_bytes(self, name: str, data: bytes) -> None:
        self._container.upload_blob(name, data, overwrite=True)

    def exists(self, name: str) -> bool:
        return self._container.get_blob_client(name).exists()

    def delete_prefix(self, prefix: str) -> None:
        """Deletes in batches of 256 (one request each); blobs already gone are fine."""
        names = list(self.list_names(prefix))
        for start in range(0, len(names), 256):
            self._container.delete_blobs(*names[start:start + 256], raise_on_any_failure=False)


class _ChunkStream(io.RawIOBase):
    """Raw stream over the SDK's chunk iterator, so a partition is never held whole in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class QueueSender:
    """Sends JSON messages base64-encoded, the encoding the Functions queue trigger expects by default."""

    def __init__(self, service: QueueServiceClient, name: str) -> None:
        self._queue = service.get_queue_client(name)
        self.name = name

    def ensure(self) -> None:
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass

    def send(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        body = base64.b64encode(json.dumps(message, separators=(",", ":")).encode("utf-8")).decode("ascii")
        self._queue.send_message(body, visibility_timeout=delay_seconds or None)
