"""The audience mirror with tags changed in ways the local Mailchimp cannot show: a tag renamed without its
`updated_at` moving, and a tag deleted (the local Mailchimp has no call for either). In-memory stand-ins for the work
container and for Mailchimp's reads; tests/integration/test_audience_mirror.py has the real ones."""
from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Iterator, Sequence

import pytest

from shared import audience_mirror
from shared.audience_mirror import (DESTINATION_MARKS, ERASURES_MARK, MIRRORS_PREFIX, AudienceMirror, NotRefreshed,
                                   note_mirrors_deleted)
from shared.mailchimp.models import Tag
from shared.members import ExistingMember
from tests.contacts import decoded

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


class Store(dict):
    def list_names(self, prefix: str = "") -> Iterator[str]:
        return iter([name for name in self if name.startswith(prefix)])

    def exists(self, name: str) -> bool:
        return name in self

    def read_bytes(self, name: str) -> bytes:
        return self[name]

    def write_bytes(self, name: str, data: bytes) -> None:
        self[name] = data

    def delete_prefix(self, prefix: str) -> None:
        for name in list(self.list_names(prefix)):
            del self[name]


class Audience:
    """Contacts (none archived) and tags, every one last changed long ago."""

    def __init__(self, tags: dict[str, list[str]]) -> None:
        self.tags = [Tag(i, name, LONG_AGO, len(emails)) for i, (name, emails) in enumerate(tags.items(), 1)]
        self.contacts = {email: ExistingMember(email, "subscribed", {"FNAME": email[0]}, ())
                         for email in ("a@x.com", "b@x.com", "c@x.com")}
        self.carried = tags

    def _member(self, email: str) -> ExistingMember:
        names = tuple(name for name, emails in self.carried.items() if email in emails)
        return ExistingMember(email, "subscribed", self.contacts[email].merge_fields, names)

    def iter_audience(self, list_id: str) -> Iterator[ExistingMember]:
        return iter([self._member(email) for email in self.contacts])

    def iter_members(self, list_id: str, *, fields: Sequence[str] = (), status: str | None = None,
                     since_last_changed: datetime | None = None) -> Iterator[ExistingMember]:
        return iter([])  # nobody's last_changed moved

    def count_members(self, list_id: str, status: str | None = None,
                      since_last_changed: datetime | None = None) -> int:
        return 0 if since_last_changed or status != "subscribed" else len(self.contacts)

    def list_tag_details(self, list_id: str) -> list[Tag]:
        return list(self.tags)

    def iter_tag_members(self, list_id: str, tag_id: int) -> Iterator[str]:
        name = next(tag.name for tag in self.tags if tag.id == tag_id)
        return iter(self.carried[name])


def tags_of(mirror: AudienceMirror, audience: Audience) -> dict[str, tuple[str, ...]]:
    return {m.email: m.tags for m in decoded(mirror.members("d1", "list1", audience))}


def test_a_tag_renamed_or_deleted_in_mailchimp_is_renamed_or_taken_off_in_the_mirror():
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Audience({"Old name": ["a@x.com", "b@x.com"], "Deleted": ["c@x.com"], "Kept": ["a@x.com"]})
    assert tags_of(mirror, audience) == {"a@x.com": ("Old name", "Kept"), "b@x.com": ("Old name",),
                                         "c@x.com": ("Deleted",)}
    written = dict(store)

    renamed, _, kept = audience.tags
    audience.tags = [Tag(renamed.id, "New name", LONG_AGO, renamed.member_count), kept]  # its time did not move
    audience.carried = {"New name": ["a@x.com", "b@x.com"], "Kept": ["a@x.com"]}
    assert tags_of(mirror, audience) == {"a@x.com": ("Kept", "New name"), "b@x.com": ("New name",), "c@x.com": ()}
    assert store.keys() != written.keys()  # a new version (not a full read: this audience lists no change)


def test_an_address_the_stored_line_cannot_hold_leaves_the_mirror_unwritten_and_the_read_whole():
    store = Store()
    audience = Audience({"Kept": ["a@x.com"]})
    audience.contacts["odd\taddress@x.com"] = ExistingMember("odd\taddress@x.com", "subscribed", {}, ())
    mirror = AudienceMirror(store, timedelta(hours=24))
    assert len(list(mirror.members("d1", "list1", audience))) == 4
    assert store == {}  # nothing written: the next run reads in full again


def test_a_changed_address_the_stored_line_cannot_hold_makes_a_full_read_not_a_failed_run():
    class Changed(Audience):
        def iter_members(self, list_id: str, *, fields: Sequence[str] = (), status: str | None = None,
                         since_last_changed: datetime | None = None) -> Iterator[ExistingMember]:
            odd = [self.contacts[email] for email in self.contacts if "\t" in email]
            return iter(odd if since_last_changed and status is None else [])

        def count_members(self, list_id: str, status: str | None = None,
                          since_last_changed: datetime | None = None) -> int:
            if since_last_changed:
                return sum("\t" in email for email in self.contacts)
            return super().count_members(list_id, status)

    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Changed({"Kept": ["a@x.com"]})
    assert len(list(mirror.members("d1", "list1", audience))) == 3  # read in full, the mirror written
    written = dict(store)
    audience.contacts["odd\taddress@x.com"] = ExistingMember("odd\taddress@x.com", "subscribed", {}, ())

    listed = decoded(mirror.members("d1", "list1", audience))  # a refresh that meets it reads in full instead

    assert sorted(m.email for m in listed) == ["a@x.com", "b@x.com", "c@x.com", "odd\taddress@x.com"]
    assert store == written  # that read cannot write the mirror either: the one before stays


def test_a_lookup_stands_in_for_a_missing_mirror_but_never_for_one_dated_ahead_of_the_clock():
    """A mirror dated ahead (a host clock that ran fast) is replaced by a full read: left in place while small runs
    looked up instead, it would later be refreshed from that date and miss what changed before it."""
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Audience({"Kept": ["a@x.com"]})
    asked: list[str] = []

    def instead(why: str) -> list[ExistingMember]:
        asked.append(why)
        return [ExistingMember("a@x.com", "subscribed", {}, ())]

    assert [m.email for m in decoded(mirror.members("d1", "list1", audience, instead))] == ["a@x.com"]
    assert asked == ["no mirror yet"] and store == {}  # looked up; nothing written
    assert len(list(mirror.members("d1", "list1", audience))) == 3  # a full read writes the mirror
    manifest = next(name for name in store if name.endswith("manifest.json"))
    doc = json.loads(store[manifest])
    store[manifest] = json.dumps({**doc, "asOf": "2099-01-01T00:00:00+00:00"}).encode()
    assert len(list(mirror.members("d1", "list1", audience, instead))) == 3  # read in full again, not looked up
    assert asked == ["no mirror yet"]
    assert json.loads(store[manifest])["asOf"] < "2099"  # replaced by the full read


# --- mirrors deleted while a run reads the audience (an erasure, a destination deleted) --------------------------------

def erase_all_mirrors(store: Store) -> None:
    """What an erasure does to the work container once Mailchimp has forgotten the person."""
    note_mirrors_deleted(store)
    store.delete_prefix(MIRRORS_PREFIX)


class ErasedDuringTheRead(Audience):
    """Mirrors are deleted after the first contact is listed (the rest of the listing goes on)."""

    def __init__(self, tags: dict[str, list[str]], store: Store, erase: bool = True) -> None:
        super().__init__(tags)
        self.store, self.erase = store, erase

    def iter_audience(self, list_id: str) -> Iterator[ExistingMember]:
        for n, member in enumerate(super().iter_audience(list_id)):
            yield member
            if n == 0 and self.erase:
                erase_all_mirrors(self.store)


def mirror_blobs(store: Store) -> list[str]:
    return list(store.list_names(MIRRORS_PREFIX))


@pytest.mark.parametrize("erase", [True, False], ids=["deleted-during-the-read", "control"])
def test_a_full_read_during_which_mirrors_are_deleted_is_not_kept_and_the_run_keeps_its_contacts(erase: bool):
    store = Store()
    audience = ErasedDuringTheRead({"Kept": ["a@x.com"]}, store, erase)
    listed = [m.email for m in AudienceMirror(store, timedelta(hours=24)).members("d1", "list1", audience)]
    assert listed == ["a@x.com", "b@x.com", "c@x.com"]
    if erase:  # "a@x.com" was read before the deletion: storing it now would undo the erasure
        assert mirror_blobs(store) == [] and ERASURES_MARK in store
    else:
        assert any(name.endswith("manifest.json") for name in mirror_blobs(store))


class PartsReadThenDeleted(Store):
    """A refresh reads the stored parts, then mirrors are deleted before it writes the new version."""

    armed = False

    def read_bytes(self, name: str) -> bytes:
        data = super().read_bytes(name)
        if self.armed and name.endswith(".jsonl.gz"):
            self.armed = False
            erase_all_mirrors(self)
        return data


def written(store: Store, audience: Audience) -> AudienceMirror:
    """A mirror of `audience` in `store`, written by a first read in full."""
    mirror = AudienceMirror(store, timedelta(hours=24))
    assert len(list(mirror.members("d1", "list1", audience))) == 3
    return mirror


def test_a_refresh_whose_stored_mirror_was_deleted_after_it_read_it_is_not_kept():
    store = PartsReadThenDeleted()
    audience = Audience({"Kept": ["a@x.com"]})
    mirror = written(store, audience)
    store.armed = True
    listed = decoded(mirror.members("d1", "list1", audience))  # refreshed from the parts read before the deletion
    assert sorted(m.email for m in listed) == ["a@x.com", "b@x.com", "c@x.com"] and not store.armed
    assert mirror_blobs(store) == []  # neither the refreshed version nor a manifest naming it


def test_a_deletions_mark_that_cannot_be_read_keeps_no_mirror_and_fails_no_run():
    class Unreadable(Store):
        def read_bytes(self, name: str) -> bytes:
            if name == ERASURES_MARK:
                raise OSError("storage did not answer")
            return super().read_bytes(name)

    store = Unreadable()
    note_mirrors_deleted(store)
    assert len(list(AudienceMirror(store, timedelta(hours=24)).members("d1", "list1", Audience({})))) == 3
    assert mirror_blobs(store) == []


def test_the_marks_change_with_every_deletion_and_lie_outside_the_mirrors():
    store = Store()
    note_mirrors_deleted(store)
    first = store[ERASURES_MARK]
    note_mirrors_deleted(store)
    note_mirrors_deleted(store, "d1")
    assert store[ERASURES_MARK] != first and f"{DESTINATION_MARKS}d1.json" in store
    assert not (ERASURES_MARK.startswith(MIRRORS_PREFIX) or DESTINATION_MARKS.startswith(MIRRORS_PREFIX))


class ErasedWhileUploading(Store):
    """Mirrors are deleted while the new version's parts are being uploaded."""

    armed = False

    def write_bytes(self, name: str, data: bytes) -> None:
        super().write_bytes(name, data)
        if self.armed and name.endswith(".jsonl.gz"):
            self.armed = False
            erase_all_mirrors(self)


def test_the_marks_are_compared_once_every_part_is_uploaded():
    store = ErasedWhileUploading()
    store.armed = True
    assert len(list(AudienceMirror(store, timedelta(hours=24)).members("d1", "list1", Audience({})))) == 3
    assert mirror_blobs(store) == [] and not store.armed


def test_a_mark_left_by_earlier_deletions_is_compared_by_its_value():
    """The usual state once anything was ever erased: the mark is there before the run starts."""
    store = Store()
    note_mirrors_deleted(store)
    audience = ErasedDuringTheRead({}, store)
    assert len(list(AudienceMirror(store, timedelta(hours=24)).members("d1", "list1", audience))) == 3
    assert mirror_blobs(store) == []


class DeletedDuringTheChanges(Audience):
    """`meanwhile` runs as the refresh starts listing what changed (before the stored parts are read)."""

    meanwhile = None

    def iter_members(self, list_id: str, **kwargs) -> Iterator[ExistingMember]:
        if self.meanwhile is not None:
            self.meanwhile, run = None, self.meanwhile
            run()
        return super().iter_members(list_id, **kwargs)


@pytest.mark.parametrize("deleted, kept", [(None, False), ("d1", False), ("d2", True)],
                         ids=["an-erasure", "this-destination-deleted", "another-destination-deleted"])
def test_a_refresh_keeps_no_mirror_when_a_mark_of_its_destination_moved_during_it(deleted, kept):
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = DeletedDuringTheChanges({"Kept": ["a@x.com"]})
    assert len(list(mirror.members("d1", "list1", audience))) == 3  # read in full, the mirror written
    before = {name: store.read_bytes(name) for name in mirror_blobs(store)}
    audience.meanwhile = lambda: note_mirrors_deleted(store, deleted)
    assert len(decoded(mirror.members("d1", "list1", audience))) == 3  # refreshed: the run has its contacts
    assert audience.meanwhile is None
    # Nothing changed, so the version is kept: its manifest written again (a new asOf), or still the one before.
    assert ({name: store.read_bytes(name) for name in mirror_blobs(store)} != before) is kept


def test_a_mirror_written_before_an_erasure_is_read_in_full_not_refreshed():
    """A refresh that begins after the erasure changed the mark, but before it deleted the mirrors, would carry the
    erased person over from the stored parts: here Mailchimp forgot a@x.com and gained d@x.com, so the counts the
    refresh checks agree, and only the erasures mark recorded in the manifest tells the mirror is not to be trusted."""
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Audience({"Kept": ["b@x.com"]})
    assert len(list(mirror.members("d1", "list1", audience))) == 3
    note_mirrors_deleted(store)  # the erasure, after Mailchimp's deletion, before it deletes the mirrors
    del audience.contacts["a@x.com"]
    audience.contacts["d@x.com"] = ExistingMember("d@x.com", "subscribed", {}, ())
    listed = sorted(m.email for m in decoded(mirror.members("d1", "list1", audience)))
    assert listed == ["b@x.com", "c@x.com", "d@x.com"]
    stored = sorted(m.email for m in decoded(mirror.members("d1", "list1", audience)))  # the mirror just written
    assert stored == listed


def test_parts_of_a_version_whose_upload_failed_are_deleted(monkeypatch):
    """Uploaded parts nothing names would outlive an erasure that listed the mirrors before they were written."""
    class FailingSecondPart(Store):
        def write_bytes(self, name: str, data: bytes) -> None:
            if name.endswith("part-01.jsonl.gz"):
                raise OSError("storage did not answer")
            super().write_bytes(name, data)

    monkeypatch.setattr(audience_mirror, "PART_CONTACTS", 1)  # one part a contact: 3 parts
    store = FailingSecondPart()
    assert len(list(AudienceMirror(store, timedelta(hours=24)).members("d1", "list1", Audience({})))) == 3
    assert mirror_blobs(store) == []


# --- a refresh read ahead of planning (shared/exports/planner.py, `_audience_ahead`) -------------------------------------

class Counted(Audience):
    """Counts the calls a refresh makes, to tell a refresh tried once from one tried twice."""

    def __init__(self, tags: dict[str, list[str]]) -> None:
        super().__init__(tags)
        self.calls: list[str] = []

    def iter_audience(self, list_id: str) -> Iterator[ExistingMember]:
        self.calls.append("iter_audience")
        return super().iter_audience(list_id)

    def list_tag_details(self, list_id: str) -> list[Tag]:
        self.calls.append("list_tag_details")
        return super().list_tag_details(list_id)


def test_a_refresh_only_read_stops_before_any_full_read_or_look_up_and_the_next_call_does_not_try_again():
    store = Store()
    mirror = AudienceMirror(store, timedelta(hours=24))
    audience = Counted({"Kept": ["a@x.com"]})
    asked: list[str] = []

    def instead(why: str) -> None:  # looking up is not cheaper: read in full
        asked.append(why)

    with pytest.raises(NotRefreshed) as none_yet:
        next(mirror.members("d1", "list1", audience, instead, refresh_only=True))
    assert (none_yet.value.why, none_yet.value.stored) == ("no mirror yet", False)
    assert audience.calls == [] and asked == [] and store == {}  # nothing read, nothing looked up

    listed = list(mirror.members("d1", "list1", audience, instead, not_refreshed=none_yet.value))
    assert len(listed) == 3 and asked == ["no mirror yet"] and audience.calls == ["list_tag_details", "iter_audience"]

    audience.calls.clear()
    refreshed = decoded(mirror.members("d1", "list1", audience, instead, refresh_only=True))
    assert len(refreshed) == 3 and audience.calls == ["list_tag_details"]  # a refresh: no full read

    manifest = next(name for name in store if name.endswith("manifest.json"))
    store[manifest] = json.dumps({**json.loads(store[manifest]), "counts": {"subscribed": 2}}).encode()
    audience.calls.clear()
    with pytest.raises(NotRefreshed) as differs:  # the stored counts differ from Mailchimp's: a full read is needed
        next(mirror.members("d1", "list1", audience, instead, refresh_only=True))
    assert differs.value.stored and audience.calls == ["list_tag_details"]
    listed = list(mirror.members("d1", "list1", audience, instead, not_refreshed=differs.value))
    assert len(listed) == 3 and audience.calls == ["list_tag_details"] * 2 + ["iter_audience"]  # the full read's own
    assert asked == ["no mirror yet"]  # a mirror that was there is read in full, never looked up


class ChangedAndArchived(Audience):
    """b@x.com is listed as changed (subscribed) and as archived since; each listing waits until the other has begun."""

    def __init__(self, tags: dict[str, list[str]]) -> None:
        super().__init__(tags)
        self.changing = False
        self.both = threading.Barrier(2, timeout=5)

    def iter_members(self, list_id: str, *, fields: Sequence[str] = (), status: str | None = None,
                     since_last_changed: datetime | None = None) -> Iterator[ExistingMember]:
        if not (self.changing and since_last_changed):
            return
        self.both.wait()  # broken (an error) when the other listing does not begin meanwhile
        yield (ExistingMember("b@x.com", "archived", {}, ()) if status == "archived"
               else ExistingMember("b@x.com", "subscribed", {"FNAME": "B2"}, ()))

    def count_members(self, list_id: str, status: str | None = None,
                      since_last_changed: datetime | None = None) -> int:
        if since_last_changed:
            return 2 if self.changing else 0
        return {"subscribed": 2 if self.changing else 3, "archived": 1 if self.changing else 0}.get(status, 0)


def test_the_archived_are_listed_beside_the_changed_ones_and_win_over_them():
    store = Store()
    audience = ChangedAndArchived({"Kept": ["a@x.com"]})
    mirror = written(store, audience)
    audience.changing = True
    statuses = {m.email: m.status for m in decoded(mirror.members("d1", "list1", audience))}
    assert statuses == {"a@x.com": "subscribed", "b@x.com": "archived", "c@x.com": "subscribed"}
    assert any(name.endswith("manifest.json") for name in mirror_blobs(store))  # refreshed, not read in full
