"""A UTF-8 partition is read from its bytes (shared/segment_rows.py `_Utf8Lines`) as io.TextIOWrapper reads it.

Why: a refresh looks most rows up by their digest alone, without decoding them, but the reader's every rule (rows,
line numbers, limits, broken quotes, known rows skipped) was written against the lines
io.TextIOWrapper(encoding="utf-8-sig", errors="surrogateescape", newline="") gives. So the reference here is that
wrapper, run on the same bytes: any bytes (line breaks of every kind, lone CRs, BOMs, invalid and cut UTF-8, quotes),
small line limits, streams that trickle a byte at a time, rows a memo knows (lines, and records spanning lines as an
earlier plan recorded them), and few known rows held at a time. One difference is on purpose: a partition of only
the first one or two bytes of a BOM, which the wrapper drops without a word (CPython's utf-8-sig decoder waits for a
third byte that never comes), is read as a line of bytes that are not valid UTF-8: reported, not lost.
"""
from __future__ import annotations

import io
import itertools
from array import array
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import shared.segment_rows as segment_rows
from shared.row_memo import RowMemo, RowSkips, row_digest
from shared.segment_rows import read_rows, rows_at_most, snapshot_columns
from shared.snapshots import ReadLimits, SnapshotProblem
from tests.unit.test_segment_fuzz import any_bytes, snapshots

EQUIVALENCE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SEED = 12345
PIECES = [b"a@contoso.com,A\n", b"b@contoso.com,B\r\n", b"c@contoso.com,C\r", b"\r", b"\n", b"\r\n", b"\r\r\n", b'"', b",",
          b'"d@contoso.com","D\nE"\r\n', b"\xef\xbb\xbf", b"\xc3\xa9", b"\xe2\x82", b"\xac", b"\xff", b"\xed\xa0\x80",
          b"\xf0\x9f\x98\x80", b"x" * 40]
rows_soup = st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)
ascii_soup = st.lists(st.sampled_from([b"a", b"bc", b"\r", b"\n", b"\r\n", b"\r\r\n", b'"', b","]), max_size=60).map(b"".join)
BOM_PREFIXES = (b"\xef", b"\xef\xbb")
small_limits = st.builds(ReadLimits, line_bytes=st.integers(4, 120), fields=st.integers(1, 12))


def wrapper_text(stream: BinaryIO, snapshot, partition: str, skims: bool = False) -> io.TextIOWrapper:
    """How `_text` read UTF-8 before `_Utf8Lines` (and still does where no row can be known): the reference."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


_chosen_text = segment_rows._text


def bytes_text(stream: BinaryIO, snapshot, partition: str, skims: bool = False) -> segment_rows._Utf8Lines:
    """`_text` as a refresh has it, also where the reader would take the wrapper: the subject of these tests."""
    text = _chosen_text(stream, snapshot, partition, True)
    assert isinstance(text, segment_rows._Utf8Lines)
    return text


class _Trickle(io.RawIOBase):
    """A raw stream that hands out one byte a read (a BOM or a CRLF is then split across reads)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[override]
        byte = self._data.read(1)
        target[:len(byte)] = byte
        return len(byte)


class _Counted(io.BufferedReader):
    """Counts the reads of whole lines (`readline` calls) made of it."""

    line_reads = 0

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        self.line_reads += 1
        return super().readline(size)


class _Known:
    """RowDigests knowing some digests (as a memo of an earlier plan would)."""

    def __init__(self, digests: set[int]) -> None:
        self._digests = digests

    def seed(self, columns, delimiter, most_fields) -> int:
        return SEED

    def entry(self, digest: int) -> int | None:
        return digest % 1000 if digest in self._digests else None

    def may_know(self) -> bool:
        return True


def _rows(reference: bool, source, snapshot, digests, held: int = segment_rows.HITS_HELD,
          block: int = segment_rows.SKIM_BLOCK) -> list:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows, "HITS_HELD", held)
        patch.setattr(segment_rows, "SKIM_BLOCK", block)
        patch.setattr(segment_rows, "_text", wrapper_text if reference else bytes_text)
        return list(read_rows(source, snapshot, digests))


def _known(partitions: list[bytes], pick: list[bool], source, snapshot) -> _Known:
    """Some of the digests an earlier plan recorded (of records, also those spanning lines), and of single lines."""
    lines = [line for data in partitions for line in wrapper_text(io.BytesIO(data), None, "")]
    recorded = [row.digest for row in _rows(True, source, snapshot, _Known(set())) if row.digest]
    return _Known({digest for digest, chosen in zip([*recorded, *(row_digest(line, SEED) for line in lines)],
                                                    itertools.cycle(pick)) if chosen})


@EQUIVALENCE
@given(partitions=st.lists(st.one_of(rows_soup, any_bytes), min_size=1, max_size=3), limit=st.one_of(st.just(ReadLimits()), small_limits),
       has_header=st.booleans(), trickle=st.booleans(), pick=st.lists(st.booleans(), min_size=1, max_size=5), known=st.booleans(),
       held=st.sampled_from([1, 2, 3, segment_rows.HITS_HELD]), block=st.sampled_from([1, 2, 7, 40, segment_rows.SKIM_BLOCK]))
def test_a_utf8_partition_reads_as_the_text_wrapper_reads_it(partitions, limit, has_header, trickle, pick, known, held,
                                                             block) -> None:
    assume(not any(data in BOM_PREFIXES for data in partitions))
    source, snapshot = snapshots(partitions, "csv", has_header, None if has_header else ("Email", "Name"), ",", "utf-8", limit)
    if trickle:
        source.open_binary = lambda name: io.BufferedReader(_Trickle(source.blobs[name]), buffer_size=8)  # type: ignore[method-assign]
    digests = _known(partitions, pick, source, snapshot) if known else None
    assert _rows(False, source, snapshot, digests, held, block) == _rows(True, source, snapshot, digests, held)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows, "_text", bytes_text)
        counted = rows_at_most(source, snapshot, 0), _columns(source, snapshot)
        patch.setattr(segment_rows, "_text", wrapper_text)
        assert counted == (rows_at_most(source, snapshot, 0), _columns(source, snapshot))


def _columns(source, snapshot) -> tuple | str:
    try:
        return snapshot_columns(source, snapshot)
    except SnapshotProblem as problem:
        return str(problem)


@EQUIVALENCE
@given(data=st.one_of(rows_soup, any_bytes), trickle=st.booleans())
def test_its_lines_are_the_text_wrappers_lines(data, trickle) -> None:
    """Whole lines (no size limit bites): the same text, and undecoded each line is its own bytes."""
    assume(data not in BOM_PREFIXES)
    stream = io.BufferedReader(_Trickle(data), buffer_size=8) if trickle else io.BufferedReader(io.BytesIO(data))
    ours, reference = segment_rows._Utf8Lines(stream), wrapper_text(io.BytesIO(data), None, "")
    as_bytes = segment_rows._Utf8Lines(io.BufferedReader(io.BytesIO(data)))
    size = len(data) + 8
    while True:
        line, expected, raw = ours.readline(size), reference.readline(size), as_bytes.readline(size, False)
        assert line == expected
        assert raw.decode("utf-8", "surrogateescape") == expected
        if not line:
            break


@EQUIVALENCE
@given(data=ascii_soup, sizes=st.lists(st.integers(1, 12), min_size=1, max_size=30), bom=st.booleans(), trickle=st.booleans())
def test_lines_cut_at_a_size_are_cut_where_the_wrapper_cuts_them(data, sizes, bom, trickle) -> None:
    """In ASCII a character is a byte, so a size means the same to both: a line longer than it (a CRLF too) is cut
    at the same place, and the rest comes next."""
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    stream = io.BufferedReader(_Trickle(data), buffer_size=8) if trickle else io.BufferedReader(io.BytesIO(data))
    ours, reference = segment_rows._Utf8Lines(stream), wrapper_text(io.BytesIO(data), None, "")
    for size in itertools.cycle(sizes):
        line = ours.readline(size)
        assert line == reference.readline(size)
        if not line:
            break


@pytest.mark.parametrize("line_bytes", range(2, 9))
def test_a_bom_before_a_header_near_the_line_limit_is_not_counted_in_it(line_bytes: int) -> None:
    partition = b"\xef\xbb\xbfE,N\r\na@x.io,A\n"
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=line_bytes))
    digests = _known([partition], [True], source, snapshot)
    assert _rows(False, source, snapshot, None) == _rows(True, source, snapshot, None)
    assert _rows(False, source, snapshot, digests) == _rows(True, source, snapshot, digests)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows, "_text", bytes_text)
        ours = _columns(source, snapshot)
        patch.setattr(segment_rows, "_text", wrapper_text)
        assert ours == _columns(source, snapshot)


@pytest.mark.parametrize("data", BOM_PREFIXES)
def test_a_partition_of_part_of_a_bom_is_an_invalid_row_not_nothing(data: bytes) -> None:
    source, snapshot = snapshots([data], "csv", False, ("Email", "Name"), ",", "utf-8", ReadLimits())
    rows = list(read_rows(source, snapshot))
    assert [(row.row, row.values, row.error) for row in rows] == [
        (1, None, "has bytes that are not valid UTF-8 (line 1; save the file as UTF-8)")]
    assert _rows(True, source, snapshot, None) == []  # what the wrapper made of it


def test_a_header_of_part_of_a_bom_refuses_the_snapshot_instead_of_being_passed_over() -> None:
    """With a header, the wrapper read such a partition as empty and took the next one's header; it is a header of
    bytes that are not text, and the snapshot is refused naming the file, as for any such header."""
    source, snapshot = snapshots([b"\xef\xbb", b"Email,Name\na@x.io,A\n"], "csv", True, None, ",", "utf-8", ReadLimits())
    with pytest.raises(SnapshotProblem, match="part-0.csv.*the header row has bytes that are not valid text"):
        snapshot_columns(source, snapshot)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_known_row_one_byte_past_the_line_limit_is_still_too_long(ending: bytes) -> None:
    """A memo made under a higher SEGMENT_MAX_LINE_BYTES knows the row; under this one its line is too long."""
    row = b"a@contoso.com,Ann" + ending
    partition = b"E,N" + ending + b"b@x.io,B" + ending + row  # the row after a known one: read in the skim's loop
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=len(row) - 1))
    digests = _known([partition], [True], source, snapshot)
    rows = _rows(False, source, snapshot, digests)
    assert [(row.row, row.known is not None, "SEGMENT_MAX_LINE_BYTES" in (row.error or "")) for row in rows] == [
        (1, True, False), (2, False, True)]
    assert rows == _rows(True, source, snapshot, digests)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_known_rows_are_passed_over_undecoded_whatever_ends_their_lines(monkeypatch, ending: bytes) -> None:
    """The skim itself (not only its outcome): every known line is passed over in its loop, none handed back, and a
    partition's reader goes through it."""
    lines = [b"a%d@contoso.com,A%d" % (n, n) + ending for n in range(50)]
    known = {row_digest(line.decode(), SEED): n for n, line in enumerate(lines)}
    reader = segment_rows._Utf8Lines(io.BufferedReader(io.BytesIO(b"".join(lines))))
    hits = array("q")
    assert reader.skim(1000, known.get, SEED, hits, 1 << 16) == (50, None)
    assert list(hits) == list(range(50))

    skims = []
    skim = segment_rows._Utf8Lines.skim

    def counted(self: segment_rows._Utf8Lines, *args: object) -> tuple[int, str | None]:
        skims.append(1)
        return skim(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(segment_rows._Utf8Lines, "skim", counted)
    source, snapshot = snapshots([b"Email,Name" + ending + b"".join(lines)], "csv", True, None, ",", "utf-8", ReadLimits())
    rows = list(read_rows(source, snapshot, _Known(set(known))))
    assert [len(row.known or ()) for row in rows] == [50] and skims == [1]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_known_rows_are_looked_up_a_block_at_a_time_not_a_line_at_a_time(monkeypatch, ending: bytes) -> None:
    """A Python step for each known line was most of a refresh's reading: the skim cuts a block into lines and looks
    them all up at once, so `readline` is asked only for the lines around the rows that are not known, and for the
    bytes a block ends with."""
    lines = [b"a%d@contoso.com,A%d" % (n, n) + ending for n in range(5000)]
    unknown = {1234, 4000, 4001}
    known = {row_digest(line.decode(), SEED) for n, line in enumerate(lines) if n not in unknown}
    calls: list[int] = []
    readline = segment_rows._Utf8Lines.readline

    def counted(self: segment_rows._Utf8Lines, *args: object) -> str | bytes:
        calls.append(1)
        return readline(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(segment_rows._Utf8Lines, "readline", counted)
    partition = b"Email,Name" + ending + b"".join(lines)
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", ReadLimits())
    rows = list(read_rows(source, snapshot, _Known(known)))
    assert sum(len(row.known or ()) for row in rows) == 5000 - len(unknown)
    assert [row.values["Email"] for row in rows if row.values] == [f"a{n}@contoso.com" for n in sorted(unknown)]
    blocks = len(partition) // segment_rows.SKIM_BLOCK + 1
    assert len(calls) <= 2 * blocks + 3 * len(unknown) + 2  # a line at a time: over 5,000


def test_lines_cut_ahead_are_served_no_longer_than_asked() -> None:
    """`readline(size)` hands out at most `size` bytes also of a line the skim cut from a block and left unserved."""
    lines = [b"a%d@contoso.com,A%d\n" % (n, n) for n in range(3)]
    reader = segment_rows._Utf8Lines(io.BufferedReader(io.BytesIO(b"E,N\n" + b"".join(lines))))
    assert reader.readline(1000) == "E,N\n"
    known = {row_digest(lines[0].decode(), SEED): 7}
    hits = array("q")
    assert reader.skim(1000, known.get, SEED, hits, 1 << 16) == (1, lines[1].decode()) and list(hits) == [7]
    assert [reader.readline(4, False), reader.readline(1000, False), reader.readline(1000, False)] == [
        lines[2][:4], lines[2][4:], b""]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("past", [-2, -1, 0, 1, 2])
def test_a_known_row_spanning_lines_near_the_line_limit_reads_as_the_wrapper_reads_it(ending: bytes, past: int) -> None:
    """A row whose quoted value spans lines is looked up whole only while its lines, together, are within
    SEGMENT_MAX_LINE_BYTES (`_Lines._run_on`), at the limit and a byte either side of it, with a memo made under a
    higher limit (which knows the row whole): as the text wrapper reads it, and known or not as the limit says."""
    spanning = b'"s@contoso.com","S' + ending + b'T"' + ending
    rows = [b"a%d@contoso.com,A" % n + ending for n in range(3)]
    partition = b"E,N" + ending + rows[0] + spanning + rows[1] + spanning.replace(b"s@", b"u@") + rows[2]
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", ReadLimits())
    digests = _Known({row.digest for row in _rows(True, source, snapshot, _Known(set())) if row.digest})  # as recorded
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=len(spanning) + past))
    read = _rows(False, source, snapshot, digests)
    assert read == _rows(True, source, snapshot, digests)
    assert sum(len(row.known or ()) for row in read) == (5 if past >= 0 else 3)  # known whole only within the limit


def test_lines_ended_by_lone_crs_are_read_a_block_at_a_time(monkeypatch) -> None:
    """Classic Mac line breaks (or a partition of CRs alone): each line is cut from a block read once, not read again
    to its next LF (which, with no LF in the file, meant reading and copying up to the line limit for every line)."""
    partition = b"Email,Name\r" + b"".join(b"a%d@contoso.com,A%d\r" % (n, n) for n in range(20_000)) + b"\r" * 20_000
    limits = ReadLimits(line_bytes=4096)
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", limits)
    streams: list[_Counted] = []

    def counted(name: str) -> _Counted:
        streams.append(_Counted(io.BytesIO(source.blobs[name])))
        return streams[-1]

    source.open_binary = counted  # type: ignore[method-assign]
    monkeypatch.setattr(segment_rows, "_text", bytes_text)
    assert sum(1 for row in read_rows(source, snapshot) if row.values) == 20_000
    # a block at most a line limit long (less where a refill completes the rest of one), the first line and the end;
    # reading each line to the next LF made one read a line (40,000 here)
    assert streams[0].line_reads <= 2 * len(partition) // limits.line_bytes + 3


def test_lines_after_a_lone_cr_are_served_from_the_block_not_from_copies_of_it() -> None:
    """Copying the rest of a block for each line cut from it was as slow as reading it again."""
    stream = _Counted(io.BytesIO(b"\r" * 50_000 + b"a\rb\r\n" * 10_000))
    reader, last, blocks = segment_rows._Utf8Lines(stream), None, 0
    while reader.readline(1 << 20, False):
        if reader._ahead is not last:
            last, blocks = reader._ahead, blocks + 1
    assert blocks <= stream.line_reads


def test_the_bytes_are_split_only_where_a_memo_may_know_rows(monkeypatch) -> None:
    """Decoding every row, io.TextIOWrapper is faster: a first export (an empty memo), a run without a memo, the
    record count and the columns read through it. The byte reader is taken where a memo may know rows, and for a
    partition of only part of a BOM (which it reads as invalid bytes: the same outcome on every kind of run)."""
    made: list[int] = []

    class Counted(segment_rows._Utf8Lines):
        def __init__(self, stream: BinaryIO) -> None:
            made.append(1)
            super().__init__(stream)

    monkeypatch.setattr(segment_rows, "_Utf8Lines", Counted)
    partitions = [b"\xef\xbb\xbfEmail,Name\r\na@x.io,A\r\n", b"Email,Name\nb@x.io,B\n"]
    source, snapshot = snapshots(partitions, "csv", True, None, ",", "utf-8", ReadLimits())

    def bytes_readers(read) -> int:
        made.clear()
        read()
        return len(made)

    memo = RowMemo(array("Q", [1]), array("Q", [2]), array("Q", [3]))
    first_export, before_audience, refresh = (RowSkips(RowMemo.empty()), RowSkips(memo), RowSkips(memo))
    refresh_digests = refresh.for_segment("S", "T", {"Email": "Email"})
    refresh.audience_read([0])
    assert (first_export.may_know(), before_audience.may_know(), refresh.may_know()) == (False, False, True)
    expected = _rows(True, source, snapshot, None)
    for digests, readers in [(None, 0), (first_export.for_segment("S", "T", {"Email": "Email"}), 0),
                             (refresh_digests, len(partitions))]:
        made.clear()
        assert [(row.row, row.values) for row in read_rows(source, snapshot, digests)] == [
            (row.row, row.values) for row in expected]
        assert len(made) == readers
    assert bytes_readers(lambda: rows_at_most(source, snapshot, 0)) == 0
    assert bytes_readers(lambda: snapshot_columns(source, snapshot)) == 0
    refresh.forget({3})
    assert not refresh.may_know()  # every entry dropped: nothing can be known any more

    for data in BOM_PREFIXES:
        source, snapshot = snapshots([data], "csv", False, ("Email", "Name"), ",", "utf-8", ReadLimits())
        assert bytes_readers(lambda: list(read_rows(source, snapshot))) == 1
