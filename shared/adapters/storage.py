"""Blob, queue and table clients for one storage account, by connection string or managed identity."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import threading
import time
from typing import Any, BinaryIO, Callable, Iterator

import requests
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContainerClient
from azure.storage.queue import QueueServiceClient

from shared.adapters.http_session import EnvironmentOnce, IdleLimitedAdapter
from shared.config import StorageSettings
from shared.snapshots import SnapshotProblem


READ_BLOCK = 4 << 20  # bytes per blob download request
# bytes of a response body read from the connection at a time: azure-core's 4 KiB made a blob's download cost about
# ten Python calls each 4 KiB (a refresh reads every segment file: 170 MB at a million rows), about 2.5 x the CPU
# of this
BODY_BLOCK = 256 << 10
REWRITE_ATTEMPTS = 5  # reads of a blob that keeps changing under BlobFolder.rewrite
STORAGE_CONNECT_TIMEOUT, STORAGE_READ_TIMEOUT = 20, 60  # seconds: azure.storage.*._shared.constants
CONNECTIONS = 64  # kept open per client: chunk workers, planning's chunk writers and page reads share one client


def requests_transport() -> RequestsTransport:
    """The SDK's transport with a bigger connection pool than requests' 10: with more threads than that, most
    requests would open a new connection and drop it after ("Connection pool is full, discarding connection").
    Retries stay the SDK's own (its retry policy), as in the transport it builds itself. Its session reads proxy
    settings from the environment once per host (EnvironmentOnce), not at every request, and reuses no connection
    idle long enough for the server to be closing it (IdleLimitedAdapter). It reads bodies BODY_BLOCK at a time, not
    azure-core's 4 KiB (which the storage SDKs leave to a transport passed in). Its timeouts are the storage
    SDKs' own (connect 20 s, read 60 s), which they set only on a transport they build: azure-core's 300 s each would
    let one request on a connection gone half-open hold a worker, or a queue poll, for five minutes."""
    session = EnvironmentOnce()
    adapter = IdleLimitedAdapter(pool_connections=4, pool_maxsize=CONNECTIONS,
                                 max_retries=requests.adapters.Retry(total=False, redirect=False, raise_on_status=False))
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=False, connection_timeout=STORAGE_CONNECT_TIMEOUT,
                             read_timeout=STORAGE_READ_TIMEOUT, connection_data_block_size=BODY_BLOCK)


class StorageAccount:
    """Creates clients lazily: nothing touches the network at import or start-up.

    Also the segments account (shared/config.py Settings.segments_storage), which has a blob endpoint only: its
    blob_service() downloads in the same READ_BLOCK steps, with the same identity (AzureWebJobsStorage__clientId)."""

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
        # Every download starts with one GET of at most READ_BLOCK bytes (the SDK's default first GET is 32 MiB), so
        # a reader that stops early (model.json's size limit, a refused partition) has fetched no more than that.
        sizes = {"max_single_get_size": READ_BLOCK, "max_chunk_get_size": READ_BLOCK, "transport": requests_transport()}
        if self._settings.connection_string:
            return BlobServiceClient.from_connection_string(self._settings.connection_string, **sizes)
        return BlobServiceClient(self._settings.blob_uri, credential=self._identity(), **sizes)

    def queue_service(self) -> QueueServiceClient:
        if self._settings.connection_string:
            return QueueServiceClient.from_connection_string(self._settings.connection_string, transport=requests_transport())
        return QueueServiceClient(self._settings.queue_uri, credential=self._identity(), transport=requests_transport())

    def table_service(self) -> TableServiceClient:
        if self._settings.connection_string:
            return TableServiceClient.from_connection_string(self._settings.connection_string, transport=requests_transport())
        return TableServiceClient(self._settings.table_uri, credential=self._identity(), transport=requests_transport())


log = logging.getLogger(__name__)
EXCLUSIVE_LEASE_SECONDS = 15  # Azure's shortest blob lease
# Under host.json's functionTimeout (10 minutes): waiting alone never takes a function to the timeout, where the host
# stops it and restarts the worker with everything running in it; it fails instead, and its message is tried again.
EXCLUSIVE_WAIT_SECONDS = 480.0


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
        """Names only (list_blob_names): the SDK then builds no BlobProperties per blob, which cost about 1 ms each."""
        try:
            yield from self._container.list_blob_names(name_starts_with=prefix or None)
        except ResourceNotFoundError:
            return

    def read_bytes(self, name: str) -> bytes:
        return self._container.download_blob(name, decompress=False).readall()

    def open_binary(self, name: str) -> BinaryIO:
        # decompress=False: a blob marked Content-Encoding gzip is read as it is stored, so the readers refuse it
        # (a small "gzip bomb" would otherwise be unpacked in memory by the storage client, whole).
        stream = self._container.download_blob(name, decompress=False).chunks()
        return io.BufferedReader(_ChunkStream(stream), buffer_size=1 << 20)

    def write_bytes(self, name: str, data: bytes) -> None:
        self._container.upload_blob(name, data, overwrite=True)

    def exists(self, name: str) -> bool:
        return self._container.get_blob_client(name).exists()

    def rewrite(self, name: str, change: Callable[[bytes], bytes | None], attempts: int = REWRITE_ATTEMPTS) -> bool:
        """Replace a blob's bytes with `change` of them (None: leave it), written only if nobody wrote or deleted it
        since it was read (If-Match on its ETag), else read again: a rewrite never brings back a blob deleted meanwhile
        (a run's folder cleaned up) nor undoes a write it did not see. Whether it wrote; RuntimeError if the blob
        changed under every attempt."""
        blob = self._container.get_blob_client(name)
        for _ in range(attempts):
            try:
                download = blob.download_blob(decompress=False)
                data = download.readall()  # a file of several ranges: each one read If-Match the first one's ETag
            except ResourceNotFoundError:
                return False
            except ResourceModifiedError:
                continue  # written while it was read: read it again
            changed = change(data)
            if changed is None:
                return False
            try:
                blob.upload_blob(changed, overwrite=True, etag=download.properties.etag,
                                 match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # written or deleted since it was read: read it again
        raise RuntimeError(f"{name} changed under each of {attempts} rewrites; try again later")

    def delete(self, name: str) -> None:
        """Delete one blob; one already gone is fine."""
        try:
            self._container.delete_blob(name)
        except ResourceNotFoundError:
            pass

    @contextlib.contextmanager
    def exclusive(self, name: str, wait_seconds: float = EXCLUSIVE_WAIT_SECONDS, remove: bool = False) -> Iterator[None]:
        """Hold a lease on blob `name` while the block runs, across every instance; wait while another holds it.

        The lease lasts EXCLUSIVE_LEASE_SECONDS and is renewed every third of that (a failed renewal is tried again
        until the lease would have run out), so a crashed holder lets go within that time and a live one keeps it
        however long it works. A missing blob is created empty first. `delete_prefix` breaks leases it meets.
        TimeoutError when another holder kept it past `wait_seconds` (0: try once). `remove`: the blob is only a lock
        (not data a worker reads), deleted under the lease when the block ends, so that locks do not pile up and a late
        worker's lock leaves nothing in a folder deleted meanwhile (a waiter makes it again).
        """
        blob = self._container.get_blob_client(name)
        lease = BlobLeaseClient(blob)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                lease.acquire(lease_duration=EXCLUSIVE_LEASE_SECONDS)
                break
            except ResourceNotFoundError:
                try:
                    blob.upload_blob(b"", overwrite=False)
                except (ResourceExistsError, HttpResponseError):
                    pass  # another worker created (and maybe leased) it meanwhile
                continue
            except HttpResponseError as error:
                if error.status_code != 409:
                    raise
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{name} is held by another worker") from error
            time.sleep(0.25)
        stop = threading.Event()

        def renew() -> None:
            renewed = time.monotonic()
            while not stop.wait(EXCLUSIVE_LEASE_SECONDS / 3):
                try:
                    lease.renew()
                    renewed = time.monotonic()
                except Exception as error:  # noqa: BLE001 - tried again until the lease has run out
                    if time.monotonic() - renewed >= EXCLUSIVE_LEASE_SECONDS:
                        log.warning("lease on a work blob was lost (%s); a duplicate delivery may now run alongside",
                                    type(error).__name__)
                        return

        renewer = threading.Thread(target=renew, name="work-blob-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                if remove:
                    blob.delete_blob(lease=lease)
                else:
                    lease.release()
            except HttpResponseError:
                pass  # expired, broken or deleted with its folder: free either way (and another holder's, if any, kept)

    def delete_prefix(self, prefix: str) -> None:
        """Deletes in batches of 256 (one request each), with their snapshots; blobs already gone are fine. A blob
        still leased (a worker letting go of a chunk it has counted) has its lease broken and is deleted too: nothing
        is left behind. A blob storage would not delete for another reason is raised (how many, and the first
        answer's status), not skipped: what is deleted here is personal data, and the caller's message is redelivered
        or its request answered with an error, so the deletion is tried again."""
        names = list(self.list_names(prefix))
        refused: list[int] = []
        for start in range(0, len(names), 256):
            batch = names[start:start + 256]
            answers = self._container.delete_blobs(*batch, delete_snapshots="include", raise_on_any_failure=False)
            for name, answer in zip(batch, answers):
                status = getattr(answer, "status_code", 202)
                if status == 412:  # there is a lease on the blob
                    self._delete_leased(name)
                elif status >= 300 and status != 404:
                    refused.append(status)
        if refused:
            raise HttpResponseError(f"{len(refused)} blob(s) under a folder being deleted were not deleted (the first "
                                    f"answered {refused[0]}); the deletion is to be tried again")

    def _delete_leased(self, name: str, attempts: int = 3) -> None:
        """Break the blob's lease and delete it. A worker waiting for that lease (`exclusive` tries every 0.25 s) may
        take it between the two: the lease is broken again, `attempts` times in all. Gone meanwhile is fine."""
        blob = self._container.get_blob_client(name)
        for attempt in range(1, attempts + 1):
            try:
                BlobLeaseClient(blob).break_lease(lease_break_period=0)
            except ResourceNotFoundError:
                return
            except HttpResponseError as error:
                if error.status_code != 409:  # 409: no lease on it any more
                    raise
            try:
                blob.delete_blob(delete_snapshots="include")
                return
            except ResourceNotFoundError:
                return
            except HttpResponseError as error:
                if error.status_code != 412 or attempt == attempts:  # 412: leased again
                    raise


# What to do about a blob storage will not serve, by its error code (x-ms-error-code).
_REFUSED_BLOB = {
    "BlobArchived": "it is in the Archive tier, which storage does not read from: rehydrate it to the Hot or Cool tier "
                    "(or write the snapshot again)",
    "BlobBeingRehydrated": "it is being rehydrated from the Archive tier: it is tried again at the next listing",
    "BlobUsesCustomerSpecifiedEncryption": "it is encrypted with a customer-provided key, which the app does not "
                                           "have: write it without one",
    "BlobNotFound": "it was deleted after the listing (or is being replaced): it is tried again at the next listing",
    "ConditionNotMet": "it was changed while it was being read: it is tried again at the next listing",
}


class SegmentFolder(BlobFolder):
    """The segments container: a blob storage refuses to serve (Archive tier, a customer-provided key, deleted after
    the listing, ...) is a SnapshotProblem naming it and saying what to do, like any other unusable segment file, so
    it stays with its own segment. Errors on the server's side (5xx, after the storage client's retries) and network
    errors are raised as they are: they are no fault of the file, and what ran into them is tried again."""

    def list_names(self, prefix: str = "") -> Iterator[str]:
        """The full listing (list_blobs), not names only: it decodes the names the service sends encoded (characters
        XML cannot hold), which list_blob_names passes on as sent, so a customer's oddly named file could not be read
        by its listed name. The app's own work container, whose names the app chooses, lists names only."""
        try:
            for blob in self._container.list_blobs(name_starts_with=prefix or None):
                yield blob.name
        except ResourceNotFoundError:
            return

    def read_bytes(self, name: str) -> bytes:
        try:
            return super().read_bytes(name)
        except HttpResponseError as error:
            raise _refused(name, error) from None

    def open_binary(self, name: str) -> BinaryIO:
        try:
            stream = self._container.download_blob(name, decompress=False).chunks()
        except HttpResponseError as error:
            raise _refused(name, error) from None
        return io.BufferedReader(_ChunkStream(stream, lambda error: _refused(name, error)), buffer_size=1 << 20)


def _refused(name: str, error: HttpResponseError) -> Exception:
    """SnapshotProblem for a blob storage answered 4xx to; the error itself for anything else."""
    status = error.status_code or 0
    if not 400 <= status < 500:
        return error
    code = str(getattr(error, "error_code", None) or f"HTTP {status}")[:64]
    advice = _REFUSED_BLOB.get(code) or (
        "the app is not allowed to read it: check the app's role on the segments container" if status == 403
        else f"storage refused to serve it (HTTP {status}): it is tried again at the next listing")
    return SnapshotProblem(name, f"could not be read ({code}); {advice}")


class _ChunkStream(io.RawIOBase):
    """Raw stream over the SDK's chunk iterator, so a partition is never held whole in memory. `refused` turns a
    storage error met between two chunks into what is raised instead (SegmentFolder: a SnapshotProblem)."""

    def __init__(self, chunks: Iterator[bytes], refused: Callable[[HttpResponseError], Exception] | None = None) -> None:
        self._chunks = chunks
        self._refused = refused
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._pending:
            try:
                chunk = next(self._chunks, None)
            except HttpResponseError as error:
                if self._refused is None:
                    raise
                raise self._refused(error) from None
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
