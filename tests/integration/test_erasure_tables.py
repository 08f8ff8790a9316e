"""Erasure records and the ledger of erased addresses in real Table Storage (Azurite): hashes only, outcomes per
audience merged without overwriting each other, and a destination's reAddErased stored and read back."""
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.adapters.erasure_tables import ErasedLedgerTable, ErasureTable
from shared.adapters.tables import DestinationTable
from shared.destinations import new_destination
from shared.emails import subscriber_hash
from shared.erasures import ALREADY_GONE, DELETED, REFUSED, Erasure, Outcome, Target
from tests.services import table_service


@pytest.fixture
def tables(azurite):
    return table_service(azurite.connection_string)


def test_a_request_of_250_hashes_keeps_every_outcome_recorded_in_parallel_and_lists_newest_first(tables):
    records = ErasureTable(tables, "er" + uuid.uuid4().hex[:8])
    hashes = tuple(subscriber_hash(f"p{i}@fabrikam.com") for i in range(250))
    erasure = Erasure("e1", "2026-11-28T10:00:00+00:00", "Ada", "http", hashes)
    assert records.create(erasure) and not records.create(erasure)
    records.create(Erasure("e2", "2026-11-29T10:00:00+00:00", "storage:a.csv", "storage", ()))
    one, two = Target("aud1", ("d1", "d3")), Target("aud2", ("d2",))
    records.add_targets("e1", [one])
    records.add_targets("e1", [one, two])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda h: records.record("e1", h, one, Outcome(DELETED, at="t")), hashes))
        list(pool.map(lambda h: records.record("e1", h, two, Outcome(REFUSED, "Nope", "t")), hashes))
    records.set_status("e1", "completed_with_errors", "why", files_scrubbed=3)
    found = records.get("e1")
    assert sorted(found.hashes) == sorted(hashes) and found.targets == (one, two)
    assert all(found.outcome(h, one) == Outcome(DELETED, None, "t") and found.outcome(h, two).reason == "Nope" for h in hashes)
    assert (found.status, found.message, found.files_scrubbed) == ("completed_with_errors", "why", 3)
    assert [e.id for e in records.list(10)] == ["e2", "e1"] and [e.id for e in records.list(1)] == ["e2"]
    assert records.get("missing") is None and records.get("x' or '1'='1") is None


def test_the_ledger_answers_when_each_hash_was_erased(tables):
    ledger = ErasedLedgerTable(tables, "ea" + uuid.uuid4().hex[:8])
    hashes = [subscriber_hash(f"p{i}@fabrikam.com") for i in range(300)]
    ledger.note(hashes, "2026-11-28T10:00:00+00:00")
    assert ledger.erased_on([hashes[0], subscriber_hash("nobody@fabrikam.com")]) == {hashes[0]: "2026-11-28T10:00:00+00:00"}
    assert ledger.all() == dict.fromkeys(hashes, "2026-11-28T10:00:00+00:00")


def test_re_add_erased_is_stored_and_read_back(tables):
    destinations = DestinationTable(tables, "de" + uuid.uuid4().hex[:8])
    body = {"displayName": "N", "consent": {"accepted": True}, "audienceId": "a1", "reAddErased": True}
    destination = new_destination(body, "x").destination
    destinations.save(destination)
    assert destinations.get(destination.id).re_add_erased is True


def _listings(ledger: ErasedLedgerTable) -> list[int]:
    """Counts the ledger's listings (query_entities calls) from here on."""
    calls = [0]
    query = ledger.table.query_entities

    def counted(*args, **kwargs):
        calls[0] += 1
        return query(*args, **kwargs)

    ledger.table.query_entities = counted
    return calls


def test_a_ledger_listed_once_is_read_again_only_after_an_erasure_noted_by_any_process(tables):
    name = "ec" + uuid.uuid4().hex[:8]
    reader, writer = ErasedLedgerTable(tables, name), ErasedLedgerTable(tables, name)  # two processes' tables
    first = [subscriber_hash(f"p{i}@fabrikam.com") for i in range(1200)]  # more than a page of the listing
    writer.note(first, "2026-11-28T10:00:00+00:00")
    listings = _listings(reader)
    assert reader.all() == dict.fromkeys(first, "2026-11-28T10:00:00+00:00")  # the change mark is not a hash
    assert reader.all() == dict.fromkeys(first, "2026-11-28T10:00:00+00:00") and listings[0] == 1
    with pytest.raises(TypeError):
        reader.all()[first[0]] = "changed by a caller"  # shared by the process's callers: read-only
    late = subscriber_hash("late@fabrikam.com")
    writer.note([late], "2026-11-29T10:00:00+00:00")
    assert reader.all()[late] == "2026-11-29T10:00:00+00:00" and len(reader.all()) == 1201 and listings[0] == 2


def test_hashes_written_before_the_change_mark_existed_are_listed(tables):
    name = "el" + uuid.uuid4().hex[:8]
    ledger = ErasedLedgerTable(tables, name)
    old = subscriber_hash("old@fabrikam.com")
    ledger.table.upsert_entity({"PartitionKey": old[:2], "RowKey": old, "erased_at": "2026-01-01T00:00:00+00:00"})
    assert ledger.all() == {old: "2026-01-01T00:00:00+00:00"}
    new = subscriber_hash("new@fabrikam.com")
    ErasedLedgerTable(tables, name).note([new], "2026-11-29T10:00:00+00:00")  # creates the mark
    assert set(ledger.all()) == {old, new}


def test_a_listing_taken_while_an_erasure_is_noted_is_not_reused_once_the_note_is_done(tables):
    """The order that makes reuse safe: a note's hashes are written before its mark changes, and a listing is taken
    after the mark is read. Here a reader lists just before each of the note's writes; once the note has returned,
    the reader's next call has its hashes."""
    name = "ep" + uuid.uuid4().hex[:8]
    reader, writer = ErasedLedgerTable(tables, name), ErasedLedgerTable(tables, name)
    writer.note([subscriber_hash("first@fabrikam.com")], "2026-11-28T10:00:00+00:00")  # the mark exists
    hashes = [subscriber_hash(f"p{i}@fabrikam.com") for i in range(150)]  # two transactions in partitions of their own
    for write in ("submit_transaction", "upsert_entity"):
        original = getattr(writer.table, write)
        setattr(writer.table, write, lambda *args, _original=original, **kwargs: (reader.all(), _original(*args, **kwargs))[1])
    writer.note(hashes, "2026-11-29T10:00:00+00:00")
    assert set(hashes) <= set(reader.all())


def test_a_listing_is_not_reused_past_its_age_limit_for_hashes_written_without_the_mark(tables):
    name = "et" + uuid.uuid4().hex[:8]
    ledger = ErasedLedgerTable(tables, name)
    ledger.note([subscriber_hash("first@fabrikam.com")], "2026-11-28T10:00:00+00:00")
    ledger.RELIST_SECONDS = 0.5
    assert len(ledger.all()) == 1
    unmarked = subscriber_hash("written-by-the-previous-release@fabrikam.com")
    ledger.table.upsert_entity({"PartitionKey": unmarked[:2], "RowKey": unmarked, "erased_at": "2026-11-29T10:00:00+00:00"})
    time.sleep(0.6)
    assert unmarked in ledger.all()


def test_a_request_cut_short_while_its_hashes_were_written_has_no_record_until_it_is_written_whole(tables):
    records = ErasureTable(tables, "er" + uuid.uuid4().hex[:8])
    hashes = tuple(subscriber_hash(f"p{i}@fabrikam.com") for i in range(250))
    erasure = Erasure("e1", "2026-11-28T10:00:00+00:00", "storage:a.csv", "storage", hashes)
    submit, calls = records.table.submit_transaction, []

    def dies_on_the_second(operations):
        calls.append(len(operations))
        if len(calls) == 2:
            raise OSError("the worker died")
        return submit(operations)

    records.table.submit_transaction = dies_on_the_second
    with pytest.raises(OSError):
        records.create(erasure)
    assert records.get("e1") is None  # not a request of the first 100 hashes only
    assert records.create(erasure) and not records.create(erasure)
    found = records.get("e1")
    assert sorted(found.hashes) == sorted(hashes) and not found.work_queued
    records.note_queued("e1")
    assert records.get("e1").work_queued and records.get("e1").status == "queued"
    records.table.upsert_entity({"PartitionKey": "old", "RowKey": "erasure", "created_at": "t", "updated_at": "t",
                                 "requested_by": "x", "source": "http", "status": "queued", "addresses": 0})
    assert records.get("old").work_queued  # written by the previous release, which queued in the same call


def test_a_deletion_recorded_stays_whatever_a_second_worker_on_the_same_request_records_after_it(tables):
    """Two workers on one request (its message delivered twice at once): the second finds the person gone
    (alreadyGone) or fails (refused). The audit must keep saying the connector deleted them."""
    records = ErasureTable(tables, "er" + uuid.uuid4().hex[:8])
    hashes = tuple(subscriber_hash(f"p{i}@fabrikam.com") for i in range(3))
    records.create(Erasure("e1", "2026-11-28T10:00:00+00:00", "storage:a.csv", "storage", hashes))
    target = Target("aud1", ("d1",))
    records.add_targets("e1", [target])
    first, second, third = hashes
    records.record("e1", first, target, Outcome(DELETED, at="t1"))
    records.record("e1", first, target, Outcome(ALREADY_GONE, at="t2"))
    records.record("e1", first, target, Outcome(REFUSED, "Nope", "t3"))
    records.record("e1", second, target, Outcome(ALREADY_GONE, at="t1"))  # nothing to keep: written, then replaced
    records.record("e1", second, target, Outcome(DELETED, at="t2"))
    # The deletion lands between the second worker's read of the row and its write: its write is refused, it reads
    # again, and leaves the deletion as it is.
    read = records.table.get_entity

    def deleted_meanwhile(partition, row, **kwargs):
        found = read(partition, row, **kwargs)
        if row == f"h-{third}":
            records.table.get_entity = read
            records.record("e1", third, target, Outcome(DELETED, at="t1"))
        return found

    records.table.get_entity = deleted_meanwhile
    records.record("e1", third, target, Outcome(ALREADY_GONE, at="t2"))
    found = records.get("e1")
    assert [found.outcome(h, target) for h in hashes] == [Outcome(DELETED, None, "t1"), Outcome(DELETED, None, "t2"),
                                                            Outcome(DELETED, None, "t1")]


def test_only_queued_records_whose_work_was_never_queued_are_listed_as_unqueued(tables):
    records = ErasureTable(tables, "er" + uuid.uuid4().hex[:8])
    for erasure_id in ("stranded", "sent", "running"):
        records.create(Erasure(erasure_id, "2026-11-28T10:00:00+00:00", "Ada", "http", (subscriber_hash("a@b.co"),)))
    records.note_queued("sent")
    records.set_status("running", "running")
    records.table.upsert_entity({"PartitionKey": "legacy", "RowKey": "erasure", "created_at": "t", "updated_at": "t",
                                 "requested_by": "x", "source": "http", "status": "queued", "addresses": 1})
    [found] = records.list_unqueued()  # the previous release's record queued its work in the same call
    assert (found.id, found.status, found.work_queued, found.created_at) == (
        "stranded", "queued", False, "2026-11-28T10:00:00+00:00")
