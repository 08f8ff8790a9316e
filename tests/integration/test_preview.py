"""A preview (dry run) plans like a real run, sends nothing, and foretells the real run's numbers.

The real ExportService over Azurite and the local Mailchimp (tests/integration/export_driver.py). The audience is
given every case the chunk workers treat differently: new members, members whose fields changed in the snapshot or by
hand in Mailchimp, a cleaned, an archived and an unsubscribed member, members who left the segment (and lose its tag),
invalid rows, duplicates, and an address the local Mailchimp refuses as fake (the one thing a preview cannot foresee).
"""
from __future__ import annotations

import json

import pytest

from tests.integration.export_driver import DEMO_AUDIENCE, TAKEN, ExportDriver, minutes_after

SEGMENT = "Preview"
FAKE = "test@fabrikam.com"  # refused by Mailchimp as a fake address: only the real run learns it


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server)


def first_rows() -> list[tuple[str, str, str]]:
    return [(f"p{i:03d}@contoso.com", f"First{i}", f"Last{i}") for i in range(100)]


def second_rows() -> list[tuple[str, str, str]]:
    rows = [row for i, row in enumerate(first_rows()) if not 10 <= i < 20]  # ten people left the segment
    rows[5] = ("p005@contoso.com", "Renamed", "Last5")  # changed at the source
    rows += [(f"q{i:03d}@contoso.com", f"New{i}", "Person") for i in range(40)]
    rows += [("not-an-email", "A", "B"), ("", "Empty", "Email"), ("P001@Contoso.com", "Dup", "Licate"), (FAKE, "Tess", "Tee")]
    return rows


def audience(driver: ExportDriver) -> list[dict]:
    return sorted(driver.members(), key=lambda m: m["email_address"])


def test_a_preview_sends_nothing_and_the_real_run_after_it_has_its_numbers(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.write_snapshot(SEGMENT, TAKEN, first_rows())
    destination = driver.create_destination(segments=[SEGMENT])
    assert driver.export(destination).status == "succeeded"
    # by hand in Mailchimp: a name changed, one cleaned, one archived, one unsubscribed whose name changed too
    driver.put_member("p001@contoso.com", "subscribed", merge_fields={"FNAME": "Handmade"})
    driver.put_member("p002@contoso.com", "cleaned")
    driver.put_member("p003@contoso.com", "subscribed", archived=True)
    driver.put_member("p004@contoso.com", "unsubscribed", merge_fields={"FNAME": "Changed"})
    driver.write_snapshot(SEGMENT, minutes_after(TAKEN, 60), second_rows())
    before, exported, stats = audience(driver), driver.raw.destinations.exported(destination), driver.mailchimp.stats()

    preview = driver.run(driver_start_preview(driver, destination))
    assert preview.status == "previewed", preview.message
    assert audience(driver) == before  # no member written, no tag added or taken off
    assert driver.mailchimp.stats()["members_written"] == stats["members_written"]
    assert driver.raw.destinations.exported(destination) == exported  # the next trigger still runs
    assert driver.raw.destinations.active_run(destination) is None
    record = json.dumps(preview.public())
    assert "@" not in record  # members by subscriber hash only
    sample = preview.details["preview"]["sample"]
    assert 0 < len(sample) <= 50 and all(len(change["memberHash"]) == 32 for change in sample)
    changes = preview.details["preview"]["segments"][SEGMENT]
    assert changes["untag"] == 10 and changes["mergeFields"] == {"FNAME": 3}  # p001 and p004 by hand, p005 at source
    report = [json.loads(line) for blob in driver.raw.error_lines(preview.id) for line in blob.splitlines()]
    by_email = {line["email"]: line for line in report if line["source"] == "preview"}
    assert by_email["p002@contoso.com"]["action"] == "refused" and "cleaned" in by_email["p002@contoso.com"]["reason"]
    assert by_email["p003@contoso.com"]["action"] == "refused" and "archived" in by_email["p003@contoso.com"]["reason"]
    assert by_email["p005@contoso.com"]["reason"] == "would be updated: FNAME"
    assert by_email["p010@contoso.com"]["action"] == "untag" and by_email["p010@contoso.com"]["segment"] == SEGMENT
    assert by_email["q000@contoso.com"]["action"] == "created"
    assert {line["source"] for line in report} == {"validation", "preview"}

    real = driver.export(destination)
    predicted, actual = preview.counts, real.counts
    # the fake address: predicted created (and tagged), refused by Mailchimp; every other number as foretold
    fake = {"created": 1, "tagged": 1, "refused": -1}
    assert {k: v - fake.get(k, 0) for k, v in predicted.items()} == actual, (predicted, actual)
    assert actual["untagged"] == 10 and actual["updated"] == 3 and actual["refused"] == 3
    assert actual["read"] == predicted["read"] == len(second_rows())


def test_a_preview_of_a_destination_with_a_run_going_is_not_refused_and_holds_nothing(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("Beside", TAKEN, first_rows())
    destination = driver.create_destination(segments=["Beside"])
    running = driver.start(destination)
    preview_id = driver_start_preview(driver, destination, deliver=False)
    assert driver.raw.destinations.active_run(destination) == running
    driver.deliver_all()
    assert driver.run(preview_id).status == "previewed"
    assert driver.run(running).status == "succeeded"
    assert driver.run(preview_id).counts["created"] == driver.run(running).counts["created"] == 100
    assert len(audience(driver)) == 100


def driver_start_preview(driver: ExportDriver, destination: str, deliver: bool = True) -> str:
    run_id = driver.service.start(destination, "http", dry_run=True).id
    if deliver:
        driver.deliver_all()
    return run_id


def test_the_preview_leaves_no_trace_in_mailchimp_tags(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.reset_queues()
    driver.write_snapshot("Untagged", TAKEN, first_rows()[:5])
    destination = driver.create_destination(segments=["Untagged"])
    preview = driver.run(driver_start_preview(driver, destination))
    assert preview.status == "previewed" and preview.counts["created"] == 5 and preview.counts["tagged"] == 5
    tags = driver.api("GET", f"/lists/{DEMO_AUDIENCE}/segments", params={"type": "static"}).json()["segments"]
    assert tags == []  # a real run would create the segment's tag; the preview only counts it
    assert driver.raw.destinations.owned_tags(destination, DEMO_AUDIENCE) == set()
