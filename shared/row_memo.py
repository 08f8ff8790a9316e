"""The row memo: which rows a destination's last plan found already in step, so a refresh can skip them unread.

Why: a scheduled refresh where 1 % of a million profiles changed should cost what changed, yet planning decodes,
converts and compares every row with the audience (about 50 us a row). A row whose text is as it was, and whose
contact is as it was, would be found in step again: the memo lets planning count it unchanged from its digest alone.

Rules:
- An entry is (row digest, contact digest, email key), recorded by a plan for each member it settled (in the audience
  as wanted: no call) that came from one row alone (on one line, or on the lines up to where its quotes pair up),
  with no value it could not convert. The row digest covers the record's text (its final line break left out),
  seeded with what else decides how it reads (`row_seed`), so the same text under another header or mapping, or in
  another segment, is another row. The contact digest covers
  the contact's audience mirror line (shared/members.py `contact_line`), which holds its address, status, merge
  fields and tags; the email key is a digest of the normalized address.
- A later plan skips a row when the memo holds its digest and the audience it read holds that entry's contact line
  unchanged: full planning would settle it again, because settling depends only on that row, that contact and the
  plan's configuration, which `fingerprint` covers (a memo of another fingerprint is not used). A row whose address
  another row shares is no longer its member's only row, so such skips are undone by planning the rows again
  (shared/planning.py).
- The memo holds digests only (no address, no value), yet they stand for people: it lives beside the audience mirror
  and is deleted with it (an erasure, the destination's deletion, the retention sweep; shared/audience_mirror.py).
- Digests are 64-bit XXH3 (xxhash): the chance that a changed row takes an unchanged row's digest is about n / 2^64
  (n entries). Not a secret: whoever could craft a collision can write the segment's rows anyway.

Plain module: no storage here.
"""
from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from itertools import compress, repeat
from pathlib import Path
from typing import NamedTuple

import xxhash

_xxh3 = xxhash.xxh3_64_intdigest

FORMAT = 1
_MAGIC = b"rowmemo\n"
_NOT = bytes.maketrans(b"\x00\x01", b"\x01\x00")
_CONTACT_SEED = 0x636F6E74616374  # "contact"
_EMAIL_SEED = 0x656D61696C  # "email"
_INDEX_SLICE = 1 << 16  # entries indexed in one call (`_by_contact`)
_RUN_SHARE = 64  # `add_flagged` copies runs of flags while there is at most one run in this many entries


def digest(text: str, seed: int) -> int:
    """An unsigned 64-bit digest of `text` (XXH3; a lone surrogate, as the reader makes of a byte it cannot decode,
    encoded as itself: it never fails)."""
    return _xxh3(text.encode("utf-8", "surrogatepass"), seed)


@cache
def _rules_version() -> str:
    """A digest of the code whose rules decide whether a row settles (reading, converting, comparing, the mirror's
    lines): a deployment that changes any of it makes earlier memos unusable, with no version to remember to bump."""
    root = Path(__file__).resolve().parent
    sources = ["planning.py", "segment_rows.py", "emails.py", "members.py", "row_memo.py", "mailchimp/merge_values.py",
               "exports/planner.py"]
    return f"{digest(''.join((root / name).read_text(encoding='utf-8') for name in sources), 0):016x}"


def row_seed(segment: str, tag: str, mapped: Mapping[str, str], columns: Iterable[str], delimiter: str,
             most_fields: int) -> int:
    """What makes the same record text another row: its segment, its tag, the segment's mapped columns (mapped name
    -> column, resolved from its first header: a partition's rules follow from them and its own header), the
    partition's columns and delimiter, and SEGMENT_MAX_FIELDS (past it a row is invalid)."""
    return digest(json.dumps([segment, tag.casefold(), sorted(mapped.items()), list(columns), delimiter, most_fields],
                             ensure_ascii=False), 0)


def row_digest(text: str, seed: int) -> int:
    """A record's digest: its text without the final line break (LF or CRLF end it alike). `digest` written out: the
    reader asks this of every row."""
    return _xxh3(text.rstrip("\r\n").encode("utf-8", "surrogatepass"), seed)


def contact_digest(line: str) -> int:
    """`digest` written out."""
    return _xxh3(line.encode("utf-8", "surrogatepass"), _CONTACT_SEED)


def contact_digests(lines: Iterable[str]) -> Iterator[int]:
    """`contact_digest` of each line, without a Python call per line: planning asks it of every contact."""
    return map(_xxh3, map(str.encode, lines, repeat("utf-8"), repeat("surrogatepass")), repeat(_CONTACT_SEED))


def email_key(email: str) -> int:
    """A normalized address's key (conflicts between a skipped row and another row of the same address)."""
    return digest(email, _EMAIL_SEED)


def fingerprint(email_column: str, merge_fields: Mapping[str, str], merge_types: Mapping[str, str],
                tags: Mapping[str, str], removable: Iterable[str], erased: Iterable[str]) -> str:
    """What else settling a row depends on: the mapping, the merge fields' types, each segment's tag, the tags kept
    in step and the erasures the run honours (subscriber hashes: a person erased since, even before the erasure is
    processed and deletes every memo, is refused, not skipped). FORMAT changes with the rules of planning."""
    described = json.dumps({"format": FORMAT, "email": email_column, "fields": sorted(merge_fields.items()),
                            "types": sorted((tag, merge_types.get(tag, "text")) for tag in merge_fields),
                            "tags": sorted(tags.items()), "removable": sorted({tag.casefold() for tag in removable}),
                            "erasures": sum(digest(hashed, 0) for hashed in erased) % 2 ** 64,  # in any order
                            "rules": _rules_version()}, ensure_ascii=False)
    return f"{digest(described, 0):016x}"


def _little_endian(values: array) -> array:
    if sys.byteorder != "little":
        values.byteswap()
    return values


class RowMemo:
    """A loaded memo: three columns (row digest, contact digest, email key), and an index by row digest."""

    def __init__(self, rows: array, contacts: array, emails: array) -> None:
        self.rows, self.contacts, self.emails = rows, contacts, emails

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def empty(cls) -> RowMemo:
        return cls(array("Q"), array("Q"), array("Q"))

    def index(self) -> dict[int, int]:
        """Row digest -> entry (about 110 MB for a million entries)."""
        return dict(zip(self.rows, range(len(self.rows))))


class StoredMemo(NamedTuple):
    """A memo as stored, read ahead of planning (`read_stored`): its fingerprint and entries (None when it cannot be
    read), and its entries by contact digest, indexed meanwhile: a refresh's planning asks that first, of every
    contact, and its calls to Mailchimp before planning leave the time to make it."""

    fingerprint: str | None
    memo: RowMemo | None
    by_contact: dict[int, int] | None


def read_stored(data: bytes) -> StoredMemo:
    """The memo in `data` (as `MemoWriter.to_bytes` wrote it), indexed by contact; all None when it cannot be read
    (planning then reads every row, as without a memo). A memo of another fingerprint (a mapping, tags or planning
    code changed since) is indexed for nothing: that is known only once planning begins."""
    try:
        if not data.startswith(_MAGIC):
            return StoredMemo(None, None, None)
        head_end = data.index(b"\n", len(_MAGIC))
        head = json.loads(data[len(_MAGIC):head_end])
        count = int(head["entries"])
        body = memoryview(data)[head_end + 1:]
        if head.get("format") != FORMAT or not isinstance(head.get("fingerprint"), str) or count < 0 \
                or len(body) != 24 * count:
            return StoredMemo(None, None, None)
        memo = RowMemo(*(_little_endian(array("Q", bytes(body[8 * count * n:8 * count * (n + 1)]))) for n in range(3)))
    except Exception:  # noqa: BLE001 - any memo that cannot be read is none: every row is read, no run fails
        return StoredMemo(None, None, None)
    return StoredMemo(head["fingerprint"], memo, _by_contact(memo.contacts))


def _by_contact(contacts: array) -> dict[int, int]:
    """Contact digest -> entry (the last entry of a digest held twice), made a slice at a time: one call making it
    whole would hold the interpreter's lock for a third of a second at a million entries, and it is made in a thread
    of its own while the planning thread waits on Mailchimp."""
    index: dict[int, int] = {}
    for start in range(0, len(contacts), _INDEX_SLICE):
        index.update(zip(contacts[start:start + _INDEX_SLICE], range(start, start + _INDEX_SLICE)))
    return index


class MemoWriter:
    """The entries of the next memo."""

    def __init__(self) -> None:
        self._rows, self._contacts, self._emails = array("Q"), array("Q"), array("Q")

    def add(self, row: int, contact: int, email: int) -> None:
        self._rows.append(row)
        self._contacts.append(contact)
        self._emails.append(email)

    def add_flagged(self, memo: RowMemo, flags: bytes | bytearray) -> None:
        """The entries of `memo` whose flag (0 or 1) is set, as they are, in the memo's order. A refresh flags most
        entries, in long runs: a run is copied as a slice of each column (a third of the time, at a million entries),
        unless runs are many (one by one is then cheaper)."""
        columns = ((self._rows, memo.rows), (self._contacts, memo.contacts), (self._emails, memo.emails))
        if flags.count(b"\x00\x01") * _RUN_SHARE > len(flags):
            for mine, theirs in columns:
                mine.extend(compress(theirs, flags))
            return
        start, end = 0, len(flags)
        while (start := flags.find(1, start)) != -1:
            stop = flags.find(0, start)
            stop = end if stop == -1 else stop
            for mine, theirs in columns:
                mine.extend(theirs[start:stop])
            start = stop

    def to_bytes(self, the_fingerprint: str) -> bytes:
        head = json.dumps({"format": FORMAT, "fingerprint": the_fingerprint, "entries": len(self._rows)}).encode("ascii")
        parts = [_little_endian(array("Q", values)) for values in (self._rows, self._contacts, self._emails)]
        return b"".join([_MAGIC, head, b"\n", *(part.tobytes() for part in parts)])


class RowSkips:
    """One plan's use of a memo, shared by the plan and its segments' row readers: which rows are known (skipped
    unread), and the entries of the next memo."""

    def __init__(self, memo: RowMemo, by_contact: dict[int, int] | None = None) -> None:
        """`by_contact`: `contact_entries` of this memo, made already (`StoredMemo`)."""
        self.memo = memo
        self.next = MemoWriter()
        self._index: dict[int, int] = {}  # row digest -> entry whose contact the audience holds as it was
        self._by_contact = by_contact

    def for_segment(self, segment: str, tag: str, mapped: Mapping[str, str]) -> SegmentDigests:
        """`mapped`: the segment's columns as planning resolves them (SegmentInput.columns)."""
        return SegmentDigests(self, segment, tag, mapped)

    def contact_entries(self) -> dict[int, int]:
        """Contact digest -> entry: what an audience's contact is known by. Given to its caller, not kept (the one made
        ahead is given once)."""
        made, self._by_contact = self._by_contact, None
        return made if made is not None else _by_contact(self.memo.contacts)

    def audience_read(self, unchanged: Iterable[int]) -> None:
        """The entries whose contact the audience holds as it was: rows are known from now on (none before)."""
        flags = bytearray(len(self.memo))
        for at in unchanged:
            flags[at] = 1
        self._index = self.memo.index()
        self._drop(flags.translate(_NOT))  # the entries whose contact changed

    def lookup(self) -> Callable[[int], int | None]:
        """Row digest -> the memo entry the row is known by, or None. The index's own `get`, with no Python call: a
        reader asks it of every row (the index is set when the audience has been read, and changes only in place)."""
        return self._index.get

    def may_know(self) -> bool:
        """Whether a row can be known now: not before the audience is read, nor with an empty memo (a first export)."""
        return bool(self._index)

    def forget(self, keys: set[int]) -> None:
        """Rows of these addresses (email keys) are known no more: another row has the address."""
        self._drop(map(keys.__contains__, self.memo.emails))

    def _drop(self, selected: Iterable[object]) -> None:
        """Take the selected entries (one truth value an entry) out of the index, each only where its row digest still
        leads to it (entries sharing a digest: the index keeps the last)."""
        index, rows = self._index, self.memo.rows
        for at in compress(range(len(self.memo)), selected):
            if index.get(rows[at]) == at:
                del index[rows[at]]


class SegmentDigests:
    """The `RowDigests` of one segment's reader (shared/segment_rows.py)."""

    def __init__(self, skips: RowSkips, segment: str, tag: str, mapped: Mapping[str, str]) -> None:
        self._segment, self._tag, self._mapped = segment, tag, mapped
        self._skips = skips

    @property
    def entry(self) -> Callable[[int], int | None]:
        """Asked by the reader once a partition (the audience has been read by then: a plan reads it first)."""
        return self._skips.lookup()

    def may_know(self) -> bool:
        return self._skips.may_know()

    def seed(self, columns: list[str], delimiter: str, most_fields: int) -> int:
        return row_seed(self._segment, self._tag, self._mapped, columns, delimiter, most_fields)

