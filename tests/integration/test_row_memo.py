"""The row memo (shared/row_memo.py) on real storage (Azurite) and the real local Mailchimp: a refresh skips the rows
the last plan found in step, unread, and counts exactly what reading them counts; what would make a skipped row plan
otherwise (its contact changed by hand, a second row of its address, a changed value) makes it read."""
from __future__ import annotations

import dataclasses
import time
import uuid

from datetime import UTC, datetime, timedelta

from shared.audience_mirror import ROW_MEMO, AudienceMirror, _version, destination_prefix, note_mirrors_deleted, sweep_mirrors
from tests.integration.export_driver import DEMO_AUDIENCE, ExportDriver
from tests.integration.test_audience_mirror import (SEGMENT, Snapshots, by_hand, contact, export, fill_audience, mirror,
                                                    next_second, preview, rows, with_mirror_of)

import pytest


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    driver = ExportDriver(storage, mailchimp_server)
    driver.service = dataclasses.replace(driver.service, mirror=mirror(driver))
    return driver


def memos(driver: ExportDriver, destination: str) -> list[str]:
    return [name for name in driver.raw.work.list_names(f"{destination_prefix(destination)}{DEMO_AUDIENCE}/")
            if name.endswith(ROW_MEMO)]


def exported_twice(driver: ExportDriver, contacts: int, people: list[tuple[str, str, str]],
                   prefix: str) -> tuple[str, Snapshots, list]:
    """A fresh audience, a destination exporting `people`, and its two runs: the first tags everyone (nothing is in
    step yet, so its memo is empty), the second finds every row in step (each one in its memo)."""
    driver.reset_mailchimp()
    driver.reset_queues()
    fill_audience(driver, contacts)
    snapshots = Snapshots(driver, f"{SEGMENT}{uuid.uuid4().hex[:6]}")
    destination = driver.create_destination(segments=[snapshots.segment], tagPrefix=prefix)
    runs = []
    for _ in range(2):
        next_second()
        snapshots.write(people)
        runs.append(export(driver, destination)[0])
    return destination, snapshots, runs


def test_a_refresh_skips_the_rows_in_step_and_reads_those_that_may_not_be(driver: ExportDriver) -> None:
    people = rows(range(300))
    destination, snapshots, (first, second) = exported_twice(driver, 1000, people, "Memo: ")
    assert first.counts["tagged"] == 300 and "knownRows" not in first.details
    assert (second.counts["unchanged"], second.details.get("knownRows")) == (300, None)
    assert len(memos(driver, destination)) == 1

    # Between runs: one row's value changes, one contact is renamed by hand, one address gets a second row
    # (after its first), one contact unsubscribes by hand.
    changed, by_hand_renamed, repeated, unsubscribed = 10, 20, 30, 40
    next_second()
    by_hand(driver, "PATCH", contact(by_hand_renamed), json={"merge_fields": {"FNAME": "ByHand"}})
    by_hand(driver, "PATCH", contact(unsubscribed), json={"status": "unsubscribed"})
    people = [*people, (contact(repeated), "Second", "Row")]
    people[changed] = (contact(changed), "Changed", f"Last{changed}")
    snapshots.write(people)
    with with_mirror_of(driver, None):
        in_full = preview(driver, destination)  # no mirror, no memo: every row read
    third, _ = export(driver, destination)
    assert third.counts == in_full.counts
    assert (third.counts["updated"], third.counts["unchanged"], third.counts["duplicates"]) == (2, 298, 1)
    # The changed row, the renamed and the repeated contacts' rows are read; the unsubscribed contact's too (its
    # contact line changed), and it stays unsubscribed; every other row is skipped.
    assert third.details["knownRows"] == 300 - 4
    now = {m["email_address"]: m for m in driver.members()}
    assert now[contact(unsubscribed)]["status"] == "unsubscribed"
    assert now[contact(by_hand_renamed)]["merge_fields"]["FNAME"] == f"First{by_hand_renamed}"
    assert now[contact(changed)]["merge_fields"]["FNAME"] == "Changed"


def test_the_memo_is_not_kept_when_mirrors_were_deleted_while_the_run_planned(driver: ExportDriver) -> None:
    """Its digests stand for people: an erasure meanwhile must not find them stored again afterwards."""
    store = AudienceMirror(driver.raw.work, mirror(driver)._max_age)
    destination = f"memo-{uuid.uuid4().hex[:8]}"
    marks = store.marks(destination)
    note_mirrors_deleted(driver.raw.work)  # an erasure, after the run took the marks
    store.keep_row_memo(destination, DEMO_AUDIENCE, b"rowmemo\n", marks)
    assert memos(driver, destination) == []
    store.keep_row_memo(destination, DEMO_AUDIENCE, b"rowmemo\n", store.marks(destination))
    first = memos(driver, destination)
    time.sleep(1.01)  # a memo's name says when it was written, to the second
    store.keep_row_memo(destination, DEMO_AUDIENCE, b"rowmemo\n", store.marks(destination))
    assert len(first) == 1 and len(memos(driver, destination)) == 1 and memos(driver, destination) != first  # the older
    # one deleted


def test_the_retention_sweep_deletes_a_memo_older_than_the_period_even_when_the_mirror_is_newer(driver: ExportDriver):
    """A mirror refreshed by previews alone (which may not write the memo) must not keep an old memo alive."""
    folder = f"{destination_prefix(f'swept-{uuid.uuid4().hex[:8]}')}{DEMO_AUDIENCE}/"
    now = datetime.now(UTC)
    old_memo, new_part = f"{folder}rows-{_version(now - timedelta(days=40))}{ROW_MEMO}", f"{folder}{_version(now)}/part-00.jsonl.gz"
    for name in (old_memo, new_part):
        driver.raw.work.write_bytes(name, b"x")
    sweep_mirrors(driver.raw.work, now - timedelta(days=30))
    assert list(driver.raw.work.list_names(folder)) == [new_part]


def test_an_erasure_requested_since_the_last_run_makes_the_run_read_every_row(driver: ExportDriver) -> None:
    """Requested, not yet processed (processing deletes every memo): the erased person is refused, not skipped."""
    people = rows(range(50))
    destination, snapshots, _ = exported_twice(driver, 100, people, "Erased: ")
    driver.app.erasures.request([contact(5)], "tester")
    snapshots.write(people)
    run = driver.export(destination)
    assert (run.counts["refused"], run.counts["unchanged"], run.details.get("knownRows")) == (1, 49, None)
