"""Exports that follow the platform: snapshots landing in storage and scheduled refreshes, through the local host."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

from azure.storage.queue import QueueClient

from shared.config import QUEUE_SEGMENT_EVENTS
from shared.sample_segments import write_sample_export
from tests.e2e.conftest import create_destination, wait_for_run

T1 = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
EVENTS = ("--blob-events", f"segments={QUEUE_SEGMENT_EVENTS}")


def files_of(segments_rows: int, taken_at: datetime, **kwargs) -> list[tuple[str, bytes]]:
    written: list[tuple[str, bytes]] = []
    write_sample_export(lambda name, data: written.append((name, data)), segments={"HighValueCustomers": segments_rows},
                        taken_at=taken_at, **kwargs)
    return written


def upload(container, files) -> None:
    for name, data in files:
        container.upload_blob(name, data, overwrite=True)


def runs_of(host, destination_id: str) -> list[dict]:
    return host.call("GET", f"destinations/{destination_id}/exports").json()["exports"]


def wait_for_runs(host, destination_id: str, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = runs_of(host, destination_id)
        if len(runs) >= count:
            return [wait_for_run(host, r["id"]) for r in runs]
        time.sleep(0.3)
    raise AssertionError(f"expected {count} runs, saw {runs_of(host, destination_id)}")


def event_for(blob_name: str) -> str:
    event = {"id": "e1", "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2026-11-28T17:00:00Z",
             "subject": f"/blobServices/default/containers/segments/blobs/{blob_name}", "data": {}, "dataVersion": "",
             "metadataVersion": "1", "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z"}
    return base64.b64encode(json.dumps(event).encode()).decode()


def test_a_snapshot_landing_partition_by_partition_starts_one_export_after_the_last(start_host, segments, mailchimp):
    host = start_host(extra_args=EVENTS)
    destination = create_destination(host)
    files = files_of(900, T1, rows_per_partition=300)
    model = [f for f in files if f[0].endswith("model.json")]
    partitions = [f for f in files if not f[0].endswith("model.json")]
    assert len(partitions) == 3
    upload(segments, model)  # the manifest first: the snapshot is incomplete until its last partition lands
    for partition in partitions[:-1]:
        upload(segments, [partition])
        time.sleep(2.5)  # the host announces new blobs within about a second
        assert runs_of(host, destination["id"]) == []
    upload(segments, partitions[-1:])
    (run,) = wait_for_runs(host, destination["id"], 1)
    time.sleep(2.5)
    assert len(runs_of(host, destination["id"])) == 1
    assert run["trigger"] == "storage" and run["segments"][0]["snapshot"] == "2026-11-28T17:00Z"
    assert run["counts"]["read"] == 900


def test_the_same_event_delivered_three_times_starts_one_run(start_host, segments, storage, mailchimp):
    host = start_host()
    destination = create_destination(host)
    files = files_of(200, T1)
    upload(segments, files)
    queue = QueueClient.from_connection_string(storage.connection_string, QUEUE_SEGMENT_EVENTS)
    for _ in range(3):
        queue.send_message(event_for(files[-1][0]))
    wait_for_runs(host, destination["id"], 1)
    time.sleep(3)
    assert len(runs_of(host, destination["id"])) == 1


def test_schedule_and_arrival_race_to_one_run_per_snapshot_and_older_snapshots_are_ignored(start_host, segments, mailchimp):
    host = start_host(extra_args=EVENTS, EXPORT_SCHEDULE="* * * * * *")  # a tick every second
    destination = create_destination(host)
    upload(segments, files_of(200, T1))
    (first,) = wait_for_runs(host, destination["id"], 1)
    time.sleep(3)  # ticks with nothing new start nothing
    assert len(runs_of(host, destination["id"])) == 1
    upload(segments, files_of(200, T1 + timedelta(hours=1)))  # timer and arrival both see it
    runs = wait_for_runs(host, destination["id"], 2)
    time.sleep(3)
    assert len(runs_of(host, destination["id"])) == 2
    assert runs[0]["segments"][0]["snapshot"] == "2026-11-28T18:00Z" and runs[0]["trigger"] in ("schedule", "storage")
    upload(segments, files_of(200, T1 - timedelta(hours=1)))  # an older snapshot arriving late
    time.sleep(4)
    assert len(runs_of(host, destination["id"])) == 2


def test_a_newer_snapshot_during_a_run_is_followed_by_exactly_one_more_run(start_host, segments, storage, mailchimp):
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    host = start_host(extra_args=EVENTS)
    destination = create_destination(host)
    upload(segments, files_of(3000, T1, rows_per_partition=1000))
    deadline = time.monotonic() + 30
    while not runs_of(host, destination["id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    newer = files_of(300, T1 + timedelta(hours=1))
    upload(segments, newer)
    queue = QueueClient.from_connection_string(storage.connection_string, QUEUE_SEGMENT_EVENTS)
    for _ in range(2):  # duplicates of the arrival, on top of the host's own announcement
        queue.send_message(event_for(newer[-1][0]))
    assert runs_of(host, destination["id"])[0]["status"] in ("queued", "running")  # still busy with the first
    runs = wait_for_runs(host, destination["id"], 2, timeout=120)
    time.sleep(3)
    assert len(runs_of(host, destination["id"])) == 2
    assert [r["segments"][0]["snapshot"] for r in runs] == ["2026-11-28T18:00Z", "2026-11-28T17:00Z"]
