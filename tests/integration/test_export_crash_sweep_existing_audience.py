"""The crash sweep of tests/integration/test_export_service_replay.py (its helpers, its rules) for an export into an
audience that holds people: statuses changed by hand (unsubscribed by themselves or by an admin, cleaned, pending,
archived, deleted for good), a tag added by hand, people who left the segment. A module of its own so that
`pytest -n` runs it on another worker than the first-export sweep: each takes minutes.
"""
from __future__ import annotations

import time

import pytest

from tests.integration.export_driver import DEMO_AUDIENCE, TAKEN, ExportDriver, minutes_after
from tests.integration.test_export_service_replay import (SWEEP_TIMEOUT, Rows, audience, chunk_phase_points,
                                                          export_crashing_once, expected_outcome, forgotten_hashes, md5,
                                                          sweep, violations)


@pytest.fixture(scope="module")
def small_chunks(storage, mailchimp_server) -> ExportDriver:
    return ExportDriver(storage, mailchimp_server, EXPORT_CHUNK_SIZE="100")


def changed_segment(driver: ExportDriver, segment: str) -> tuple[list[tuple[str, str, str]], str]:
    """A first export of 240 people, then changes by hand in Mailchimp and a new snapshot; returns its rows and the
    hand-made tag. Run before each crash point, so every point starts from the same audience."""
    people = [(f"regular{i:03d}@fabrikam.com", f"Reg{i}", f"Ular{i}") for i in range(240)]
    driver.write_snapshot(segment, TAKEN, people)
    destination = driver.create_destination(segments=[segment])
    first = driver.export(destination)
    assert first.status == "succeeded" and first.counts["created"] == 240, first.counts
    email = lambda i: people[i][0]  # noqa: E731
    for i in range(0, 5):
        driver.put_member(email(i), "unsubscribed", unsubscribed_by="self")
    for i in range(5, 10):
        driver.put_member(email(i), "unsubscribed", unsubscribed_by="admin")
    for i in range(10, 15):
        driver.put_member(email(i), "cleaned")
    for i in range(15, 20):
        driver.put_member(email(i), "pending")
    for i in range(20, 25):
        driver.put_member(email(i), "subscribed", archived=True)
    for i in range(25, 27):
        driver.mailchimp.admin("POST", "members", json={"list_id": DEMO_AUDIENCE, "email": email(i), "permanently_deleted": True})
    hand = "HandPicked"
    driver.api("POST", f"/lists/{DEMO_AUDIENCE}/segments",
               json={"name": hand, "static_segment": [email(i) for i in (*range(0, 4), *range(30, 60))]})
    driver.put_member("outsider@fabrikam.com", "subscribed", merge_fields={"FNAME": "Out", "LNAME": "Sider"})
    driver.api("POST", f"/lists/{DEMO_AUDIENCE}/members/{md5('outsider@fabrikam.com')}/tags",
               json={"tags": [{"name": segment.lower(), "status": "active"}, {"name": hand, "status": "active"}]})
    driver.put_member("handadded@fabrikam.com", "subscribed", merge_fields={"FNAME": "Hand", "LNAME": "Added"})
    rows = []
    for i in range(0, 30):  # unsubscribed, cleaned, pending, archived, deleted: some with new names
        rows.append((email(i), f"Reg{i}", f"Changed{i}" if i % 5 < 3 else f"Ular{i}"))
    rows += [people[i] for i in range(40, 60)]  # 30..39 leave (they keep the hand-made tag)
    rows += [(email(i), f"Reg{i}", f"Married{i}") for i in range(60, 100)]
    rows += [people[i] for i in range(100, 230)]  # 230..239 leave
    rows += [(f"new{i:03d}@fabrikam.com", f"New{i}", f"Comer{i}") for i in range(60)]
    rows += [("handadded@fabrikam.com", "Hand", "Added"), ("fake@fabrikam.com", "F", "F")]
    rows += [("not-an-email", "A", "B"), ("nodomain@", "C", "D"), ("", "E", "F"), ("x y@fabrikam.com", "G", "H")]
    rows += [(f" REGULAR{i:03d}@Fabrikam.com", "Dup", "Licate") for i in (0, 12, 22, 61, 150)] + [("NEW001@fabrikam.com", "D", "D")]
    driver.write_snapshot(segment, minutes_after(TAKEN, 60), rows)
    return rows, destination


@pytest.mark.timeout(SWEEP_TIMEOUT)
def test_a_crash_anywhere_in_an_export_into_an_existing_audience_keeps_statuses_tags_and_counts(small_chunks):
    driver = small_chunks
    counter = iter(range(1000))

    def one(crash: int | None, when: str = "before") -> list[str]:
        driver.reset_mailchimp()
        segment = f"Regulars{next(counter)}"
        driver.injector.armed = False
        rows, destination = changed_segment(driver, segment)
        before = audience(driver)
        outcome = expected_outcome(Rows.of(rows), before, forgotten_hashes(driver), segment)
        assert outcome.terms == {"read": 292, "invalid": 4, "duplicates": 6, "created": 60, "updated": 50,
                                 "unchanged": 159, "refused": 13, "failed": 0}, outcome.terms
        # 30..39, 230..239 and the outsider tagged by hand in lower case: 21 of the 234 carrying the tag (9%, under
        # UNTAG_GUARD_PERCENT, so no confirmation is needed)
        assert outcome.untagged == 21
        earlier = {r.id for r in driver.raw.runs.list_for_destination(destination)}
        run_id = export_crashing_once(driver, destination, crash, when)
        return violations(driver, destination, run_id, Rows.of(rows), segment, outcome, before, earlier)

    assert one(None) == []
    reference = list(driver.injector.calls)
    assert sum(c.method == "upsert_members" for c in reference) == 2  # 2 chunks of at most 100
    points = chunk_phase_points(reference, 3)
    started = time.monotonic()
    sweep(driver, points, one)
    print(f"\n{len(reference)} calls in the reference export; {len(points)} crash points in {time.monotonic() - started:.1f}s")
