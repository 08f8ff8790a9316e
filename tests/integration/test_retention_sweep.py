"""The retention sweep on real storage (Azurite): exactly the runs past their periods lose their files and staff
names, or their whole record; running and recent runs are untouched; sweeping twice, or twice at once, is harmless."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.storage import BlobFolder
from shared.adapters.tables import RunTable
from shared.retention import FORGOTTEN, NAME_REMOVED, Retention
from shared.retention_sweep import RetentionSweep, Swept
from shared.runs import Run, SegmentPart, run_id_time, zero_counts
from tests.services import table_service

NOW = datetime.now(UTC)
ADA = "ada@contoso.example"


@dataclass
class Store:
    runs: RunTable
    work: BlobFolder
    table: object
    sweep: RetentionSweep


@pytest.fixture
def store(azurite) -> Store:
    tables = table_service(azurite.connection_string)
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    work = BlobFolder(BlobServiceClient.from_connection_string(azurite.connection_string)
                      .get_container_client("work" + uuid.uuid4().hex[:8]))
    work.ensure()
    return Store(runs, work, runs.table, RetentionSweep(runs, work, Retention(personal_days=30, run_days=365)))


def make_run(store: Store, created_days_ago: float, finished_days_ago: float | None) -> str:
    """A cancelled run started by Ada with two chunks (one with an error text), counters and files."""
    created = NOW - timedelta(days=created_days_ago)
    run = Run(id=f"{run_id_time(created)}-{uuid.uuid4().hex[:8]}", destination_id="d1", trigger="http",
              status="running", created_at=created.isoformat(), segments=[SegmentPart("A", "snap", "A/", "A")],
              total_chunks=2, started_by=ADA, started_at=created.isoformat())
    store.runs.create(run)
    for number in range(2):
        store.runs.add_chunk(run.id, number, 10)
        store.runs.finish_chunk(run.id, number, {"A": {**zero_counts(), "created": 10}}, "")
    store.runs.note_chunk_error(run.id, 1, f"MailchimpError: {ADA} looks fake")
    for name in ("errors/chunk-000001-1.jsonl", "chunks/000001.jsonl", "preview/part-0000.jsonl"):
        store.work.write_bytes(f"runs/{run.id}/{name}", ADA.encode())
    if finished_days_ago is not None:
        finished = (NOW - timedelta(days=finished_days_ago)).isoformat()

        def finish(stored: Run) -> None:
            stored.status, stored.finished_at = "cancelled", finished
            stored.message = f"cancelled by {ADA} at {finished}"

        store.runs.update(run.id, finish)
    return run.id


def rows(store: Store, run_id: str) -> dict[str, dict]:
    return {e["RowKey"]: dict(e) for e in store.table.query_entities("PartitionKey eq @r", parameters={"r": run_id})}


def files(store: Store, run_id: str) -> list[str]:
    return list(store.work.list_names(f"runs/{run_id}/"))


def runs_of_every_age(store: Store) -> dict[str, str]:
    return {"recent": make_run(store, 6, 5), "personal": make_run(store, 41, 40), "old": make_run(store, 401, 400),
            "running": make_run(store, 500, None), "finished_late": make_run(store, 400, 10)}


def test_the_sweep_deletes_exactly_what_is_due(store: Store) -> None:
    ids = runs_of_every_age(store)
    store.work.write_bytes("counts/abc.json", b"{}")  # not a run's: never the sweep's
    before = {name: (rows(store, run_id), files(store, run_id)) for name, run_id in ids.items()}

    assert store.sweep.sweep(NOW) == Swept(forgotten=1, deleted=1)

    for name in ("recent", "running", "finished_late"):  # inside their period, or not finished however old
        assert (rows(store, ids[name]), files(store, ids[name])) == before[name], name
    assert rows(store, ids["old"]) == {} and files(store, ids["old"]) == []  # run row, counters and chunks
    assert files(store, ids["personal"]) == []
    forgotten = store.runs.get(ids["personal"])
    assert forgotten.started_by is None and ADA not in (forgotten.message or "")
    assert forgotten.message.startswith(f"cancelled by {NAME_REMOVED} at ") and forgotten.details[FORGOTTEN]
    assert forgotten.counts["created"] == 20 and forgotten.chunks_done == 2  # the counts stay
    assert all(not row.get("lastError") for row in rows(store, ids["personal"]).values())
    assert list(store.work.list_names("counts/")) == ["counts/abc.json"]


def test_sweeping_again_or_twice_at_once_changes_nothing_more(store: Store) -> None:
    ids = runs_of_every_age(store)
    with ThreadPoolExecutor(2) as pool:
        swept = list(pool.map(lambda _: store.sweep.sweep(NOW), range(2)))
    assert all(s.forgotten <= 1 and s.deleted <= 1 for s in swept)
    after = {name: (rows(store, run_id), files(store, run_id)) for name, run_id in ids.items()}
    assert after["old"] == ({}, []) and after["personal"][1] == []
    assert store.runs.get(ids["personal"]).started_by is None

    assert store.sweep.sweep(NOW) == Swept(forgotten=0, deleted=0)
    assert {name: (rows(store, run_id), files(store, run_id)) for name, run_id in ids.items()} == after
