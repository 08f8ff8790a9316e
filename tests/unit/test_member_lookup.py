"""The member lookup's budget (shared/member_lookup.py): it looks nothing up once the rows, the tags' members or their
listing calls would pass what a full read costs less what its mirror saves the next run."""
from __future__ import annotations

from collections.abc import Iterator

from shared.member_lookup import Needed, budget, look_up
from shared.members import ExistingMember


class Reader:
    """An audience (email -> status) and its tags (id -> emails), counting what is asked."""

    def __init__(self, audience: dict[str, str], tags: dict[int, list[str]]) -> None:
        self.audience, self.tags = audience, tags
        self.lookups: list[str] = []
        self.listed = 0

    def get_member(self, list_id: str, email: str) -> ExistingMember | None:
        self.lookups.append(email)
        status = self.audience.get(email)
        return None if status is None else ExistingMember(email, status)

    def iter_tag_members(self, list_id: str, tag_id: int) -> Iterator[str]:
        for email in self.tags[tag_id]:
            self.listed += 1
            yield email


def rows_of(emails: set[str]):
    return lambda most: emails if len(emails) <= most else None


def test_the_budget_is_the_full_reads_calls_less_a_refresh() -> None:
    assert budget(0) == budget(1000) == 1 + 3 - 10
    assert budget(70_000) == 63 and budget(1_000_000) == 993


def test_rows_and_leavers_within_the_budget_are_looked_up_once_each() -> None:
    reader = Reader({"a@x.com": "subscribed", "b@x.com": "unsubscribed", "gone@x.com": "subscribed"},
                    {7: ["a@x.com", "gone@x.com"]})
    found = look_up(reader, "L", Needed(rows_of({"a@x.com", "b@x.com", "new@x.com"}), [7], 70_000), "test")
    assert found is not None and {m.email: m.status for m in found} == {
        "a@x.com": "subscribed", "b@x.com": "unsubscribed", "gone@x.com": "subscribed"}
    assert sorted(reader.lookups) == ["a@x.com", "b@x.com", "gone@x.com", "new@x.com"]


def test_too_many_rows_look_nothing_up() -> None:
    reader = Reader({}, {7: []})
    emails = {f"r{i}@x.com" for i in range(63)}
    assert look_up(reader, "L", Needed(rows_of(emails), [7], 70_000), "test") is None  # 63 + a tag listing > 63
    assert reader.lookups == [] and reader.listed == 0
    assert look_up(reader, "L", Needed(rows_of(emails), [], 70_000), "test") is not None


def test_a_tags_members_passing_the_budget_stop_its_listing_and_nothing_is_looked_up() -> None:
    reader = Reader({}, {7: [f"left{i}@x.com" for i in range(5000)]})
    assert look_up(reader, "L", Needed(rows_of({"a@x.com"}), [7], 70_000), "test") is None
    assert reader.lookups == [] and reader.listed == 62  # 1 row, 1 listing call and 62 leavers pass 63


def test_without_a_mirror_kept_a_lookup_need_not_save_the_next_runs_refresh() -> None:
    emails = {f"r{i}@x.com" for i in range(63)}  # 63 lookups: over budget(70,000) = 63 with a listing call ...
    assert look_up(Reader({}, {}), "L", Needed(rows_of(emails), [7], 70_000), "test") is None
    reader = Reader({}, {7: []})  # ... within it when no mirror would have saved the next run ten calls
    assert look_up(reader, "L", Needed(rows_of(emails), [7], 70_000), "test", mirror_kept=False) is not None
    assert budget(70_000, mirror_kept=False) == 73 and len(reader.lookups) == 63


def test_a_row_address_outside_ascii_is_never_looked_up_by_hash() -> None:
    """Whether Mailchimp's subscriber hash lowers letters such as Ü is not documented: a full read finds the contact
    by its listed address whatever the case, a lookup by a hash Mailchimp might not share could miss it."""
    reader = Reader({"a@bücher.de": "unsubscribed"}, {})
    assert look_up(reader, "L", Needed(rows_of({"a@x.com", "a@bücher.de"}), [], 70_000), "test") is None
    assert reader.lookups == []
