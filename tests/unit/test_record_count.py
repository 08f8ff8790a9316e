"""The record count that proves a run within MAX_PROFILES_PER_EXPORT before it streams (shared/segment_rows.py
`rows_at_most`, `_records`): where the line breaks pass the limit, a partition's records are counted by the csv
module alone while it is sure to find the ones `_csv_records` reads, and as `_csv_records` reads them otherwise.

Why: the count runs before anything is sent; at a million rows, reading each record as `_csv_records` does was most of
the time to the first write. The reference is `_csv_records` itself: on any bytes (broken quotes, lines and records
near small line limits, lone CRs, BOMs, NULs, compressed data, any encoding), and on well-formed rows, which take the
csv module's count (blank lines, quoted line breaks, every line ending). Never a different count: a lower one could
let a run stream members past the limit.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shared.segment_rows as segment_rows
from shared.segment_rows import _csv_records, _peekable, _records, read_rows, rows_at_most
from shared.snapshots import ReadLimits, SnapshotProblem
from tests.unit.test_segment_fuzz import FUZZ, any_bytes, encodings, limits, snapshots
from tests.unit.test_utf8_lines import rows_soup

ROWS = b"Email,Name\r\n" + b"".join(b'a%d@contoso.com,"Ann\r\n%d"\r\n' % (n, n) for n in range(50))
ENDINGS = [b"\n", b"\r\n", b"\r"]
value = st.one_of(st.text(st.sampled_from("ab@.é,\"\r\n"), max_size=12).map(lambda text: '"' + text.replace('"', '""') + '"'),
                  st.text(st.sampled_from("ab@.é "), max_size=12)).map(lambda text: text.encode("utf-8"))
record = st.lists(value, min_size=1, max_size=4).map(b",".join)
well_formed = st.lists(st.tuples(st.one_of(record, st.just(b"")), st.sampled_from(ENDINGS)), max_size=25).map(
    lambda rows: b"".join(text + ending for text, ending in rows))


def _reference(source, partition: str, snapshot) -> int:
    with source.open_binary(partition) as stream:
        return sum(1 for _ in _csv_records(partition, _peekable(stream), snapshot))


@FUZZ
@given(data=st.one_of(any_bytes, rows_soup, well_formed), delimiter=st.sampled_from([",", ";", "\t", "a"]),
       encoding=encodings, limit=st.one_of(limits, st.builds(ReadLimits, line_bytes=st.integers(4, 60))),
       has_header=st.booleans())
def test_a_partitions_records_are_counted_as_csv_records_reads_them(data, delimiter, encoding, limit, has_header) -> None:
    source, snapshot = snapshots([data], "csv", has_header, None if has_header else ("Email", "Name"), delimiter,
                                 encoding, limit)
    partition = snapshot.partitions[0]
    try:
        expected = _reference(source, partition, snapshot)
    except SnapshotProblem:  # an encoding the listing would refuse: so does the count
        with pytest.raises(SnapshotProblem):
            _records(source, partition, snapshot)
        return
    assert _records(source, partition, snapshot) == expected


@FUZZ
@given(data=well_formed, line_bytes=st.integers(8, 200))
def test_well_formed_rows_are_counted_by_csv_alone_as_csv_records_reads_them(data, line_bytes) -> None:
    """Rows, blank lines, quoted line breaks and quotes, any line ending, near a line limit or well within it: where
    the csv module alone counts them (`_csv_records` not asked), it counts what `_csv_records` reads."""
    source, snapshot = snapshots([data], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=line_bytes))
    partition = snapshot.partitions[0]
    expected = _reference(source, partition, snapshot)
    asked: list[str] = []

    def counted(partition: str, *args, **kwargs):
        asked.append(partition)
        return _csv_records(partition, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows, "_csv_records", counted)
        assert _records(source, partition, snapshot) == expected
    if len(data) * 4 <= line_bytes:
        assert asked == []  # the whole partition within the limit: the csv module's count alone


def test_ordinary_records_are_counted_by_csv_alone(monkeypatch) -> None:
    """Records with quoted line breaks, blank lines and lone CRs, well within the limits: the csv module counts them,
    `_csv_records` is not asked (it takes about a fifth more time a record: README, Benchmarks)."""
    odd = b"\r\n\r\nb@contoso.com,Bo\r\r\nc@contoso.com,\"C\rD\"\n\n"
    source, snapshot = snapshots([ROWS, ROWS + odd], "csv", True, None, ",", "utf-8", ReadLimits())
    expected = sum(_reference(source, partition, snapshot) for partition in snapshot.partitions)
    monkeypatch.setattr(segment_rows, "_csv_records", lambda *args: pytest.fail("the count read record by record"))
    assert rows_at_most(source, snapshot, 100) == expected == 2 * 51 + 2
    small = ReadLimits(line_bytes=60)  # each record within it, the partition far past it
    assert rows_at_most(*snapshots([ROWS], "csv", True, None, ",", "utf-8", small), 10) == 51


@pytest.mark.parametrize(("data", "line_bytes"), [
    (ROWS + b'b@contoso.com,"Bo\n' + b"x" * 30 + b'"\n', 40),  # a record spanning lines past the limit
    (ROWS + b"b@contoso.com," + b"x" * 100 + b"\n", 100),  # a line past the limit
    (ROWS + b'b@x.io,"' + "é".encode() * 20 + b'\nc,C"\n', 40),  # ... in bytes, not in characters, opening a quote
    (ROWS + b'b@contoso.com,"Bo"x\n', 10_000),  # a csv error: `_csv_records` reads the lines after it again
    (b"\xef\xbb", 10_000),  # part of a BOM (read by `_Utf8Lines`)
    (b"\x1f\x8b\x08\x00" + b"a\nb\nc\n", 10_000),  # gzip-compressed: one invalid row, however many line breaks
])
def test_what_csv_alone_could_miscount_is_counted_as_csv_records_reads_it(data: bytes, line_bytes: int) -> None:
    source, snapshot = snapshots([data], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=line_bytes))
    partition = snapshot.partitions[0]
    expected = _reference(source, partition, snapshot)
    assert rows_at_most(source, snapshot, 0) == expected >= sum(1 for _ in read_rows(source, snapshot))


@pytest.mark.parametrize("tail", [b"x" * 4_000_000, b'"' + (b"a" * 800 + b"\n") * 5_000])
def test_a_line_or_a_record_far_past_the_limit_is_never_held_whole(tail: bytes) -> None:
    """Anyone who can write to the container can write a line of any length, or a quote that never closes over any
    number of lines: counted, neither is held in memory whole (as `_csv_records` reads them: past the limit, a piece
    at a time). 4 MB of either here, against a limit of 1,000 bytes."""
    import tracemalloc

    source, snapshot = snapshots([b"Email,Name\n" + tail], "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=1000))
    partition = snapshot.partitions[0]
    tracemalloc.start()
    try:
        counted = _records(source, partition, snapshot)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counted == _reference(source, partition, snapshot)
    assert peak < 1_500_000
