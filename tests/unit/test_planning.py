"""Planning: validation, mapping, de-duplication and chunking, over real sample files and spill files."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.members import ExistingMember, RowRef, encode_members
from shared.planning import Mapping, RowProblem, SegmentCounts, SegmentInput, plan_export
from shared.sample_segments import FolderSource, person_email, write_sample_export
from shared.segment_rows import SourceRow, read_rows
from shared.snapshots import list_segments

T2 = datetime(2026, 11, 28, 17, 0, tzinfo=timezone.utc)
SAMPLE_MAPPING = Mapping("Email", {"FNAME": "FirstName", "LNAME": "LastName", "LTV": "LifetimeValue", "BDAY": "BirthDate"})
SAMPLE_TYPES = {"LTV": "number", "BDAY": "birthday"}


def rows(partition: str, *values: dict[str, str] | str) -> list[SourceRow]:
    """SourceRows numbered from 1; a str stands for an unreadable row with that error."""
    return [
        SourceRow(partition, n, None, v) if isinstance(v, str) else SourceRow(partition, n, v, None)
        for n, v in enumerate(values, start=1)
    ]


def plan(inputs: list[SegmentInput], mapping: Mapping = Mapping("Email"), **options):
    problems: list[RowProblem] = []
    planned = plan_export(inputs, mapping, on_problem=problems.append, **options)
    members = [m for chunk in planned for m in chunk]
    return members, planned.counts, problems


def sample_inputs(folder: Path) -> list[SegmentInput]:
    source = FolderSource(folder)
    segments = list_segments(source)
    return [SegmentInput(name, name.lower(), read_rows(source, segments[name][0])) for name in ("Alpha", "Beta", "Gamma")]


def test_every_sample_row_is_accounted_for(tmp_path: Path) -> None:
    stats = write_sample_export(tmp_path, {"Alpha": 1500, "Beta": 1200, "Gamma": 900}, taken_at=T2, seed=7)

    members, counts, problems = plan(sample_inputs(tmp_path), SAMPLE_MAPPING, merge_field_types=SAMPLE_TYPES)

    for name, written in stats.items():
        assert counts[name] == SegmentCounts(
            read=written.rows, invalid=written.invalid, duplicates=written.duplicates + written.shared, members=written.members
        )
    assert len(members) == len({m.email for m in members}) == sum(c.members for c in counts.values())
    assert len(problems) == sum(c.invalid for c in counts.values())
    assert all(m.email == m.email.strip().lower() for m in members)
    assert sum(len(m.tags) > 1 for m in members) > 0  # the segments share people


def test_one_email_in_several_rows_and_segments_is_one_member_with_every_tag() -> None:
    inputs = [
        SegmentInput("VIP", "vip", rows("v.csv", {"Email": "Ann@Contoso.com"}, {"Email": " ann@contoso.com "})),
        SegmentInput("News", "newsletter", rows("n.csv", {"Email": "bo@contoso.com"}, {"Email": "ANN@contoso.com"})),
    ]

    members, counts, problems = plan(inputs)

    by_email = {m.email: m for m in members}
    assert by_email["ann@contoso.com"].tags == ["vip", "newsletter"]
    assert by_email["ann@contoso.com"].source == RowRef("VIP", "v.csv", 1)
    assert counts == {"VIP": SegmentCounts(2, 0, 1, 1), "News": SegmentCounts(2, 0, 1, 1)}
    assert problems == []


def test_first_row_wins_and_its_empty_fields_are_filled_from_later_rows() -> None:
    mapping = Mapping("Email", {"FNAME": "First", "LNAME": "Last", "CITY": "City"})
    inputs = [
        SegmentInput("A", "a", rows("a.csv", {"Email": "x@contoso.com", "First": "Ann", "Last": " ", "City": ""})),
        SegmentInput("B", "b", rows("b.csv", {"Email": "x@contoso.com", "First": "Anna", "Last": "Lee", "City": ""})),
        SegmentInput("C", "c", rows("c.csv", {"Email": "x@contoso.com", "First": "Annie", "Last": "Li", "City": " Oslo "})),
    ]

    [member], _, _ = plan(inputs, mapping)

    assert member.merge_fields == {"FNAME": "Ann", "LNAME": "Lee", "CITY": "Oslo"}


def test_invalid_and_unreadable_rows_are_reported_without_the_email_in_the_reason() -> None:
    source = rows(
        "p.csv",
        {"Email": "jane.doe@gmail"},
        {"Email": "   "},
        {"Name": "no email column"},
        "has 2 fields, expected 3 (line 5; check quoting of commas and line breaks)",
        {"Email": "ok@contoso.com"},
    )

    members, counts, problems = plan([SegmentInput("VIP", "vip", source)])

    assert [m.email for m in members] == ["ok@contoso.com"]
    assert counts["VIP"] == SegmentCounts(read=5, invalid=4, duplicates=0, members=1)
    assert [(p.segment, p.partition, p.row, p.email) for p in problems] == [
        ("VIP", "p.csv", 1, "jane.doe@gmail"),
        ("VIP", "p.csv", 2, "   "),
        ("VIP", "p.csv", 3, None),
        ("VIP", "p.csv", 4, None),
    ]
    assert problems[0].reason == "column 'Email': email is not a valid address (expected name@domain.tld)"
    assert problems[1].reason == "column 'Email': email is empty"
    assert "has no column 'Email'" in problems[2].reason and "fix the mapping" in problems[2].reason
    assert problems[3].reason.startswith("has 2 fields, expected 3")
    assert not any("jane" in p.reason for p in problems)


@pytest.mark.parametrize(
    ("kind", "given", "sent"),
    [
        ("number", " 1234 ", 1234),
        ("number", "-12.50", -12.5),
        ("number", "1e3", 1000.0),
        ("date", "2026-11-28", "2026-11-28"),
        ("date", "2026-03-04T23:30:00.0000000-05:00", "2026-03-04"),
        ("date", "2026/3/4", "2026-03-04"),
        ("birthday", "1990-04-17", "04/17"),
        ("birthday", "4/7", "04/07"),
        ("birthday", "02/29", "02/29"),
        ("address", "1701 Bristol Ave.  Barrington  RI  02806  US", {"addr1": "1701 Bristol Ave.", "city": "Barrington", "state": "RI", "zip": "02806", "country": "US"}),
        ("address", '{"addr1": "1 Main St", "city": "Springfield", "state": "IL", "zip": 62701}', {"addr1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}),
        ("phone", "+1 206 555 0100", "+1 206 555 0100"),
        ("text", "Zoë", "Zoë"),
    ],
)
def test_merge_values_are_converted_to_their_mailchimp_type(kind: str, given: str, sent: object) -> None:
    source = rows("p.csv", {"Email": "x@contoso.com", "Col": given})

    [member], _, problems = plan([SegmentInput("S", "s", source)], Mapping("Email", {"TAG": "Col"}), merge_field_types={"TAG": kind})

    assert problems == [] and member.merge_fields == {"TAG": sent}


@pytest.mark.parametrize(
    ("kind", "given", "expected"),
    [
        ("number", "1,234.5", "a number like 1234.5"),
        ("number", "1e999", "a number like 1234.5"),
        ("date", "03/04/2026", "a date with the year first"),
        ("date", "2026-02-30", "a date with the year first"),
        ("birthday", "13/01", "a month/day like 04/17"),
        ("address", "1 Main St, Springfield", "street, city, state, zip[, country] separated by two spaces"),
        ("address", '{"addr1": "1 Main St"}', "JSON like"),
    ],
)
def test_a_value_that_cannot_be_converted_is_left_out_and_the_member_still_sent(kind: str, given: str, expected: str) -> None:
    source = rows("p.csv", {"Email": "x@contoso.com", "Spend": given, "Name": "Xu"}, {"Email": "y@contoso.com", "Spend": ""})
    mapping = Mapping("Email", {"TAG": "Spend", "FNAME": "Name"})

    members, counts, [problem] = plan([SegmentInput("S", "s", source)], mapping, merge_field_types={"TAG": kind})

    # A bad optional value is not a departure: the member is sent (keeping its tag) without that one value.
    assert sorted((m.email, m.merge_fields, m.tags) for m in members) == [("x@contoso.com", {"FNAME": "Xu"}, ["s"]),
                                                                          ("y@contoso.com", {}, ["s"])]
    assert (counts["S"].invalid, counts["S"].members, counts["S"].field_problems) == (0, 2, 1)
    assert (problem.kind, problem.segment, problem.partition, problem.row, problem.column, problem.merge_tag) == (
        "field", "S", "p.csv", 1, "Spend", "TAG")
    assert problem.reason.startswith(f"column 'Spend' (merge field TAG, type {kind}) cannot be converted: expected ")
    assert expected in problem.reason and given not in problem.reason and "sent without this value" in problem.reason


def test_mapped_columns_resolve_ignoring_case_like_the_check_before_the_run() -> None:
    # The mapping says "email"; the snapshot's header says "Email". Resolved once, per segment, as the check does.
    source = rows("p.csv", {"Email": "x@contoso.com", "First": "Xu"})
    inputs = [SegmentInput("S", "s", source, columns={"email": "Email", "first": "First"})]

    members, counts, problems = plan(inputs, Mapping("email", {"FNAME": "first"}))

    assert [(m.email, m.merge_fields) for m in members] == [("x@contoso.com", {"FNAME": "Xu"})]
    assert counts["S"].invalid == 0 and problems == []


def test_tags_compare_ignoring_case_as_mailchimp_does() -> None:
    # "VIP" in the audience is the run's "vip" tag: carried already, nothing to take off, one tag for two spellings.
    inputs = [SegmentInput("A", "vip", rows("a.csv", {"Email": "x@contoso.com"})),
              SegmentInput("B", "VIP", rows("b.csv", {"Email": "x@contoso.com"}))]
    existing = [ExistingMember("x@contoso.com", "subscribed", {}, ("Vip",)),
                ExistingMember("gone@contoso.com", "subscribed", {}, ("VIP",))]

    members, _, _ = plan(inputs, existing=existing, removable_tags={"VIP"})

    by_email = {m.email: m for m in members}
    assert by_email["x@contoso.com"].tags == ["vip"] and by_email["x@contoso.com"].untag == []
    assert by_email["gone@contoso.com"].departed and [t.casefold() for t in by_email["gone@contoso.com"].untag] == ["vip"]


def test_departures_are_counted_per_tag_and_archived_contacts_are_never_untagged() -> None:
    inputs = [SegmentInput("S", "s", rows("p.csv", {"Email": "stay@contoso.com"}))]
    existing = [ExistingMember("stay@contoso.com", "subscribed", {}, ("s",)),
                ExistingMember("left@contoso.com", "subscribed", {}, ("s",)),
                ExistingMember("arch@contoso.com", "archived", {}, ("s",)),
                ExistingMember("other@contoso.com", "subscribed", {}, ("hand-made",))]

    planned = plan_export(inputs, Mapping("Email"), existing=existing, removable_tags={"s"}, on_problem=lambda p: None)
    members = [m for chunk in planned for m in chunk]

    assert sorted(m.email for m in members if m.departed) == ["left@contoso.com"]
    assert (planned.departures["s"].carrying, planned.departures["s"].leaving) == (2, 1)


def test_a_contact_listed_twice_counts_once_and_the_last_read_wins() -> None:
    # The audience read lists archived contacts a second time (a read of status=archived after the full listing).
    inputs = [SegmentInput("S", "s", rows("p.csv", {"Email": "x@contoso.com"}))]
    existing = [ExistingMember("x@contoso.com", "subscribed", {}, ("s",)), ExistingMember("x@contoso.com", "archived")]

    members, _, _ = plan(inputs, existing=existing, removable_tags={"s"})

    assert [(m.email, m.existing.status) for m in members] == [("x@contoso.com", "archived")]


def test_text_is_cut_at_255_utf8_bytes_without_splitting_a_character() -> None:
    long_text = "a" + "é" * 200  # 401 bytes; byte 255 falls inside an "é"
    source = rows("p.csv", {"Email": "x@contoso.com", "Note": long_text, "Short": "é" * 63})

    [member], _, _ = plan([SegmentInput("S", "s", source)], Mapping("Email", {"NOTE": "Note", "SHORT": "Short"}))

    assert member.merge_fields["NOTE"] == "a" + "é" * 127
    assert len(member.merge_fields["NOTE"].encode("utf-8")) == 255
    assert member.merge_fields["SHORT"] == "é" * 63


def test_existing_members_are_attached_by_normalized_email() -> None:
    existing = [ExistingMember("ANN@contoso.com", "unsubscribed", {"FNAME": "Ann"}), ExistingMember("zed@contoso.com", "subscribed")]
    source = rows("p.csv", {"Email": "ann@contoso.com"}, {"Email": "bo@contoso.com"})

    members, _, _ = plan([SegmentInput("S", "s", source)], existing=existing)

    by_email = {m.email: m for m in members}
    assert by_email["ann@contoso.com"].existing == ExistingMember("ann@contoso.com", "unsubscribed", {"FNAME": "Ann"})
    assert by_email["bo@contoso.com"].existing is None
    assert "zed@contoso.com" not in by_email


def test_chunks_are_bounded_and_identical_when_planned_again(tmp_path: Path) -> None:
    write_sample_export(tmp_path, {"Alpha": 700, "Beta": 500, "Gamma": 300}, taken_at=T2)
    audience = [ExistingMember(person_email(pid), "subscribed") for pid in range(0, 2000, 3)]

    def chunk_bytes() -> list[bytes]:
        planned = plan_export(sample_inputs(tmp_path), SAMPLE_MAPPING, existing=audience, chunk_size=100, on_problem=lambda p: None)
        return [encode_members(chunk) for chunk in planned]

    first, second = chunk_bytes(), chunk_bytes()

    assert first == second
    sizes = [len(chunk.splitlines()) for chunk in first]
    assert all(size == 100 for size in sizes[:-1]) and 0 < sizes[-1] <= 100
    assert b'"existing"' in b"".join(first)


def test_spill_files_are_removed_when_the_plan_ends_or_is_abandoned(tmp_path: Path) -> None:
    source = [{"Email": f"user{n}@contoso.com"} for n in range(300)]

    for take in (None, 1):
        planned = plan_export([SegmentInput("S", "s", rows("p.csv", *source))], Mapping("Email"), chunk_size=10, on_problem=print, workdir=str(tmp_path))
        chunks = planned.chunks()
        if take is None:
            assert sum(len(c) for c in chunks) == 300
        else:
            next(chunks)
            [spill] = os.listdir(tmp_path)
            left = os.listdir(tmp_path / spill)
            assert "rows-00.marshal" not in left and "rows-63.marshal" in left  # a bucket's file goes once it is read
            chunks.close()
        assert os.listdir(tmp_path) == []


def test_a_plan_runs_once_and_needs_a_tag_per_segment() -> None:
    planned = plan_export([SegmentInput("S", "s", [])], Mapping("Email"), on_problem=print)
    assert list(planned) == []
    with pytest.raises(RuntimeError, match="already run"):
        planned.chunks()
    with pytest.raises(ValueError, match="Segment VIP has an empty tag"):
        plan_export([SegmentInput("VIP", " ", [])], Mapping("Email"), on_problem=print)


def test_members_who_left_a_segment_lose_its_tag_only_when_the_run_keeps_that_tag_in_step() -> None:
    inputs = [SegmentInput("VIP", "vip", rows("v.csv", {"Email": "stay@contoso.com"})),
              SegmentInput("News", "news", rows("n.csv", {"Email": "moved@contoso.com"}))]
    audience = [
        ExistingMember("stay@contoso.com", "subscribed", {}, ("vip", "news")),  # still VIP, left News
        ExistingMember("moved@contoso.com", "subscribed", {}, ("vip", "hand-made")),  # left VIP, joined News
        ExistingMember("gone@contoso.com", "unsubscribed", {}, ("news", "hand-made")),  # left every segment
        ExistingMember("other@contoso.com", "subscribed", {}, ("hand-made",)),  # never ours
    ]
    members, counts, _ = plan(inputs, existing=audience, removable_tags={"vip", "news", "not-in-this-run"})
    by_email = {m.email: m for m in members}
    assert by_email["stay@contoso.com"].untag == ["news"] and by_email["stay@contoso.com"].tags == ["vip"]
    assert by_email["moved@contoso.com"].untag == ["vip"]
    gone = by_email["gone@contoso.com"]
    assert gone.departed and gone.untag == ["news"] and gone.existing.status == "unsubscribed"
    assert "other@contoso.com" not in by_email
    assert sum(c.members for c in counts.values()) == 2  # departed members are not input rows

    kept, _, _ = plan(inputs, existing=audience)  # without removable tags nothing is taken off
    assert all(not m.untag and not m.departed for m in kept)


def test_members_needing_nothing_are_counted_settled_and_left_out_of_the_chunks() -> None:
    inputs = [SegmentInput("VIP", "vip", rows("v.csv", {"Email": "same@contoso.com"}, {"Email": "new@contoso.com"}))]
    audience = [ExistingMember("same@contoso.com", "subscribed", {}, ("vip",))]
    members, counts, _ = plan(inputs, existing=audience, already_done=lambda m: m.existing is not None)
    assert [m.email for m in members] == ["new@contoso.com"]
    assert counts["VIP"] == SegmentCounts(read=2, members=2, settled=1)


def test_a_partition_whose_header_differs_in_case_from_the_first_keeps_its_rows() -> None:
    # The snapshot's columns come from its first partition ("Email"); another partition says "email". Its rows are
    # the same segment's members: losing them would take the tag off them as if they had left.
    source = rows("p0.csv", {"Email": "a@contoso.com"}) + rows("p1.csv", {"email": "b@contoso.com"})
    existing = [ExistingMember("b@contoso.com", "subscribed", {}, ("s",))]

    members, counts, problems = plan([SegmentInput("S", "s", source, columns={"Email": "Email"})], Mapping("Email"),
                                     existing=existing, removable_tags={"s"})

    assert sorted((m.email, m.untag) for m in members) == [("a@contoso.com", []), ("b@contoso.com", [])]
    assert counts["S"].invalid == 0 and problems == []


def test_a_value_nested_too_deep_to_parse_is_a_field_problem_not_a_failed_run() -> None:
    source = rows("p.csv", {"Email": "x@contoso.com", "Addr": "{" + '"a":{' * 3000 + "}" * 3001})

    members, counts, [problem] = plan([SegmentInput("S", "s", source)], Mapping("Email", {"ADDR": "Addr"}),
                                      merge_field_types={"ADDR": "address"})

    assert [m.email for m in members] == ["x@contoso.com"] and counts["S"].field_problems == 1
    assert problem.kind == "field" and problem.merge_tag == "ADDR"


def test_contacts_with_the_same_tags_in_one_bucket_each_lose_only_the_tags_of_segments_they_left():
    """_merge works out carried and leaving tags once per (contact's tags, member's tags) pair: two contacts of one
    bucket carrying the same tags (spelt in another case) but still in different segments must not share the answer."""
    import zlib
    emails = [f"c{i}@x.com" for i in range(500)]
    a = emails[0]
    b = next(e for e in emails[1:] if zlib.crc32(e.encode()) % 64 == zlib.crc32(a.encode()) % 64)
    rows = [SourceRow("p.csv", 1, {"Email": a}, None), SourceRow("p.csv", 2, {"Email": b}, None)]
    plan = plan_export([SegmentInput("Vip", "Vip", rows), SegmentInput("Lapsed", "Lapsed", rows[1:])],
                       Mapping("Email", {}), on_problem=lambda problem: None, removable_tags=["Vip", "Lapsed"],
                       existing=[ExistingMember(a, "subscribed", {}, ("VIP", "lapsed")),
                                 ExistingMember(b, "subscribed", {}, ("VIP", "lapsed"))])
    assert {m.email: m.untag for chunk in plan.chunks() for m in chunk} == {a: ["Lapsed"], b: []}
    assert plan.departures["Lapsed"].leaving == 1
