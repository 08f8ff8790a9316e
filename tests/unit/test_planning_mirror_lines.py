"""Planning against the audience mirror's stored lines (shared.members.contact_line), which it decodes only for the
contacts it needs: the plan must be exactly the plan made against the same contacts decoded."""
from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.exports.planner import _already_done
from shared.members import ExistingMember, contact_line, tag_needles
from shared.planning import Mapping, SegmentInput, plan_export
from shared.segment_rows import SourceRow

# Tag names in several letter cases, with characters JSON escapes or case folding changes: "ß" folds to "ss" (lower()
# keeps it), "Σ" to "σ" (lower() may give "ς"), "É" to a letter JSON leaves unescaped only with ensure_ascii=False.
TAGS = ["VIP", "vip", "Vip", 'say "hi"', 'SAY "HI"', "back\\slash", "Straße", "STRASSE", "tab\there", "İstanbul",
        "ΣΑΣ", "σας", "ÉTÉ", "été", "other"]
EMAILS = [f"{name}@contoso.com" for name in ("ann", "bo", "cy", "dee", "eve", "fay")]
STATUSES = ["subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived"]

contacts = st.lists(st.builds(
    lambda email, upper, status, first, tags: ExistingMember(email.upper() if upper else email, status,
                                                             {"FNAME": first} if first else {}, tuple(tags)),
    st.sampled_from(EMAILS), st.booleans(), st.sampled_from(STATUSES), st.sampled_from(["", "Ann", "Bo"]),
    st.lists(st.sampled_from(TAGS), max_size=3, unique=True)), max_size=8)
segment_rows = st.lists(st.tuples(st.sampled_from(EMAILS), st.sampled_from(["", "Ann", "Cy"])), max_size=6)


def planned(inputs: list[SegmentInput], existing: list, removable: list[str]) -> tuple:
    plan = plan_export(inputs, Mapping("Email", {"FNAME": "First"}), existing=existing, removable_tags=removable,
                       chunk_size=3, on_problem=lambda problem: None, already_done=lambda member: False)
    chunks = [[(m.email, m.merge_fields, m.tags, m.source, m.existing, m.untag) for m in chunk] for chunk in plan]
    departures = {tag: (d.carrying, d.leaving) for tag, d in plan.departures.items()}
    return chunks, plan.counts, departures


@settings(max_examples=300, deadline=None)
@given(contacts, st.lists(st.tuples(st.sampled_from(TAGS), segment_rows), min_size=1, max_size=2,
                          unique_by=lambda segment: segment[0].casefold()),
       st.lists(st.sampled_from(TAGS), max_size=4))
def test_a_plan_against_mirror_lines_is_the_plan_against_the_decoded_contacts(audience, segments, removable):
    def inputs() -> list[SegmentInput]:
        return [SegmentInput(f"S{i}", tag, [SourceRow("p.csv", n, {"Email": email, "First": first}, None)
                                            for n, (email, first) in enumerate(rows, start=1)])
                for i, (tag, rows) in enumerate(segments)]

    lines = [contact_line(c.email, c.status, c.merge_fields, c.tags) for c in audience]

    assert planned(inputs(), lines, removable) == planned(inputs(), list(audience), removable)


@pytest.mark.parametrize(("carried", "kept"), [("Straße", "STRASSE"), ("ΣΑΣ", "σας"), ("ÉTÉ", "été"), ("ﬁx", "FIX")])
def test_a_leaver_only_in_the_mirror_is_found_whatever_the_case_folding_does_to_its_tag(carried, kept) -> None:
    inputs = [SegmentInput("S", kept, [SourceRow("p.csv", 1, {"Email": "stay@contoso.com"}, None)])]
    lines = [contact_line("left@contoso.com", "subscribed", {}, [carried])]

    chunks, _, departures = planned(inputs, lines, [kept])

    assert sorted((m[0], m[5]) for chunk in chunks for m in chunk) == [("left@contoso.com", [kept]), ("stay@contoso.com", [])]
    assert departures == {kept: (1, 1)}


def test_case_folding_commutes_with_the_json_of_a_line_for_every_code_point() -> None:
    """What `line_mentions` ignoring case rests on: a line folded holds each of its tags folded, JSON-encoded as
    contact_line does."""
    for point in range(sys.maxunicode + 1):
        character = chr(point)
        assert tag_needles([character])[0].casefold() == tag_needles([character.casefold()])[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"Email": st.sampled_from([*EMAILS, EMAILS[0].upper()]),
                                       "First": st.sampled_from(["", "Ann"])}), max_size=10),
       st.sampled_from(TAGS), contacts, st.lists(st.sampled_from(TAGS), max_size=3),
       st.sets(st.sampled_from(EMAILS), max_size=3), st.booleans())
def test_streaming_against_mirror_lines_streams_and_plans_as_against_the_decoded_contacts(rows, tag, audience, removable,
                                                                                          before, settle):
    """One segment streams members the audience lacks while rows are read: a contact given as a line is in the
    audience just the same (never streamed as new), also after a crashed attempt and with unchanged members settled."""
    def run(existing: list) -> tuple:
        sent: list[list[str]] = []
        plan = plan_export([SegmentInput("S", tag, [SourceRow("p.csv", n, row, None) for n, row in enumerate(rows, 1)])],
                           Mapping("Email", {"FNAME": "First"}), existing=existing, removable_tags=removable,
                           chunk_size=2, on_problem=lambda problem: None, already_done=_already_done if settle else None,
                           stream=lambda chunk: sent.append([m.email for m in chunk]), rows_at_most=len(rows) + 1,
                           streamed_before=set(before), may_stream=lambda: True)
        chunks = [[(m.email, m.merge_fields, m.tags, m.source, m.existing, m.untag) for m in chunk] for chunk in plan]
        return sent, chunks, plan.counts, {t: (d.carrying, d.leaving) for t, d in plan.departures.items()}, plan.streamed

    lines = [contact_line(c.email, c.status, c.merge_fields, c.tags) for c in audience]

    assert run(lines) == run(list(audience))


def test_a_contact_only_in_the_mirror_loses_a_tag_kept_in_step_in_any_letter_case() -> None:
    # Not in the rows, so its line is decoded only because it names the tag (ignoring case, as tags compare).
    inputs = [SegmentInput("S", 'Say "Hi" Straße', [SourceRow("p.csv", 1, {"Email": "stay@contoso.com"}, None)])]
    lines = [contact_line("Left@Contoso.com", "subscribed", {}, ['SAY "HI" STRASSE']),
             contact_line("bystander@contoso.com", "subscribed", {"FNAME": 'say "hi" straße'}, ["other"]),
             contact_line("gone@contoso.com", "archived", {}, ['say "hi" straße'])]

    chunks, _, departures = planned(inputs, lines, ['say "hi" STRASSE'])

    leavers = [(email, untag) for chunk in chunks for email, _, tags, _, _, untag in chunk if not tags]
    assert leavers == [("left@contoso.com", ['Say "Hi" Straße'])]
    assert departures == {'Say "Hi" Straße': (1, 1)}
