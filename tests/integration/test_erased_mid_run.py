"""A person erased while an export of them is under way: the chunks not yet sent leave them out.

The real ExportService over Azurite and the local Mailchimp (tests/integration/export_driver.py); the erasure is
recorded through the real ErasureService (its ledger is the table planning and chunk workers read).
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from shared.emails import subscriber_hash
from tests.integration.export_driver import TAKEN, ExportDriver

ERASED = "p007@contoso.com"
LATE = "p009@contoso.com"  # erased while a chunk holding them is being sent


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server)


def test_a_person_erased_after_planning_is_refused_by_the_chunk_and_reported_by_hash_only(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.write_snapshot("Midway", TAKEN, [(f"p{i:03d}@contoso.com", f"First{i}", "Last") for i in range(20)])
    destination = driver.create_destination(segments=["Midway"])
    run_id = driver.start(destination)
    driver.deliver_one(driver.plan_queue)  # planned: the chunk holds her
    driver.app.erasures.request([ERASED], "admin-object-id")
    driver.deliver_all()
    run = driver.run(run_id)
    assert run.counts["refused"] == 1 and run.counts["created"] == 19 and run.status == "completed_with_errors"
    assert ERASED not in {m["email_address"] for m in driver.members()}
    report = [json.loads(line) for blob in driver.raw.error_lines(run_id) for line in blob.splitlines()]
    assert report == [{**report[0], "email": None, "source": "erasure", "memberHash": subscriber_hash(ERASED)}]
    assert report[0]["reason"].endswith("at the person's request")
    assert ERASED.encode() not in b"".join(driver.work_blobs(f"runs/{run_id}/").values())


class LateLedger:
    """The ledger as a chunk in flight sees it: empty when the chunk starts, the erasure in place when it counts."""

    def __init__(self, real) -> None:
        self.real, self.reads = real, 0

    def all(self) -> dict[str, str]:
        self.reads += 1
        return {} if self.reads == 1 else self.real.all()


def test_a_chunk_in_flight_when_the_erasure_lands_writes_no_address_back(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("Inflight", TAKEN, [(f"p{i:03d}@contoso.com", f"First{i}", "Last") for i in range(20)])
    destination = driver.create_destination(segments=["Inflight"])
    run_id = driver.start(destination)
    driver.deliver_one(driver.plan_queue)
    driver.app.erasures.request([LATE], "admin-object-id")
    in_flight = dataclasses.replace(driver.service, erased=LateLedger(driver.service.erased))
    driver.mailchimp.admin("POST", "faults", json={"rates": {"500": 1.0}, "path": "/lists/[a-z0-9]+$", "method": "POST",
                                                   "seed": 1})  # the chunk fails: its members would be kept for a retry
    try:
        message = driver.chunk_queue.messages.popleft()
        with pytest.raises(Exception):  # noqa: B017 - Mailchimp unavailable: the delivery fails and comes back
            in_flight.process_chunk(message.body["runId"], message.body["chunk"], "a1")
        in_flight.chunk_gave_up(message.body["runId"], message.body["chunk"], "a2")
    finally:
        driver.mailchimp.admin("POST", "faults", json={})
    run = driver.run(run_id)
    # no answer: failed (and never kept); refused only whoever an earlier test of the module erased before planning
    assert run.counts["failed"] + run.counts["refused"] == 20 and run.counts["failed"] >= 19, run.counts
    stored = b"".join(driver.work_blobs(f"runs/{run_id}/").values())
    assert LATE.encode() not in stored and b"p008@contoso.com" in stored  # the others are kept for a retry
    report = [json.loads(line) for blob in driver.raw.error_lines(run_id) for line in blob.splitlines()]
    by_hash = [line["memberHash"] for line in report if line["email"] is None]
    assert subscriber_hash(LATE) in by_hash and len(by_hash) == 1 + run.counts["refused"]
