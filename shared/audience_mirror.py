"""The audience mirror: a copy of each destination's audience in the work container, refreshed with what changed.

Why: planning must know every contact of the audience (status, merge fields, tags) to send only differences and never
re-subscribe anyone, and reading a whole audience costs one call per 1,000 contacts: for a million, well over a
thousand calls a run (about 2,000 by the issue's count) and most of a scheduled refresh's cost, however little changed.
So each destination keeps a mirror of its audience and a run reads only what changed since the mirror was written.

Rules:
- Where: `mirrors/<destinationId>/<audienceId>/` in the work container. `manifest.json` names the current version
  (`v<time>Z-<random>/`, named for the `asOf` it was written with), its `asOf` (taken before the read that made it, or
  that last found nothing changed since, started: later than the version's name says once a refresh kept it as it
  was), when the audience was last read in full, the contacts per status, and the tags as they were at `asOf`
  (id -> name). A version holds the contacts hash-partitioned by email into BUCKETS buckets as planning partitions them
  (shared/planning.py, whose spill files the mirror uses), a line a contact, gzip'd, in parts of about PART_CONTACTS
  contacts: a merge holds one bucket in memory, never the whole audience (and, compressed, the parts still to merge:
  a few tens of bytes a contact, downloaded while Mailchimp is asked what changed).
- Incremental, while the audience was read in full less than AUDIENCE_MIRROR_MAX_AGE_HOURS ago: the members changed
  since `asOf` less CLOCK_MARGIN (`since_last_changed`), the archived ones asked for apart (a listing without a status
  filter may leave them out: MailchimpClient.iter_audience), then Mailchimp's count of each status. A tag's members
  can change without moving their `last_changed` (so the local Mailchimp; unconfirmed for Mailchimp), so the members
  of every tag updated since (`updated_at`), new or renamed are read again, and a tag gone is taken off everyone. So
  a run after one that changed a tag's members reads that tag's members again: when the changes and those members
  outnumber the audience (the run after one that wrote everyone), a full read is cheaper and is made instead. All
  of it is merged into a new version in a temporary folder, and the planner gets the contacts once it is checked.
  When nothing changed (no contact listed, no tag read again or gone: most scheduled runs), nothing is merged and no
  version written (that rewrite cost about 6 s of a 36 s refresh at a million contacts): the stored parts are
  downloaded and checked whole before the planner gets any contact (each part's digest against the one the manifest
  recorded as it was written, and the manifest's counts against Mailchimp's), and a new manifest names the same
  version with the new `asOf`. A part as written decompresses to the contacts counted when it was written, so it is
  decompressed once, as planning reads it (decompressing every part to check it cost about a second at a million).
- In full (iter_audience, the new mirror spilled as it streams) when: there is no mirror; its manifest or a part
  cannot be read, or is of another FORMAT (a warning: a bad mirror never fails a run); the last full read is older
  than AUDIENCE_MIRROR_MAX_AGE_HOURS (which also bounds any drift the checks cannot see); or the merged (or kept)
  mirror's per-status counts differ from Mailchimp's. That is how a contact deleted permanently in Mailchimp, which no
  listing shows, is noticed (and a change made while the changes were read: the run reads in full rather than guess).
- In part, in place of a full read made for want of a mirror to refresh: a run whose rows are few against the
  audience looks up only the contacts it needs (shared/member_lookup.py, `instead`). They are not the audience, so
  the mirror is left as it was: the next run that cannot look up reads in full, or refreshes, as before.
- Writing: the new version's parts, then the manifest (the switch), then older versions are deleted (a version kept
  unchanged: its new manifest alone; older versions left by a failed deletion wait for the next version). A crash or a
  storage error part-way leaves the previous mirror in use, never a half one; the run itself goes on (its contacts are
  read already), and a later run reads in full if it must.
- Personal data (addresses, merge values such as names, statuses, tags): a destination's mirrors are deleted with it
  (shared/destination_service.py), an erasure deletes every mirror (shared/erasures.py; each destination's next run
  reads in full), and the retention sweep deletes a mirror neither written nor found unchanged (its manifest's `asOf`)
  for RETENTION_PERSONAL_DAYS (`sweep_mirrors`).
  Log lines name destinations, audiences and counts, never a contact.
- A run may read the audience before such a deletion and write its mirror after it, which would store again what was
  deleted (the person an erasure just deleted from Mailchimp, the contacts of a destination just deleted). So whoever
  deletes mirrors first changes a deletions mark (`note_mirrors_deleted`; outside MIRRORS_PREFIX): an erasure changes
  ERASURES_MARK once Mailchimp has forgotten the person, a destination's deletion its own mark once its credential is
  removed. A run takes both marks of its destination (`marks`) before it reads anything of it, its record included,
  and a mirror is kept only if they are as they were then: checked after its parts are uploaded and before the
  manifest switches to them (a version kept unchanged: before its new manifest is written); otherwise its parts are
  deleted (also when an upload failed; those of a version kept unchanged are left to the deletion, and its manifest as
  it was) and the run goes on with the contacts it read (its chunks refuse anyone erased since planning). Either a
  mark changed before the check (the mirror is not kept), or the deleting began after it, when the parts are already
  there to be deleted: a manifest switched afterwards names parts that are gone, which the next run reads as unusable
  (a full read). The manifest records the erasures mark its version was read under, and a mirror is refreshed only
  under the same one: a refresh that began after an erasure could otherwise carry the person over from the stored
  parts it read before they were deleted. The manifest itself holds counts and tag names, no contact.

Plain module: the work container and Mailchimp are reached through the protocols below (BlobFolder and
MailchimpClient in the app).
"""
from __future__ import annotations

import contextvars
import gzip
import io
import json
import logging
import os
import secrets
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import xxhash

from shared.mailchimp.models import Tag
from shared.mailchimp.upsert import ALL_STATUSES
from shared.members import (Contact, ExistingMember, contact_line, line_contact, line_email, line_mentions, line_status,
                            member_line, tag_needles)
from shared.planning import BUCKETS, _Spill

log = logging.getLogger(__name__)

UNUSABLE = "mirror unusable: "  # how the reason begins when a mirror must be replaced by a full read

FORMAT = 2  # of the manifest and the parts; a mirror of another format is read again in full
MIRRORS_PREFIX = "mirrors/"
ERASURES_MARK = "mirrors-deleted.json"  # changed by each erasure (note_mirrors_deleted); not under the prefix
DESTINATION_MARKS = "mirrors-deleted/"  # <destinationId>.json: changed when that destination is deleted
MANIFEST = "manifest.json"
ROW_MEMO = ".memo"  # how a row memo's name ends (shared/row_memo.py): rows-<version>.memo beside the versions
CLOCK_MARGIN = timedelta(minutes=5)  # changes are asked for since `asOf` less this: our clock and Mailchimp's may differ
ARCHIVED = "archived"
FIELDS = ("email_address", "status", "merge_fields", "tags")  # what iter_audience reads of a contact
PART_CONTACTS = 16384  # contacts a stored part holds, about: a part is one blob to read or write
WRITERS = 8  # parts uploaded, or downloaded, at once
COMPRESSION = 1  # gzip level: the fastest; a mirror is a few tens of bytes a contact even so
_VERSION_TIME = "%Y%m%dT%H%M%SZ"

# Stored, a contact is one line (shared.members.contact_line), so a merge reads the address and status of a contact it
# does not change without decoding the rest; each bucket ends with an empty line.


class MirrorStore(Protocol):
    """The work container (BlobFolder in the app)."""

    def list_names(self, prefix: str = "") -> Iterator[str]: ...
    def exists(self, name: str) -> bool: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...


class AudienceReader(Protocol):
    """What the mirror asks Mailchimp (MailchimpClient)."""

    def iter_audience(self, list_id: str) -> Iterator[ExistingMember]: ...
    def iter_members(self, list_id: str, *, fields: Sequence[str] = ..., status: str | None = None,
                     since_last_changed: datetime | None = None) -> Iterator[ExistingMember]: ...
    def count_members(self, list_id: str, status: str | None = None,
                      since_last_changed: datetime | None = None) -> int: ...
    def list_tag_details(self, list_id: str) -> list[Tag]: ...
    def iter_tag_members(self, list_id: str, tag_id: int) -> Iterator[str]: ...


class MarkStore(Protocol):
    def write_bytes(self, name: str, data: bytes) -> None: ...


def note_mirrors_deleted(store: MarkStore, destination_id: str | None = None) -> None:
    """Change the deletions mark of every mirror (an erasure: `destination_id` None) or of one destination's, so that
    no mirror whose run took the marks before is kept (see the module's docstring). Call it once nothing that mirror
    could be read from still holds what goes (an erasure: after Mailchimp's deletions; a destination: after its
    credential is removed) and before deleting the mirrors. A failure is raised: the deletion must not go ahead
    unnoticed by the runs reading meanwhile."""
    name = ERASURES_MARK if destination_id is None else _destination_mark(destination_id)
    store.write_bytes(name, json.dumps({"at": datetime.now(UTC).isoformat(), "mark": secrets.token_hex(8)}).encode())


def _destination_mark(destination_id: str) -> str:
    return f"{DESTINATION_MARKS}{destination_id}.json"


@dataclass(frozen=True)
class Marks:
    """A destination's deletions marks as a run took them (`AudienceMirror.marks`); None where one could not be read,
    and then the run keeps no mirror."""

    destination_id: str
    erasures: str | None  # "" before any erasure
    destination: str | None  # "" while the destination was never deleted

    @property
    def known(self) -> bool:
        return self.erasures is not None and self.destination is not None


def destination_prefix(destination_id: str) -> str:
    """Where every mirror of a destination lies (one per audience it has read)."""
    return f"{MIRRORS_PREFIX}{destination_id}/"


class NotRefreshed(Exception):
    """`members(refresh_only=True)`: the mirror could not be refreshed (`why`; `stored`: whether there was one to
    refresh), so the contacts are to be read in full or looked up, which it leaves to a call given this."""

    def __init__(self, why: str, stored: bool) -> None:
        super().__init__(why)
        self.why = why
        self.stored = stored


class _Unusable(Exception):
    """The stored mirror cannot be used; the message says why without naming a contact."""


@dataclass(frozen=True)
class _Manifest:
    version: str
    as_of: datetime
    full_read_at: datetime
    parts: int
    counts: dict[str, int]  # contacts per status, as stored
    tags: dict[int, str]  # tag id -> name at as_of
    erasures: str  # the erasures mark the version was read under ("" before any erasure): refreshed only under it
    digests: tuple[str, ...] = ()  # each part's `_part_digest` as uploaded (set by `_write`)

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": self.version, "asOf": self.as_of.isoformat(),
                           "fullReadAt": self.full_read_at.isoformat(), "parts": self.parts, "counts": self.counts,
                           "tags": {str(tag_id): name for tag_id, name in self.tags.items()},
                           "erasures": self.erasures, "digests": list(self.digests)}).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> _Manifest:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise _Unusable(f"its manifest is not of format {FORMAT}")
        manifest = cls(str(doc["version"]), datetime.fromisoformat(doc["asOf"]),
                       datetime.fromisoformat(doc["fullReadAt"]), int(doc["parts"]),
                       {str(status): int(n) for status, n in doc["counts"].items()},
                       {int(tag_id): str(name) for tag_id, name in doc["tags"].items()},
                       str(doc.get("erasures", "")), tuple(str(part) for part in doc["digests"]))
        if (not 1 <= manifest.parts <= BUCKETS or manifest.as_of.tzinfo is None or manifest.full_read_at.tzinfo is None
                or len(manifest.digests) != manifest.parts):
            raise _Unusable("its manifest does not hold a usable version")
        return manifest


def _parts_for(contacts: int) -> int:
    return min(BUCKETS, max(1, -(-contacts // PART_CONTACTS)))


def _part_of(bucket: int, parts: int) -> int:
    return bucket * parts // BUCKETS


def _part_name(folder: str, version: str, part: int) -> str:
    return f"{folder}{version}/part-{part:02d}.jsonl.gz"


def _bucket_count(parts: int, part: int) -> int:
    """How many buckets a part holds."""
    return sum(1 for bucket in range(BUCKETS) if _part_of(bucket, parts) == part)


def _buckets(data: bytes | str, parts: int, part: int) -> Iterator[list[str]]:
    """The buckets of one part (a file's path or a blob's bytes), each as its contacts' lines, in bucket order."""
    wanted = _bucket_count(parts, part)
    found, lines = 0, []
    with gzip.open(data if isinstance(data, str) else io.BytesIO(data), "rt", encoding="utf-8", newline="\n") as text:
        for line in text:
            if line == "\n":
                yield lines
                found, lines = found + 1, []
            else:
                lines.append(line)
    if lines or found != wanted:
        raise _Unusable(f"a part holds {found} buckets instead of {wanted}")


def _lines(parts: Sequence[bytes | str]) -> Iterator[str]:
    """A version's contacts as stored lines, in bucket order, from its parts (files' paths or blobs' bytes), one part
    decompressed at a time: planning decodes only those it needs."""
    for part, data in enumerate(parts):
        for bucket in _buckets(data, len(parts), part):
            yield from bucket


def _dropping(parts: list[bytes]) -> Iterator[list[str]]:
    """The buckets of every part (blobs' bytes), each part dropped from `parts` once decompressed: a merge holds the
    parts still to merge, compressed, and one bucket."""
    for part in range(len(parts)):
        data, parts[part] = parts[part], b""
        yield from _buckets(data, len(parts), part)


def _part_digest(data: bytes) -> str:
    """What a stored part is checked by: 64-bit XXH3 of its bytes (against damage, not an adversary who could write
    the manifest too)."""
    return xxhash.xxh3_64_hexdigest(data)


class _Draft:
    """A new version written bucket by bucket into local part files, counting contacts per status."""

    def __init__(self, folder: str, parts: int) -> None:
        self.parts = parts
        self.counts: Counter[str] = Counter()
        self.contacts = 0
        self._folder = folder
        self._part = -1
        self._file: Any = None

    def path(self, part: int) -> str:
        return os.path.join(self._folder, f"part-{part:02d}.jsonl.gz")

    def add(self, bucket: int, lines: Iterable[str]) -> None:
        """Buckets come in order, each once, every one of them (an empty one too)."""
        part = _part_of(bucket, self.parts)
        if part != self._part:
            self.close()
            self._file = gzip.open(self.path(part), "wt", encoding="utf-8", newline="\n", compresslevel=COMPRESSION)
            self._part = part
        listed = list(lines)
        self.counts.update(line_status(line) for line in listed)
        self.contacts += len(listed)
        self._file.writelines(listed)
        self._file.write("\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def members(self) -> Iterator[str]:
        """The contacts as stored lines: planning decodes only those it needs."""
        return _lines([self.path(part) for part in range(self.parts)])


def _status_counts(counts: Counter[str]) -> dict[str, int]:
    return {status: counts.get(status, 0) for status in ALL_STATUSES}


def _check_stored(stored: Counter[str], manifest: _Manifest) -> None:
    """The stored parts hold the contacts the manifest counts: else they are damaged, or not of its version."""
    if _status_counts(stored) != _status_counts(Counter(manifest.counts)):
        raise _Unusable("its parts do not hold the contacts its manifest counts")


def _differences(mirror: dict[str, int], mailchimp: dict[str, int]) -> str:
    """Why a full read is needed when the mirror's counts per status are not Mailchimp's ("" when they are): a contact
    deleted for good, which no listing shows, or a change made while the changes were read."""
    differing = ", ".join(f"{status} {mirror[status]:,} here, {mailchimp[status]:,} in Mailchimp"
                          for status in ALL_STATUSES if mirror[status] != mailchimp[status])
    return f"the mirror's counts differ from Mailchimp's ({differing})" if differing else ""


def _why(error: Exception, what: str) -> str:
    """What is wrong with a stored mirror (`what`: the manifest or a part), never naming a contact."""
    return str(error) if isinstance(error, _Unusable) else f"{what} cannot be read ({type(error).__name__})"


def _unusable(where: str, why: str) -> tuple[None, str]:
    """A stored mirror that cannot be used: a warning (a bad mirror never fails a run), and a full read instead."""
    log.warning("audience mirror of %s unusable: %s; reading the audience in full", where, why)
    return None, f"{UNUSABLE}{why}"


def _log_refresh(where: str, since: datetime, changed: int, reread: int, carried: int, contacts: int,
                 kept: bool) -> None:
    """What a refresh read, and whether it kept the stored version (`kept`: nothing changed, no new version written)."""
    log.info("%s read through its mirror: %d changed contact(s) since %s, %d tag(s) read again (%d member(s)); "
             "%d contacts%s", where, changed, since.isoformat(timespec="seconds"), reread, carried, contacts,
             "; nothing changed: its version kept, no new one written" if kept else "",
             extra={"audienceRead": "mirror", "audienceChanges": changed, "audienceContacts": contacts,
                    "audienceVersionKept": kept})


class AudienceMirror:
    def __init__(self, store: MirrorStore, max_age: timedelta, margin: timedelta = CLOCK_MARGIN) -> None:
        """`max_age`: how long after a full read runs may go on reading only changes (AUDIENCE_MIRROR_MAX_AGE_HOURS)."""
        self._store = store
        self._max_age = max_age
        self._margin = margin

    def marks(self, destination_id: str) -> Marks:
        """The deletions marks a run takes before it reads anything of the destination (its record included): its
        mirror is kept only if they are the same when it is written (see the module's docstring)."""
        return Marks(destination_id, self._mark(ERASURES_MARK), self._mark(_destination_mark(destination_id)))

    def _mark(self, name: str) -> str | None:
        try:
            return self._store.read_bytes(name).decode("utf-8") if self._store.exists(name) else ""
        except Exception:  # noqa: BLE001 - unknown means "maybe deleted": the mirror is then not kept, no run fails
            return None

    def members(self, destination_id: str, audience_id: str, client: AudienceReader,
                instead: Callable[[str], Iterable[ExistingMember] | None] | None = None,
                marks: Marks | None = None, refresh_only: bool = False,
                not_refreshed: NotRefreshed | None = None) -> Iterator[Contact]:
        """Every contact of the audience, archived ones included, with the values iter_audience gives (one per
        address: the fold planning makes of iter_audience's repeats); the mirror is brought up to date on the way.
        Contacts of a refreshed mirror come as its stored lines (`contact_line`), which planning decodes only when it
        needs that contact; those of a full read or of `instead` as ExistingMember.
        Mailchimp's errors propagate as iter_audience's do; the mirror's own never do.

        `instead(why the mirror cannot be refreshed)`, asked only when there is none yet or it is too old, may give
        the contacts a run needs in place of a full read (shared/member_lookup.py; None: read in full); the mirror is
        then left as it was, since those contacts are not the audience. An unusable mirror (unreadable, or dated
        ahead of this host's clock) is always replaced by a full read: left in place, a mirror dated ahead would
        later be refreshed from that date, missing what changed before it. `marks`: as the run took them before it
        read the destination (taken now when not given). `refresh_only`: NotRefreshed, before any contact is read in
        full or looked up, when the mirror cannot be refreshed (for a caller that refreshes it ahead of planning),
        which that caller gives back as `not_refreshed` to have them read in full or looked up without trying again."""
        folder = f"{destination_prefix(destination_id)}{audience_id}/"
        where = f"audience {audience_id} of destination {destination_id}"
        started = datetime.now(UTC)  # before anything is read: the new mirror's asOf
        marks = marks or self.marks(destination_id)
        with tempfile.TemporaryDirectory(prefix="mirror-") as work:
            if not_refreshed is None:
                manifest, why = self._current(folder, where, started, marks)
                if manifest is not None:
                    lines, why = self._refresh(folder, where, manifest, audience_id, client, started, work, marks)
                    if lines is not None:
                        yield from lines
                        return
                stored = manifest is not None
                if refresh_only:
                    raise NotRefreshed(why, stored)
            else:
                why, stored = not_refreshed.why, not_refreshed.stored
            if not stored and instead is not None and not why.startswith(UNUSABLE) \
                    and (needed := instead(why)) is not None:
                yield from needed
                return
            yield from self._read_in_full(folder, where, why, audience_id, client, started, work, marks)

    def _row_memos(self, folder: str) -> list[str]:
        """The row memos stored in a mirror's folder, oldest first (their names carry when they were written)."""
        return sorted(name for name in self._store.list_names(f"{folder}rows-") if name.endswith(ROW_MEMO))

    def row_memo(self, destination_id: str, audience_id: str) -> bytes | None:
        """The destination's row memo for this audience as its last plan wrote it, or None (none, or unreadable: the
        run then reads every row)."""
        try:
            memos = self._row_memos(f"{destination_prefix(destination_id)}{audience_id}/")
            return self._store.read_bytes(memos[-1]) if memos else None
        except Exception as error:  # noqa: BLE001 - a memo only saves work: without it every row is read
            log.warning("row memo of audience %s of destination %s not read (%s): every row is read",
                        audience_id, destination_id, type(error).__name__)
            return None

    def keep_row_memo(self, destination_id: str, audience_id: str, data: bytes, marks: Marks) -> None:
        """Store a plan's row memo, then delete the older ones; unless a deletions mark moved since the run took `marks`
        (like the mirror: the memo's digests stand for people an erasure or the destination's deletion may have
        removed meanwhile). Its name says when it was written, for the retention sweep."""
        folder = f"{destination_prefix(destination_id)}{audience_id}/"
        name = f"{folder}rows-{_version(datetime.now(UTC))}{ROW_MEMO}"
        try:
            self._store.write_bytes(name, data)
            now = self.marks(destination_id)
            if now != marks or not now.known:
                self._store.delete_prefix(name)
                log.warning("row memo of audience %s of destination %s not kept: mirrors were deleted, or the "
                            "deletions marks could not be read, while the run planned", audience_id, destination_id)
                return
            for older in self._row_memos(folder):
                if older < name:
                    self._store.delete_prefix(older)
        except Exception as error:  # noqa: BLE001 - the next run reads every row
            log.warning("row memo of audience %s of destination %s not written (%s): the next run reads every row",
                        audience_id, destination_id, type(error).__name__)

    def _current(self, folder: str, where: str, now: datetime, marks: Marks) -> tuple[_Manifest | None, str]:
        """The stored mirror's manifest when it may be refreshed, else (None, why not)."""
        name = folder + MANIFEST
        try:
            if not self._store.exists(name):
                return None, "no mirror yet"
            manifest = _Manifest.from_json(self._store.read_bytes(name))
        except Exception as error:  # noqa: BLE001 - any bad manifest is a full read, never a failed run
            return _unusable(where, _why(error, "its manifest"))
        if manifest.erasures != marks.erasures:  # an erasure since (or its mark unreadable): its parts may hold them
            return _unusable(where, "it was written before an erasure" if marks.erasures is not None
                             else "the erasures mark cannot be read")
        if manifest.as_of > now + self._margin:
            return _unusable(where, "its asOf is in the future")
        if now - manifest.full_read_at > self._max_age:
            hours = (now - manifest.full_read_at).total_seconds() / 3600
            return None, (f"last read in full {hours:.1f} h ago, more than AUDIENCE_MIRROR_MAX_AGE_HOURS "
                          f"({self._max_age.total_seconds() / 3600:g})")
        return manifest, ""

    def _counts(self, client: AudienceReader, list_id: str) -> dict[str, int]:
        with ThreadPoolExecutor(max_workers=len(ALL_STATUSES)) as pool:
            return dict(zip(ALL_STATUSES, pool.map(lambda status: client.count_members(list_id, status), ALL_STATUSES)))

    def _refresh(self, folder: str, where: str, manifest: _Manifest, list_id: str, client: AudienceReader,
                 as_of: datetime, work: str, marks: Marks) -> tuple[Iterator[str] | None, str]:
        """The stored mirror merged with what changed since, written as the new mirror, or kept as it is when nothing
        did (`_keep`): (its contacts as stored lines, "") or (None, why a full read is needed instead). Mailchimp is
        read, and the mirror checked whole, before anything of it is yielded."""
        since = (manifest.as_of - self._margin).replace(microsecond=0)  # Mailchimp's times are whole seconds
        # A version's parts never change: they are fetched (and checked) while Mailchimp is asked what changed; when a
        # full read is needed instead, or Mailchimp answers with an error, they are dropped without waiting for them
        # (a download under way ends on its own, holding the parts, compressed, until then).
        with _unwaited(ThreadPoolExecutor(max_workers=3)) as pool:
            parts_ahead = pool.submit(contextvars.copy_context().run, self._stored_parts, folder, manifest)
            changed_since = pool.submit(contextvars.copy_context().run, client.count_members, list_id,  # the run's
                                        since_last_changed=since)  # log fields and span on its call to Mailchimp
            tags = client.list_tag_details(list_id)
            reread = [tag for tag in tags if tag.updated_at is None or tag.updated_at >= since
                      or manifest.tags.get(tag.id) != tag.name]
            replaced = {tag.name for tag in reread} | (set(manifest.tags.values()) - {tag.name for tag in tags})
            size = sum(manifest.counts.values())
            to_read = changed_since.result() + sum(tag.member_count for tag in reread)
            if to_read > size:  # e.g. the run after one that wrote everyone: a full read costs less
                return None, f"more changed contacts and tag members to read ({to_read:,}) than its copy holds ({size:,})"
            # The archived ones are listed apart, beside the others (one round trip less before planning), and merged
            # after them: they win, as in iter_audience.
            archived = pool.submit(contextvars.copy_context().run, _spilled, work, "archived", client.iter_members(
                list_id, fields=("email_address", "status"), status=ARCHIVED, since_last_changed=since))
            try:
                try:
                    listed = [_spilled(work, "changes", client.iter_members(list_id, fields=FIELDS,
                                                                            since_last_changed=since))]
                finally:
                    wait([archived])  # its files are in `work`: it has ended before anything leaves this block
                listed.append(archived.result())
            except _Unstorable as error:  # nothing is yielded yet: a full read gives the run its contacts
                return None, f"a changed contact cannot be stored ({error})"
            changed = sum(count for _, count in listed)
            # After the changes: a change they missed (a contact deleted for good, one skipped by offset paging while
            # another left the listing, one made between the listing and the counts) shows as a difference below,
            # unless two missed changes cancel out in the counts per status (say a contact deleted for good and the
            # new one of the same status its gap made the listing skip): AUDIENCE_MIRROR_MAX_AGE_HOURS bounds those.
            counts = self._counts(client, list_id)
            if not changed and not replaced:  # nothing to merge (`replaced` names every tag read again)
                return self._keep(folder, where, manifest, parts_ahead, counts, tags, as_of, since, marks)
            carriers = _Spill(work, "tags")
            carried = 0
            for tag in reread:
                for email in client.iter_tag_members(list_id, tag.id):
                    carriers.add(email, (email, tag.name))
                    carried += 1
            carriers.close()
            draft = _Draft(work, _parts_for(size + changed))
            try:
                stored: Counter[str] = Counter()
                for bucket, lines in enumerate(_dropping(parts_ahead.result())):
                    merged: dict[str, str] = {}
                    for line in lines:
                        stored[line_status(line)] += 1
                        merged[line_email(line)] = line
                    for changes, _ in listed:
                        merged.update(changes.read(bucket))
                    if replaced:
                        _retag(merged, replaced, carriers.read(bucket))
                    draft.add(bucket, merged.values())
                draft.close()
                _check_stored(stored, manifest)
            except Exception as error:  # noqa: BLE001 - a part missing or damaged: read in full, never a failed run
                return _unusable(where, _why(error, "a part"))
            if differences := _differences(_status_counts(draft.counts), counts):
                return None, differences
            self._write(folder, where, draft, _Manifest(_version(as_of), as_of, manifest.full_read_at, draft.parts,
                                                        dict(draft.counts), {tag.id: tag.name for tag in tags},
                                                        marks.erasures or ""), marks)
            _log_refresh(where, since, changed, len(reread), carried, draft.contacts, kept=False)
            return draft.members(), ""

    def _keep(self, folder: str, where: str, manifest: _Manifest, parts_ahead: Future[list[bytes]], counts: dict[str, int],
              tags: list[Tag], as_of: datetime, since: datetime, marks: Marks) -> tuple[Iterator[str] | None, str]:
        """The stored version as it is, nothing having changed since it was read: writing it again cost seconds at a
        million contacts (every part decompressed, merged, compressed and uploaded). Its parts are checked whole
        before anything is yielded (once planning has lines, a full read can no longer stand in), then a new manifest
        names the same version with the new `as_of`, only if the deletions marks held (`_marks_held`, as `_write`)."""
        try:
            parts = parts_ahead.result()
        except Exception as error:  # noqa: BLE001 - a part missing or damaged: read in full, never a failed run
            return _unusable(where, _why(error, "a part"))
        if differences := _differences(_status_counts(Counter(manifest.counts)), counts):
            return None, differences
        confirmed = replace(manifest, as_of=as_of, tags={tag.id: tag.name for tag in tags}, erasures=marks.erasures or "")
        if self._marks_held(where, marks) and self._write_manifest(folder, where, confirmed):
            try:
                self._delete_older(folder, manifest.version)  # left by a deletion that failed after an earlier switch
            except Exception as error:  # noqa: BLE001 - storage: a later run deletes them
                log.warning("audience mirror of %s: older versions not deleted (%s); a later run deletes them", where,
                            type(error).__name__)
        _log_refresh(where, since, changed=0, reread=0, carried=0, contacts=sum(manifest.counts.values()), kept=True)
        return _lines(parts), ""

    def _stored_parts(self, folder: str, manifest: _Manifest) -> list[bytes]:
        """The stored version's parts as stored (compressed: a few tens of bytes a contact), downloaded WRITERS at a
        time, each found as it was written (its digest), so holding the contacts the manifest counts."""
        def download(part: int) -> bytes:
            data = self._store.read_bytes(_part_name(folder, manifest.version, part))
            if _part_digest(data) != manifest.digests[part]:
                raise _Unusable(f"part {part} is not as it was written (its digest differs)")
            return data

        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            return list(pool.map(download, range(manifest.parts)))

    def _read_in_full(self, folder: str, where: str, why: str, list_id: str, client: AudienceReader,
                      as_of: datetime, work: str, marks: Marks) -> Iterator[ExistingMember]:
        """iter_audience as it streams, spilled and then written as the new mirror."""
        tags = client.list_tag_details(list_id)  # as at as_of: a tag changed later is read again next time
        spill = _Spill(work, "audience")  # stored lines: the contacts are encoded as they stream by
        listed, unwritable = 0, ""
        for member in client.iter_audience(list_id):
            if not unwritable:
                try:
                    spill.add(member.email, (member.email, member_line(member)))
                except ValueError as error:
                    unwritable = str(error)
            listed += 1
            yield member
        spill.close()
        draft = _Draft(work, _parts_for(listed))
        try:
            if unwritable:
                raise ValueError(unwritable)
            for bucket in range(BUCKETS):
                draft.add(bucket, dict(spill.read(bucket)).values())  # a contact read twice: the last read wins
            draft.close()
        except Exception as error:  # noqa: BLE001 - the temporary folder: the run has its contacts already
            log.warning("audience mirror of %s not written (%s)", where, type(error).__name__)
            return
        self._write(folder, where, draft, _Manifest(_version(as_of), as_of, as_of, draft.parts, dict(draft.counts),
                                                    {tag.id: tag.name for tag in tags}, marks.erasures or ""), marks)
        log.info("%s read in full (%s): %d contacts", where, why, draft.contacts,
                 extra={"audienceRead": "full", "audienceContacts": draft.contacts})

    def _write(self, folder: str, where: str, draft: _Draft, manifest: _Manifest, marks: Marks) -> None:
        """Parts, then the manifest (the switch), then older versions: a failure leaves the previous mirror whole.
        Not kept (its parts deleted again) when a deletions mark moved since the run took `marks`, or when the parts
        could not all be uploaded."""
        def upload(part: int) -> str:
            with open(draft.path(part), "rb") as file:
                data = file.read()
            self._store.write_bytes(_part_name(folder, manifest.version, part), data)
            return _part_digest(data)

        version = f"{folder}{manifest.version}/"
        switched = False
        draft.close()  # its last part complete before any part is read and digested
        try:
            with ThreadPoolExecutor(max_workers=WRITERS) as pool:
                manifest = replace(manifest, digests=tuple(pool.map(upload, range(draft.parts))))
            if not self._marks_held(where, marks):
                self._store.delete_prefix(version)
                return
            self._store.write_bytes(folder + MANIFEST, manifest.to_json())
            switched = True
            self._delete_older(folder, manifest.version)
        except Exception as error:  # noqa: BLE001 - storage: the next run reads in full if it must, this one goes on
            if not switched:  # parts of a version nothing names: they would outlive an erasure
                try:
                    self._store.delete_prefix(version)
                except Exception:  # noqa: BLE001 - the retention sweep or the next run's write deletes them
                    pass
            log.warning("audience mirror of %s not written in full (%s); %s", where, type(error).__name__,
                        "older versions stay until a run deletes them" if switched else
                        "the previous one stays until a run writes it")

    def _write_manifest(self, folder: str, where: str, manifest: _Manifest) -> bool:
        """A kept version's new manifest; False when it could not be written (the one before names the same version)."""
        try:
            self._store.write_bytes(folder + MANIFEST, manifest.to_json())
            return True
        except Exception as error:  # noqa: BLE001 - storage: the next run reads what changed since the one before
            log.warning("audience mirror of %s kept without its new asOf (%s): the next run reads what changed since "
                        "the one before", where, type(error).__name__)
            return False

    def _delete_older(self, folder: str, version: str) -> None:
        """Versions older than the current one (a crash or a storage error may have left them after a switch)."""
        for older in _versions(self._store.list_names(folder)):
            if older < version:
                self._store.delete_prefix(f"{folder}{older}/")

    def _marks_held(self, where: str, marks: Marks) -> bool:
        """Whether the deletions marks are as the run took them (`marks`), checked before a manifest is written: if
        one moved (an erasure, the destination deleted) or cannot be read, what the run read is not stored."""
        now = self.marks(marks.destination_id)
        if now == marks and now.known:
            return True
        log.warning("audience mirror of %s not kept: %s, so what it read is not stored", where,
                    "mirrors were deleted (an erasure, or the destination deleted) while the audience was read"
                    if marks.known and now.known else "the deletions marks could not be read")
        return False


class _Unstorable(Exception):
    """A changed contact no stored line can hold (`member_line`'s ValueError; not one raised by the listing)."""


def _spilled(work: str, kind: str, members: Iterable[ExistingMember]) -> tuple[_Spill, int]:
    """A listing's contacts as stored lines, spilled by email, and how many; _Unstorable for a contact no line holds."""
    spill = _Spill(work, kind)
    count = 0
    try:
        for member in members:
            try:
                line = member_line(member)
            except ValueError as error:
                raise _Unstorable(error) from None
            spill.add(member.email, (member.email, line))
            count += 1
    finally:
        spill.close()
    return spill, count


@contextmanager
def _unwaited(pool: ThreadPoolExecutor) -> Iterator[ThreadPoolExecutor]:
    """`pool`, shut down on leaving without waiting for what it still runs (that ends on its own, its result unused)."""
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _retag(merged: dict[str, str], replaced: set[str], carriers: Iterable[tuple[str, str]]) -> None:
    """Tags read again (`replaced`: re-read or gone) as Mailchimp lists their members now; archived contacts carry
    none (iter_audience reads them without tags). Only a line naming such a tag, or of a carrier, is decoded."""
    carrying: dict[str, list[str]] = defaultdict(list)
    for email, name in carriers:
        carrying[email].append(name)
    needles = tag_needles(replaced)
    for email, line in merged.items():
        now = carrying.get(email, [])
        if not now and not line_mentions(line, needles):
            continue
        member = line_contact(line)
        if member.status == ARCHIVED:
            continue
        kept = [name for name in member.tags if name not in replaced or name in now]
        if len(kept) != len(member.tags) or any(name not in kept for name in now):
            merged[email] = contact_line(email, member.status, member.merge_fields, kept + [n for n in now if n not in kept])


def _version(as_of: datetime) -> str:
    return f"v{as_of.astimezone(UTC).strftime(_VERSION_TIME)}-{secrets.token_hex(4)}"


def _versions(names: Iterable[str]) -> set[str]:
    """The version folders among a mirror's blob names."""
    return {name.rsplit("/", 2)[-2] for name in names if name.endswith(".jsonl.gz")}


def _written(version: str) -> datetime:
    """When a version was written (its asOf); a name that says no time reads as long ago."""
    try:
        return datetime.strptime(version[1:].split("-", 1)[0], _VERSION_TIME).replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def sweep_mirrors(store: MirrorStore, written_before: datetime) -> int:
    """Delete every mirror neither written nor found unchanged since `written_before` (the retention sweep): its
    newest version written before it, and its manifest's `asOf` before it too (a refresh that found nothing changed
    keeps the version and moves only `asOf`; a manifest that cannot be read says nothing), and every row memo written
    before it (a mirror refreshed by previews alone would keep an older memo); a mirror refreshed by each run stays.
    Returns how many mirrors were deleted."""
    newest: dict[str, datetime] = {}
    for name in store.list_names(MIRRORS_PREFIX):
        destination, audience, *rest = name[len(MIRRORS_PREFIX):].split("/") + ["", ""]
        folder = f"{MIRRORS_PREFIX}{destination}/{audience}/"
        if name.endswith(ROW_MEMO) and rest[0].startswith("rows-"):
            if _written(rest[0][len("rows-"):-len(ROW_MEMO)]) < written_before:
                store.delete_prefix(name)
            continue
        written = _written(rest[0]) if name.endswith(".jsonl.gz") else datetime.min.replace(tzinfo=UTC)
        newest[folder] = max(newest.get(folder, written), written)
    due = [folder for folder, written in newest.items()
           if written < written_before and not _confirmed_since(store, folder, written_before)]
    for folder in due:
        store.delete_prefix(folder)
    return len(due)


def _confirmed_since(store: MirrorStore, folder: str, when: datetime) -> bool:
    """Whether a mirror's manifest says it was last brought up to date at `when` or later."""
    try:
        return _Manifest.from_json(store.read_bytes(folder + MANIFEST)).as_of >= when
    except Exception:  # noqa: BLE001 - a manifest that cannot be read (or is gone) keeps nothing
        return False
