"""Upsert edge cases the real local Mailchimp cannot be made to produce on demand.

The audience is a fake (the one faked boundary); the status-safety cases run against the real local
Mailchimp in tests/integration/test_mailchimp_client_members.py.
"""
from datetime import datetime, timezone

import pytest

from shared.mailchimp import MailchimpAuthError, MailchimpRequestError, MailchimpUnavailable
from shared.mailchimp.upsert import BatchAnswer, upsert
from shared.members import ExistingMember, Member, Outcome, RowRef

READ_AT = datetime(2024, 5, 1, tzinfo=timezone.utc)


class FakeAudience:
    def __init__(self, fail_call: int | None = None, error: Exception | None = None, forget: str = "") -> None:
        self.members: dict[str, ExistingMember] = {}
        self.calls: list[tuple[bool, list[dict]]] = []
        self.fail_call, self.error, self.forget = fail_call, error, forget
        self.single_reads = 0
        self.listings: list[str | None] = []

    def batch_subscribe(self, list_id, members, *, update_existing):
        self.calls.append((update_existing, list(members)))
        if len(self.calls) == self.fail_call:
            raise self.error
        answer = BatchAnswer()
        for doc in members:
            email = doc["email_address"]
            if email == self.forget:
                continue
            if email in self.members and not update_existing:
                answer.errors[email] = {"email_address": email, "error": f"{email} is already a list member",
                                        "error_code": "ERROR_CONTACT_EXISTS"}
                continue
            (answer.updated if email in self.members else answer.created).add(email)
            self.members[email] = ExistingMember(email, doc["status"], doc.get("merge_fields", {}))
        return answer

    def get_member(self, list_id, email):
        self.single_reads += 1
        return self.members.get(email)

    def iter_members(self, list_id, *, fields, status=None, since_last_changed=None, unsubscribed_since=None):
        self.listings.append(status)
        return iter([m for m in self.members.values() if status is None or m.status == status])


class LostAnswers(FakeAudience):
    """Mailchimp applies the first create call, but its answer is lost; the retry finds everyone there already."""

    single_reads = 0

    def batch_subscribe(self, list_id, members, *, update_existing):
        if not update_existing and not self.calls:
            super().batch_subscribe(list_id, members, update_existing=update_existing)
        return super().batch_subscribe(list_id, members, update_existing=update_existing)


def member(email: str, existing: ExistingMember | None = None, **fields) -> Member:
    return Member(email, fields, ["vip"], RowRef("vip", "p0", 1), existing)


def test_a_refused_batch_fails_only_its_members():
    audience = FakeAudience(fail_call=1, error=MailchimpRequestError("Invalid Resource"))
    members = [member(f"m{i}@example.com") for i in range(700)]
    results = upsert(audience, "L", members, "subscribed", READ_AT)
    assert [r.outcome for r in results[:500]] == [Outcome.FAILED] * 500
    assert "Invalid Resource" in results[0].reason
    assert [r.outcome for r in results[500:]] == [Outcome.CREATED] * 200


def test_mailchimp_unavailable_propagates_so_the_chunk_is_retried_later():
    audience = FakeAudience(fail_call=1, error=MailchimpUnavailable("Mailchimp is busy; gave up"))
    with pytest.raises(MailchimpUnavailable):
        upsert(audience, "L", [member("a@example.com")], "subscribed", READ_AT)


def test_credentials_refused_mid_call_stop_it_and_keep_what_was_written():
    # A 401 after the creates went through: the call stops (no other write could succeed), and the error carries
    # every member's outcome so far, so the created ones are counted created and only the others failed.
    audience = FakeAudience(fail_call=2, error=MailchimpAuthError("renew the API key"))
    audience.members["old@example.com"] = ExistingMember("old@example.com", "subscribed", {"FNAME": "Old"})
    with pytest.raises(MailchimpAuthError) as refused:
        upsert(audience, "L", [member("a@example.com"), member("old@example.com", audience.members["old@example.com"],
                                                               FNAME="New")], "subscribed", READ_AT)
    assert [r.outcome for r in refused.value.results] == [Outcome.CREATED, Outcome.FAILED]
    assert "renew the API key" in refused.value.results[1].reason


def test_member_missing_from_the_answer_is_failed_not_lost():
    audience = FakeAudience(forget="b@example.com")
    results = upsert(audience, "L", [member("a@example.com"), member("b@example.com")], "subscribed", READ_AT)
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.FAILED]
    assert "did not mention" in results[1].reason


def test_duplicates_in_one_call_are_written_once_and_each_row_answered():
    audience = FakeAudience()
    results = upsert(audience, "L", [member("a@example.com"), member(" A@Example.com ")], "subscribed", READ_AT)
    assert [r.outcome for r in results] == [Outcome.CREATED, Outcome.CREATED]
    assert sum(len(docs) for _, docs in audience.calls) == 1


def test_unknown_status_for_new_is_refused_before_any_call():
    audience = FakeAudience()
    with pytest.raises(ValueError, match="status_for_new"):
        upsert(audience, "L", [member("a@example.com")], "cleaned", READ_AT)
    assert audience.calls == []


def test_no_refresh_and_no_write_when_nothing_changed():
    audience = FakeAudience()
    audience.members["a@example.com"] = ExistingMember("a@example.com", "subscribed", {"FNAME": "Ann"})
    calls = []
    audience.iter_members = lambda *a, **k: calls.append(k) or iter(())
    results = upsert(audience, "L", [member("a@example.com", audience.members["a@example.com"], FNAME="Ann")],
                     "subscribed", READ_AT)
    assert results[0].outcome is Outcome.UNCHANGED
    assert audience.calls == [] and calls == []


def test_a_create_applied_but_unanswered_counts_created_without_a_read_per_member():
    audience = LostAnswers()
    members = [member(f"m{i}@example.com", FNAME=f"N{i}") for i in range(500)]
    results = upsert(audience, "L", members, "subscribed", READ_AT)
    assert [r.outcome for r in results] == [Outcome.CREATED] * 500
    assert audience.single_reads == 0 and audience.listings == [None]  # one listing, not 500 reads
    assert [update for update, _ in audience.calls] == [False, False]  # nothing written a third time


def test_a_member_someone_else_added_meanwhile_is_updated_with_its_own_status():
    audience = FakeAudience()
    audience.members["a@example.com"] = ExistingMember("a@example.com", "unsubscribed", {"FNAME": "Old"})
    results = upsert(audience, "L", [member("a@example.com", FNAME="New")], "subscribed", READ_AT)
    assert results[0].outcome is Outcome.UPDATED
    assert audience.members["a@example.com"].status == "unsubscribed"
    assert audience.single_reads == 2  # read back after "already a member", then its status right before the write


def test_archived_members_are_never_written():
    audience = FakeAudience()
    archived = ExistingMember("a@example.com", "archived", {})
    results = upsert(audience, "L", [member("a@example.com", archived, FNAME="New")], "subscribed", READ_AT)
    assert results[0].outcome is Outcome.REFUSED and "unarchive" in results[0].reason
    assert audience.calls == []


class TagsShown(FakeAudience):
    """Applies members[].tags (added, ignoring case) and shows them in the answer, except tags named in `drop`: a
    tag Mailchimp would leave off silently (its batch answer documents no per-tag error)."""

    def __init__(self, drop: set[str] = frozenset(), **kwargs) -> None:
        super().__init__(**kwargs)
        self.drop = drop
        self.tags: dict[str, set[str]] = {}

    def batch_subscribe(self, list_id, members, *, update_existing):
        answer = super().batch_subscribe(list_id, members, update_existing=update_existing)
        for doc in members:
            email = doc["email_address"]
            if email in answer.created | answer.updated:
                self.tags.setdefault(email, set()).update(t.casefold() for t in doc.get("tags", []) if t not in self.drop)
                answer.tags[email] = set(self.tags[email])
        return answer

    def get_member(self, list_id, email):
        found = super().get_member(list_id, email)
        return found and ExistingMember(found.email, found.status, found.merge_fields, tuple(self.tags.get(email, ())))

    def iter_members(self, list_id, **kwargs):
        return (self.get_member(list_id, m.email) for m in super().iter_members(list_id, **kwargs))


def test_tags_travel_in_the_batch_and_count_only_when_the_answer_shows_every_one():
    audience = TagsShown(drop={"Lost"})
    old = ExistingMember("old@example.com", "unsubscribed", {"FNAME": "Old"})
    audience.members["old@example.com"] = old
    same = ExistingMember("same@example.com", "subscribed", {"FNAME": "S"}, ("Hand",))
    audience.members["same@example.com"] = same
    members = [member("new@example.com", FNAME="N"), member("lost@example.com", FNAME="L"),
               member("old@example.com", old, FNAME="Changed"), member("same@example.com", same, FNAME="S")]
    tags = {"new@example.com": ["VIP"], "lost@example.com": ["VIP", "Lost"], "old@example.com": ["vip"],
            "same@example.com": ["VIP"]}
    results = upsert(audience, "L", members, "subscribed", READ_AT, tags_of=lambda m: tags[m.email])
    assert [(r.outcome, r.tagged) for r in results] == [
        (Outcome.CREATED, True), (Outcome.CREATED, False),  # "Lost" not shown on it: the caller tags it
        (Outcome.UPDATED, True), (Outcome.UNCHANGED, False)]  # not written, so not tagged by a write
    new_call, update_call = audience.calls
    assert [d.get("tags") for d in new_call[1]] == [["VIP"], ["VIP", "Lost"]] and new_call[0] is False
    assert update_call == (True, [{"email_address": "old@example.com", "status": "unsubscribed",
                                   "merge_fields": {"FNAME": "Changed"}, "tags": ["vip"]}])  # status kept
    assert "sync_tags" not in str(audience.calls)


def test_a_create_applied_with_its_tags_but_answer_lost_counts_created_and_tagged_once():
    class Lost(TagsShown):
        def batch_subscribe(self, list_id, members, *, update_existing):
            if not update_existing and not self.calls:
                super().batch_subscribe(list_id, members, update_existing=update_existing)
            return super().batch_subscribe(list_id, members, update_existing=update_existing)

    audience = Lost()
    members = [member(f"m{i}@example.com", FNAME="N") for i in range(30)]
    results = upsert(audience, "L", members, "subscribed", READ_AT, tags_of=lambda m: ["VIP"])
    assert {(r.outcome, r.tagged) for r in results} == {(Outcome.CREATED, True)}  # re-read with its tags
    assert len(audience.calls) == 2 and all(audience.tags[m.email] == {"vip"} for m in members)
