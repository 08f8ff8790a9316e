"""--blob-events: a blob written to Azurite reaches the queue handler as one Event Grid BlobCreated event."""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from azure.storage.blob import BlobServiceClient, ContentSettings

from tests.devhost_app.harness import SampleApp, make_app, unique, wait_for  # noqa: F401  (make_app is a fixture)

MakeApp = Callable[..., SampleApp]
BLOB = "CustomerInsights_1/Mailchimp/Spring Sale/2024/03/04/1200/Spring Sale_1.csv"
POLLS = 2.5  # seconds: a little over two polls of the container


def events(app: SampleApp) -> list[dict]:
    return [json.loads(record["body"]) for record in app.records("work")]


def test_blob_upload_becomes_exactly_one_blob_created_event(make_app: MakeApp) -> None:
    app = make_app()
    container = unique("segments")
    route = f"{container}={app.env['WORK_QUEUE']}"
    host = app.start("--blob-events", route)
    service = BlobServiceClient.from_connection_string(app.azurite.connection_string)
    assert service.get_container_client(container).exists(), "a host that says it is ready has created its container"
    blob = service.get_blob_client(container, BLOB)
    blob.upload_blob(b"email\na@example.com\n", content_settings=ContentSettings(content_type="text/csv"))

    [event] = wait_for(lambda: events(app), "the BlobCreated event")
    time.sleep(POLLS)
    assert len(events(app)) == 1, "a blob must be announced once, not on every poll"
    assert event["eventType"] == "Microsoft.Storage.BlobCreated"
    assert event["subject"] == f"/blobServices/default/containers/{container}/blobs/{BLOB}"
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert (event["dataVersion"], event["metadataVersion"]) == ("", "1")
    assert {"id", "eventTime"} <= event.keys()
    data = event["data"]
    assert data["url"] == blob.url
    assert data["eTag"] == blob.get_blob_properties().etag.strip('"')
    assert (data["contentType"], data["contentLength"], data["blobType"]) == ("text/csv", 20, "BlockBlob")
    assert {"api", "sequencer"} <= data.keys()

    host.stop()
    app.start("--blob-events", route)
    time.sleep(POLLS)
    assert len(events(app)) == 1, "a restart must not announce blobs already announced"

    blob.upload_blob(b"email\nb@example.com\nc@example.com\n", overwrite=True)
    second = wait_for(lambda: events(app)[1:], "the event for the overwritten blob")
    assert second[0]["data"]["eTag"] == blob.get_blob_properties().etag.strip('"') != data["eTag"]
