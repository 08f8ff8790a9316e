"""Run accounting in real Table Storage (Azurite): atomic, exactly-once chunk completion under concurrency."""
import dataclasses
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.adapters import tables as tables_module
from shared.adapters.tables import DestinationTable, RunTable
from shared.destinations import Claim, FieldMapping, InvalidDestination, new_destination, updated_destination
from shared.runs import Run, SegmentPart, zero_counts
from tests.services import table_service


@pytest.fixture
def tables(azurite):
    return table_service(azurite.connection_string)


def new_run(runs: RunTable, chunks: int) -> Run:
    run = Run(id=uuid.uuid4().hex, destination_id="d1", trigger="http", status="running", created_at="2026-11-28T10:00:00+00:00",
              segments=[SegmentPart("A", "snap", "A/", "A")], total_chunks=chunks)
    runs.create(run)
    for n in range(chunks):
        runs.add_chunk(run.id, n, 10)
    return run


def test_each_chunk_counts_once_even_when_finished_concurrently_and_twice(tables):
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, 40)

    def finish(n: int) -> bool:
        return runs.finish_chunk(run.id, n, {"A": {**zero_counts(), "created": 10, "tagged": 10}}, "")

    with ThreadPoolExecutor(8) as pool:
        counted = list(pool.map(finish, list(range(40)) * 2))  # every chunk delivered twice
    assert sum(counted) == 40
    stored = runs.get(run.id)
    assert stored.chunks_done == 40 and not stored.finished
    assert stored.counts["created"] == 400 and stored.counts["tagged"] == 400
    assert all(c["state"] == "done" for c in runs.chunks(run.id))
    settled, by_this_call = runs.settle_if_done(run.id)
    assert by_this_call and settled.status == "succeeded" and settled.finished_at
    again, by_this_call = runs.settle_if_done(run.id)
    assert not by_this_call and again.finished_at == settled.finished_at  # only one caller finishes a run


def test_a_chunk_row_read_before_another_worker_finished_or_changed_it_is_never_counted_on_stale(tables):
    """finish_chunk starts from the row get_chunk last read (a storage call fewer per chunk): only that row's ETag
    stops a worker whose row went stale from counting a chunk again, or from undoing a change made meanwhile."""
    name = "runs" + uuid.uuid4().hex[:8]
    worker, other = RunTable(tables, name), RunTable(tables, name)  # two hosts
    run = new_run(worker, 3)
    counts = {"A": {**zero_counts(), "created": 10}}
    worker.get_chunk(run.id, 0)  # read under the lease ...
    assert other.finish_chunk(run.id, 0, counts, "")  # ... and another delivery counts it meanwhile
    assert not worker.finish_chunk(run.id, 0, counts, "")
    worker.get_chunk(run.id, 1)
    other.add_chunk(run.id, 1, 10, streamed=True)  # a replanning planner marks it streamed meanwhile
    assert worker.finish_chunk(run.id, 1, counts, "")
    assert other.get_chunk(run.id, 1)["streamed"] is True
    worker.get_chunk(run.id, 2)
    other.note_chunk_error(run.id, 2, "timed out")
    assert worker.finish_chunk(run.id, 2, counts, "")
    assert other.get_chunk(run.id, 2)["lastError"] == "timed out"
    stored = other.get(run.id)
    assert stored.chunks_done == 3 and stored.counts["created"] == 30


def test_planning_counts_and_chunk_counts_never_overwrite_each_other(tables):
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, 2)
    runs.finish_chunk(run.id, 0, {"A": {**zero_counts(), "created": 5}}, "")
    runs.update(run.id, lambda r: r.segment("A").counts.update(read=12, invalid=2))  # planning finishes after a chunk
    runs.finish_chunk(run.id, 1, {"A": {**zero_counts(), "created": 5}}, "")
    settled, _ = runs.settle_if_done(run.id)
    assert settled.counts["read"] == 12 and settled.counts["created"] == 10 and settled.status == "completed_with_errors"
    assert runs.get(run.id).counts == settled.counts


def test_outcomes_a_crashed_planning_attempt_recorded_are_replaced_even_by_none(tables):
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, 0)
    runs.record_planned_outcomes(run.id, {"A": {**zero_counts(), "unchanged": 2, "tagged": 2}})  # attempt 1, then a crash
    runs.record_planned_outcomes(run.id, {})  # attempt 2 settles nobody at planning
    assert runs.get(run.id).counts["unchanged"] == 0


def test_a_replanned_chunk_keeps_its_state(tables):
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, 1)
    runs.finish_chunk(run.id, 0, {"A": zero_counts()}, "")
    runs.add_chunk(run.id, 0, 10)
    assert runs.get_chunk(run.id, 0)["state"] == "done"


def test_only_one_unfinished_run_holds_a_destination(tables):
    destinations = DestinationTable(tables, "dest" + uuid.uuid4().hex[:8])
    d = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1", "mapping": {"email": "E"},
                         "segments": ["S"]}, "admin").destination
    destinations.save(d)
    finished: set[str] = set()
    is_finished = finished.__contains__
    assert destinations.claim(d.id, "run-1", {"S": "2026-11-28T10:00Z"}, is_finished).outcome == "claimed"
    assert destinations.claim(d.id, "run-2", {"S": "2026-11-28T10:00Z"}, is_finished) == Claim("busy", "run-1")
    finished.add("run-1")  # a run that finished without releasing (crash) does not block forever
    assert destinations.claim(d.id, "run-2", {"S": "2026-11-28T10:00Z"}, is_finished).outcome == "claimed"
    destinations.save(d)  # saving the destination's settings keeps the run bookkeeping
    assert destinations.active_run(d.id) == "run-2"
    assert destinations.exported(d.id) == {"S": "2026-11-28T10:00Z"}
    assert destinations.release(d.id, "run-2") is None
    assert destinations.active_run(d.id) is None


def test_triggers_start_only_for_newer_snapshots_and_fold_into_one_follow_up(tables):
    destinations = DestinationTable(tables, "dest" + uuid.uuid4().hex[:8])
    d = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1", "mapping": {"email": "E"},
                         "segments": ["S"]}, "admin").destination
    destinations.save(d)
    running = lambda run_id: False  # noqa: E731 - every holder is still running
    old, new = {"S": "2026-11-28T10:00Z"}, {"S": "2026-11-28T11:00Z"}
    assert destinations.claim(d.id, "r1", old, running, "storage", only_if_newer=True).outcome == "claimed"
    assert destinations.claim(d.id, "r2", old, running, "storage", only_if_newer=True).outcome == "up_to_date"
    assert destinations.claim(d.id, "r3", new, running, "storage", only_if_newer=True).outcome == "deferred"
    assert destinations.claim(d.id, "r4", new, running, "schedule", only_if_newer=True).outcome == "deferred"
    assert destinations.release(d.id, "r1") == "storage"  # one follow-up, whoever asked first
    assert destinations.release(d.id, "r1") is None
    assert destinations.claim(d.id, "r5", new, running, "storage", only_if_newer=True).outcome == "claimed"
    assert destinations.claim(d.id, "r6", old, running, "storage", only_if_newer=True).outcome == "up_to_date"  # older: ignored


def test_when_many_workers_settle_at_once_only_one_is_told_it_finished_the_run(tables):
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, 1)
    runs.finish_chunk(run.id, 0, {"A": {**zero_counts(), "created": 10}}, "")
    with ThreadPoolExecutor(8) as pool:
        settled = list(pool.map(lambda _: runs.settle_if_done(run.id), range(8)))
    assert sum(by_this_call for _, by_this_call in settled) == 1


def test_a_hundred_export_users_with_long_names_round_trip_and_a_shorter_list_replaces_them(tables):
    """A string property holds at most 32,768 UTF-16 code units; the list at its limits takes about 55,000 characters,
    so it is stored across properties, and a later, shorter list leaves no part of the old one behind."""
    destinations = DestinationTable(tables, "dest" + uuid.uuid4().hex[:8])
    longest = [{"email": f"{'x' * 60}{i:03d}@{'d' * 60}.example", "name": "N\U0001F600" * 99 + f"{i:02d}"[:2],
                "id": str(uuid.UUID(int=i))} for i in range(100)]
    body = {"displayName": "Newsletter", "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5",
            "mapping": {"email": "Email"}, "segments": ["A"], "exportUsers": longest}
    destination = new_destination(body, "ada.admin@contoso.example").destination
    assert len(json.dumps([u.public() for u in destination.export_users], ensure_ascii=False)) > 40_000
    destinations.save(destination)
    stored = destinations.get(destination.id)
    assert stored == destination and len(stored.export_users) == 100
    assert stored.created_by == "ada.admin@contoso.example"
    shorter = updated_destination(stored, {"exportUsers": [{"email": "oscar@contoso.example"}]}, "x").destination
    destinations.save(shorter, destinations.read(destination.id)[1])
    assert destinations.get(destination.id).export_users == shorter.export_users
    entity = destinations.table.get_entity("destination", destination.id)
    assert [name for name in entity if name.startswith("export_users")] == ["export_users"]


# --- records too large for Table storage (64 KiB a string property, 1 MiB a record) are a 400, never a 500 ----------

def by_hand(**changes):
    """A destination as validation would never let through (names over 255 characters), to reach storage's limits."""
    base = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1",
                            "mapping": {"email": "E"}, "segments": ["S"]}, "admin").destination
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("changes, field", [
    ({"mapping": FieldMapping("E" * 40_000)}, "mapping"),
    ({"segments": tuple(f"{i}" + "é" * 2_000 for i in range(50))}, "segments"),  # 100,000 characters as stored
])
def test_a_destination_too_large_to_store_is_invalid_naming_the_field_and_nothing_is_stored(tables, monkeypatch, changes,
                                                                                            field):
    destinations = DestinationTable(tables, "dest" + uuid.uuid4().hex[:8])
    d = by_hand(**changes)
    with pytest.raises(InvalidDestination) as caught:
        destinations.save(d)
    (problem,) = caught.value.problems
    assert problem["field"] == field and "is too large to store" in problem["message"] and "64 KiB" in problem["message"]
    assert destinations.get(d.id) is None
    # storage's own refusal (PropertyValueTooLarge from Azurite), when the check before writing lets it through
    monkeypatch.setattr(tables_module, "_too_large", lambda entity: None)
    with pytest.raises(InvalidDestination) as caught:
        destinations.save(d)
    (problem,) = caught.value.problems
    assert problem["field"] == field and "PropertyValueTooLarge" in problem["message"]
    assert destinations.get(d.id) is None
    saved = by_hand()
    destinations.save(saved)  # an update refused alike keeps the stored record
    with pytest.raises(InvalidDestination):
        destinations.save(dataclasses.replace(d, id=saved.id), destinations.read(saved.id)[1])
    assert destinations.get(saved.id) == saved


def test_the_largest_destination_validation_allows_is_stored_and_read_back(tables):
    """255-character names beyond U+FFFF (two UTF-16 units each): 50 segments, a mapping as large as allowed."""
    wide = "\U0001F600" * 253
    body = {"displayName": "N" * 200, "consent": {"accepted": True}, "audienceId": "a1b2c3d4e5", "tagPrefix": "p" * 50,
            "mapping": {"email": wide + "EE", "mergeFields": {f"F{i}": wide + f"{i:02d}" for i in range(37)}},
            "segments": [wide + chr(0x41 + i % 26) + chr(0x61 + i // 26) for i in range(50)]}
    destination = new_destination(body, "admin").destination
    assert 19_000 < len(json.dumps(body["mapping"], ensure_ascii=False).encode("utf-16-le")) // 2 <= 20_000
    destinations = DestinationTable(tables, "dest" + uuid.uuid4().hex[:8])
    destinations.save(destination)
    assert destinations.get(destination.id) == destination


def test_a_run_of_50_segments_with_long_names_is_stored_across_properties_and_read_back(tables):
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    name = "S" * 250
    run = Run(id=uuid.uuid4().hex, destination_id="d1", trigger="http", status="queued",
              created_at="2026-11-28T10:00:00+00:00",
              segments=[SegmentPart(f"{name}{i:02d}", "2026-11-28T10:00Z", f"CI/Export/{name}{i:02d}/2026/11/28/1000/",
                                    "p" * 50 + f"{name}{i:02d}") for i in range(50)])
    runs.create(run)  # 50 segments of 252 characters take about 50,000 characters: more than one property holds
    stored = runs.get(run.id)
    assert [p.segment for p in stored.segments] == [p.segment for p in run.segments]
    assert [p.folder for p in stored.segments] == [p.folder for p in run.segments]


def test_a_table_deleted_under_the_app_raises_instead_of_reading_every_record_as_absent(azurite):
    """A missing row is None; a missing table is not a missing row: read so, a run's chunks would look never planned
    (their messages dropped unsent), a destination deleted, an erased person never erased."""
    from shared.adapters.erasure_tables import ErasedLedgerTable

    service = table_service(azurite.connection_string)
    suffix = uuid.uuid4().hex[:8]
    runs, destinations = RunTable(service, f"runs{suffix}"), DestinationTable(service, f"dest{suffix}")
    ledger = ErasedLedgerTable(service, f"erased{suffix}")
    run = new_run(runs, chunks=1)
    assert runs.get(run.id, counts=False) is not None and runs.get("no-such-run", counts=False) is None
    assert runs.get_chunk("no-such-run", 0) is None and destinations.get("no-such-destination") is None
    ledger.note(["ab" * 16], "2026-12-02T10:00:00+00:00")
    assert ledger.erased_on(["ab" * 16, "cd" * 16]) == {"ab" * 16: "2026-12-02T10:00:00+00:00"}

    for table in (runs, destinations, ledger):
        service.delete_table(table._name)
    for read in (lambda: runs.get(run.id, counts=False), lambda: runs.get(run.id), lambda: runs.get_chunk(run.id, 0),
                 lambda: destinations.get("no-such-destination"), lambda: ledger.erased_on(["ab" * 16])):
        with pytest.raises(tables_module.TableMissing, match="is missing"):
            read()
    # an instance starting afterwards, as in Azure (identity-based storage, create=False): it does not make the ledger
    # again, empty, which would let erased people be exported again
    with pytest.raises(tables_module.TableMissing, match="erasedaddresses table lets erased people"):
        ErasedLedgerTable(service, ledger._name, create=False).erased_on(["ab" * 16])
    assert ledger._name not in {t.name for t in service.list_tables()}
    assert RunTable(service, runs._name).get(run.id, counts=False) is None  # locally (Azurite) it is made on first use


def test_a_claim_whose_run_was_never_created_gives_its_snapshots_back(tables):
    """A run's record that could not be created (starting.py _queue) exported nothing: releasing with the claim's
    `previous` puts back what the segments last exported, so the next trigger starts the snapshot again (it used to
    read as exported by a run that never existed, until a newer snapshot landed)."""
    destinations = DestinationTable(tables, "dest" + uuid.uuid4().hex[:8])
    destination = new_destination({"displayName": "D", "consent": {"accepted": True}, "audienceId": "a1",
                                   "mapping": {"email": "E"}, "segments": ["A", "B"]}, "admin").destination
    destinations.save(destination)
    finished = lambda run_id: True  # noqa: E731 - no run is active in this test
    first = destinations.claim(destination.id, "r1", {"A": "2026-11-28T17:00Z"}, finished, "storage", only_if_newer=True)
    assert first.outcome == "claimed" and first.previous == {"A": ""}
    destinations.release(destination.id, "r1")
    second = destinations.claim(destination.id, "r2", {"A": "2026-11-29T17:00Z", "B": "2026-11-29T17:00Z"}, finished,
                                "storage", only_if_newer=True)
    assert second.previous == {"A": "2026-11-28T17:00Z", "B": ""}

    destinations.release(destination.id, "r2", second.previous)  # r2's record could not be created

    assert destinations.exported(destination.id) == {"A": "2026-11-28T17:00Z"} and not destinations.active_run(destination.id)
    again = destinations.claim(destination.id, "r3", {"A": "2026-11-29T17:00Z", "B": "2026-11-29T17:00Z"}, finished,
                               "schedule", only_if_newer=True)
    assert again.outcome == "claimed"  # not up_to_date: the snapshots are started again
    destinations.release(destination.id, "someone-else", {"A": ""})  # not the holder: changes nothing
    assert destinations.exported(destination.id)["A"] == "2026-11-29T17:00Z" and destinations.active_run(destination.id) == "r3"


def test_creating_a_run_whose_record_landed_already_is_not_an_error(tables):
    """The SDK's retry of a create that had landed finds the record there: run ids are unique, so it is this run's."""
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, chunks=0)
    runs.create(run)
    assert runs.get(run.id, counts=False).id == run.id


def test_a_run_is_read_with_its_counters_in_one_query_that_counts_only_counter_rows(tables, monkeypatch):
    """The run row and its counter rows are neighbours in key order and read together; another row of the run's
    partition falling in that key range (none today) is not taken for a counter."""
    runs = RunTable(tables, "runs" + uuid.uuid4().hex[:8])
    run = new_run(runs, 2)
    runs.finish_chunk(run.id, 0, {"A": {**zero_counts(), "created": 10, "tagged": 10}}, "")
    runs.table.create_entity({"PartitionKey": run.id, "RowKey": "run-note", "note": "not a counter"})
    calls = []
    real = runs.table.query_entities
    monkeypatch.setattr(runs.table, "query_entities", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(runs.table, "get_entity", lambda *a, **k: pytest.fail("read by a point read too"))
    stored = runs.get(run.id)
    assert len(calls) == 1
    assert stored.chunks_done == 1 and stored.counts["created"] == 10
