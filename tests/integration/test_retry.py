"""Retry only what failed: the real ExportService over Azurite and the local Mailchimp, with Mailchimp failing.

The local Mailchimp's fault injection answers 500 to every batch subscribe until the faults are turned off, so the
chunks' members are counted failed (after the queue's redeliveries, by the poison handler); a retry then sends those
members, and only those, again.
"""
from __future__ import annotations

import pytest

from shared.exports import Refused
from tests.integration.export_driver import DEMO_AUDIENCE, TAKEN, ExportDriver, minutes_after

BATCH = {"rates": {"500": 1.0}, "path": f"/lists/{DEMO_AUDIENCE}$", "method": "POST", "seed": 1}


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server, MAILCHIMP_RETRY_SECONDS="1", EXPORT_CHUNK_SIZE="100")


def rows(count: int) -> list[tuple[str, str, str]]:
    return [(f"r{i:04d}@contoso.com", f"First{i}", f"Last{i}") for i in range(count)] + [("not-an-email", "A", "B")]


def tagged(driver: ExportDriver, tag: str) -> set[str]:
    return {m["email_address"] for m in driver.members() if m["status"] != "archived"
            and tag.casefold() in {t["name"].casefold() for t in m["tags"]}}


def test_a_retry_after_mailchimp_failed_sends_only_the_failed_members_and_leaves_nothing_failed(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.write_snapshot("Retry", TAKEN, rows(250))
    destination = driver.create_destination(segments=["Retry"])
    driver.put_member("r0000@contoso.com", "subscribed", merge_fields={"FNAME": "First0", "LNAME": "Last0"})
    driver.mailchimp.admin("POST", "faults", json=BATCH)  # an outage longer than every retry and redelivery
    failed_run = driver.export(destination)
    driver.mailchimp.admin("POST", "faults", json={})
    counts = failed_run.counts
    assert counts["failed"] == 250 and counts["invalid"] == 1, counts
    assert failed_run.status == "failed"
    kept = driver.work_blobs(f"runs/{failed_run.id}/retry/")
    assert sum(blob.count(b"\n") for blob in kept.values()) == counts["failed"]
    # meanwhile a failed member unsubscribes in Mailchimp: the retry must not subscribe them again
    failed_emails = sorted({line.split(b'"email":"')[1].split(b'"')[0].decode() for blob in kept.values()
                            for line in blob.splitlines()})
    quitter = next(e for e in failed_emails if e != "r0000@contoso.com")
    driver.put_member(quitter, "unsubscribed")

    retry_id = driver.service.retry(failed_run.id, started_by="tester").id
    driver.deliver_all()
    retry = driver.run(retry_id)
    assert retry.trigger == "retry" and retry.details["retryOf"] == failed_run.id and retry.status == "succeeded"
    assert retry.counts["failed"] == 0 and retry.counts["read"] == counts["failed"]
    assert retry.counts["invalid"] == 0  # invalid rows are not sent again
    assert retry.counts["created"] + retry.counts["updated"] + retry.counts["unchanged"] == counts["failed"]
    assert driver.run(failed_run.id).details["retriedBy"] == retry_id
    assert driver.work_blobs(f"runs/{failed_run.id}/retry/") == {}  # kept only until the retry
    everyone = {f"r{i:04d}@contoso.com" for i in range(250)}
    assert tagged(driver, "Retry") == everyone
    statuses = {m["email_address"]: m["status"] for m in driver.members()}
    assert statuses[quitter] == "unsubscribed"
    with pytest.raises(Refused) as twice:
        driver.service.retry(failed_run.id)
    assert twice.value.status == 409 and retry_id in twice.value.message
    with pytest.raises(Refused) as nothing:
        driver.service.retry(retry_id)
    assert nothing.value.status == 409 and "no failed members" in nothing.value.message


def test_a_run_without_failed_members_or_still_going_cannot_be_retried(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("Fine", TAKEN, rows(20))
    destination = driver.create_destination(segments=["Fine"])
    going = driver.start(destination)
    with pytest.raises(Refused) as early:
        driver.service.retry(going)
    assert early.value.status == 409 and "only a finished export" in early.value.message
    driver.deliver_all()
    assert driver.run(going).status == "completed_with_errors"  # the invalid row: not a failure
    with pytest.raises(Refused) as none:
        driver.service.retry(going)
    assert none.value.status == 409
    with pytest.raises(Refused) as unknown:
        driver.service.retry("20260101T000000-deadbeef")
    assert unknown.value.status == 404


def test_a_retry_is_refused_once_a_newer_run_sent_newer_data(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("Stale", TAKEN, [("m@contoso.com", "Old", "Name"), ("leaver@contoso.com", "Lee", "Ver")])
    destination = driver.create_destination(segments=["Stale"])
    driver.mailchimp.admin("POST", "faults", json=BATCH)
    failed = driver.export(destination)
    driver.mailchimp.admin("POST", "faults", json={})
    assert failed.counts["failed"] == 2
    driver.write_snapshot("Stale", minutes_after(TAKEN, 60), [("m@contoso.com", "New", "Name")])
    newer = driver.export(destination)
    assert newer.status == "succeeded"
    with pytest.raises(Refused) as late:  # it would write "Old" over "New" and add the leaver back
        driver.service.retry(failed.id)
    assert late.value.status == 409 and newer.id in late.value.message
    statuses = {m["email_address"]: m["merge_fields"]["FNAME"] for m in driver.members()}
    assert statuses == {"m@contoso.com": "New"}


def test_a_retry_cancelled_before_planning_gives_the_run_back(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("GiveBack", TAKEN, rows(30))
    destination = driver.create_destination(segments=["GiveBack"])
    driver.mailchimp.admin("POST", "faults", json=BATCH)
    failed = driver.export(destination)
    driver.mailchimp.admin("POST", "faults", json={})
    first = driver.service.retry(failed.id).id
    assert driver.service.cancel_run(first, "cancelled by tester").status == "cancelling"
    driver.deliver_all()
    assert driver.run(first).status == "cancelled" and driver.run(first).counts["read"] == 0
    assert "retriedBy" not in driver.run(failed.id).details  # the kept members were not used: retry again
    second = driver.service.retry(failed.id).id
    driver.deliver_all()
    assert driver.run(second).status == "succeeded" and driver.run(second).counts["created"] == 30


def test_untags_a_cancel_or_an_outage_left_undone_are_counted_and_done_by_the_retry(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("Leavers", TAKEN, rows(40))
    destination = driver.create_destination(segments=["Leavers"])
    assert driver.export(destination).counts["created"] == 40
    driver.write_snapshot("Leavers", minutes_after(TAKEN, 60), rows(36))  # four leave: 10 % (the guard allows 20 %)
    driver.mailchimp.admin("POST", "faults", json={"rates": {"500": 1.0}, "path": f"/lists/{DEMO_AUDIENCE}/segments/[0-9]+$",
                                                   "method": "POST", "seed": 1})
    broken = driver.export(destination)
    driver.mailchimp.admin("POST", "faults", json={})
    assert broken.counts["untagFailed"] == 4 and broken.counts["untagged"] == 0, broken.counts
    assert len(tagged(driver, "Leavers")) == 40
    retry = driver.service.retry(broken.id).id
    driver.deliver_all()
    done = driver.run(retry)
    assert done.status == "succeeded" and done.counts["untagged"] == 4 and done.counts["read"] == 0, done.counts
    assert tagged(driver, "Leavers") == {f"r{i:04d}@contoso.com" for i in range(36)}
