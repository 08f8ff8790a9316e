"""Rows of a snapshot, streamed partition by partition, with unreadable rows reported instead of failing the file.

One bad row must not stop a 1M-row export, and every row must be accounted for: a row that cannot
be read comes out as a SourceRow with `values=None` and an `error` that says what to fix.
CSV is read with the csv module, a line at a time (UTF-8 with or without BOM, CRLF, LF or a lone CR, quoted
commas, quotes and line breaks), through io.TextIOWrapper; where a memo may know rows (a refresh), UTF-8 is split
from the bytes by the wrapper's rules instead (`_Utf8Lines`), so that known rows are looked up undecoded. Bytes
that are not valid in the encoding are kept as surrogate escapes so that only the rows carrying them are flagged.
JSONL must be UTF-8; nested values come out as JSON text, null as "".

Nothing in a partition is trusted (anyone who can write to the container can write anything), so reading is
bounded and every failure stays with its row:
- a line longer than SEGMENT_MAX_LINE_BYTES is one invalid row, and is skipped without ever being held whole;
- a row with more than SEGMENT_MAX_FIELDS fields, or a JSONL row nested deeper than SEGMENT_MAX_JSON_DEPTH, is
  one invalid row; so is a row holding a NUL (a binary or UTF-16 file);
- a quote that is never closed makes its own row invalid, and reading goes on with the line after it (the csv
  module alone would swallow every following line into that one field);
- a compressed partition (gzip, zip, ...) is one invalid row saying so; its bytes are not read.
The only exception the readers raise for what a file holds is SnapshotProblem, naming the file: an unknown
encoding on a Snapshot built by hand, and, from `snapshot_columns`, a header (or first JSON object) that cannot be
used. Its message never holds a value from a row, so it can be logged.
"""
from __future__ import annotations

import bisect
import codecs
import contextvars
import csv
import io
import json
import threading
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import BinaryIO, Callable, Iterator, Literal, NamedTuple, Protocol, Sequence, TypeVar, overload

from xxhash import xxh3_64_intdigest

from shared.row_memo import row_digest
from shared.snapshots import BlobSource, ReadLimits, Snapshot, SnapshotProblem, encoding_problem, json_too_deep

QUOTING_HINT = "check quoting of commas and line breaks"
UTF8_HINT = "save the file as UTF-8"
SKIP_CHUNK = 1 << 16  # how much of an over-long line is read at a time while skipping it
SKIM_BLOCK = 1 << 16  # bytes cut into lines and looked up together while known rows are passed over (`_Utf8Lines.skim`)
COLUMN_PROBE_ROWS = 1000  # rows of a JSONL snapshot looked at for its first object (snapshot_columns)
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
               (b"(\xb5/\xfd", "zstd"))
_ESCAPE = "shared.segment_rows.escape"


def _escape(error: UnicodeError) -> tuple[str | bytes, int]:
    """Like surrogateescape, also for bytes below 0x80 (which other codecs can reject): byte b <-> U+DC00 + b."""
    if isinstance(error, UnicodeDecodeError):
        return "".join(chr(0xDC00 + byte) for byte in error.object[error.start:error.end]), error.end
    if isinstance(error, UnicodeEncodeError):
        chars = error.object[error.start:error.end]
        if all(0xDC00 <= ord(char) <= 0xDCFF for char in chars):
            return bytes(ord(char) - 0xDC00 for char in chars), error.end
    raise error


codecs.register_error(_ESCAPE, _escape)


@dataclass(slots=True)  # not frozen: a frozen dataclass takes five times as long to make, and there is one per row
class SourceRow:
    """One data row as read, traceable to its partition and row number."""

    partition: str
    row: int  # 1-based data row number within the partition (header not counted)
    values: dict[str, str] | None  # None when the row is unreadable, or known
    error: str | None  # why unreadable, naming what to fix
    digest: int = 0  # with `digests`: the record's digest (shared/row_memo.py), 0 when it has none
    # A run of consecutive rows `digests` knows, not parsed (values and error are None): rows `row` to
    # `row + len(known) - 1`, by what `digests.entry` answered for each (one SourceRow for a run: most of a refresh)
    known: array | None = None


class RowDigests(Protocol):
    """What a planning run asks of a CSV snapshot's records (shared/row_memo.py): their digest, and whether it knows
    one already (by an entry of its own, a non-negative int), so that such a record is handed over unparsed."""

    def seed(self, columns: list[str], delimiter: str, most_fields: int) -> int: ...
    def entry(self, digest: int) -> int | None: ...
    def may_know(self) -> bool:
        """Whether `entry` may know a row of the partition about to be read (False: each is read in full)."""


def read_rows(source: BlobSource, snapshot: Snapshot, digests: RowDigests | None = None) -> Iterator[SourceRow]:
    """Every row of every partition in read order; never more than one partition buffer in memory. With `digests`,
    each CSV row carries its digest, and rows whose digest `digests` knows come unparsed, consecutive ones as one
    SourceRow whose `known` holds their entries (JSONL rows carry none)."""
    for partition in snapshot.partitions:
        with source.open_binary(partition) as stream:
            if snapshot.format == "jsonl":
                yield from _jsonl_rows(partition, _peekable(stream), snapshot)
            else:
                yield from _csv_rows(partition, _peekable(stream), snapshot, digests)


def rows_at_most(source: BlobSource, snapshot: Snapshot, limit: int) -> int:
    """An upper bound of the rows `read_rows` yields when it is within `limit` (any number past it otherwise), so a
    run knows it is within MAX_PROFILES_PER_EXPORT before it sends anything while it reads: the line breaks, counted
    in C a block at a time. When those pass `limit` (a CSV field may hold line breaks), the CSV records (`_records`:
    slower). COUNT_DOWNLOADS partitions at once; where the limit looks near (`_Counts.records_wanted`), a partition's
    records are counted in the same download as its line breaks, so that most partitions are read once, not twice."""
    pool = ThreadPoolExecutor(max_workers=COUNT_DOWNLOADS)
    try:
        counts = _Counts(len(snapshot.partitions), limit, snapshot.format == "csv")
        bounds: list[_Bound] = []
        for bound in _each(pool, partial(_partition_bound, source, snapshot, counts), snapshot.partitions):
            bounds.append(bound)
            if counts.scanned > limit:  # the records scanned so far pass it already
                return counts.scanned
        lines = sum(bound.lines for bound in bounds)
        if lines <= limit or snapshot.format != "csv":
            return lines

        def counted_again(left: tuple[str, _Bound]) -> int:
            partition, bound = left
            return _records(source, snapshot, partition, scan=not bound.wanted)

        records = counts.scanned
        for counted in _each(pool, counted_again, [(partition, bound) for partition, bound
                                                   in zip(snapshot.partitions, bounds) if bound.records is None]):
            records += counted
            if records > limit:
                break
        return records
    finally:  # past the limit, or a partition that cannot be read: no more downloads, and none waited for
        pool.shutdown(wait=False, cancel_futures=True)


COUNT_DOWNLOADS = 4  # the downloads' round trips overlap (a partition's counting holds the interpreter lock)
_T = TypeVar("_T")
_P = TypeVar("_P")


def _each(pool: ThreadPoolExecutor, count: Callable[[_P], _T], partitions: Sequence[_P]) -> Iterator[_T]:
    """`count` of each partition, in order, run on `pool` in the caller's context (its log fields, its telemetry)."""
    return (future.result() for future in [pool.submit(contextvars.copy_context().run, count, partition)
                                           for partition in partitions])


def _line_breaks(stream: BinaryIO) -> int:
    """\n, and \r not followed by \n (one split across two blocks counts twice: a bound may be high, never low)."""
    count = 0
    for block in iter(lambda: stream.read(_SCAN_BLOCK), b""):
        count += _breaks(block)
    return count


def _breaks(block: bytes) -> int:
    return block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")


class _NotPlain(Exception):
    """A record `_scan_records` might count otherwise than `_csv_records` reads it."""


class _Bound(NamedTuple):
    """What one download of a partition counted: its lines (a bound), and its records when the scan counted them."""

    lines: int
    records: int | None
    wanted: bool  # its records were wanted: with `records` None, the scan gave up or cannot read it (`_csv_records`)


class _Counts:
    """The partitions `rows_at_most` counted so far, shared by its downloads."""

    def __init__(self, partitions: int, limit: int, csv_format: bool) -> None:
        self._partitions, self._limit, self._csv = partitions, limit, csv_format
        self._lines = 0
        self._sizes: list[int] = []  # the lines of each partition counted, in order of size (the largest last)
        self._lock = threading.Lock()
        self.scanned = 0  # the records of the partitions the scan counted

    def records_wanted(self) -> bool:
        """Whether the next partition's records are worth counting as its line breaks are, a guess that decides only
        what a download counts: the line breaks so far, with each partition still to count as small as the lower
        quartile of those counted (an empty one does not count for the rest), pass the limit by more than the largest
        partition's (so neither a short last partition nor sizes that vary set it off where the line breaks alone would
        prove the run; partitions counted largest first can), and the records scanned do not pass it yet. A partition
        in an encoding no reader knows may then fail here rather than when planning reads it: either way the run does
        not stream."""
        with self._lock:
            sizes = self._sizes
            return (self._csv and bool(sizes) and self.scanned <= self._limit and
                    self._lines + (self._partitions - len(sizes)) * sizes[len(sizes) // 4] - sizes[-1] > self._limit)

    def add(self, bound: _Bound) -> None:
        with self._lock:
            self._lines += bound.lines
            bisect.insort(self._sizes, bound.lines)
            self.scanned += bound.records or 0


class _Counted:
    """A stream whose line breaks are counted as they are read, as `_line_breaks` counts them."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.breaks = 0

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        self.breaks += _breaks(block)
        return block


def _partition_bound(source: BlobSource, snapshot: Snapshot, counts: _Counts, partition: str) -> _Bound:
    """The partition's lines, and its records where `counts` wants them and the scan counts them."""
    with source.open_binary(partition) as stream:
        wanted = counts.records_wanted()
        if wanted:
            stream = _peekable(stream)
        if wanted and _scannable(stream, snapshot, partition):
            counted = _Counted(stream)
            records = _scan(counted, snapshot)
            bound = _Bound(counted.breaks + _line_breaks(stream) + 1, records, True)
        else:
            bound = _Bound(_line_breaks(stream) + 1, None, wanted)
    counts.add(bound)
    return bound


def _scannable(stream: BinaryIO, snapshot: Snapshot, partition: str) -> bool:
    """Whether `_scan_records` may count the partition: UTF-8 that `_csv_records` reads through io.TextIOWrapper,
    with a delimiter of one byte that is no quote or line break."""
    delimiter = snapshot.delimiter.encode("utf-8")
    return (not _compressed(stream) and _utf8(snapshot, partition) and not _part_of_bom(stream)
            and len(delimiter) == 1 and delimiter not in b'"\r\n')


def _scan(stream: BinaryIO, snapshot: Snapshot) -> int | None:
    """`_scan_records` of a scannable partition, or None where it gave up."""
    try:
        return _scan_records(stream, snapshot.delimiter.encode("utf-8"), snapshot.limits.line_bytes)
    except _NotPlain:
        return None


def _records(source: BlobSource, snapshot: Snapshot, partition: str, scan: bool = True) -> int:
    """The records `_csv_records` yields for a CSV partition: where it reads UTF-8 through io.TextIOWrapper, counted
    from the bytes by the csv module's own rules (`_scan_records`) while those are sure to find the same ones (unless
    not `scan`: it gave up on this partition already); at the first doubt, or for anything else, counted again from the
    partition's start as `_csv_records` reads it (its rules for broken rows give more records): such a partition is
    read once more."""
    if scan:
        with source.open_binary(partition) as opened:
            stream = _peekable(opened)
            records = _scan(stream, snapshot) if _scannable(stream, snapshot, partition) else None
        if records is not None:
            return records
    with source.open_binary(partition) as stream:
        return sum(1 for _ in _csv_records(partition, _peekable(stream), snapshot))


_SCAN_BLOCK = 1 << 18
_BLANK = frozenset((b"\n", b"\r\n", b"\r"))


def _scan_records(stream: BinaryIO, delimiter: bytes, limit: int) -> int:
    """The records csv.reader(strict=True) finds in a UTF-8 partition read as `_csv_records` reads it (a line ends at
    LF, CRLF or a lone CR; a blank line is no record), about three times faster than the csv module at about one
    quote a line: every line not blank, less those that begin inside a quoted field (`_inside_quotes`). UTF-8 never
    puts a quote, the delimiter (ASCII), CR or LF inside a character, so the bytes split as the text does. _NotPlain
    where `_csv_records` may read other records: a line past `limit` bytes, a record spanning lines past it, a field past
    the csv module's size limit (each counted in bytes: a little early), or a csv error; and where a block has more
    than _QUOTES_A_LINE quotes a line (every field quoted), which `_csv_records` counts faster. Read _SCAN_BLOCK bytes
    at a time, cut at a line break: never more than a block and `limit` bytes held, and no more than _LINES_SLICE
    bytes of them as one object a line (`_line_counts`)."""
    fields = csv.field_size_limit()
    count = 0
    carry = stream.read(len(_BOM)).removeprefix(_BOM)  # as the utf-8-sig codec drops it
    while True:
        block = stream.read(_SCAN_BLOCK)
        data = carry + block if carry else block
        cut = len(data)
        if block:  # the last line may go on in the next block (a CR there may be a CRLF's)
            cut = _whole_lines(data)
        data, carry = data[:cut], data[cut:]
        lines, filled, longest = _line_counts(data)
        if len(carry) > limit or longest > min(limit, fields):
            raise _NotPlain  # a line past the limit (`_csv_records` reads past it), or maybe a field past csv's
        if data.count(b'"') > _QUOTES_A_LINE * lines:
            raise _NotPlain  # a quote walked costs about 0.5 us: past this many a line, `_csv_records` is cheaper
        inside, going_on = _inside_quotes(data, lines, longest, delimiter, limit, fields)
        count += filled - inside
        if going_on < len(data):  # a record going on past the block: counted with the next
            if not block:
                raise _NotPlain  # a quote not closed at the end (csv: "unexpected end of data")
            tail = data[going_on:]
            if len(tail) > limit:
                raise _NotPlain
            count -= _line_counts(tail)[1]
            carry = tail + carry
        if not block:
            return count


_LINES_SLICE = 1 << 16
_QUOTES_A_LINE = 6


def _line_counts(data: bytes) -> tuple[int, int, int]:
    """(lines, lines that are not blank, the longest line's bytes) of `data`, cut at line breaks into slices of about
    _LINES_SLICE bytes, so that a block of very short lines never becomes a million objects at once."""
    lines = filled = longest = start = 0
    while start < len(data):
        at = start + _LINES_SLICE
        end = _line_end(data, at, len(data))  # the end of the line holding data[at]: never inside a CRLF
        part = data[start:end].splitlines(keepends=True)
        lines += len(part)
        filled += len(part) - sum(map(part.count, _BLANK))
        longest = max(longest, *map(len, part))
        start = end
    return lines, filled, longest


def _inside_quotes(data: bytes, lines: int, longest: int, delimiter: bytes, limit: int, fields: int) -> tuple[int, int]:
    """The lines of `data` (`lines` whole lines, none longer than `longest` bytes) that begin inside a quoted field
    and are not blank, as csv.reader(strict=True) reads them, and where a record that goes on past `data` begins
    (len(data) if none does). A quote opens a quoted
    field only where a field begins (at a line's start or after the delimiter, outside any quoted field); elsewhere it
    is a character. _NotPlain where csv raises (a closing quote followed by anything but the delimiter or the line's
    end), where a quoted field passes `fields` bytes, or a record spanning lines passes `limit` bytes."""
    find, starts, ends = data.find, (delimiter[0], 10, 13), {delimiter, b"\r", b"\n", b""}  # 10, 13: LF, CR
    lone_cr = b"\r" in data and lines != data.count(b"\n") + (data[-1:] not in (b"\n", b"\r"))  # else breaks are LFs
    inside = at = 0
    span = (0, 0)  # the last record with a quoted line break: its start, and the end of its last line so far
    before = 0  # `inside` before that record
    while True:
        quote = find(b'"', at)
        if quote < 0:
            return inside, len(data)
        if quote and data[quote - 1] not in starts:  # inside an unquoted field
            at = quote + 1
            continue
        close = find(b'"', quote + 1)
        while close >= 0 and data[close + 1:close + 2] == b'"':  # an escaped quote
            close = find(b'"', close + 2)
        if close < 0:  # its record's lines are counted with the next block
            return (before, span[0]) if quote < span[1] else (inside, _line_start(data, quote, longest))
        if data[close + 1:close + 2] not in ends or close - quote > fields:
            raise _NotPlain  # csv (strict): the delimiter expected after the closing quote; or a field past its limit
        if find(b"\n", quote, close) >= 0 or (lone_cr and find(b"\r", quote, close) >= 0):  # a quoted line break
            if quote >= span[1]:  # in a record of its own
                span, before = (_line_start(data, quote, longest), 0), inside
            # the field's last line break begins the line of its closing quote; the lines between its first and its
            # last line break may be blank ones
            field = data[quote + 1:close]
            inside += 1 + _line_counts(field[_line_end(field, 0, longest):_line_start(field, len(field), longest)])[1]
            span = (span[0], _line_end(data, close, longest))
            if span[1] - span[0] > limit:
                raise _NotPlain
        at = close + 1


def _line_start(data: bytes, at: int, longest: int) -> int:
    """Where the line holding data[at] begins (after the line break before it), in `data` of lines no longer than
    `longest` bytes: searched no further back than that."""
    floor = max(0, at - longest)
    return max(data.rfind(b"\n", floor, at), data.rfind(b"\r", floor, at)) + 1


def _line_end(data: bytes, at: int, longest: int) -> int:
    """Where the line holding data[at] ends (after its line break), searched no further on than `longest` bytes."""
    ceiling = min(len(data), at + longest)
    lf = data.find(b"\n", at, ceiling)
    cr = data.find(b"\r", at, ceiling if lf < 0 else lf)  # a CR before the LF, if any
    if cr < 0:
        return len(data) if lf < 0 else lf + 1
    return cr + 2 if data[cr + 1:cr + 2] == b"\n" else cr + 1


def snapshot_columns(source: BlobSource, snapshot: Snapshot) -> tuple[str, ...]:
    """Columns a mapping can name: the first header (or JSON object) found, else model.json's columns.

    SnapshotProblem, naming the file, when the header cannot be used (too long, too many columns, not text, a
    column named twice, compressed...) or none of the first COLUMN_PROBE_ROWS rows of a JSONL snapshot is an object.
    """
    if snapshot.format == "jsonl":
        first_error: SourceRow | None = None
        for seen, row in enumerate(read_rows(source, snapshot), start=1):
            if row.values is not None:
                return tuple(row.values)
            first_error = first_error or row
            if seen >= COLUMN_PROBE_ROWS:
                break
        if first_error is not None:
            raise SnapshotProblem(first_error.partition, f"none of the first {seen:,} rows is a readable JSON object "
                                                         f"(row {first_error.row} {first_error.error})")
    elif snapshot.has_header:
        for partition in snapshot.partitions:
            with source.open_binary(partition) as stream:
                for line, fields, error, *_ in _csv_records(partition, _peekable(stream), snapshot):
                    if error is not None:
                        raise SnapshotProblem(partition, f"the header row {error}")
                    columns = [field.strip() for field in fields]
                    problem = _header_problem(columns, snapshot.limits)
                    if problem:
                        raise SnapshotProblem(partition, f"{problem} (line {line})")
                    return tuple(columns)
    return snapshot.columns or ()


def _peekable(stream: BinaryIO) -> BinaryIO:
    return stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]


def _compressed(stream: BinaryIO) -> str | None:
    """The compression a partition's first bytes show (gzip, zip, ...), or None; nothing is consumed."""
    head = stream.peek(8)[:8]  # type: ignore[attr-defined]
    return next((kind for magic, kind in _COMPRESSED if head.startswith(magic)), None)


def _compressed_error(kind: str) -> str:
    return f"is {kind}-compressed data, not text (line 1): upload the file uncompressed"


def _too_long(line: int, limits: ReadLimits) -> str:
    return (f"is longer than SEGMENT_MAX_LINE_BYTES ({limits.line_bytes:,} bytes) (line {line}); it was skipped "
            "unread: check that the file is a segment export, or raise the setting")


def _text(stream: BinaryIO, snapshot: Snapshot, partition: str, skims: bool) -> io.TextIOWrapper | _Utf8Lines:
    """The partition's text. A UTF-8 one is split from its bytes (`_Utf8Lines`) where known rows may be passed over
    undecoded (`skims`), else read through io.TextIOWrapper, which decodes every row faster; both give the same lines,
    but for a partition of only part of a BOM, which `_Utf8Lines` always reads (so a run reads it as a refresh does)."""
    if _utf8(snapshot, partition):
        if skims or _part_of_bom(stream):
            return _Utf8Lines(stream)
        # surrogateescape is the codec's own fast path
        return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    return io.TextIOWrapper(stream, encoding=codecs.lookup(snapshot.encoding).name, errors=_ESCAPE, newline="")


def _utf8(snapshot: Snapshot, partition: str) -> bool:
    """Whether the partition is read as UTF-8 (SnapshotProblem, naming it, for an encoding it cannot be read in)."""
    problem = encoding_problem(snapshot.encoding)
    if problem:
        raise SnapshotProblem(partition, problem)
    return codecs.lookup(snapshot.encoding).name in ("utf-8", "utf-8-sig")


def _part_of_bom(stream: BinaryIO) -> bool:
    """A partition of only the first one or two bytes of a BOM (see `_Utf8Lines`)."""
    head = stream.peek(len(_BOM))[:len(_BOM)]  # type: ignore[attr-defined]
    return bool(head) and head != _BOM and _BOM.startswith(head)


_BOM = codecs.BOM_UTF8


class _Utf8Lines:
    """A UTF-8 partition's lines as io.TextIOWrapper(encoding="utf-8-sig", errors="surrogateescape", newline="")
    reads them (a BOM is not part of the first column's name; a line ends at LF, CRLF or a lone CR), split from the
    bytes by the same rules, and each one to be had as its bytes (`readline(size, False)`): a refresh looks up most
    rows by their digest alone, without decoding them. `size` counts bytes, not characters: the same lines come out
    whole (a line is cut only past SEGMENT_MAX_LINE_BYTES, and such a line is read past). UTF-8 never puts an ASCII
    byte (CR, LF) inside a character, so a line decodes alone as the stream would. One difference: a partition of
    only the first one or two bytes of a BOM, which the wrapper drops without a word, is one line of invalid bytes."""

    encoding = "utf-8-sig"

    def __init__(self, stream: BinaryIO) -> None:
        self._read = stream.readline
        self._read_block = stream.read
        self._ahead = b""  # bytes read, served from `_at` on: the first line, a block cut at a lone CR or by `skim`
        self._at = 0
        self._start = True
        self._split: list[bytes] = []  # lines `skim` cut from a block (each with its line break), served from `_next` on
        self._entries: list[int | None] = []  # ... and what `known` answered for each
        self._next = 0

    @overload
    def readline(self, size: int, decoded: Literal[True] = ...) -> str: ...
    @overload
    def readline(self, size: int, decoded: Literal[False]) -> bytes: ...
    @overload
    def readline(self, size: int, decoded: bool) -> str | bytes: ...

    def readline(self, size: int, decoded: bool = True) -> str | bytes:
        """The next line, at most `size` (>= 1) bytes of it: up to and including its line break, if any; its bytes
        when not `decoded` (one method for both: planning asks it of every line, and a second Python call would cost
        more than the decoding it saves)."""
        if self._next < len(self._split):  # cut by `skim`: before any byte of `_ahead`
            line = self._split[self._next]
            if len(line) <= size:
                self._next += 1
                return line.decode("utf-8", "surrogateescape") if decoded else line
            self._unsplit()
        if self._at < len(self._ahead) or self._start:
            line = self._from_ahead(size)
        else:
            line = self._read(size)
            cr = line.find(b"\r")
            if cr != -1 and cr != len(line) - 1 and (cr != len(line) - 2 or line[-1] != 0x0A):
                self._ahead, self._at = line, 0  # a lone CR ends a line in it: its lines are served from there
                line = self._from_ahead(size)
        return line.decode("utf-8", "surrogateescape") if decoded else line

    def _from_ahead(self, size: int) -> bytes:
        """`readline`'s line, from the bytes read ahead: those of one `readline` (or the end of one before it), where an
        LF can only be the last byte, or what `skim` left of a block (from an over-long line on, a block's unfinished
        last line, or bytes holding no whole line), looked through no further than `size` bytes, a block's length at
        most."""
        if self._start:
            self._start = False
            first = self._read(size + len(_BOM))
            self._ahead, self._at = first, len(_BOM) if first.startswith(_BOM) else 0
        while True:
            ahead, at = self._ahead, self._at
            limit = at + size
            end = min(len(ahead), limit)
            cr = ahead.find(b"\r", at, end)
            lf = ahead.find(b"\n", at, end if cr == -1 else cr)
            if lf != -1:
                stop = lf + 1
            elif cr != -1 and (cr + 1 < len(ahead) or cr + 1 == limit):  # what follows the CR is known, or not needed
                stop = cr + 2 if cr + 1 < len(ahead) and ahead[cr + 1] == 0x0A else cr + 1
            elif cr == -1 and end == limit:  # no line break within `size` bytes
                stop = limit
            else:  # what was read ahead ends inside its line (or with a CR): read on
                more = self._read(limit - len(ahead))
                if more:
                    self._ahead, self._at = ahead[at:] + more, 0
                    continue
                stop = len(ahead)
            self._at = stop = min(stop, limit)
            return ahead[at:stop]

    def skim(self, size: int, known: Callable[[int], int | None], seed: int, hits: array, most: int) -> tuple[int, str | None]:
        """Pass over the lines (of at most `size` - 1 bytes) whose row digest `known` knows, adding its entries to `hits`
        while it holds fewer than `most`: how many, and the first line that is not one, decoded (None at the end). A
        known row's text is valid UTF-8 (a row holding bytes that are not is invalid, and a memo has no entry of it),
        so its bytes are those its digest was made of (`row_digest`, written out: a refresh asks it of most rows).

        The lines are cut from blocks of SKIM_BLOCK bytes and looked up a block at a time, with no Python step per
        line (one a line was most of a refresh's reading). A block's unfinished last line is carried into the next
        block; a line too long, and the bytes read ahead when none is whole, are read a line at a time."""
        passed = 0
        while len(hits) < most:
            if self._next >= len(self._split) and not self._cut(size, known, seed):
                line = self.readline(size, False)  # one too long for a block, or the last one, unended
                if not line:
                    return passed, None
                if len(line) >= size:
                    return passed, line.decode("utf-8", "surrogateescape")
                self._split, self._next = [line], 0
                self._entries = _looked_up(self._split, known, seed)
            entries, first = self._entries, self._next
            stop = min(len(entries), first + most - len(hits))
            try:
                last = entries.index(None, first, stop)
            except ValueError:
                last = stop
            hits.extend(entries[first:last])  # type: ignore[arg-type]
            passed += last - first
            self._next = last
            if last < stop:  # not known: handed back (and its lines after it served by `readline`)
                self._next += 1
                return passed, self._split[last].decode("utf-8", "surrogateescape")
        return passed, None

    def _cut(self, size: int, known: Callable[[int], int | None], seed: int) -> bool:
        """Cut the bytes read ahead, or else the next block, into lines (by `readline`'s rules: LF, CRLF or a lone CR
        ends one) up to the first line of `size` bytes or more, and look them all up; False, leaving the bytes to
        `readline`, when the first is such a line or none is whole."""
        if self._start:
            return False
        data = self._ahead[self._at:]
        end = _whole_lines(data)
        if not end:  # a line's beginning, or nothing: with the next block
            data += self._read_block(SKIM_BLOCK)
            end = _whole_lines(data)
        lines = data[:end].splitlines(True)
        # a line of `size` bytes or more (only where as many were cut) is read past by `readline`'s caller, and the
        # lines after it are cut again
        if end >= size and max(lengths := list(map(len, lines))) >= size:
            lines = lines[:next(n for n, length in enumerate(lengths) if length >= size)]
            end = sum(lengths[:len(lines)])
        self._ahead, self._at = data, end
        if not lines:
            return False
        self._split, self._next = lines, 0
        self._entries = _looked_up(lines, known, seed)
        return True

    def _unsplit(self) -> None:
        """Give the lines cut and not served back to the bytes (`readline` asked for fewer bytes than one holds)."""
        self._ahead, self._at = b"".join([*self._split[self._next:], self._ahead[self._at:]]), 0
        self._split, self._entries, self._next = [], [], 0


def _looked_up(lines: list[bytes], known: Callable[[int], int | None], seed: int) -> list[int | None]:
    """What `known` answers for each line's row digest (`row_digest` written out for bytes: its text without the line
    break), with no Python step a line."""
    return list(map(known, map(xxh3_64_intdigest, map(bytes.rstrip, lines, repeat(b"\r\n")), repeat(seed))))


def _whole_lines(data: bytes) -> int:
    """How many of `data`'s bytes are whole lines: up to its last LF, or its last CR but for a CR last (which may be
    the first half of a CRLF)."""
    return max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1


def _text_problem(texts: list[str]) -> str | None:
    """"nul" when a text holds a NUL, "bytes" when one holds surrogate escapes (bytes the encoding could not
    decode, or a JSON \\u escape that is no character), else None."""
    joined = "".join(texts)
    if "\x00" in joined:
        return "nul"
    if joined.isascii():
        return None
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return "bytes"
    return None


def _header_problem(header: list[str], limits: ReadLimits) -> str | None:
    """What makes a header unusable. The message names columns by number, never by name: a headerless plain CSV makes
    its first data row the header (names may be personal data), and a name can be as long as the line, while the
    message is logged, and repeated on every row of the partition in the errors report."""
    if len(header) > limits.fields:
        return f"the header row has {len(header):,} columns, more than SEGMENT_MAX_FIELDS ({limits.fields:,})"
    problem = _text_problem(header)
    if problem == "nul":
        return "the header row holds a NUL byte; the file looks binary or UTF-16: save it as UTF-8 text"
    if problem:
        return f"the header row has bytes that are not valid text ({UTF8_HINT})"
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen:
            return f"the header row gives columns {seen[name]} and {number} the same name; give each column its own name"
        seen[name] = number
    return None


class _Oversize(Exception):
    """The next line is longer than the limit (it was skipped)."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


@dataclass(slots=True)
class _Lookup:
    """How a partition's records are looked up: `seed` is set once its columns are known (after the header)."""

    entry: Callable[[int], "int | None"]
    seed: int | None = None


class _RowTooLong(Exception):
    """The row being read spans lines and has grown past the limit: most likely a quote that is never closed."""


HITS_HELD = 65536  # known rows `_Lines` passes over before csv is handed a line: their entries are held meanwhile


class _Lines:
    """The physical lines of a decoded partition, fed to the csv module one at a time.

    Bounded: a line longer than the limit is never held whole (it is read past in chunks, and `_Oversize` is
    raised in its place), nor is a row that spans lines (`_RowTooLong`). Recoverable: the lines handed out for the
    row being read are kept in `taken` (consecutive lines from number `first`), and `again` puts lines back to be
    read once more, so after a broken row the lines it swallowed are read again as rows of their own.
    """

    def __init__(self, text: io.TextIOWrapper | _Utf8Lines, limits: ReadLimits, encoding: str) -> None:
        self._utf8 = text if isinstance(text, _Utf8Lines) else None  # its known rows are looked up undecoded
        self._readline = text.readline
        self._limit = limits.line_bytes
        self._encoding = encoding
        self._again: deque[tuple[int, str | None]] = deque()
        self._after_cr = False
        self._pending: str | None = None  # a line `_skim` read and left for the general loop
        self.read_so_far = 0  # physical lines read from the stream
        self.first = 0  # number of the first line in `taken`
        self.taken: list[str] = []
        self.taken_size = 0
        self.lookup: _Lookup | None = None  # once its seed is set, a row's first line is looked up before csv reads it
        self.hits = array("q")  # the entries of the known rows met, in order
        self.first_digest = 0  # the digest of the row's first line, once looked up
        self.record_digest, self.record_lines = 0, 0  # ... of the lines up to where its quotes pair up, and how many

    def __iter__(self) -> _Lines:
        return self

    def put_back_all_but_first(self) -> None:
        """The row being read is broken: its lines after the first are read again, as rows of their own."""
        self._again.extendleft(reversed([(self.first + n, line) for n, line in enumerate(self.taken) if n]))

    def __next__(self) -> str:
        """The next line for csv. A row `lookup` knows is passed over (kept in `hits`), unless HITS_HELD are, when csv
        is handed a blank line, which it reads as no row, so that they are handed on."""
        while True:
            if self._again:
                number, line = self._again.popleft()
            else:
                if self._pending is not None:  # read by `_skim` (never right after an over-long line)
                    line, self._pending = self._pending, None
                else:
                    line = self._readline(self._limit + 1)
                    if not line:
                        raise StopIteration
                    if self._after_cr:
                        self._after_cr = False
                        if line == "\n":  # the LF of a CRLF cut off a skipped over-long line
                            continue
                self.read_so_far = number = self.read_so_far + 1
                if len(line) * 4 > self._limit and self._over_limit(line):
                    line = None
            taken = self.taken
            if line is None:
                if taken:  # inside a row spanning lines: the row is broken; the long line is read again after it
                    self._again.appendleft((number, None))
                raise _Oversize(number)
            if taken:
                if self.taken_size + len(line) > self._limit:
                    self._again.appendleft((number, line))
                    raise _RowTooLong()
            else:
                self.first = number
                lookup = self.lookup
                self.first_digest = self.record_lines = 0
                if lookup is not None and lookup.seed is not None:
                    digest = row_digest(line, lookup.seed)
                    if (entry := lookup.entry(digest)) is not None:  # a whole row: a known digest is of a complete
                        # record's text
                        self.hits.append(entry)
                        if not self._again:
                            self._skim(lookup)
                        if len(self.hits) < HITS_HELD:
                            continue
                        return "\n"
                    self.first_digest = digest
                    # A quoted value that runs on: the row is looked up whole (in UTF-8 only, whose reading never
                    # fails, so reading ahead loses no row).
                    if line.count('"') % 2 and not self._again and self._encoding == "utf-8":
                        text, ahead = self._run_on(line)
                        if text is not None:
                            digest = row_digest(text, lookup.seed)
                            if (entry := lookup.entry(digest)) is not None:  # its lines read ahead are the row's:
                                # none is handed to csv
                                self.hits.append(entry)
                                if len(self.hits) < HITS_HELD:
                                    continue
                                return "\n"
                            self.record_digest, self.record_lines = digest, len(ahead) + 1
                        self._again.extend(ahead)
            taken.append(line)
            self.taken_size += len(line)
            return line

    def _skim(self, lookup: _Lookup) -> None:
        """Pass over the known rows that follow, one line each, in a loop of their own: in a refresh, most rows are
        known, and the general loop's cost per line was most of reading them. The first line that is not one (or may
        be over the line limit, or ends the file) is left in `_pending` for that loop. A UTF-8 partition's lines are
        looked up as bytes (`_Utf8Lines.skim`)."""
        if self._utf8 is not None:
            passed, self._pending = self._utf8.skim(self._limit + 1, lookup.entry, lookup.seed, self.hits, HITS_HELD)  # type: ignore[arg-type]
            self.read_so_far += passed
            return
        readline, limit, hits, entry, seed = self._readline, self._limit, self.hits, lookup.entry, lookup.seed
        read = self.read_so_far
        try:
            while len(hits) < HITS_HELD:
                line = readline(limit + 1)
                if not line:
                    break
                if len(line) * 4 > limit or (at := entry(xxh3_64_intdigest(  # row_digest, written out
                        line.rstrip("\r\n").encode("utf-8", "surrogatepass"), seed))) is None:
                    self._pending = line
                    break
                hits.append(at)
                read += 1
        finally:  # a line that cannot be decoded raises here: the lines before it were read
            self.read_so_far = read

    def known_rows(self) -> Iterator[_Record]:
        """The known rows passed over so far, as one record (see `_csv_records`), if any."""
        if self.hits:
            hits, self.hits = self.hits, array("q")
            yield 0, None, None, 0, hits

    def _run_on(self, line: str) -> tuple[str | None, list[tuple[int, str | None]]]:
        """The lines after `line`, read ahead up to the first where the quotes pair up, and with them the text of the
        row spanning them (which is how csv reads it when the row began inside no quoted value: a memo records such a
        digest only for a row csv read from exactly these lines). The text is None when no line within the limits
        pairs them up; the lines read ahead are then read again as usual."""
        ahead: list[tuple[int, str | None]] = []
        quotes, size = line.count('"'), len(line)
        while more := self._readline(self._limit + 1):
            self.read_so_far = number = self.read_so_far + 1
            if len(more) * 4 > self._limit and self._over_limit(more):
                ahead.append((number, None))
                break
            ahead.append((number, more))
            quotes, size = quotes + more.count('"'), size + len(more)
            if size > self._limit:
                break
            if not quotes % 2:
                return "".join([line, *(text for _, text in ahead)]), ahead  # type: ignore[misc]
        return None, ahead

    def _over_limit(self, line: str) -> bool:
        """Whether a line is over the limit in bytes; if so the rest of it is read past, never held."""
        if len(line) <= self._limit:
            try:
                size = len(line.encode(self._encoding, "surrogateescape" if self._encoding == "utf-8" else _ESCAPE))
            except UnicodeError:
                size = len(line) * 4
            if size <= self._limit:
                return False
        while not line.endswith(("\n", "\r")):
            line = self._readline(SKIP_CHUNK)
            if not line:
                break
        self._after_cr = line.endswith("\r")
        return True


_Record = tuple[int, "list[str] | None", "str | None", int, "array | None"]


def _csv_records(partition: str, stream: BinaryIO, snapshot: Snapshot, lookup: _Lookup | None = None,
                 skims: bool = False) -> Iterator[_Record]:
    """(first line, fields, None, digest, None) for each CSV row of one partition, or (first line, None, what is
    wrong, 0, None), or for consecutive rows `lookup` knows (0, None, None, 0, their entries). The digest is 0 while
    `lookup` has no seed (the caller sets it once it has read the header). `skims`: `lookup` may know rows."""
    limits = snapshot.limits
    kind = _compressed(stream)
    if kind:
        yield 1, None, _compressed_error(kind), 0, None
        return
    text = _text(stream, snapshot, partition, skims)
    encoding = codecs.lookup(text.encoding).name
    lines = _Lines(text, limits, "utf-8" if encoding == "utf-8-sig" else encoding)
    lines.lookup = lookup
    records = csv.reader(lines, delimiter=snapshot.delimiter, strict=True)
    while True:
        lines.taken = []
        lines.taken_size = 0
        try:
            fields = next(records)
        except StopIteration:
            yield from lines.known_rows()
            return
        except _Oversize as oversize:
            yield from lines.known_rows()
            if lines.taken:
                first = lines.first
                lines.put_back_all_but_first()
                yield first, None, f"has a quote that is not closed before line {oversize.line} (line {first}; {QUOTING_HINT})", 0, None
            else:
                yield oversize.line, None, _too_long(oversize.line, limits), 0, None
            continue
        except _RowTooLong:
            yield from lines.known_rows()
            first = lines.first
            lines.put_back_all_but_first()
            yield first, None, (f"runs on over {len(lines.taken):,} lines past SEGMENT_MAX_LINE_BYTES "
                                f"({limits.line_bytes:,} bytes): a quote that is never closed? (line {first}; {QUOTING_HINT})"), 0, None
            continue
        except csv.Error as exc:
            yield from lines.known_rows()
            first = lines.first if lines.taken else lines.read_so_far
            lines.put_back_all_but_first()
            yield first, None, f"is not valid CSV: {exc} (line {first}; {QUOTING_HINT})", 0, None
            continue
        except UnicodeError:  # a codec that fails even with the escape handler: the rest cannot be read
            yield from lines.known_rows()
            first = lines.read_so_far + 1
            yield first, None, (f"cannot be decoded as {snapshot.encoding} from line {first} on; the rest of the file "
                                f"was not read ({UTF8_HINT})"), 0, None
            return
        if lines.hits:  # they came before this row
            yield from lines.known_rows()
        if fields:  # a blank line is not a row
            # a row's first line is what is looked up, or for one spanning lines, the lines up to where its quotes
            # pair up: a row read from other lines than those gets no digest
            taken = len(lines.taken)
            yield (lines.first, fields, None, lines.first_digest if taken == 1 else
                   lines.record_digest if taken == lines.record_lines else 0, None)


def _csv_rows(partition: str, stream: BinaryIO, snapshot: Snapshot, digests: RowDigests | None = None) -> Iterator[SourceRow]:
    limits = snapshot.limits
    kind = _compressed(stream)
    if kind:
        yield SourceRow(partition, 1, None, _compressed_error(kind))
        return
    columns: list[str] | None = None if snapshot.has_header else list(snapshot.columns or ())
    header_problem = None
    if columns == []:
        header_problem = "model.json lists no attributes for this headerless partition; export it with its columns"
    lookup = None if digests is None else _Lookup(digests.entry)
    if lookup is not None and columns and not header_problem:
        lookup.seed = digests.seed(columns, snapshot.delimiter, limits.fields)  # type: ignore[union-attr]
    number = 0
    unreadable_header = False
    max_fields = limits.fields
    skims = digests is not None and digests.may_know()
    for line, fields, error, digest, known in _csv_records(partition, stream, snapshot, lookup, skims):
        if columns is None:
            if fields is None:  # e.g. compressed, or too long: counted as a row even when nothing follows it
                columns, header_problem, unreadable_header = [], f"the header row {error}", True
            else:
                columns = [name.strip() for name in fields]
                header_problem = _header_problem(columns, limits)
                if lookup is not None and not header_problem:
                    lookup.seed = digests.seed(columns, snapshot.delimiter, limits.fields)  # type: ignore[union-attr]
            continue
        if known is not None:
            yield SourceRow(partition, number + 1, None, None, 0, known)
            number += len(known)
            continue
        number += 1
        if header_problem:
            yield SourceRow(partition, number, None, header_problem)
        elif fields is None:
            yield SourceRow(partition, number, None, error)
        elif len(fields) > max_fields:
            yield SourceRow(partition, number, None, f"has {len(fields):,} fields, more than SEGMENT_MAX_FIELDS "
                                                     f"({limits.fields:,}) (line {line}; {QUOTING_HINT})")
        elif problem := _text_problem(fields):
            if problem == "nul":
                yield SourceRow(partition, number, None, f"holds a NUL byte (line {line}); the file looks binary or "
                                                         f"UTF-16: {UTF8_HINT} text")
            else:
                yield SourceRow(partition, number, None, f"has bytes that are not valid {snapshot.encoding.upper()} "
                                                         f"(line {line}; {UTF8_HINT})")
        elif len(fields) == len(columns) or (len(fields) > len(columns) and not any(fields[len(columns) :])):
            yield SourceRow(partition, number, dict(zip(columns, fields)), None, digest)
        else:
            yield SourceRow(
                partition,
                number,
                None,
                f"has {len(fields)} fields, expected {len(columns)} (line {line}; {QUOTING_HINT})",
            )
    if unreadable_header and number == 0:
        yield SourceRow(partition, 1, None, header_problem)


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _jsonl_rows(partition: str, stream: BinaryIO, snapshot: Snapshot) -> Iterator[SourceRow]:
    limits = snapshot.limits
    kind = _compressed(stream)
    if kind:
        yield SourceRow(partition, 1, None, _compressed_error(kind))
        return
    number = 0
    line_number = 0
    while True:
        raw = stream.readline(limits.line_bytes + 1)
        if not raw:
            return
        line_number += 1
        if len(raw) > limits.line_bytes:
            while not raw.endswith(b"\n"):
                raw = stream.readline(SKIP_CHUNK)
                if not raw:
                    break
            number += 1
            yield SourceRow(partition, number, None, _too_long(line_number, limits))
            continue
        if not raw.strip():
            continue
        number += 1
        yield SourceRow(partition, number, *_json_row(raw, line_number, limits))


def _json_row(raw: bytes, line_number: int, limits: ReadLimits) -> tuple[dict[str, str] | None, str | None]:
    """(values, None) for one JSONL line, or (None, what is wrong)."""
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        return None, f"has bytes that are not valid UTF-8 (line {line_number}; {UTF8_HINT})"
    too_deep = (f"nests JSON more than {limits.json_depth} levels deep (line {line_number}); SEGMENT_MAX_JSON_DEPTH "
                "allows no more: write one flat object a line")
    if json_too_deep(text, limits.json_depth):
        return None, too_deep
    try:
        doc = json.loads(text)
    except RecursionError:
        return None, too_deep
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON: {exc.msg} (line {line_number}, column {exc.colno})"
    except ValueError:  # an integer of more than 4,300 digits
        return None, f"is not valid JSON: it holds a number too long to read (line {line_number})"
    if not isinstance(doc, dict):
        return None, f"is not a JSON object (line {line_number}); write one object a line"
    if len(doc) > limits.fields:
        return None, f"has {len(doc):,} fields, more than SEGMENT_MAX_FIELDS ({limits.fields:,}) (line {line_number})"
    try:
        values = {str(key): _json_text(value) for key, value in doc.items()}
    except (ValueError, RecursionError):  # a number too long to write back as text
        return None, f"holds a value that cannot be written as text (line {line_number})"
    problem = _text_problem([*values, *values.values()])
    if problem == "nul":
        return None, f"holds a NUL character (line {line_number}); remove it"
    if problem:
        return None, f"has a \\u escape that is not a character (line {line_number}); {UTF8_HINT}"
    return values, None
