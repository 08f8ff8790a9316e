"""plan_export's `erased` hook: rows of people who had their address erased are never planned, and each is reported."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.emails import subscriber_hash
from shared.planning import Mapping, RowProblem, SegmentInput, plan_export
from shared.segment_rows import SourceRow


def rows(partition: str, *emails: str) -> list[SourceRow]:
    return [SourceRow(partition, n, {"Email": email}, None) for n, email in enumerate(emails, start=1)]


def plan(inputs: list[SegmentInput], erased: dict[str, str] | None):
    problems: list[RowProblem] = []
    planned = plan_export(inputs, Mapping("Email"), on_problem=problems.append, erased=erased)
    members = [m for chunk in planned for m in chunk]
    return members, planned.counts, problems


def test_an_erased_address_is_left_out_counted_and_reported_with_the_date_in_every_spelling() -> None:
    erased = {subscriber_hash("ann@contoso.com"): "2026-11-28T17:00:00+00:00"}
    inputs = [SegmentInput("VIP", "vip", rows("v.csv", " Ann@Contoso.com ", "bo@contoso.com")),
              SegmentInput("News", "news", rows("n.csv", "ANN@contoso.com", "not an address"))]

    members, counts, problems = plan(inputs, erased)

    assert [m.email for m in members] == ["bo@contoso.com"]
    assert (counts["VIP"].erased, counts["VIP"].members, counts["News"].erased, counts["News"].invalid) == (1, 1, 1, 1)
    gone = [p for p in problems if p.kind == "erased"]
    assert [(p.segment, p.row, p.email) for p in gone] == [("VIP", 1, " Ann@Contoso.com "), ("News", 1, "ANN@contoso.com")]
    assert all(p.reason == "erased on 2026-11-28 at the person's request" for p in gone)
    assert all("@" not in p.reason for p in problems)


def test_without_erased_hashes_nothing_changes() -> None:
    inputs = [SegmentInput("VIP", "vip", rows("v.csv", "ann@contoso.com"))]
    for erased in (None, {}):
        members, counts, problems = plan(inputs, erased)
        assert [m.email for m in members] == ["ann@contoso.com"] and counts["VIP"].erased == 0 and not problems


PEOPLE = [f"p{i}@fabrikam.com" for i in range(8)]


@settings(max_examples=60, deadline=None)
@given(segments=st.lists(st.lists(st.sampled_from(PEOPLE + ["broken@", " P1@Fabrikam.com"]), max_size=12),
                         min_size=1, max_size=3),
       erased=st.sets(st.sampled_from(PEOPLE)))
def test_every_row_is_accounted_for_and_no_erased_person_is_planned(segments: list[list[str]], erased: set[str]) -> None:
    inputs = [SegmentInput(f"S{i}", f"s{i}", rows(f"{i}.csv", *emails)) for i, emails in enumerate(segments)]
    hashes = {subscriber_hash(email): "2026-01-02T03:04:05+00:00" for email in erased}

    members, counts, problems = plan(inputs, hashes)

    assert not {subscriber_hash(m.email) for m in members} & hashes.keys()
    for i, emails in enumerate(segments):
        c = counts[f"S{i}"]
        assert c.read == len(emails) == c.invalid + c.duplicates + c.erased + c.members
        assert c.erased == sum(1 for e in emails if subscriber_hash(e) in hashes)
    assert sum(p.kind == "erased" for p in problems) == sum(c.erased for c in counts.values())
