"""Known rows (shared/row_memo.py): a plan that skips the rows its memo knows must be exactly the plan that reads them.

The memo comes from a plan of an earlier snapshot against an earlier audience, each differing from the current ones
in a few rows and contacts, the way a scheduled refresh meets them; rows move, repeat (the same line twice too),
change letter case, gain a second segment, lose a value that cannot be converted, and contacts change status, values
and tags. Each segment has two partitions whose headers may spell the columns differently, and the segment's columns
are resolved from its first partition's header as the planner resolves them, so a snapshot whose partitions come in
another order maps the same lines otherwise."""
from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.exports.planner import _already_done
from shared.members import ExistingMember, contact_line
from shared.columns import resolve_columns
from shared.planning import Mapping, SegmentInput, plan_export
from shared.row_memo import MemoWriter, RowMemo, RowSkips, email_key, fingerprint, read_stored
from shared.sample_segments import FolderSource, folder_writer
from shared.segment_rows import RowDigests, read_rows
from shared.snapshots import ReadLimits, Snapshot
from tests.unit.test_segment_rows import T2

EMAILS = ["ann@contoso.com", "Ann@Contoso.com", "bo@contoso.com", "cy@contoso.com", "dee@contoso.com", "not-an-email",
          *(f"p{n}@fabrikam.com" for n in range(8))]
FIRSTS = ["", "Ann", "Bo", "Cy"]
DAYS = ["", "2026-01-02", "31/12", "1990-04-17"]  # 31/12 cannot be converted: a field problem, reported each run
TAGS = ["VIP", "vip", "Lapsed"]
STATUSES = ["subscribed", "unsubscribed", "archived", "cleaned", "pending"]
MAPPING = Mapping("Email", {"FNAME": "First", "BDAY": "Birthday"})
TYPES = {"BDAY": "birthday"}

HEADERS = [("Email", "First", "Birthday"), ("email", "first", "birthday"), ("Email", "First", "BirthDay")]
row = st.tuples(st.sampled_from(EMAILS), st.sampled_from(FIRSTS), st.sampled_from(DAYS))
segment = st.lists(row, max_size=10)
headers = st.lists(st.sampled_from(range(len(HEADERS))), min_size=2, max_size=2)
contact = st.builds(lambda email, status, first, bday, tags: ExistingMember(
    email, status, {k: v for k, v in (("FNAME", first), ("BDAY", bday)) if v}, tuple(tags)),
    st.sampled_from([e for e in EMAILS if '@' in e]), st.sampled_from(STATUSES), st.sampled_from(FIRSTS), st.sampled_from(["", "04/17"]),
    st.lists(st.sampled_from(TAGS), max_size=2, unique=True))


class SnapshotRows:
    """Rows that can be read twice, as the planner hands them to planning."""

    def __init__(self, source: FolderSource, snapshot: Snapshot, digests: RowDigests | None) -> None:
        self.source, self.snapshot, self.digests = source, snapshot, digests

    def __iter__(self):
        return read_rows(self.source, self.snapshot, self.digests)


def write_segments(folder: Path, segments: list[list[tuple]], crlf: bool,
                   heads: list[int]) -> list[tuple[FolderSource, Snapshot, dict[str, str]]]:
    """Each segment's rows in two partitions (the first half, the rest) with the headers `heads` picks, in that
    order; and the segment's columns, resolved from its first partition's header."""
    write = folder_writer(folder)
    found = []
    for n, rows in enumerate(segments):
        names = []
        for part, (head, part_rows) in enumerate(zip(heads, (rows[:len(rows) // 2], rows[len(rows) // 2:]))):
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\r\n" if crlf else "\n")
            writer.writerow(HEADERS[head])
            writer.writerows(part_rows)
            names.append(f"s{n}/p{part}-{head}.csv")
            write(names[-1], text.getvalue().encode("utf-8"))
        columns = resolve_columns(["Email", "First", "Birthday"], list(HEADERS[heads[0]]))
        found.append((FolderSource(folder), Snapshot(f"S{n}", "", T2, tuple(names), format="csv", has_header=True,
                                                     columns=None), columns))
    return found


def plan(folder: Path, segments: list[list[tuple]], tags: list[str], audience: list, removable: list[str],
         memo: RowSkips | None, crlf: bool = False, heads: tuple[int, int] = (0, 0), made_into: list | None = None) -> tuple:
    """The plan's chunks, counts, departures and problems (and the plan itself appended to `made_into`)."""
    problems: list = []
    first_writer = memo.next if memo else None
    inputs = [SegmentInput(f"S{n}", tags[n], SnapshotRows(source, snapshot,
                                                           memo.for_segment(f"S{n}", tags[n], columns) if memo else None),
                           columns)
              for n, (source, snapshot, columns) in enumerate(write_segments(folder, segments, crlf, list(heads)))]
    made = plan_export(inputs, MAPPING, existing=audience, merge_field_types=TYPES, removable_tags=removable,
                       chunk_size=2, on_problem=problems.append, already_done=_already_done, memo=memo, workdir=str(folder))
    chunks = [[(m.email, m.merge_fields, m.tags, m.source, m.existing, m.untag) for m in chunk] for chunk in made]
    if memo is not None and len(memo.memo):
        event(f"rows skipped: {min(made.known, 3)}{'+' if made.known >= 3 else ''}; "
              f"read again: {memo.next is not first_writer}")
    departures = {tag: (d.carrying, d.leaving) for tag, d in made.departures.items()}
    if made_into is not None:
        made_into.append(made)
    return chunks, made.counts, departures, problems


def handed_as(audience: list[ExistingMember], given_as: str) -> list:
    """The audience as a mirror's lines ("lines"), as contacts read in full ("members"), or every other one each
    ("mixed"): blocks of contacts are looked up together."""
    return [line if given_as == "lines" or (given_as == "mixed" and n % 2) else contact
            for n, (line, contact) in enumerate(zip(lines(audience), audience))]


def entries(writer: MemoWriter) -> list[tuple[int, int, int]]:
    """A next memo's entries (row, contact, email key), in any order."""
    written = read_stored(writer.to_bytes("")).memo
    assert written is not None
    return sorted(zip(written.rows, written.contacts, written.emails))


def lines(audience: list[ExistingMember]) -> list[str]:
    return [contact_line(c.email, c.status, c.merge_fields, c.tags) for c in audience]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(segment, min_size=1, max_size=2),
       edits=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 9), st.one_of(st.none(), st.just("copy"), row)),
                      max_size=3),
       heads_before=headers, heads_after=st.one_of(st.none(), st.none(), headers),  # None: as before
       audience_before=st.lists(contact, max_size=6), audience_edits=st.lists(st.tuples(st.integers(0, 7),
                                                                                        st.one_of(st.none(), contact)), max_size=2),
       tag_picks=st.lists(st.sampled_from(TAGS), min_size=2, max_size=2), removable=st.lists(st.sampled_from(TAGS), max_size=2),
       crlf=st.booleans(), given_as=st.sampled_from(["lines", "members", "mixed"]),
       hold_block=st.sampled_from([1, 2, 3, 4096]))
def test_a_plan_that_skips_known_rows_is_the_plan_that_reads_them(tmp_path_factory, before, edits, heads_before,
                                                                    heads_after, audience_before, audience_edits,
                                                                    tag_picks, removable, crlf, given_as, hold_block):
    tags = tag_picks[:len(before)]
    if len({t.casefold() for t in tags}) < len(tags):
        tags = tags[:1]
        before = before[:1]
    after = [list(rows) for rows in before]
    for seg, at, new in edits:  # remove, repeat (the same line again, later), add or change a row
        rows = after[seg % len(after)]
        if new is None and rows:
            rows.pop(at % len(rows))
        elif new == "copy" and rows:
            rows.append(rows[at % len(rows)])
        elif new not in (None, "copy"):
            rows.insert(at % (len(rows) + 1), new)
    the_fingerprint = fingerprint(MAPPING.email, MAPPING.merge_fields, TYPES, dict(zip(["S0", "S1"], tags)), removable, ())

    # The earlier run: its members written as planned (the audience a refresh meets), then planned again, which
    # settles them and makes the memo.
    written, _, _, _ = plan(tmp_path_factory.mktemp("write"), before, tags, lines(audience_before), removable, None, crlf,
                            heads_before)
    members = {email: ExistingMember(email, "subscribed", fields, tuple(member_tags))
               for chunk in written for email, fields, member_tags, *_ in chunk}
    audience_before = [c for c in audience_before if c.email.lower() not in members] + list(members.values())
    first = RowSkips(RowMemo.empty())
    plan(tmp_path_factory.mktemp("before"), before, tags, lines(audience_before), removable, first, crlf, heads_before)
    stored = read_stored(first.next.to_bytes(the_fingerprint))  # as the planner reads it ahead, indexed by contact
    assert stored.fingerprint == the_fingerprint and stored.memo is not None

    audience_after = list(audience_before)
    for at, new in audience_edits:  # a contact gone, changed or added
        if new is None and audience_after:
            audience_after.pop(at % len(audience_after))
        elif new is not None:
            audience_after.insert(at % (len(audience_after) + 1), new)
    current = handed_as(audience_after, given_as)
    skipping = RowSkips(stored.memo, stored.by_contact)
    heads_after = heads_before if heads_after is None else heads_after
    with patch("shared.planning._HOLD_BLOCK", hold_block):
        skipped = plan(tmp_path_factory.mktemp("skipping"), after, tags, current, removable, skipping, crlf, heads_after)
    reading = RowSkips(RowMemo.empty())  # reads every row, and makes a memo all the same
    assert skipped == plan(tmp_path_factory.mktemp("reading"), after, tags, current, removable, reading, crlf, heads_after)
    assert entries(skipping.next) == entries(reading.next)  # whichever rows were skipped, the next memo is the same


def planned_under(tmp_path: Path, audience: list[str], limits: ReadLimits, memo: RowSkips | None) -> tuple:
    """(chunks, counts, rows known) of segment S (tag VIP, FNAME from First) read from tmp_path/s/p.csv under these
    limits."""
    snapshot = Snapshot("S", "", T2, ("s/p.csv",), format="csv", has_header=True, columns=None, limits=limits)
    rows = SnapshotRows(FolderSource(tmp_path), snapshot, memo.for_segment("S", "VIP", {}) if memo else None)
    made = plan_export([SegmentInput("S", "VIP", rows)], Mapping("Email", {"FNAME": "First"}), existing=audience,
                       on_problem=lambda p: None, already_done=_already_done, memo=memo, workdir=str(tmp_path))
    return [list(chunk) for chunk in made], made.counts, made.known


def test_a_row_known_under_a_higher_field_limit_is_read_under_a_lower_one(tmp_path: Path) -> None:
    """SEGMENT_MAX_FIELDS lowered since the memo was made: the row is now invalid, so it must be read, not skipped."""
    folder_writer(tmp_path)("s/p.csv", b"Email,First\nann@contoso.com,Ann,,,\n")  # extra empty fields: fine at 1,000
    audience = [contact_line("ann@contoso.com", "subscribed", {"FNAME": "Ann"}, ["VIP"])]
    planned = partial(planned_under, tmp_path, audience)
    first = RowSkips(RowMemo.empty())
    assert planned(ReadLimits(), first)[1]["S"].settled == 1
    memo = read_stored(first.next.to_bytes("f")).memo
    assert planned(ReadLimits(), RowSkips(memo))[2] == 1  # known under the same limit
    lower = planned(ReadLimits(fields=3), RowSkips(memo))
    assert lower == planned(ReadLimits(fields=3), None)[:2] + (0,) and lower[1]["S"].invalid == 1


@pytest.mark.parametrize("hold_block", [1, 2, 4096])
def test_a_known_contact_listed_twice_is_merged_as_the_last_one_listed(tmp_path: Path, hold_block: int) -> None:
    """The audience lists a known contact's line and another line of the same address (an archived copy read again):
    planning merges the last one listed, so the row is read, not skipped, and compared with that last line, whether
    the known line comes first or last (the known line is held apart while the rows are read), and whether it comes
    in a block of contacts all known (looked up together) or beside the unknown one."""
    folder_writer(tmp_path)("s/p.csv", b"Email,First\nann@contoso.com,Ann\nbo@contoso.com,Bo\n")
    mapping = Mapping("Email", {"FNAME": "First"})
    known = [contact_line("ann@contoso.com", "subscribed", {"FNAME": "Ann"}, ["VIP"]),
             contact_line("bo@contoso.com", "subscribed", {"FNAME": "Bo"}, ["VIP"])]
    other = contact_line("Ann@Contoso.com", "unsubscribed", {"FNAME": "Anne"}, [])

    def planned(audience: list[str], memo: RowSkips | None) -> tuple:
        snapshot = Snapshot("S", "", T2, ("s/p.csv",), format="csv", has_header=True, columns=None)
        rows = SnapshotRows(FolderSource(tmp_path), snapshot, memo.for_segment("S", "VIP", {}) if memo else None)
        made = plan_export([SegmentInput("S", "VIP", rows)], mapping, existing=audience, on_problem=lambda p: None,
                           already_done=_already_done, memo=memo, workdir=str(tmp_path), removable_tags=["VIP"])
        chunks = [[(m.email, m.merge_fields, m.tags, m.existing, m.untag) for m in chunk] for chunk in made]
        return chunks, made.counts, {tag: (d.carrying, d.leaving) for tag, d in made.departures.items()}, made.known

    first = RowSkips(RowMemo.empty())
    assert planned(known, first)[1]["S"].settled == 2
    memo = read_stored(first.next.to_bytes("f")).memo
    assert planned(known, RowSkips(memo))[3] == 2
    for audience in ([known[0], other, known[1]], [other, *known]):
        with patch("shared.planning._HOLD_BLOCK", hold_block):
            skipping = planned(audience, RowSkips(memo))
        reading = planned(audience, None)
        assert skipping[:3] == reading[:3] and skipping[3] == 1  # bo skipped; ann read and merged as listed last
    assert planned([known[0], other, known[1]], None)[0][0][0][3].status == "unsubscribed"
    assert planned([other, *known], None)[1]["S"].settled == 2


def test_a_memo_holding_two_entries_of_one_address_plans_as_reading_every_row(tmp_path: Path) -> None:
    """A plan writes one entry an address; a memo from storage holding two (each of a row of the address, in two
    segments, the contact as it was) must not have both rows skipped, the person counted a member twice. The audience
    holds one line of the address, known by one entry only (the last of that contact): the other row is read, finds
    the address skipped, and every row is read again. The plan is the one that reads every row."""
    ann = [("ann@contoso.com", "Ann", "")]
    audience = lines([ExistingMember("ann@contoso.com", "subscribed", {"FNAME": "Ann"}, ("VIP", "Lapsed"))])
    writer = MemoWriter()
    for n, segments in enumerate(([ann, []], [[], ann])):  # ann's row of each segment, alone: settled, remembered
        alone = RowSkips(RowMemo.empty())
        plan(tmp_path / f"alone{n}", segments, ["VIP", "Lapsed"], audience, [], alone)
        (entry,) = entries(alone.next)
        writer.add(*entry)
    stored = read_stored(writer.to_bytes("f")).memo
    assert stored is not None and len(stored) == 2 and len(set(stored.emails)) == 1
    both = [ann, ann]
    with patch(f"{__name__}.event"):  # outside a Hypothesis test
        skipping = plan(tmp_path / "skipping", both, ["VIP", "Lapsed"], audience, [], RowSkips(stored))
    assert skipping == plan(tmp_path / "reading", both, ["VIP", "Lapsed"], audience, [], None)
    assert skipping[1]["S0"].members == 1 and skipping[1]["S1"].duplicates == 1


def test_a_refresh_gathers_the_addresses_of_what_it_reads_not_of_the_audience(tmp_path: Path) -> None:
    """The skipped rows' addresses planning gathers are those it asks about: of the rows read, and of contacts read in
    full. A mirror's contacts the memo does not know (the rest of an audience larger than the segments) have no
    skipped row and are left out: gathered, they made a set as large as the audience (about 70 MB a million)."""
    rows = [("ann@contoso.com", "Ann", ""), ("bo@contoso.com", "Bo", "")]
    others = [ExistingMember(f"p{n}@fabrikam.com", "subscribed", {"FNAME": "P"}, ()) for n in range(50)]
    members = [ExistingMember(email, "subscribed", {"FNAME": first}, ("VIP",)) for email, first, _ in rows]
    first = RowSkips(RowMemo.empty())
    plan(tmp_path / "first", [rows], ["VIP"], lines(members + others), ["VIP"], first)
    stored = read_stored(first.next.to_bytes("")).memo
    assert stored is not None and len(stored) == 2
    changed = [rows[0], ("bo@contoso.com", "Bob", "")]
    for given_as, asked in (("lines", {email_key("bo@contoso.com")}),
                            ("members", {email_key(email) for email, _, _ in rows})):
        made: list = []
        with patch(f"{__name__}.event"):  # outside a Hypothesis test
            plan(tmp_path / given_as, [changed], ["VIP"], handed_as(members + others, given_as), ["VIP"],
                 RowSkips(stored), made_into=made)
        assert made[0].known == 1 and made[0]._asked == asked


def test_a_known_contact_whose_row_is_gone_departs_in_the_place_full_planning_gives_it(tmp_path: Path) -> None:
    """A known contact whose row left the segment is read only after the others (its line was held apart while the rows
    were read), yet departs in the same place as when every row is read: departures are in address order."""
    import zlib
    from shared.planning import BUCKETS

    x = "x@contoso.com"
    y = next(f"y{n}@contoso.com" for n in range(10_000)  # in x's bucket, sorting after it
             if zlib.crc32(f"y{n}@contoso.com".encode()) % BUCKETS == zlib.crc32(x.encode()) % BUCKETS)
    mapping = Mapping("Email", {"FNAME": "First"})
    known = contact_line(x, "subscribed", {"FNAME": "Xa"}, ["VIP"])
    carrier = contact_line(y, "subscribed", {}, ["VIP"])

    def planned(name: str, rows: bytes, audience: list[str], memo: RowSkips | None) -> tuple:
        folder_writer(tmp_path)(f"{name}/p.csv", b"Email,First\n" + rows)
        snapshot = Snapshot("S", "", T2, (f"{name}/p.csv",), format="csv", has_header=True, columns=None)
        source = SnapshotRows(FolderSource(tmp_path), snapshot, memo.for_segment("S", "VIP", {}) if memo else None)
        made = plan_export([SegmentInput("S", "VIP", source)], mapping, existing=audience, on_problem=lambda p: None,
                           already_done=_already_done, memo=memo, workdir=str(tmp_path), removable_tags=["VIP"],
                           chunk_size=1)
        return [[(m.email, m.untag) for m in chunk] for chunk in made], made.known

    first = RowSkips(RowMemo.empty())
    planned("a", b"x@contoso.com,Xa\n", [known], first)
    memo = read_stored(first.next.to_bytes("f")).memo
    assert memo is not None and len(memo) == 1
    for audience in ([known, carrier], [carrier, known]):
        skipping = planned("b", b"z@contoso.com,Zed\n", audience, RowSkips(memo))
        assert skipping == planned("b", b"z@contoso.com,Zed\n", audience, None)
        assert [chunk for chunk in skipping[0] if chunk[0][0] != "z@contoso.com"] == [[(x, ["VIP"])], [(y, ["VIP"])]]


def test_a_row_known_under_a_higher_line_limit_is_read_under_a_lower_one(tmp_path: Path) -> None:
    """SEGMENT_MAX_LINE_BYTES lowered since the memo was made (it is not part of a row's digest): a known row now over
    it in bytes, though not in characters, is invalid, so it must be read, also right after another known row."""
    bob = "Bob" + "é" * 30  # 33 characters, 63 bytes in UTF-8
    folder_writer(tmp_path)("s/p.csv", f"Email,First\nann@contoso.com,Ann\nbob@contoso.com,{bob}\n".encode("utf-8"))
    audience = [contact_line("ann@contoso.com", "subscribed", {"FNAME": "Ann"}, ["VIP"]),
                contact_line("bob@contoso.com", "subscribed", {"FNAME": bob}, ["VIP"])]
    planned = partial(planned_under, tmp_path, audience)
    first = RowSkips(RowMemo.empty())
    assert planned(ReadLimits(), first)[1]["S"].settled == 2
    memo = read_stored(first.next.to_bytes("f")).memo
    assert planned(ReadLimits(), RowSkips(memo))[2] == 2  # both known under the same limit
    lower = planned(ReadLimits(line_bytes=60), RowSkips(memo))
    assert lower == planned(ReadLimits(line_bytes=60), None)[:2] + (1,) and lower[1]["S"].invalid == 1


@pytest.mark.parametrize("given_as", ["lines", "members", "mixed"])
@pytest.mark.parametrize("hold_block", [1, 2, 4096])
def test_rows_are_skipped_whether_the_audience_comes_as_lines_or_read_in_full(tmp_path: Path, given_as: str,
                                                                               hold_block: int) -> None:
    """Nothing changed: every row (its member's only one) is skipped, however the contacts are handed over."""
    rows = [[(f"p{n}@fabrikam.com", "Ann", "1990-04-17") for n in range(7)]]
    written, _, _, _ = plan(tmp_path, rows, ["VIP"], [], [], None)
    audience = [ExistingMember(email, "subscribed", fields, tuple(tags)) for chunk in written
                for email, fields, tags, *_ in chunk]
    first = RowSkips(RowMemo.empty())
    plan(tmp_path, rows, ["VIP"], lines(audience), [], first)
    skipping = RowSkips(read_stored(first.next.to_bytes("")).memo or RowMemo.empty())
    assert len(skipping.memo) == 7
    current = handed_as(audience, given_as)
    (source, snapshot, columns), = write_segments(tmp_path, rows, False, [0, 0])
    inputs = [SegmentInput("S0", "VIP", SnapshotRows(source, snapshot, skipping.for_segment("S0", "VIP", columns)), columns)]
    with patch("shared.planning._HOLD_BLOCK", hold_block):
        made = plan_export(inputs, MAPPING, existing=current, merge_field_types=TYPES, on_problem=lambda p: None,
                           already_done=_already_done, memo=skipping, workdir=str(tmp_path))
        assert list(made) == []
    assert made.known == 7


def test_a_contact_read_in_full_that_no_line_can_hold_leaves_a_plan_with_a_memo_as_it_is(tmp_path: Path) -> None:
    """An address with a tab (no mirror line can hold it): known by no memo entry, and no reason to fail the plan."""
    rows = [[("ann@contoso.com", "Ann", "")]]
    audience = [ExistingMember("ann@contoso.com", "subscribed", {"FNAME": "Ann"}, ("VIP",))]
    first = RowSkips(RowMemo.empty())
    plan(tmp_path / "before", rows, ["VIP"], lines(audience), [], first)
    odd = [*audience, ExistingMember("x\ty@contoso.com", "subscribed", {}, ("VIP",))]
    skipping = RowSkips(read_stored(first.next.to_bytes("")).memo or RowMemo.empty())
    with patch(f"{__name__}.event"):  # outside a Hypothesis test
        skipped = plan(tmp_path / "skipping", rows, ["VIP"], odd, ["VIP"], skipping)
    assert skipped == plan(tmp_path / "reading", rows, ["VIP"], odd, ["VIP"], None)


def test_the_memo_is_read_ahead_and_read_again_for_a_second_plan() -> None:
    """The planner starts the memo's download before its calls to Mailchimp, reads it and indexes its entries by
    contact in that thread, and takes it when planning begins; when it plans again (a segment left out), it reads the
    memo again rather than keep the first copy all along."""
    import threading
    from types import SimpleNamespace

    from shared.exports.planner import Planner

    started, release, reads, threads = threading.Event(), threading.Event(), [], []

    def memo_bytes(fingerprint: str) -> bytes:
        writer = MemoWriter()
        for entry in range(3):
            writer.add(100 + entry, 200 + entry % 2, 300 + entry)  # two entries of one contact digest: the last wins
        return writer.to_bytes(fingerprint)

    class Mirror:
        def row_memo(self, destination_id: str, audience_id: str) -> bytes:
            started.set()
            release.wait(timeout=10)
            reads.append((destination_id, audience_id))
            fields.append(dict(telemetry.current_fields()))  # its warnings carry the run's log fields
            return memo_bytes(f"f{len(reads)}")

    def indexed(contacts):  # where the memo is indexed: in the download's thread the first time
        threads.append(threading.get_ident())
        return by_contact(contacts)

    from shared import row_memo
    by_contact = row_memo._by_contact
    from shared import telemetry
    fields: list[dict] = []
    with patch.object(row_memo, "_by_contact", indexed), telemetry.run_context(run_id="r1"):
        stored = Planner._memo_ahead(SimpleNamespace(mirror=Mirror()), SimpleNamespace(id="d1", audience_id="a1"))  # type: ignore[arg-type]
        assert started.wait(timeout=10) and reads == []  # under way before anything asks for it
        release.set()
        first, second = stored(), stored()
    assert (first.fingerprint, second.fingerprint) == ("f1", "f2") and reads == [("d1", "a1")] * 2
    assert threads[0] != threading.get_ident() and threads[1] == threading.get_ident()
    assert fields == [{"runId": "r1"}] * 2
    assert first.by_contact == {200: 2, 201: 1} and list(first.memo.rows) == [100, 101, 102]
    assert Planner._memo_ahead(SimpleNamespace(mirror=None), SimpleNamespace(id="d1", audience_id="a1"))() is None  # type: ignore[arg-type]


@pytest.mark.parametrize("entries_count", [0, 1, 5, 17])
def test_a_memo_read_ahead_is_indexed_by_contact_as_planning_would_index_it(monkeypatch, entries_count: int) -> None:
    """The index made ahead, a slice at a time, is the one made at once: the last entry of a contact digest held twice
    wins, across slices too. It is given once; asked again, the memo is indexed afresh. Bytes that are no memo are
    read as none."""
    monkeypatch.setattr("shared.row_memo._INDEX_SLICE", 4)
    writer = MemoWriter()
    for entry in range(entries_count):
        writer.add(entry, 1000 + entry % 3, 2000 + entry)
    stored = read_stored(writer.to_bytes("f"))
    assert stored.fingerprint == "f" and stored.memo is not None and len(stored.memo) == entries_count
    whole = dict(zip(stored.memo.contacts, range(entries_count)))
    assert stored.by_contact == whole
    skips = RowSkips(stored.memo, stored.by_contact)
    assert skips.contact_entries() is stored.by_contact
    assert skips.contact_entries() == whole and skips.contact_entries() is not stored.by_contact
    assert RowSkips(stored.memo).contact_entries() == whole
    for data in (b"", b"rowmemo\n{}\n", b"not a memo", writer.to_bytes("f")[:-1]):
        assert read_stored(data) == (None, None, None)


def test_the_audience_and_its_merge_fields_are_asked_at_once_in_the_runs_telemetry_context() -> None:
    """Two reads before planning, each a round trip: asked one after the other, each waits for the other here and
    the test fails. The merge fields are read in the run's telemetry context (their call is a dependency of the run),
    and an error of either (a 401, which `Connections.call` answers by reading the credential again) is raised."""
    import threading

    from shared import telemetry
    from shared.exports.planner import _audience_and_fields
    from shared.mailchimp.errors import MailchimpAuthError

    both = threading.Barrier(2, timeout=5)
    seen: list = []

    class Client:
        def __init__(self, refuse: str = "") -> None:
            self.refuse = refuse

        def get_audience(self, audience_id: str) -> str:
            both.wait()
            if self.refuse == "audience":
                raise MailchimpAuthError("revoked")
            return f"audience {audience_id}"

        def list_merge_fields(self, audience_id: str) -> list[str]:
            both.wait()
            seen.append(dict(telemetry.current_fields()))
            if self.refuse == "fields":
                raise MailchimpAuthError("revoked")
            return [f"FNAME of {audience_id}"]

    with telemetry.run_context(run_id="r1", destination_id="d1"):
        assert _audience_and_fields(Client(), "a1") == ("audience a1", ["FNAME of a1"])  # type: ignore[arg-type]
        for refuse in ("audience", "fields"):
            both.reset()
            with pytest.raises(MailchimpAuthError):
                _audience_and_fields(Client(refuse), "a1")  # type: ignore[arg-type]
    assert seen[0] == {"runId": "r1", "destinationId": "d1"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.lists(st.text(st.one_of(st.characters(blacklist_characters="\n"),
                                                  st.sampled_from(["\udcff", "\ud800", "é", "😀", "\r", "\u2028"])),
                                        max_size=12).map(lambda t: t + "\n"), max_size=5), max_size=5),
       skipped=st.lists(st.booleans(), min_size=1), keys=st.lists(st.integers(0, 6), min_size=1, max_size=12))
def test_held_lines_are_read_back_exactly_and_only_those_whose_row_was_not_skipped(tmp_path_factory, blocks, skipped,
                                                                                    keys) -> None:
    """`_Held` keeps the lines in a file while the rows are read, and reads them back a few at a time: any line (other
    scripts, lone surrogates as a reader makes of bytes it cannot decode, a CR or another line separator than LF
    inside, empty blocks) comes back as it was held, in order, when its row was not skipped, and no other; of an
    address held twice, only its last line (the one merging keeps), whatever was skipped."""
    from array import array

    from shared.planning import _Held, _Spill

    folder = str(tmp_path_factory.mktemp("held"))
    every = [line for block in blocks for line in block]
    emails = array("q", (keys[n % len(keys)] for n in range(len(every))))  # entry n's email key (some twice)
    held = _Held(folder, emails)
    at = 0
    for block in blocks:
        held.add(block, range(at, at + len(block)), range(at, at + len(block)))
        at += len(block)
    held.close(array("Q", emails))
    flags = bytearray(skipped[n % len(skipped)] for n in range(len(every)))
    skipped_keys = {emails[n] for n in range(len(every)) if flags[n]}
    last = {key: n for n, key in enumerate(emails)}
    twice = {key for key in last if list(emails).count(key) > 1}
    released: list = []

    class Spill(_Spill):
        def add(self, email: str, record: tuple) -> None:
            released.append(record[1])

    with patch("shared.planning._spill_contact", lambda spill, line: spill.add("", ("", line))), \
            patch("shared.planning._HOLD_BLOCK", 3):
        held.release(Spill(folder, "existing"), flags)
    assert released == [line for n, line in enumerate(every)
                        if (last[emails[n]] == n if emails[n] in twice else emails[n] not in skipped_keys)]


def test_a_memo_of_another_fingerprint_or_none_is_an_empty_one_and_a_usable_one_comes_with_its_index(caplog) -> None:
    """The fingerprint (the mapping, tags, erasure requests and planning code the memo was made under) is checked when
    planning begins, on the memo read ahead: another one, an unreadable one or none gives no known row."""
    from types import SimpleNamespace

    from shared.exports.planner import Planner

    writer = MemoWriter()
    writer.add(1, 2, 3)
    planner, destination = SimpleNamespace(mirror=object()), SimpleNamespace(id="d1")
    stored = read_stored(writer.to_bytes("made under a"))
    caplog.set_level("INFO", logger="shared.exports.planner")
    for found in (stored, read_stored(b"rowmemo\n{"), None):
        skips = Planner._row_skips(planner, destination, "b", lambda: found)  # type: ignore[arg-type]
        assert len(skips.memo) == 0 and skips.contact_entries() == {}
    used = Planner._row_skips(planner, destination, "made under a", lambda: stored)  # type: ignore[arg-type]
    assert len(used.memo) == 1 and used.contact_entries() is stored.by_contact
    said = [(record.rowMemo, record.getMessage().split("(")[1].split()[0]) for record in caplog.records
            if hasattr(record, "rowMemo")]
    assert said == [("unusable", "0"), ("unusable", "0"), ("none", "0"), ("used", "1")]


@settings(max_examples=300, deadline=None)
@given(flags=st.one_of(st.lists(st.sampled_from([0, 1]), max_size=300),  # runs of any length, many or few
                       st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(1, 200)), max_size=8).map(
                           lambda runs: [flag for flag, length in runs for _ in range(length)])))
def test_the_flagged_entries_of_a_memo_are_those_compress_picks_in_its_order(flags) -> None:
    """`MemoWriter.add_flagged` copies runs of flagged entries as slices where runs are few, one by one where many:
    either way the entries flagged, as they are, in order, after those already written."""
    from array import array
    from itertools import compress

    memo = RowMemo(array("Q", range(len(flags))), array("Q", range(1000, 1000 + len(flags))),
                   array("Q", range(5000, 5000 + len(flags))))
    writer = MemoWriter()
    writer.add(1, 2, 3)
    writer.add_flagged(memo, bytearray(flags))
    expected = [(1, 2, 3), *compress(zip(memo.rows, memo.contacts, memo.emails), flags)]
    written = read_stored(writer.to_bytes("f")).memo
    assert list(zip(written.rows, written.contacts, written.emails)) == expected
