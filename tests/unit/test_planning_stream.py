"""Streaming new members while the rows are read (shared/planning.py): whatever is streamed, and whatever a crashed
attempt streamed before, the run sends and counts exactly what planning without streaming would; and the line count
that allows streaming never undercounts the rows."""
from __future__ import annotations

import io
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.members import ExistingMember, Member, RowRef, decode_members, encode_members
from shared.planning import Mapping, SegmentInput, plan_export
from shared.segment_rows import SourceRow, read_rows, rows_at_most
from shared.snapshots import Snapshot

MAPPING = Mapping("Email", {"FNAME": "FirstName", "LNAME": "LastName"})
POOL = [f"p{i}@contoso.com" for i in range(12)]

row_values = st.fixed_dictionaries({
    "Email": st.sampled_from([*POOL, *(e.upper() for e in POOL[:3]), "not-an-email", ""]),
    "FirstName": st.sampled_from(["", "Ann", "Bo"]),
    "LastName": st.sampled_from(["", "Lee"]),
})


def _rows(values: list[dict[str, str]]) -> list[SourceRow]:
    return [SourceRow("part-0.csv", n, v, None) for n, v in enumerate(values, start=1)]


def _plan(values, audience, chunk_size=3, stream=None, streamed_before=()):
    problems: list = []
    plan = plan_export([SegmentInput("Vip", "Vip", _rows(values))], MAPPING, on_problem=problems.append,
                       existing=[ExistingMember(e, "subscribed", {"FNAME": "Old"}, ()) for e in audience],
                       chunk_size=chunk_size, stream=stream, rows_at_most=len(values) + 1, streamed_before=streamed_before,
                       may_stream=lambda: True)
    return [m for chunk in plan.chunks() for m in chunk], plan, problems


def _key(members: list[Member]) -> dict[str, tuple]:
    return {m.email: (m.merge_fields, m.tags, m.source, m.existing) for m in members}


@settings(max_examples=150, deadline=None)
@given(values=st.lists(row_values, max_size=30), audience=st.sets(st.sampled_from(POOL), max_size=6),
       crash_after=st.integers(min_value=0, max_value=4))
def test_streaming_sends_and_counts_what_planning_without_it_would(values, audience, crash_after):
    whole, unstreamed, problems = _plan(values, audience)

    chunks: list[list[Member]] = []
    rest, streaming, streamed_problems = _plan(values, audience, stream=lambda chunk: chunks.append(list(chunk)))
    streamed = [m for chunk in chunks for m in chunk]
    assert _key(streamed + rest) == _key(whole)
    assert len(streamed + rest) == len(whole)  # nobody twice
    assert streaming.counts == unstreamed.counts
    assert streaming.streamed == len(streamed)
    assert streamed_problems == problems
    for member in streamed:  # nothing read later could have changed what was sent for it
        assert member.email not in audience and member.existing is None
        assert set(member.merge_fields) == {"FNAME", "LNAME"}
    assert all(len(chunk) == 3 for chunk in chunks)  # only full chunks: one part-filled chunk a run at most

    # A crash after `crash_after` streamed chunks: planning again (without streaming) knows what went out and plans
    # only the rest, counting the same.
    before = {m.email for chunk in chunks[:crash_after] for m in chunk}
    again, replanned, _ = _plan(values, audience, streamed_before=before)
    assert _key([m for m in streamed if m.email in before] + again) == _key(whole)
    assert replanned.counts == unstreamed.counts
    # ... and planning again with streaming on: before the crashed attempt's chunks reached Mailchimp (the audience
    # as it was) and after (they are in it now): a later row of a member streamed then is never streamed again.
    for seen in (audience, audience | before):
        more: list[list[Member]] = []
        rest, restreamed, _ = _plan(values, seen, stream=lambda chunk: more.append(list(chunk)), streamed_before=before)
        members = [m.email for m in streamed if m.email in before] + [m.email for c in more for m in c] + [m.email for m in rest]
        assert sorted(members) == sorted(m.email for m in whole)  # nobody twice, nobody lost
        assert restreamed.counts == unstreamed.counts


def test_a_member_in_the_audience_an_incomplete_row_or_a_second_segment_is_not_streamed():
    values = [{"Email": "new@contoso.com", "FirstName": "Ann", "LastName": "Lee"},
              {"Email": "old@contoso.com", "FirstName": "Bo", "LastName": "Lee"},
              {"Email": "part@contoso.com", "FirstName": "Cy", "LastName": ""},
              {"Email": "part@contoso.com", "FirstName": "", "LastName": "Filled"}]
    sent: list[Member] = []
    rest, plan, _ = _plan(values, {"old@contoso.com"}, chunk_size=1, stream=sent.extend)
    assert [m.email for m in sent] == ["new@contoso.com"]
    assert {m.email: m.merge_fields for m in rest} == {"old@contoso.com": {"FNAME": "Bo", "LNAME": "Lee"},
                                                       "part@contoso.com": {"FNAME": "Cy", "LNAME": "Filled"}}
    assert plan.counts["Vip"].members == 3

    two = plan_export([SegmentInput("A", "A", _rows(values[:1])), SegmentInput("B", "B", _rows(values[:1]))],
                      MAPPING, on_problem=lambda p: None, stream=sent.extend, rows_at_most=3, may_stream=lambda: True)
    assert [m.tags for chunk in two.chunks() for m in chunk] == [["A", "B"]]  # one member, both tags, one write
    assert len(sent) == 1  # nothing more was streamed


class _Bytes:
    """One partition in memory, for read_rows."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def open_binary(self, name: str):
        return io.BufferedReader(io.BytesIO(self.data))


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(['a', ',', '"', '\n', '\r', 'é', ' ', '{', '}', ':']), max_size=80),
       header=st.booleans(), jsonl=st.booleans())
def test_the_line_count_before_streaming_is_never_below_the_rows_read(text, header, jsonl):
    """A run streams only when this bound is within MAX_PROFILES_PER_EXPORT: were it ever below the rows read_rows
    yields, members could be sent before the run learns it is over the limit."""
    snapshot = Snapshot("S", "S/", datetime(2026, 11, 28, tzinfo=UTC), ("S/p",), None if header else ("Email", "x"),
                        "jsonl" if jsonl else "csv", header and not jsonl)
    source = _Bytes(text.encode("utf-8"))
    rows = sum(1 for _ in read_rows(source, snapshot))
    assert rows_at_most(source, snapshot, limit=1_000) >= rows  # the line breaks
    assert rows_at_most(source, snapshot, limit=0) >= rows  # ... past the limit: the records


def test_a_chunk_blob_keeps_a_name_holding_a_unicode_line_separator_whole():
    members = [Member("a@contoso.com", {"FNAME": "Ann\u2028Lee", "LNAME": "x\u0085y"}, ["Vip"], RowRef("Vip", "p", 1),
                      ExistingMember("a@contoso.com", "subscribed", {"FNAME": "\u2029"}, ("Vip",)), ["Old"]),
               Member("b@contoso.com", {}, ["Vip"], RowRef("Vip", "p", 2))]
    assert list(decode_members(encode_members(members))) == members
    assert list(decode_members(b"")) == []


def test_a_member_a_crashed_attempt_streamed_is_not_streamed_again_by_a_later_row_of_it():
    values = [{"Email": "e@contoso.com", "FirstName": "Ann", "LastName": "Lee"},
              {"Email": "e@contoso.com", "FirstName": "Bo", "LastName": "Lee"}]
    for audience in (set(), {"e@contoso.com"}):  # its chunk not in Mailchimp yet, or in it
        sent: list[Member] = []
        rest, plan, _ = _plan(values, audience, chunk_size=1, stream=sent.extend, streamed_before={"e@contoso.com"})
        assert sent == [] and rest == []
        assert (plan.counts["Vip"].members, plan.counts["Vip"].duplicates, plan.streamed) == (1, 1, 1)


def _people(prefix: str, count: int) -> list[dict[str, str]]:
    return [{"Email": f"{prefix}{i}@contoso.com", "FirstName": "Ann", "LastName": "Lee"} for i in range(count)]


def _asking(answer: bool):
    asked: list[bool] = []

    def may_stream() -> bool:
        asked.append(answer)
        return answer

    return asked, may_stream


def test_a_refresh_with_few_new_members_never_streams_nor_asks_for_the_line_count():
    """A refresh: nearly every row's member is in the audience; its few new ones (1 in 10 here, fewer than 1 in 4) are
    not worth reading the snapshot once more for the line count that streaming needs: nothing is asked, nothing is
    streamed, and the new members are planned as usual."""
    values = _people("old", 90) + _people("new", 10)
    asked, may_stream = _asking(True)
    sent: list[Member] = []
    plan = plan_export([SegmentInput("Vip", "Vip", _rows(values))], MAPPING, on_problem=lambda p: None,
                       existing=[ExistingMember(v["Email"], "subscribed", {}, ()) for v in values[:90]],
                       chunk_size=5, stream=sent.extend, rows_at_most=1000, may_stream=may_stream)
    planned = [m.email for chunk in plan.chunks() for m in chunk]
    assert asked == [] and sent == []
    assert sorted(planned) == sorted(v["Email"] for v in values)
    assert plan.counts["Vip"].members == 100 and plan.streamed == 0


def test_a_first_export_asks_once_and_streams_only_if_allowed():
    """Every member new: the first full chunk asks `may_stream` (the line count within the limit) once. Allowed, the
    chunks stream; refused (say the file has more lines than the limit), nothing is streamed and everyone is planned
    the usual way, counted alike."""
    values = _people("new", 23)
    outcomes = {}
    for answer in (True, False):
        asked, may_stream = _asking(answer)
        sent: list[Member] = []
        plan = plan_export([SegmentInput("Vip", "Vip", _rows(values))], MAPPING, on_problem=lambda p: None,
                           chunk_size=5, stream=sent.extend, rows_at_most=1000, may_stream=may_stream)
        planned = [m.email for chunk in plan.chunks() for m in chunk]
        assert asked == [answer]
        assert sorted(planned + [m.email for m in sent]) == sorted(v["Email"] for v in values)
        outcomes[answer] = (len(sent), len(planned), plan.counts["Vip"].members, plan.streamed)
    assert outcomes == {True: (20, 3, 23, 20), False: (0, 23, 23, 0)}


def test_without_may_stream_nothing_is_streamed():
    """Streaming needs the caller's proof that the rows are within its limit (`may_stream`): without it, none."""
    values = _people("new", 12)
    sent: list[Member] = []
    plan = plan_export([SegmentInput("Vip", "Vip", _rows(values))], MAPPING, on_problem=lambda p: None,
                       chunk_size=5, stream=sent.extend, rows_at_most=1000)
    assert len([m for chunk in plan.chunks() for m in chunk]) == 12 and sent == []
