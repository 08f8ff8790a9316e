"""Planning an export: segment rows in, one member per email out, in chunks, in bounded memory.

Rules (the README repeats them):
- Identity is the email in column `mapping.email`, trimmed and lower-cased. A row without a usable
  email is invalid: it is reported (segment, partition, row, reason naming the column) and counted,
  never sent.
- A merge value that cannot be converted to its Mailchimp type (a birthday of 31/12) does not make
  the row invalid: the member is sent without that value and keeps its segment's tags, and the
  field problem is reported (segment, partition, row, column, merge tag, what to fix) and counted in
  `field_problems`, which stands outside the equation below (the row is counted by its outcome).
- Mapped columns are resolved per segment by `shared.columns.resolve_columns` (exact name, else the
  one column equal ignoring case), the same rule the check before a run applies.
- Tags compare ignoring case, as in Mailchimp ("VIP" and "vip" are one tag).
- One email in several rows or segments is ONE member carrying every segment's tag (first-seen order).
  It is counted as a member in the segment of its first row; every later row is a duplicate in its
  own segment. So for each segment: read == invalid + duplicates + erased + members.
- With `erased` (subscriber hash -> when, from shared/erasures.py), a sendable row whose address a person had erased
  is not planned: it counts in `erased` and is reported (kind "erased", "erased on <date> at the person's request").
- Merge fields: the first row's values win; a field the first row leaves empty is filled from the
  next row that has it, so a sparse profile does not blank out what another profile knows.
- Values are trimmed and empty ones are not sent (Mailchimp keeps what it has). Text is cut at
  255 UTF-8 bytes on a character boundary. With `merge_field_types`, number becomes a JSON number,
  date YYYY-MM-DD (year-first input only: 03/04/2026 is ambiguous), birthday MM/DD, address an
  object from JSON or from Mailchimp's import form (parts separated by two spaces).

With `max_rows`, reading stops at the first row over it (TooManyRows), before anything more is spilled and, unless
the plan streams or skips known rows (both read the audience first), before the audience is read.

Streaming (`stream`): so that Mailchimp gets its first members seconds after a run starts rather than once every row
is read, a row is handed to `stream` as it is read (in chunks) when nothing read later can change what is sent for
it: the plan has one segment (no other segment can add a tag), the audience does not hold the email (it is
created), no earlier row had the email, and every mapped merge field has a usable value (no later duplicate can fill
one in). The audience is then read before the rows. Such a member is counted as a member like any other and is not
in `chunks()`; later rows with its email are duplicates as usual. Only full chunks are streamed: the last few
streamable members are planned the usual way, so a run still has one part-filled chunk at most. `streamed_before` names the members an earlier,
crashed attempt at the same plan streamed: they are counted the same way and not planned again.

Whether a run streams is settled when its first chunk of streamable members is full, before that chunk goes out: only
if the audience lacked the email of at least a quarter of the valid rows read so far (a first export; not a refresh,
whose few new members would not be worth what follows), and only if `may_stream` then agrees (the caller proves the
rows cannot pass its limit, which means reading them all once more; without `may_stream` nothing is streamed).
Otherwise nothing is streamed and those members are planned the usual way.

Known rows (`memo`, shared/row_memo.py): with a memo of the rows an earlier plan found already in step, a row it
knows, whose contact the audience holds as it was then, is skipped unread: counted read, a member and settled (as full
planning would find it), with its tag counted among those its contact carries. The audience is then read before the
rows, and nothing is streamed. Such a row must stay its member's only row: when another row with its address is read
(before or after it), or two known rows share an address, every row is read once more with those addresses' rows
parsed, counting afresh (`rows` must be readable twice, or nothing is skipped). Whatever the
memo, the plan makes the next one (`memo.next`): the skipped rows, and each member it settles made of one row with
every value converted. The audience's lines of contacts a memo entry knows as they were are held apart, unread, while
the rows are read, and spilled only if their row was not skipped: in a refresh most never are.

Memory: valid rows and existing members are hash-partitioned by email (crc32) into spill files in a
temporary folder, then merged one bucket at a time. Output order depends only on the input
(bucket order, then first-row order), so a redelivered planning message yields identical chunks.
"""
from __future__ import annotations

import json
import marshal
import math
import os
import re
import tempfile
import zlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date
from itertools import compress, islice, repeat
from operator import is_not, not_
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from shared.columns import ColumnMismatch, resolve_columns
from shared.emails import email_problem, normalize_email, subscriber_hash
from shared.members import (Contact, ExistingMember, Member, RowRef, line_email, line_mentions, line_values,
                            member_line, tag_needles)
from shared.row_memo import MemoWriter, RowSkips, contact_digest, contact_digests, email_key
from shared.segment_rows import SourceRow

BUCKETS = 64
TEXT_LIMIT_BYTES = 255
_SPILL_BATCH = 16384  # records buffered across all buckets before they go to disk
_HOLD_BLOCK = 4096  # audience contacts looked up, and held lines released, together

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[T ].*)?")
_MONTH_DAY = re.compile(r"(\d{1,2})/(\d{1,2})")
_ADDRESS_PARTS = {
    4: ("addr1", "city", "state", "zip"),
    5: ("addr1", "city", "state", "zip", "country"),
    6: ("addr1", "addr2", "city", "state", "zip", "country"),
}
_ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")


@dataclass(frozen=True)
class Mapping:
    """Which source columns feed the member: the email (required) and merge tag -> column."""

    email: str
    merge_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowProblem:
    """A row that will not be sent (kind "invalid", or "erased" at the person's request), or a value of a row sent
    without it (kind "field"), for the errors report; the email is as given, never in `reason`."""

    segment: str
    partition: str
    row: int
    email: str | None
    reason: str
    kind: str = "invalid"
    column: str | None = None
    merge_tag: str | None = None


class TooManyRows(Exception):
    """More rows than the plan's `max_rows`: reading stopped at the first row over it (nothing was spilled after)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} rows")
        self.limit = limit


@dataclass
class SegmentCounts:
    read: int = 0
    invalid: int = 0
    duplicates: int = 0
    members: int = 0
    settled: int = 0  # members `already_done` found needing nothing: counted here, never put in a chunk
    field_problems: int = 0  # rows sent without a value that could not be converted (outside the equation)
    erased: int = 0  # sendable rows left out because the person had their address erased


@dataclass
class TagDepartures:
    """For one tag the run keeps in step: audience members carrying it, and how many of them left its segment."""

    carrying: int = 0
    leaving: int = 0


@dataclass(frozen=True)
class SegmentInput:
    segment: str
    tag: str  # Mailchimp tag given to this segment's members
    rows: Iterable[SourceRow]
    columns: Mapping[str, str] = field(default_factory=dict)  # mapped name -> this snapshot's column (resolve_columns)


def _text(value: str) -> str:
    if len(value) <= TEXT_LIMIT_BYTES // 4:  # cannot exceed the limit even at 4 bytes a character
        return value
    data = value.encode("utf-8")
    return value if len(data) <= TEXT_LIMIT_BYTES else data[:TEXT_LIMIT_BYTES].decode("utf-8", "ignore")


def _number(value: str) -> int | float:
    if not _NUMBER.fullmatch(value):
        raise ValueError
    if value.lstrip("+-").isdigit():
        return int(value)
    number = float(value)
    if not math.isfinite(number):  # 1e999: JSON has no infinity
        raise ValueError
    return number


def _calendar_date(value: str) -> date:
    match = _DATE.fullmatch(value)
    if not match:
        raise ValueError
    year, month, day = match.groups()
    return date(int(year), int(month), int(day))


def _date(value: str) -> str:
    return _calendar_date(value).isoformat()


def _birthday(value: str) -> str:
    match = _MONTH_DAY.fullmatch(value)
    if match:
        month, day = int(match[1]), int(match[2])
        date(2000, month, day)  # a leap year, so 02/29 passes
    else:
        parsed = _calendar_date(value)
        month, day = parsed.month, parsed.day
    return f"{month:02d}/{day:02d}"


def _address(value: str) -> dict[str, str]:
    if value.startswith("{"):
        doc = json.loads(value)
        address = {key: _text(str(doc[key]).strip()) for key in ("addr1", "addr2", "city", "state", "zip", "country") if doc.get(key)}
    else:
        parts = [part.strip() for part in re.split(r" {2,}|\t", value)]
        names = _ADDRESS_PARTS.get(len(parts))
        if names is None:
            raise ValueError
        address = {name: _text(part) for name, part in zip(names, parts) if part}
    if not all(address.get(key) for key in _ADDRESS_REQUIRED):
        raise ValueError
    return address


# Mailchimp merge field type -> (conversion, what the source should hold). Types not listed are text.
_CONVERSIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "number": (_number, "a number like 1234.5"),
    "date": (_date, "a date with the year first, like 2026-11-28 or 2026-11-28T17:00:00Z"),
    "birthday": (_birthday, "a month/day like 04/17, or a full date like 1990-04-17"),
    "address": (
        _address,
        'JSON like {"addr1": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"} '
        "or street, city, state, zip[, country] separated by two spaces",
    ),
}


@dataclass(frozen=True, slots=True)
class _FieldRule:
    tag: str
    column: str
    kind: str
    convert: Callable[[str], Any]
    expected: str


def _bucket(email: str) -> int:
    return zlib.crc32(email.encode("utf-8")) % BUCKETS


class _Spill:
    """Records hash-partitioned by email into BUCKETS files, written in batches so memory stays bounded.

    Records hold only str, int, float, bool, None, lists, tuples and dicts, so they are written with marshal: a
    planning process reads its own files back, and marshal takes less than half the CPU of pickle for them."""

    def __init__(self, folder: str, kind: str) -> None:
        self._paths = [os.path.join(folder, f"{kind}-{bucket:02d}.marshal") for bucket in range(BUCKETS)]
        self._files: list[Any] = [None] * BUCKETS
        self._buffers: list[list[tuple]] = [[] for _ in range(BUCKETS)]
        self._buffered = 0

    def add(self, email: str, record: tuple) -> None:
        self._buffers[_bucket(email)].append(record)
        self._buffered += 1
        if self._buffered >= _SPILL_BATCH:
            self._flush()

    def _flush(self) -> None:
        for bucket, buffer in enumerate(self._buffers):
            if buffer:
                if self._files[bucket] is None:
                    self._files[bucket] = open(self._paths[bucket], "wb")
                data = marshal.dumps(buffer)  # marshal.load would read a file piece by piece: each batch is framed
                self._files[bucket].write(len(data).to_bytes(8, "little") + data)
                self._buffers[bucket] = []
        self._buffered = 0

    def close(self) -> None:
        self._flush()
        for file in self._files:
            if file is not None:
                file.close()

    def discard(self) -> None:
        """Close and remove every file: what was spilled is not read."""
        self.close()
        for bucket, file in enumerate(self._files):
            if file is not None:
                os.remove(self._paths[bucket])
                self._files[bucket] = None

    def read(self, bucket: int) -> Iterator[tuple]:
        """The bucket's records in the order they were added; the file is removed once read."""
        if self._files[bucket] is None:
            return
        with open(self._paths[bucket], "rb") as file:
            while size := int.from_bytes(file.read(8), "little"):
                yield from marshal.loads(file.read(size))
        os.remove(self._paths[bucket])


def _spill_contact(spill: _Spill, contact: Contact) -> str:
    """Spill one contact of the audience (a mirror's line as it is: `_merge` decodes it only if needed); its email."""
    if isinstance(contact, str):
        email = normalize_email(line_email(contact))
        spill.add(email, (email, contact))
    else:
        email = normalize_email(contact.email)
        spill.add(email, (email, contact.status, contact.merge_fields, tuple(contact.tags), contact.email))
    return email


def _known_by(contact: Contact) -> str:
    """The line a memo knows a contact by: a mirror's line, or the one a contact read in full would be stored as ("" for
    one whose address no line can hold, which Mailchimp's own checks make unlikely: no memo entry is of it)."""
    if isinstance(contact, str):
        return contact
    try:
        return member_line(contact)
    except ValueError:
        return ""


class _Held:
    """The audience's lines of contacts a memo entry knows as they were, kept in a file while the rows are read: most
    belong to a skipped row, and are then never spilled, merged or decoded."""

    def __init__(self, folder: str, emails: array) -> None:
        self._path = os.path.join(folder, "held")
        self._file = open(self._path, "w", encoding="utf-8", errors="surrogatepass", newline="\n")
        self._emails = emails  # the memo's email keys, by entry
        self._entries = array("q")  # memo entry of each held line
        self._at = array("q")  # its place among the audience's contacts
        self._last: dict[int, int] = {}  # email key listed twice -> place of its last contact (the one merged)
        self.unchanged = array("q")  # memo entries whose contact the audience holds as it was

    def add(self, lines: list[str], entries: Sequence[int], places: Sequence[int]) -> None:
        """Hold `lines`, in order, with their memo entries and their places among the audience's contacts (sequences:
        an array extends from one without a Python step per item)."""
        self._file.write("".join(lines))
        self._entries.extend(entries)
        self._at.extend(places)

    def close(self, keys: array) -> None:
        """`keys`: the email key of every contact, in order. A contact listed twice is merged as the last one read:
        it is not one a row is known by."""
        self._file.close()
        if len(set(keys)) != len(keys):
            seen: set[int] = set()
            twice = {key for key in keys if key in seen or seen.add(key)}  # type: ignore[func-returns-value]
            self._last = {key: at for at, key in enumerate(keys) if key in twice}
            self.unchanged = array("q", (at for at in self.unchanged if self._emails[at] not in twice))
            self.unchanged.extend(entry for entry in self._entries if self._emails[entry] not in self._last)
        else:
            self.unchanged.extend(self._entries)

    def release(self, spill: _Spill, skipped_at: bytearray) -> None:
        """Spill the held lines whose row was not skipped (then removed): `_merge` needs those contacts. `skipped_at`: a
        flag per memo entry whose row was skipped. Of an address listed twice, the line listed last (none of its
        entries was unchanged, nor its row skipped); of another, the line unless its entry's row was skipped (no other
        entry of its address was unchanged: the audience holds that one line of it)."""
        emails, last = self._emails, self._last
        with open(self._path, encoding="utf-8", errors="surrogatepass", newline="\n") as file:
            for start in range(0, len(self._entries), _HOLD_BLOCK):  # a block at a time: most are never spilled
                entries = self._entries[start:start + _HOLD_BLOCK]
                lines = list(islice(file, len(entries)))
                wanted = ([last[key] == at if key in last else not skipped_at[entry]
                           for entry, key, at in zip(entries, map(emails.__getitem__, entries),
                                                     self._at[start:start + _HOLD_BLOCK])]
                          if last else map(not_, map(skipped_at.__getitem__, entries)))
                for line in compress(lines, wanted):
                    _spill_contact(spill, line)
        os.remove(self._path)


class Plan:
    """An export plan: iterate it (or `.chunks()`) once for member chunks; `.counts` is final after that.

    Row problems go to `on_problem` while the first chunk is being prepared (all rows are read then).
    """

    def __init__(
        self,
        inputs: Sequence[SegmentInput],
        mapping: Mapping,
        *,
        existing: Iterable[Contact] = (),
        merge_field_types: dict[str, str] | None = None,
        chunk_size: int = 500,
        on_problem: Callable[[RowProblem], None],
        workdir: str | None = None,
        removable_tags: Iterable[str] = (),
        already_done: Callable[[Member], bool] | None = None,
        max_rows: int | None = None,
        erased: Mapping[str, str] | None = None,
        stream: Callable[[list[Member]], None] | None = None,
        rows_at_most: int = 0,
        streamed_before: Iterable[str] = (),
        may_stream: Callable[[], bool] | None = None,
        memo: RowSkips | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        if not mapping.email:
            raise ValueError("The mapping names no email column; choose the column that holds each profile's email")
        for source in inputs:
            if not source.tag.strip():
                raise ValueError(f"Segment {source.segment} has an empty tag; give it the Mailchimp tag its members get")
        types = merge_field_types or {}
        self._types = {tag: (types.get(tag, "text"), *_CONVERSIONS.get(types.get(tag, "text"), (_text, "text")))
                       for tag in mapping.merge_fields}
        self._mapping = mapping
        self._inputs = list(inputs)
        self._existing = existing
        self._chunk_size = chunk_size
        self._on_problem = on_problem
        self._workdir = workdir
        # Tags this run keeps in step: taken off members who are no longer in the tag's segment.
        owned = {tag.casefold() for tag in removable_tags}
        self._removable = {source.tag.casefold(): source.tag for source in self._inputs if source.tag.casefold() in owned}
        self._needles = tag_needles(self._removable)  # what shows a mirror line may carry one (line_mentions)
        self._already_done = already_done  # e.g. in the audience with these values and tags: no call would change it
        self._max_rows = max_rows  # TooManyRows as soon as the rows of all segments pass it
        self._erased = erased or {}  # subscriber hash -> ISO time of the erasure: those rows are never planned
        self._stream = stream if len(self._inputs) == 1 else None  # see the module's docstring
        self._rows_at_most = rows_at_most  # sizes the filter of emails seen while streaming
        self._may_stream = may_stream  # asked once, before the first chunk is streamed (see the module's docstring)
        self._streamed_before = set(streamed_before)
        # With a memo (see "Known rows" in the module's docstring): rows it knows are skipped unread, unless this plan
        # streams, or continues a crashed attempt's, or its rows cannot be read twice.
        self._skips = memo
        self._skipping = (memo is not None and len(memo.memo) > 0 and already_done is not None
                          and not self._streamed_before
                          and all(iter(source.rows) is not source.rows for source in self._inputs))
        if self._skipping:
            self._stream = None
        self._skipped_at = bytearray(len(memo.memo) if self._skipping else 0)  # 1: the memo entry's row was skipped
        self._skipped: set[int] = set()  # email keys of the rows skipped that are asked about (`_skipped_keys`)
        self._asked: set[int] = set()  # ... the keys of rows read, and of contacts known but spilled (read in full)
        self._twice: set[int] = set()  # ... of two skipped rows
        self._read_keys: set[int] = set()  # ... of the rows read (skipping): a skipped row's address among them conflicts
        self._known = 0  # rows skipped
        self._candidates: dict[str, tuple[int, int]] = {}  # email -> (row digest, contact digest), while merging
        self._streamer: _Streamer | None = None
        self._unsent: set[str] = set()  # streamable members left to the usual chunks (the last, part-filled chunk)
        self._started = False
        self.counts: dict[str, SegmentCounts] = {source.segment: SegmentCounts() for source in self._inputs}
        # Per tag kept in step (the run's spelling): final once the chunks have been iterated.
        self.departures: dict[str, TagDepartures] = {tag: TagDepartures() for tag in self._removable.values()}

    @property
    def streamed(self) -> int:
        """Members streamed so far, by this attempt or a crashed one before it (also when reading stopped half-way)."""
        return self._streamer.sent + self._streamer.sent_earlier if self._streamer else 0

    @property
    def known(self) -> int:
        """Rows skipped unread because the memo knew them (final once the chunks have been iterated)."""
        return self._known

    def __iter__(self) -> Iterator[list[Member]]:
        return self.chunks()

    def chunks(self) -> Iterator[list[Member]]:
        """Member lists of at most chunk_size, in a deterministic order; a plan runs once."""
        if self._started:
            raise RuntimeError("This plan has already run; make a new Plan to plan again")
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[list[Member]]:
        with tempfile.TemporaryDirectory(prefix="plan-", dir=self._workdir) as folder:
            rows, existing = _Spill(folder, "rows"), _Spill(folder, "existing")
            if self._stream is None and not self._skipping:
                self._spill_rows(rows, _Streamer(self._streamed_before))
                self._spill_existing(existing)
            elif not self._skipping:  # the audience first: a row is streamed only if the audience lacks its email
                audience = self._spill_existing(existing)
                self._spill_rows(rows, _Streamer(self._streamed_before, self._stream, audience, self._rows_at_most,
                                                 self._chunk_size, len(self._mapping.merge_fields), self._may_stream))
            else:  # the audience first: a row is skipped only if the audience holds its contact as it was
                held = self._hold_existing(folder, existing)
                rows = self._read_skipping(folder, rows, _Streamer(self._streamed_before))
                held.release(existing, self._skipped_at)
            rows.close()
            existing.close()
            chunk: list[Member] = []
            memo = self._skips.next if self._skips is not None and self._already_done else None
            for bucket in range(BUCKETS):
                for member in self._merge(rows.read(bucket), existing.read(bucket)):
                    if self._already_done and not member.departed and self._already_done(member):
                        self.counts[member.source.segment].settled += 1
                        if memo is not None and (found := self._candidates.get(member.email)):
                            memo.add(*found, email_key(member.email))
                        continue
                    chunk.append(member)
                    if len(chunk) == self._chunk_size:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk

    def _spill_existing(self, spill: _Spill) -> array:
        """Spill the audience; the hashes of its emails, sorted (what `_Streamer` asks "in the audience?"). A mirror's
        line is spilled as it is, and decoded in `_merge` only if needed."""
        hashes = array("q")
        for contact in self._existing:
            hashes.append(hash(_spill_contact(spill, contact)))
        return array("q", sorted(hashes))

    def _hold_existing(self, folder: str, spill: _Spill) -> _Held:
        """Spill the audience, but for the contacts the memo knows as they were: their lines are held apart, unread,
        and spilled only if their row is not skipped (`_Held.release`). Rows are known from then on."""
        skips: RowSkips = self._skips  # type: ignore[assignment]
        entries = skips.contact_entries()
        held = _Held(folder, skips.memo.emails)
        keys = array("Q")  # email key of each contact, in the order read
        known, emails, contacts = entries.get, skips.memo.emails, iter(self._existing)
        # A block of contacts at a time, looked up without a Python call each: a refresh holds nearly all of them.
        while block := list(islice(contacts, _HOLD_BLOCK)):
            places = range(len(keys), len(keys) + len(block))
            if all(map(isinstance, block, repeat(str))):  # a mirror's lines (every block, when there is a mirror)
                found = list(map(known, contact_digests(block)))
                if None not in found:  # each known as it was: all held, and their keys are the memo's
                    held.add(block, found, places)
                    keys.extend(map(emails.__getitem__, found))
                    continue
                hold = list(map(is_not, found, repeat(None)))
            else:
                found = list(map(known, contact_digests(map(_known_by, block))))
                hold = [at is not None and isinstance(contact, str) for contact, at in zip(block, found)]
            held.add(list(compress(block, hold)), list(compress(found, hold)), list(compress(places, hold)))
            block_keys = [emails[at] if kept else 0 for at, kept in zip(found, hold)]
            for n in compress(range(len(block)), map(not_, hold)):  # spilled, in the order read
                block_keys[n] = email_key(_spill_contact(spill, block[n]))
                if found[n] is not None:  # known, as it was, but read in full (not a mirror's line): its row may be
                    held.unchanged.append(found[n])  # skipped, and `_merge` then passes over it
                    self._asked.add(block_keys[n])
            keys.extend(block_keys)
        del entries, known  # before audience_read builds the row index: the two dicts are not held at once
        held.close(keys)
        skips.audience_read(held.unchanged)
        return held

    def _rules(self, columns: Mapping[str, str]) -> tuple[str, list[_FieldRule]]:
        """The email column and merge rules with these column names (mapped name -> column)."""
        column = lambda name: columns.get(name, name)  # noqa: E731
        rules = [_FieldRule(tag, column(name), *self._types[tag]) for tag, name in self._mapping.merge_fields.items()]
        return column(self._mapping.email), rules

    def _spill_rows(self, spill: _Spill, streamer: _Streamer) -> None:
        self._streamer = streamer
        left = math.inf if self._max_rows is None else self._max_rows  # rows that may still be read
        for index, source in enumerate(self._inputs):
            counts = self.counts[source.segment]
            segment_rules = self._rules(source.columns)
            own: dict[str, tuple[str, list[_FieldRule]]] = {}  # partitions whose header differs from the segment's
            for row in source.rows:
                if row.known is not None:  # a run of rows the memo knows
                    if left < len(row.known):
                        raise TooManyRows(self._max_rows)
                    left -= len(row.known)
                    counts.read += len(row.known)
                    self._skip(row.known, source, counts)
                    continue
                if left == 0:
                    raise TooManyRows(self._max_rows)
                left -= 1
                counts.read += 1
                given, reason = None, row.error
                if row.values is not None:
                    email_column, rules = own.get(row.partition, segment_rules)
                    if email_column not in row.values and row.partition not in own:
                        # This partition's header differs (say "email" where the first had "Email"): the same rule
                        # resolves it once, so its rows are not lost (and their members not untagged).
                        email_column, rules = own[row.partition] = self._partition_rules(row.values, segment_rules)
                    given = row.values.get(email_column)
                    problems_before = counts.field_problems
                    email, fields, reason = self._accept(row, given, email_column, rules, source, counts)
                    if reason is None and self._skipping:
                        self._read_keys.add(email_key(email))
                    digest = row.digest if counts.field_problems == problems_before else 0  # a memo entry is
                    # made only of a row with every value converted: its problems are reported on every run
                if reason is not None:
                    counts.invalid += 1
                    self._on_problem(RowProblem(source.segment, row.partition, row.row, given, reason))
                elif (self._erased and (erased_at := self._erased.get(subscriber_hash(email)))
                      and not streamer.sent_before(email)):  # an earlier attempt's chunk refuses and counts it
                    counts.erased += 1
                    self._on_problem(RowProblem(source.segment, row.partition, row.row, given,
                                                erased_reason(erased_at), kind="erased"))
                else:
                    streamed = streamer.take(email, fields, source, row)
                    if streamed:
                        counts.members += 1
                    spill.add(email, (email, index, row.partition, row.row, fields, streamed, digest))
        self._unsent = streamer.finish()
        if self._unsent:
            counts.members -= len(self._unsent)  # planned the usual way after all (counted again there)

    def _skip(self, entries: array, source: SegmentInput, counts: SegmentCounts) -> None:
        """Rows the memo knows (by these entries), each with its contact as it was: members settled, as full planning
        would find them. The reader asked the memo as it read each row, and nothing was parsed in between."""
        self._known += len(entries)
        counts.members += len(entries)
        counts.settled += len(entries)
        if (tag := self._removable.get(source.tag.casefold())) is not None:
            self.departures[tag].carrying += len(entries)  # each contact carries this tag and no other kept in step
        flags, emails, twice = self._skipped_at, self._skips.memo.emails, self._twice  # type: ignore[union-attr]
        for at in entries:  # a flag an entry: the addresses are gathered once, when the rows have been read
            if flags[at]:  # the same row twice
                twice.add(emails[at])
            flags[at] = 1

    def _skipped_keys(self) -> None:
        """Once the rows are read: the email keys of the skipped rows that planning asks about (those of the rows read,
        and of the contacts known as they were but spilled, read in full, which `_merge` passes over when their row
        was skipped; a spilled contact the memo does not know has no skipped row: no entry of its address is
        unchanged), and the next memo's entries for them. The keys of all skipped rows, a million in a refresh, made a
        set that took a third of a second. Two skipped rows of one address are one row read twice (`_twice`): two
        entries of one address are never both unchanged, as the audience holds one contact line of it (one entry a
        line, `contact_entries`), or lists it twice and then neither is (`_Held.close`). That holds for a memo whose
        entries' email keys are those of their contacts, as every memo a plan writes; a memo damaged otherwise is not
        checked for it (nothing is stored to check it by)."""
        skips: RowSkips = self._skips  # type: ignore[assignment]
        self._asked.update(self._read_keys)  # not a union: the audience read in full spills every contact
        self._skipped = set(filter(self._asked.__contains__, compress(skips.memo.emails, self._skipped_at)))
        skips.next.add_flagged(skips.memo, self._skipped_at)

    def _conflicts(self) -> set[int]:
        """Email keys of skipped rows that are no longer their member's only row: another row with the address was
        read (before or after it), or two skipped rows have it."""
        return {key for key in self._read_keys if key in self._skipped} | self._twice

    def _read_skipping(self, folder: str, spill: _Spill, streamer: _Streamer) -> _Spill:
        """The rows, those the memo knows skipped; read again (`_read_again`) when skipped rows conflict. The problems
        of the first reading are held back (in a spill file) and reported only if its counts stand."""
        held, report = _Spill(folder, "problems"), self._on_problem
        self._on_problem = lambda problem: held.add("", tuple(vars(problem).values()))  # one bucket: in order
        try:
            self._spill_rows(spill, streamer)
        except BaseException:
            held.discard()
            spill.discard()
            raise
        finally:
            self._on_problem = report
        held.close()
        self._skipped_keys()
        conflicts = self._conflicts()
        if conflicts:
            held.discard()
            return self._read_again(spill, _Spill(folder, "rows-again"), conflicts)
        for problem in held.read(_bucket("")):
            report(RowProblem(*problem))
        return spill

    def _read_again(self, spilled: _Spill, spill: _Spill, conflicts: set[int]) -> _Spill:
        """Read every row once more, those of `conflicts` parsed this time, counting and reporting afresh."""
        spilled.discard()
        self._skips.forget(conflicts)  # type: ignore[union-attr]
        self._skips.next = MemoWriter()  # type: ignore[union-attr]
        self._skipped, self._twice, self._read_keys, self._known = set(), set(), set(), 0
        self._skipped_at = bytearray(len(self._skipped_at))
        self.counts = {source.segment: SegmentCounts() for source in self._inputs}
        self.departures = {tag: TagDepartures() for tag in self._removable.values()}
        self._spill_rows(spill, _Streamer(self._streamed_before))
        self._skipped_keys()
        return spill

    def _partition_rules(self, values: Mapping[str, str], fallback: tuple[str, list[_FieldRule]]) -> tuple[str, list[_FieldRule]]:
        try:
            return self._rules(resolve_columns([self._mapping.email, *self._mapping.merge_fields.values()], list(values)))
        except ColumnMismatch:
            return fallback  # its rows are reported invalid, naming the mapped column they lack

    def _accept(self, row: SourceRow, given: str | None, email_column: str, rules: list[_FieldRule],
                source: SegmentInput, counts: SegmentCounts) -> tuple[str, dict[str, Any], str | None]:
        """(email, merge fields, None) for a sendable row, or (.., .., why not). A value that cannot be converted
        is left out and reported; the row is still sent."""
        if given is None:
            return "", {}, f"has no column '{email_column}' (the mapped email column); fix the mapping or the export"
        email = normalize_email(given)
        problem = email_problem(email)
        if problem:
            return email, {}, f"column '{email_column}': {problem}"
        fields: dict[str, Any] = {}
        values = row.values or {}
        for rule in rules:
            raw = values.get(rule.column)
            if raw and (raw := raw.strip()):
                try:
                    fields[rule.tag] = rule.convert(raw)
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                    counts.field_problems += 1
                    self._on_problem(RowProblem(
                        source.segment, row.partition, row.row, given,
                        f"column '{rule.column}' (merge field {rule.tag}, type {rule.kind}) cannot be converted: expected "
                        f"{rule.expected}; the member was sent without this value: fix it at the source",
                        kind="field", column=rule.column, merge_tag=rule.tag))
        return email, fields, None

    def _merge(self, rows: Iterator[tuple], existing: Iterator[tuple]) -> Iterable[Member]:
        """One bucket's members in first-row order, duplicates folded in and the audience's state attached."""
        members: dict[str, Member] = {}
        digests: dict[str, int] = {}  # email -> digest of its member's only row (0: none, or more than one row)
        streamed: set[str] = set()  # sent while the rows were read (counted then): not planned again
        sources = [(source.segment, source.tag, source.tag.casefold(), self.counts[source.segment])
                   for source in self._inputs]
        for email, index, partition, row, fields, was_streamed, digest in rows:
            segment, tag, folded, counts = sources[index]
            member = members.get(email)
            if member is None:
                members[email] = Member(email, fields, [tag], RowRef(segment, partition, row))
                digests[email] = digest
                if was_streamed and email not in self._unsent:
                    streamed.add(email)
                else:
                    counts.members += 1
                continue
            counts.duplicates += 1
            digests[email] = 0
            if folded not in {carried.casefold() for carried in member.tags}:
                member.tags.append(tag)
            for merge_tag, value in fields.items():
                member.merge_fields.setdefault(merge_tag, value)
        read: dict[str, tuple] = {}
        for record in existing:  # a contact listed twice (e.g. again by a read of archived ones): the last read wins
            read[record[0]] = record
        departed: list[Member] = []
        removable = self._removable
        # (contact's tags, member's tags) -> (tags kept in step it carries, those it leaves): few distinct pairs
        untags: dict[tuple[tuple[str, ...], tuple[str, ...] | None], tuple[list[str], list[str]]] = {}
        self._candidates = candidates = {}
        skipped = self._skipped
        for record in read.values():
            email = record[0]
            member = members.get(email)
            if member is None and skipped and email_key(email) in skipped:
                continue  # the member of a skipped row: settled (and its tag counted) when the row was read
            if member is None and len(record) == 2 and not (
                    self._needles and line_mentions(record[1], self._needles, ignore_case=True)):
                continue  # in no row, and carries no tag kept in step (ignoring case, as tags compare)
            if len(record) == 2:
                status, merge_fields, tags = line_values(record[1])
            else:
                _, status, merge_fields, tags, _ = record
            current = ExistingMember(email, status, merge_fields, tuple(tags))
            if member is not None:
                member.existing = current
                if digests[email]:  # a memo entry if it settles: the row, and its contact as the audience holds it
                    candidates[email] = digests[email], contact_digest(
                        record[1] if len(record) == 2 else member_line(ExistingMember(record[4], status, merge_fields, tags)))
            if not removable or not tags or status == "archived" or email in streamed:  # archived contacts are
                # outside the audience: nothing to untag; a streamed member was written by this run (by an attempt
                # that crashed, when the audience shows it), not one the untag guard weighs
                continue
            key = (current.tags, None if member is None else tuple(member.tags))
            if (found := untags.get(key)) is None:
                carried = [removable[folded] for folded in {tag.casefold() for tag in current.tags} if folded in removable]
                kept = set() if member is None else {tag.casefold() for tag in member.tags}
                found = untags[key] = carried, sorted(tag for tag in carried if tag.casefold() not in kept)
            carried, leaving = found
            if not carried:
                continue
            leaving = list(leaving)
            for tag in carried:
                self.departures[tag].carrying += 1
            for tag in leaving:
                self.departures[tag].leaving += 1
            if member is not None:
                member.untag = leaving
            elif leaving:
                departed.append(Member(email, {}, [], RowRef("", "", 0), current, leaving))
        planned = [m for m in members.values() if m.email not in streamed] if streamed else list(members.values())
        # by address: the order the audience was read in is not the input's (a plan with a memo holds known contacts
        # apart and reads them last)
        return planned + sorted(departed, key=lambda member: member.email)


class _Streamer:
    """Decides, row by row, which members are streamed (see the module's docstring) and hands them out in chunks.

    Emails seen so far are kept in a Bloom filter (10 bits an expected row, 4 probes): it never forgets an email, and
    the rare email it wrongly believes seen is simply planned the usual way. The audience is a sorted array of email
    hashes; a hash shared by two emails also only means "planned the usual way".
    """

    PROBES = 4
    FILTER_ROWS_MOST = 4_000_000  # the filter is sized for this many rows at most (10 bits a row, 5 MB): past it more
    # addresses are wrongly believed seen, and those members are planned the usual way instead of streamed
    WORTH_IT = 4  # streaming starts only if the audience lacked the email of at least 1 in WORTH_IT rows taken so far

    def __init__(self, before: set[str], send: Callable[[list[Member]], None] | None = None,
                 audience: array | None = None, rows_at_most: int = 0, chunk_size: int = 500,
                 mapped_fields: int = 0, permit: Callable[[], bool] | None = None) -> None:
        self._before = before
        self._send = send
        self._permit = permit
        self._taken = 0  # rows offered to `take`, until streaming is settled
        self._new = 0  # ... of which the audience lacks the email
        self._audience = audience if audience is not None else array("q")
        self._bits = bytearray(min(max(rows_at_most, 1024), self.FILTER_ROWS_MOST) * 10 // 8 + 1) if send else bytearray()
        self._size = len(self._bits) * 8
        self._chunk_size = chunk_size
        self._mapped_fields = mapped_fields
        self._chunk: list[Member] = []
        self.sent = 0  # members handed to `send`
        self.sent_earlier = 0  # rows of members an earlier attempt streamed

    def sent_before(self, email: str) -> bool:
        """Whether an earlier attempt streamed this member (and this is its first row)."""
        return email in self._before

    def take(self, email: str, fields: dict[str, Any], source: SegmentInput, row: SourceRow) -> bool:
        """True when this row's member is streamed (now, or by an earlier attempt): it counts as a member here."""
        if self._before and email in self._before:
            if self._send is not None:
                self._first_sight(email)  # so that no later row of it is streamed
            self._before.discard(email)  # its first row; any later one is a duplicate
            self.sent_earlier += 1
            return True
        # An email in the audience is never streamed, so its rows need not be noted as seen (asked first: in a
        # refresh nearly every row is); every other row is noted, streamed or not.
        self._taken += 1
        if self._send is None or self._in_audience(email):
            return False
        self._new += 1
        if not self._first_sight(email) or len(fields) < self._mapped_fields:
            return False
        self._chunk.append(Member(email, fields, [source.tag], RowRef(source.segment, row.partition, row.row)))
        if len(self._chunk) == self._chunk_size:
            if self.sent == 0 and not self._settled():
                self._send = None  # streaming is off: these members are planned the usual way (`finish`)
                return True
            self._send(self._chunk)
            self.sent += len(self._chunk)
            self._chunk = []
        return True

    def _settled(self) -> bool:
        """Whether streaming goes ahead (asked once, before the first chunk goes out)."""
        worth_it = self._new * self.WORTH_IT >= self._taken
        permit, self._permit = self._permit, None
        return worth_it and permit is not None and permit()

    def finish(self) -> set[str]:
        """The emails of the last, part-filled chunk: not sent, but left to the usual chunks, so that a run has one
        part-filled chunk (one call) at most."""
        return {m.email for m in self._chunk}

    def _first_sight(self, email: str) -> bool:
        h = hash(email) & 0xFFFFFFFFFFFFFFFF
        low, step = h & 0xFFFFFFFF, (h >> 32) | 1
        bits, new = self._bits, False
        for probe in range(self.PROBES):
            bit = (low + probe * step) % self._size
            mask = 1 << (bit & 7)
            if not bits[bit >> 3] & mask:
                bits[bit >> 3] |= mask
                new = True
        return new

    def _in_audience(self, email: str) -> bool:
        audience, h = self._audience, hash(email)
        at = bisect_left(audience, h)
        return at < len(audience) and audience[at] == h


def erased_reason(erased_at: str) -> str:
    """What the per-row report says of a row left out because its person asked to be erased (no address in it)."""
    return f"erased on {erased_at[:10]} at the person's request"


plan_export = Plan  # the name callers use: plan_export(inputs, mapping, on_problem=...) -> Plan
