"""A UTF-8 partition is read from its bytes (shared/segment_rows.py `_Utf8Lines`) as io.TextIOWrapper reads it.

Why: a refresh looks most rows up by their digest alone, and reading them undecoded takes about half the time, but the
reader's every rule (rows, line numbers, limits, broken quotes, known rows skipped) was written against the lines
io.TextIOWrapper(encoding="utf-8-sig", errors="surrogateescape", newline="") gives. So the reference here is that
wrapper, run on the same bytes: any bytes (line breaks of every kind, lone CRs, BOMs, invalid and cut UTF-8, quotes),
small line limits, streams that trickle a byte at a time, and rows a memo knows. One difference is on purpose: a
partition of only the first one or two bytes of a BOM, which the wrapper drops without a word (CPython's utf-8-sig
decoder waits for a third byte that never comes), is read as a line of bytes that are not valid UTF-8: reported, not
lost.
"""
from __future__ import annotations

import io
from array import array
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import shared.segment_rows as segment_rows
from shared.row_memo import row_digest
from shared.segment_rows import read_rows
from shared.snapshots import ReadLimits
from tests.unit.test_segment_fuzz import any_bytes, snapshots

EQUIVALENCE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SEED = 12345
PIECES = [b"a@contoso.com,A\n", b"b@contoso.com,B\r\n", b"c@contoso.com,C\r", b"\r", b"\n", b"\r\n", b"\r\r\n", b'"', b",",
          b"\xef\xbb\xbf", b"\xc3\xa9", b"\xe2\x82", b"\xac", b"\xff", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"x" * 40]
rows_soup = st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)
BOM_PREFIXES = (b"\xef", b"\xef\xbb")
small_limits = st.builds(ReadLimits, line_bytes=st.integers(4, 120), fields=st.integers(1, 12))


def wrapper_text(stream: BinaryIO, snapshot, partition: str) -> io.TextIOWrapper:
    """How `_text` read UTF-8 before `_Utf8Lines`: the reference."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


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


class _Known:
    """RowDigests knowing the digests of some lines of the partitions (as a memo of an earlier plan would)."""

    def __init__(self, digests: set[int]) -> None:
        self._digests = digests

    def seed(self, columns, delimiter, most_fields) -> int:
        return SEED

    def entry(self, digest: int) -> int | None:
        return digest % 1000 if digest in self._digests else None


def _known_lines(partitions: list[bytes], pick: list[bool]) -> _Known:
    lines = [line for data in partitions for line in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig",
                                                                      errors="surrogateescape", newline="")]
    return _Known({row_digest(line, SEED) for line, chosen in zip(lines, pick * len(lines)) if chosen})


def _rows(reference: bool, source, snapshot, digests) -> list:
    with pytest.MonkeyPatch.context() as patch:
        if reference:
            patch.setattr(segment_rows, "_text", wrapper_text)
        return list(read_rows(source, snapshot, digests))


@EQUIVALENCE
@given(partitions=st.lists(st.one_of(rows_soup, any_bytes), min_size=1, max_size=3), limit=st.one_of(st.just(ReadLimits()), small_limits),
       has_header=st.booleans(), trickle=st.booleans(), pick=st.lists(st.booleans(), min_size=1, max_size=5), known=st.booleans())
def test_a_utf8_partition_reads_as_the_text_wrapper_reads_it(partitions, limit, has_header, trickle, pick, known) -> None:
    assume(not any(data in BOM_PREFIXES for data in partitions))
    source, snapshot = snapshots(partitions, "csv", has_header, None if has_header else ("Email", "Name"), ",", "utf-8", limit)
    if trickle:
        source.open_binary = lambda name: io.BufferedReader(_Trickle(source.blobs[name]), buffer_size=8)  # type: ignore[method-assign]
    digests = _known_lines(partitions, pick) if known else None
    assert _rows(False, source, snapshot, digests) == _rows(True, source, snapshot, digests)


@EQUIVALENCE
@given(data=st.one_of(rows_soup, any_bytes), trickle=st.booleans())
def test_its_lines_are_the_text_wrappers_lines(data, trickle) -> None:
    """Whole lines (no size limit bites): the same text, and `readline_bytes` gives each line's own bytes."""
    assume(data not in BOM_PREFIXES)
    stream = io.BufferedReader(_Trickle(data), buffer_size=8) if trickle else io.BufferedReader(io.BytesIO(data))
    ours, reference = segment_rows._Utf8Lines(stream), wrapper_text(io.BytesIO(data), None, "")
    as_bytes = segment_rows._Utf8Lines(io.BufferedReader(io.BytesIO(data)))
    size = len(data) + 8
    while True:
        line, expected, raw = ours.readline(size), reference.readline(size), as_bytes.readline_bytes(size)
        assert line == expected
        assert raw.decode("utf-8", "surrogateescape") == expected
        if not line:
            break


@pytest.mark.parametrize("data", BOM_PREFIXES)
def test_a_partition_of_part_of_a_bom_is_an_invalid_row_not_nothing(data: bytes) -> None:
    source, snapshot = snapshots([data], "csv", False, ("Email", "Name"), ",", "utf-8", ReadLimits())
    rows = list(read_rows(source, snapshot))
    assert [(row.row, row.values, row.error) for row in rows] == [
        (1, None, "has bytes that are not valid UTF-8 (line 1; save the file as UTF-8)")]
    assert _rows(True, source, snapshot, None) == []  # what the wrapper made of it


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_known_row_one_byte_past_the_line_limit_is_still_too_long(ending: bytes) -> None:
    """A memo made under a higher SEGMENT_MAX_LINE_BYTES knows the row; under this one its line is too long."""
    row = b"a@contoso.com,Ann" + ending
    partition = b"E,N" + ending + b"b@x.io,B" + ending + row  # the row after a known one: read in the skim's loop
    source, snapshot = snapshots([partition], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=len(row) - 1))
    digests = _known_lines([partition], [True])
    rows = _rows(False, source, snapshot, digests)
    assert [(row.row, row.known is not None, "SEGMENT_MAX_LINE_BYTES" in (row.error or "")) for row in rows] == [
        (1, True, False), (2, False, True)]
    assert rows == _rows(True, source, snapshot, digests)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_known_rows_are_passed_over_undecoded_whatever_ends_their_lines(ending: bytes) -> None:
    """The skim itself (not only its outcome): every known line is passed over in its loop, none handed back."""
    lines = [b"a%d@contoso.com,A%d" % (n, n) + ending for n in range(50)]
    known = {row_digest(line.decode(), SEED): n for n, line in enumerate(lines)}
    reader = segment_rows._Utf8Lines(io.BufferedReader(io.BytesIO(b"".join(lines))))
    hits = array("q")
    assert reader.skim(1000, known.get, SEED, hits, 1 << 16) == (50, None)
    assert list(hits) == list(range(50))
