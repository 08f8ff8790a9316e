"""Event Grid's BlobCreated events for Azurite, which has no Event Grid.

In Azure an Event Grid subscription on the storage account delivers `Microsoft.Storage.BlobCreated` events into
a storage queue (base64-encoded JSON, one event per message) and a queue trigger handles them. Locally this
poller lists the container about once a second and enqueues the same event for every blob that appeared or
changed (new ETag), so the same handler serves both. Blobs already announced are remembered in the state
file; blobs present before the first run are announced once, as if just uploaded.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import uuid

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import BlobProperties, ContainerClient

from devhost.background import Background
from devhost.errors import ConfigError
from devhost.queue_listener import ensure_queue, queue_client
from devhost.state import StateFile

log = logging.getLogger("devhost.blob_events")
POLL_SECONDS = 1.0
STATE_SECTION = "blobs"
EVENT_TYPE = "Microsoft.Storage.BlobCreated"
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def parse_route(text: str) -> tuple[str, str]:
    """`CONTAINER=QUEUE` from the command line."""
    container, _, queue = text.partition("=")
    if not container or not queue:
        raise ConfigError(f"--blob-events {text!r}: write CONTAINER=QUEUE, e.g. segments=segment-events")
    return container, queue


def blob_created_event(account: str, container: str, blob: BlobProperties, url: str) -> dict:
    """The Event Grid schema event Azure Storage publishes when a blob is written."""
    modified: dt.datetime = blob.last_modified
    return {
        "id": str(uuid.uuid4()),
        "topic": f"/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/devhost/providers/Microsoft.Storage"
                 f"/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob.name}",
        "eventType": EVENT_TYPE,
        "eventTime": modified.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "data": {
            "api": "PutBlob",
            "contentType": blob.content_settings.content_type,
            "contentLength": blob.size,
            "blobType": blob.blob_type.value,
            "url": url,
            "eTag": blob.etag.strip('"'),
            # Opaque and increasing per blob in Azure; the modification time in microseconds keeps that property.
            "sequencer": f"{int(modified.timestamp() * 1_000_000):032x}",
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


class BlobEventSource(Background):
    """Watches one container and feeds one queue."""

    def __init__(self, connection: str, container: str, queue: str, state: StateFile, stopping: threading.Event) -> None:
        self.container = ContainerClient.from_connection_string(connection, container)
        self.queue = queue_client(connection, queue)
        self.state = state
        self.stopping = stopping
        self._prepared = threading.Event()
        super().__init__(f"blob-events-{container}")

    def wait_ready(self, timeout: float) -> bool:
        """Ready once the container and queue exist: a caller told the host is ready may upload at once."""
        return self._prepared.wait(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not self._prepared.is_set():
                    self._prepare()
                    self._prepared.set()
                self._announce_changes()
            except AzureError as error:
                log.warning("container %s: listing failed (%s); retrying", self.container.container_name,
                            type(error).__name__)
            self.stopping.wait(POLL_SECONDS)

    def _prepare(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        ensure_queue(self.queue)

    def _announce_changes(self) -> None:
        """Announce new or changed blobs once each (at least once: a crash before saving repeats some)."""
        name = self.container.container_name
        seen: dict[str, str] = dict(self.state.get(STATE_SECTION, name) or {})
        current = {blob.name: blob for blob in self.container.list_blobs()}
        fresh = sorted((b for b in current.values() if seen.get(b.name) != b.etag), key=lambda b: (b.last_modified, b.name))
        for blob in fresh:
            url = self.container.get_blob_client(blob.name).url
            event = blob_created_event(self.container.account_name, name, blob, url)
            self.queue.send_message(base64.b64encode(json.dumps(event).encode("utf-8")).decode("ascii"))
            seen[blob.name] = blob.etag
            log.info("container %s: announced BlobCreated for %s to queue %s", name, blob.name, self.queue.queue_name)
        if fresh or seen.keys() - current.keys():
            self.state.put(STATE_SECTION, name, {key: seen[key] for key in current if key in seen})
