"""A person erased while an export of them is under way: the chunks not yet sent leave them out.

The real ExportService over Azurite and the local Mailchimp (tests/integration/export_driver.py); the erasure is
recorded through the real ErasureService (its ledger is the table planning and chunk workers read).
"""
from __future__ import annotations

import json

import pytest

from shared.emails import subscriber_hash
from tests.integration.export_driver import TAKEN, ExportDriver

ERASED = "p007@contoso.com"


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
