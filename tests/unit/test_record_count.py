"""The record count that proves a run within MAX_PROFILES_PER_EXPORT before it streams (shared/segment_rows.py
`rows_at_most`, `_records`): where the line breaks pass the limit, a partition's records are counted by the csv
module alone when it is sure to find the ones `_csv_records` reads, and as `_csv_records` reads them otherwise.

Why: the count runs before anything is sent; at a million rows, reading each record as `_csv_records` does was most of
the time to the first write. The reference is `_csv_records` itself, on any bytes (broken quotes, lines and records
near small line limits, lone CRs, BOMs, NULs, compressed data, any encoding): never a different count, since a lower
one could let a run stream members past the limit.
"""
from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shared.segment_rows as segment_rows
from shared.segment_rows import _csv_records, _line_breaks, _peekable, _records, read_rows, rows_at_most
from shared.snapshots import ReadLimits
from tests.unit.test_segment_fuzz import FUZZ, any_bytes, encodings, limits, snapshots
from tests.unit.test_utf8_lines import rows_soup

ROWS = b"Email,Name\r\n" + b"".join(b'a%d@contoso.com,"Ann\r\n%d"\r\n' % (n, n) for n in range(50))


def _reference(source, partition: str, snapshot) -> int:
    with source.open_binary(partition) as stream:
        return sum(1 for _ in _csv_records(partition, _peekable(stream), snapshot))


def _longest(source, partition: str) -> int:
    with source.open_binary(partition) as stream:
        return _line_breaks(_peekable(stream))[1]


@FUZZ
@given(data=st.one_of(any_bytes, rows_soup), delimiter=st.sampled_from([",", ";", "\t", "a"]), encoding=encodings,
       limit=st.one_of(limits, st.builds(ReadLimits, line_bytes=st.integers(4, 60))), has_header=st.booleans())
def test_a_partitions_records_are_counted_as_csv_records_reads_them(data, delimiter, encoding, limit, has_header) -> None:
    source, snapshot = snapshots([data], "csv", has_header, None if has_header else ("Email", "Name"), delimiter,
                                 encoding, limit)
    partition = snapshot.partitions[0]
    try:
        expected = _reference(source, partition, snapshot)
    except segment_rows.SnapshotProblem:  # an encoding the listing would refuse: so does the count
        with pytest.raises(segment_rows.SnapshotProblem):
            _records(source, partition, snapshot, _longest(source, partition))
        return
    assert _records(source, partition, snapshot, _longest(source, partition)) == expected


@FUZZ
@given(data=st.one_of(any_bytes, rows_soup), cut=st.integers(1, 700))
def test_the_longest_line_bound_is_never_below_a_lines_bytes(data, cut) -> None:
    """Lines as io.TextIOWrapper(newline="") cuts them (LF, CRLF, lone CR), read in blocks of any size."""
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="latin-1", newline="").readlines()
    longest = max((len(line) for line in lines), default=0)

    class Blocks(io.RawIOBase):
        def __init__(self) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self._data.read(min(cut, size) if size >= 0 else cut)

    count, bound = _line_breaks(Blocks())  # type: ignore[arg-type]
    assert bound >= longest
    assert count + 1 >= len(lines)


def test_ordinary_records_are_counted_by_csv_alone(monkeypatch) -> None:
    """Records with quoted line breaks, well within the limits: the csv module counts them, `_csv_records` is not
    asked (it was four times slower a record)."""
    source, snapshot = snapshots([ROWS, ROWS], "csv", True, None, ",", "utf-8", ReadLimits())
    monkeypatch.setattr(segment_rows, "_csv_records", lambda *args: pytest.fail("the count read a record by record"))
    assert rows_at_most(source, snapshot, 100) == 2 * 51


@pytest.mark.parametrize(("data", "line_bytes"), [
    (ROWS + b'b@contoso.com,"Bo\n' + b"x" * 30 + b'"\n', 40),  # a record spanning lines that may pass the limit
    (ROWS + b"b@contoso.com," + b"x" * 100 + b"\n", 100),  # a line past the limit
    (ROWS + b'b@contoso.com,"Bo"x\n', 10_000),  # a csv error: `_csv_records` reads the lines after it again
    (b"\xef\xbb", 10_000),  # part of a BOM (read by `_Utf8Lines`)
    (b"\x1f\x8b\x08\x00" + b"a\nb\nc\n", 10_000),  # gzip-compressed: one invalid row, however many line breaks
])
def test_what_csv_alone_could_miscount_is_counted_as_csv_records_reads_it(data: bytes, line_bytes: int) -> None:
    source, snapshot = snapshots([data], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=line_bytes))
    partition = snapshot.partitions[0]
    expected = _reference(source, partition, snapshot)
    assert rows_at_most(source, snapshot, 0) == expected >= sum(1 for _ in read_rows(source, snapshot))
