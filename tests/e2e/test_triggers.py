"""Exports that follow the platform: snapshots landing in storage and scheduled refreshes, through the local host.

No test sleeps and then asserts that nothing happened (that passes whenever the host is merely slow): each first
waits for a positive sign that the trigger was processed (the host announced the blob and segment_arrived handled
every event on its queue, a timer run started after a given moment finished, every chunk message was handled),
then asserts what it did.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.storage.queue import QueueClient

from shared.config import QUEUE_SEGMENT_EVENTS
from shared.sample_segments import write_sample_export
from tests.e2e.conftest import (blob_created, create_destination, handled_messages, host_log, host_state, log_lines, wait_for,
                                wait_for_run)

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


ANNOUNCED = "announced BlobCreated for "
TICK = "export schedule ran: "  # shared/exports/starting.py on_schedule, once a tick


def announced(log: Path) -> list[str]:
    """Blob names the host's blob-event poller put on the segment-events queue, one per event."""
    return [line.split(ANNOUNCED, 1)[1].rsplit(" to queue ", 1)[0] for line in log_lines(log) if ANNOUNCED in line]


def wait_for_events_handled(log: Path, blobs: list[str] = (), sent: int = 0) -> None:
    """Until the host has announced `blobs` and segment_arrived has handled every event put on its queue: one per
    announcement plus `sent` sent by the test. (Runs a handled event starts exist before its handler returns.)"""
    def done() -> bool:
        events = announced(log)
        return all(b in events for b in blobs) and len(set(handled_messages(log, "segment_arrived"))) >= len(events) + sent

    wait_for(done, f"segment_arrived to handle the events for {list(blobs)} (+{sent} sent by the test)")


def last_tick(state: Path) -> datetime | None:
    """When the last finished run of the scheduled_exports timer started (devhost saves it after each run)."""
    try:
        saved = json.loads(state.read_text(encoding="utf-8"))["timers"]["scheduled_exports"]
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return datetime.fromisoformat(saved["Last"])


def wait_for_tick_after(tmp_path: Path) -> list[str]:
    """Until a timer run that started from now on has finished; returns the app's tick lines logged meanwhile."""
    moment = datetime.now(timezone.utc)
    before = len(tick_lines(tmp_path))
    wait_for(lambda: (last_tick(host_state(tmp_path)) or moment) > moment, "a schedule tick after " + moment.isoformat())
    return tick_lines(tmp_path)[before:]


def tick_lines(tmp_path: Path) -> list[str]:
    return [line.split(TICK, 1)[1] for line in log_lines(host_log(tmp_path)) if f"shared.exports.starting: {TICK}" in line]


def wait_for_chunks_handled(tmp_path: Path, runs: list[dict]) -> None:
    """Until every plan message and every chunk message of `runs` was handled: whatever a run's end starts (the
    follow-up export) is started inside the handler of its last chunk."""
    log = host_log(tmp_path)
    chunks = sum(r["chunks"]["total"] for r in runs)
    wait_for(lambda: len(set(handled_messages(log, "plan_export"))) >= len(runs)
             and len(set(handled_messages(log, "export_chunk"))) >= chunks, f"{chunks} chunk messages handled")


def test_a_snapshot_landing_partition_by_partition_starts_one_export_after_the_last(start_host, segments, mailchimp, tmp_path):
    host = start_host(extra_args=EVENTS)
    log = host_log(tmp_path)
    destination = create_destination(host)
    files = files_of(900, T1, rows_per_partition=300)
    model = [f for f in files if f[0].endswith("model.json")]
    partitions = [f for f in files if not f[0].endswith("model.json")]
    assert len(partitions) == 3
    upload(segments, model)  # the manifest first: the snapshot is incomplete until its last partition lands
    for partition in partitions[:-1]:
        upload(segments, [partition])
        wait_for_events_handled(log, [model[0][0], partition[0]])
        assert runs_of(host, destination["id"]) == []
    upload(segments, partitions[-1:])
    (run,) = wait_for_runs(host, destination["id"], 1)
    wait_for_events_handled(log, [name for name, _ in files])
    wait_for_chunks_handled(tmp_path, [run])
    assert len(runs_of(host, destination["id"])) == 1
    assert len(set(handled_messages(log, "segment_arrived"))) == len(announced(log)) == 4  # one event per blob
    assert run["trigger"] == "storage" and run["segments"][0]["snapshot"] == "2026-11-28T17:00Z"
    assert run["counts"]["read"] == 900


def test_the_same_event_delivered_three_times_starts_one_run(start_host, segments, storage, mailchimp, tmp_path):
    host = start_host()
    log = host_log(tmp_path)
    destination = create_destination(host)
    files = files_of(200, T1)
    upload(segments, files)
    queue = QueueClient.from_connection_string(storage.connection_string, QUEUE_SEGMENT_EVENTS)
    for _ in range(3):
        queue.send_message(blob_created(files[-1][0]))
    (run,) = wait_for_runs(host, destination["id"], 1)
    wait_for_events_handled(log, sent=3)
    wait_for_chunks_handled(tmp_path, [run])  # events handled during the run leave a follow-up mark: checked at its end
    assert len(set(handled_messages(log, "segment_arrived"))) == 3
    assert len(runs_of(host, destination["id"])) == 1
    assert run["trigger"] == "storage" and run["counts"]["read"] == 200


def test_schedule_and_arrival_race_to_one_run_per_snapshot_and_older_snapshots_are_ignored(start_host, segments, mailchimp, tmp_path):
    host = start_host(extra_args=EVENTS, EXPORT_SCHEDULE="* * * * * *")  # a tick every second
    log = host_log(tmp_path)
    destination = create_destination(host)
    first_files = files_of(200, T1)
    upload(segments, first_files)
    (first,) = wait_for_runs(host, destination["id"], 1)
    wait_for_events_handled(log, [name for name, _ in first_files])
    wait_for_chunks_handled(tmp_path, [first])
    ticks = wait_for_tick_after(tmp_path)  # ticks with nothing new start nothing
    assert ticks and all(line.endswith(", 0 runs started") for line in ticks), ticks
    assert len(runs_of(host, destination["id"])) == 1

    newer_files = files_of(200, T1 + timedelta(hours=1))
    upload(segments, newer_files)  # timer and arrival both see it
    runs = wait_for_runs(host, destination["id"], 2)
    wait_for_events_handled(log, [name for name, _ in newer_files])
    wait_for_chunks_handled(tmp_path, runs)
    ticks = wait_for_tick_after(tmp_path)
    assert ticks and all(line.endswith(", 0 runs started") for line in ticks), ticks
    assert len(runs_of(host, destination["id"])) == 2
    assert runs[0]["segments"][0]["snapshot"] == "2026-11-28T18:00Z" and runs[0]["trigger"] in ("schedule", "storage")

    older_files = files_of(200, T1 - timedelta(hours=1))
    upload(segments, older_files)  # an older snapshot arriving late
    wait_for_events_handled(log, [name for name, _ in older_files])
    ticks = wait_for_tick_after(tmp_path)  # and the timer has looked at it too
    assert ticks and all(line.endswith(", 0 runs started") for line in ticks), ticks
    assert len(runs_of(host, destination["id"])) == 2


def test_a_newer_snapshot_during_a_run_is_followed_by_exactly_one_more_run(start_host, segments, storage, mailchimp, tmp_path):
    mailchimp.admin("POST", "latency", json={"profile": "realistic"})
    host = start_host(extra_args=EVENTS)
    log = host_log(tmp_path)
    destination = create_destination(host)
    upload(segments, files_of(3000, T1, rows_per_partition=1000))
    wait_for(lambda: runs_of(host, destination["id"]), "the first run", timeout=30)
    newer = files_of(300, T1 + timedelta(hours=1))
    upload(segments, newer)
    queue = QueueClient.from_connection_string(storage.connection_string, QUEUE_SEGMENT_EVENTS)
    for _ in range(2):  # duplicates of the arrival, on top of the host's own announcement
        queue.send_message(blob_created(newer[-1][0]))
    assert runs_of(host, destination["id"])[0]["status"] in ("queued", "running")  # still busy with the first
    runs = wait_for_runs(host, destination["id"], 2, timeout=120)
    wait_for_events_handled(log, [name for name, _ in newer], sent=2)
    wait_for_chunks_handled(tmp_path, runs)  # the second run's end, too, has been through its follow-up check
    assert len(runs_of(host, destination["id"])) == 2
    assert [r["segments"][0]["snapshot"] for r in runs] == ["2026-11-28T18:00Z", "2026-11-28T17:00Z"]
    assert [r["counts"]["read"] for r in runs] == [300, 3000]
