"""Status races and costs of the status-safe upsert, against a fake audience with a clock and "changed since" filters.

The fake is the one faked boundary; it keeps Mailchimp's rules that matter here: every write moves `last_changed`,
a write carries the status sent, `unsubscribed_since` filters by the time of the unsubscribe.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from shared.mailchimp.upsert import BatchAnswer, upsert
from shared.members import ExistingMember, Member, Outcome, RowRef

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


class ClockedAudience:
    def __init__(self) -> None:
        self.members: dict[str, ExistingMember] = {}
        self.changed: dict[str, datetime] = {}
        self.unsubscribed_at: dict[str, datetime] = {}
        self.now = T0
        self.listed = 0
        self.single_reads = 0

    def tick(self, seconds: int = 1) -> None:
        self.now += timedelta(seconds=seconds)

    def put(self, email: str, status: str, fields: dict | None = None) -> None:
        self.tick()
        before = self.members.get(email)
        if status == "unsubscribed" and (before is None or before.status != "unsubscribed"):
            self.unsubscribed_at[email] = self.now
        self.members[email] = ExistingMember(email, status, fields or {})
        self.changed[email] = self.now

    def batch_subscribe(self, list_id, members, *, update_existing):
        answer = BatchAnswer()
        for doc in members:
            email = doc["email_address"]
            if email in self.members and not update_existing:
                answer.errors[email] = {"email_address": email, "error_code": "ERROR_CONTACT_EXISTS", "error": "exists"}
                continue
            (answer.updated if email in self.members else answer.created).add(email)
            self.put(email, doc["status"], doc.get("merge_fields", {}))
        return answer

    def get_member(self, list_id, email):
        self.single_reads += 1
        return self.members.get(email)

    def iter_members(self, list_id, *, fields, status=None, since_last_changed=None, unsubscribed_since=None):
        found = [m for e, m in self.members.items()
                 if (status is None or m.status == status)
                 and (since_last_changed is None or self.changed[e] >= since_last_changed)
                 and (unsubscribed_since is None or self.unsubscribed_at.get(e, T0) >= unsubscribed_since)]
        self.listed += len(found)
        return iter(found)


def member(email: str, existing: ExistingMember | None, **fields) -> Member:
    return Member(email, dict(fields), ["Vip"], RowRef("S", "p", 1), existing)


def test_a_member_who_resubscribes_during_the_run_is_not_unsubscribed_again():
    audience = ClockedAudience()
    audience.put("back@x.com", "unsubscribed", {"FNAME": "Old"})
    audience.put("opted@x.com", "transactional", {"FNAME": "Old"})
    read = dict(audience.members)
    as_of = audience.now + timedelta(seconds=1)
    audience.tick(10)
    audience.put("back@x.com", "subscribed", {"FNAME": "Old"})  # re-subscribes through a form during the run
    audience.put("opted@x.com", "subscribed", {"FNAME": "Old"})
    results = upsert(audience, "L", [member(e, read[e], FNAME="New") for e in ("back@x.com", "opted@x.com")],
                     "subscribed", as_of)
    assert [r.outcome for r in results] == [Outcome.UPDATED, Outcome.UPDATED]
    assert {e: audience.members[e].status for e in ("back@x.com", "opted@x.com")} == {
        "back@x.com": "subscribed", "opted@x.com": "subscribed"}


def test_status_checks_of_subscribed_members_stay_short_however_much_the_run_writes():
    # 20 chunks of 500 subscribed members, each updated: the listings must not grow with the run's own writes.
    audience = ClockedAudience()
    for i in range(10_000):
        audience.put(f"u{i}@x.com", "subscribed", {"FNAME": "Old"})
    audience.put("leaver@x.com", "subscribed", {"FNAME": "Old"})
    read = dict(audience.members)
    as_of = audience.now + timedelta(seconds=1)
    audience.tick(10)
    audience.put("leaver@x.com", "unsubscribed", {"FNAME": "Old"})
    for chunk in range(20):
        emails = [f"u{i}@x.com" for i in range(chunk * 500, (chunk + 1) * 500)] + (["leaver@x.com"] if chunk == 19 else [])
        upsert(audience, "L", [member(e, read[e], FNAME="New") for e in emails], "subscribed", as_of)
    assert audience.listed <= 20 * 3  # the one leaver, listed at most once per listing, nothing more
    assert audience.members["leaver@x.com"].status == "unsubscribed"


def test_a_redelivered_chunk_whose_creates_were_applied_counts_them_created_from_one_listing():
    audience = ClockedAudience()
    as_of = audience.now
    members = [member(f"n{i}@x.com", None, FNAME="N") for i in range(500)]
    upsert(audience, "L", members, "subscribed", as_of)  # applied; the worker dies before its answer is saved
    audience.tick(30)  # the queue delivers the chunk again later
    results = upsert(audience, "L", members, "subscribed", as_of)
    assert {r.outcome for r in results} == {Outcome.CREATED}
    assert audience.single_reads == 0
