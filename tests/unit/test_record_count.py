"""The record count that proves a run within MAX_PROFILES_PER_EXPORT before it streams (shared/segment_rows.py
`rows_at_most`, `_records`): where the line breaks pass the limit, a partition's records are counted from its bytes by
the csv module's rules (`_scan_records`) while that is sure to find the ones `_csv_records` reads, and as
`_csv_records` reads them otherwise.

Why: the count runs before anything is sent; at a million rows, reading each record as `_csv_records` does was most of
the time to the first write. The reference is `_csv_records` itself: on any bytes (broken quotes, lines and records
near small line limits, lone CRs, BOMs, NULs, compressed data, any encoding), and on well-formed rows, which take the
scan's count (blank lines, quoted line breaks, every line ending), read in blocks of any size (a record, a line, a CRLF
or a BOM cut between two). Never a different count: a lower one could
let a run stream members past the limit.
"""
from __future__ import annotations

import codecs
import csv
import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shared.segment_rows as segment_rows
from shared.segment_rows import _csv_records, _peekable, read_rows, rows_at_most
from shared.snapshots import ReadLimits, SnapshotProblem
from tests.unit.test_segment_fuzz import FUZZ, MemorySource, any_bytes, encodings, limits, snapshots
from tests.unit.test_utf8_lines import rows_soup

ROWS = b"Email,Name\r\n" + b"".join(b'a%d@contoso.com,"Ann\r\n%d"\r\n' % (n, n) for n in range(50))
ENDINGS = [b"\n", b"\r\n", b"\r"]
value = st.one_of(st.text(st.sampled_from("ab@.é,\"\r\n"), max_size=12).map(lambda text: '"' + text.replace('"', '""') + '"'),
                  # a quote inside an unquoted field is a character (csv opens a quoted field only where one begins)
                  st.text(st.sampled_from("ab@.é \""), max_size=12).filter(lambda text: not text.startswith('"'))
                  ).map(lambda text: text.encode("utf-8"))


def well_formed_in(delimiter: bytes) -> st.SearchStrategy[bytes]:
    record = st.lists(value, min_size=1, max_size=4).map(delimiter.join)
    return st.tuples(st.sampled_from([b"", codecs.BOM_UTF8]), st.lists(
        st.tuples(st.one_of(record, st.just(b"")), st.sampled_from(ENDINGS)), max_size=25)).map(
        lambda bom_rows: bom_rows[0] + b"".join(text + ending for text, ending in bom_rows[1]))


well_formed = well_formed_in(b",")


def _reference(source, partition: str, snapshot) -> int:
    with source.open_binary(partition) as stream:
        return sum(1 for _ in _csv_records(partition, _peekable(stream), snapshot))


def _records(source, partition: str, snapshot) -> int:
    """The count `rows_at_most` makes of a partition when its lines pass the limit: its records, the same whether
    counted after its line breaks (in a second download: the partitions counted before it did not show the limit near)
    or in the same download (`_partition_bound`, with the records likely needed), where its lines are a bound too."""
    after = rows_at_most(source, replace(snapshot, partitions=(partition,)), 0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows._Counts, "records_wanted", lambda self: True)
        lines, records, wanted = segment_rows._partition_bound(source, snapshot, segment_rows._Counts(1, 0, True),
                                                               partition)
    if records is None:  # not counted by the scan (not UTF-8, compressed, ...), or it gave up
        records = segment_rows._records(source, snapshot, partition, scan=not wanted)
    data = source.read_bytes(partition)
    assert records == after and lines >= data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + 1
    return after


@FUZZ
@given(data=st.one_of(any_bytes, rows_soup, well_formed), delimiter=st.sampled_from([",", ";", "\t", "a"]),
       encoding=encodings, limit=st.one_of(limits, st.builds(ReadLimits, line_bytes=st.integers(4, 60))),
       has_header=st.booleans(), block=st.one_of(st.integers(1, 9), st.just(segment_rows._SCAN_BLOCK)),
       lines_slice=st.sampled_from([1, 2, 5, segment_rows._LINES_SLICE]))
def test_a_partitions_records_are_counted_as_csv_records_reads_them(data, delimiter, encoding, limit, has_header,
                                                                    block, lines_slice) -> None:
    source, snapshot = snapshots([data], "csv", has_header, None if has_header else ("Email", "Name"), delimiter,
                                 encoding, limit)
    partition = snapshot.partitions[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows, "_SCAN_BLOCK", block)
        patch.setattr(segment_rows, "_LINES_SLICE", lines_slice)
        try:
            expected = _reference(source, partition, snapshot)
        except SnapshotProblem:  # an encoding the listing would refuse: so does the count
            with pytest.raises(SnapshotProblem):
                _records(source, partition, snapshot)
            return
        assert _records(source, partition, snapshot) == expected


@FUZZ
@given(delimited=st.sampled_from(",;\t").flatmap(lambda d: st.tuples(st.just(d), well_formed_in(d.encode()))),
       line_bytes=st.integers(8, 200), block=st.integers(1, 40), field_limit=st.sampled_from([3, 8, 131072]))
def test_well_formed_rows_are_counted_by_the_scan_as_csv_records_reads_them(delimited, line_bytes, block,
                                                                             field_limit) -> None:
    """Rows, blank lines, quoted line breaks and quotes, any line ending, near a line limit or well within it, read in
    blocks of any size, with fields near the csv module's size limit (lowered here): where the scan counts them
    (`_csv_records` not asked), it counts what `_csv_records` reads."""
    delimiter, data = delimited
    source, snapshot = snapshots([data], "csv", True, None, delimiter, "utf-8", ReadLimits(line_bytes=line_bytes))
    partition = snapshot.partitions[0]
    asked: list[str] = []

    def counted(partition: str, *args, **kwargs):
        asked.append(partition)
        return _csv_records(partition, *args, **kwargs)

    before = csv.field_size_limit(field_limit)
    try:
        expected = _reference(source, partition, snapshot)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(segment_rows, "_csv_records", counted)
            patch.setattr(segment_rows, "_SCAN_BLOCK", block)
            assert _records(source, partition, snapshot) == expected
    finally:
        csv.field_size_limit(before)
    if (len(data) * 4 <= min(line_bytes, field_limit)
            and all(line.count(b'"') <= segment_rows._QUOTES_A_LINE for line in data.splitlines())):
        assert asked == []  # the whole partition within the limits, few quotes a line: the scan's count alone


def test_a_quoted_field_past_the_csv_modules_size_limit_over_short_lines_is_counted_as_csv_records_reads_it() -> None:
    """Each of its lines within the limit, the field past it (the csv module's limit lowered to 8 here): csv raises
    there, and `_csv_records` reads the lines after it again; the scan does not count it as one record."""
    data = b'Email,Name\na@contoso.com,"ab\nab\nab\nab"\nb@contoso.com,Bo\n'
    source, snapshot = snapshots([data], "csv", True, None, ",", "utf-8", ReadLimits())
    before = csv.field_size_limit(8)
    try:
        expected = _reference(source, snapshot.partitions[0], snapshot)
        assert _records(source, snapshot.partitions[0], snapshot) == expected != 3
    finally:
        csv.field_size_limit(before)


def test_ordinary_records_are_counted_by_the_scan(monkeypatch) -> None:
    """Records with quoted line breaks, blank lines and lone CRs, well within the limits: the scan counts them,
    `_csv_records` is not asked (it takes about three times as long a record: README, How an export works)."""
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


def test_the_sample_segments_records_are_counted_by_the_scan(tmp_path, monkeypatch) -> None:
    """The sample export (`make sample`, the benchmarks): addresses with quoted line breaks and commas, quotes inside
    unquoted fields, invalid rows. The scan counts every partition as `_csv_records` reads it, with blocks that cut
    records, without being sent back to `_csv_records` (the slow count the benchmark's first write waited for)."""
    from shared.sample_segments import FolderSource, write_sample_export
    from shared.snapshots import list_segments

    write_sample_export(tmp_path, segments={"Big": 3_000}, seed=7, rows_per_partition=700)
    source = FolderSource(tmp_path)
    snapshot = list_segments(source)["Big"][0]
    expected = [_reference(source, partition, snapshot) for partition in snapshot.partitions]
    data = b"".join(source.read_bytes(partition) for partition in snapshot.partitions)
    assert data.count(b'"') > 100 and sum(expected) < data.count(b"\n")  # quoted line breaks (the lines pass the rows)
    monkeypatch.setattr(segment_rows, "_csv_records", lambda *args: pytest.fail("the count read record by record"))
    monkeypatch.setattr(segment_rows, "_SCAN_BLOCK", 4_096)
    assert [_records(source, partition, snapshot) for partition in snapshot.partitions] == expected
    assert sum(expected) == 3_000


def test_partitions_are_counted_a_few_at_once_in_the_callers_context() -> None:
    """A snapshot's partitions are downloaded and counted COUNT_DOWNLOADS at a time (their round trips to storage
    overlap: a partition is a request or more), each in the caller's context (the run's log fields and telemetry).
    Here each download waits for another to be under way: counted one after another, the first waits in vain."""
    import contextvars
    import threading

    run = contextvars.ContextVar("run")
    meeting = threading.Barrier(segment_rows.COUNT_DOWNLOADS, timeout=10)
    contexts: list[str | None] = []
    started = iter(range(segment_rows.COUNT_DOWNLOADS))  # the first ones start together

    class Meeting(MemorySource):
        def open_binary(self, name: str):
            if next(started, None) is not None:
                meeting.wait()
            contexts.append(run.get(None))
            return super().open_binary(name)

    _, snapshot = snapshots([ROWS] * 6, "csv", True, None, ",", "utf-8", ReadLimits())
    source = Meeting(dict.fromkeys(snapshot.partitions, ROWS))
    run.set("run-1")
    assert rows_at_most(source, snapshot, 400) == 6 * 51  # the lines (612) pass it: the records are counted too
    assert len(contexts) >= 7 and set(contexts) == {"run-1"}  # the first to finish found nothing counted before it


class _Opened(MemorySource):
    """Counts the downloads of each partition."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[str] = []

    def open_binary(self, name: str):
        self.opened.append(name)
        return super().open_binary(name)


def test_near_the_limit_a_partitions_records_are_counted_in_the_download_that_counts_its_lines(monkeypatch) -> None:
    """The benchmark's case: a million rows, exactly at MAX_PROFILES_PER_EXPORT, with quoted line breaks, so the line
    breaks pass the limit and the records must be counted. Once the partitions counted so far, scaled to all, show
    the line breaks past the limit, each partition's records are counted as its line breaks are (one download, not
    two): only those counted before that (at most COUNT_DOWNLOADS, started together) are downloaded again."""
    _, snapshot = snapshots([ROWS] * 24, "csv", True, None, ",", "utf-8", ReadLimits())
    source = _Opened(dict.fromkeys(snapshot.partitions, ROWS))
    monkeypatch.setattr(segment_rows, "_csv_records", lambda *args: pytest.fail("the count read record by record"))
    assert rows_at_most(source, snapshot, 24 * 51) == 24 * 51  # 24 x 102 lines
    assert len(source.opened) <= 24 + segment_rows.COUNT_DOWNLOADS
    assert set(source.opened) == set(snapshot.partitions)
    source.opened.clear()
    assert rows_at_most(source, snapshot, 24 * 51 - 1) > 24 * 51 - 1  # past the limit by one record: found


@pytest.mark.parametrize("last", [ROWS, ROWS[:len(ROWS) // 2]])  # a short last partition, as writers leave one
def test_where_the_line_breaks_prove_the_run_only_they_are_counted(monkeypatch, last: bytes) -> None:
    """Where the line breaks prove a run within the limit, even by a few lines, no record is counted: each partition
    is downloaded once, and the scan (dearer than the line breaks where many quotes are) never runs."""
    _, snapshot = snapshots([ROWS] * 23 + [last], "csv", True, None, ",", "utf-8", ReadLimits())
    source = _Opened({**dict.fromkeys(snapshot.partitions, ROWS), snapshot.partitions[-1]: last})
    lines = 23 * 102 + last.count(b"\n") + 1
    monkeypatch.setattr(segment_rows, "_scan_records", lambda *args: pytest.fail("records were counted"))
    assert rows_at_most(source, snapshot, lines) == lines
    assert sorted(source.opened) == sorted(snapshot.partitions)


def test_far_past_the_limit_the_count_stops_soon(monkeypatch) -> None:
    """A snapshot ten times the limit: the count stops once the records scanned pass it, not at the end."""
    _, snapshot = snapshots([ROWS] * 40, "csv", True, None, ",", "utf-8", ReadLimits())
    source = _Opened(dict.fromkeys(snapshot.partitions, ROWS))
    assert rows_at_most(source, snapshot, 4 * 51) > 4 * 51
    assert len(source.opened) <= 4 + 1 + 3 * segment_rows.COUNT_DOWNLOADS


def test_partitions_of_other_sizes_seen_first_set_off_few_record_counts(monkeypatch) -> None:
    """Four large partitions, then twenty small ones, their line breaks exactly at the limit: once a small one is
    counted, the rest are taken to be as small (the lower quartile of those counted), so only the partitions counted
    before that have their records counted for nothing, at most eight whatever the threads' timing (scaling the
    average instead counted seventeen)."""
    small = b"Email,Name\r\n" + b"".join(b'a%d@contoso.com,"Ann\r\n%d"\r\n' % (n, n) for n in range(12))
    _, snapshot = snapshots([ROWS] * 4 + [small] * 20, "csv", True, None, ",", "utf-8", ReadLimits())
    source = _Opened({name: ROWS if n < 4 else small for n, name in enumerate(snapshot.partitions)})
    scans: list[int] = []
    scan = segment_rows._scan_records
    monkeypatch.setattr(segment_rows, "_scan_records", lambda *args: scans.append(1) or scan(*args))
    lines = 4 * 102 + 20 * 26
    assert rows_at_most(source, snapshot, lines) == lines
    # the large ones counted after the first of them (3), and the small ones started before two of them are counted
    assert len(scans) <= 2 * segment_rows.COUNT_DOWNLOADS


def test_an_empty_partition_does_not_stop_the_records_being_counted_in_one_download() -> None:
    """A header-only partition among full ones (an export's empty partition): the guess goes by the lower quartile
    of the partitions counted, not the smallest, so the rest are still counted in one download each."""
    _, snapshot = snapshots([ROWS] + [b"Email,Name\r\n"] + [ROWS] * 22, "csv", True, None, ",", "utf-8", ReadLimits())
    source = _Opened({name: b"Email,Name\r\n" if n == 1 else ROWS for n, name in enumerate(snapshot.partitions)})
    assert rows_at_most(source, snapshot, 23 * 51 + 1) == 23 * 51 + 1
    assert len(source.opened) <= 24 + segment_rows.COUNT_DOWNLOADS


def test_partitions_the_scan_cannot_read_are_downloaded_at_most_twice_near_the_limit() -> None:
    """Windows-1252 (the scan reads UTF-8 only): where the records are wanted, such a partition is counted by
    `_csv_records` in its second download, not first opened again only to be found unscannable."""
    _, snapshot = snapshots([ROWS] * 24, "csv", True, None, ",", "cp1252", ReadLimits())
    source = _Opened(dict.fromkeys(snapshot.partitions, ROWS))
    assert rows_at_most(source, snapshot, 24 * 51) == 24 * 51
    assert len(source.opened) <= 2 * 24 + segment_rows.COUNT_DOWNLOADS


@FUZZ
@given(partitions=st.lists(st.one_of(any_bytes, rows_soup, well_formed), min_size=1, max_size=5),
       block=st.one_of(st.integers(1, 9), st.just(segment_rows._SCAN_BLOCK)), line_bytes=st.integers(4, 200),
       wanted=st.lists(st.booleans(), min_size=1, max_size=5), near=st.integers(-2, 2))
def test_several_partitions_are_bounded_as_planning_reads_them(partitions, block, line_bytes, wanted, near) -> None:
    """Several partitions, each counted in one download (records wanted) or two, in any mix (one at a time, so that
    each example answers alike when replayed): the bound is never below the rows planning reads when within the
    limit, and proves the run whenever the records are within it."""
    source, snapshot = snapshots(partitions, "csv", True, None, ",", "utf-8", ReadLimits(line_bytes=line_bytes))
    rows = sum(1 for _ in read_rows(source, snapshot))
    records = sum(_reference(source, partition, snapshot) for partition in snapshot.partitions)
    limit = max(0, records + near)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment_rows, "_SCAN_BLOCK", block)
        answers = itertools.cycle(wanted)
        patch.setattr(segment_rows._Counts, "records_wanted", lambda self: next(answers))
        patch.setattr(segment_rows, "COUNT_DOWNLOADS", 1)
        bound = rows_at_most(source, snapshot, limit)
    assert bound > limit or bound >= rows
    assert (bound <= limit) == (records <= limit)


def test_a_record_of_many_short_lines_within_the_limits_is_counted_in_little_memory() -> None:
    """A record of eight quoted fields of 65,000 short lines each, within every limit (1 MB): counted by the scan
    without making an object of each of its lines at once (41.5 MB at its peak when it did, about 5 MB now)."""
    import tracemalloc

    field = b'"' + b"a\n" * 65_000 + b'"'
    source, snapshot = snapshots([b",".join([field] * 8) + b"\n"], "csv", False, ("Email", "Name"), ",", "utf-8",
                                 ReadLimits(line_bytes=2_000_000))
    tracemalloc.start()
    try:
        counted = rows_at_most(source, snapshot, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counted == _reference(source, snapshot.partitions[0], snapshot) == 1
    assert peak < 8_000_000


def test_rows_whose_every_field_is_quoted_are_counted_as_csv_records_reads_them(monkeypatch) -> None:
    """Past _QUOTES_A_LINE quotes a line the scan's walk costs more than `_csv_records` (about 9 against 3.4 us a row
    of nine quoted fields): such a block is counted by `_csv_records`, and within the limit by the line breaks alone."""
    row = ",".join(f'"v{n}"' for n in range(9)).encode()
    data = b"".join(row + b"\r\n" for _ in range(50))
    source, snapshot = snapshots([data], "csv", False, tuple(f"c{n}" for n in range(9)), ",", "utf-8", ReadLimits())
    asked: list[str] = []
    real = segment_rows._csv_records
    monkeypatch.setattr(segment_rows, "_csv_records",
                        lambda partition, *a, **k: asked.append(partition) or real(partition, *a, **k))
    assert rows_at_most(source, snapshot, 100) == 51 and asked == []  # the line breaks (50 + 1) prove it
    assert rows_at_most(source, snapshot, 0) == 50 and asked == list(snapshot.partitions)
    # Many partitions, near the limit (its line breaks past it by more than a partition's): the scan gives up on each
    # in the download that counts its line breaks, and is not tried again on it: `_csv_records` reads each once, in a
    # second download (a third for the few partitions counted before the limit looked near).
    _, many = snapshots([data] * 12, "csv", False, snapshot.columns, ",", "utf-8", ReadLimits())
    source = _Opened(dict.fromkeys(many.partitions, data))
    asked.clear()
    assert rows_at_most(source, many, 11 * 50) == 12 * 50  # the records pass it only at the last partition
    assert sorted(asked) == sorted(many.partitions) and len(source.opened) <= 2 * 12 + segment_rows.COUNT_DOWNLOADS
