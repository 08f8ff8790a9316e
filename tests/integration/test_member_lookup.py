"""Reading only the contacts a small run needs (shared/member_lookup.py), on Azurite and the real local Mailchimp.

With no audience mirror to refresh, a run whose rows are few against the audience looks up each row's contact
(GET /lists/{id}/members/{hash}) and the members of the tags it keeps in step, instead of listing the whole audience:
counted here by the local Mailchimp itself (/__admin/stats). What it plans is what a full read plans (previews
compared, and a Hypothesis property comparing real runs of both reads on two identical audiences: counts and the
audiences after, with chunks of 2 so that new members are streamed while the rows are read, as a run of one segment
may once it knows the contacts), an unsubscribed or archived contact in the segment is not written again, a member
who left the segment is untagged, a large segment still reads in full, and the mirror is left as it was.

The reads are chosen by replacing member_lookup.budget (the most calls a lookup may take): -1 makes every run read in
full, a huge one makes every run that can look up do so, in audiences of any size.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import member_lookup
from shared.audience_mirror import MANIFEST, ROW_MEMO, destination_prefix
from shared.emails import subscriber_hash
from shared.runs import Run
from tests.e2e.conftest import DEMO_AUDIENCE, DEMO_KEY
from tests.integration.export_driver import TAKEN, ExportDriver, minutes_after

MEMBER_ROUTE = "GET /lists/{list_id}/members/{subscriber_hash}"
TAG_MEMBERS_ROUTE = "GET /lists/{list_id}/segments/{segment_id}/members"
LISTING_ROUTE = "GET /lists/{list_id}/members"
CONTACTS = 70_000  # budget: 70 pages + 3 - 10 = 63 calls, enough for 50 rows, 6 leavers and the tag's listing
ALWAYS_FULL, ALWAYS_LOOK_UP = -1, 10**9  # the most calls a lookup may take
NEWCOMERS = [f"new{i}@contoso.com" for i in range(3)]


@contextlib.contextmanager
def reads(most_calls: int) -> Iterator[None]:
    """Runs within choose their read through the budget (ALWAYS_FULL, ALWAYS_LOOK_UP), with a mirror kept or not."""
    saved = member_lookup.budget
    member_lookup.budget = lambda subscribed, mirror_kept=True: most_calls
    try:
        yield
    finally:
        member_lookup.budget = saved


@contextlib.contextmanager
def without_mirror(driver: ExportDriver) -> Iterator[None]:
    """Runs within read without a mirror (and write none)."""
    saved = driver.service
    driver.service = dataclasses.replace(saved, mirror=None)
    try:
        yield
    finally:
        driver.service = saved


@pytest.fixture(scope="module")
def driver(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server)


@pytest.fixture(scope="module")
def streaming(storage, mailchimp_server) -> ExportDriver:
    """Chunks of 2 members: a run of one segment streams each 2 new members it is certain of while it reads."""
    return ExportDriver(storage, mailchimp_server, EXPORT_CHUNK_SIZE="2")


def contact(i: int) -> str:
    return f"c{i:05d}@contoso.com"


def rows(people: range) -> list[tuple[str, str, str]]:
    return [(contact(i), f"First{i}", f"Last{i}") for i in people]


def fill(driver: ExportDriver, contacts: int) -> None:
    """`contacts` subscribed contacts with FNAME/LNAME as rows() gives them, 500 a batch-subscribe call."""
    for start in range(0, contacts, 500):
        members = [{"email_address": email, "status": "subscribed", "merge_fields": {"FNAME": first, "LNAME": last}}
                   for email, first, last in rows(range(start, min(start + 500, contacts)))]
        driver.api("POST", f"/lists/{DEMO_AUDIENCE}", json={"members": members, "update_existing": False})


def by_hand(driver: ExportDriver, method: str, email: str, path: str = "", audience: str = DEMO_AUDIENCE,
            **body: Any) -> None:
    driver.api(method, f"/lists/{audience}/members/{subscriber_hash(email)}{path}", **body)


def plan_and_send(driver: ExportDriver, destination: str, dry_run: bool = False) -> tuple[Run, dict[str, Any], float]:
    """A run, what the local Mailchimp counted while it was planned (the audience's read is part of planning) and how
    long planning took."""
    run_id = driver.service.start(destination, "http", dry_run=dry_run).id
    driver.mailchimp.admin("POST", "stats/reset")
    started = time.perf_counter()
    assert driver.deliver_one(driver.plan_queue), driver.failures[-1:]
    seconds = time.perf_counter() - started
    stats = driver.mailchimp.stats()
    driver.deliver_all()
    return driver.run(run_id), stats, seconds


def member(driver: ExportDriver, email: str) -> dict[str, Any]:
    return driver.api("GET", f"/lists/{DEMO_AUDIENCE}/members/{subscriber_hash(email)}").json()


def mirror_blobs(driver: ExportDriver, destination: str) -> dict[str, bytes]:
    """The destination's audience mirror (its row memo, which a run writes however it read the audience, left out)."""
    return {name: data for name, data in driver.work_blobs(destination_prefix(destination)).items()
            if not name.endswith(ROW_MEMO)}


def figures(label: str, stats: dict[str, Any], seconds: float) -> str:
    routes = stats["by_route"]
    return (f"{label}: {stats['requests_total']} calls ({routes.get(MEMBER_ROUTE, 0)} member lookups, "
            f"{routes.get(TAG_MEMBERS_ROUTE, 0)} tag listings, {routes.get(LISTING_ROUTE, 0)} member listings), "
            f"{stats['members_read']} contacts returned, planned in {seconds:.2f} s")


SECOND = rows(range(47)) + [(email, "New", "Person") for email in NEWCOMERS]  # the large fixture's second snapshot


@dataclasses.dataclass
class Large:
    destination: str
    segment: str
    tag: str


@pytest.fixture(scope="module")
def large(driver: ExportDriver) -> Large:
    """70,000 contacts; a destination that exported 53 of them (looked up: no mirror), then by hand c00001
    unsubscribed, c00002 archived and c00003 renamed; the segment's next snapshot: c00000-c00046 and 3 new people
    (50 rows), so c00047-c00052 left it."""
    driver.reset_mailchimp()
    driver.reset_queues()
    fill(driver, CONTACTS)
    segment = f"Small{uuid.uuid4().hex[:6]}"
    driver.write_snapshot(segment, TAKEN, rows(range(53)))
    destination = driver.create_destination(segments=[segment], tagPrefix="Lookup: ")
    first, stats, _ = plan_and_send(driver, destination)
    assert first.status == "succeeded", first.message
    assert (first.counts["unchanged"], first.counts["tagged"]) == (53, 53)  # as they were, but for the new tag
    assert stats["members_read"] < 100 and stats["by_route"][MEMBER_ROUTE] == 53
    by_hand(driver, "PATCH", contact(1), json={"status": "unsubscribed"})
    by_hand(driver, "DELETE", contact(2))
    by_hand(driver, "PATCH", contact(3), json={"merge_fields": {"FNAME": "ByHand"}})
    driver.write_snapshot(segment, minutes_after(TAKEN, 5), SECOND)
    return Large(destination, segment, first.segments[0].tag)


def test_a_small_segment_into_a_large_audience_looks_up_its_contacts_and_plans_as_a_full_read(
        driver: ExportDriver, large: Large) -> None:
    looked_up, lookup_stats, lookup_seconds = plan_and_send(driver, large.destination, dry_run=True)
    with reads(ALWAYS_FULL), without_mirror(driver):
        in_full, full_stats, full_seconds = plan_and_send(driver, large.destination, dry_run=True)
    print("\n" + figures("looked up", lookup_stats, lookup_seconds) + "\n" + figures("full read", full_stats, full_seconds))

    assert looked_up.counts == in_full.counts and looked_up.details["preview"] == in_full.details["preview"]
    counts = looked_up.counts
    assert (counts["created"], counts["updated"], counts["refused"], counts["untagged"]) == (3, 1, 1, 6)
    assert counts["unchanged"] == 45  # c00001 (unsubscribed) among them: nothing to write
    # 47 rows found and 3 not (new), the 6 members who left the segment, and the tag's listing: no audience listing
    assert lookup_stats["by_route"][MEMBER_ROUTE] == 50 + 6
    assert lookup_stats["by_route"][TAG_MEMBERS_ROUTE] == 1
    assert LISTING_ROUTE not in lookup_stats["by_route"] and lookup_stats["members_read"] < 100
    assert full_stats["by_route"][LISTING_ROUTE] >= CONTACTS // 1000 and full_stats["members_read"] >= CONTACTS


def test_the_run_after_the_lookup_leaves_unsubscribed_and_archived_contacts_as_they_are_and_untags_leavers(
        driver: ExportDriver, large: Large) -> None:
    run, stats, _ = plan_and_send(driver, large.destination)
    assert run.status == "completed_with_errors" and run.counts["refused"] == 1, run.message  # the archived one
    assert (run.counts["created"], run.counts["updated"], run.counts["untagged"]) == (3, 1, 6)
    assert stats["by_route"][MEMBER_ROUTE] == 56 and LISTING_ROUTE not in stats["by_route"]
    now = {email: member(driver, email) for email in [contact(i) for i in range(60)] + NEWCOMERS}
    tags = {email: {t["name"] for t in m["tags"]} for email, m in now.items()}
    assert now[contact(1)]["status"] == "unsubscribed" and large.tag in tags[contact(1)]  # tagged, not subscribed
    assert now[contact(2)]["status"] == "archived"  # refused, left archived
    assert now[contact(3)]["merge_fields"]["FNAME"] == "First3"  # the segment's value again
    assert all(large.tag not in tags[contact(i)] for i in range(47, 53))  # left the segment: untagged
    assert all(now[contact(i)]["status"] == "subscribed" for i in range(47, 53))  # and nothing else
    assert all(now[email]["status"] == "subscribed" and large.tag in tags[email] for email in NEWCOMERS)
    assert mirror_blobs(driver, large.destination) == {}  # no mirror made of what was looked up


def test_a_large_segment_still_reads_in_full_and_writes_the_mirror(driver: ExportDriver, large: Large) -> None:
    segment = f"Large{uuid.uuid4().hex[:6]}"
    driver.write_snapshot(segment, TAKEN, rows(range(100, 200)))
    destination = driver.create_destination(segments=[segment], tagPrefix="Large: ")
    run, stats, _ = plan_and_send(driver, destination)  # 100 lookups: more than the budget of 63 calls
    assert run.status == "succeeded" and run.counts["tagged"] == 100, run.message
    assert stats["members_read"] >= CONTACTS and MEMBER_ROUTE not in stats["by_route"]
    assert mirror_blobs(driver, destination)


def test_a_mirror_too_old_to_refresh_is_left_as_it_was_by_a_lookup(driver: ExportDriver, large: Large) -> None:
    driver.write_snapshot(large.segment, minutes_after(TAKEN, 10), SECOND)
    with reads(ALWAYS_FULL):
        plan_and_send(driver, large.destination)  # writes the destination's mirror
    written = mirror_blobs(driver, large.destination)
    name = f"{destination_prefix(large.destination)}{DEMO_AUDIENCE}/{MANIFEST}"
    aged = json.loads(written[name])
    too_old = timedelta(hours=driver.settings.audience_mirror_max_age_hours + 1)  # the default: the app's own
    aged["fullReadAt"] = (datetime.fromisoformat(aged["fullReadAt"]) - too_old).isoformat()
    written[name] = json.dumps(aged).encode()
    driver.raw.work.write_bytes(name, written[name])

    driver.write_snapshot(large.segment, minutes_after(TAKEN, 15), SECOND)
    run, stats, _ = plan_and_send(driver, large.destination)
    assert run.counts["unchanged"] == 49 and run.counts["refused"] == 1, run.counts  # the archived contact
    assert stats["by_route"][MEMBER_ROUTE] == 50 and LISTING_ROUTE not in stats["by_route"]
    assert mirror_blobs(driver, large.destination) == written  # byte for byte


# --- the property: a lookup plans what a full read plans -------------------------------------------------------

POOL = [f"p{i:02d}@contoso.com" for i in range(10)]
STATUSES = ("subscribed", "unsubscribed", "pending", "transactional", "cleaned")
CHANGES = ("unsubscribe", "archive", "untag", "rename", "tag by hand")
person = st.tuples(st.sampled_from(STATUSES), st.booleans(), st.booleans())  # status, archived, tagged "Other"
segment_of = st.sets(st.integers(0, len(POOL) + 2), max_size=len(POOL) + 3)  # indices past the pool: new people


def seed(driver: ExportDriver, audience: str, people: list[tuple[str, bool, bool]]) -> None:
    for email, (status, archived, other) in zip(POOL, people):
        driver.put_member(email, status, archived=archived, merge_fields={"FNAME": "Seeded"},
                          tags=["Other"] if other else [], audience_id=audience)


def snapshot_rows(chosen: set[int]) -> list[tuple[str, str, str]]:
    emails = [POOL[i] if i < len(POOL) else f"n{i}@contoso.com" for i in sorted(chosen)]
    return [(email, f"F{n}", "L") for n, email in enumerate(emails)] + [("not an address", "X", "Y")]


def change(driver: ExportDriver, audience: str, tag: str, operation: str, email: str) -> None:
    """A change by hand; one Mailchimp refuses (archiving a pending contact...) is simply not made."""
    member = f"{driver.mailchimp.api_root}/lists/{audience}/members/{subscriber_hash(email)}"
    body = {"unsubscribe": ("PATCH", "", {"status": "unsubscribed"}), "archive": ("DELETE", "", None),
            "untag": ("POST", "/tags", {"tags": [{"name": tag, "status": "inactive"}]}),
            "rename": ("PATCH", "", {"merge_fields": {"FNAME": "ByHand"}}),
            "tag by hand": ("POST", "/tags", {"tags": [{"name": tag, "status": "active"}]})}[operation]
    requests.request(body[0], member + body[1], json=body[2], auth=("tester", DEMO_KEY), timeout=10)


def state(driver: ExportDriver, audience: str) -> dict[str, tuple]:
    return {m["email_address"]: (m["status"], m["merge_fields"].get("FNAME"), sorted(t["name"] for t in m["tags"]))
            for m in driver.members(audience)}


def outcome(run: Run) -> tuple:
    return run.status, run.counts, [part.counts for part in run.segments]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(people=st.lists(person, min_size=len(POOL), max_size=len(POOL)), first=segment_of, second=segment_of,
       changes=st.lists(st.tuples(st.sampled_from(CHANGES), st.sampled_from(POOL)), max_size=6))
def test_for_any_audience_and_segments_a_lookup_exports_as_a_full_read_does(streaming: ExportDriver, people, first,
                                                                             second, changes) -> None:
    driver = streaming
    driver.reset_mailchimp()
    driver.reset_queues()
    other = driver.mailchimp.admin("POST", "audiences", json={"api_key": DEMO_KEY, "name": "Twin"}).json()["id"]
    segment = f"Twin{uuid.uuid4().hex[:6]}"
    looking = driver.create_destination(segments=[segment], tagPrefix="T: ")
    reading = driver.create_destination(segments=[segment], tagPrefix="T: ", audienceId=other)
    for audience in (DEMO_AUDIENCE, other):
        seed(driver, audience, people)
    for minutes, chosen in ((0, first), (5, second)):
        driver.write_snapshot(segment, minutes_after(TAKEN, minutes), snapshot_rows(chosen))
        with reads(ALWAYS_LOOK_UP):
            looked_up, stats, _ = plan_and_send(driver, looking)
        with reads(ALWAYS_FULL), without_mirror(driver):
            in_full, _, _ = plan_and_send(driver, reading)
        assert LISTING_ROUTE not in stats["by_route"]  # looked up
        assert outcome(looked_up) == outcome(in_full)
        assert state(driver, DEMO_AUDIENCE) == state(driver, other)
        if minutes == 0:  # by hand between the runs, the same in both audiences
            for (operation, email), audience in itertools.product(changes, (DEMO_AUDIENCE, other)):
                change(driver, audience, looked_up.segments[0].tag, operation, email)
