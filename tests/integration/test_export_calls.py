"""How many Mailchimp calls an export makes, counted by the local Mailchimp itself (/__admin/stats `by_route`).

Members written carry their segment tags in the batch-subscribe call (`members[].tags`; Mailchimp applies them to
new members, and since 2022 to existing ones sent with update_existing: true, REFERENCE.md §4), so a fresh chunk of
500 new members is one call, not one plus one per tag. The static-segment call (POST /lists/{id}/segments/{id},
`members_to_add`) remains for members not written (unchanged) that only miss a tag: one per chunk and tag.
"""
from __future__ import annotations

import pytest

from tests.integration.export_driver import TAKEN, ExportDriver, minutes_after
from tests.e2e.conftest import DEMO_AUDIENCE

BATCH = "POST /lists/{list_id}"
STATIC_SEGMENT = "POST /lists/{list_id}/segments/{segment_id}"
PEOPLE = [(f"fresh{i:04d}@contoso.com", f"First{i}", f"Last{i}") for i in range(1000)]


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server)


def calls(driver: ExportDriver) -> dict[str, int]:
    return driver.mailchimp.stats()["by_route"]


def test_a_fresh_export_tags_in_the_batch_and_members_only_missing_a_tag_get_it_per_chunk(driver: ExportDriver) -> None:
    driver.reset_mailchimp()
    driver.write_snapshot("Fresh", TAKEN, PEOPLE)
    destination = driver.create_destination(segments=["Fresh"])
    driver.mailchimp.admin("POST", "stats/reset")
    run = driver.export(destination)
    assert run.status == "succeeded", run.counts
    assert (run.counts["created"], run.counts["tagged"], run.counts["tagFailed"]) == (1000, 1000, 0)
    assert calls(driver).get(BATCH) == 2  # 1,000 new members: two calls of 500, their tag inside
    assert calls(driver).get(STATIC_SEGMENT, 0) == 0  # no static-segment member call at all
    tag = run.segments[0].tag
    members = driver.members()
    assert len(members) == 1000 and all([t["name"] for t in m["tags"]] == [tag] for m in members)

    # 700 of them lose the tag by hand; nothing else changes. The same snapshot again: nobody is written (members
    # as wanted are not even sent to a chunk), the 700 fill two chunks and get the tag back through one
    # static-segment call per chunk.
    tag_id = next(s["id"] for s in driver.api("GET", f"/lists/{DEMO_AUDIENCE}/segments",
                                              params={"count": 1000}).json()["segments"] if s["name"] == tag)
    for part in (PEOPLE[:500], PEOPLE[500:700]):
        driver.api("POST", f"/lists/{DEMO_AUDIENCE}/segments/{tag_id}",
                   json={"members_to_remove": [email for email, *_ in part]})
    driver.write_snapshot("Fresh", minutes_after(TAKEN, 5), PEOPLE)
    driver.mailchimp.admin("POST", "stats/reset")
    again = driver.export(destination)
    assert again.status == "succeeded", again.counts
    assert (again.counts["unchanged"], again.counts["tagged"], again.counts["tagFailed"]) == (1000, 1000, 0)
    assert calls(driver).get(BATCH, 0) == 0
    assert again.total_chunks == 2
    assert calls(driver).get(STATIC_SEGMENT) == 2  # one per chunk and tag, only for the 700 missing it
    assert driver.mailchimp.stats()["members_written"] == 700
    assert all([t["name"] for t in m["tags"]] == [tag] for m in driver.members())
