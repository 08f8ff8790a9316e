"""The status listings an update makes right before its write: unsubscribed and cleaned at once, archived after both,
all ended before the write, merged in order.

The audience is a fake whose unsubscribed and cleaned listings block until both have started (a barrier), so listings
made one after the other fail here instead of passing slowly; the archived listing notes whether the others had ended.
"""
from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from datetime import datetime, timezone

import pytest

from shared.mailchimp import MailchimpRequestError, MailchimpUnavailable
from shared.mailchimp.upsert import BatchAnswer, upsert
from shared.members import ExistingMember, Member, Outcome, RowRef

READ_AT = datetime(2024, 5, 1, tzinfo=timezone.utc)
WATCHED = ("unsubscribed", "cleaned", "archived")  # the listings of members read as subscribed
TOGETHER = ("unsubscribed", "cleaned")  # ... made at once; archived after them
RUN: ContextVar[str] = ContextVar("test_run", default="none")


class ListingAudience:
    """Subscribed members; `moved` is what each status listing shows; the unsubscribed and cleaned listings wait
    (barrier) for each other."""

    def __init__(self, emails: list[str], moved: dict[str, list[str]] | None = None,
                 fail: dict[str, Exception] | None = None) -> None:
        self.members = {e: ExistingMember(e, "subscribed", {"FNAME": "Old"}) for e in emails}
        self.moved = moved or {}
        self.fail = fail or {}
        self.together = threading.Barrier(len(TOGETHER), timeout=5)
        self.archived_after: set[str] = set()  # the listings that had ended when the archived one started
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.seen_run: list[str] = []
        self.writes: list[list[dict]] = []

    def iter_members(self, list_id, *, fields, status=None, since_last_changed=None, unsubscribed_since=None):
        with self.lock:
            self.events.append(f"start {status}")
            self.seen_run.append(RUN.get())
            if status == "archived":
                self.archived_after = {e[4:] for e in self.events if e.startswith("end ")}
        if status in TOGETHER:
            self.together.wait()  # raises BrokenBarrierError after 5 s when they run one after the other
        if status == "unsubscribed":
            time.sleep(0.2)  # the first listing ends last: results must still be merged in listing order
        with self.lock:
            self.events.append(f"end {status}")
        if status in self.fail:
            raise self.fail[status]
        return iter([ExistingMember(e, status, {}) for e in self.moved.get(status, [])])

    def get_member(self, list_id, email):
        return self.members.get(email)

    def batch_subscribe(self, list_id, members, *, update_existing):
        with self.lock:
            self.events.append("write")
        self.writes.append(list(members))
        answer = BatchAnswer()
        for doc in members:
            answer.updated.add(doc["email_address"])
        return answer


def update(audience: ListingAudience, emails: list[str]) -> list:
    members = [Member(e, {"FNAME": "New"}, ["Vip"], RowRef("S", "p", 1), audience.members[e]) for e in emails]
    return upsert(audience, "L", members, "subscribed", READ_AT)


def test_two_listings_run_at_once_archived_after_them_and_all_end_before_the_write():
    """Archived last: an admin can archive a contact in any status, so a contact archived while the others were
    listed (after one had seen it unsubscribed) is seen by the last listing, as when all ran one after the other."""
    emails = [f"m{i}@x.com" for i in range(500)]
    audience = ListingAudience(emails)
    results = update(audience, emails)
    assert [r.outcome for r in results] == [Outcome.UPDATED] * 500
    assert sorted(audience.events[:2]) == sorted(f"start {s}" for s in TOGETHER)  # both started before either ended
    assert audience.archived_after == set(TOGETHER)
    assert audience.events[-1] == "write" and audience.events.count("write") == 1
    assert {e for e in audience.events if e.startswith("end")} == {f"end {s}" for s in WATCHED}


def test_moves_found_by_the_listings_keep_every_status_safe():
    emails = ["stays@x.com", "left@x.com", "bounced@x.com", "gone@x.com", "both@x.com"]
    audience = ListingAudience(emails, moved={"unsubscribed": ["left@x.com", "both@x.com"],
                                              "cleaned": ["bounced@x.com"], "archived": ["gone@x.com", "both@x.com"]})
    results = {r.email: r.outcome for r in update(audience, emails)}
    assert results == {"stays@x.com": Outcome.UPDATED, "left@x.com": Outcome.UPDATED,
                       "bounced@x.com": Outcome.REFUSED, "gone@x.com": Outcome.REFUSED,
                       "both@x.com": Outcome.REFUSED}  # listed unsubscribed, then archived: the later listing wins
    sent = {doc["email_address"]: doc["status"] for doc in audience.writes[0]}
    assert sent == {"stays@x.com": "subscribed", "left@x.com": "unsubscribed"}  # nobody unsubscribed is re-subscribed


def test_a_refused_listing_fails_the_members_and_nothing_is_written():
    emails = ["a@x.com", "b@x.com"]
    audience = ListingAudience(emails, fail={"cleaned": MailchimpRequestError("Invalid Resource")})
    results = update(audience, emails)
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED] and "Invalid Resource" in results[0].reason
    assert "write" not in audience.events and audience.events.count("end cleaned") == 1
    assert {e for e in audience.events if e.startswith("end")} == {"end unsubscribed", "end cleaned"}  # the other
    # ended too, before the answer; archived is not listed after a failure


def test_the_first_error_in_listing_order_propagates():
    audience = ListingAudience(["a@x.com"], fail={"archived": MailchimpUnavailable("busy (archived)"),
                                                  "unsubscribed": MailchimpUnavailable("busy (unsubscribed)")})
    with pytest.raises(MailchimpUnavailable, match=r"unsubscribed"):
        update(audience, ["a@x.com"])
    assert audience.writes == []


def test_the_listings_see_the_callers_context():
    # the run's telemetry fields are context variables: each listing's call must still carry them
    audience = ListingAudience(["a@x.com"])
    token = RUN.set("run-1")
    try:
        update(audience, ["a@x.com"])
    finally:
        RUN.reset(token)
    assert audience.seen_run == ["run-1"] * 3
